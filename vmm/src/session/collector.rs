//! Collector: drains the guest's tick ring and turns guest TSC stamps into
//! host time.
//!
//! Everything read from the ring is untrusted, and this is its one boundary:
//! the head index is checked for going backwards or jumping impossibly far,
//! slot indices are always reduced modulo the ring size by the VMM,
//! timestamps outside the run are counted as invalid, and a stamp earlier
//! than the last one taken is counted as out of order; neither is used. What
//! leaves the collector is sorted tick times inside the run.

use crate::session::clock_fit::FittedClock;
use crate::vstate::slots;
use guest_payload::abi::RING_ENTRIES;
use tickburst_analysis::bounded::BoundedTicks;
use tickburst_analysis::stream::TickStream;
use vm_memory::GuestMemoryMmap;

/// Where the collector reads the ring from (guest memory, or a test double).
pub trait RingSource {
    /// The guest's monotonic count of entries written.
    fn head(&self) -> u64;
    /// The TSC stored in ring slot `slot` (`slot < RING_ENTRIES`).
    fn entry(&self, slot: usize) -> u64;
}

/// The tick ring of one vCPU, in guest memory.
#[derive(Debug, Clone, Copy)]
pub struct SlotRing<'a> {
    /// Guest memory.
    pub mem: &'a GuestMemoryMmap,
    /// The vCPU whose slot holds the ring.
    pub vcpu: u32,
}

impl RingSource for SlotRing<'_> {
    fn head(&self) -> u64 {
        slots::ring_head(self.mem, self.vcpu)
    }

    fn entry(&self, slot: usize) -> u64 {
        slots::ring_entry(self.mem, self.vcpu, slot)
    }
}

pub use crate::session::clock_fit::{HostPair, TscClock};

pub use tickburst_analysis::collection::CollectorStats;

/// Drains a [`RingSource`] into host-time tick samples.
#[derive(Debug)]
pub struct Collector {
    clock: FittedClock,
    /// Index of the next ring entry to read.
    next: u64,
    stats: CollectorStats,
    stream: TickStream,
}

/// Slack for timestamps slightly after "now" (clock conversion error).
const FUTURE_SLACK_NS: i64 = 50_000_000;

impl Collector {
    /// Checks the clock against an exact pair: the vCPU's TSC `tsc` read
    /// at `at_ns` (host ns since the epoch). Notes the error (where the
    /// conversion puts `tsc` less `at_ns`) in the stats and returns it.
    pub fn check_clock(&mut self, tsc: u64, at_ns: u64) -> i64 {
        let error = self
            .clock
            .ns_since_epoch(tsc)
            .saturating_sub(at_ns.min(i64::MAX as u64) as i64);
        self.stats.note_clock_error(error);
        error
    }

    /// A collector for ticks stamped by `clock`, starting at ring entry 0,
    /// that hands them to `stream` (memory independent of the run's length).
    pub fn new(clock: TscClock, stream: TickStream) -> Collector {
        Collector {
            clock: FittedClock::new(clock),
            next: 0,
            stats: CollectorStats::default(),
            stream,
        }
    }

    /// A pair of the host's TSC and clock, read at a drain: refits the
    /// conversion's rate (see [`FittedClock`]).
    pub fn observe_host(&mut self, pair: HostPair) {
        self.clock.observe(pair);
        self.stats.clock_rate_ppb = self.clock.rate_ppb();
    }

