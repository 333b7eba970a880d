//! `tickburst doctor`: what this host can show, and what follows for the
//! experiment.

use crate::host::caps::{self, FunctionFilter, HostCaps};
use crate::host::facts::{self as host, HostInfo};
use crate::host::hv_timer::{self as probes, HvExpiries};
use crate::host::ksyms;
use crate::host::tracefs;
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
    let tracefs = tracefs::locate_or_mount(root);
    let tracefs_root = tracefs.as_ref().ok().map(|t| t.root.clone());
    let mut caps = HostCaps::detect(kvm.as_ref().ok(), tracefs_root.as_deref());
    match &tracefs {
        Ok(t) => {
            let where_ = if t.mounted_by_us {
                format!(
                    "{} (not mounted; mounted for this check in a mount namespace of its own)",
                    t.root.display()
                )
            } else {
                format!("{} (mounted)", t.root.display())
            };
            items.push(item("tracefs", where_, true, "tracepoint ids readable"));
            let opened = caps
                .tracepoint("timer/hrtimer_expire_entry")
                .map_err(|e| e.to_string())
                .and_then(probes::can_open);
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
            if let Ok(id) = caps.tracepoint("timer/hrtimer_expire_entry") {
                caps.function_filter = caps::try_function_filter(id);
            }
            if probes::hv_timer_possible(backend.as_deref()).is_ok() {
                // Tried as top would: a kprobe event is defined and
                // removed again at once.
                let how = HvExpiries::choose(
                    Some(&t.root),
                    caps.tracepoint("kvm/kvm_exit").map_err(|e| e.to_string()),
                );
                items.push(match &how {
                    Ok(hv) => item(
                        "hv expiries (top)",
                        hv.source(),
                        hv.is_cheapest(),
                        hv.cost(),
                    ),
                    Err(why) => item("hv expiries (top)", why.clone(), false, "top's hv/s: n/a"),
                });
            }
        }
        Err(e) => items.push(item(
            "tracefs",
            e.to_string(),
            false,
            "no tracepoint columns",
        )),
    }
    items.extend(kernel_items(&caps, kvm.is_ok(), tracefs.is_ok(), &|s| {
        ksyms::kallsyms_address(s).map_err(|e| e.to_string())
    }));
    DoctorReport { host, items }
}

/// What the kernel offers the host probes (`caps`), one line each, and
/// what is missing follows for the columns. `have_kvm`: `/dev/kvm` could be
/// used (else the stats extension is unknown, not lacking). `lookup` finds
/// a symbol's address (`/proc/kallsyms`), asked only when the filter cannot
/// name it. Pure over its inputs, so a simulated older kernel is checked in
/// tests.
pub fn kernel_items(
    caps: &HostCaps,
    have_kvm: bool,
    have_tracefs: bool,
    lookup: &dyn Fn(&str) -> Result<u64, String>,
) -> Vec<Item> {
    let mut items = vec![if have_kvm {
        capability(
            "KVM binary stats",
            caps.stats_fd,
            "irq_injections/exits/halt_exits columns available",
            "KVM_CAP_BINARY_STATS_FD absent (Linux 5.14+): irq_inj, exits, halt_exits say n/a",
        )
    } else {
        item("KVM binary stats", "unknown", false, "KVM not usable here")
    }];
    if !have_tracefs {
        return items;
    }
    for event in tracefs::TRACEPOINTS {
        let found = caps.tracepoint(event);
        items.push(item(
            &format!("tracepoint {event}"),
            found
                .as_ref()
                .map_or_else(|e| e.to_string(), |id| format!("id {id}")),
            found.is_ok(),
            if found.is_ok() {
                tracepoint_use(event).to_string()
            } else {
                format!("{}: n/a", tracepoint_column(event))
            },
        ));
    }
    let named = match &caps.function_filter {
        FunctionFilter::Yes => {
            items.push(item(
                "filter .function",
                "yes",
                true,
                "sw_timer filters name apic_timer_fn; /proc/kallsyms is not read",
            ));
            true
        }
        FunctionFilter::No(why) => {
            items.push(item(
                "filter .function",
                format!("no ({why})"),
                false,
                "Linux 6.3+ names the symbol; here sw_timer filters on its address from /proc/kallsyms",
            ));
            false
        }
        FunctionFilter::Untried => {
            items.push(item(
                "filter .function",
                "not tried (tracepoints cannot be opened)",
                false,
                "runs try it; else the address from /proc/kallsyms",
            ));
            false
        }
    };
    if named {
        items.push(item(
            "apic_timer_fn",
            "named in the filter",
            true,
            "address not needed",
        ));
    } else {
        match lookup(ksyms::APIC_TIMER_FN) {
            Ok(a) => items.push(item(
                "apic_timer_fn",
                format!("{a:#x}"),
                true,
                "sw_timer column filters on this address",
            )),
            Err(e) => items.push(item("apic_timer_fn", e, false, "sw_timer: n/a")),
        }
    }
    let lacking: Vec<String> = caps
        .lacking()
        .iter()
        .filter(|l| have_kvm || **l != caps::Lacking::StatsFd)
        .map(ToString::to_string)
        .collect();
    items.push(item(
        "kernel lacks",
        if lacking.is_empty() {
            "nothing tickburst uses".to_string()
        } else {
            lacking.join("; ")
        },
        lacking.is_empty(),
        if lacking.is_empty() {
            "every host column can be filled"
        } else {
            "runs go on: the columns above that need it say n/a, with the reason"
        },
    ));
    items
}

