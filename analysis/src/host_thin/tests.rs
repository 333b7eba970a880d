use super::*;
use crate::figures::host_between;
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
            sw_timer: Some(n).into(),
            hv_timer: Some(n * 2).into(),
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
fn thinned_marks_give_the_same_counts_at_window_edges_and_pause_edges() {
    for round in 0..40u64 {
        let mut seed = round + 1;
        let end = 20_000 * MS;
        let all = marks(&mut seed, end);
        let interval = [1_000 * MS, 250 * MS, 100 * MS, 333 * MS][round as usize % 4];
        let pauses = vec![
            PauseSpan {
                start_ns: 3_000 * MS + lcg(&mut seed) % (100 * MS),
                end_ns: 5_100 * MS,
            },
            PauseSpan {
                start_ns: 5_900 * MS,
                end_ns: 5_930 * MS + lcg(&mut seed) % (3_000 * MS),
            },
            PauseSpan {
                start_ns: 12_050 * MS,
                end_ns: 12_070 * MS + lcg(&mut seed) % (30 * MS),
            },
        ];
        let thin = thin_marks(&all, interval, &pauses);
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
        // What the analysis asks about a pause: start to resume, resume to
        // the end of the first second (or the next pause), 0 to the start.
        for (i, p) in pauses.iter().enumerate() {
            let limit = pauses.get(i + 1).map_or(end, |n| n.start_ns);
            same(p.start_ns, p.end_ns);
            same(p.end_ns, (p.end_ns + 1_000 * MS).min(limit));
            same(0, p.start_ns);
        }
    }
}

#[test]
fn marks_needed_are_the_nearest_to_the_pause_edges_only() {
    let p = [
        PauseSpan {
            start_ns: 1_000 * MS,
            end_ns: 5_000 * MS,
        },
        PauseSpan {
            start_ns: 5_500 * MS,
            end_ns: u64::MAX,
        },
    ];
    // Marks every 10 ms from 5 ms: the nearest to 1 s is at 1 005 ms
    // (5 ms after), the one at 995 ms as near: the earlier one is taken.
    let needed = |ms: u64| mark_needed(&p, Some((ms - 10) * MS), ms * MS, Some((ms + 10) * MS));
    assert!(needed(995) && !needed(1_005) && !needed(985));
    assert!(!needed(3_005));
    assert!(needed(4_995) && needed(5_495) && needed(5_995));
    assert!(!needed(6_015) && !needed(100_005));
    // Beyond the tolerance the nearest is not used: not needed.
    assert!(!mark_needed(&p, Some(900 * MS), 1_060 * MS, None));
    let span = |ms: u64| span_needed(&p, ms * MS);
    assert!(!span(900) && span(960) && span(3_000) && span(6_040));
    assert!(span(100_000), "an open pause goes on");
    assert!(!span_needed(&p[..1], 6_100 * MS));
}

#[test]
fn marks_are_decided_only_once_settled_and_the_newest_stays() {
    let mut t = MarkThinner::new(1_000 * MS);
    for k in 0..300 {
        t.push(mark(k * 10 * MS, k));
    }
    t.settle(1_000 * MS, &[]);
    // Marks from 950 ms on are not decided yet (tolerance 50 ms).
    assert_eq!(t.marks().first().map(|m| m.t_ns), Some(0));
    assert!(t.marks().iter().any(|m| m.t_ns == 960 * MS));
    assert!(!t.marks().iter().any(|m| m.t_ns == 500 * MS));
    t.settle(u64::MAX, &[]);
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
    let pauses = [PauseSpan {
        start_ns: 1_950 * MS,
        end_ns: 2_000 * MS,
    }];
    let near = |t| span_needed(&pauses, t);
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

#[test]
fn events_beyond_the_budget_are_counted_and_make_them_incomplete() {
    let mut th = EventThinner::default();
    let n = MAX_KEPT_EVENTS as u64 + 10;
    th.push((0..n).map(|k| TimerEvent::Entry {
        t_ns: k * 1_000,
        cpu: 0,
        now_ns: k as i64,
    }));
    th.push_hv((0..n).map(|k| k * 1_000));
    let got = th.finish(|_| true);
    assert_eq!(got.sw_runs.len(), MAX_KEPT_EVENTS);
    assert_eq!(got.hv_ns.len(), MAX_KEPT_EVENTS);
    assert_eq!(got.kept_dropped, 20);
    assert_eq!(got.sw_sampled, n);
    let counted = HostEvents {
        sw_counted: n,
        ..got
    };
    assert!(!counted.complete());
    assert!(counted.loss_note().unwrap().contains("not kept"));
}
