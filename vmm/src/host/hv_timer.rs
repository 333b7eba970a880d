//! Whether the hv timer (VMX preemption timer) can exist on this host,
//! whether this process may open tracepoints, and how the hv timer's
//! expiries are counted.

use crate::host::facts::module_param;
use crate::host::kprobe_event::KprobeEvent;
use crate::host::perf::{open_event, open_tracepoint, PerfError};
use perf_event::events::KProbe;
use perf_event::Counter;
use std::path::Path;
use std::sync::Arc;

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
/// expiries only. Each perf event of the kernel's kprobe PMU registers a
/// kprobe of its own, so with N vCPUs watched an expiry runs N handlers (all
/// but one return at once) and the cost grows with N; a kprobe event
/// defined in tracefs ([`KprobeEvent`]) is one kprobe, whatever the number
/// of per-thread counters opened on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HvExpiries {
    /// A kprobe event of tickburst's own on [`HV_EXPIRED_FN`], shared by
    /// every vCPU's counter and removed after the last is closed.
    KprobeEvent(Arc<KprobeEvent>),
    /// A kprobe of the perf kprobe PMU on [`HV_EXPIRED_FN`] per vCPU
    /// thread, where no kprobe event could be defined (`why_not_event`).
    KProbe {
        /// Why no kprobe event.
        why_not_event: String,
    },
    /// Tracepoint `kvm:kvm_exit` (`id`) filtered on exit reason 52, where
    /// no kprobe can be opened (`why_not_kprobe`).
    ExitTracepoint {
        /// Tracepoint id of `kvm:kvm_exit`.
        id: u64,
        /// Why neither kind of kprobe could be opened.
        why_not_kprobe: String,
    },
}

/// An hv expiry counter on one vCPU thread. It holds the kprobe event it
/// counts on (if any), so the event is removed only after the counter is
/// closed: fields drop in declaration order, the counter first.
#[derive(Debug)]
pub struct HvCounter {
    counter: Counter,
    _event: Option<Arc<KprobeEvent>>,
}

impl HvCounter {
    /// The expiries counted so far.
    pub fn read(&mut self) -> std::io::Result<u64> {
        self.counter.read()
    }
}

impl HvExpiries {
    /// The cheapest way this host and process allow, each tried by opening
    /// it host-wide on CPU 0 (and closing it): a kprobe event defined in the
    /// tracefs at `tracefs` (none: not tried), else a perf kprobe, else
    /// the exit tracepoint `exit_id`; `Err` names why none can be used.
    pub fn choose(
        tracefs: Option<&Path>,
        exit_id: Result<u64, String>,
    ) -> Result<HvExpiries, String> {
        let why_not_event = match tracefs {
            None => "no tracefs".to_string(),
            Some(root) => match KprobeEvent::create(root, HV_EXPIRED_FN) {
                Err(e) => e.to_string(),
                Ok(event) => match open_tracepoint(event.id(), None, Some(0), None, None) {
                    Ok(_) => return Ok(HvExpiries::KprobeEvent(Arc::new(event))),
                    Err(e) => format!("{}: {e}", event.name()),
                },
            },
        };
        match open_kprobe(None, Some(0)) {
            Ok(_) => Ok(HvExpiries::KProbe { why_not_event }),
            Err(why) => {
                let why_not_kprobe = format!("{why}; kprobe event: {why_not_event}");
                match exit_id {
                    Ok(id) => Ok(HvExpiries::ExitTracepoint { id, why_not_kprobe }),
                    Err(e) => Err(format!("{e}; kprobe on {HV_EXPIRED_FN}: {why_not_kprobe}")),
                }
            }
        }
    }

    /// Opens and starts the counter on vCPU thread `tid`.
    pub fn open(&self, tid: libc::pid_t) -> Result<HvCounter, PerfError> {
        let (counter, event) = match self {
            HvExpiries::KprobeEvent(event) => (
                open_tracepoint(event.id(), Some(tid), None, None, None)?,
                Some(event.clone()),
            ),
            HvExpiries::KProbe { .. } => {
                let mut c = open_kprobe(Some(tid), None)?;
                c.enable().map_err(PerfError::Enable)?;
                (c, None)
            }
            HvExpiries::ExitTracepoint { id, .. } => {
                let filter = format!("exit_reason == {EXIT_REASON_PREEMPTION_TIMER}");
                (
                    open_tracepoint(*id, Some(tid), None, Some(&filter), None)?,
                    None,
                )
            }
        };
        Ok(HvCounter {
            counter,
            _event: event,
        })
    }

