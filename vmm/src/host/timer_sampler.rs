//! Every callback of our vCPU's LAPIC hrtimer, one by one: per CPU one perf
//! ring fed by three tracepoints filtered on our hrtimer's address
//! (`timer:hrtimer_expire_entry`, `timer:hrtimer_expire_exit`,
//! `timer:hrtimer_start`), each sample carrying its event id, a
//! CLOCK_MONOTONIC time and the raw fields. The entry events are counted too
//! (the same perf event), so a ring that overflowed is seen: sampled events
//! are compared with counted ones, never lost silently.
//!
//! The callback runs in hard-IRQ context on the CPU whose hrtimer queue holds
//! the timer, so every CPU gets a ring. A ring must hold a whole storm (no
//! reader runs while the CPU is inside the interrupt): it is sized from the
//! longest pause of the run.

use crate::host::ksyms::FunctionMatch;
use crate::host::perf::{
    self, le_u32, le_u64, open_disabled, set_filter, set_output, PerfError, Sampling,
};
use crate::host::tracefs::TracefsError;
use perf_event::{Counter, SampleFlag, Sampler};
use std::path::Path;
use tickburst_analysis::irq_runs::TimerEvent;

/// Bytes a callback takes in a ring (entry, exit and restart samples with
/// their headers), rounded up.
const BYTES_PER_CALLBACK: usize = 256;
/// Smallest and largest ring per CPU, bytes.
const RING_MIN: usize = 64 * 1024;
const RING_MAX: usize = 32 * 1024 * 1024;
/// Where the raw data starts in a sample of IDENTIFIER | TIME | RAW
/// (u64 id, u64 time, u32 size).
const RAW_AT: usize = 20;

/// Field offsets (from the tracepoints' `format` files) and ids.
#[derive(Debug, Clone, Copy)]
pub struct EventIds {
    /// `timer:hrtimer_expire_entry` id.
    pub entry: u64,
    /// `timer:hrtimer_expire_exit` id.
    pub exit: u64,
    /// `timer:hrtimer_start` id.
    pub start: u64,
    /// Offset of `now` in `hrtimer_expire_entry`.
    pub now_at: usize,
    /// Offset of `expires` in `hrtimer_start`.
    pub expires_at: usize,
}

impl EventIds {
    /// Reads ids and offsets under the tracefs `root`.
    pub fn read(root: &Path) -> Result<EventIds, TracefsError> {
        use crate::host::tracefs::{event_id, field_offset};
        Ok(EventIds {
            entry: event_id(root, "timer/hrtimer_expire_entry")?,
            exit: event_id(root, "timer/hrtimer_expire_exit")?,
            start: event_id(root, "timer/hrtimer_start")?,
            now_at: field_offset(root, "timer/hrtimer_expire_entry", "now")?,
            expires_at: field_offset(root, "timer/hrtimer_start", "expires")?,
        })
    }
}

struct CpuRing {
    cpu: u32,
    /// The entry event: the ring and the count of callbacks.
    ring: Sampler,
    entry_id: u64,
    exit_id: u64,
    start_id: u64,
    _exit: Counter,
    _start: Counter,
}

/// The rings of one run.
pub struct TimerSampler {
    rings: Vec<CpuRing>,
    ids: EventIds,
    events: Vec<TimerEvent>,
    lost: u64,
}

/// Ring size per CPU for runs whose longest pause is `pause_ns` at
/// `period_ns`: the storm of an unfixed kernel plus a second of ticks.
pub fn ring_bytes(pause_ns: u64, period_ns: u64) -> usize {
    let callbacks = (pause_ns.saturating_add(1_000_000_000) / period_ns.max(1)).saturating_add(64);
    (callbacks as usize)
        .saturating_mul(BYTES_PER_CALLBACK)
        .clamp(RING_MIN, RING_MAX)
        .next_power_of_two()
}

impl TimerSampler {
    /// Opens a ring on each of `cpus` for hrtimer `hrtimer` with callback
    /// `function` (named, or an address: a `u64` is one), armed at once:
    /// [`TimerSampler::open_unarmed`] then [`TimerSampler::arm`].
    pub fn open(
        ids: EventIds,
        hrtimer: u64,
        function: impl Into<FunctionMatch>,
        cpus: usize,
        bytes: usize,
    ) -> Result<TimerSampler, PerfError> {
        let mut sampler = TimerSampler::open_unarmed(ids, cpus, bytes)?;
        sampler.arm(hrtimer, &function.into())?;
        Ok(sampler)
    }

    /// Opens a ring on each of `cpus`, its events disabled and without a
    /// filter: the slow part (perf events, ring memory) done before our
    /// hrtimer is known. [`TimerSampler::arm`] sets the filters and starts.
    pub fn open_unarmed(
        ids: EventIds,
        cpus: usize,
        bytes: usize,
    ) -> Result<TimerSampler, PerfError> {
        let flags = SampleFlag::IDENTIFIER | SampleFlag::TIME | SampleFlag::RAW;
        let mut rings = Vec::with_capacity(cpus);
        for cpu in 0..cpus {
            let open = |id| open_disabled(id, None, Some(cpu), Some(Sampling::drained(flags)));
            let entry = open(ids.entry)?;
            let exit = open(ids.exit)?;
            let start = open(ids.start)?;
            let (entry_id, exit_id, start_id) = (entry.id(), exit.id(), start.id());
            let ring = entry.sampled(bytes).map_err(PerfError::Ring)?;
            set_output(&exit, &ring)?;
            set_output(&start, &ring)?;
            rings.push(CpuRing {
                cpu: cpu as u32,
                ring,
                entry_id,
                exit_id,
                start_id,
                _exit: exit,
                _start: start,
            });
        }
        Ok(TimerSampler {
            rings,
            ids,
            events: Vec::new(),
            lost: 0,
        })
    }

