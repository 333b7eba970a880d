//! Whether the hv timer (VMX preemption timer) can exist on this host,
//! whether this process may open tracepoints, and how the hv timer's
//! expiries are counted.

use crate::host::facts::module_param;
use crate::host::perf::{open_event, open_tracepoint, PerfError};
use perf_event::events::KProbe;
use perf_event::Counter;

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

/// The function of `kvm.ko` that handles one expiry of the hv timer (a VMX
/// exit with reason [`EXIT_REASON_PREEMPTION_TIMER`] taken by KVM as a timer
/// expiry, in the fast path or the slow one), called in the vCPU thread.
/// Exported by kvm.ko for kvm_intel.ko, so it is never inlined away.
pub const HV_EXPIRED_FN: &str = "kvm_lapic_expired_hv_timer";

/// How hv timer expiries are counted on a vCPU thread (`top`'s hv/s).
///
/// A tracepoint's perf event runs whenever its tracepoint fires in the
/// observed thread: `kvm:kvm_exit` fires on *every* VM exit, so counting
/// exit reason 52 makes each exit of a watched vCPU build a trace record
/// (its exit information read back from the VMCS) and run the filter, and
/// an exit-heavy guest pays for it (28-32% slower in the emulated Intel
/// host, docs/benchmarks-top.md). A kprobe on [`HV_EXPIRED_FN`] runs on hv
/// expiries only; it needs the kernel's kprobe PMU
/// (`/sys/bus/event_source/devices/kprobe`, `CONFIG_KPROBE_EVENTS`). Each
/// perf kprobe event registers a kprobe of its own, so with N vCPUs watched
/// an expiry runs N handlers (all but one return at once): its cost grows
/// with N (docs/benchmarks-top.md, "what is left").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HvExpiries {
    /// A kprobe on [`HV_EXPIRED_FN`].
    KProbe,
    /// Tracepoint `kvm:kvm_exit` (`id`) filtered on exit reason 52, where
    /// the kprobe cannot be opened (`why_not_kprobe`).
    ExitTracepoint {
        /// Tracepoint id of `kvm:kvm_exit`.
        id: u64,
        /// Why the kprobe could not be opened.
        why_not_kprobe: String,
    },
}

impl HvExpiries {
    /// The cheapest way this host and process allow: the kprobe, tried by
    /// opening it host-wide on CPU 0 (and closing it), else the exit
    /// tracepoint `exit_id`; `Err` names why neither can be used.
    pub fn choose(exit_id: Result<u64, String>) -> Result<HvExpiries, String> {
        match open_kprobe(None, Some(0)) {
            Ok(_) => Ok(HvExpiries::KProbe),
            Err(why) => {
                let why_not_kprobe = why.to_string();
                match exit_id {
                    Ok(id) => Ok(HvExpiries::ExitTracepoint { id, why_not_kprobe }),
                    Err(e) => Err(format!("{e}; kprobe on {HV_EXPIRED_FN}: {why_not_kprobe}")),
                }
            }
        }
    }

    /// Opens and starts the counter on vCPU thread `tid`.
    pub fn open(&self, tid: libc::pid_t) -> Result<Counter, PerfError> {
        match self {
            HvExpiries::KProbe => {
                let mut c = open_kprobe(Some(tid), None)?;
                c.enable().map_err(PerfError::Enable)?;
                Ok(c)
            }
            HvExpiries::ExitTracepoint { id, .. } => {
                let filter = format!("exit_reason == {EXIT_REASON_PREEMPTION_TIMER}");
                open_tracepoint(*id, Some(tid), None, Some(&filter), None)
            }
        }
    }

    /// What is counted, for a person: `kprobe kvm_lapic_expired_hv_timer`
    /// or `kvm:kvm_exit exit_reason == 52`.
    pub fn source(&self) -> String {
        match self {
            HvExpiries::KProbe => format!("kprobe {HV_EXPIRED_FN}"),
            HvExpiries::ExitTracepoint { .. } => {
                format!("kvm:kvm_exit exit_reason == {EXIT_REASON_PREEMPTION_TIMER}")
            }
        }
    }

    /// What counting this way costs the watched vCPUs, with the reason.
    pub fn cost(&self) -> String {
        match self {
            HvExpiries::KProbe => "runs on hv expiries only".into(),
            HvExpiries::ExitTracepoint { why_not_kprobe, .. } => format!(
                "runs on every VM exit of a watched vCPU: exit-heavy guests slow down \
                 (kprobe on {HV_EXPIRED_FN}: {why_not_kprobe})"
            ),
        }
    }
}

/// A kprobe counter on [`HV_EXPIRED_FN`], disabled.
fn open_kprobe(tid: Option<libc::pid_t>, cpu: Option<usize>) -> Result<Counter, PerfError> {
    let probe = KProbe::probe(HV_EXPIRED_FN, 0).map_err(|e| {
        PerfError::Open(std::io::Error::new(
            e.kind(),
            format!("no kprobe PMU (/sys/bus/event_source/devices/kprobe: {e})"),
        ))
    })?;
    open_event(probe, tid, cpu, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_kprobe_the_exit_tracepoint_counts_and_says_its_cost() {
        let exit = HvExpiries::ExitTracepoint {
            id: 7,
            why_not_kprobe: "no kprobe PMU".into(),
        };
        assert_eq!(exit.source(), "kvm:kvm_exit exit_reason == 52");
        assert!(exit.cost().contains("every VM exit") && exit.cost().contains("no kprobe PMU"));
        assert_eq!(
            HvExpiries::KProbe.source(),
            "kprobe kvm_lapic_expired_hv_timer"
        );
    }

    #[test]
    fn choose_falls_back_to_the_tracepoint_or_names_both_reasons() {
        // Either way, the choice is the kprobe only if it opens on this host.
        let kprobe_opens = open_kprobe(None, Some(0)).is_ok();
        match HvExpiries::choose(Ok(7)) {
            Ok(HvExpiries::KProbe) => assert!(kprobe_opens),
            Ok(HvExpiries::ExitTracepoint { id, why_not_kprobe }) => {
                assert!(!kprobe_opens);
                assert_eq!(id, 7);
                assert!(!why_not_kprobe.is_empty());
            }
            Err(e) => panic!("a tracepoint id was given: {e}"),
        }
        if !kprobe_opens {
            let e = HvExpiries::choose(Err("kvm/kvm_exit: not found".into())).unwrap_err();
            assert!(
                e.contains("kvm/kvm_exit: not found") && e.contains(HV_EXPIRED_FN),
                "{e}"
            );
        }
    }
}
