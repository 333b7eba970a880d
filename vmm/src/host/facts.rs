//! Facts about the host recorded with every run: kernel, KVM, CPU vendor, the
//! KVM back-end module and the module parameters that shape the LAPIC timer.

use std::path::Path;
pub use tickburst_analysis::host::HostInfo;

/// Module parameters recorded with every run (`module.parameter`).
pub const RECORDED_PARAMS: &[(&str, &str)] = &[
    ("kvm", "min_timer_period_us"),
    ("kvm", "lapic_timer_advance"),
    ("kvm", "lapic_timer_advance_ns"),
    ("kvm", "pi_inject_timer"),
    ("kvm_intel", "preemption_timer"),
];

/// Known KVM back-end modules, in the order they are looked for.
pub const BACKEND_MODULES: &[&str] = &["kvm_intel", "kvm_amd", "kvm_pvm"];

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Reads `/sys/module/<module>/parameters/<param>`.
pub fn module_param(module: &str, param: &str) -> Option<String> {
    read_trimmed(format!("/sys/module/{module}/parameters/{param}"))
}

/// `kvm.min_timer_period_us`, the shortest periodic timer KVM programs.
pub fn min_timer_period_us() -> Option<u64> {
    module_param("kvm", "min_timer_period_us")?.parse().ok()
}

/// Finds the loaded KVM back-end module: a known one, else any other
/// `/sys/module/kvm_*` that has `kvm` as a holder's dependency.
pub fn kvm_backend() -> Option<String> {
    if let Some(m) = BACKEND_MODULES
        .iter()
        .find(|m| Path::new("/sys/module").join(m).exists())
    {
        return Some((*m).to_string());
    }
    let entries = std::fs::read_dir("/sys/module").ok()?;
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .find(|name| name.starts_with("kvm_"))
}

/// The CPU vendor string (`GenuineIntel`, `AuthenticAMD`, ...).
pub fn cpu_vendor() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("vendor_id"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Gathers the host facts; `kvm_api_version` comes from an open `/dev/kvm`.
pub fn gather(kvm_api_version: Option<i32>) -> HostInfo {
    let kvm_params = RECORDED_PARAMS
        .iter()
        .filter_map(|(m, p)| module_param(m, p).map(|v| (format!("{m}.{p}"), v)))
        .collect();
    HostInfo {
        kernel_release: read_trimmed("/proc/sys/kernel/osrelease")
            .unwrap_or_else(|| "unknown".into()),
        kvm_api_version,
        cpu_vendor: cpu_vendor(),
        kvm_backend: kvm_backend(),
        kvm_params,
        timer_backend: None,
        probes: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_without_kvm() {
        let info = gather(None);
        assert!(!info.kernel_release.is_empty());
        assert!(!info.cpu_vendor.is_empty());
        assert_eq!(info.kvm_api_version, None);
        for key in info.kvm_params.keys() {
            assert!(
                RECORDED_PARAMS
                    .iter()
                    .any(|(m, p)| *key == format!("{m}.{p}")),
                "{key}"
            );
        }
    }
}
