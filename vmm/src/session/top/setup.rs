//! What `top` can measure on this host, decided once at start: each signal
//! is either usable or comes with the reason it is not (printed once, its
//! column `n/a`). No permission, or neither timer back end measurable: an
//! error (exit 2).

use crate::host::hv_timer::HvExpiries;
use crate::host::kprobe_event;
use crate::host::perf::PerfError;
use crate::host::probes::online_cpus;
use crate::host::timer_sampler::EventIds;
use crate::host::tracefs::{self, TracefsError, TracefsMount};
use crate::session::top::config::TopError;
use crate::session::top::discover::process_alive;
use crate::session::top::sampler::{Learner, ThreadIds};
use std::path::Path;
use thiserror::Error;

/// Comma-separated tracepoints (`system/name`) `top` treats as missing, as
/// on an older kernel (tests of the degraded paths; read only in builds with
/// the `fault-injection` feature).
#[cfg(feature = "fault-injection")]
pub const SIMULATE_MISSING_ENV: &str = "TICKBURST_SIMULATE_MISSING_TRACEPOINTS";
/// `CAP_SYS_ADMIN` and `CAP_PERFMON` bits of `CapEff`.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;

/// Which columns this host can measure at all: an unmeasurable column says
/// `n/a` (its reason is noted once), one still being learned `-`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Columns {
    /// hv expiries.
    pub hv: bool,
    /// sw callbacks.
    pub sw: bool,
    /// Accepted interrupts.
    pub irq: bool,
    /// Times KVM left the hv timer.
    pub left_hv: bool,
}

/// The sw side: what every vCPU's callback rings need.
pub struct SwSetup {
    /// Timer tracepoint ids and offsets.
    pub ids: EventIds,
    /// Address of `apic_timer_fn`.
    pub function: u64,
    /// Host-wide learner of the vCPU threads' hrtimers.
    pub learner: Learner,
    /// CPUs to open a ring on.
    pub cpus: usize,
}

/// The signals of this host.
pub struct Setup {
    _tracefs: TracefsMount,
    /// sw callbacks, or why not.
    pub sw: Result<SwSetup, String>,
    /// The per-thread signals.
    pub threads: ThreadIds,
    /// Kprobe events of tickburst processes that are gone, removed at start
    /// (or not: why).
    stale: Vec<(String, std::io::Result<()>)>,
}

/// Whether `CapEff` of a `/proc/<pid>/status` text has `bit`.
pub fn cap_effective(status: &str, bit: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps >> bit & 1 == 1)
}

#[cfg(feature = "fault-injection")]
fn hidden(event: &str) -> bool {
    std::env::var(SIMULATE_MISSING_ENV)
        .is_ok_and(|v| v.split(',').any(|e| e.trim() == event || e.trim() == "all"))
}

/// The id of `event`, or why not (also a simulated absence in a
/// `fault-injection` build).
fn event_id(root: &Path, event: &str) -> Result<u64, TracefsError> {
    #[cfg(feature = "fault-injection")]
    if hidden(event) {
        return Err(TracefsError::NoEvent {
            event: event.into(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("simulated by {SIMULATE_MISSING_ENV}"),
            ),
        });
    }
    tracefs::event_id(root, event)
}

