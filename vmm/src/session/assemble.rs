//! The record of a finished session, assembled from its collectors, pauses,
//! host marks and samples, analysed by the same code path as `tickburst
//! analyze` of the saved record, and judged.

use crate::host::clock::monotonic_ns_at;
use crate::host::probes::HostProbes;
use crate::session::boot::Booted;
use crate::session::error::RunError;
use crate::session::live::Live;
use crate::session::observer::RunObserver;
use crate::vstate::slots;
use std::time::Instant;
use tickburst_analysis::bounded::BoundedTicks;
use tickburst_analysis::collection::GuestCounters;
use tickburst_analysis::figures::{self, HostMark, PauseSpan, Samples, TimerBackend, Window};
use tickburst_analysis::host_thin::span_needed;
use tickburst_analysis::irq_runs::HostEvents;
use tickburst_analysis::judge::summarize;
use tickburst_analysis::names::{Outcome, Probe};
use tickburst_analysis::record::{
    ConfigRecord, Record, RecordVerdict, Timing, FORMAT, FORMAT_VERSION,
};
use tickburst_analysis::samples::{RawSamples, SamplesError};
use tickburst_analysis::vcpus::{self, VcpuRecord, VcpusRecord};
use tickburst_analysis::verdict::Kind;
use vm_memory::GuestMemoryMmap;

/// Where the run ended and what it did not print live.
pub(super) struct End {
    /// The run's end, ns since the epoch.
    pub(super) end_ns: u64,
    /// How it ended.
    pub(super) outcome: Outcome,
    /// Why it failed, when it did.
    pub(super) error: Option<String>,
    /// When the process started (for `timing`).
    pub(super) started: Instant,
}

/// Builds, analyses and judges the record of a finished run; tells the
/// observer the windows it did not see live (the last, partial one).
pub(super) fn record(
    live: &mut Live,
    b: &Booted,
    end: End,
    observer: &mut dyn RunObserver,
) -> Result<Record, RunError> {
    let cfg = live.cfg;
    // Moved, not copied: at the end of a day they are a window's largest part.
    let marks = live.host.marks.take_marks();
    let end_counts = marks.last().map(|m| m.counts).unwrap_or_default();
    let period_ns = b.timer.actual_period_ns;
    let finished: Vec<Finished> = live
        .collectors
        .iter_mut()
        .map(|c| c.finish(end.end_ns))
        .collect();
    let subject_pauses = live.pauses_until(live.subject, end.end_ns);
    let host_events = live
        .host
        .probes
        .host_events(live.epoch_mono, &end_counts, |t| {
            span_needed(&subject_pauses, t)
        });
    let mut raw = samples_of(
        live,
        live.subject,
        &finished[live.subject],
        (period_ns, end.end_ns),
        &[],
        host_events.as_ref(),
    );
    raw.host_marks = marks;
    let internal = |e: SamplesError| RunError::Config(format!("internal: {e}"));
    let analysis = raw.analyze().map_err(internal)?;
    let paused_set = paused_set(live, b);
    let multi = vcpus_record(
        live,
        &finished,
        &raw.pauses,
        &paused_set,
        (period_ns, end.end_ns),
    )
    .map_err(internal)?;
    tell_unseen_windows(live, &analysis.windows, &finished, observer);
    let mut host = b.host.clone();
    host.timer_backend = Some(backend_of(&live.host.probes, live.epoch));
    host.probes = Some(live.host.probes.report().clone());
    let stats = live.collectors[live.subject].stats();
    let us_since_start =
        |ns: u64| (b.ready_at.duration_since(end.started).as_nanos() as f64 + ns as f64) / 1e3;
    let first_tick = raw.first_tick_ns();
    let mut record = Record {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        tickburst_version: env!("CARGO_PKG_VERSION").into(),
        outcome: end.outcome,
        error: end.error,
        config: config_record(live, b, paused_set),
        host,
        timing: Timing {
            setup_us: us_since_start(0),
            first_tick_us: first_tick.map(us_since_start),
        },
        steady: analysis.steady,
        lost_ticks: stats.lost_ticks,
        collector: stats,
        guest: guest_counters(&live.mem, live.subject as u32),
        windows: analysis.windows,
        pauses: analysis.pauses,
        verdict: RecordVerdict {
            thresholds: cfg.thresholds,
            kind: Kind::NotExercised,
            pauses: Vec::new(),
            outside_pauses: None,
        },
        samples: raw,
        sweep: None,
        detected: cfg.plan.detects().then(|| live.watch.detected.clone()),
        vcpus: multi,
    };
    if cfg.plan.is_sweep() {
        record.sweep = Some(summarize(&record));
    }
    record.judge(&cfg.thresholds);
    Ok(record)
}

/// The vCPUs the run paused; in a `watch`, those whose ticks show a pause.
fn paused_set(live: &Live, b: &Booted) -> Vec<u32> {
    if live.cfg.plan.detects() {
        (0..live.pauses.len() as u32)
            .filter(|&i| !live.pauses[i as usize].is_empty())
            .collect()
    } else {
        b.paused_set.clone()
    }
}

