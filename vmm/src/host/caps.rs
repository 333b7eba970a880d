//! What this kernel offers the host probes, as one description the probe
//! set-up and `doctor` decide from: KVM binary stats, the `.function` event
//! filter, each tracepoint tickburst uses.
//!
//! The real host fills it in ([`HostCaps::detect`]); a test takes away what
//! an older kernel lacks ([`Lacks`], e.g. [`Lacks::before_5_14`]) and checks
//! that every column then says n/a with the reason and `doctor` names what is
//! missing. Nothing here looks at the kernel version: each capability is
//! what the kernel answers (an extension check, an id file, a filter the
//! kernel accepts or rejects).

use crate::host::ksyms::{FunctionMatch, APIC_TIMER_FN};
use crate::host::perf::{open_disabled, set_filter};
use crate::host::tracefs;
use kvm_bindings::KVM_CAP_BINARY_STATS_FD;
use kvm_ioctls::Kvm;
use std::path::Path;
use thiserror::Error;

/// Why a capability is absent, as the probes and `doctor` report it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Lacking {
    /// No `KVM_GET_STATS_FD` (Linux before 5.14).
    #[error("KVM binary stats not offered by this kernel (KVM_CAP_BINARY_STATS_FD, Linux 5.14+)")]
    StatsFd,
    /// A tracepoint is not in this kernel.
    #[error("tracepoint {0} not in this kernel")]
    Tracepoint(String),
    /// The event filter cannot name a function (Linux before 6.3).
    #[error("the kernel's event filter has no .function (Linux 6.3+): {0}")]
    FunctionFilter(String),
}

/// Whether the event filter understands `field.function == symbol`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionFilter {
    /// Not known yet: found by trying it on the first event that needs it.
    Untried,
    /// Accepted by the kernel.
    Yes,
    /// Rejected (the kernel's answer, or a simulated older kernel).
    No(String),
}

/// Whether this kernel's event filter can name `apic_timer_fn`
/// (`function.function == apic_timer_fn`, Linux 6.3+), found by setting it
/// on a disabled event of tracepoint `id` (which has a `function` field) on
/// CPU 0. [`FunctionFilter::Untried`] when the event cannot be opened.
pub fn try_function_filter(id: u64) -> FunctionFilter {
    let Ok(c) = open_disabled(id, None, Some(0), None) else {
        return FunctionFilter::Untried;
    };
    let named = FunctionMatch::Named(APIC_TIMER_FN.into()).filter("function");
    match set_filter(&c, &named) {
        Ok(()) => FunctionFilter::Yes,
        Err(e) => FunctionFilter::No(e.to_string()),
    }
}

/// What the kernel offers the host probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCaps {
    /// KVM binary stats of a vCPU (`KVM_CAP_BINARY_STATS_FD`).
    pub stats_fd: bool,
    /// The `.function` filter suffix.
    pub function_filter: FunctionFilter,
    /// Each tracepoint of [`tracefs::TRACEPOINTS`] with its id, `None` when
    /// this kernel does not have it. Empty when tracefs was not available
    /// (that reason is the probes' own).
    pub tracepoints: Vec<(&'static str, Option<u64>)>,
}

impl HostCaps {
    /// What this host offers: the stats extension from `kvm`, tracepoint ids
    /// under the tracefs `root` (when there is one). The function filter is
    /// left [`FunctionFilter::Untried`].
    pub fn detect(kvm: Option<&Kvm>, root: Option<&Path>) -> HostCaps {
        HostCaps {
            stats_fd: kvm
                .is_some_and(|k| k.check_extension_raw(u64::from(KVM_CAP_BINARY_STATS_FD)) > 0),
            function_filter: FunctionFilter::Untried,
            tracepoints: root.map_or_else(Vec::new, |root| {
                tracefs::TRACEPOINTS
                    .iter()
                    .map(|&tp| (tp, tracefs::event_id(root, tp).ok()))
                    .collect()
            }),
        }
    }

    /// Everything present (tests start from this).
    pub fn full() -> HostCaps {
        HostCaps {
            stats_fd: true,
            function_filter: FunctionFilter::Yes,
            tracepoints: tracefs::TRACEPOINTS
                .iter()
                .enumerate()
                .map(|(i, &tp)| (tp, Some(i as u64 + 1)))
                .collect(),
        }
    }

    /// The id of tracepoint `event`, or why there is none.
    pub fn tracepoint(&self, event: &str) -> Result<u64, Lacking> {
        self.tracepoints
            .iter()
            .find(|(tp, _)| *tp == event)
            .and_then(|(_, id)| *id)
            .ok_or_else(|| Lacking::Tracepoint(event.into()))
    }

