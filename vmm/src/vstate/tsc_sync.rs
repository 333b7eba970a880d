//! One guest-TSC / host-time pair taken at one moment: the vCPU's TSC read
//! through `KVM_GET_MSRS` (KVM computes it from the host's TSC at the
//! ioctl) between two reads of the host clock.
//!
//! The guest's own stamp of its ready report cannot serve: the host sees the
//! report only once the vCPU thread runs again after the exit, and on a busy
//! host (or a 1-CPU one, where the VMM's threads share the CPU) that can be
//! milliseconds later; every tick of that vCPU would then read late by as
//! much, and a tick taken just before a pause would land inside it.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;
use std::time::{Duration, Instant};
use thiserror::Error;

/// `IA32_TIME_STAMP_COUNTER` (Intel SDM vol. 4, table 2-2).
pub const MSR_IA32_TSC: u32 = 0x10;

/// Reads taken at most; the narrowest bracket is kept.
pub const ATTEMPTS: usize = 8;

/// A bracket this narrow ends the attempts early.
pub const GOOD_ENOUGH: Duration = Duration::from_micros(20);

/// Why the vCPU's TSC could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TscSyncError {
    /// `KVM_GET_MSRS` failed or read no entry.
    #[error("reading the vCPU's TSC (KVM_GET_MSRS IA32_TSC): {0}")]
    Read(String),
}

/// A guest TSC value and the host time it was read at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TscSync {
    /// The vCPU's TSC.
    pub tsc: u64,
    /// The host time of the read: the middle of the bracket.
    pub at: Instant,
    /// How long the bracket was: the pair's uncertainty.
    pub width: Duration,
}

/// Reads vCPU `vcpu`'s TSC up to [`ATTEMPTS`] times and keeps the read with
/// the narrowest host-time bracket. Call it from the thread that runs the
/// vCPU, outside `KVM_RUN`.
pub fn read(vcpu: &VcpuFd) -> Result<TscSync, TscSyncError> {
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_IA32_TSC,
        ..Default::default()
    }])
    .map_err(|e| TscSyncError::Read(format!("{e:?}")))?;
    narrowest(|| {
        let before = Instant::now();
        let n = vcpu
            .get_msrs(&mut msrs)
            .map_err(|e| TscSyncError::Read(e.to_string()))?;
        let after = Instant::now();
        match msrs.as_slice().first() {
            Some(entry) if n == 1 => Ok((before, entry.data, after)),
            _ => Err(TscSyncError::Read(format!("{n} entries read"))),
        }
    })
}

/// Reads the host's own TSC (`rdtsc`) between two reads of the host clock,
/// keeping the narrowest of up to [`ATTEMPTS`] brackets: the rate of the
/// guest TSC, which KVM runs off the host TSC, against host time
/// (`session::clock_fit`). Never fails.
pub fn read_host() -> TscSync {
    narrowest(|| {
        let before = Instant::now();
        let tsc = host_tsc();
        let after = Instant::now();
        Ok((before, tsc, after))
    })
    .unwrap_or_else(|_| TscSync {
        tsc: host_tsc(),
        at: Instant::now(),
        width: Duration::MAX,
    })
}

/// The host TSC now.
#[cfg(target_arch = "x86_64")]
fn host_tsc() -> u64 {
    // SAFETY: RDTSC reads a counter; it has no memory effects, and every
    // x86_64 CPU has it (Linux requires it; user mode may use it unless
    // the kernel set CR4.TSD, which Linux does only for seccomp's strict
    // mode, where this program could not run KVM at all).
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_rdtsc()
    }
}

/// Takes reads of `(before, tsc, after)` until one is [`GOOD_ENOUGH`] or
/// [`ATTEMPTS`] were made; returns the narrowest.
fn narrowest(
    mut one: impl FnMut() -> Result<(Instant, u64, Instant), TscSyncError>,
) -> Result<TscSync, TscSyncError> {
    let mut best: Option<TscSync> = None;
    for _ in 0..ATTEMPTS {
        let (before, tsc, after) = one()?;
        let width = after.saturating_duration_since(before);
        let read = TscSync {
            tsc,
            at: before + width / 2,
            width,
        };
        if best.is_none_or(|b| read.width < b.width) {
            best = Some(read);
        }
        if width <= GOOD_ENOUGH {
            break;
        }
    }
    best.ok_or_else(|| TscSyncError::Read("no read".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_narrowest_bracket() {
        let t0 = Instant::now();
        let widths = [300u64, 100, 200, 150, 400, 120, 110, 500];
        let mut i = 0;
        let s = narrowest(|| {
            let w = widths[i];
            let before = t0 + Duration::from_micros(1000 * i as u64);
            i += 1;
            Ok((before, i as u64, before + Duration::from_micros(w)))
        })
        .unwrap();
        assert_eq!(i, ATTEMPTS);
        assert_eq!(s.tsc, 2);
        assert_eq!(s.width, Duration::from_micros(100));
        assert_eq!(s.at, t0 + Duration::from_micros(1000 + 50));
    }

    #[test]
    fn stops_at_a_narrow_bracket() {
        let t0 = Instant::now();
        let mut calls = 0;
        let s = narrowest(|| {
            calls += 1;
            let w = if calls == 2 { 5 } else { 100 };
            Ok((t0, calls, t0 + Duration::from_micros(w)))
        })
        .unwrap();
        assert_eq!((calls, s.tsc), (2, 2));
    }

    #[test]
    fn a_failed_read_is_an_error() {
        let e = narrowest(|| Err(TscSyncError::Read("EINVAL".into()))).unwrap_err();
        assert!(e.to_string().contains("IA32_TSC"));
    }

    #[test]
    fn the_host_tsc_advances() {
        let a = read_host();
        std::thread::sleep(Duration::from_millis(5));
        let b = read_host();
        assert!(b.tsc > a.tsc && b.at > a.at);
        assert!(a.width < Duration::from_millis(5), "{:?}", a.width);
    }

    /// On a real vCPU the TSC advances with host time at the rate KVM
    /// reports.
    #[test]
    fn a_real_vcpu_tsc_follows_host_time() {
        let Some(_lock) = tickburst_testkit::kvm_or_skip("a_real_vcpu_tsc_follows_host_time")
        else {
            return;
        };
        let kvm = crate::vstate::kvm::open_kvm().unwrap();
        let mut vm =
            crate::vstate::vm::Vm::create(&kvm, &crate::vstate::test_setup::guest_setup(1))
                .unwrap();
        let khz = vm.tsc_khz();
        let vcpu = vm.take_vcpus().pop().unwrap();
        let a = read(vcpu.fd()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let b = read(vcpu.fd()).unwrap();
        let host_ns = b.at.duration_since(a.at).as_nanos() as f64;
        let tsc_ns = (b.tsc - a.tsc) as f64 * 1e6 / f64::from(khz);
        assert!(
            (tsc_ns - host_ns).abs() < 0.01 * host_ns + 200_000.0,
            "TSC {tsc_ns} ns against host {host_ns} ns"
        );
    }
}
