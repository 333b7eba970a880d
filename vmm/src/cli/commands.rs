//! The `tickburst` command: parse, run under the supervisor when a pause
//! stops the whole process, and dispatch. Exit codes in
//! [`crate::cli::exit`].

use crate::cli::analyze::cmd_analyze;
use crate::cli::arg_limits::FALLBACK_MIN_PERIOD_NS;
use crate::cli::args::{Cli, Command, GuestArgs};
use crate::cli::config::one_line_usage_error;
use crate::cli::exit::{fail, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_KVM_UNAVAILABLE, EXIT_OK};
use crate::cli::report_args::CheckArgs;
use crate::cli::top_args::TopArgs;
use crate::host::facts;
use crate::host::hv_timer::{hv_timer_possible, is_root};
use crate::host::tracefs;
use crate::output::files;
use crate::output::json_stream::JsonStream;
use crate::output::plot;
use crate::output::summary::summary;
use crate::output::table::{out, TablePrinter};
use crate::output::top_exporter::Exporter;
use crate::output::top_table::TopPrinter;
use crate::output::watch_help::print_watch_help;
use crate::pause::{guard, protocol, supervisor};
use crate::session::check;
use crate::session::config::RunConfig;
use crate::session::doctor;
use crate::session::error::RunError;
use crate::session::observer::Both;
use crate::session::run;
use crate::session::top;
use clap::Parser;
use std::ffi::OsString;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tickburst_analysis::names::Outcome;
use tickburst_analysis::{model, report, sweep};

/// Runs `tickburst` with `argv` (the program name first); returns the exit
/// code. `started` is when the process started.
pub fn main(argv: Vec<OsString>, started: Instant) -> i32 {
    if argv.get(1).is_some_and(|a| a == guard::GUARD_ARG) {
        let pid = argv.get(2).map(|p| p.to_string_lossy().into_owned());
        return guard::guard(&pid.unwrap_or_default());
    }
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return EXIT_OK;
        }
        Err(e) => return fail(EXIT_ERROR, one_line_usage_error(&e)),
    };
    if cli.command.needs_supervisor() {
        match protocol::is_supervised() {
            Ok(true) => {}
            Ok(false) => {
                return match supervisor::supervise(&argv[1..]) {
                    Ok(code) => code.clamp(0, 255),
                    Err(e) if e.is_interrupted() => fail(EXIT_INTERRUPTED, e),
                    Err(e) => fail(EXIT_ERROR, e),
                }
            }
            Err(e) => return fail(EXIT_ERROR, e),
        }
    }
    // A private mount namespace belongs to a thread: made here, before any
    // thread starts, every thread of the process sees the mount.
    if cli.command.uses_tracefs() && tracefs::find().is_none() && is_root() {
        // A failure shows again, with its reason, where tracefs is used.
        let _ = tracefs::mount_private();
    }
    match cli.command {
        Command::Run(args) => cmd_run(args.to_config(min_period_ns()), &args.vm.guest, started),
        Command::Model(args) => cmd_model(&args),
        Command::Watch(args) => {
            let cfg = args.to_config(min_period_ns());
            if let Ok(cfg) = &cfg {
                print_watch_help(cfg.first_phase_ns());
            }
            cmd_run(cfg, &args.guest, started)
        }
        Command::Sweep(args) => cmd_run(args.to_config(min_period_ns()), &args.vm.guest, started),
        Command::Doctor(args) => cmd_doctor(args.json),
        Command::Analyze(args) => cmd_analyze(&args),
        Command::Check(args) => cmd_check(&args),
        Command::Top(args) => cmd_top(&args),
    }
}

/// `top`: every error exits 2 with one line; Ctrl-C ends it with 0.
fn cmd_top(args: &TopArgs) -> i32 {
    let (cfg, export) = match args
        .to_config()
        .and_then(|c| Ok((c, args.to_export_config()?)))
    {
        Ok(both) => both,
        Err(e) => return fail(EXIT_ERROR, e),
    };
    let stop = match stop_flag() {
        Ok(f) => f,
        Err(e) => return fail(EXIT_ERROR, format!("installing the Ctrl-C handler: {e}")),
    };
    let printer = match export.prints_table() {
        true => TopPrinter::new(&cfg),
        false => TopPrinter::new(&cfg).quiet(),
    };
    let mut obs = Exporter::new(export, printer);
    match top::live::run(&cfg, &stop, &mut obs) {
        Ok(()) => EXIT_OK,
        Err(e) => fail(EXIT_ERROR, e),
    }
}

/// A flag set by Ctrl-C or SIGTERM.
fn stop_flag() -> Result<Arc<AtomicBool>, std::io::Error> {
    let flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, flag.clone())?;
    Ok(flag)
}

/// The host's shortest timer period, ns.
fn min_period_ns() -> u64 {
    facts::min_timer_period_us().map_or(FALLBACK_MIN_PERIOD_NS, |us| us * 1_000)
}

/// `model`: the prediction, as text or JSON.
fn cmd_model(args: &crate::cli::report_args::ModelArgs) -> i32 {
    match args.predict() {
        Ok((p, source)) => {
            if args.json {
                out(&serde_json::to_string_pretty(&p).unwrap_or_default());
            } else {
                out(&model::describe(&p, &source));
            }
            EXIT_OK
        }
        Err(e) => fail(EXIT_ERROR, e),
    }
}