    /// Filters every ring on hrtimer `hrtimer` with callback `function` and
    /// starts them.
    pub fn arm(&mut self, hrtimer: u64, function: &FunctionMatch) -> Result<(), PerfError> {
        let ours = format!("hrtimer == {hrtimer:#x}");
        let entry_filter = format!("{ours} && {}", function.filter("function"));
        for r in &mut self.rings {
            set_filter(r.ring.as_counter_mut(), &entry_filter)?;
            set_filter(&r._exit, &ours)?;
            set_filter(&r._start, &entry_filter)?;
        }
        let enable = |c: &mut Counter| c.enable().map_err(PerfError::Enable);
        for r in &mut self.rings {
            enable(&mut r._exit)?;
            enable(&mut r._start)?;
            enable(r.ring.as_counter_mut())?;
        }
        Ok(())
    }

    /// Moves every sample out of the rings (no system call: the rings are
    /// mapped).
    pub fn drain(&mut self) {
        for r in &mut self.rings {
            while let Some(rec) = r.ring.next_record() {
                let ty = rec.ty();
                let bytes = rec.to_contiguous();
                if ty == perf::RECORD_LOST {
                    self.lost += le_u64(&bytes, 8).unwrap_or(0);
                    continue;
                }
                if ty != perf::RECORD_SAMPLE {
                    continue;
                }
                let (Some(id), Some(t_ns), Some(_size)) =
                    (le_u64(&bytes, 0), le_u64(&bytes, 8), le_u32(&bytes, 16))
                else {
                    continue;
                };
                let field = |at: usize| le_u64(&bytes, RAW_AT + at).map(|v| v as i64);
                let event = if id == r.entry_id {
                    field(self.ids.now_at).map(|now_ns| TimerEvent::Entry {
                        t_ns,
                        cpu: r.cpu,
                        now_ns,
                    })
                } else if id == r.exit_id {
                    Some(TimerEvent::Exit { t_ns, cpu: r.cpu })
                } else if id == r.start_id {
                    field(self.ids.expires_at)
                        .map(|expires_ns| TimerEvent::Start { t_ns, expires_ns })
                } else {
                    None
                };
                self.events.extend(event);
            }
        }
    }

    /// The callbacks counted so far, all CPUs (one `read` per CPU: call it
    /// once per reading, after [`TimerSampler::drain`], not at every drain).
    pub fn counted(&mut self) -> Option<u64> {
        self.rings
            .iter_mut()
            .map(|r| r.ring.as_counter_mut().read().ok())
            .sum()
    }

    /// The events read so far (CLOCK_MONOTONIC times) and the samples the
    /// rings reported lost.
    pub fn take(&mut self) -> (Vec<TimerEvent>, u64) {
        (std::mem::take(&mut self.events), self.lost)
    }

    /// [`TimerSampler::take`] into `out` (cleared first), whose buffer the
    /// sampler keeps for the next events: a reader that passes the same
    /// vector back each time allocates nothing once both have grown (at
    /// 32 vCPUs and 1 kHz, `top` grew and freed 96 000 events a second).
    pub fn take_into(&mut self, out: &mut Vec<TimerEvent>) -> u64 {
        out.clear();
        std::mem::swap(&mut self.events, out);
        self.lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_into_swaps_buffers_and_keeps_their_room() {
        let mut sampler = TimerSampler {
            rings: Vec::new(),
            ids: EventIds {
                entry: 1,
                exit: 2,
                start: 3,
                now_at: 0,
                expires_at: 0,
            },
            events: vec![TimerEvent::Exit { t_ns: 5, cpu: 0 }],
            lost: 2,
        };
        let mut out = Vec::with_capacity(64);
        out.push(TimerEvent::Exit { t_ns: 1, cpu: 1 });
        assert_eq!(sampler.take_into(&mut out), 2);
        assert_eq!(out, vec![TimerEvent::Exit { t_ns: 5, cpu: 0 }]);
        // The reader's old buffer, emptied, is the sampler's now.
        assert!(sampler.events.is_empty() && sampler.events.capacity() >= 64);
    }

    #[test]
    fn rings_hold_a_storm_and_stay_bounded() {
        // 10 s at 1 ms: 11 064 callbacks of 256 bytes, a 4 MiB ring.
        assert_eq!(ring_bytes(10_000_000_000, 1_000_000), 4 * 1024 * 1024);
        assert_eq!(ring_bytes(1_000_000, 1_000_000_000), RING_MIN);
        assert_eq!(ring_bytes(u64::MAX, 1), RING_MAX);
        assert_eq!(ring_bytes(0, 0), RING_MAX);
    }
}
