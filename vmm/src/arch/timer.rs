//! LAPIC timer arithmetic: period <-> initial count and divider.
//!
//! KVM's emulated LAPIC timer counts at the APIC bus frequency, one count per
//! `bus_cycle_ns` nanoseconds times the divisor (KVM's default bus cycle is
//! 1 ns, i.e. 1 GHz; KVM reports it through `KVM_CAP_X86_APIC_BUS_CYCLES_NS`).

use guest_payload::abi::divide_config_for;
use thiserror::Error;

/// Errors converting a period to LAPIC timer settings.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TimerError {
    /// The period is zero.
    #[error("period must be greater than 0")]
    Zero,
    /// The bus cycle is zero.
    #[error("APIC bus cycle must be greater than 0 ns")]
    ZeroBusCycle,
    /// The period does not fit the initial-count register at any divider.
    #[error(
        "period {0} ns does not fit the LAPIC timer (initial count overflows at divide-by-128)"
    )]
    TooLong(u64),
}

/// LAPIC timer settings for one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerSettings {
    /// Initial count register value.
    pub initial_count: u32,
    /// Divisor (1, 2, ..., 128).
    pub divisor: u32,
    /// Divide configuration register value.
    pub divide_config: u32,
    /// The period these settings really give, in ns.
    pub actual_period_ns: u64,
}

/// Chooses the smallest divisor for which the count fits in 32 bits (best
/// resolution) and returns the settings for `period_ns`.
///
/// ```
/// use tickburst::arch::timer::settings_for_period;
/// let s = settings_for_period(1_000_000, 1).unwrap();
/// assert_eq!((s.initial_count, s.divisor), (1_000_000, 1));
/// ```
pub fn settings_for_period(period_ns: u64, bus_cycle_ns: u64) -> Result<TimerSettings, TimerError> {
    if period_ns == 0 {
        return Err(TimerError::Zero);
    }
    if bus_cycle_ns == 0 {
        return Err(TimerError::ZeroBusCycle);
    }
    for shift in 0..8 {
        let divisor = 1u32 << shift;
        let count = period_ns / (bus_cycle_ns * u64::from(divisor));
        if count == 0 {
            return Err(TimerError::Zero);
        }
        if let Ok(initial_count) = u32::try_from(count) {
            let divide_config = divide_config_for(divisor).expect("power of two up to 128");
            return Ok(TimerSettings {
                initial_count,
                divisor,
                divide_config,
                actual_period_ns: count * bus_cycle_ns * u64::from(divisor),
            });
        }
    }
    Err(TimerError::TooLong(period_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ms_at_one_ghz() {
        let s = settings_for_period(1_000_000, 1).unwrap();
        assert_eq!(s.initial_count, 1_000_000);
        assert_eq!(s.divisor, 1);
        assert_eq!(s.divide_config, 0b1011);
        assert_eq!(s.actual_period_ns, 1_000_000);
    }

    #[test]
    fn long_periods_use_a_divider() {
        let s = settings_for_period(10_000_000_000, 1).unwrap();
        assert_eq!(s.divisor, 4);
        assert_eq!(s.initial_count, 2_500_000_000);
        assert_eq!(s.actual_period_ns, 10_000_000_000);
    }

    #[test]
    fn slower_bus() {
        let s = settings_for_period(200_000, 10).unwrap();
        assert_eq!((s.initial_count, s.divisor), (20_000, 1));
    }

    #[test]
    fn rejects_zero_and_overflow() {
        assert_eq!(settings_for_period(0, 1), Err(TimerError::Zero));
        assert_eq!(settings_for_period(5, 10), Err(TimerError::Zero));
        assert_eq!(settings_for_period(1, 0), Err(TimerError::ZeroBusCycle));
        let too_long = 128 * (u64::from(u32::MAX) + 1);
        assert_eq!(
            settings_for_period(too_long, 1),
            Err(TimerError::TooLong(too_long))
        );
    }
}
