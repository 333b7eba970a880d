//! Helpers for tests that boot real guests: skip (with a printed reason) when
//! KVM is missing, fail instead when `TICKBURST_REQUIRE_KVM=1`, and run one VM
//! at a time across test binaries (2-core hosts).
//!
//! ```no_run
//! let Some(_vm) = tickburst::testing::kvm_or_skip("my_test") else { return };
//! // ... boot a guest ...
//! ```

pub mod qemu;

use crate::arch::timer::settings_for_period;
use crate::vstate::kvm::DEFAULT_APIC_BUS_CYCLE_NS;
use crate::vstate::slots::GuestSetup;
use std::fs::File;
use std::os::fd::AsRawFd;
use tickburst_analysis::names::{Apic, Idle, Timer};

/// Set to `1` to make KVM tests fail instead of skip when KVM is unusable.
pub const REQUIRE_KVM_ENV: &str = "TICKBURST_REQUIRE_KVM";
/// Lock file that serialises VM-booting tests across processes.
pub const LOCK_PATH: &str = "/tmp/tickburst-kvm-tests.lock";

/// Holds the exclusive VM lock until dropped.
pub struct VmLock {
    _file: File,
}

/// Whether KVM must be present (`TICKBURST_REQUIRE_KVM=1`).
pub fn kvm_required() -> bool {
    std::env::var(REQUIRE_KVM_ENV).is_ok_and(|v| v == "1")
}

/// Takes the VM lock if KVM is usable. If it is not, prints why and returns
/// `None` (the caller returns: skipped), or panics when KVM is required.
pub fn kvm_or_skip(test: &str) -> Option<VmLock> {
    if let Err(e) = crate::vstate::kvm::open_kvm() {
        if kvm_required() {
            panic!("{test}: KVM is required ({REQUIRE_KVM_ENV}=1) but unusable: {e}");
        }
        eprintln!("SKIPPED {test}: KVM unusable: {e}");
        return None;
    }
    Some(lock())
}

/// Takes the exclusive VM lock (blocking).
pub fn lock() -> VmLock {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .unwrap_or_else(|e| panic!("opening {LOCK_PATH}: {e}"));
    // SAFETY: flock on a file descriptor we own; it is released when the file
    // is closed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(
        rc,
        0,
        "flock {LOCK_PATH}: {}",
        std::io::Error::last_os_error()
    );
    VmLock { _file: file }
}

/// A guest set-up for tests: 1 ms periodic timer in x2APIC mode, HLT idle,
/// no probe phase, `vcpus` vCPUs.
pub fn guest_setup(vcpus: u32) -> GuestSetup {
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