/// Why the sw callbacks cannot be measured.
#[derive(Debug, Error)]
enum SwError {
    /// A tracepoint, field or symbol is missing (tracefs, kallsyms).
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    /// A perf event failed (perhaps for want of privilege).
    #[error(transparent)]
    Perf(#[from] PerfError),
}

fn open_sw(root: &Path) -> Result<SwSetup, SwError> {
    for event in [
        "timer/hrtimer_start",
        "timer/hrtimer_expire_entry",
        "timer/hrtimer_expire_exit",
    ] {
        event_id(root, event)?;
    }
    let ids = EventIds::read(root)?;
    let hrtimer_at = tracefs::field_offset(root, "timer/hrtimer_start", "hrtimer")?;
    let function = tracefs::apic_timer_fn_address()?;
    let cpus = online_cpus()
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let learner = Learner::open(ids.start, function, hrtimer_at, cpus)?;
    Ok(SwSetup {
        ids,
        function,
        learner,
        cpus,
    })
}

/// Raises the soft limit of open files to the hard one: every vCPU takes
/// three perf events per CPU plus three on its thread.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the rlimit struct we own;
    // raising the soft limit up to the hard limit needs no privilege.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Why `irq/s` is not counted without `--irq`.
pub const IRQ_OFF: &str = "not counted (top --irq counts it: a counter on every vCPU thread, \
     which exit-heavy guests pay for)";

/// Finds out what this host can measure; the interrupts the guests accept
/// only if `irq` (`--irq`).
pub fn open(irq: bool) -> Result<Setup, TopError> {
    // SAFETY: geteuid has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !root_user && !cap_effective(&status, CAP_PERFMON) && !cap_effective(&status, CAP_SYS_ADMIN)
    {
        return Err(TopError::Permission(
            "perf events on tracepoints host-wide need root or CAP_PERFMON (this process has neither)"
                .into(),
        ));
    }
    raise_fd_limit();
    let tracefs =
        tracefs::locate_or_mount(root_user).map_err(|e| TopError::CannotMeasure(e.to_string()))?;
    let root = tracefs.root.clone();
    let sw = match open_sw(&root) {
        Err(SwError::Perf(e)) if e.is_denied() => return Err(TopError::Permission(e.to_string())),
        sw => sw.map_err(|e| e.to_string()),
    };
    let hv_possible =
        crate::host::hv_timer::hv_timer_possible(crate::host::facts::kvm_backend().as_deref());
    let mut stale = Vec::new();
    let threads = ThreadIds {
        hv: hv_possible.clone().and_then(|()| {
            stale = kprobe_event::remove_stale(&root, process_alive);
            HvExpiries::choose(
                Some(&root),
                event_id(&root, "kvm/kvm_exit").map_err(|e| e.to_string()),
            )
        }),
        accept_irq: if irq {
            event_id(&root, "kvm/kvm_apic_accept_irq").map_err(|e| e.to_string())
        } else {
            Err(IRQ_OFF.into())
        },
        left_hv: hv_possible.and_then(|()| {
            let id = event_id(&root, "kvm/kvm_hv_timer_state").map_err(|e| e.to_string())?;
            // The filter's field (named in the event's format).
            tracefs::field_offset(&root, "kvm/kvm_hv_timer_state", "hv_timer_in_use")
                .map_err(|e| e.to_string())?;
            Ok(id)
        }),
    };
    if let (Err(sw), Err(hv)) = (&sw, &threads.hv) {
        return Err(TopError::CannotMeasure(format!(
            "sw callbacks: {sw}; hv expiries: {hv}"
        )));
    }
    Ok(Setup {
        _tracefs: tracefs,
        sw,
        threads,
        stale,
    })
}

impl Setup {
    /// Which columns can show figures.
    pub fn columns(&self) -> Columns {
        Columns {
            hv: self.threads.hv.is_ok(),
            sw: self.sw.is_ok(),
            irq: self.threads.accept_irq.is_ok(),
            left_hv: self.threads.left_hv.is_ok(),
        }
    }

    /// One note per signal this host cannot measure, with the reason.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let mut add = |what: &str, r: Result<(), &String>| {
            if let Err(why) = r {
                notes.push(format!("{what} n/a: {why}"));
            }
        };
        add("hv/s", self.threads.hv.as_ref().map(drop));
        add("sw/s", self.sw.as_ref().map(drop));
        add("irq/s", self.threads.accept_irq.as_ref().map(drop));
        add("left-hv", self.threads.left_hv.as_ref().map(drop));
        if let Ok(hv) = &self.threads.hv {
            notes.push(format!("hv/s counted on {}: {}", hv.source(), hv.cost()));
        }
        for (name, removed) in &self.stale {
            notes.push(match removed {
                Ok(()) => format!("kprobe event {name} of a tickburst that is gone: removed"),
                Err(e) => {
                    format!("kprobe event {name} of a tickburst that is gone: not removed: {e}")
                }
            });
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_from_status() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert!(cap_effective(root, CAP_PERFMON) && cap_effective(root, CAP_SYS_ADMIN));
        let nobody = "CapEff:\t0000000000000000\n";
        assert!(!cap_effective(nobody, CAP_PERFMON));
        let perfmon = format!("CapEff:\t{:016x}\n", 1u64 << CAP_PERFMON);
        assert!(cap_effective(&perfmon, CAP_PERFMON));
        assert!(!cap_effective("garbage", CAP_PERFMON));
    }

    #[test]
    #[cfg(feature = "fault-injection")]
    fn a_hidden_tracepoint_is_missing_with_the_reason() {
        // The variable is read by this process only in this test.
        std::env::set_var(SIMULATE_MISSING_ENV, "kvm/kvm_exit, timer/x");
        let e = event_id(Path::new("/nonexistent"), "kvm/kvm_exit")
            .unwrap_err()
            .to_string();
        assert!(e.contains("simulated"), "{e}");
        let e = event_id(Path::new("/nonexistent"), "kvm/kvm_entry")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not found") && !e.contains("simulated"), "{e}");
        std::env::remove_var(SIMULATE_MISSING_ENV);
    }
}
