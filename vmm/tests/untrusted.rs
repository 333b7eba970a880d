//! Saved records and bpftrace logs are untrusted input: no input may crash
//! `tickburst analyze` (or `model --cost-from`), take unbounded memory or
//! time. Property tests call the library (fast); a few cases go through the
//! binary for the exit code and the one line on stderr.

use proptest::prelude::*;
use serde_json::Value;
use std::process::Output;
use std::time::{Duration, Instant};
use tickburst::bpftrace;
use tickburst::record::{LoadError, Record};
use tickburst::verdict::Thresholds;
use tickburst_testkit::json::{drop_at, set_at, slot};
use tickburst_testkit::{data, output, temp, tickburst};

/// A real record, small: the rig's fixed kernel (one 10 s pause, 5000
/// ticks), with most ticks and events cut so each case stays fast.
fn base() -> Value {
    let text = std::fs::read_to_string(data("rig-fixed-spin.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let s = &mut v["samples"];
    for list in ["tick_deltas_ns", "host_marks"] {
        s[list].as_array_mut().unwrap().truncate(300);
    }
    s["host_events"]["hv_ns"]
        .as_array_mut()
        .unwrap()
        .truncate(300);
    v
}

/// What the analysis of a record gives: the verdict's exit code, or the
/// error (as `tickburst analyze` would print it).
fn analyze_text(text: &str) -> Result<i32, String> {
    let mut r = Record::from_json(text).map_err(|e| e.to_string())?;
    r.reanalyze().map_err(|e| e.to_string())?;
    r.judge(&Thresholds::default());
    let _ = tickburst::output::summary::summary(&r);
    let cases = tickburst::report::record_cases(&r, "run");
    let _ = tickburst::model::measured_cost(&r);
    Ok(tickburst::report::overall(&cases).exit_code)
}

/// Longer than any bounded case takes on the slowest host the tests run on.
const RUNAWAY: Duration = Duration::from_secs(60);

fn check_outcome(result: Result<i32, String>, started: Instant) -> Result<(), TestCaseError> {
    match result {
        Ok(code) => prop_assert!([0, 1, 125].contains(&code), "exit {code}"),
        Err(e) => prop_assert_eq!(e.lines().count(), 1, "one line: {}", e),
    }
    // A runaway guard, not a speed goal: bounded work takes well under a
    // second here (about 30 times that in the emulated-Intel rig), unbounded
    // work (10^18 windows) would never finish.
    prop_assert!(started.elapsed() < RUNAWAY, "took {:?}", started.elapsed());
    Ok(())
}

/// Numbers a mutation writes.
fn extreme() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::from(0u64)),
        Just(Value::from(1u64)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(1_000_000_000_000_000_000u64)),
        Just(Value::from(u64::MAX / 2)),
        Just(Value::from(-1i64)),
        Just(Value::from(1e300)),
        Just(Value::from(0.5)),
        any::<u64>().prop_map(Value::from),
        (0u64..20_000_000_000).prop_map(Value::from),
        Just(Value::Null),
        Just(Value::from("x\ny")),
        Just(Value::Array(vec![])),
    ]
}

/// Every path to a number (or a small value) in `v`, up to `limit` entries
/// per list so the choice is spread over the whole record.
fn paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                at.push(k.clone());
                out.push(at.clone());
                paths(x, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate().take(4) {
                at.push(i.to_string());
                out.push(at.clone());
                paths(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

/// One mutation of a record.
#[derive(Debug, Clone)]
enum Mutation {
    /// Set the value at path number `n` (mod the number of paths).
    Set(usize, Value),
    /// Remove the field at path number `n`.
    Drop(usize),
    /// Shuffle (reverse and rotate) the tick deltas.
    ShuffleTicks(usize),
    /// Reverse the pauses, host marks or runs.
    Reverse(usize),
    /// Duplicate the pause (overlapping spans).
    DupPause,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), extreme()).prop_map(|(n, v)| Mutation::Set(n, v)),
        1 => any::<usize>().prop_map(Mutation::Drop),
        1 => any::<usize>().prop_map(Mutation::ShuffleTicks),
        1 => any::<usize>().prop_map(Mutation::Reverse),
        1 => Just(Mutation::DupPause),
    ]
}