/// The host column a tracepoint feeds.
fn tracepoint_column(event: &str) -> &'static str {
    match event {
        "timer/hrtimer_expire_entry" | "timer/hrtimer_expire_exit" | "timer/hrtimer_start" => {
            "sw_timer"
        }
        "kvm/kvm_exit" => "hv_timer",
        "kvm/kvm_hv_timer_state" => "timer back end (hv/sw switches)",
        _ => "its column",
    }
}

fn tracepoint_use(event: &str) -> &'static str {
    match event {
        "timer/hrtimer_expire_entry" => "counts sw timer callbacks (sw_timer), each with its `now`",
        "timer/hrtimer_expire_exit" => "ends each callback: a run's duration in one interrupt",
        "timer/hrtimer_start" => {
            "learns our vCPU's hrtimer, to count only our VM; each callback's lateness"
        }
        "kvm/kvm_exit" => {
            "counts hv timer expiries of runs, and of top without a kprobe PMU (Intel only; never fires on some back ends)"
        }
        "kvm/kvm_hv_timer_state" => "hv/sw switches (timer_backend)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::caps::Lacks;

    fn find<'a>(items: &'a [Item], name: &str) -> &'a Item {
        items
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no {name}: {items:?}"))
    }

    #[test]
    fn a_current_kernel_lacks_nothing_and_needs_no_kallsyms() {
        let items = kernel_items(&HostCaps::full(), true, true, &|_| panic!("kallsyms read"));
        assert!(items.iter().all(|i| i.ok), "{items:?}");
        assert_eq!(find(&items, "kernel lacks").value, "nothing tickburst uses");
    }

    #[test]
    fn a_kernel_before_5_14_says_what_it_lacks() {
        let caps = HostCaps::full().without(&Lacks::before_5_14());
        let items = kernel_items(&caps, true, true, &|_| Ok(0xffff_ffff_812c_81d0));
        let stats = find(&items, "KVM binary stats");
        assert!(!stats.ok && stats.consequence.contains("5.14"), "{stats:?}");
        assert!(stats.consequence.contains("n/a"), "{stats:?}");
        let filter = find(&items, "filter .function");
        assert!(
            !filter.ok && filter.consequence.contains("6.3"),
            "{filter:?}"
        );
        let sym = find(&items, "apic_timer_fn");
        assert!(sym.ok && sym.value == "0xffffffff812c81d0", "{sym:?}");
        let lacks = find(&items, "kernel lacks");
        assert!(!lacks.ok, "{lacks:?}");
        assert!(
            lacks.value.contains("5.14") && lacks.value.contains("6.3"),
            "{lacks:?}"
        );
    }

    #[test]
    fn a_missing_tracepoint_names_its_column() {
        let caps = HostCaps::full().without(&Lacks {
            tracepoints: vec!["kvm/kvm_hv_timer_state".into(), "kvm/kvm_exit".into()],
            ..Lacks::before_6_3()
        });
        let items = kernel_items(&caps, true, true, &|s| Err(format!("{s} hidden")));
        let tp = find(&items, "tracepoint kvm/kvm_hv_timer_state");
        assert!(!tp.ok && tp.value.contains("not in this kernel"), "{tp:?}");
        assert!(tp.consequence.contains("n/a"), "{tp:?}");
        assert!(find(&items, "tracepoint kvm/kvm_exit")
            .consequence
            .starts_with("hv_timer"));
        assert!(find(&items, "KVM binary stats").ok);
        let sym = find(&items, "apic_timer_fn");
        assert!(!sym.ok && sym.consequence.contains("n/a"), "{sym:?}");
        assert!(find(&items, "kernel lacks").value.contains("kvm_exit"));
    }

    #[test]
    fn without_kvm_the_stats_are_unknown_not_lacking() {
        let caps = HostCaps::full().without(&Lacks::before_5_14());
        let items = kernel_items(&caps, false, false, &|_| Ok(1));
        assert_eq!(find(&items, "KVM binary stats").value, "unknown");
        assert_eq!(items.len(), 1, "{items:?}");
    }
}