    /// Reads every new entry. `now_ns` is the host time since the epoch,
    /// used to reject timestamps from the future.
    pub fn drain(&mut self, ring: &impl RingSource, now_ns: u64) {
        let head = ring.head();
        if head < self.next {
            // A well-behaved guest never does this: resynchronise, count it.
            self.stats.head_regressions = self.stats.head_regressions.saturating_add(1);
            self.next = head;
            return;
        }
        let cap = RING_ENTRIES as u64;
        if head - self.next > cap {
            // Saturating: a hostile head near u64::MAX claims more lost
            // ticks than a counter holds.
            self.stats.lost_ticks = self.stats.lost_ticks.saturating_add(head - self.next - cap);
            self.next = head - cap;
        }
        let start = self.next;
        let mut batch = Vec::with_capacity((head - start) as usize);
        for index in start..head {
            batch.push(ring.entry((index % cap) as usize));
        }
        // Entries the guest may have overwritten while we copied them.
        let head_after = ring.head().max(head);
        let overwritten_below = head_after.saturating_sub(cap);
        let mut newest = None;
        for (index, tsc) in (start..head).zip(batch) {
            self.stats.entries_read = self.stats.entries_read.saturating_add(1);
            if index < overwritten_below {
                self.stats.lost_ticks = self.stats.lost_ticks.saturating_add(1);
                continue;
            }
            let ns = self.clock.ns_since_epoch(tsc);
            if ns < 0 || ns > (now_ns.min(i64::MAX as u64) as i64).saturating_add(FUTURE_SLACK_NS) {
                self.stats.invalid_timestamps = self.stats.invalid_timestamps.saturating_add(1);
                continue;
            }
            if self.stream.newest().is_some_and(|last| (ns as u64) < last) {
                self.stats.out_of_order = self.stats.out_of_order.saturating_add(1);
                continue;
            }
            self.stream.push(ns as u64);
            newest = Some(tsc);
        }
        if let Some(tsc) = newest {
            self.stats.clock_adjust_ns = self.clock.adjustment_ns(tsc);
        }
        self.next = head;
    }

    /// The ticks so far: per-window counts, gaps, kept and recent ticks.
    pub fn stream(&self) -> &TickStream {
        &self.stream
    }

    /// The ticks so far, to tell pauses and settle ticks.
    pub fn stream_mut(&mut self) -> &mut TickStream {
        &mut self.stream
    }

    /// Ends the collection at `end_ns` (see [`TickStream::finish`]).
    pub fn finish(&mut self, end_ns: u64) -> (BoundedTicks, Vec<u64>) {
        std::mem::replace(&mut self.stream, TickStream::new(1, 1, 0, false)).finish(end_ns)
    }

    /// Counters so far.
    pub fn stats(&self) -> CollectorStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A ring in plain memory whose head and slots the test controls.
    struct FakeRing {
        head: RefCell<Vec<u64>>, // successive values returned by head()
        slots: Vec<u64>,
    }

    impl FakeRing {
        fn new(heads: &[u64]) -> FakeRing {
            FakeRing {
                head: RefCell::new(heads.to_vec()),
                slots: vec![0; RING_ENTRIES],
            }
        }
        fn write(&mut self, index: u64, tsc: u64) {
            self.slots[(index % RING_ENTRIES as u64) as usize] = tsc;
        }
    }

    impl RingSource for FakeRing {
        fn head(&self) -> u64 {
            let mut h = self.head.borrow_mut();
            if h.len() > 1 {
                h.remove(0)
            } else {
                h[0]
            }
        }
        fn entry(&self, slot: usize) -> u64 {
            self.slots[slot]
        }
    }

    const KHZ: u32 = 1_000_000; // 1 GHz: 1 TSC cycle per ns

    fn collector(clock: TscClock) -> Collector {
        Collector::new(
            clock,
            TickStream::new(1_000_000, 1_000_000_000, usize::MAX, false),
        )
    }

    fn ticks(c: &Collector) -> Vec<u64> {
        c.stream().ticks_between(0, u64::MAX)
    }

    #[test]
    fn converts_tsc_to_host_ns() {
        let clock = TscClock {
            sync_tsc: 5_000,
            tsc_khz: 2_500_000,
            sync_ns: 0,
        };
        assert_eq!(clock.ns_since_sync(5_000 + 2_500), 1_000);
        assert_eq!(clock.ns_since_sync(0), -2_000);
        let extreme = TscClock {
            sync_tsc: 0,
            tsc_khz: 0,
            sync_ns: 0,
        };
        assert!(extreme.ns_since_sync(u64::MAX) > 0);
    }

