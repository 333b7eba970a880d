//! Records of format version 3 (`samples.bounded`) are untrusted input too:
//! mutated window counts, kept spans, steady statistics or histogram never
//! crash `tickburst analyze`, never take unbounded memory or time, and give
//! a verdict or one line naming what is wrong (exit 2). A version 3 record
//! built from a saved version 2 run (its ticks streamed through the same
//! bounded collector, its host data thinned) analyses to the same figures,
//! and the saved version 2 records still analyse to the figures they hold.

use proptest::prelude::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use tickburst::record::Record;
use tickburst::samples::encode_ticks;
use tickburst::verdict::Thresholds;
use tickburst_analysis::host_thin::{span_needed, thin_marks};
use tickburst_analysis::stream::TickStream;
use tickburst_testkit::json::{drop_at, set_at};
use tickburst_testkit::{data, tickburst};

fn load(name: &str) -> Record {
    Record::from_json(&std::fs::read_to_string(data(name)).unwrap()).unwrap()
}

/// The version 3 record of a saved version 2 run: its ticks streamed
/// through [`TickStream`] (as the live collector does), only the kept ones
/// left, host marks and events thinned as a live run thins them.
fn v3_of(v2: &Record) -> Record {
    let s = &v2.samples;
    let ticks = tickburst::samples::decode_ticks(&s.tick_deltas_ns).unwrap();
    let mut stream = TickStream::new(s.period_ns, s.interval_ns, 1 << 20, false);
    for p in &s.pauses {
        stream.pause(*p, true);
    }
    for &t in &ticks {
        stream.push(t);
    }
    let (bounded, kept) = stream.finish(s.end_ns);
    let near = |t| span_needed(&s.pauses, t);
    let mut r = v2.clone();
    r.format_version = 3;
    r.samples.tick_deltas_ns = encode_ticks(&kept);
    r.samples.host_marks = thin_marks(&s.host_marks, s.interval_ns, &s.pauses);
    if let Some(e) = r.samples.host_events.as_mut() {
        e.hv_sampled = Some(e.hv_ns.len() as u64);
        e.longest_anywhere = e.longest_run(0, u64::MAX);
        e.sw_runs.retain(|run| near(run.t_ns()));
        e.hv_ns.retain(|&t| near(t));
    }
    r.samples.bounded = Some(bounded);
    r
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap()
}

#[test]
fn a_v3_record_analyses_to_the_figures_of_every_tick() {
    for name in ["rig-fixed-spin.json", "rig-unfixed-spin.json"] {
        let mut v2 = load(name);
        v2.reanalyze().unwrap();
        let mut v3 = v3_of(&v2);
        assert!(v3.samples.tick_deltas_ns.len() < v2.samples.tick_deltas_ns.len());
        assert!(v3.samples.host_marks.len() < v2.samples.host_marks.len() / 2);
        // Through the text, as `tickburst analyze` reads it.
        let text = serde_json::to_string(&v3).unwrap();
        v3 = Record::from_json(&text).unwrap();
        v3.reanalyze().unwrap();
        assert_eq!(json(&v3.windows), json(&v2.windows), "{name}: windows");
        assert_eq!(json(&v3.pauses), json(&v2.pauses), "{name}: pauses");
        let (a, b) = (&v3.steady, &v2.steady);
        assert_eq!(
            (a.ticks, a.rate_hz, a.interval_max_us),
            (b.ticks, b.rate_hz, b.interval_max_us)
        );
        let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) => (x - y).abs() <= y.abs() * 5e-4 + 1e-3,
            (x, y) => x == y,
        };
        assert!(close(a.interval_p50_us, b.interval_p50_us), "{name}: p50");
        assert!(close(a.interval_p99_us, b.interval_p99_us), "{name}: p99");
        v2.judge(&Thresholds::default());
        v3.judge(&Thresholds::default());
        assert_eq!(json(&v3.verdict), json(&v2.verdict), "{name}: verdict");
    }
}

#[test]
fn saved_v2_records_analyse_to_the_figures_they_hold() {
    for entry in std::fs::read_dir(data("")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let saved: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(saved["format_version"], 2, "{}", path.display());
        let mut r = Record::from_json(&text).unwrap();
        r.reanalyze().unwrap();
        let again = json(&r);
        for field in ["windows", "pauses", "steady"] {
            assert_eq!(again[field], saved[field], "{}: {field}", path.display());
        }
    }
}

/// The v3 record the mutations start from (the fixed kernel's run).
fn base() -> Value {
    let mut v2 = load("rig-fixed-spin.json");
    v2.reanalyze().unwrap();
    json(&v3_of(&v2))
}

