//! A guest-TSC clock that does not drift from host time over a long run.
//!
//! The collector converts guest TSC stamps to host CLOCK_MONOTONIC from one
//! sync point (the guest's ready report) at `KVM_GET_TSC_KHZ`. That rate is
//! rounded to a kHz and CLOCK_MONOTONIC is slewed by NTP: a few ppm apart,
//! which over an hour moves ticks by milliseconds, across a pause's edges.
//!
//! The fit: at every drain the newest tick was written before the drain's
//! host time, so `lag = drain time - converted tick time` is never below
//! the true latency. Over each [`SEGMENT_NS`] of ticking, the smallest lag
//! comes from a drain right after a tick: it is the latency (about constant)
//! plus the conversion's drift so far. The first segment's (one second)
//! smallest lag is taken as the latency; each later segment gives an anchor (that tick's
//! TSC, its drain time less the latency), and ticks are converted on the
//! line through the first anchor and the latest one. Each refit moves the
//! conversion by the drift of one segment at most (microseconds), so ticks
//! stay in order.

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

/// Ticks are fitted over segments this long (or [`SEGMENT_PERIODS`]
/// periods, if longer).
pub const SEGMENT_NS: u64 = 10_000_000_000;
/// The first segment, which gives the latency and the first anchor: short,
/// so the drift in it (what the fit cannot see) stays small (50 us at an
/// implausible 50 ppm); at least [`FIRST_SEGMENT_PERIODS`] periods.
pub const FIRST_SEGMENT_NS: u64 = 1_000_000_000;
/// The first segment holds at least this many periods.
const FIRST_SEGMENT_PERIODS: u64 = 20;
/// A later segment holds at least this many periods.
const SEGMENT_PERIODS: u64 = 100;
/// A segment gives an anchor only if this many drains saw new ticks in it,
/// or half the ticks the segment can hold where that is fewer (a period
/// over 5 ms), but at least [`MIN_SAMPLES_ANY`]: a pause leaves none.
const MIN_SAMPLES: u64 = 100;
/// See [`MIN_SAMPLES`].
const MIN_SAMPLES_ANY: u64 = 10;
/// An anchor implying a rate further than this from `KVM_GET_TSC_KHZ` is
/// not used (a hostile or broken guest).
const MAX_PPM: i128 = 1_000;

/// One point of the fit: a guest TSC and its host time, ns since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Anchor {
    tsc: u64,
    ns: i128,
}

/// The conversion of a run's guest TSC stamps, refitted as it goes.
#[derive(Debug, Clone)]
pub struct FittedClock {
    base: TscClock,
    period_ns: u64,
    seg_start: Option<u64>,
    /// The smallest lag of the segment: (lag, tick TSC, drain time).
    seg_min: Option<(i64, u64, u64)>,
    seg_samples: u64,
    latency: Option<i64>,
    first: Option<Anchor>,
    last: Option<Anchor>,
}

impl FittedClock {
    /// Starts from the single sync point `base`, for ticks every `period_ns`.
    pub fn new(base: TscClock, period_ns: u64) -> FittedClock {
        FittedClock {
            base,
            period_ns: period_ns.max(1),
            seg_start: None,
            seg_min: None,
            seg_samples: 0,
            latency: None,
            first: None,
            last: None,
        }
    }

