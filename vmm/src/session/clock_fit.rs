//! A guest-TSC clock that does not drift from host time over a long run.
//!
//! The collector converts guest TSC stamps to host CLOCK_MONOTONIC through
//! one exact pair (the vCPU's TSC read with `KVM_GET_MSRS` between two host
//! clock reads as the guest reported ready) at `KVM_GET_TSC_KHZ`. That rate
//! is the host kernel's calibration rounded to a kHz, and CLOCK_MONOTONIC is
//! slewed by NTP: a few ppm apart, which over an hour moves ticks by
//! milliseconds, across a pause's edges.
//!
//! The fit corrects the rate, and only the rate, from exact pairs of the
//! host's own TSC and CLOCK_MONOTONIC (`rdtsc` between two clock reads, taken
//! at every drain, whether the guest ticks or not): KVM runs the guest TSC
//! off the host TSC (guest TSC = host TSC + offset, as the VMM never asks
//! for another guest TSC rate), so the host TSC's rate against
//! CLOCK_MONOTONIC is the guest TSC's. Over each [`SEGMENT_NS`] the pair
//! with the narrowest bracket is kept; the first segment's is the first
//! anchor, each later segment's the latest, and the conversion is the line
//! through the ready pair with the slope of the two anchors. A slope whose
//! uncertainty (the brackets against the span between the anchors) exceeds
//! [`MAX_UNCERTAINTY_PPB`], or that is further than [`MAX_PPM`] from
//! `KVM_GET_TSC_KHZ`, is not used.
//!
//! What it replaced: anchors from the lag between a tick's stamp and the
//! drain that read it (the smallest lag of a segment taken as the latency).
//! That lag varies from segment to segment by hundreds of microseconds where
//! the guest halts between ticks (drain wake-ups coalesce with the timer's
//! and the order of the two threads decides the lag), on a loaded host and
//! after a storm; a pause left the second segment one second of data, so
//! the slope came from anchors one second apart and moved every tick after
//! the resume by milliseconds (-4.5 ms and +5.0 ms seen in the
//! emulated-Intel rig, -340 us natively, against 2 us for the single pair).
//! The host pairs do not depend on the guest at all.

/// Converts guest TSC values to host nanoseconds since the run's epoch,
/// through a sync point (a guest TSC value and the host time it was seen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TscClock {
    /// Guest TSC at the sync point.
    pub sync_tsc: u64,
    /// Guest TSC frequency in kHz (`KVM_GET_TSC_KHZ`).
    pub tsc_khz: u32,
    /// Host time of the sync point, ns since the epoch.
    pub sync_ns: u64,
}

impl TscClock {
    /// Nanoseconds from the sync point to `tsc` (negative before it).
    ///
    /// ```
    /// use tickburst::session::collector::TscClock;
    /// let clock = TscClock { sync_tsc: 1_000, tsc_khz: 2_000_000, sync_ns: 0 }; // 2 GHz
    /// assert_eq!(clock.ns_since_sync(3_000), 1_000);
    /// ```
    pub fn ns_since_sync(&self, tsc: u64) -> i64 {
        let delta = i128::from(tsc) - i128::from(self.sync_tsc);
        let ns = delta * 1_000_000 / i128::from(self.tsc_khz.max(1));
        ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// Nanoseconds from the epoch to `tsc` (negative before it).
    ///
    /// ```
    /// use tickburst::session::collector::TscClock;
    /// let clock = TscClock { sync_tsc: 1_000, tsc_khz: 1_000_000, sync_ns: 500 };
    /// assert_eq!(clock.ns_since_epoch(1_100), 600);
    /// assert_eq!(clock.ns_since_epoch(0), -500);
    /// ```
    pub fn ns_since_epoch(&self, tsc: u64) -> i64 {
        self.ns_since_sync(tsc)
            .saturating_add(self.sync_ns.min(i64::MAX as u64) as i64)
    }
}

/// Each anchor is the narrowest host pair of a segment this long.
pub const SEGMENT_NS: u64 = 1_000_000_000;
/// A slope is used only if the anchors' brackets leave it this uncertain
/// at most, in parts per billion (1 ppm: 15 us over a 15 s run).
pub const MAX_UNCERTAINTY_PPB: u64 = 1_000;
/// A slope further than this from `KVM_GET_TSC_KHZ` is not used: the host
/// TSC does not run the guest's (a guest TSC rate set by someone else), or a
/// host pair is broken.
pub const MAX_PPM: i128 = 1_000;

/// One exact pair of the host: its TSC (`rdtsc`) read between two reads of
/// CLOCK_MONOTONIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPair {
    /// The host TSC.
    pub tsc: u64,
    /// The host time of the read (the middle of the bracket), ns since the
    /// run's epoch.
    pub ns: u64,
    /// The bracket's width, ns: the pair's uncertainty.
    pub width_ns: u64,
}

