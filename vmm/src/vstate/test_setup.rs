//! The guest set-up the unit tests that create a VM boot (compiled for
//! `cargo test` only; the shared test helpers are in `testkit/`).

#![cfg(test)]

use crate::arch::timer::settings_for_period;
use crate::vstate::kvm::DEFAULT_APIC_BUS_CYCLE_NS;
use crate::vstate::slots::GuestSetup;
use tickburst_analysis::names::{Apic, Idle, Timer};

/// A 1 ms periodic timer in x2APIC mode, HLT idle, no probe phase, `vcpus`
/// vCPUs.
pub(crate) fn guest_setup(vcpus: u32) -> GuestSetup {
    GuestSetup {
        apic: Apic::X2Apic,
        idle: Idle::Hlt,
        timer: settings_for_period(1_000_000, DEFAULT_APIC_BUS_CYCLE_NS)
            .expect("1 ms is a valid period"),
        timer_mode: Timer::Periodic,
        period_ns: 1_000_000,
        vcpus,
        probe_count: 0,
    }
}