    /// What is counted, for a person: `kprobe event tickburst/...`,
    /// `kprobe kvm_lapic_expired_hv_timer` or `kvm:kvm_exit exit_reason == 52`.
    pub fn source(&self) -> String {
        match self {
            HvExpiries::KprobeEvent(event) => {
                format!("kprobe event {} on {HV_EXPIRED_FN}", event.name())
            }
            HvExpiries::KProbe { .. } => format!("kprobe {HV_EXPIRED_FN}, one per vCPU"),
            HvExpiries::ExitTracepoint { .. } => {
                format!("kvm:kvm_exit exit_reason == {EXIT_REASON_PREEMPTION_TIMER}")
            }
        }
    }

    /// What counting this way costs the watched vCPUs, with the reason.
    pub fn cost(&self) -> String {
        match self {
            HvExpiries::KprobeEvent(_) => "runs on hv expiries only, one kprobe for all vCPUs \
                 (defined in kprobe_events while top runs, removed when it ends)"
                .into(),
            HvExpiries::KProbe { why_not_event } => format!(
                "runs on hv expiries only, but each watched vCPU adds a kprobe that runs on \
                 every vCPU's expiry: the cost grows with the vCPUs (kprobe event: {why_not_event})"
            ),
            HvExpiries::ExitTracepoint { why_not_kprobe, .. } => format!(
                "runs on every VM exit of a watched vCPU: exit-heavy guests slow down \
                 (kprobe on {HV_EXPIRED_FN}: {why_not_kprobe})"
            ),
        }
    }

    /// Whether this is the cheapest way (one kprobe for all vCPUs).
    pub fn is_cheapest(&self) -> bool {
        matches!(self, HvExpiries::KprobeEvent(_))
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
        let perf = HvExpiries::KProbe {
            why_not_event: "kprobe_events: Permission denied".into(),
        };
        assert_eq!(
            perf.source(),
            "kprobe kvm_lapic_expired_hv_timer, one per vCPU"
        );
        assert!(perf.cost().contains("grows with the vCPUs") && perf.cost().contains("Permission"));
        assert!(!perf.is_cheapest() && !exit.is_cheapest());
    }

    #[test]
    fn choose_takes_the_cheapest_that_opens_or_names_every_reason() {
        // No tracefs given: never a kprobe event; the perf kprobe only if
        // it opens on this host.
        let kprobe_opens = open_kprobe(None, Some(0)).is_ok();
        match HvExpiries::choose(None, Ok(7)) {
            Ok(HvExpiries::KProbe { why_not_event }) => {
                assert!(kprobe_opens);
                assert_eq!(why_not_event, "no tracefs");
            }
            Ok(HvExpiries::ExitTracepoint { id, why_not_kprobe }) => {
                assert!(!kprobe_opens);
                assert_eq!(id, 7);
                assert!(
                    why_not_kprobe.contains("kprobe event: no tracefs"),
                    "{why_not_kprobe}"
                );
            }
            other => panic!("a tracepoint id was given, no tracefs: {other:?}"),
        }
        if !kprobe_opens {
            let e = HvExpiries::choose(None, Err("kvm/kvm_exit: not found".into())).unwrap_err();
            assert!(
                e.contains("kvm/kvm_exit: not found") && e.contains(HV_EXPIRED_FN),
                "{e}"
            );
        }
        // A tracefs without kprobe_events: the reason names the file.
        let dir = std::env::temp_dir().join(format!("tb-hv-choose-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let why = match HvExpiries::choose(Some(&dir), Ok(7)) {
            Ok(HvExpiries::KProbe { why_not_event }) => why_not_event,
            Ok(HvExpiries::ExitTracepoint { why_not_kprobe, .. }) => why_not_kprobe,
            other => panic!("no kprobe_events there: {other:?}"),
        };
        assert!(why.contains("kprobe_events"), "{why}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
