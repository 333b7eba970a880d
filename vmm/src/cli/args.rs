//! The command line: the commands and the arguments of the ones that boot a
//! VM. Every default comes from [`crate::session::config`] (or the
//! analysis crate), every mode name from the analysis crate's
//! [`tickburst_analysis::names`].

use crate::cli::arg_limits::{shown, shown_list};
use crate::cli::name_args::parser;
use crate::cli::report_args::{AnalyzeArgs, CheckArgs, DoctorArgs, ModelArgs, ThresholdArgs};
use crate::cli::top_args::TopArgs;
use crate::session::config::{
    DEFAULT_APIC, DEFAULT_HOST_PROBES, DEFAULT_IDLE, DEFAULT_INTERVAL_NS, DEFAULT_OBSERVE_NS,
    DEFAULT_PAUSE_METHOD, DEFAULT_PAUSE_NS, DEFAULT_PERIOD_NS, DEFAULT_SUMMARY_EVERY_NS,
    DEFAULT_SWEEP_PAUSES_NS, DEFAULT_TIMER, DEFAULT_VCPUS, DEFAULT_WARMUP_NS,
};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tickburst_analysis::names::{Apic, Idle, PauseMethod, ProbeMode, Timer};

/// tickburst: what happens to a guest's periodic LAPIC timer when its vCPU
/// is paused and resumed.
#[derive(Debug, Parser)]
#[command(name = "tickburst", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot the built-in guest, pause and resume its vCPU, measure the burst.
    ///
    /// Prints one line per --interval while the run goes (guest ticks,
    /// expected ticks and, with host probes, the host's sw and hv timer
    /// callbacks, KVM's irq_injections, exits and halt_exits of the vCPU),
    /// then a summary: the steady rate, each pause's figures, the timer back
    /// end, the clock check and the verdict. Lines starting with `#` are
    /// progress notes.
    ///
    /// Durations take a unit: ns, us, ms, s, m, h, d (200us, 1.5s, 51d). A
    /// run's plan may last at most what a record holds: 500000 report windows
    /// at --interval, and 7 days (exit 2 otherwise).
    ///
    /// Exit codes: 0 the run completed, whatever the verdict (the verdict is
    /// in the summary and the record); 2 bad flags or a runtime error, in one
    /// line on stderr (also a VMM killed by a signal); 125 KVM is not usable
    /// here; 130 Ctrl-C or SIGTERM (the vCPU is resumed, the partial summary
    /// printed and --json written with "outcome": "interrupted").
    Run(RunArgs),
    /// Print what this host can show (KVM, timer back end, probes).
    ///
    /// One line per item: ok or --, what was checked, what was found, what
    /// follows. Kernel release, KVM API version, in-kernel and split
    /// irqchip, CPU vendor, KVM back end, whether the hv timer
    /// (VMX-preemption timer) can be used ("the stall path cannot occur
    /// here" where not), the kvm parameters that matter, tracefs (mounted,
    /// or mounted for the check in a mount namespace of its own), the
    /// tracepoints tickburst needs, whether this process may open them (root,
    /// CAP_PERFMON or perf_event_paranoid), KVM binary stats, whether an
    /// event filter can name a function, the address of apic_timer_fn
    /// (only where the filter cannot name it), and a last line `kernel
    /// lacks` naming all this kernel does not have and which column then
    /// says n/a. Exit code 0.
    Doctor(DoctorArgs),
    /// Judge a saved run (RUN.json) or a bpftrace log again, with any thresholds.
    ///
    /// A record (from run, sweep or watch --json) is validated, then its
    /// windows, steady state, pause figures and verdict are recomputed from
    /// its samples with the same code as the live run. Records of format
    /// versions 2 and 3 are read; a record of another format or version, one
    /// larger than 488 MiB, empty, truncated, not JSON or with a field out
    /// of range is refused with exit 2 and one line naming the field.
    ///
    /// Exit codes as for check: 0 ok, 1 burst, 125 nothing exercised, 2 an
    /// input that cannot be read or judged.
    Analyze(AnalyzeArgs),
    /// Regression verdict over a small matrix: exit 0 ok, 1 burst, 125 not
    /// exercised, 2 error (for `git bisect run`).
    ///
    /// Runs one VM at a time, each with 500 ms warm-up, one pause of --pause
    /// and 1.1 s of observation, host probes auto (about 24 s in all). The
    /// cases, without the hv timer: p1ms_hlt_kick, p1ms_spin_kick,
    /// pmin_spin_kick (the host's kvm.min_timer_period_us), p1ms_hlt_sigstop,
    /// pmin_spin_sigstop. With the hv timer (kvm_intel, preemption_timer=Y)
    /// the two pmin cases become p10ms_spin_kick and p10ms_spin_sigstop: at
    /// the host minimum a slow host's own exit handling can overrun the
    /// period and an unfixed kernel falls back before any pause.
    ///
    /// Each case's verdict, by these rules in order: burst if the host ran
    /// more than --max-host-ratio times the nominal timer callbacks in the
    /// first second after resume, or the guest took more than
    /// --max-guest-ratio times its nominal ticks in the first 100 ms, or KVM
    /// went from the hv to the sw timer during the pause or the second after
    /// it and stayed there; not exercised if the host side was not seen or
    /// the hv timer was not in use right before the pause; ok otherwise. A
    /// fallback outside every pause's span is its own burst case
    /// (<name>_outside_pauses).
    ///
    /// Exit codes: 0 no burst and at least one case ok (not exercised cases
    /// are skips, as in kselftest); 1 any burst; 125 nothing could be
    /// exercised, or KVM is unusable; 2 a case could not run, or bad flags;
    /// 130 Ctrl-C (the partial verdict is printed).
    Check(CheckArgs),
    /// Several pause lengths in one VM; fits burst size against pause length.
    ///
    /// Runs the pauses as cycles of one VM (no reboot) and prints a row per
    /// pause (guest ticks during and in the first second, guest burst ratio,
    /// host callbacks during and in the first second, host ratio, verdict)
    /// and a least-squares line of the burst (host callbacks in the first
    /// second after resume) against the pause length: its slope in callbacks
    /// per paused second beside the nominal rate, and R^2. A slope over
    /// nominal above 0.5 with R^2 > 0.9 is the stall signature; below 0.1 is
    /// flat (a fixed kernel or a sw-only host). --observe is at least 1.1 s.
    /// Exit codes as for run.
    Sweep(SweepArgs),
    /// Predict the burst of an unpatched and a patched kernel after a stall.
    ///
    /// After a stall of --lag, an unpatched kernel runs apic_timer_fn inside
    /// one hard interrupt while its target is in the past; each callback
    /// moves the target one period while `cost` of real time passes, so
    /// n = ceil(lag / (period - cost)) callbacks take n * cost, never
    /// finishing when cost >= period. Longer than --watchdog is a hard
    /// LOCKUP. A patched kernel runs 1 callback. Exit 0, or 2 for bad flags
    /// or a --cost-from record without a measurable run.
    Model(ModelArgs),
    /// Boot the guest and run until Ctrl-C or --duration, reporting every
    /// pause caused from outside (kill -STOP, cgroup freeze, pinning).
    ///
    /// Prints the VMM's pid, the vCPU thread's tid and commands to try. Every
    /// gap of at least 5 periods in the guest's ticks is a detected pause,
    /// from one period after the last tick before it to the first tick after
    /// it; `vmm_stalled` says whether the VMM's own loop stalled too (the
    /// whole process was stopped or frozen) or only the vCPU. One second
    /// after each resume the same per-pause summary as run's is printed.
    /// watch never pauses by itself. Exit codes as for run (Ctrl-C: 0).
    Watch(WatchArgs),
    /// Every KVM VM on this host, live: hv/sw timer rates per vCPU, back end,
    /// longest run of callbacks in one interrupt, fallbacks (root or CAP_PERFMON).
    ///
    /// Whoever started the VM (QEMU, libvirt, another tickburst); read-only
    /// towards the VMs (perf events on tracepoints and one kprobe, closed at
    /// exit; the kprobe is an event tickburst/hv_expired_PID_N in tracefs
    /// kprobe_events, removed at exit, a killed top's by the next one).
    /// One line per interval and vCPU. Columns: hv/s hv timer expiries (a kprobe on
    /// kvm_lapic_expired_hv_timer, else kvm:kvm_exit, which runs on every VM
    /// exit: doctor says which; n/a where no hv timer can run: AMD,
    /// kvm_intel.preemption_timer=N, other back ends);
    /// sw/s apic_timer_fn callbacks of the vCPU's hrtimer (`-` while it is
    /// being learned); irq/s LAPIC interrupts the guest accepted (with --irq); backend hv,
    /// sw, mixed, idle or unknown; left-hv how often KVM left the hv timer
    /// (kvm:kvm_hv_timer_state filtered on hv_timer_in_use == 0: at every
    /// HLT of a halting vCPU, once at a fall-back; the hv timer's re-arms
    /// never reach top; n/a where no hv timer can run); run the most callbacks in one hard interrupt (1 when
    /// healthy, thousands after a stall on an unfixed kernel) and late_ms
    /// how late they were. Flags: fell-back@T (seen on hv, then on sw for 3
    /// intervals), runN>M@T (a run over --max-run), lost (the rings got fewer
    /// callbacks than the counters: sw/s stays exact, run is a lower bound),
    /// learning.
    ///
    /// VMs are found by their anon_inode:kvm-vm fds, so without root another
    /// user's VM cannot be seen (a `#` line counts the processes not
    /// inspected). Exit codes: 0 ended by --duration, Ctrl-C/SIGTERM or
    /// every --pid gone; 2 with one line: bad flag, no permission, or nothing
    /// measurable on this host.
    Top(TopArgs),
}

