//! The loop of `top`: every interval, re-scan the host's VMs (new ones
//! picked up, gone ones dropped with their probes), read every vCPU's
//! probes, and hand the rows and notes to the [`TopObserver`] (which prints
//! and writes them; nothing comes back). Rings are drained every
//! [`POLL`] in between, so they do not fill. Ctrl-C (the `stop` flag) or the
//! end of `--duration` ends it cleanly; every line written is already
//! flushed.

use crate::host::clock::monotonic_ns;
use crate::session::top::config::{TopConfig, TopError};
use crate::session::top::discover::{self, process_alive, WatchedVm};
use crate::session::top::observer::TopObserver;
use crate::session::top::sampler::VcpuProbes;
use crate::session::top::setup::{self, Setup};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tickburst_analysis::top::{TopRow, VcpuId, VcpuInterval, VcpuTracker};
use tickburst_analysis::top_fold::OnceNotes;

/// How often rings are drained and the stop flag looked at. Each wake-up
/// of `top` takes a CPU from a vCPU for a moment (in the emulated Intel
/// host 20 wake-ups a second cost an exit-heavy guest 0.25%); a quarter
/// second keeps the fullest ring far from full (a vCPU's callback ring
/// holds ~4000 callbacks, 4 s at 1 kHz; a storm inside one interrupt fills
/// it however often it is drained).
pub const POLL: Duration = Duration::from_millis(250);
const PROC: &str = "/proc";

/// One vCPU followed.
#[derive(Default)]
struct Followed {
    probes: VcpuProbes,
    tracker: VcpuTracker,
}

/// One VM followed.
struct VmState {
    vm: WatchedVm,
    vcpus: BTreeMap<u32, Followed>,
}

/// `top`'s state between intervals.
struct Top<'a, O: TopObserver> {
    cfg: &'a TopConfig,
    setup: Setup,
    vms: BTreeMap<u32, VmState>,
    notes: OnceNotes,
    /// Processes whose fds could not be read, as last said (0 at start).
    denied: usize,
    /// What the scans remember between intervals.
    scans: discover::ScanMemory,
    epoch: u64,
    obs: &'a mut O,
}

/// The note on the processes whose fd links could not be read (VMs among
/// them are not shown), said at start when there are any and again
/// whenever their number changes.
pub fn denied_note(denied: usize, t_s: f64) -> String {
    let what = match denied {
        0 => return format!("every process inspected again at t={t_s:.3} s"),
        1 => "1 process".to_string(),
        n => format!("{n} processes"),
    };
    format!(
        "{what} not inspected at t={t_s:.3} s (permission denied: /proc/PID/fd): \
         run as root to see VMs of other users"
    )
}

/// An error of the observer's output.
fn output(e: impl std::error::Error + Send + Sync + 'static) -> TopError {
    TopError::Output(Box::new(e))
}

impl<O: TopObserver> Top<'_, O> {
    /// A note said once.
    fn note(&mut self, text: &str) {
        if let Some(t) = self.notes.once(text) {
            self.obs.note(&t);
        }
    }

    fn t_s(&self, mono: u64) -> f64 {
        mono.saturating_sub(self.epoch) as f64 / 1e9
    }

    fn drain(&mut self) {
        if let Ok(sw) = self.setup.sw.as_mut() {
            sw.learner.drain();
        }
        for f in self.vms.values_mut().flat_map(|v| v.vcpus.values_mut()) {
            f.probes.drain();
        }
    }

    /// Re-scans: drops VMs that are gone (or whose pid was reused), adds
    /// new ones, maps threads, opens what can be opened.
    fn rescan(&mut self, now: u64) -> Result<(), TopError> {
        let known: BTreeMap<u32, WatchedVm> =
            self.vms.iter().map(|(p, s)| (*p, s.vm.clone())).collect();
        let scan = discover::scan(
            Path::new(PROC),
            self.cfg.pids.as_deref(),
            &known,
            &mut self.scans,
            discover::read_vm,
        )?;
        if scan.denied != self.denied {
            self.denied = scan.denied;
            let t = self.t_s(now);
            self.obs.note(&denied_note(scan.denied, t));
        }
        let found = scan.vms;
        let gone: Vec<u32> = self
            .vms
            .iter()
            .filter(|(pid, s)| {
                found
                    .get(pid)
                    .is_none_or(|f| f.start_time != s.vm.start_time)
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            if let Some(s) = self.vms.remove(&pid) {
                let t = self.t_s(now);
                self.obs
                    .note(&format!("VM pid {pid} ({}) gone at t={t:.3} s", s.vm.name));
                self.obs.vm_gone(pid, &s.vm.name);
            }
        }
        for (pid, vm) in found {
            let before = self.vms.get(&pid).map(|s| s.vm.vcpus.len());
            if before != Some(vm.vcpus.len()) {
                let t = self.t_s(now);
                self.obs.note(&format!(
                    "VM pid {pid} ({}) at t={t:.3} s: {} vCPU(s)",
                    vm.name,
                    vm.vcpus.len()
                ));
            }
            match self.vms.get_mut(&pid) {
                Some(state) => state.vm = vm,
                None => {
                    self.obs.vm_seen(pid, &vm.name, vm.vcpus.len());
                    let vcpus = BTreeMap::new();
                    self.vms.insert(pid, VmState { vm, vcpus });
                }
            }
        }
        if let Ok(sw) = self.setup.sw.as_mut() {
            let tids: Vec<u32> = self
                .vms
                .values()
                .flat_map(|s| s.vm.vcpus.values().filter_map(|v| v.tid))
                .collect();
            sw.learner.retain(|tid| {
                tids.contains(&tid) || Path::new(PROC).join(tid.to_string()).exists()
            });
        }
        let mut errors = Vec::new();
        for state in self.vms.values_mut() {
            for (n, info) in &state.vm.vcpus {
                let f = state.vcpus.entry(*n).or_default();
                let Some(tid) = info.tid else { continue };
                f.probes.open_thread(tid, &self.setup.threads);
                if let Some(e) = f.probes.thread_error.take() {
                    errors.push(format!("vCPU thread probes of pid {}: {e}", state.vm.pid));
                }
                if let Ok(sw) = self.setup.sw.as_ref() {
                    match sw.learner.hrtimer_of(tid) {
                        Some(h) if f.probes.hrtimer() != Some(h) => {
                            if let Err(e) = f.probes.open_sw(sw.ids, h, sw.function, sw.cpus) {
                                errors.push(format!("sw callbacks of pid {}: {e}", state.vm.pid));
                            }
                        }
                        _ => {}
                    }
                }
            }
            state.vcpus.retain(|n, _| state.vm.vcpus.contains_key(n));
        }
        for e in errors {
            self.note(&e);
        }
        Ok(())
    }

    /// The rows of the interval `[start, end)` (CLOCK_MONOTONIC).
    fn rows(&mut self, start: u64, end: u64) -> Vec<TopRow> {
        let mut rows = Vec::new();
        for state in self.vms.values_mut() {
            for (n, f) in state.vcpus.iter_mut() {
                let r = f.probes.read(self.epoch);
                let id = VcpuId {
                    pid: state.vm.pid,
                    name: state.vm.name.clone(),
                    vcpu: *n,
                    tid: state.vm.vcpus.get(n).and_then(|v| v.tid),
                };
                let m = VcpuInterval {
                    start_ns: start.saturating_sub(self.epoch),
                    len_ns: end.saturating_sub(start).max(1),
                    hv: r.hv,
                    sw: r.sw,
                    sw_lost: r.sw_lost,
                    runs: r.runs,
                    irq: r.irq,
                    left_hv: r.left_hv,
                };
                rows.push(f.tracker.row(&id, &m, self.cfg.max_run));
            }
        }
        rows
    }
}

