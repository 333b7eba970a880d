//! The probes of `top`: perf events on tracepoints and, for hv expiries, a
//! kprobe, closed when `top` ends or the VM goes away. The one change to
//! global tracing state is the kprobe event the hv counters share, removed
//! after the last of them is closed ([`crate::host::kprobe_event`]).
//!
//! - **Learning each vCPU's LAPIC hrtimer.** One ring per CPU samples
//!   `timer:hrtimer_start` of `apic_timer_fn` host-wide with the thread
//!   that raised it. KVM starts a vCPU's timer in its vCPU thread (the guest
//!   programs it, hv/sw switches, and a move of the thread to another CPU),
//!   in process context with mode `ABS|HARD`; the hrtimer core re-arms a
//!   periodic timer from the hard interrupt with mode `ABS`, in whatever
//!   thread was interrupted (often another VM's vCPU). So the filter keeps
//!   `mode != 0`, and samples not in task context (hard IRQ, softirq, NMI:
//!   [`in_task_context`]) are dropped: a vCPU thread's `hrtimer_start` names
//!   its own timer.
//!   Learned once a VM's vCPU thread is known, even if the start came before
//!   (the map keeps the last hrtimer of every thread seen).
//! - **sw callbacks**: [`TimerSampler`] on the learned hrtimer, per CPU,
//!   every callback sampled and counted (a lost sample shows as `lost`).
//! - **hv expiries**: counted on the vCPU thread, only where an hv timer can
//!   exist: a kprobe on `kvm_lapic_expired_hv_timer`, which runs on hv
//!   expiries only (one kprobe event for all vCPUs, else one perf kprobe
//!   per vCPU), else `kvm:kvm_exit` with `exit_reason == 52`, which runs on
//!   every exit ([`HvExpiries`]).
//! - **irq** (`--irq` only): `kvm:kvm_apic_accept_irq` counted on the vCPU
//!   thread.
//! - **left hv**: `kvm:kvm_hv_timer_state` sampled on the vCPU thread with
//!   the filter `hv_timer_in_use == 0` (the times KVM left the hv timer),
//!   only where an hv timer can exist. KVM traces the event at every re-arm
//!   of the hv timer too (once per expiry of a periodic timer): those the
//!   kernel's filter drops, so they are never written to a ring (a sample
//!   per expiry cost an exit-heavy guest 1.5% in the emulated Intel host).

use crate::host::hv_timer::{HvCounter, HvExpiries};
use crate::host::perf::{
    self, in_task_context, le_u32, le_u64, open_tracepoint, PerfError, Sampling, RECORD_SAMPLE,
};
use crate::host::timer_sampler::{EventIds, TimerSampler};
use perf_event::{Counter, SampleFlag, Sampler};
use std::collections::HashMap;
use tickburst_analysis::irq_runs::{group_runs, IrqRun, TimerEvent};
use tickburst_analysis::top::{LeftHv, SampleLoss};

/// Ring of the hrtimer learner per CPU, bytes.
const LEARNER_BYTES: usize = 64 * 4096;
/// Callback ring per CPU and vCPU, bytes (~4000 callbacks between two
/// drains; a longer storm shows as `lost`, its run a lower bound).
const CALLBACK_RING_BYTES: usize = 1024 * 1024;
/// Ring of the left-hv sampler per vCPU thread, drained with the others
/// (4096 samples of 16 bytes: a vCPU may leave hv 16 000 times a second
/// between two drains; only a count and the last time are kept).
const LEFT_HV_BYTES: usize = 16 * 4096;
/// The filter of the left-hv sampler.
const LEFT_HV_FILTER: &str = "hv_timer_in_use == 0";
/// Where the raw data starts in a sample of `TID | RAW` (u32 pid, u32 tid,
/// u32 size).
const TID_RAW_PAYLOAD: usize = 12;

/// Host-wide learner of the vCPU threads' LAPIC hrtimers.
pub struct Learner {
    rings: Vec<Sampler>,
    hrtimer_at: usize,
    by_tid: HashMap<u32, u64>,
}

impl Learner {
    /// Opens one ring per CPU for `hrtimer_start` (id `start_id`) of
    /// callback `function`; `hrtimer_at` is the offset of its `hrtimer`
    /// field.
    pub fn open(
        start_id: u64,
        function: u64,
        hrtimer_at: usize,
        cpus: usize,
    ) -> Result<Learner, PerfError> {
        let sample = Sampling::drained(SampleFlag::TID | SampleFlag::RAW);
        let strict = format!("function == {function:#x} && mode != 0");
        let loose = format!("function == {function:#x}");
        let mut rings = Vec::with_capacity(cpus);
        for cpu in 0..cpus {
            // Kernels without `mode` in the event: the IRQ check alone.
            let counter = open_tracepoint(start_id, None, Some(cpu), Some(&strict), Some(sample))
                .or_else(|_| {
                open_tracepoint(start_id, None, Some(cpu), Some(&loose), Some(sample))
            })?;
            rings.push(counter.sampled(LEARNER_BYTES).map_err(PerfError::Ring)?);
        }
        Ok(Learner {
            rings,
            hrtimer_at,
            by_tid: HashMap::new(),
        })
    }

