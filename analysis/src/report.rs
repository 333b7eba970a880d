//! Verdict reports shared by `check` and `analyze`: a table, JSON, and KTAP
//! (the kselftest output format, so kernel CI can ingest the result as it
//! ingests kselftests).
//!
//! KTAP mapping: **ok** -> `ok N name`; **burst** and errors -> `not ok N
//! name`; **not exercised** -> `ok N name # SKIP reason`. Reasons are written
//! as `# ` diagnostic lines before the result line.

use crate::bpftrace::LogAnalysis;
use crate::figures::PauseStats;
use crate::record::Record;
use crate::verdict::{self, Kind, Thresholds, Verdict};
use serde::Serialize;

/// One judged case (a check-matrix entry, or one pause of a saved run/log).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseResult {
    /// Name, `[A-Za-z0-9_]` only (KTAP test names).
    pub name: String,
    /// The verdict (`None` when the case could not run: see `error`).
    pub verdict: Option<Verdict>,
    /// Why the case could not run.
    pub error: Option<String>,
    /// Key figures, one line, for people.
    pub figures: String,
}

pub use crate::names::Format;

/// The overall result of a set of cases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overall {
    /// ok / burst / not exercised (over the cases that ran).
    pub kind: Kind,
    /// Exit code: 0 ok, 1 burst, 125 nothing exercised, 2 a case failed to run.
    pub exit_code: i32,
    /// Counts.
    pub ok: usize,
    /// Cases with a burst.
    pub burst: usize,
    /// Cases not exercised.
    pub not_exercised: usize,
    /// Cases that failed to run.
    pub errors: usize,
    /// Ctrl-C or SIGTERM ended the set early: the exit code is then
    /// [`EXIT_INTERRUPTED`], whatever the cases that ran found.
    pub interrupted: bool,
}

/// Exit code of a set of cases that Ctrl-C or SIGTERM ended early.
pub const EXIT_INTERRUPTED: i32 = 130;

/// How a set of cases ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ending {
    /// Every case ran.
    #[default]
    Finished,
    /// Ctrl-C or SIGTERM ended it early.
    Interrupted,
}

/// The longest run of host timer callbacks inside one interrupt of a pause,
/// as words.
pub fn longest_run_text(p: &PauseStats) -> String {
    match (
        p.host_longest_run,
        p.host_longest_run_ms,
        p.host_longest_run_late_ms,
    ) {
        (Some(n), Some(ms), Some(late)) => format!(
            "longest run in one interrupt {n} callback{} ({ms:.3} ms, first {late:.3} ms late)",
            if n == 1 { "" } else { "s" }
        ),
        (Some(_), _, _) => "longest run in one interrupt 0 callbacks".into(),
        (None, _, _) => {
            "longest run in one interrupt: not measured (our hrtimer's callbacks not sampled)"
                .into()
        }
    }
}

/// The figures of one pause of a record, one line.
pub fn pause_figures(record: &Record, i: usize) -> String {
    let Some(p) = record.pauses.get(i) else {
        return String::new();
    };
    let host = match (p.host_callbacks_first_1s, p.host_burst_ratio) {
        (Some(n), Some(r)) => format!(
            "host callbacks first 1 s {n} ({r:.2}x), {}",
            longest_run_text(p)
        ),
        _ => "host callbacks not measured".into(),
    };
    format!(
        "pause {:.0} ms: guest ticks during {}, first 100 ms {} ({:.2}x); {host}",
        p.end_ms - p.start_ms,
        p.guest_ticks_during,
        p.ticks_first_100ms,
        p.burst_ratio
    )
}

/// One case per pause of a record (`name_pause1`, ...; just `name` when the
/// record has one pause). A record without pauses gives one not-exercised case.
pub fn record_cases(record: &Record, name: &str) -> Vec<CaseResult> {
    let n = record.verdict.pauses.len();
    if n == 0 {
        return vec![CaseResult {
            name: test_name(name),
            verdict: Some(Verdict {
                kind: Kind::NotExercised,
                reasons: vec!["the run had no pause".into()],
            }),
            error: record.error.clone(),
            figures: String::new(),
        }];
    }
    let mut cases: Vec<CaseResult> = record
        .verdict
        .pauses
        .iter()
        .enumerate()
        .map(|(i, v)| CaseResult {
            name: test_name(&if n == 1 {
                name.to_string()
            } else {
                format!("{name}_pause{}", i + 1)
            }),
            verdict: Some(v.clone()),
            error: None,
            figures: pause_figures(record, i),
        })
        .collect();
    cases.extend(record.verdict.outside_pauses.as_ref().map(|v| CaseResult {
        name: test_name(&format!("{name}_outside_pauses")),
        verdict: Some(v.clone()),
        error: None,
        figures: String::new(),
    }));
    cases
}

