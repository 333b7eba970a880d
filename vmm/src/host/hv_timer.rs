//! Whether the hv timer (VMX preemption timer) can exist on this host, and
//! whether this process may open tracepoints.

use crate::host::facts::module_param;
use crate::host::perf::open_tracepoint;

/// VMX exit reason of the preemption timer.
pub const EXIT_REASON_PREEMPTION_TIMER: u32 = 52;

/// Whether this process runs as root (it may mount tracefs).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether this process may open tracepoint `id` host-wide on CPU 0.
pub fn can_open(id: u64) -> Result<(), String> {
    open_tracepoint(id, None, Some(0), None, None)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Whether the hv timer can be used on this host, or why not.
pub fn hv_timer_possible(backend: Option<&str>) -> Result<(), String> {
    match backend {
        Some("kvm_intel") => match module_param("kvm_intel", "preemption_timer").as_deref() {
            Some("Y") | Some("1") => Ok(()),
            Some(v) => Err(format!("kvm_intel.preemption_timer={v}: the hv timer is off, only the sw timer runs")),
            None => Err("kvm_intel.preemption_timer not readable".into()),
        },
        Some(other) => Err(format!(
            "hv timer not available on this host: KVM back end {other} has no VMX-preemption timer, only the sw timer runs"
        )),
        None => Err("hv timer not available: no KVM back-end module found".into()),
    }
}