/// Numbers a mutation writes.
fn extreme() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::from(0u64)),
        Just(Value::from(1u64)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(u64::MAX / 2)),
        Just(Value::from(-1i64)),
        Just(Value::from(1e300)),
        Just(Value::from(0.5)),
        any::<u64>().prop_map(Value::from),
        (0u64..20_000_000_000).prop_map(Value::from),
        Just(Value::Null),
        Just(Value::from("x")),
        Just(Value::Array(vec![])),
        Just(serde_json::json!([[0, u64::MAX], [u64::MAX, 1]])),
    ]
}

/// Every path under `samples.bounded` (lists: their first and last entries).
fn paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut visit = |k: String, x: &Value| {
        at.push(k);
        out.push(at.clone());
        paths(x, at, out);
        at.pop();
    };
    match v {
        Value::Object(m) => m.iter().for_each(|(k, x)| visit(k.clone(), x)),
        Value::Array(a) => {
            let n = a.len();
            for i in [0, 1, n.saturating_sub(1)].into_iter().filter(|&i| i < n) {
                visit(i.to_string(), &a[i]);
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, Value),
    Drop(usize),
    /// Reverse the window counts, kept spans or histogram.
    Reverse(usize),
    /// Make a list long (window counts or histogram buckets repeated).
    Grow(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), extreme()).prop_map(|(n, v)| Mutation::Set(n, v)),
        1 => any::<usize>().prop_map(Mutation::Drop),
        1 => any::<usize>().prop_map(Mutation::Reverse),
        1 => (any::<usize>(), 1usize..2_000).prop_map(|(k, n)| Mutation::Grow(k, n)),
    ]
}

const LISTS: [&str; 3] = [
    "/samples/bounded/window_ticks",
    "/samples/bounded/kept_spans",
    "/samples/bounded/steady/intervals",
];

fn apply(v: &mut Value, m: &Mutation) {
    let mut all = Vec::new();
    if let Some(b) = v.pointer("/samples/bounded") {
        paths(b, &mut vec!["samples".into(), "bounded".into()], &mut all);
    }
    if all.is_empty() {
        return;
    }
    match m {
        Mutation::Set(n, x) => set_at(v, &all[n % all.len()], x),
        Mutation::Drop(n) => drop_at(v, &all[n % all.len()]),
        Mutation::Reverse(k) => {
            if let Some(a) = v.pointer_mut(LISTS[k % 3]).and_then(Value::as_array_mut) {
                a.reverse();
            }
        }
        Mutation::Grow(k, n) => {
            if let Some(a) = v.pointer_mut(LISTS[k % 3]).and_then(Value::as_array_mut) {
                if let Some(x) = a.last().cloned() {
                    a.extend(std::iter::repeat_n(x, *n * 100));
                }
            }
        }
    }
}

/// The analysis as `tickburst analyze` runs it: an exit code or the error.
fn analyze_text(text: &str) -> Result<i32, String> {
    let mut r = Record::from_json(text).map_err(|e| e.to_string())?;
    r.reanalyze().map_err(|e| e.to_string())?;
    r.judge(&Thresholds::default());
    let _ = tickburst::output::summary::summary(&r);
    let cases = tickburst::report::record_cases(&r, "run");
    Ok(tickburst::report::overall(&cases).exit_code)
}

const RUNAWAY: Duration = Duration::from_secs(60);

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// `samples.bounded` mutated: a verdict, or one line that names the
    /// field (`bounded`, or the list it holds); never a panic or a runaway.
    #[test]
    fn mutated_bounded_samples_never_crash(muts in proptest::collection::vec(mutation(), 1..4)) {
        let mut v = base();
        for m in &muts {
            apply(&mut v, m);
        }
        let text = serde_json::to_string(&v).unwrap();
        let started = Instant::now();
        match analyze_text(&text) {
            Ok(code) => prop_assert!([0, 1, 125].contains(&code), "exit {code}"),
            Err(e) => {
                prop_assert_eq!(e.lines().count(), 1, "one line: {}", e);
                prop_assert!(
                    ["bounded", "window_ticks", "kept_spans", "steady", "intervals", "ticks_total", "first_tick_ns", "kept_dropped", "tick", "samples"]
                        .iter()
                        .any(|f| e.contains(f)),
                    "names the field: {}", e
                );
            }
        }
        prop_assert!(started.elapsed() < RUNAWAY, "took {:?}", started.elapsed());
    }
}

/// Through the binary: exit 2 and one line naming the field.
#[test]
fn overlapping_kept_spans_are_exit_2_naming_the_field() {
    let mut v = base();
    let spans = v
        .pointer_mut("/samples/bounded/kept_spans")
        .and_then(Value::as_array_mut)
        .unwrap();
    let first = spans[0].clone();
    spans.push(first);
    let path = std::env::temp_dir().join(format!("tickburst-bounded-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let out = tickburst!().arg("analyze").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("kept_spans"), "{err}");
}
