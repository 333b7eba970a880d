//! Older kernels degrade, never fail: a real run on this host with the host
//! probes deciding from this host's capabilities less what an older kernel
//! lacks ([`tickburst::host::caps::Lacks`]). Every column that needs what is
//! missing says n/a, the reason is in the record and in the run's
//! `# host probes missing` note, and the rest still counts.

use std::time::Instant;
use tickburst::host::caps::Lacks;
use tickburst::host::probes::ProbeMode;
use tickburst::host::tracefs;
use tickburst::names::{Apic, BackendKind, Outcome, Probe, Scope};
use tickburst::record::Record;
use tickburst::session::config::{PausePlan, RunConfig};
use tickburst::session::observer::RunObserver;
use tickburst::session::run::run;
use tickburst_testkit::kvm_or_skip;
use tickburst_tests::{one_pause_config, MS};

/// Keeps the progress notes.
#[derive(Default)]
struct Notes(Vec<String>);

impl RunObserver for Notes {
    fn note(&mut self, text: &str) {
        self.0.push(text.to_string());
    }
}

/// A short run without pauses, as on a kernel that lacks `lacks`.
fn run_as(lacks: Lacks, mode: ProbeMode) -> Result<(Record, Vec<String>), String> {
    let cfg = RunConfig {
        warmup_ns: 400 * MS,
        plan: PausePlan::Run {
            pause_ns: 0,
            cycles: 0,
        },
        observe_ns: 0,
        interval_ns: 100 * MS,
        host_probes: mode,
        kernel_lacks: lacks,
        ..one_pause_config(Apic::X2Apic)
    };
    let mut notes = Notes::default();
    run(&cfg, Instant::now(), None, &mut notes)
        .map(|out| (out.record, notes.0))
        .map_err(|e| e.to_string())
}

/// Whether this process may open tracepoints (root or CAP_PERFMON).
fn perf_allowed() -> bool {
    tracefs::locate_or_mount(tickburst::host::hv_timer::is_root())
        .ok()
        .and_then(|t| tracefs::event_id(&t.root, "timer/hrtimer_start").ok())
        .is_some_and(|id| tickburst::host::hv_timer::can_open(id).is_ok())
}

#[test]
fn before_5_14_without_stats_nor_function_filter_the_stats_columns_say_n_a() {
    let Some(_vm) = kvm_or_skip("before_5_14_stats_columns_say_n_a") else {
        return;
    };
    let (r, notes) = run_as(Lacks::before_5_14(), ProbeMode::Auto).expect("run degrades");
    assert_eq!(r.outcome, Outcome::Completed);
    let probes = r.host.probes.as_ref().expect("probe report");
    let stats = probes
        .missing
        .iter()
        .find(|m| m.probe == Probe::KvmStats)
        .unwrap_or_else(|| panic!("kvm_stats not missing: {probes:?}"));
    assert!(
        stats.reason.contains("5.14") && stats.inapplicable,
        "{stats:?}"
    );
    let note = notes
        .iter()
        .find(|n| n.starts_with("host probes missing"))
        .unwrap_or_else(|| panic!("no missing note: {notes:?}"));
    assert!(
        note.contains("kvm_stats (KVM binary stats not offered"),
        "{note}"
    );
    for w in &r.windows {
        let Some(h) = &w.host else { continue };
        assert_eq!(
            (h.irq_injections.get(), h.exits.get(), h.halt_exits.get()),
            (None, None, None),
            "{w:?}"
        );
        let line = tickburst::output::table::window_line(w);
        assert!(line.matches("n/a").count() >= 3, "{line}");
    }
    // Without `.function`, sw_timer filters on the address from
    // /proc/kallsyms and still counts our vCPU's callbacks.
    if perf_allowed() {
        assert!(probes.enabled.contains(&Probe::SwTimer), "{probes:?}");
        assert_eq!(probes.sw_timer_scope, Some(Scope::Vcpu));
        let sw: u64 = r
            .windows
            .iter()
            .filter_map(|w| w.host.as_ref()?.sw_timer.get())
            .sum();
        assert!(sw > 200, "sw_timer counted {sw} in 400 ms at 1 ms");
    }
}

#[test]
fn missing_tracepoints_say_n_a_with_the_reason_and_on_mode_still_runs() {
    let Some(_vm) = kvm_or_skip("missing_tracepoints_say_n_a") else {
        return;
    };
    let lacks = Lacks {
        tracepoints: vec![
            "kvm/kvm_hv_timer_state".into(),
            "timer/hrtimer_expire_exit".into(),
        ],
        ..Lacks::before_6_3()
    };
    // `on` fails only for what this host should have: a probe whose
    // tracepoint the kernel lacks does not count.
    let (r, _notes) = run_as(lacks, ProbeMode::On).expect("--host-probes on degrades");
    let probes = r.host.probes.as_ref().expect("probe report");
    let reason = |probe: Probe| {
        probes
            .missing
            .iter()
            .find(|m| m.probe == probe)
            .unwrap_or_else(|| panic!("{probe} not missing: {probes:?}"))
    };
    let sw = reason(Probe::SwTimer);
    assert!(
        sw.reason == "tracepoint timer/hrtimer_expire_exit not in this kernel" && sw.inapplicable,
        "{sw:?}"
    );
    let hv_state = reason(Probe::HvState);
    assert!(
        hv_state
            .reason
            .contains("kvm/kvm_hv_timer_state not in this kernel"),
        "{hv_state:?}"
    );
    let backend = r.host.timer_backend.as_ref().expect("timer back end");
    assert_eq!(backend.kind, BackendKind::Unknown, "{backend:?}");
    assert!(
        backend
            .reason
            .as_deref()
            .is_some_and(|why| why.contains("kvm_hv_timer_state")),
        "{backend:?}"
    );
    for w in r.windows.iter().filter_map(|w| w.host.as_ref()) {
        assert_eq!(w.sw_timer, None, "{w:?}");
        assert!(w.irq_injections.is_some(), "stats still count: {w:?}");
    }
}
