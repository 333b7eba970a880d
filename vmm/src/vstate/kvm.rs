//! The KVM handle: opening `/dev/kvm` (or another node) with a message that
//! says how to fix the usual failures, and what this KVM allows.

use crate::arch::layout;
use kvm_bindings::KVM_CAP_X86_APIC_BUS_CYCLES_NS;
use kvm_ioctls::Kvm;
use thiserror::Error;

/// Default APIC bus cycle KVM uses when the capability is not reported (1 GHz).
pub const DEFAULT_APIC_BUS_CYCLE_NS: u64 = 1;

/// Environment variable naming another KVM device node than `/dev/kvm`
/// (used by the tests to check the "KVM missing" path; read only in builds
/// with the `fault-injection` feature, which `cargo test` turns on).
#[cfg(feature = "fault-injection")]
pub const KVM_DEVICE_ENV: &str = "TICKBURST_KVM_DEVICE";

/// KVM cannot be used on this host; the text says how to fix it.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct KvmUnavailable(pub String);

/// The KVM device node: `/dev/kvm`, or `$TICKBURST_KVM_DEVICE` in a
/// `fault-injection` build.
fn kvm_device() -> std::ffi::OsString {
    #[cfg(feature = "fault-injection")]
    if let Some(path) = std::env::var_os(KVM_DEVICE_ENV) {
        return path;
    }
    "/dev/kvm".into()
}

/// Opens `/dev/kvm` (or `$TICKBURST_KVM_DEVICE` in a `fault-injection`
/// build), turning the usual failures into a message that says how to fix
/// them.
pub fn open_kvm() -> Result<Kvm, KvmUnavailable> {
    let path = kvm_device();
    let shown = path.to_string_lossy().into_owned();
    let path = std::ffi::CString::new(path.into_encoded_bytes())
        .map_err(|_| KvmUnavailable(format!("bad KVM device path {shown}")))?;
    Kvm::new_with_path(path).map_err(|e| {
        let how = match e.errno() {
            libc::ENOENT => format!("{shown} does not exist: load the KVM module (modprobe kvm_intel or kvm_amd) or use a host with KVM"),
            libc::EACCES | libc::EPERM => format!("permission denied on {shown}: run as root or add your user to the 'kvm' group"),
            _ => format!("cannot open {shown}: {e}"),
        };
        KvmUnavailable(how)
    })
}

/// The most vCPUs a run may have here: what KVM allows
/// (`KVM_CAP_MAX_VCPUS`), at most [`layout::MAX_VCPUS`].
pub fn max_vcpus(kvm: &Kvm) -> u32 {
    (kvm.get_max_vcpus() as u32).clamp(1, layout::MAX_VCPUS)
}

/// Reads the APIC bus cycle KVM uses (`KVM_CAP_X86_APIC_BUS_CYCLES_NS`
/// returns the default cycle in ns; older kernels do not know the capability
/// and use 1 ns).
pub fn apic_bus_cycle_ns(kvm: &Kvm) -> u64 {
    match kvm.check_extension_raw(u64::from(KVM_CAP_X86_APIC_BUS_CYCLES_NS)) {
        n if n > 0 => n as u64,
        _ => DEFAULT_APIC_BUS_CYCLE_NS,
    }
}

/// Guest TSC cycles in `period_ns` at `tsc_khz`.
pub fn tsc_cycles(period_ns: u64, tsc_khz: u32) -> u64 {
    (u128::from(period_ns) * u128::from(tsc_khz) / 1_000_000) as u64
}