/// The conversion of a run's guest TSC stamps, refitted as it goes.
#[derive(Debug, Clone)]
pub struct FittedClock {
    base: TscClock,
    seg_start: Option<u64>,
    /// The narrowest pair of the segment being filled.
    seg_best: Option<HostPair>,
    first: Option<HostPair>,
    /// The latest anchor whose slope with `first` is used.
    last: Option<HostPair>,
}

impl FittedClock {
    /// Starts from the single sync point `base`.
    pub fn new(base: TscClock) -> FittedClock {
        FittedClock {
            base,
            seg_start: None,
            seg_best: None,
            first: None,
            last: None,
        }
    }

    /// Nanoseconds from the epoch to `tsc` (negative before it): the line
    /// through the sync point with the fitted slope, or the single-sync
    /// conversion until there is one.
    pub fn ns_since_epoch(&self, tsc: u64) -> i64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) => {
                let ns = i128::from(self.base.sync_ns)
                    + (i128::from(tsc) - i128::from(self.base.sync_tsc))
                        * (i128::from(b.ns) - i128::from(a.ns))
                        / (i128::from(b.tsc) - i128::from(a.tsc));
                ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
            }
            _ => self.base.ns_since_epoch(tsc),
        }
    }

    /// How far the fit moves `tsc` from the single-sync conversion, ns.
    pub fn adjustment_ns(&self, tsc: u64) -> i64 {
        self.ns_since_epoch(tsc)
            .saturating_sub(self.base.ns_since_epoch(tsc))
    }

    /// The fitted rate against `KVM_GET_TSC_KHZ`, parts per billion
    /// (positive: the TSC runs fast against CLOCK_MONOTONIC); `None` while
    /// the single-sync conversion is used.
    pub fn rate_ppb(&self) -> Option<i64> {
        let (a, b) = (self.first?, self.last?);
        let dn = i128::from(b.ns) - i128::from(a.ns);
        let base_dn =
            i128::from(self.base.ns_since_sync(b.tsc)) - i128::from(self.base.ns_since_sync(a.tsc));
        // TSC cycles per host ns against the nominal ones: base_dn / dn - 1.
        (dn > 0).then(|| ((base_dn - dn) * 1_000_000_000 / dn) as i64)
    }

    /// A host pair, read at a drain.
    pub fn observe(&mut self, pair: HostPair) {
        let start = *self.seg_start.get_or_insert(pair.ns);
        if pair.ns.saturating_sub(start) >= SEGMENT_NS {
            self.close_segment();
            self.seg_start = Some(pair.ns);
        }
        if self.seg_best.is_none_or(|b| pair.width_ns < b.width_ns) {
            self.seg_best = Some(pair);
        }
    }

    fn close_segment(&mut self) {
        let Some(anchor) = self.seg_best.take() else {
            return;
        };
        let Some(first) = self.first else {
            self.first = Some(anchor);
            return;
        };
        let (dt, dn) = (
            i128::from(anchor.tsc) - i128::from(first.tsc),
            i128::from(anchor.ns) - i128::from(first.ns),
        );
        if dt <= 0 || dn <= 0 {
            return;
        }
        // The TSC was read somewhere inside each bracket.
        let slack = i128::from(first.width_ns.saturating_add(anchor.width_ns)) / 2;
        if slack * 1_000_000_000 > dn * i128::from(MAX_UNCERTAINTY_PPB) {
            return;
        }
        let base_dn = i128::from(self.base.ns_since_sync(anchor.tsc))
            - i128::from(self.base.ns_since_sync(first.tsc));
        if base_dn <= 0 || (dn - base_dn).abs() * 1_000_000 > base_dn * MAX_PPM {
            return;
        }
        self.last = Some(anchor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: TscClock = TscClock {
        sync_tsc: 0,
        tsc_khz: 1_000_000,
        sync_ns: 0,
    };

    /// A TSC at 1 GHz nominal but `ppm` fast against host time, read with
    /// the host clock every 2 ms or a little more in brackets `width` ns
    /// wide (some of them far wider: the thread preempted between its
    /// reads); the TSC is read anywhere inside the bracket. Returns the
    /// error of the conversion of the TSC at `secs`, ns, with and without
    /// the fit.
    fn run(ppm: i64, secs: u64, width: u64) -> (i64, i64) {
        let mut clock = FittedClock::new(BASE);
        let tsc_at = |ns: u64| (ns as i128 * (1_000_000 + ppm as i128) / 1_000_000) as u64;
        let mut now = 0u64;
        let mut seed = 7u64;
        let end = secs * 1_000_000_000;
        while now < end {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            now += 2_000_000 + (seed >> 33) % 150_000;
            let w = if seed.is_multiple_of(7) {
                width * 50
            } else {
                width + (seed >> 40) % width.max(1)
            };
            // Where in the bracket the TSC was read.
            let at = now - w / 2 + (seed >> 20) % w.max(1);
            clock.observe(HostPair {
                tsc: tsc_at(at),
                ns: now,
                width_ns: w,
            });
        }
        let tsc = tsc_at(end);
        (
            clock.ns_since_epoch(tsc) - end as i64,
            BASE.ns_since_epoch(tsc) - end as i64,
        )
    }

    #[test]
    fn an_hour_at_50_ppm_stays_within_100_us() {
        let (fitted, single) = run(50, 3_600, 2_000);
        assert!(single > 170_000_000, "the single sync drifts: {single} ns");
        assert!(fitted.abs() < 100_000, "fitted: {fitted} ns");
    }

    #[test]
    fn a_short_run_is_corrected_too() {
        // 15 s at 10 ppm: 150 us for the single sync.
        let (fitted, single) = run(10, 15, 1_000);
        assert!(single > 140_000, "the single sync drifts: {single} ns");
        assert!(fitted.abs() < 20_000, "fitted: {fitted} ns");
    }

    #[test]
    fn a_clock_without_drift_is_left_alone() {
        let (fitted, single) = run(0, 120, 2_000);
        assert_eq!(single, 0);
        assert!(fitted.abs() < 2_000, "{fitted}");
        // Wide brackets (an emulated host) over a short run: no slope is
        // certain enough, the single sync stays.
        let (fitted, single) = run(0, 15, 30_000);
        assert_eq!((fitted, single), (0, 0));
    }

    /// What broke the lag-based fit: the tick latency jumps by hundreds of
    /// microseconds between seconds and a pause leaves no ticks. The host
    /// pairs know nothing of ticks; a 10 s gap in the drains (a stalled
    /// VMM) leaves the conversion exact as well.
    #[test]
    fn a_pause_and_noisy_ticks_do_not_move_the_conversion() {
        let mut clock = FittedClock::new(BASE);
        let mut now = 0;
        while now < 15_000_000_000 {
            now += if now == 2_000_000_000 {
                10_000_000_000
            } else {
                2_000_000
            };
            clock.observe(HostPair {
                tsc: now,
                ns: now,
                width_ns: 1_000,
            });
            for t in [now, 1_000_000_000, 12_000_000_000] {
                assert_eq!(clock.ns_since_epoch(t), t as i64);
            }
        }
        assert_eq!(clock.rate_ppb(), Some(0));
    }

    #[test]
    fn reports_the_rate_it_uses() {
        let mut clock = FittedClock::new(BASE);
        assert_eq!(clock.rate_ppb(), None);
        // 20 ppm fast: 1_000_020 cycles a ms.
        for k in 0..3_000u64 {
            clock.observe(HostPair {
                tsc: k * 1_000_020,
                ns: k * 1_000_000,
                width_ns: 500,
            });
        }
        assert_eq!(clock.rate_ppb(), Some(20_000));
        assert_eq!(clock.ns_since_epoch(1_000_020_000), 1_000_000_000);
    }

    #[test]
    fn implausible_slopes_are_not_used() {
        let mut clock = FittedClock::new(BASE);
        // A host TSC 10% fast (a guest TSC rate other than the host's).
        for k in 0..20_000u64 {
            let now = k * 2_000_000;
            clock.observe(HostPair {
                tsc: now + now / 10,
                ns: now,
                width_ns: 100,
            });
        }
        assert_eq!(clock.rate_ppb(), None);
        assert_eq!(clock.ns_since_epoch(1_000_000_000), 1_000_000_000);
    }
}
