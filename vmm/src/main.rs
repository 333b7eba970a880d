//! The `tickburst` command. Exit codes: 0 success, 2 usage or runtime error,
//! 125 KVM not usable on this host, 130 interrupted (partial report written).

use clap::Parser;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tickburst::cli::{
    self, Cli, Command, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_KVM_UNAVAILABLE, EXIT_OK,
};
use tickburst::run::{self, Outcome, RunError};

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_ERROR } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let code = match cli.command {
        Command::Run(args) => cmd_run(&args, started),
        Command::Doctor(args) => cmd_doctor(args.json),
    };
    ExitCode::from(code as u8)
}

fn fail(code: i32, message: impl std::fmt::Display) -> i32 {
    eprintln!("tickburst: {message}");
    code
}

fn stop_flag() -> Result<Arc<AtomicBool>, std::io::Error> {
    let flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, flag.clone())?;
    Ok(flag)
}

fn cmd_run(args: &cli::RunArgs, started: Instant) -> i32 {
    let min_period_ns =
        tickburst::host::min_timer_period_us().map_or(cli::FALLBACK_MIN_PERIOD_NS, |us| us * 1_000);
    let cfg = match args.to_config(min_period_ns) {
        Ok(cfg) => cfg,
        Err(e) => return fail(EXIT_ERROR, e),
    };
    let stop = match stop_flag() {
        Ok(f) => f,
        Err(e) => return fail(EXIT_ERROR, format!("installing the Ctrl-C handler: {e}")),
    };
    let output = match run::run(&cfg, started, Some(stop), &mut cli::TablePrinter::default()) {
        Ok(out) => out,
        Err(e @ RunError::KvmUnavailable(_)) => return fail(EXIT_KVM_UNAVAILABLE, e),
        Err(e @ RunError::Interrupted) => return fail(EXIT_INTERRUPTED, e),
        Err(e) => return fail(EXIT_ERROR, e),
    };
    cli::out(&cli::summary(&output.record));
    if let Some(path) = &args.json {
        if let Err(e) = output.record.write_json(path) {
            return fail(EXIT_ERROR, format!("writing {}: {e}", path.display()));
        }
    }
    match output.outcome {
        Outcome::Completed => EXIT_OK,
        Outcome::Interrupted => EXIT_INTERRUPTED,
        Outcome::Failed(why) => fail(EXIT_ERROR, why),
    }
}

fn cmd_doctor(json: bool) -> i32 {
    let report = tickburst::doctor::diagnose();
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => cli::out(&text),
            Err(e) => return fail(EXIT_ERROR, e),
        }
    } else {
        cli::out(&tickburst::doctor::table(&report));
    }
    EXIT_OK
}
