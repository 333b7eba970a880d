use super::*;
use crate::figures::{self, Analysis, Samples};

const MS: u64 = 1_000_000;

/// A 1 kHz guest, paused over `[4 s, 6 s)`, replaying 200 ticks right after
/// the resume, then steady to 20 s.
fn ticks() -> Vec<u64> {
    let mut v: Vec<u64> = (0..4000).map(|i| i * MS + (i * 37) % 400).collect();
    v.extend((0..200).map(|i| 6_000 * MS + i * 10_000));
    v.extend((0..14_000).map(|i| 6_010 * MS + i * MS));
    v
}

fn samples<'a>(ticks: &'a [u64], pauses: &'a [PauseSpan], end: u64) -> Samples<'a> {
    Samples::of_ticks(ticks, pauses, end)
}

/// Streams `ticks` in 2 ms drains; the pause is told when it starts and ends.
fn stream(ticks: &[u64], pause: PauseSpan, end: u64, budget: usize) -> (BoundedTicks, Vec<u64>) {
    let mut s = TickStream::new(MS, 1_000 * MS, budget, false);
    let mut i = 0;
    let mut now = 0;
    while now < end {
        now += 2 * MS;
        while i < ticks.len() && ticks[i] < now {
            s.push(ticks[i]);
            i += 1;
        }
        if now >= pause.start_ns {
            let open = PauseSpan {
                start_ns: pause.start_ns,
                end_ns: if now >= pause.end_ns {
                    pause.end_ns
                } else {
                    u64::MAX
                },
            };
            s.pause(open, true);
        }
        s.settle(s.newest().unwrap_or(0).saturating_sub(HOLD_NS));
    }
    s.finish(end)
}

fn same(a: &Analysis, b: &Analysis) {
    assert_eq!(a.windows, b.windows);
    assert_eq!(a.pauses, b.pauses);
    assert_eq!(a.steady.rate_hz, b.steady.rate_hz);
    assert_eq!(a.steady.ticks, b.steady.ticks);
    assert_eq!(a.steady.interval_max_us, b.steady.interval_max_us);
    let p = |x: Option<f64>, y: Option<f64>| (x.unwrap() - y.unwrap()).abs() < 0.001 * y.unwrap();
    assert!(p(a.steady.interval_p50_us, b.steady.interval_p50_us));
    assert!(p(a.steady.interval_p99_us, b.steady.interval_p99_us));
}

#[test]
fn bounded_figures_equal_the_full_ones() {
    let all = ticks();
    let pause = [PauseSpan {
        start_ns: 4_000 * MS,
        end_ns: 6_000 * MS,
    }];
    let end = 20_000 * MS + 300 * MS;
    let full = figures::analyze(&samples(&all, &pause, end));
    let (b, kept) = stream(&all, pause[0], end, usize::MAX);
    assert_eq!(b.ticks_total, all.len() as u64);
    assert_eq!(b.first_tick_ns, Some(all[0]));
    assert!(kept.len() < 3_000, "kept {} of {}", kept.len(), all.len());
    assert_eq!(b.kept_spans.len(), 1);
    assert_eq!(b.kept_spans[0].start_ns, 3_900 * MS);
    let bounded = b.analyze(&samples(&kept, &pause, end));
    same(&bounded, &full);
    assert!(full.pauses[0].catch_up_ms.is_some());
}

