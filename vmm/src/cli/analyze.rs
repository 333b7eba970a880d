//! `tickburst analyze`: a saved record (read through the validated
//! boundary), or a bpftrace log (streamed), judged again with any
//! thresholds.

use crate::cli::exit::{fail, EXIT_ERROR};
use crate::cli::report_args::AnalyzeArgs;
use crate::output::files;
use crate::output::plot;
use crate::output::summary::summary;
use crate::output::table::out;
use std::path::Path;
use tickburst_analysis::bpftrace;
use tickburst_analysis::names::Format;
use tickburst_analysis::record::Record;
use tickburst_analysis::report::{self, CaseResult};
use tickburst_analysis::verdict::Thresholds;

/// Runs `analyze`; returns the exit code (the verdict's, or 2).
pub fn cmd_analyze(args: &AnalyzeArgs) -> i32 {
    let thresholds = match args.report.thresholds.to_thresholds() {
        Ok(t) => t,
        Err(e) => return fail(EXIT_ERROR, e),
    };
    // Output files are checked before the input is read.
    for (flag, path) in [("--json", &args.json), ("--plot", &args.report.plot)] {
        if let Some(path) = path {
            if let Err(e) = files::check(path) {
                return fail(EXIT_ERROR, format!("{flag}: {e}"));
            }
        }
    }
    let judged = if let Some(path) = &args.from_bpftrace {
        log_cases(args, path, &thresholds)
    } else if let Some(path) = &args.record {
        record_cases(args, path, &thresholds)
    } else {
        Err(fail(EXIT_ERROR, "give RUN.json or --from-bpftrace FILE"))
    };
    let (cases, details) = match judged {
        Ok(judged) => judged,
        Err(code) => return code,
    };
    out(&report::render(args.report.format, &cases, details));
    report::overall(&cases).exit_code
}

/// A bpftrace log, streamed line by line (memory does not grow with the
/// log): its cases and, for JSON output, every kept interval.
fn log_cases(
    args: &AnalyzeArgs,
    path: &Path,
    thresholds: &Thresholds,
) -> Result<(Vec<CaseResult>, serde_json::Value), i32> {
    let file = std::fs::File::open(path)
        .map_err(|e| fail(EXIT_ERROR, format!("{}: {e}", path.display())))?;
    let log = bpftrace::read(std::io::BufReader::new(file))
        .map_err(|e| fail(EXIT_ERROR, format!("{}: {e}", path.display())))?;
    if let Some(plot_path) = &args.report.plot {
        plot::write(plot_path, &plot::Picture::Log(&log)).map_err(|e| fail(EXIT_ERROR, e))?;
    }
    // Only JSON output shows the details (every kept interval).
    let details = if args.report.format == Format::Json {
        serde_json::to_value(&log).unwrap_or_default()
    } else {
        serde_json::Value::Null
    };
    Ok((report::log_cases(&log, thresholds), details))
}

/// A saved record, loaded, re-analysed and judged; its summary (as a
/// table), its re-written JSON and picture when asked.
fn record_cases(
    args: &AnalyzeArgs,
    path: &Path,
    thresholds: &Thresholds,
) -> Result<(Vec<CaseResult>, serde_json::Value), i32> {
    let shown = |e: &dyn std::fmt::Display| fail(EXIT_ERROR, format!("{}: {e}", path.display()));
    let (mut record, note) = Record::load_noted(path).map_err(|e| shown(&e))?;
    record.reanalyze().map_err(|e| shown(&e))?;
    if let Some(note) = note {
        eprintln!("# {}: {note}", path.display());
    }
    record.judge(thresholds);
    if args.report.format == Format::Table {
        out(&summary(&record));
    }
    if let Some(json) = &args.json {
        files::write(json, |w| record.write_json_to(w))
            .map_err(|e| fail(EXIT_ERROR, format!("writing the --json record: {e}")))?;
    }
    if let Some(plot_path) = &args.report.plot {
        plot::write(plot_path, &plot::Picture::of_record(&record))
            .map_err(|e| fail(EXIT_ERROR, e))?;
    }
    let name = path
        .file_stem()
        .map_or_else(|| "run".into(), |s| s.to_string_lossy().into_owned());
    let details = serde_json::json!({ "pauses": record.pauses, "verdict": record.verdict });
    Ok((report::record_cases(&record, &name), details))
}