impl Command {
    /// Whether the command reads tracefs (host probes, `doctor`, `top`): on
    /// a host without tracefs mounted it is mounted privately first
    /// ([`crate::host::tracefs::mount_private`]).
    pub fn uses_tracefs(&self) -> bool {
        match self {
            Command::Run(a) => a.vm.guest.host_probes != ProbeMode::Off,
            Command::Sweep(a) => a.vm.guest.host_probes != ProbeMode::Off,
            Command::Watch(a) => a.guest.host_probes != ProbeMode::Off,
            Command::Check(_) | Command::Doctor(_) | Command::Top(_) => true,
            Command::Analyze(_) | Command::Model(_) => false,
        }
    }

    /// Whether the command pauses the whole VMM process, so it must run
    /// under the [`crate::pause::supervisor`].
    pub fn needs_supervisor(&self) -> bool {
        match self {
            Command::Run(a) => a.vm.pause_method.stops_whole_process(),
            Command::Sweep(a) => a.vm.pause_method.stops_whole_process(),
            Command::Check(_) => true,
            _ => false,
        }
    }
}

/// Arguments of `tickburst run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Length of each pause (1ms to 1h).
    ///
    /// With kick the pause lasts from when the vCPU thread left KVM_RUN to
    /// when it re-entered; with sigstop and freeze from when every thread of
    /// the VMM shows stopped (or the cgroup reports frozen) to right before
    /// the SIGCONT or thaw.
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(DEFAULT_PAUSE_NS))]
    pub pause: String,
    /// Number of pause/resume cycles (0 to 1000; 0 runs without pausing).
    #[arg(long, default_value_t = crate::session::config::DEFAULT_CYCLES)]
    pub cycles: u32,
    /// Guest, timer and output.
    #[command(flatten)]
    pub vm: VmArgs,
}