    /// Reads the rings: the last hrtimer each thread started.
    pub fn drain(&mut self) {
        for ring in &mut self.rings {
            while let Some(rec) = ring.next_record() {
                if rec.ty() != RECORD_SAMPLE {
                    continue;
                }
                let bytes = rec.to_contiguous();
                let flags = bytes.get(TID_RAW_PAYLOAD + 2).copied();
                if !flags.is_some_and(in_task_context) {
                    continue;
                }
                if let (Some(tid), Some(h)) = (
                    le_u32(&bytes, 4),
                    le_u64(&bytes, TID_RAW_PAYLOAD + self.hrtimer_at),
                ) {
                    self.by_tid.insert(tid, h);
                }
            }
        }
    }

    /// The hrtimer thread `tid` started last, if seen.
    pub fn hrtimer_of(&self, tid: u32) -> Option<u64> {
        self.by_tid.get(&tid).copied()
    }

    /// Forgets threads that are gone.
    pub fn retain(&mut self, alive: impl Fn(u32) -> bool) {
        self.by_tid.retain(|tid, _| alive(*tid));
    }
}

/// Tracepoint ids the per-vCPU probes use (each `Err` names why that signal
/// is not measured).
#[derive(Debug, Clone)]
pub struct ThreadIds {
    /// How hv expiries are counted, where an hv timer can exist.
    pub hv: Result<HvExpiries, String>,
    /// `kvm:kvm_apic_accept_irq`.
    pub accept_irq: Result<u64, String>,
    /// `kvm:kvm_hv_timer_state`, where an hv timer can exist.
    pub left_hv: Result<u64, String>,
}

/// What one vCPU's probes read over one interval.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// hv expiries (None: not measured this interval).
    pub hv: Option<u64>,
    /// sw callbacks counted.
    pub sw: Option<u64>,
    /// Callbacks counted in the interval but not sampled (beyond a slack
    /// of [`LOST_SLACK`] for callbacks at the edge).
    pub sw_lost: u64,
    /// Runs in one interrupt (times ns since the epoch).
    pub runs: Option<Vec<IrqRun>>,
    /// Interrupts accepted.
    pub irq: Option<u64>,
    /// How often and when last KVM left the hv timer (times ns since the
    /// epoch; `None`: not measured).
    pub left_hv: Option<LeftHv>,
}

/// A running count a [`Delta`] reads.
trait Count {
    /// The count so far.
    fn count(&mut self) -> std::io::Result<u64>;
}

impl Count for Counter {
    fn count(&mut self) -> std::io::Result<u64> {
        self.read()
    }
}

impl Count for HvCounter {
    fn count(&mut self) -> std::io::Result<u64> {
        self.read()
    }
}

/// A counter read as deltas; `None` for the interval it was opened in.
struct Delta<C> {
    counter: C,
    last: u64,
    fresh: bool,
}

impl<C: Count> Delta<C> {
    fn new(counter: C) -> Delta<C> {
        Delta {
            counter,
            last: 0,
            fresh: true,
        }
    }

    fn read(&mut self) -> Option<u64> {
        let now = self.counter.count().ok()?;
        let d = now.saturating_sub(self.last);
        self.last = now;
        (!std::mem::take(&mut self.fresh)).then_some(d)
    }
}

/// The sw side of one vCPU: its hrtimer's callbacks.
struct SwProbe {
    sampler: TimerSampler,
    hrtimer: u64,
    counted: u64,
    counted_before: u64,
    fresh: bool,
    /// The last `hrtimer_start` read: the `expires` the first callback of
    /// the next interval is late against.
    last_start: Option<TimerEvent>,
    /// Callbacks counted and never sampled.
    loss: SampleLoss,
    /// The last interval's events, kept for their buffer
    /// ([`TimerSampler::take_into`]).
    scratch: Vec<TimerEvent>,
}

/// The probes of one vCPU.
#[derive(Default)]
pub struct VcpuProbes {
    sw: Option<SwProbe>,
    hv: Option<Delta<HvCounter>>,
    irq: Option<Delta<Counter>>,
    /// The left-hv ring and what its drains found since the last reading
    /// (CLOCK_MONOTONIC times).
    left_hv: Option<(Sampler, LeftHv)>,
    /// Why the thread probes failed to open (first reason).
    pub thread_error: Option<String>,
    threads_opened: bool,
}