    /// Nanoseconds from the epoch to `tsc` (negative before it).
    pub fn ns_since_epoch(&self, tsc: u64) -> i64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) if b.tsc > a.tsc => {
                let ns = a.ns
                    + (i128::from(tsc) - i128::from(a.tsc)) * (b.ns - a.ns)
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

    /// A drain at host time `now_ns` whose newest tick has `tsc`.
    pub fn observe(&mut self, tsc: u64, now_ns: u64) {
        let lag =
            (now_ns.min(i64::MAX as u64) as i64).saturating_sub(self.base.ns_since_epoch(tsc));
        let start = *self.seg_start.get_or_insert(now_ns);
        let length = self.segment_ns();
        if now_ns.saturating_sub(start) >= length {
            self.close_segment(length);
            self.seg_start = Some(now_ns);
        }
        self.seg_samples += 1;
        if self.seg_min.is_none_or(|(m, _, _)| lag < m) {
            self.seg_min = Some((lag, tsc, now_ns));
        }
    }

    /// The length of the segment being filled.
    fn segment_ns(&self) -> u64 {
        let (ns, periods) = if self.first.is_none() {
            (FIRST_SEGMENT_NS, FIRST_SEGMENT_PERIODS)
        } else {
            (SEGMENT_NS, SEGMENT_PERIODS)
        };
        ns.max(self.period_ns.saturating_mul(periods))
    }

    /// The drains with new ticks a segment of `length_ns` needs.
    fn min_samples(&self, length_ns: u64) -> u64 {
        MIN_SAMPLES
            .min(length_ns / self.period_ns / 2)
            .max(MIN_SAMPLES_ANY)
    }

    fn close_segment(&mut self, length_ns: u64) {
        let (samples, min) = (self.seg_samples, self.seg_min.take());
        self.seg_samples = 0;
        let needed = self.min_samples(length_ns);
        let Some((lag, tsc, now)) = min.filter(|_| samples >= needed) else {
            return;
        };
        let latency = *self.latency.get_or_insert(lag);
        let anchor = Anchor {
            tsc,
            ns: i128::from(now) - i128::from(latency),
        };
        let Some(first) = self.first else {
            self.first = Some(anchor);
            return;
        };
        // The rate the anchors imply against the base one, in ppm.
        let (dt, dn) = (
            i128::from(anchor.tsc) - i128::from(first.tsc),
            anchor.ns - first.ns,
        );
        if dt <= 0 {
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

    /// Guest TSC at 1 GHz nominal but `ppm` fast against host time; ticks
    /// every ms, drains every 2 ms or a little more, a 5 us latency. Returns the error
    /// of the last tick's conversion after `secs`, ns, with and without the
    /// fit.
    fn run(ppm: i64, secs: u64) -> (i64, i64) {
        run_at(ppm, secs, 1_000_000)
    }

    /// [`run`] with ticks every `period` ns.
    fn run_at(ppm: i64, secs: u64, period: u64) -> (i64, i64) {
        let base = TscClock {
            sync_tsc: 0,
            tsc_khz: 1_000_000,
            sync_ns: 0,
        };
        let mut clock = FittedClock::new(base, period);
        let tsc_at = |ns: u64| (ns as i128 * (1_000_000 + ppm as i128) / 1_000_000) as u64;
        let mut last = 0u64;
        let mut now = 0u64;
        let mut seed = 7u64;
        // Drains every 2 ms plus the jitter of a sleep, so some come right
        // after a tick.
        while now < secs * 1_000_000_000 {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            now += 2_000_000 + (seed >> 33) % 150_000;
            let newest = (now.saturating_sub(5_000)) / period * period;
            if newest > last {
                last = newest;
                clock.observe(tsc_at(newest), now);
            }
        }
        let tsc = tsc_at(last);
        (
            clock.ns_since_epoch(tsc) - last as i64,
            base.ns_since_epoch(tsc) - last as i64,
        )
    }

    #[test]
    fn an_hour_at_50_ppm_stays_within_100_us() {
        let (fitted, single) = run(50, 3_600);
        assert!(single > 170_000_000, "the single sync drifts: {single} ns");
        assert!(fitted.abs() < 100_000, "fitted: {fitted} ns");
    }

    #[test]
    fn long_periods_are_fitted_too() {
        // 20 ms: 50 ticks in the first second.
        let (fitted, single) = run_at(50, 3_600, 20_000_000);
        assert!(single > 170_000_000, "the single sync drifts: {single} ns");
        assert!(fitted.abs() < 100_000, "20 ms: fitted: {fitted} ns");
        // 1 s: a first segment of 20 s, whose drift the fit cannot see
        // (100 us at 5 ppm), anchors from one tick a second.
        let (fitted, single) = run_at(5, 3_600, 1_000_000_000);
        assert!(single > 17_000_000, "the single sync drifts: {single} ns");
        assert!(fitted.abs() < 250_000, "1 s: fitted: {fitted} ns");
    }

    #[test]
    fn a_clock_without_drift_is_left_alone() {
        let (fitted, single) = run(0, 120);
        assert_eq!(single, 0);
        assert!(fitted.abs() < 2_000, "{fitted}");
    }

    #[test]
    fn implausible_anchors_are_not_used() {
        let base = TscClock {
            sync_tsc: 0,
            tsc_khz: 1_000_000,
            sync_ns: 0,
        };
        let mut clock = FittedClock::new(base, 2_000_000);
        // A guest whose stamps jump far ahead: 10% fast.
        for k in 0..20_000u64 {
            let now = k * 2_000_000;
            clock.observe(now + now / 10, now + 5_000);
        }
        assert_eq!(clock.ns_since_epoch(1_000_000_000), 1_000_000_000);
    }
}