/// Arguments of `tickburst sweep`.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// Pause lengths, comma-separated, run in this order in one VM (2 to
    /// 1000 lengths, each 1ms to 1h).
    #[arg(long, allow_hyphen_values = true, default_value_t = shown_list(DEFAULT_SWEEP_PAUSES_NS))]
    pub pauses: String,
    /// Guest, timer and output.
    #[command(flatten)]
    pub vm: VmArgs,
}

/// Arguments of `tickburst watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// Stop after this long (default: run until Ctrl-C).
    ///
    /// At most what a record holds at --interval (500000 report windows, 7
    /// days); without --duration watch ends by itself there (5.8 days at 1s
    /// windows, 7 days from 2s on) and says so in its first line.
    #[arg(long, allow_hyphen_values = true)]
    pub duration: Option<String>,
    /// Guest, timer and output.
    #[command(flatten)]
    pub guest: GuestArgs,
}

/// Arguments shared by `run` and `sweep`: the phases, the pause method, and
/// the guest.
#[derive(Debug, Clone, clap::Args)]
pub struct VmArgs {
    /// Time the timer runs before the first pause (0 to 1h).
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(DEFAULT_WARMUP_NS))]
    pub warmup: String,
    /// How to pause: kick the vCPU out of KVM_RUN, SIGSTOP the whole VMM
    /// process, or freeze its cgroup.
    ///
    /// kick is what QEMU `stop` and `virsh suspend` do: immediate_exit is set
    /// and the vCPU thread is signalled, so KVM_RUN returns, and it stays
    /// parked outside KVM_RUN for the pause. sigstop is `kill -STOP` / `kill
    /// -CONT` of the VMM, as in the bug report. freeze is how container
    /// runtimes pause: the VMM moves into a cgroup made for the run
    /// (tickburst-<pid>), frozen and thawed through cgroup v2 cgroup.freeze,
    /// else v1 freezer.state, and removed afterwards; where neither can be
    /// written the run exits 2 with the reason. sigstop and freeze stop the
    /// VMM itself, so tickburst runs the VMM as its child and pauses it from
    /// outside; the VMM dies with it, and a VMM killed by a signal ends the
    /// run with exit 2 and one line. While the VMM is stopped no host counts
    /// can be read: a report window that begins or ends inside such a pause
    /// shows n/a in the host columns.
    #[arg(long, default_value_t = DEFAULT_PAUSE_METHOD, value_parser = parser(PauseMethod::ALL))]
    pub pause_method: PauseMethod,
    /// Observation after each resume (0 to 1h).
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(DEFAULT_OBSERVE_NS))]
    pub observe: String,
    /// Which vCPUs a kick pause stops: all, or indices and ranges (1, 0,2,
    /// 1-3). sigstop and freeze always stop all.
    ///
    /// With sigstop and freeze only `all` is accepted. The first paused vCPU
    /// is the subject: the table, the host columns, the pause figures, the
    /// verdict and the picture are its. A pause of several vCPUs asks them
    /// all to leave KVM_RUN at once, lasts --pause from when the subject
    /// left, and releases them together.
    #[arg(long, default_value = "all")]
    pub pause_vcpus: String,
    /// Guest, timer and output.
    #[command(flatten)]
    pub guest: GuestArgs,
}

