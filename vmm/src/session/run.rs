//! One session in one VM (`run`, `sweep`, `watch`): boot, the phases and
//! pauses of the plan, the end, and the record.
//!
//! Data flows one way: guest ring -> [`crate::session::collector`] ->
//! samples -> analysis -> record; live events go to a
//! [`RunObserver`], never back.

use crate::host::clock::monotonic_ns_at;
use crate::host::niceness::Yielding;
use crate::session::assemble::{self, End};
use crate::session::boot::{boot, Booted, LiveParts};
use crate::session::collector::{Collector, TscClock};
use crate::session::config::RunConfig;
use crate::session::error::RunError;
use crate::session::host_track::HostTrack;
use crate::session::live::Live;
use crate::session::observer::RunObserver;
use crate::session::outcome::RunOutput;
use crate::session::pause_loop::{check_clocks_at_end, run_phases, Targets};
use crate::session::stream_sync::StreamSync;
use crate::session::watch::Watch;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tickburst_analysis::stream::TickStream;

/// Ticks kept around pauses and gaps, all vCPUs together (2 MiB: about 60
/// pauses at 1 ms with a 3 s observation, 15 at 200 us). Beyond it the
/// summary says how many were not kept and which figures are lower bounds.
pub const KEPT_TICKS_BUDGET: usize = 1 << 18;

/// Boots the guest and runs the configured plan.
///
/// `started` is when the process started (for `timing.setup_us`); `stop` is
/// set by a Ctrl-C / SIGTERM handler to end the run early with a partial
/// record. Every vCPU is always resumed and stopped before this returns.
pub fn run(
    cfg: &RunConfig,
    started: Instant,
    stop: Option<Arc<AtomicBool>>,
    observer: &mut dyn RunObserver,
) -> Result<RunOutput, RunError> {
    let (mut b, parts) = boot(cfg, started, stop.as_ref(), observer)?;
    // This thread yields to the vCPU threads until the run ends (see
    // `host::niceness`): it must not delay the timer it measures.
    let _yielding = Yielding::start()
        .map_err(|e| observer.note(&format!("{e}: the collector keeps its priority")));
    let mut live = start_live(cfg, &b, parts, stop);
    live.mark_host(0, true);
    let targets = Targets {
        vcpus: &b.vcpus,
        set: &b.paused_set,
        subject_tid: b.subject_tid,
        epoch_mono: live.epoch_mono,
    };
    let step = run_phases(&mut live, &targets, observer);
    let end_ns = live.now_ns();
    check_clocks_at_end(&mut live, &b.vcpus);
    b.vcpus.stop_all();
    live.drain(end_ns);
    live.mark_host(end_ns, true);
    if cfg.plan.detects() {
        live.finish_detection(end_ns, observer);
    }
    let outcome = step;
    let end = End {
        end_ns,
        outcome,
        error: live.error.take(),
        started,
    };
    let record = assemble::record(&mut live, &b, end, observer)?;
    Ok(RunOutput { outcome, record })
}

/// The live state of a booted run: one collector per vCPU, each converting
/// its guest's TSC from the TSC/host-time pair read at its ready report.
fn start_live<'a>(
    cfg: &'a RunConfig,
    b: &Booted,
    (events, probes): LiveParts,
    stop: Option<Arc<AtomicBool>>,
) -> Live<'a> {
    let collectors = b
        .ready
        .iter()
        .map(|sync| {
            let stream = TickStream::new(
                b.timer.actual_period_ns,
                cfg.interval_ns,
                KEPT_TICKS_BUDGET / b.ready.len().max(1),
                cfg.plan.detects(),
            );
            let clock = TscClock {
                sync_tsc: sync.tsc,
                tsc_khz: b.tsc_khz,
                sync_ns: sync.at.saturating_duration_since(b.ready_at).as_nanos() as u64,
            };
            Collector::new(clock, stream)
        })
        .collect();
    Live {
        cfg,
        mem: b.mem.clone(),
        epoch: b.ready_at,
        epoch_mono: monotonic_ns_at(b.ready_at),
        pauses: vec![Vec::new(); b.ready.len()],
        collectors,
        subject: cfg.subject() as usize,
        printed_windows: 0,
        events,
        stop,
        host: HostTrack::new(probes, cfg.interval_ns),
        periodic: Default::default(),
        sync: StreamSync::new(b.ready.len()),
        watch: Watch::default(),
        error: None,
    }
}
