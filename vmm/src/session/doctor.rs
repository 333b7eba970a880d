//! `tickburst doctor`: what this host can show, and what follows for the
//! experiment.

use crate::host::facts::{self as host, HostInfo};
use crate::host::hv_timer as probes;
use crate::host::tracefs;
use kvm_bindings::KVM_CAP_BINARY_STATS_FD;
use kvm_ioctls::Cap;
use serde::{Deserialize, Serialize};

/// One line of the doctor's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// What was checked.
    pub name: String,
    /// What was found.
    pub value: String,
    /// Whether it is usable for the experiment.
    pub ok: bool,
    /// What follows for the experiment.
    pub consequence: String,
}

/// The doctor's findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoctorReport {
    /// Host facts (same as in every run record).
    pub host: HostInfo,
    /// Every check.
    pub items: Vec<Item>,
}

fn item(name: &str, value: impl Into<String>, ok: bool, consequence: impl Into<String>) -> Item {
    Item {
        name: name.into(),
        value: value.into(),
        ok,
        consequence: consequence.into(),
    }
}

/// A yes/no capability: usable when present, with what follows either way.
fn capability(name: &str, present: bool, if_yes: &str, if_no: &str) -> Item {
    let (value, consequence) = if present {
        ("yes", if_yes)
    } else {
        ("no", if_no)
    };
    item(name, value, present, consequence)
}

/// Runs every check. Mounts tracefs only for the duration of the check (and
/// only as root) if it is not mounted.
pub fn diagnose() -> DoctorReport {
    let mut items = Vec::new();
    let kvm = crate::vstate::kvm::open_kvm();
    let host = host::gather(kvm.as_ref().ok().map(|k| k.get_api_version()));
    items.push(item(
        "kernel release",
        &host.kernel_release,
        true,
        "recorded with every run",
    ));
    match &kvm {
        Ok(k) => {
            items.push(item(
                "KVM API version",
                k.get_api_version().to_string(),
                true,
                "runs can boot the guest",
            ));
            items.push(capability(
                "in-kernel irqchip",
                k.check_extension(Cap::Irqchip),
                "the LAPIC is emulated by KVM, as tickburst needs",
                "tickburst cannot run here",
            ));
            let split = if k.check_extension(Cap::SplitIrqchip) {
                "yes"
            } else {
                "no"
            };
            items.push(item(
                "split irqchip",
                split,
                true,
                "not used by tickburst (full in-kernel irqchip)",
            ));
            items.push(capability(
                "KVM binary stats",
                k.check_extension_raw(u64::from(KVM_CAP_BINARY_STATS_FD)) > 0,
                "irq_injections/exits/halt_exits columns available",
                "no KVM stats columns",
            ));
        }
        Err(e) => items.push(item(
            "KVM",
            e.to_string(),
            false,
            "runs exit 125 on this host",
        )),
    }
    items.push(item(
        "CPU vendor",
        &host.cpu_vendor,
        true,
        "the hv timer exists only on Intel (VMX)",
    ));
    let backend = host.kvm_backend.clone();
    items.push(item(
        "KVM back end",
        backend.clone().unwrap_or_else(|| "none".into()),
        backend.is_some(),
        "kvm_intel, kvm_amd, or another such as kvm_pvm",
    ));
    match probes::hv_timer_possible(backend.as_deref()) {
        Ok(()) => items.push(item(
            "hv timer",
            "available",
            true,
            "the stall path (hv timer frozen during a pause) can occur here",
        )),
        Err(why) => items.push(item(
            "hv timer",
            "unavailable",
            false,
            format!("{why}: the stall path cannot occur here"),
        )),
    }
    for (module, param) in host::RECORDED_PARAMS {
        if let Some(v) = host::module_param(module, param) {
            let consequence = match *param {
                "min_timer_period_us" => format!("shortest --period accepted: {v}us"),
                "pi_inject_timer" if v == "Y" || v == "1" => {
                    "timer interrupts may be posted across CPUs: the guest itself can see a storm"
                        .to_string()
                }
                "pi_inject_timer" => {
                    "timer interrupts are not posted: the guest sees coalesced ticks".to_string()
                }
                "preemption_timer" if v == "N" || v == "0" => {
                    "KVM never uses the hv timer".to_string()
                }
                _ => "recorded with every run".to_string(),
            };
            items.push(item(&format!("{module}.{param}"), v, true, consequence));
        }
    }
    let root = {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    };
    match tracefs::locate_or_mount(root) {
        Ok(t) => {
            let where_ = if t.mounted_by_us {
                format!("{} (mountable; mounted for this check)", t.root.display())
            } else {
                format!("{} (mounted)", t.root.display())
            };
            items.push(item("tracefs", where_, true, "tracepoint ids readable"));
            for event in tracefs::TRACEPOINTS {
                let found = tracefs::event_id(&t.root, event);
                items.push(item(
                    &format!("tracepoint {event}"),
                    found
                        .as_ref()
                        .map_or_else(|e| e.clone(), |id| format!("id {id}")),
                    found.is_ok(),
                    tracepoint_use(event),
                ));
            }
            let opened =
                tracefs::event_id(&t.root, "timer/hrtimer_expire_entry").and_then(probes::can_open);
            items.push(item(
                "may open tracepoints",
                opened.as_ref().map_or_else(|e| e.clone(), |_| "yes".into()),
                opened.is_ok(),
                if opened.is_ok() {
                    "host columns available (--host-probes auto)"
                } else {
                    "runs are guest-only in auto mode; --host-probes on exits 2"
                },
            ));
        }
        Err(e) => items.push(item("tracefs", e, false, "no tracepoint columns")),
    }
    match tracefs::apic_timer_fn_address() {
        Ok(a) => items.push(item(
            "apic_timer_fn",
            format!("{a:#x}"),
            true,
            "sw_timer column filters on this address",
        )),
        Err(e) => items.push(item("apic_timer_fn", e, false, "no sw_timer column")),
    }
    DoctorReport { host, items }
}

fn tracepoint_use(event: &str) -> &'static str {
    match event {
        "timer/hrtimer_expire_entry" => "counts sw timer callbacks (sw_timer), each with its `now`",
        "timer/hrtimer_expire_exit" => "ends each callback: a run's duration in one interrupt",
        "timer/hrtimer_start" => {
            "learns our vCPU's hrtimer, to count only our VM; each callback's lateness"
        }
        "kvm/kvm_exit" => "counts hv timer expiries (Intel only; never fires on some back ends)",
        "kvm/kvm_hv_timer_state" => "hv/sw switches (timer_backend)",
        _ => "",
    }
}