    #[test]
    fn drains_in_order_without_loss() {
        let mut ring = FakeRing::new(&[3]);
        for i in 0..3 {
            ring.write(i, 100 + i * 1_000_000);
        }
        let mut c = collector(TscClock {
            sync_tsc: 100,
            tsc_khz: KHZ,
            sync_ns: 0,
        });
        c.drain(&ring, 10_000_000);
        assert_eq!(ticks(&c), [0, 1_000_000, 2_000_000]);
        assert_eq!(c.stats().lost_ticks, 0);
        c.drain(&ring, 10_000_000);
        assert_eq!(ticks(&c).len(), 3, "nothing new, nothing read twice");
    }

    #[test]
    fn counts_ring_overrun() {
        let head = RING_ENTRIES as u64 + 10;
        let mut ring = FakeRing::new(&[head]);
        for i in 0..head {
            ring.write(i, 1_000 * i);
        }
        let mut c = collector(TscClock {
            sync_tsc: 0,
            tsc_khz: KHZ,
            sync_ns: 0,
        });
        c.drain(&ring, u64::MAX / 4);
        assert_eq!(c.stats().lost_ticks, 10);
        assert_eq!(ticks(&c).len(), RING_ENTRIES);
        assert_eq!(ticks(&c)[0], 10_000);
    }

    #[test]
    fn counts_entries_overwritten_during_the_copy() {
        // head is 5 when read, RING_ENTRIES + 2 right after the copy: slots
        // 0 and 1 were overwritten while they were being copied.
        let mut ring = FakeRing::new(&[5, RING_ENTRIES as u64 + 2]);
        for i in 0..5 {
            ring.write(i, i);
        }
        let mut c = collector(TscClock {
            sync_tsc: 0,
            tsc_khz: KHZ,
            sync_ns: 0,
        });
        c.drain(&ring, 1_000);
        assert_eq!(c.stats().lost_ticks, 2);
        assert_eq!(ticks(&c), [2, 3, 4]);
    }

    #[test]
    fn hostile_head_and_timestamps_are_contained() {
        // Head jumps to u64::MAX: bounded to one ring's worth, no panic, no
        // huge allocation beyond the ring size.
        let mut ring = FakeRing::new(&[u64::MAX]);
        ring.write(0, u64::MAX); // far future
        let mut c = collector(TscClock {
            sync_tsc: 1_000,
            tsc_khz: KHZ,
            sync_ns: 0,
        });
        c.drain(&ring, 1_000_000);
        assert_eq!(c.stats().lost_ticks, u64::MAX - RING_ENTRIES as u64);
        assert_eq!(
            c.stats().invalid_timestamps,
            RING_ENTRIES as u64,
            "zeros precede sync, MAX is future"
        );
        assert!(ticks(&c).is_empty());

        // Head going backwards is counted and resynchronised.
        let ring = FakeRing::new(&[2]);
        c.drain(&ring, 1_000_000);
        assert_eq!(c.stats().head_regressions, 1);
    }

    #[test]
    fn out_of_order_stamps_are_counted_and_dropped() {
        let mut ring = FakeRing::new(&[5]);
        for (i, t) in [10, 30, 20, 40, 40].into_iter().enumerate() {
            ring.write(i as u64, t);
        }
        let mut c = collector(TscClock {
            sync_tsc: 0,
            tsc_khz: KHZ,
            sync_ns: 0,
        });
        c.drain(&ring, 1_000);
        assert_eq!(ticks(&c), [10, 30, 40, 40]);
        assert_eq!(c.stats().out_of_order, 1);
        assert!(ticks(&c).windows(2).all(|w| w[0] <= w[1]));
    }
}
