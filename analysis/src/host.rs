//! What the host is, as recorded with every run (`host`). Data only: gathering
//! it from `/proc` and `/sys` is `tickburst::host::facts::gather`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the host is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// `uname -r`.
    pub kernel_release: String,
    /// `KVM_GET_API_VERSION`, when `/dev/kvm` could be opened.
    pub kvm_api_version: Option<i32>,
    /// `vendor_id` from `/proc/cpuinfo`.
    pub cpu_vendor: String,
    /// The loaded KVM back-end module (`kvm_intel`, `kvm_amd`, `kvm_pvm`, ...).
    pub kvm_backend: Option<String>,
    /// Recorded module parameters that exist on this host.
    pub kvm_params: BTreeMap<String, String>,
    /// Which timer back end KVM used during the run.
    #[serde(default)]
    pub timer_backend: Option<crate::figures::TimerBackend>,
    /// Host probes on and missing.
    #[serde(default)]
    pub probes: Option<crate::probe_report::ProbeReport>,
}