fn apply(v: &mut Value, m: &Mutation) {
    let mut all = Vec::new();
    paths(v, &mut Vec::new(), &mut all);
    match m {
        Mutation::Set(n, x) => set_at(v, &all[n % all.len()], x),
        Mutation::Drop(n) => drop_at(v, &all[n % all.len()]),
        Mutation::ShuffleTicks(k) => {
            // `pointer_mut`, not indexing: an earlier mutation may have made
            // `samples` a string, and `IndexMut` panics on that.
            if let Some(a) = v
                .pointer_mut("/samples/tick_deltas_ns")
                .and_then(Value::as_array_mut)
            {
                a.reverse();
                let len = a.len().max(1);
                a.rotate_left(k % len);
            }
        }
        Mutation::Reverse(k) => {
            let lists = [
                &["samples", "pauses"][..],
                &["samples", "host_marks"],
                &["samples", "host_events", "hv_ns"],
                &["host", "timer_backend", "switches"],
            ];
            let path: Vec<String> = lists[k % lists.len()]
                .iter()
                .map(|s| s.to_string())
                .collect();
            if let Some(Value::Array(a)) = slot(v, &path) {
                a.reverse();
            }
        }
        Mutation::DupPause => {
            if let Some(a) = v
                .pointer_mut("/samples/pauses")
                .and_then(Value::as_array_mut)
            {
                if let Some(p) = a.first().cloned() {
                    a.push(p);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    /// A real record mutated: numbers set to extremes, fields dropped, ticks
    /// shuffled, lists reversed, then maybe truncated.
    #[test]
    fn mutated_records_never_crash(
        muts in proptest::collection::vec(mutation(), 1..5),
        cut in proptest::option::weighted(0.15, any::<proptest::sample::Index>()),
    ) {
        let mut v = base();
        for m in &muts {
            apply(&mut v, m);
        }
        let mut text = serde_json::to_string(&v).unwrap();
        if let Some(i) = cut {
            let mut at = i.index(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.truncate(at);
        }
        let started = Instant::now();
        check_outcome(analyze_text(&text), started)?;
    }

    /// A record whose samples are arbitrary numbers.
    #[test]
    fn arbitrary_samples_never_crash(
        period in prop_oneof![Just(0u64), 1u64..2_000_000_000, any::<u64>()],
        interval in prop_oneof![Just(1u64), 1u64..100_000_000_000, any::<u64>()],
        end in prop_oneof![Just(0u64), 0u64..1_000_000_000_000, Just(1_000_000_000_000_000_000u64), any::<u64>()],
        deltas in proptest::collection::vec(prop_oneof![0u64..3_000_000, any::<u64>()], 0..200),
        pauses in proptest::collection::vec((0u64..100_000_000_000, 0u64..100_000_000_000), 0..4),
        marks in proptest::collection::vec((any::<u64>(), any::<u64>(), proptest::option::of(any::<u64>())), 0..20),
        runs in proptest::collection::vec((0u64..100_000_000_000, any::<u64>(), any::<u64>(), any::<u64>()), 0..20),
    ) {
        let mut v = base();
        let s = &mut v["samples"];
        s["period_ns"] = period.into();
        s["interval_ns"] = interval.into();
        s["end_ns"] = end.into();
        s["tick_deltas_ns"] = deltas.into();
        s["pauses"] = pauses
            .iter()
            .map(|&(a, b)| serde_json::json!({"start_ns": a, "end_ns": b}))
            .collect();
        s["host_marks"] = marks
            .iter()
            .map(|&(t, sw, hv)| serde_json::json!({"t_ns": t, "counts": {"sw_timer": sw, "hv_timer": hv, "stats": {}}}))
            .collect();
        s["host_events"]["sw_runs"] = runs
            .iter()
            .map(|&(t, n, d, l)| serde_json::json!([t, n, d, l]))
            .collect();
        let text = serde_json::to_string(&v).unwrap();
        let started = Instant::now();
        check_outcome(analyze_text(&text), started)?;
    }

    /// Any text at all.
    #[test]
    fn arbitrary_text_is_no_record(text in "\\PC{0,200}|[\\[\\]{}\",:0-9a-z_ ]{0,300}") {
        let started = Instant::now();
        check_outcome(analyze_text(&text), started)?;
    }

    /// Any bpftrace text: a verdict or a one-line error, quickly.
    #[test]
    fn arbitrary_bpftrace_text_never_crashes(
        lines in proptest::collection::vec(prop_oneof![
            (0u64..6000, 0u64..6000, 0u64..6000).prop_map(|(a, h, s)| format!("all_count {a}  hv_timer {h}  sw_timer {s}")),
            (prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()], any::<u64>(), any::<u64>())
                .prop_map(|(a, h, s)| format!("all_count {a} hv_timer {h} sw_timer {s}")),
            Just("all_count 0  hv_timer 0  sw_timer 0".to_string()),
            "\\PC{0,80}",
        ], 0..80),
    ) {
        let text = lines.join("\n");
        let started = Instant::now();
        let streamed = bpftrace::read(text.as_bytes());
        let result = match &streamed {
            Ok(log) => {
                let cases = tickburst::report::log_cases(log, &Thresholds::default());
                Ok(tickburst::report::overall(&cases).exit_code)
            }
            Err(e) => Err(e.to_string()),
        };
        // The streamed analysis is the in-memory one.
        let in_memory = bpftrace::parse(&text).and_then(|iv| bpftrace::analyze(&iv));
        prop_assert_eq!(&streamed, &in_memory);
        // And the verdicts are those of the analysis before streaming.
        prop_assert_eq!(
            streamed.as_ref().ok().map(summary),
            reference::analyze(&text)
        );
        check_outcome(result, started)?;
    }
}

/// Nominal rate and, per pause: first zero line, zero lines, host ratio,
/// estimated length (f64 bits), hv before, fallback.
type Summary = (u64, Vec<(usize, usize, u64, u64, bool, bool)>);

/// The figures of a log the reference implementation also gives.
fn summary(log: &bpftrace::LogAnalysis) -> Summary {
    (
        log.nominal_per_s.to_bits(),
        log.pauses
            .iter()
            .map(|p| {
                (
                    p.first_zero_line,
                    p.zero_intervals,
                    p.host_burst_ratio.to_bits(),
                    p.estimated_s.to_bits(),
                    p.hv_before,
                    p.fell_back_to_sw,
                )
            })
            .collect(),
    )
}

/// The log analysis as it was before it streamed (everything in memory).
mod reference {
    use super::Summary;

    pub fn analyze(text: &str) -> Option<Summary> {
        let iv: Vec<(usize, u64, u64, u64)> = text
            .lines()
            .enumerate()
            .filter_map(|(i, l)| {
                let t: Vec<&str> = l.split_whitespace().collect();
                let get = |k: &str| -> Option<u64> {
                    let i = t.iter().position(|x| *x == k)?;
                    t.get(i + 1)?.parse().ok()
                };
                Some((i + 1, get("all_count")?, get("hv_timer")?, get("sw_timer")?))
            })
            .collect();
        let mut runs = Vec::new();
        let mut i = 0;
        while i < iv.len() {
            if iv[i].1 == 0 {
                let start = i;
                while i < iv.len() && iv[i].1 == 0 {
                    i += 1;
                }
                if start > 0 && i < iv.len() {
                    runs.push((start, i - start));
                }
            } else {
                i += 1;
            }
        }
        let &(first, _) = runs.first()?;
        let median = |mut v: Vec<u64>| {
            v.sort_unstable();
            (!v.is_empty()).then(|| v[v.len() / 2] as f64)
        };
        let before = &iv[..first];
        let nominal = median(before[..before.len() - 1].iter().map(|x| x.1).collect())
            .or_else(|| median(vec![before[before.len() - 1].1]))
            .filter(|&n| n > 0.0)?;
        let pauses = runs
            .iter()
            .enumerate()
            .map(|(k, &(start, len))| {
                let resume = start + len;
                let next = runs.get(k + 1).map_or(iv.len(), |r| r.0);
                let after = &iv[resume + 1..next];
                let hv_before = iv[..start].iter().any(|x| x.2 > 0);
                let partial = iv[start - 1].1 as f64 / nominal;
                (
                    iv[start].0,
                    len,
                    (iv[resume].1 as f64 / nominal).to_bits(),
                    (len as f64 + (1.0 - partial).clamp(0.0, 1.0)).to_bits(),
                    hv_before,
                    hv_before && !after.is_empty() && after.iter().all(|x| x.2 == 0 && x.3 > 0),
                )
            })
            .collect();
        Some((nominal.to_bits(), pauses))
    }
}

fn tickburst(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = output(&mut tickburst!(args));
    (out, started.elapsed())
}

fn one_line_error(out: &Output) -> String {
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
    e
}

/// The record that made `analyze` try to build 10^18 windows.
#[test]
fn a_record_claiming_1e18_windows_exits_2_at_once() {
    let mut v = base();
    v["samples"]["end_ns"] = 1_000_000_000_000_000_000u64.into();
    v["samples"]["interval_ns"] = 1.into();
    let path = temp("windows.json");
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let (out, took) = tickburst(&["analyze", path.to_str().unwrap()]);
    let e = one_line_error(&out);
    assert!(
        e.contains("not a valid tickburst record: samples.interval_ns is 1 (allowed 10ms..60s)"),
        "{e}"
    );
    assert!(took < RUNAWAY, "{took:?}");
    // With a sane interval the end is still refused, by name.
    v["samples"]["interval_ns"] = 1_000_000_000u64.into();
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    let (out, _) = tickburst(&["analyze", path.to_str().unwrap()]);
    assert!(one_line_error(&out).contains("samples.end_ns is 1000000000000000000"));
    // The same boundary guards `model --cost-from`.
    let (out, _) = tickburst(&["model", "--cost-from", path.to_str().unwrap()]);
    assert!(one_line_error(&out).contains("samples.end_ns"));
}

/// Hostile records through the binary: each exits 2 with one line naming
/// what is wrong, promptly.
#[test]
fn hostile_records_are_one_line_errors() {
    type Mutate = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutate, &str)> = vec![
        (
            "overflow",
            Box::new(|v| v["samples"]["tick_deltas_ns"] = serde_json::json!([u64::MAX, 5])),
            "samples.tick_deltas_ns: tick times overflow",
        ),
        (
            "pause",
            Box::new(|v| {
                v["samples"]["pauses"] = serde_json::json!([{"start_ns": 10, "end_ns": 5}])
            }),
            "samples.pauses[0] [10, 5] is not a span",
        ),
        (
            "period",
            Box::new(|v| v["samples"]["period_ns"] = 0.into()),
            "samples.period_ns is 0 (allowed 1us..1s)",
        ),
        (
            "runs",
            Box::new(|v| {
                v["samples"]["host_events"]["sw_runs"] =
                    serde_json::json!([[5, 1, 0, 0], [1, 1, 0, 0]])
            }),
            "samples.host_events: host_events.sw_runs not sorted",
        ),
        (
            "vcpu",
            Box::new(|v| {
                let mut row = serde_json::json!({
                    "vcpu": 0, "paused": true, "steady": v["steady"].clone(), "pauses": [],
                    "guest": v["guest"].clone(), "collector": v["collector"].clone(),
                    "samples": v["samples"].clone(),
                });
                row["samples"]["interval_ns"] = 5.into();
                v["vcpus"] = serde_json::json!({
                    "subject": 0, "paused": [0], "list": [row],
                    "totals": {"rate_hz": null, "nominal_hz": 0.0, "ticks": 0, "lost_ticks": 0, "pauses": []},
                });
            }),
            "vcpus.list[0].samples.interval_ns is 5",
        ),
        (
            "newline",
            Box::new(|v| v["verdict"]["kind"] = "x\ny".into()),
            "not a tickburst run record: unknown variant",
        ),
        (
            "mode name",
            Box::new(|v| v["config"]["apic"] = "x3apic".into()),
            "config.apic: unknown value `x3apic` (allowed x2apic, xapic)",
        ),
        (
            "probe name",
            Box::new(|v| v["host"]["probes"]["enabled"] = serde_json::json!(["sw_timer", "bogus"])),
            "host.probes (a probe name): unknown value `bogus`",
        ),
    ];
    for (name, mutate, needle) in cases {
        let mut v = base();
        mutate(&mut v);
        let path = temp(&format!("{name}.json"));
        std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
        let (out, took) = tickburst(&["analyze", path.to_str().unwrap()]);
        let e = one_line_error(&out);
        assert!(e.contains(needle), "{name}: {e}");
        assert!(took < RUNAWAY, "{name}: {took:?}");
    }
}

/// A list longer than its limit stops the parse there; a file larger than
/// the limit is not read at all.
#[test]
fn oversized_lists_and_files_are_refused_unread() {
    let mut v = base();
    v["samples"]["tick_deltas_ns"] = Value::Null;
    let text = serde_json::to_string(&v).unwrap();
    let many = format!("[{}0]", "0,".repeat(tickburst::validate::MAX_TICKS + 1));
    let huge = text.replace(
        "\"tick_deltas_ns\":null",
        &format!("\"tick_deltas_ns\":{many}"),
    );
    let e = Record::from_json(&huge).unwrap_err();
    assert!(matches!(e, LoadError::Invalid(_)), "{e}");
    assert!(
        e.to_string()
            .contains("tick_deltas_ns has more than 10000000 entries"),
        "{e}"
    );

    let path = temp("sparse.json");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(10 << 30).unwrap(); // 10 GiB, sparse: nothing written
    let (out, took) = tickburst(&["analyze", path.to_str().unwrap()]);
    let e = one_line_error(&out);
    assert!(e.contains("more than the 512000000 bytes (488 MiB)"), "{e}");
    assert!(took < RUNAWAY, "{took:?}");
    std::fs::remove_file(&path).unwrap();
}

/// Peak RSS of the finished children of this process, KiB.
fn children_maxrss_kib() -> i64 {
    // SAFETY: getrusage writes only into the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_CHILDREN with a valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    u.ru_maxrss
}

/// A long bpftrace log (about 70 MB: a real table repeated) is analysed in
/// bounded memory, with the verdict of the table it repeats.
#[test]
fn a_long_bpftrace_log_is_streamed_in_bounded_memory() {
    let unpatched = std::fs::read_to_string(data("bpftrace-unpatched.txt")).unwrap();
    let path = temp("long-bpftrace.txt");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        // A long steady prefix, then the real table (pause, burst, fallback).
        let line = "all_count 4768  hv_timer  4768  sw_timer  0\n";
        for _ in 0..1_600_000 {
            f.write_all(line.as_bytes()).unwrap();
        }
        f.write_all(unpatched.as_bytes()).unwrap();
        // A long line without a newline at the end.
        f.write_all(&vec![b'x'; 4 << 20]).unwrap();
    }
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 70_000_000, "{size}");
    let (out, took) = tickburst(&["analyze", "--from-bpftrace", path.to_str().unwrap()]);
    let rss_kib = children_maxrss_kib();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("burst") && text.contains("fell back"),
        "{text}"
    );
    eprintln!(
        "bpftrace log of {size} bytes: {took:?}, peak RSS of the children so far {rss_kib} KiB"
    );
    assert!(rss_kib < 100 * 1024, "peak RSS {rss_kib} KiB");
    std::fs::remove_file(&path).unwrap();
}
