//! `cargo bench -p tickburst --bench days`: peak RSS (VmHWM) and record size
//! of `tickburst watch` against run length, at 1 ms and at the host's minimum
//! period (`kvm.min_timer_period_us`), and the per-day projection from the
//! slope between the two longest runs. A measurement, not a pass/fail test.
//!
//! - `TICKBURST_DAYS_SECS` (or the first argument that is not a flag):
//!   comma-separated run lengths in seconds, default `10,60`
//!   (`600,3600` gives the 10 min / 1 h figures);
//! - `TICKBURST_DAYS_PROBES`: `--host-probes` value, default `auto` (what a
//!   user gets).
//!
//! Each run takes the VM lock on its own, so other tests are not starved for
//! the whole bench. Needs `/dev/kvm`; without it, prints why and exits 0.

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_tickburst");
const MIB: f64 = 1024.0 * 1024.0;
const DAY_S: f64 = 86_400.0;
/// Bytes of one host mark, as the run keeps it.
const MARK: usize = std::mem::size_of::<tickburst_analysis::host_counts::HostMark>();
/// Bytes a report window costs for the whole run: its host mark, its
/// count (8, twice at the end) and, at the end, its analysed window.
const PER_WINDOW: u64 =
    (MARK + 16 + std::mem::size_of::<tickburst_analysis::figures::Window>()) as u64;
/// Bytes a detected gap costs besides its marks: its span in the stream's
/// gaps, its kept span and the session's pauses, its entry in `detected`,
/// and, at the end, its figures (`PauseStats`).
const PER_GAP: f64 = (3 * std::mem::size_of::<tickburst_analysis::figures::PauseSpan>()
    + std::mem::size_of::<tickburst_analysis::record::DetectedPause>()
    + std::mem::size_of::<tickburst_analysis::figures::PauseStats>()) as f64;
/// Marks a pause keeps at most (`tickburst_analysis::host_thin`: its start,
/// resume and the end of its first second). A record's count of marks also
/// holds the last ~1.1 s of them, not yet thinned when the run ended.
const MARKS_PER_PAUSE: f64 = 3.0;
/// The budgets.
const KEPT_TICKS: usize = tickburst::session::run::KEPT_TICKS_BUDGET;
const KEPT_EVENTS: usize = tickburst_analysis::host_thin::MAX_KEPT_EVENTS;
const MAX_GAPS: usize = tickburst_analysis::stream::MAX_GAPS;

/// One measured run.
struct Point {
    secs: u64,
    rss_kib: i64,
    record_bytes: u64,
    ticks: u64,
    /// What the record holds: kept ticks, host marks, callback runs,
    /// detected pauses.
    kept: usize,
    marks: usize,
    runs: usize,
    detected: usize,
}

/// Runs `watch --duration secs --period period --json` and measures it.
fn measure(period: &str, secs: u64, probes: &str) -> Option<Point> {
    let _vm = tickburst_testkit::lock();
    let duration = format!("{secs}s");
    let m = common::run_measured(
        BIN,
        &[
            "watch",
            "--duration",
            &duration,
            "--period",
            period,
            "--host-probes",
            probes,
        ],
    )?;
    let (record, record_bytes) = (m.record, m.record_bytes);
    Some(Point {
        secs,
        rss_kib: m.rss_kib,
        record_bytes,
        ticks: record["guest"]["tick_count"].as_u64().unwrap_or(0),
        kept: len(&record["samples"]["tick_deltas_ns"]),
        marks: len(&record["samples"]["host_marks"]),
        runs: len(&record["samples"]["host_events"]["sw_runs"]),
        detected: len(&record["detected"]),
    })
}