#[test]
fn gaps_are_found_and_kept_and_the_budget_holds() {
    let mut s = TickStream::new(MS, 1_000 * MS, 10, true);
    for t in [0, MS, 2 * MS, 20 * MS, 21 * MS, 22 * MS] {
        s.push(t);
    }
    assert_eq!(
        s.gaps(),
        &[PauseSpan {
            start_ns: 3 * MS,
            end_ns: 20 * MS
        }]
    );
    assert!(!s.quiet());
    assert_eq!(s.ticks_between(MS, 21 * MS), vec![MS, 2 * MS, 20 * MS]);
    let (b, kept) = s.finish(21 * MS + 1);
    assert_eq!(kept, vec![0, MS, 2 * MS, 20 * MS, 21 * MS]);
    assert_eq!(b.steady.ticks, 3, "the gap ends the steady span");
    assert_eq!(b.window_ticks, vec![5]);
    assert_eq!(b.ticks_total, 5, "the tick after the end is left out");

    // A short gap may use half the budget.
    let mut tight = TickStream::new(MS, 1_000 * MS, 4, true);
    for t in [0, 10 * MS, 11 * MS, 12 * MS] {
        tight.push(t);
    }
    let (b, kept) = tight.finish(20 * MS);
    assert_eq!(kept.len(), 2);
    assert_eq!(b.kept_dropped, 2);
}

#[test]
fn memory_does_not_follow_the_run() {
    // An hour at 200 us without a pause: nothing kept, windows per second.
    let mut s = TickStream::new(200_000, 1_000 * MS, 1 << 20, false);
    let mut t = 0;
    for _ in 0..(3_600 * 5_000u64) {
        t += 200_000;
        s.push(t);
        if t % (2 * MS) == 0 {
            s.settle(t.saturating_sub(HOLD_NS));
        }
    }
    assert!(s.pending.len() <= 5_100);
    let (b, kept) = s.finish(t + 1);
    assert!(kept.is_empty());
    assert_eq!(b.window_ticks.len(), 3_601);
    assert!(b.steady.intervals.len() < 10);
    assert_eq!(b.steady.ticks, 3_600 * 5_000);
}

#[test]
fn gaps_past_the_most_detected_are_counted() {
    // A tick every 10 periods: each interval is a short gap; half the list
    // takes them.
    let mut s = TickStream::new(MS, 1_000 * MS, 16, true);
    let n = MAX_GAPS as u64 / 2 + 4;
    let mut t = 0;
    for i in 0..=n {
        t = i * 10 * MS;
        s.push(t);
        if i % 1_000 == 0 {
            s.settle(t.saturating_sub(HOLD_NS));
        }
    }
    assert_eq!(s.gaps().len(), MAX_GAPS / 2);
    // Long ones take the other half, then they are counted too.
    for _ in 0..MAX_GAPS / 2 + 3 {
        t += 200 * MS;
        s.push(t);
    }
    assert_eq!(s.gaps().len(), MAX_GAPS);
    let (b, _) = s.finish(t + MS);
    assert_eq!(b.gaps_dropped, 4 + 3);
    assert!(b.budget_note().unwrap().contains("7 more gaps"));
}

#[test]
fn half_the_budget_is_kept_for_long_gaps() {
    // 1 kHz; a 6 ms gap every 2 s for 30 s, then a 500 ms gap at 40 s.
    let mut ticks = Vec::new();
    let mut t = 0;
    while t < 45_000 * MS {
        ticks.push(t);
        t += if t % (2_000 * MS) == 1_000 * MS && t < 30_000 * MS {
            6 * MS
        } else if t == 40_000 * MS {
            500 * MS
        } else {
            MS
        };
    }
    let budget = 8_000;
    let mut s = TickStream::new(MS, 1_000 * MS, budget, true);
    for chunk in ticks.chunks(2) {
        chunk.iter().for_each(|&t| s.push(t));
        s.settle(s.newest().unwrap_or(0).saturating_sub(HOLD_NS));
    }
    let (b, kept) = s.finish(45_000 * MS);
    // The short gaps spent half and lost the rest of their ticks ...
    assert!(b.kept_dropped > 5_000, "{}", b.kept_dropped);
    let before_long = kept.iter().filter(|&&t| t < 39_000 * MS).count();
    assert!(before_long <= budget / 2, "{before_long}");
    // ... the long gap has every tick from 100 ms before it to its catch-up.
    let around: Vec<u64> = ticks
        .iter()
        .copied()
        .filter(|&t| (39_950 * MS..=41_500 * MS).contains(&t))
        .collect();
    assert!(around.iter().all(|t| kept.contains(t)), "long gap not kept");
}