impl VcpuProbes {
    /// The hrtimer the sw side follows.
    pub fn hrtimer(&self) -> Option<u64> {
        self.sw.as_ref().map(|s| s.hrtimer)
    }

    /// Opens the sw side on `hrtimer`.
    pub fn open_sw(
        &mut self,
        ids: EventIds,
        hrtimer: u64,
        function: u64,
        cpus: usize,
    ) -> Result<(), PerfError> {
        let sampler = TimerSampler::open(ids, hrtimer, function, cpus, CALLBACK_RING_BYTES)?;
        self.sw = Some(SwProbe {
            sampler,
            hrtimer,
            counted: 0,
            counted_before: 0,
            fresh: true,
            last_start: None,
            scratch: Vec::new(),
            loss: SampleLoss::default(),
        });
        Ok(())
    }

    /// Opens the probes on the vCPU thread `tid` (once).
    pub fn open_thread(&mut self, tid: u32, ids: &ThreadIds) {
        if std::mem::replace(&mut self.threads_opened, true) {
            return;
        }
        let pid = Some(tid as libc::pid_t);
        let mut note = |e: String| {
            self.thread_error.get_or_insert(e);
        };
        if let Ok(hv) = &ids.hv {
            match hv.open(tid as libc::pid_t) {
                Ok(c) => self.hv = Some(Delta::new(c)),
                Err(e) => note(e.to_string()),
            }
        }
        if let Ok(id) = ids.accept_irq {
            match open_tracepoint(id, pid, None, None, None) {
                Ok(c) => self.irq = Some(Delta::new(c)),
                Err(e) => note(e.to_string()),
            }
        }
        if let Ok(id) = ids.left_hv {
            let sample = Sampling::drained(SampleFlag::TIME);
            match open_tracepoint(id, pid, None, Some(LEFT_HV_FILTER), Some(sample))
                .and_then(|c| c.sampled(LEFT_HV_BYTES).map_err(PerfError::Ring))
            {
                Ok(s) => self.left_hv = Some((s, LeftHv::default())),
                Err(e) => note(e.to_string()),
            }
        }
    }

    /// Moves samples out of the rings (often, so a ring never fills).
    pub fn drain(&mut self) {
        if let Some(sw) = self.sw.as_mut() {
            sw.sampler.drain();
        }
        if let Some((sampler, left)) = self.left_hv.as_mut() {
            while let Some(rec) = sampler.next_record() {
                if rec.ty() == perf::RECORD_SAMPLE {
                    if let Some(t) = le_u64(&rec.to_contiguous(), 0) {
                        left.add(t);
                    }
                }
            }
        }
    }

    /// The interval that ends now; event times made relative to `epoch_ns`
    /// (CLOCK_MONOTONIC).
    pub fn read(&mut self, epoch_ns: u64) -> Reading {
        // The counters first, then the rings: every callback counted has
        // its sample in a ring by then ([`SampleLoss`]).
        if let Some(sw) = self.sw.as_mut() {
            if let Some(n) = sw.sampler.counted() {
                sw.counted = n;
            }
        }
        self.drain();
        let mut r = Reading {
            hv: self.hv.as_mut().and_then(Delta::read),
            irq: self.irq.as_mut().and_then(Delta::read),
            ..Reading::default()
        };
        if let Some(sw) = self.sw.as_mut() {
            let mut events = std::mem::take(&mut sw.scratch);
            sw.sampler.take_into(&mut events);
            for e in &mut events {
                *e = e.since(epoch_ns);
            }
            events.extend(sw.last_start.take());
            let runs = group_runs(&mut events);
            sw.last_start = events
                .iter()
                .rev()
                .find(|e| matches!(e, TimerEvent::Start { .. }))
                .copied();
            sw.scratch = events;
            let sampled: u64 = runs.iter().map(IrqRun::callbacks).sum();
            let delta = sw.counted.saturating_sub(sw.counted_before);
            sw.counted_before = sw.counted;
            let lost = sw.loss.interval(sw.counted, sampled);
            if !std::mem::take(&mut sw.fresh) {
                r.sw = Some(delta);
                r.sw_lost = lost;
                r.runs = Some(runs);
            }
        }
        if let Some((_, left)) = self.left_hv.as_mut() {
            let mut taken = std::mem::take(left);
            taken.last_ns = taken.last_ns.map(|t| t.saturating_sub(epoch_ns));
            r.left_hv = Some(taken);
        }
        r
    }
}
