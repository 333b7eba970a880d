//! The `tickburst` command. Exit codes: 0 success, 2 usage or runtime error,
//! 125 KVM not usable on this host, 130 interrupted (partial report written).

use clap::Parser;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tickburst::bpftrace;
use tickburst::check;
use tickburst::cli::{
    self, Cli, Command, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_KVM_UNAVAILABLE, EXIT_OK,
};
use tickburst::plot;
use tickburst::record::Record;
use tickburst::report::{self, Format};
use tickburst::run::{self, Outcome, RunError};
use tickburst::supervisor;

fn main() -> ExitCode {
    let started = Instant::now();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == supervisor::GUARD_ARG) {
        let pid = argv.get(2).map(|p| p.to_string_lossy().into_owned());
        return ExitCode::from(supervisor::guard(&pid.unwrap_or_default()) as u8);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::from(EXIT_OK as u8);
            }
            return ExitCode::from(fail(EXIT_ERROR, cli::one_line_usage_error(&e)) as u8);
        }
    };
    if cli.command.needs_supervisor() && !supervisor::is_supervised() {
        let code = match supervisor::supervise(&argv[1..]) {
            Ok(code) => code,
            Err(e) => fail(EXIT_ERROR, e),
        };
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    let code = match cli.command {
        Command::Run(args) => {
            let cfg = args.to_config(min_period_ns());
            cmd_run(cfg, &args.vm.guest, started)
        }
        Command::Model(args) => match args.predict() {
            Ok((p, source)) => {
                if args.json {
                    cli::out(&serde_json::to_string_pretty(&p).unwrap_or_default());
                } else {
                    cli::out(&tickburst::model::describe(&p, &source));
                }
                EXIT_OK
            }
            Err(e) => fail(EXIT_ERROR, e),
        },
        Command::Watch(args) => {
            let cfg = args.to_config(min_period_ns());
            if cfg.is_ok() {
                print_watch_help();
            }
            cmd_run(cfg, &args.guest, started)
        }
        Command::Sweep(args) => {
            let cfg = args.to_config(min_period_ns());
            cmd_run(cfg, &args.vm.guest, started)
        }
        Command::Doctor(args) => cmd_doctor(args.json),
        Command::Analyze(args) => cmd_analyze(&args),
        Command::Check(args) => cmd_check(&args),
        Command::Top(args) => cmd_top(&args),
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

fn min_period_ns() -> u64 {
    tickburst::host::min_timer_period_us().map_or(cli::FALLBACK_MIN_PERIOD_NS, |us| us * 1_000)
}

/// `run` and `sweep`: one VM, the live table, the summary (and the sweep
/// table), the record.
fn cmd_run(cfg: Result<run::RunConfig, String>, args: &cli::GuestArgs, started: Instant) -> i32 {
    let cfg = match cfg {
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
    if let Some(sweep) = &output.record.sweep {
        cli::out(&tickburst::sweep::table(sweep));
    }
    if let Some(path) = &args.json {
        if let Err(e) = output.record.write_json(path) {
            return fail(EXIT_ERROR, format!("writing {}: {e}", path.display()));
        }
    }
    if let Some(path) = &args.plot {
        let r = &output.record;
        let picture = match &r.sweep {
            Some(s) => plot::Picture::Sweep(r, s),
            None => plot::Picture::Run(r),
        };
        if let Err(e) = plot::write(path, &picture) {
            return fail(EXIT_ERROR, e);
        }
    }
    match output.outcome {
        Outcome::Completed => EXIT_OK,
        // Ctrl-C is how a watch normally ends.
        Outcome::Interrupted if output.record.detected.is_some() => EXIT_OK,
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

fn cmd_analyze(args: &cli::AnalyzeArgs) -> i32 {
    let thresholds = match args.report.thresholds.to_thresholds() {
        Ok(t) => t,
        Err(e) => return fail(EXIT_ERROR, e),
    };
    let (cases, details) = if let Some(path) = &args.from_bpftrace {
        // Streamed line by line: memory does not grow with the log.
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => return fail(EXIT_ERROR, format!("{}: {e}", path.display())),
        };
        let log = match bpftrace::read(std::io::BufReader::new(file)) {
            Ok(log) => log,
            Err(e) => return fail(EXIT_ERROR, format!("{}: {e}", path.display())),
        };
        if let Some(plot_path) = &args.report.plot {
            if let Err(e) = plot::write(plot_path, &plot::Picture::Log(&log)) {
                return fail(EXIT_ERROR, e);
            }
        }
        // Only JSON output shows the details (every kept interval).
        let details = if Format::from(args.report.format) == Format::Json {
            serde_json::to_value(&log).unwrap_or_default()
        } else {
            serde_json::Value::Null
        };
        (report::log_cases(&log, &thresholds), details)
    } else {
        let Some(path) = &args.record else {
            return fail(EXIT_ERROR, "give RUN.json or --from-bpftrace FILE");
        };
        let mut record = match Record::load(path) {
            Ok(r) => r,
            Err(e) => return fail(EXIT_ERROR, format!("{}: {e}", path.display())),
        };
        if let Err(e) = record.reanalyze() {
            return fail(EXIT_ERROR, format!("{}: {e}", path.display()));
        }
        record.judge(&thresholds);
        if Format::from(args.report.format) == Format::Table {
            cli::out(&cli::summary(&record));
        }
        if let Some(out) = &args.json {
            if let Err(e) = record.write_json(out) {
                return fail(EXIT_ERROR, format!("writing {}: {e}", out.display()));
            }
        }
        if let Some(plot_path) = &args.report.plot {
            let picture = match &record.sweep {
                Some(s) => plot::Picture::Sweep(&record, s),
                None => plot::Picture::Run(&record),
            };
            if let Err(e) = plot::write(plot_path, &picture) {
                return fail(EXIT_ERROR, e);
            }
        }
        let name = path
            .file_stem()
            .map_or_else(|| "run".into(), |s| s.to_string_lossy().into_owned());
        let details = serde_json::json!({ "pauses": record.pauses, "verdict": record.verdict });
        (report::record_cases(&record, &name), details)
    };
    cli::out(&report::render(args.report.format.into(), &cases, details));
    report::overall(&cases).exit_code
}

fn cmd_check(args: &cli::CheckArgs) -> i32 {
    let (pause_ns, thresholds) = match (args.pause_ns(), args.report.thresholds.to_thresholds()) {
        (Ok(p), Ok(t)) => (p, t),
        (Err(e), _) | (_, Err(e)) => return fail(EXIT_ERROR, e),
    };
    let stop = match stop_flag() {
        Ok(f) => f,
        Err(e) => return fail(EXIT_ERROR, format!("installing the Ctrl-C handler: {e}")),
    };
    let host = check::HostKind {
        min_period_ns: min_period_ns(),
        hv_timer: tickburst::probes::hv_timer_possible(tickburst::host::kvm_backend().as_deref())
            .is_ok(),
    };
    let period = match args.period_ns(host.min_period_ns) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_ERROR, e),
    };
    let cases = check::matrix(host, period);
    let mut progress = |text: &str| eprintln!("# {text}");
    let out = match check::run_matrix(&cases, pause_ns, thresholds, Some(stop), &mut progress) {
        Ok(out) => out,
        Err(e) => return fail(EXIT_KVM_UNAVAILABLE, e),
    };
    let details: Vec<serde_json::Value> = out
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
    cli::out(&report::render(
        args.report.format.into(),
        &out.cases,
        details.clone(),
    ));
    if let Some(path) = &args.json {
        let text = report::json(&out.cases, details) + "\n";
        if let Err(e) = tickburst::record::write_atomic(path, text.as_bytes()) {
            return fail(EXIT_ERROR, format!("writing {}: {e}", path.display()));
        }
    }
    if let Some(path) = &args.report.plot {
        if let Err(e) = plot::write(path, &plot::Picture::Check(&out.records)) {
            return fail(EXIT_ERROR, e);
        }
    }
    if out.interrupted {
        return fail(EXIT_INTERRUPTED, "interrupted; partial result above");
    }
    report::overall(&out.cases).exit_code
}

/// `top`: every error exits 2 with one line; Ctrl-C ends it with 0.
fn cmd_top(args: &tickburst::top::TopArgs) -> i32 {
    let cfg = match args.to_config() {
        Ok(cfg) => cfg,
        Err(e) => return fail(EXIT_ERROR, e),
    };
    let stop = match stop_flag() {
        Ok(f) => f,
        Err(e) => return fail(EXIT_ERROR, format!("installing the Ctrl-C handler: {e}")),
    };
    match tickburst::top::live::run(&cfg, &stop, &mut |line| cli::out(line)) {
        Ok(()) => EXIT_OK,
        Err(e) => fail(EXIT_ERROR, e),
    }
}

/// What `watch` prints first: the PID and what to try on it.
fn print_watch_help() {
    let pid = std::process::id();
    let (v2, v1) = tickburst::cgroup::mounts(
        &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
    );
    let mut lines = vec![
        format!("# tickburst watch: VMM pid {pid}; every pause of >= 5 periods is reported. Ctrl-C ends."),
        format!("#   stop/continue:  kill -STOP {pid}; sleep 5; kill -CONT {pid}"),
    ];
    if let Some(root) = v2 {
        let g = root.join("tb-watch");
        lines.push(format!(
            "#   freeze (v2):    mkdir {g}; echo {pid} > {g}/cgroup.procs; echo 1 > {g}/cgroup.freeze; sleep 5; echo 0 > {g}/cgroup.freeze",
            g = g.display()
        ));
    } else if let Some(root) = v1 {
        let g = root.join("tb-watch");
        lines.push(format!(
            "#   freeze (v1):    mkdir {g}; echo {pid} > {g}/cgroup.procs; echo FROZEN > {g}/freezer.state; sleep 5; echo THAWED > {g}/freezer.state",
            g = g.display()
        ));
    }
    lines.push(format!(
        "#   pin:            taskset -a -p 0x1 {pid}   (vCPU thread tid is printed below)"
    ));
    cli::out(&lines.join("\n"));
}
