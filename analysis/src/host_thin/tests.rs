use super::*;
use crate::analysis::host_between;
use crate::host_counts::HostCounts;
use crate::irq_runs::group_runs;
use crate::names::Scope;

const MS: u64 = 1_000_000;

/// A small deterministic generator (no dependency).
fn lcg(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *seed >> 33
}

fn mark(t_ns: u64, n: u64) -> HostMark {
    HostMark {
        t_ns,
        counts: HostCounts {
            sw_timer: Some(n),
            hv_timer: Some(n * 2),
            ..HostCounts::default()
        },
    }
}

/// Marks every ~10 ms with jitter and some long holes (the VMM stopped).
fn marks(seed: &mut u64, end: u64) -> Vec<HostMark> {
    let (mut t, mut n, mut v) = (lcg(seed) % (5 * MS), 0, Vec::new());
    while t < end {
        v.push(mark(t, n));
        n += 1 + lcg(seed) % 3;
        t += match lcg(seed) % 100 {
            0 => 40 * MS + lcg(seed) % (200 * MS),
            _ => 10 * MS + lcg(seed) % (3 * MS) - MS,
        };
    }
    v
}

#[test]
fn thinned_marks_give_the_same_counts_at_window_edges_and_in_kept_spans() {
    for round in 0..40u64 {
        let mut seed = round + 1;
        let end = 20_000 * MS;
        let all = marks(&mut seed, end);
        let interval = [1_000 * MS, 250 * MS, 100 * MS, 333 * MS][round as usize % 4];
        let spans = vec![
            PauseSpan {
                start_ns: 3_000 * MS + lcg(&mut seed) % (100 * MS),
                end_ns: 5_100 * MS,
            },
            PauseSpan {
                start_ns: 9_050 * MS,
                end_ns: 9_070 * MS + lcg(&mut seed) % (3_000 * MS),
            },
        ];
        let near = |t| near_spans(&spans, t);
        let thin = thin_marks(&all, interval, near);
        assert!(
            thin.len() * 3 < all.len(),
            "{} of {}",
            thin.len(),
            all.len()
        );
        let same = |a: u64, b: u64| {
            assert_eq!(
                host_between(&all, a, b, Scope::Vcpu),
                host_between(&thin, a, b, Scope::Vcpu),
                "round {round} {a}..{b}"
            );
        };
        let mut edge = 0;
        while edge <= end {
            same(edge, edge + interval);
            edge += interval;
        }
        for s in &spans {
            let mut t = s.start_ns;
            while t <= s.end_ns {
                same(t, s.end_ns);
                same(0, t);
                t += 1 + lcg(&mut seed) % (7 * MS);
            }
        }
    }
}

#[test]
fn marks_are_decided_only_once_settled_and_the_newest_stays() {
    let mut t = MarkThinner::new(1_000 * MS);
    for k in 0..300 {
        t.push(mark(k * 10 * MS, k));
    }
    t.settle(1_000 * MS, |_| false);
    // Marks from 950 ms on are not decided yet (tolerance 50 ms).
    assert_eq!(t.marks().first().map(|m| m.t_ns), Some(0));
    assert!(t.marks().iter().any(|m| m.t_ns == 960 * MS));
    assert!(!t.marks().iter().any(|m| m.t_ns == 500 * MS));
    t.settle(u64::MAX, |_| false);
    let kept: Vec<u64> = t.marks().iter().map(|m| m.t_ns / MS).collect();
    // Edges 0, 1 s, 2 s and the newest mark (its successor unknown).
    assert_eq!(kept, vec![0, 1_000, 2_000, 2_990]);
}

#[test]
fn the_earlier_of_two_as_near_is_the_one_taken() {
    assert!(nearest_to_an_edge(Some(990), 1_000, Some(1_010), 1_000));
    assert!(!nearest_to_an_edge(Some(995), 1_005, Some(1_015), 1_000));
    assert!(nearest_to_an_edge(Some(985), 995, Some(1_005), 1_000));
    assert!(nearest_to_an_edge(None, 7, Some(17), 1_000));
    assert!(!nearest_to_an_edge(Some(10), 20, Some(30), 1_000));
}

fn storm(events: &mut Vec<TimerEvent>, t0: u64, n: u64, cpu: u32) {
    let now = t0 as i64;
    events.push(TimerEvent::Start {
        t_ns: t0.saturating_sub(5),
        expires_ns: now - 1_000,
    });
    for k in 0..n {
        let t = t0 + k * 10;
        events.push(TimerEvent::Entry {
            t_ns: t,
            cpu,
            now_ns: now,
        });
        events.push(TimerEvent::Exit { t_ns: t + 5, cpu });
    }
}

#[test]
fn events_keep_runs_in_spans_and_totals_for_the_run() {
    let mut events = Vec::new();
    for k in 0..5_000u64 {
        storm(&mut events, k * MS + 100, 1, (k % 2) as u32);
    }
    // The longest run anywhere, outside every kept span.
    storm(&mut events, 4_000 * MS + 200, 50, 1);
    // A storm inside the kept span.
    storm(&mut events, 2_000 * MS + 300, 20, 0);
    let spans = [PauseSpan {
        start_ns: 1_900 * MS,
        end_ns: 3_000 * MS,
    }];
    let near = |t| near_spans(&spans, t);
    let runs = group_runs(&mut events);
    // Fed in chunks, out of order inside each, settled 1 s behind.
    let mut th = EventThinner::default();
    for (i, chunk) in events.chunks(700).enumerate() {
        let mut c = chunk.to_vec();
        c.reverse();
        th.push(c);
        th.push_hv([i as u64 * 3 * MS]);
        let newest = chunk.iter().map(TimerEvent::t_ns).max().unwrap_or(0);
        th.settle(newest.saturating_sub(1_000 * MS), near);
    }
    let got = th.finish(near);
    let want: Vec<IrqRun> = runs.iter().copied().filter(|r| near(r.t_ns())).collect();
    assert!(
        got.sw_runs == want,
        "{} runs, {} wanted",
        got.sw_runs.len(),
        want.len()
    );
    assert!(got.sw_runs.len() < runs.len() / 3);
    assert_eq!(
        got.sw_sampled,
        runs.iter().map(|r| r.callbacks()).sum::<u64>()
    );
    assert_eq!(got.longest_anywhere.map(|r| r.callbacks()), Some(50));
    assert_eq!(
        got.longest_of_run(),
        HostEvents {
            sw_runs: runs.clone(),
            ..HostEvents::default()
        }
        .longest_run(0, u64::MAX)
    );
    assert_eq!(
        got.longest_run(1_900 * MS, 3_000 * MS)
            .map(|r| r.callbacks()),
        Some(20)
    );
    assert!(got.hv_ns.iter().all(|&t| near(t)));
    assert!(got.hv_sampled.unwrap() > got.hv_ns.len() as u64);
    assert!(got.validate().is_ok());
    let counted = HostEvents {
        sw_counted: got.sw_sampled,
        hv_counted: got.hv_sampled,
        ..got.clone()
    };
    assert!(counted.complete());
}