    /// Whether KVM binary stats can be opened, or why not.
    pub fn stats(&self) -> Result<(), Lacking> {
        if self.stats_fd {
            Ok(())
        } else {
            Err(Lacking::StatsFd)
        }
    }

    /// Whether a filter may try to name a function (`false` only when it is
    /// known not to work).
    pub fn try_function_filter(&self) -> bool {
        !matches!(self.function_filter, FunctionFilter::No(_))
    }

    /// These capabilities without what `lacks` takes away.
    pub fn without(mut self, lacks: &Lacks) -> HostCaps {
        if lacks.stats_fd {
            self.stats_fd = false;
        }
        if lacks.function_filter {
            self.function_filter = FunctionFilter::No("simulated older kernel".into());
        }
        for (tp, id) in &mut self.tracepoints {
            if lacks.tracepoints.iter().any(|l| l == tp) {
                *id = None;
            }
        }
        self
    }

    /// What this kernel lacks, one entry each (for `doctor` and notes).
    pub fn lacking(&self) -> Vec<Lacking> {
        let mut out = Vec::new();
        if !self.stats_fd {
            out.push(Lacking::StatsFd);
        }
        if let FunctionFilter::No(why) = &self.function_filter {
            out.push(Lacking::FunctionFilter(why.clone()));
        }
        out.extend(
            self.tracepoints
                .iter()
                .filter(|(_, id)| id.is_none())
                .map(|(tp, _)| Lacking::Tracepoint((*tp).into())),
        );
        out
    }
}

/// What a simulated older kernel lacks (tests only; the CLI never sets it).
/// Applied to the real host's [`HostCaps`]: a simulation can take
/// capabilities away, never add them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lacks {
    /// No KVM binary stats.
    pub stats_fd: bool,
    /// No `.function` filter.
    pub function_filter: bool,
    /// Tracepoints (`system/name`) this kernel does not have.
    pub tracepoints: Vec<String>,
}

impl Lacks {
    /// A kernel before 5.14: no KVM binary stats, no `.function` filter.
    pub fn before_5_14() -> Lacks {
        Lacks {
            stats_fd: true,
            function_filter: true,
            tracepoints: Vec::new(),
        }
    }

    /// A kernel from 5.14 to 6.2: KVM binary stats, no `.function` filter.
    pub fn before_6_3() -> Lacks {
        Lacks {
            function_filter: true,
            ..Lacks::default()
        }
    }

    /// Nothing lacking (the real host as it is).
    pub fn is_empty(&self) -> bool {
        *self == Lacks::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_kernel_lacks_what_it_should_with_reasons() {
        let old = HostCaps::full().without(&Lacks::before_5_14());
        assert_eq!(old.stats(), Err(Lacking::StatsFd));
        assert!(!old.try_function_filter());
        assert!(old.tracepoint("timer/hrtimer_start").is_ok());
        let lacking: Vec<String> = old.lacking().iter().map(ToString::to_string).collect();
        assert_eq!(lacking.len(), 2, "{lacking:?}");
        assert!(lacking[0].contains("5.14"), "{lacking:?}");
        assert!(lacking[1].contains("6.3"), "{lacking:?}");

        let mid = HostCaps::full().without(&Lacks::before_6_3());
        assert!(mid.stats().is_ok());
        assert_eq!(mid.lacking().len(), 1);

        let no_tp = HostCaps::full().without(&Lacks {
            tracepoints: vec!["kvm/kvm_hv_timer_state".into()],
            ..Lacks::default()
        });
        assert_eq!(
            no_tp.tracepoint("kvm/kvm_hv_timer_state"),
            Err(Lacking::Tracepoint("kvm/kvm_hv_timer_state".into()))
        );
        assert_eq!(
            no_tp.lacking()[0].to_string(),
            "tracepoint kvm/kvm_hv_timer_state not in this kernel"
        );
        assert!(Lacks::default().is_empty());
        assert_eq!(
            HostCaps::full().without(&Lacks::default()),
            HostCaps::full()
        );
    }

    #[test]
    fn a_simulation_never_adds_what_the_host_lacks() {
        let host = HostCaps {
            stats_fd: false,
            function_filter: FunctionFilter::Untried,
            tracepoints: vec![("kvm/kvm_exit", None)],
        };
        let sim = host.clone().without(&Lacks::before_6_3());
        assert!(!sim.stats_fd);
        assert!(sim.tracepoint("kvm/kvm_exit").is_err());
        assert!(host.try_function_filter());
    }
}