/// Runs `top` until `stop`, the end of `--duration`, or (with `--pid`) the
/// last named VM gone. `obs` gets every note and row, and is told when the
/// table starts and when `top` ends normally.
pub fn run<O: TopObserver>(
    cfg: &TopConfig,
    stop: &AtomicBool,
    obs: &mut O,
) -> Result<(), TopError> {
    let setup = setup::open(cfg.irq)?;
    obs.start(setup.columns()).map_err(output)?;
    let epoch = monotonic_ns();
    let mut top = Top {
        cfg,
        setup,
        vms: BTreeMap::new(),
        notes: OnceNotes::default(),
        denied: 0,
        scans: discover::ScanMemory::default(),
        epoch,
        obs,
    };
    top.note(&format!(
        "tickburst top: every {:.3} s; Ctrl-C ends",
        cfg.interval_ns as f64 / 1e9
    ));
    for n in top.setup.notes() {
        top.note(&n);
    }
    top.rescan(epoch)?;
    if top.vms.is_empty() {
        top.note("no KVM VM found yet (re-scanned every interval)");
    }
    top.obs.table();
    let end_at = cfg.duration_ns.map(|d| epoch.saturating_add(d));
    let mut start = epoch;
    while !stop.load(Ordering::Relaxed) {
        let mut next = start.saturating_add(cfg.interval_ns);
        if let Some(e) = end_at {
            next = next.min(e);
        }
        let mut now = monotonic_ns();
        while now < next && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(POLL.min(Duration::from_nanos(next - now)));
            top.drain();
            now = monotonic_ns();
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let gone_before: Vec<u32> = top.vms.keys().copied().collect();
        top.rescan(now)?;
        // VMs that were there for the whole interval (new ones start next).
        let mut rows = top.rows(start, now);
        rows.retain(|r| gone_before.contains(&r.pid));
        if let Some(r) = rows.iter().find(|r| r.sw_lost > 0) {
            let text = format!(
                "host events lost: the rings got fewer sw callbacks than the counters counted \
                 ({} missing for pid {} vCPU {} at t={:.3} s; flag `lost`): sw/s is exact (counters); \
                 there run is a lower bound and late_ms is not shown",
                r.sw_lost, r.pid, r.vcpu, r.t_s
            );
            if top.notes.once("lost").is_some() {
                top.obs.note(&text);
            }
        }
        top.obs.rows(&rows).map_err(output)?;
        start = now;
        if end_at.is_some_and(|e| now >= e) {
            break;
        }
        if let Some(pids) = &cfg.pids {
            if !pids.iter().any(|&p| process_alive(p)) {
                top.note("every process named by --pid has exited");
                break;
            }
        }
    }
    top.obs.finish().map_err(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_on_processes_not_inspected() {
        let n = denied_note(2, 0.0);
        assert!(
            n.starts_with(
                "2 processes not inspected at t=0.000 s (permission denied: /proc/PID/fd)"
            ) && n.ends_with("run as root to see VMs of other users"),
            "{n}"
        );
        assert!(denied_note(1, 3.5).starts_with("1 process not inspected at t=3.500 s"));
        assert_eq!(
            denied_note(0, 4.0),
            "every process inspected again at t=4.000 s"
        );
    }
}
