//! Integration tests that boot real tickburst guests on `/dev/kvm` live in
//! `tests/`; this library only holds what they share.

use tickburst::host::probes::ProbeMode;
use tickburst::names::Apic;
use tickburst::record::Record;
use tickburst::session::config::{PausePlan, RunConfig};

/// One millisecond, in ns.
pub const MS: u64 = 1_000_000;

/// The run most tests boot: 1 ms period, 1.5 s warm-up, one 1 s kick pause,
/// 1.5 s observation, 250 ms windows, HLT idle, host probes off.
pub fn one_pause_config(apic: Apic) -> RunConfig {
    RunConfig {
        period_ns: MS,
        warmup_ns: 1_500 * MS,
        plan: PausePlan::Run {
            pause_ns: 1_000 * MS,
            cycles: 1,
        },
        observe_ns: 1_500 * MS,
        interval_ns: 250 * MS,
        apic,
        host_probes: ProbeMode::Off,
        ..RunConfig::default()
    }
}

/// Ticks in the windows that are entirely before the first pause (or all
/// windows when there is none), skipping the first (boot) window, with their
/// expected counts.
pub fn steady_windows(record: &Record) -> (u64, f64) {
    let first_pause = record.pauses.first().map_or(f64::MAX, |p| p.start_ms);
    record
        .windows
        .iter()
        .skip(1)
        .filter(|w| {
            !w.paused
                && w.t_ms + w.duration_ms <= first_pause
                && w.duration_ms >= record.config.interval_ms
        })
        .fold((0, 0.0), |(t, e), w| {
            (t + w.guest_ticks, e + w.expected_ticks)
        })
}

/// Asserts that the VMM collected every tick the guest counted. The guest's
/// ISR advances the ring head, then its own tick count; a vCPU stopped at
/// the end of the run between those two writes leaves one more entry than
/// ticks counted (seen once in ~12 000), never fewer.
pub fn assert_every_tick_collected(what: &str, tick_count: u64, entries_read: u64) {
    assert!(
        entries_read == tick_count || entries_read == tick_count + 1,
        "{what}: guest counted {tick_count} ticks, the collector read {entries_read} entries"
    );
}

/// Asserts `value` is within `tolerance` (relative) of `target`.
pub fn assert_close(what: &str, value: f64, target: f64, tolerance: f64) {
    assert!(
        (value - target).abs() <= tolerance * target,
        "{what}: {value} not within {:.0}% of {target}",
        tolerance * 100.0
    );
}