/// One case per pause of a bpftrace log.
pub fn log_cases(log: &LogAnalysis, thresholds: &Thresholds) -> Vec<CaseResult> {
    log.pauses
        .iter()
        .enumerate()
        .map(|(i, p)| CaseResult {
            name: format!("bpftrace_pause{}", i + 1),
            verdict: Some(verdict::judge(&p.evidence(), thresholds)),
            error: None,
            figures: format!(
                "line {}: {} zero intervals (~{:.1} s); resume second: all {} hv {} sw {} = {:.2}x nominal {:.0}/s; hv before: {}; fallback to sw: {}",
                p.first_zero_line,
                p.zero_intervals,
                p.estimated_s,
                p.resume.all,
                p.resume.hv,
                p.resume.sw,
                p.host_burst_ratio,
                log.nominal_per_s,
                if p.hv_before { "yes" } else { "no" },
                if p.fell_back_to_sw { "yes" } else { "no" },
            ),
        })
        .collect()
}

/// Exit code when a case could not run.
pub const EXIT_CASE_ERROR: i32 = 2;

/// Combines the cases: any burst is 1; else any error is 2; else any ok is 0;
/// else 125.
pub fn overall(cases: &[CaseResult]) -> Overall {
    overall_of(cases, Ending::Finished)
}

/// [`overall`] of a set that ended as `ending`: an interrupted set exits
/// [`EXIT_INTERRUPTED`].
pub fn overall_of(cases: &[CaseResult], ending: Ending) -> Overall {
    let kinds: Vec<Kind> = cases
        .iter()
        .filter_map(|c| c.verdict.as_ref().map(|v| v.kind))
        .collect();
    let count = |k: Kind| kinds.iter().filter(|&&x| x == k).count();
    let errors = cases.iter().filter(|c| c.error.is_some()).count();
    let kind = verdict::combine(&kinds);
    let exit_code = match kind {
        _ if ending == Ending::Interrupted => EXIT_INTERRUPTED,
        Kind::Burst => 1,
        _ if errors > 0 => EXIT_CASE_ERROR,
        k => verdict::exit_code(k),
    };
    Overall {
        kind,
        exit_code,
        ok: count(Kind::Ok),
        burst: count(Kind::Burst),
        not_exercised: count(Kind::NotExercised),
        errors,
        interrupted: ending == Ending::Interrupted,
    }
}

/// Makes a KTAP-safe test name.
pub fn test_name(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '#'], " ")
}

/// KTAP version 1 text.
pub fn ktap(cases: &[CaseResult]) -> String {
    ktap_of(cases, Ending::Finished)
}

fn ktap_of(cases: &[CaseResult], ending: Ending) -> String {
    let mut out = format!("KTAP version 1\n1..{}\n", cases.len());
    for (i, c) in cases.iter().enumerate() {
        let n = i + 1;
        if !c.figures.is_empty() {
            out.push_str(&format!("# {}: {}\n", c.name, one_line(&c.figures)));
        }
        match (&c.verdict, &c.error) {
            (_, Some(err)) => {
                out.push_str(&format!("# {}: error: {}\n", c.name, one_line(err)));
                out.push_str(&format!("not ok {n} {}\n", c.name));
            }
            (Some(v), None) => match v.kind {
                Kind::Ok => out.push_str(&format!("ok {n} {}\n", c.name)),
                Kind::Burst => {
                    for r in &v.reasons {
                        out.push_str(&format!("# {}: {}\n", c.name, one_line(r)));
                    }
                    out.push_str(&format!("not ok {n} {}\n", c.name));
                }
                Kind::NotExercised => out.push_str(&format!(
                    "ok {n} {} # SKIP {}\n",
                    c.name,
                    one_line(&v.reasons.join("; "))
                )),
            },
            (None, None) => out.push_str(&format!("not ok {n} {}\n", c.name)),
        }
    }
    let o = overall_of(cases, ending);
    out.push_str(&format!(
        "# totals: ok {} burst {} not-exercised {} error {}{}",
        o.ok,
        o.burst,
        o.not_exercised,
        o.errors,
        interrupted_note(&o)
    ));
    out
}

/// `; interrupted` for a set that Ctrl-C or SIGTERM ended early.
fn interrupted_note(o: &Overall) -> &'static str {
    ["", "; interrupted"][usize::from(o.interrupted)]
}

/// Human-readable table.
pub fn table(cases: &[CaseResult]) -> String {
    table_of(cases, Ending::Finished)
}