fn len(v: &serde_json::Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

/// Growth per second between the first and last point (`None` with one).
fn slope(points: &[Point], value: impl Fn(&Point) -> f64) -> Option<f64> {
    let (a, b) = (points.first()?, points.last()?);
    (b.secs > a.secs).then(|| (value(b) - value(a)) / (b.secs - a.secs) as f64)
}

fn durations() -> Vec<u64> {
    let arg = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let text = std::env::var("TICKBURST_DAYS_SECS")
        .ok()
        .or(arg)
        .unwrap_or_else(|| "10,60".into());
    let mut secs: Vec<u64> = text
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&s| s > 0)
        .collect();
    secs.sort_unstable();
    secs.dedup();
    secs
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Err(e) = tickburst::vstate::kvm::open_kvm() {
        println!("days: not measured: {e}");
        return;
    }
    let probes = std::env::var("TICKBURST_DAYS_PROBES").unwrap_or_else(|_| "auto".into());
    let min_us = tickburst::host::facts::min_timer_period_us().unwrap_or(200);
    let periods = ["1ms".to_string(), format!("{min_us}us")];
    let secs = durations();
    let mut table = Vec::new();
    for period in &periods {
        let points: Vec<Point> = secs
            .iter()
            .filter_map(|&s| measure(period, s, &probes))
            .collect();
        table.push((period, points));
    }
    println!("tickburst watch, --host-probes {probes}: peak RSS (VmHWM) and record size");
    println!(
        "{:>8} {:>8} {:>11} {:>12} {:>12} {:>9} {:>7} {:>8} {:>8}",
        "period", "secs", "ticks", "RSS MiB", "record MiB", "kept", "marks", "runs", "detected"
    );
    for (period, points) in &table {
        for p in points {
            println!(
                "{:>8} {:>8} {:>11} {:>12.1} {:>12.2} {:>9} {:>7} {:>8} {:>8}",
                period,
                p.secs,
                p.ticks,
                p.rss_kib as f64 / 1024.0,
                p.record_bytes as f64 / MIB,
                p.kept,
                p.marks,
                p.runs,
                p.detected
            );
        }
    }
    println!("a day from the structures (the longest run, plus 86 400 one-second windows at");
    println!(
        "{PER_WINDOW} bytes each, plus every budget filled: kept ticks, runs, hv expiries, and"
    );
    println!(
        "{MAX_GAPS} detected pauses at the marks per pause seen, {PER_GAP} bytes each besides):"
    );
    for (period, points) in &table {
        if let Some(p) = points.last() {
            let fill = (KEPT_TICKS - p.kept.min(KEPT_TICKS)) as f64 * 8.0
                + (KEPT_EVENTS - p.runs.min(KEPT_EVENTS)) as f64 * 32.0
                + KEPT_EVENTS as f64 * 8.0
                + (MAX_GAPS - p.detected.min(MAX_GAPS)) as f64
                    * (MARKS_PER_PAUSE * MARK as f64 + PER_GAP);
            let windows = (DAY_S - p.secs as f64) * PER_WINDOW as f64;
            let quiet = p.rss_kib as f64 * 1024.0 + windows;
            println!(
                "{:>8}: {:.1} MiB on a quiet host (no gap after the run's), {:.1} MiB with every budget filled",
                period,
                quiet / MIB,
                (quiet + fill) / MIB
            );
        }
    }
    println!(
        "projection per day (slope between the shortest and longest run; it holds the start's"
    );
    println!("growth and the budgets filling, which stop: use runs of 600 s or more):");
    for (period, points) in &table {
        let rss = slope(points, |p| p.rss_kib as f64 * 1024.0);
        let rec = slope(points, |p| p.record_bytes as f64);
        let base = points.first();
        match (rss, rec, base) {
            (Some(rss), Some(rec), Some(base)) => println!(
                "{:>8}: RSS {:+.1} KiB/s -> {:.1} MiB after 24 h; record {:+.1} KiB/s -> {:.1} MiB after 24 h",
                period,
                rss / 1024.0,
                (base.rss_kib as f64 * 1024.0 + rss * (DAY_S - base.secs as f64)) / MIB,
                rec / 1024.0,
                (base.record_bytes as f64 + rec * (DAY_S - base.secs as f64)) / MIB,
            ),
            _ => println!("{period:>8}: needs two run lengths"),
        }
    }
}