/// Tells the observer the windows it did not see live (the last, partial
/// one), with every vCPU's ticks in each.
fn tell_unseen_windows(
    live: &Live,
    windows: &[Window],
    finished: &[Finished],
    observer: &mut dyn RunObserver,
) {
    for (k, w) in windows
        .iter()
        .enumerate()
        .skip(live.printed_windows as usize)
    {
        let counts: Vec<u64> = if finished.len() < 2 {
            Vec::new()
        } else {
            let at = |f: &Finished| f.0.window_ticks.get(k).copied().unwrap_or(0);
            finished.iter().map(at).collect()
        };
        observer.window(w, &counts);
    }
}

/// A vCPU's ticks at the end: the bounded summary and the kept ticks.
type Finished = (BoundedTicks, Vec<u64>);

/// vCPU `vcpu`'s samples up to `end_ns` (`(period_ns, end_ns)`).
fn samples_of(
    live: &Live,
    vcpu: usize,
    finished: &Finished,
    (period_ns, end_ns): (u64, u64),
    host: &[HostMark],
    events: Option<&HostEvents>,
) -> RawSamples {
    let pauses = live.pauses_until(vcpu, end_ns);
    let (bounded, ticks) = finished;
    RawSamples::bounded(
        &Samples {
            period_ns,
            interval_ns: live.cfg.interval_ns,
            end_ns,
            ticks_ns: ticks,
            pauses: &pauses,
            host,
            host_scope: live.host.scope,
            host_events: events,
        },
        bounded.clone(),
    )
}

/// Every vCPU's row and the totals (`None` with one vCPU).
fn vcpus_record(
    live: &Live,
    finished: &[Finished],
    subject_pauses: &[PauseSpan],
    paused_set: &[u32],
    period_end: (u64, u64),
) -> Result<Option<VcpusRecord>, SamplesError> {
    let count = live.collectors.len();
    if count < 2 {
        return Ok(None);
    }
    let mut list = Vec::with_capacity(count);
    for (vcpu, f) in finished.iter().enumerate().take(count) {
        let samples = samples_of(live, vcpu, f, period_end, &[], None);
        let (steady, pauses) = vcpus::figures(&samples, subject_pauses)?;
        list.push(VcpuRecord {
            vcpu: vcpu as u32,
            paused: paused_set.contains(&(vcpu as u32)),
            steady,
            pauses,
            guest: guest_counters(&live.mem, vcpu as u32),
            collector: live.collectors[vcpu].stats(),
            samples,
        });
    }
    Ok(Some(VcpusRecord {
        subject: live.subject as u32,
        paused: paused_set.to_vec(),
        totals: vcpus::totals(&list),
        list,
    }))
}

/// The configuration as recorded.
fn config_record(live: &Live, b: &Booted, pause_vcpus: Vec<u32>) -> ConfigRecord {
    let cfg = live.cfg;
    let ms = |ns: u64| ns as f64 / 1e6;
    let lengths = cfg.pause_lengths();
    ConfigRecord {
        period_ns: cfg.period_ns,
        actual_period_ns: b.timer.actual_period_ns,
        initial_count: b.timer.initial_count,
        divisor: b.timer.divisor,
        apic_bus_cycle_ns: b.bus_cycle_ns,
        apic: cfg.apic,
        idle: cfg.idle,
        timer: cfg.timer,
        pause_method: cfg.pause_method,
        warmup_ms: ms(cfg.first_phase_ns()),
        pause_ms: ms(cfg.plan.nominal_pause_ns()),
        cycles: lengths.len() as u32,
        pause_lengths_ms: lengths.into_iter().map(ms).collect(),
        observe_ms: ms(cfg.observe_ns),
        interval_ms: ms(cfg.interval_ns),
        tsc_khz: b.tsc_khz,
        vcpus: live.collectors.len() as u32,
        pause_vcpus,
    }
}

/// The guest's own counters in vCPU `vcpu`'s slot (0 if unreadable).
fn guest_counters(mem: &GuestMemoryMmap, vcpu: u32) -> GuestCounters {
    let r = slots::read_results(mem, vcpu).unwrap_or_default();
    GuestCounters {
        tick_count: r.tick_count,
        spurious_count: r.spurious_count,
        exit_loops: r.exit_loops,
    }
}

/// Classifies the hv/sw switches seen by the probes.
fn backend_of(probes: &HostProbes, epoch: Instant) -> TimerBackend {
    if !probes.report().enabled.contains(&Probe::HvState) {
        let why = probes
            .report()
            .missing
            .iter()
            .find(|m| m.probe == Probe::HvState)
            .map_or_else(|| "host probes off".to_string(), |m| m.reason.clone());
        return figures::timer_backend(Err(why));
    }
    let epoch_mono = monotonic_ns_at(epoch);
    // Switches before the epoch belong to the guest's probe phase, not to
    // the timer the run measures.
    let switches: Vec<(f64, bool)> = probes
        .switches()
        .iter()
        .filter(|s| s.mono_ns >= epoch_mono)
        .map(|s| ((s.mono_ns - epoch_mono) as f64 / 1e6, s.hv))
        .collect();
    figures::timer_backend(Ok(&switches))
}