fn table_of(cases: &[CaseResult], ending: Ending) -> String {
    let width = cases.iter().map(|c| c.name.len()).max().unwrap_or(4).max(4);
    let mut out = format!("{:<width$}  {:<14}  why\n", "case", "verdict");
    for c in cases {
        let (label, why) = match (&c.verdict, &c.error) {
            (_, Some(e)) => ("error", e.clone()),
            (Some(v), None) => (v.kind.label(), v.reasons.join("; ")),
            (None, None) => ("error", String::new()),
        };
        out.push_str(&format!("{:<width$}  {label:<14}  {why}\n", c.name));
        if !c.figures.is_empty() {
            out.push_str(&format!("{:<width$}  {:<14}  {}\n", "", "", c.figures));
        }
    }
    let o = overall_of(cases, ending);
    out.push_str(&format!(
        "verdict: {} (ok {}, burst {}, not exercised {}, error {}){}; exit {}",
        o.kind.label(),
        o.ok,
        o.burst,
        o.not_exercised,
        o.errors,
        interrupted_note(&o),
        o.exit_code
    ));
    out
}

/// JSON document: the cases and the overall result.
pub fn json(cases: &[CaseResult], extra: serde_json::Value) -> String {
    json_of(cases, extra, Ending::Finished)
}

/// [`json`] of a set that ended as `ending`.
pub fn json_of(cases: &[CaseResult], extra: serde_json::Value, ending: Ending) -> String {
    let doc = serde_json::json!({
        "overall": overall_of(cases, ending),
        "cases": cases,
        "details": extra,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Renders in the chosen format.
pub fn render(format: Format, cases: &[CaseResult], extra: serde_json::Value) -> String {
    render_of(format, cases, extra, Ending::Finished)
}

/// [`render`] of a set that ended as `ending`: the exit code it shows is
/// the one the command leaves with.
pub fn render_of(
    format: Format,
    cases: &[CaseResult],
    extra: serde_json::Value,
    ending: Ending,
) -> String {
    match format {
        Format::Table => table_of(cases, ending),
        Format::Json => json_of(cases, extra, ending),
        Format::Ktap => ktap_of(cases, ending),
    }
}

/// Minimal KTAP check: version line, plan, one result line per case
/// numbered 1..N.
pub fn ktap_is_valid(text: &str) -> bool {
    let lines: Vec<&str> = text.lines().collect();
    if lines.first() != Some(&"KTAP version 1") {
        return false;
    }
    let Some(plan) = lines.get(1).and_then(|l| l.strip_prefix("1..")) else {
        return false;
    };
    let Ok(n) = plan.parse::<usize>() else {
        return false;
    };
    let results: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("ok ") || l.starts_with("not ok "))
        .collect();
    results.len() == n
        && results.iter().enumerate().all(|(i, l)| {
            let rest = l.strip_prefix("not ").unwrap_or(l);
            rest.strip_prefix("ok ")
                .and_then(|r| r.split(' ').next())
                .and_then(|num| num.parse::<usize>().ok())
                == Some(i + 1)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, kind: Option<Kind>, reason: &str) -> CaseResult {
        CaseResult {
            name: name.into(),
            verdict: kind.map(|kind| Verdict {
                kind,
                reasons: vec![reason.into()],
            }),
            error: kind.is_none().then(|| reason.to_string()),
            figures: "rate 1000 Hz".into(),
        }
    }

    #[test]
    fn ktap_maps_each_verdict() {
        let cases = vec![
            case("a_ok", Some(Kind::Ok), "fine"),
            case("b_burst", Some(Kind::Burst), "51541 callbacks"),
            case("c_skip", Some(Kind::NotExercised), "hv timer # not here"),
            case("d_err", None, "guest fault"),
        ];
        let text = ktap(&cases);
        assert!(ktap_is_valid(&text), "{text}");
        assert!(text.contains("\nok 1 a_ok\n"));
        assert!(text.contains("# b_burst: 51541 callbacks\nnot ok 2 b_burst\n"));
        assert!(
            text.contains("ok 3 c_skip # SKIP hv timer   not here\n"),
            "{text}"
        );
        assert!(text.contains("not ok 4 d_err\n"));
        assert_eq!(overall(&cases).exit_code, 1);
    }

    #[test]
    fn overall_exit_codes() {
        let skip = case("s", Some(Kind::NotExercised), "sw only");
        let ok = case("o", Some(Kind::Ok), "");
        let err = case("e", None, "boom");
        assert_eq!(overall(std::slice::from_ref(&skip)).exit_code, 125);
        assert_eq!(overall(&[skip.clone(), ok.clone()]).exit_code, 0);
        assert_eq!(overall(&[skip.clone(), err.clone()]).exit_code, 2);
        assert_eq!(overall(&[ok, err]).exit_code, 2);
        assert_eq!(overall(&[]).exit_code, 125);
        assert!(ktap_is_valid(&ktap(&[])));
    }

    #[test]
    fn names_are_ktap_safe() {
        assert_eq!(test_name("period 1ms/hlt-kick"), "period_1ms_hlt_kick");
    }
}