/// Arguments shared by `run`, `sweep` and `watch`: the guest, its timer and
/// the output.
#[derive(Debug, Clone, clap::Args)]
pub struct GuestArgs {
    /// LAPIC timer period (e.g. 1ms, 200us); from kvm.min_timer_period_us to 1s.
    ///
    /// KVM clamps shorter periods, so the host's kvm.min_timer_period_us is
    /// the shortest accepted (200us where it cannot be read).
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(DEFAULT_PERIOD_NS))]
    pub period: String,
    /// Number of vCPUs (1 to 64, or what KVM allows), each with its own
    /// LAPIC timer, tick ring and row in the per-vCPU table.
    ///
    /// More than KVM_CAP_MAX_VCPUS exits 2 naming the limit. More vCPUs than
    /// host CPUs is allowed and said in a note: the vCPUs then share CPUs and
    /// take their ticks late or coalesced. Each line of the table gains every
    /// vCPU's ticks and their sum after a `|`.
    #[arg(long, allow_hyphen_values = true, default_value_t = DEFAULT_VCPUS.to_string())]
    pub vcpus: String,
    /// Width of one report line (10ms to 60s).
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(DEFAULT_INTERVAL_NS))]
    pub interval: String,
    /// A summary line every this long (rate, worst lateness, pauses seen);
    /// `off` for none. At least --interval.
    ///
    /// The rate is over the span's running time; the worst lateness is the
    /// longest interval between two ticks that is not a gap, less the period.
    #[arg(long, allow_hyphen_values = true, default_value_t = shown(DEFAULT_SUMMARY_EVERY_NS))]
    pub summary_every: String,
    /// How the guest accesses its LAPIC.
    #[arg(long, default_value_t = DEFAULT_APIC, value_parser = parser(Apic::ALL))]
    pub apic: Apic,
    /// What the guest does between ticks.
    ///
    /// self-test-hostile tests the untrusted-input path: the guest writes
    /// bad tick-ring entries on purpose (a stamp 2^30 TSC cycles in the past
    /// every 7th tick, one 2^44 in the future every 11th, a head jump of a
    /// ring plus 5 every 997th, a head 3 back every 1499th); each kind is
    /// counted in the record's collector figures, never used.
    #[arg(long, default_value_t = DEFAULT_IDLE, value_parser = parser(Idle::CLI))]
    pub idle: Idle,
    /// LAPIC timer mode: periodic is the subject; oneshot and tsc-deadline
    /// are controls that must not burst.
    ///
    /// oneshot is re-armed in the ISR (so it runs at 1 / (period + interrupt
    /// latency)); tsc-deadline writes IA32_TSC_DEADLINE at the previous
    /// deadline plus one period (also in xAPIC mode). Both skip the periods
    /// missed in a pause, so they must never burst.
    #[arg(long, default_value_t = DEFAULT_TIMER, value_parser = parser(Timer::ALL))]
    pub timer: Timer,
    /// Host-side probes: auto (use what the host offers), on (exit 2 if one
    /// cannot be opened), off (guest only).
    ///
    /// auto prints one `# host probes missing: ...` line naming what is
    /// missing and why, and those columns say n/a. on does not exit for a
    /// probe this kernel cannot have (an absent hv timer, a tracepoint or
    /// KVM binary stats an older kernel lacks), only for one it has but
    /// that could not be opened. Needs root or CAP_PERFMON (or a permissive
    /// perf_event_paranoid).
    #[arg(long, default_value_t = DEFAULT_HOST_PROBES, value_parser = parser(ProbeMode::ALL))]
    pub host_probes: ProbeMode,
    /// Thresholds of the verdict in the record.
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// Write the whole record as JSON to this file (atomically).
    ///
    /// Checked before the run (an unwritable path exits 2 at once). A
    /// regular file is replaced atomically (written to an unnamed file,
    /// synced, linked and renamed); a device, FIFO or socket is written in
    /// place; a directory is refused. `tickburst analyze` reads it again.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw an SVG picture to this file (atomically).
    ///
    /// Guest ticks, expected ticks and host callbacks per report window
    /// against time, pauses shaded, each resume marked with its burst
    /// ratios; sweep adds burst against pause length.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Write one JSON object per line to this file as the run goes (each
    /// report window, pause and note, flushed at once; an `end` line last).
    ///
    /// Each line is written whole at once and forced to the disk right
    /// after, on a thread of its own. A write that fails (a full disk) stops
    /// the stream on its last whole line; the run, its --json and --plot are
    /// written all the same, then tickburst exits 2 with one line naming the
    /// stream and the line it stopped after.
    #[arg(long, value_name = "FILE")]
    pub json_stream: Option<PathBuf>,
}
