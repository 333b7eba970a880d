//! The guest's tick ring is untrusted input: whatever a guest writes there
//! (heads that jump, go back or sit near `u64::MAX`, stamps from any time),
//! the collector never panics, never reads more than one ring per drain,
//! accounts for every entry it read and hands the analysis only sorted
//! ticks inside the run, which the bounded summary counts consistently.
//! (`--idle self-test-hostile` does the same with a real guest, live.)

use proptest::prelude::*;
use std::cell::{Cell, RefCell};
use tickburst::session::collector::{Collector, RingSource, TscClock};
use tickburst_analysis::stream::TickStream;

const RING: u64 = guest_payload::abi::RING_ENTRIES as u64;
/// 1 GHz guest TSC; the run's epoch at TSC 1 000 000.
const CLOCK: TscClock = TscClock {
    sync_tsc: 1_000_000,
    tsc_khz: 1_000_000,
    sync_ns: 0,
};

/// A ring whose head is read from a script (the last value repeats) and
/// whose slots hold what a hostile guest wrote.
struct HostileRing {
    heads: RefCell<Vec<u64>>,
    slots: Vec<u64>,
    reads: Cell<u64>,
}

impl RingSource for HostileRing {
    fn head(&self) -> u64 {
        let mut h = self.heads.borrow_mut();
        if h.len() > 1 {
            h.remove(0)
        } else {
            h.first().copied().unwrap_or(0)
        }
    }
    fn entry(&self, slot: usize) -> u64 {
        self.reads.set(self.reads.get() + 1);
        self.slots[slot]
    }
}

/// A stamp: mostly plausible (inside the first minute), sometimes anything.
fn stamp() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (0u64..60_000_000_000).prop_map(|ns| CLOCK.sync_tsc + ns),
        1 => any::<u64>(),
    ]
}

/// A head step: small, a jump past the ring, backwards, or near the top.
fn head() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..2_000,
        1 => RING..3 * RING,
        1 => any::<u64>(),
        1 => (u64::MAX - 2 * RING)..=u64::MAX,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_ring_contents_give_sorted_ticks_and_counted_entries(
        // Sparse writes into a ring of zeros: (slot, stamp).
        writes in prop::collection::vec((0..RING as usize, stamp()), 0..400),
        // Per drain: up to 3 head reads (before and after the copy), the
        // time the drain ran.
        drains in prop::collection::vec(
            (prop::collection::vec(head(), 1..3), 0u64..2_000_000_000),
            1..40,
        ),
        gaps_are_pauses in any::<bool>(),
    ) {
        let mut slots = vec![0u64; RING as usize];
        for (slot, tsc) in writes {
            slots[slot] = tsc;
        }
        let ring = HostileRing { heads: RefCell::new(Vec::new()), slots, reads: Cell::new(0) };
        let stream = TickStream::new(1_000_000, 1_000_000_000, 10_000, gaps_are_pauses);
        let mut c = Collector::new(CLOCK, stream);
        let mut now = 0u64;
        for (heads, step) in drains {
            now += step;
            *ring.heads.borrow_mut() = heads;
            let before = ring.reads.get();
            c.drain(&ring, now);
            prop_assert!(ring.reads.get() - before <= RING, "one ring per drain at most");
        }
        let s = c.stats();
        prop_assert_eq!(s.entries_read, ring.reads.get(), "every entry read is accounted for");
        let (bounded, kept) = c.finish(now);
        // Each entry read is a tick, invalid, out of order or overwritten
        // (`lost_ticks` also counts entries never read: a head jump).
        prop_assert!(bounded.ticks_total + s.invalid_timestamps + s.out_of_order <= s.entries_read);
        prop_assert!(kept.windows(2).all(|w| w[0] <= w[1]), "kept ticks sorted");
        prop_assert!(kept.iter().all(|&t| t < now.max(1)), "inside the run");
        prop_assert_eq!(bounded.window_ticks.iter().sum::<u64>(), bounded.ticks_total);
    }
}