/// `run`, `sweep` and `watch`: one VM, the live table, the summary (and the
/// sweep table), the record.
fn cmd_run(cfg: Result<RunConfig, String>, args: &GuestArgs, started: Instant) -> i32 {
    let cfg = match cfg {
        Ok(cfg) => cfg,
        Err(e) => return fail(EXIT_ERROR, e),
    };
    let stop = match stop_flag() {
        Ok(f) => f,
        Err(e) => return fail(EXIT_ERROR, format!("installing the Ctrl-C handler: {e}")),
    };
    // Every output file is checked before the run: none is found unwritable
    // after it.
    for (flag, path) in [("--json", &args.json), ("--plot", &args.plot)] {
        if let Some(path) = path {
            if let Err(e) = files::check(path) {
                return fail(EXIT_ERROR, format!("{flag}: {e}"));
            }
        }
    }
    let mut table = TablePrinter::default();
    let mut stream = match args
        .json_stream
        .as_deref()
        .map(JsonStream::create)
        .transpose()
    {
        Ok(s) => s,
        Err(e) => return fail(EXIT_ERROR, format!("--json-stream: {e}")),
    };
    let result = match stream.as_mut() {
        Some(s) => run::run(&cfg, started, Some(stop), &mut Both(&mut table, s)),
        None => run::run(&cfg, started, Some(stop), &mut table),
    };
    let output = match result {
        Ok(out) => out,
        Err(e @ RunError::KvmUnavailable(_)) => return fail(EXIT_KVM_UNAVAILABLE, e),
        Err(e @ RunError::Interrupted) => return fail(EXIT_INTERRUPTED, e),
        Err(e) => return fail(EXIT_ERROR, e),
    };
    out(&summary(&output.record));
    // Each output is written whatever became of the others; their errors
    // are said together, in one line.
    let mut errors = Vec::new();
    if let Some(Err(e)) = stream.map(|s| s.finish(&output.record)) {
        errors.push(format!("writing the --json-stream file: {e}"));
    }
    if let Some(s) = &output.record.sweep {
        out(&sweep::table(s));
    }
    if let Some(path) = &args.json {
        if let Err(e) = files::write(path, |w| output.record.write_json_to(w)) {
            errors.push(format!("writing the --json record: {e}"));
        }
    }
    if let Some(path) = &args.plot {
        if let Err(e) = plot::write(path, &plot::Picture::of_record(&output.record)) {
            errors.push(e.to_string());
        }
    }
    if !errors.is_empty() {
        return fail(EXIT_ERROR, errors.join("; "));
    }
    match output.outcome {
        Outcome::Completed => EXIT_OK,
        // Ctrl-C is how a watch normally ends.
        Outcome::Interrupted if output.record.detected.is_some() => EXIT_OK,
        Outcome::Interrupted => EXIT_INTERRUPTED,
        Outcome::Failed => fail(EXIT_ERROR, output.record.error.unwrap_or_default()),
    }
}

/// `doctor`: the table, or JSON.
fn cmd_doctor(json: bool) -> i32 {
    let report = doctor::diagnose();
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => out(&text),
            Err(e) => return fail(EXIT_ERROR, e),
        }
    } else {
        out(&crate::output::doctor::table(&report));
    }
    EXIT_OK
}

/// `check`: the matrix of this host, run case by case, rendered and judged.
fn cmd_check(args: &CheckArgs) -> i32 {
    let (pause_ns, thresholds) = match (args.pause_ns(), args.report.thresholds.to_thresholds()) {
        (Ok(p), Ok(t)) => (p, t),
        (Err(e), _) | (_, Err(e)) => return fail(EXIT_ERROR, e),
    };
    let stop = match stop_flag() {
        Ok(f) => f,
        Err(e) => return fail(EXIT_ERROR, format!("installing the Ctrl-C handler: {e}")),
    };
    for (flag, path) in [("--json", &args.json), ("--plot", &args.report.plot)] {
        if let Some(path) = path {
            if let Err(e) = files::check(path) {
                return fail(EXIT_ERROR, format!("{flag}: {e}"));
            }
        }
    }
    let host = check::HostKind {
        min_period_ns: min_period_ns(),
        hv_timer: hv_timer_possible(facts::kvm_backend().as_deref()).is_ok(),
    };
    let period = match args.period_ns(host.min_period_ns) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_ERROR, e),
    };
    let cases = check::matrix(host, period);
    let mut progress = |text: &str| eprintln!("# {text}");
    let result = match check::run_matrix(&cases, pause_ns, thresholds, Some(stop), &mut progress) {
        Ok(result) => result,
        Err(e) => return fail(EXIT_KVM_UNAVAILABLE, e),
    };
    let details: Vec<serde_json::Value> = result
        .records
        .iter()
        .map(|(_, r)| {
            serde_json::json!({
                "config": r.config,
                "steady": r.steady,
                "pauses": r.pauses,
                "verdict": r.verdict,
                "timer_backend": r.host.timer_backend,
            })
        })
        .collect();
    let details = serde_json::Value::Array(details);
    // The exit code shown is the one `check` leaves with.
    let ending = if result.interrupted {
        report::Ending::Interrupted
    } else {
        report::Ending::Finished
    };
    out(&report::render_of(
        args.report.format,
        &result.cases,
        details.clone(),
        ending,
    ));
    if let Some(path) = &args.json {
        let text = report::json_of(&result.cases, details, ending) + "\n";
        if let Err(e) = files::write_bytes(path, text.as_bytes()) {
            return fail(EXIT_ERROR, format!("writing the --json report: {e}"));
        }
    }
    if let Some(path) = &args.report.plot {
        if let Err(e) = plot::write(path, &plot::Picture::Check(&result.records)) {
            return fail(EXIT_ERROR, e);
        }
    }
    if result.interrupted {
        return fail(EXIT_INTERRUPTED, "interrupted; partial result above");
    }
    report::overall_of(&result.cases, ending).exit_code
}
