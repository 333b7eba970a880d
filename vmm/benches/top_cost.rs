//! `cargo bench -p tickburst --bench top_cost`: what `tickburst top` costs,
//! with N = 1, 8 and 32 tickburst VMs running.
//!
//! Per N, the bench starts N VMs (`tickburst watch --idle self-test-exits
//! --host-probes off`: the guest executes CPUID in a loop, each one an exit
//! to KVM, and counts the loops in guest memory; its LAPIC timer ticks every
//! 1 ms, so `top` has timers to see) and then runs trials, alternately
//! without and with `top --json FILE --pid ...` watching all of them:
//!
//! - `top`'s own CPU (its threads' time on a CPU, user and system, from
//!   `/proc/PID/task/*/schedstat`: utime + stime in ns rather than 10 ms
//!   ticks; over the trial, which starts an interval after `top` wrote its
//!   first line for every VM, as a share of one CPU) and its RSS (`VmRSS`, and
//!   `VmHWM` at the end);
//! - the guests' loop rate (the sum over the N VMs of `exit_loops` read from
//!   each VMM's guest memory through `/proc/PID/mem`), per second of wall
//!   time and per second of the VMMs' own CPU time (a tracepoint filter runs
//!   in the exiting vCPU thread, so its cost shows there, while the host's
//!   load, which moves the wall rate by tens of percent on a shared machine,
//!   does not); each "on" trial against the mean of the two "off" trials
//!   beside it: the slowdown is the median of those ratios, with their min
//!   and max as the spread.
//!
//! Knobs (environment): `TICKBURST_BENCH_TOP_VMS` (default `1,8,32`),
//! `TICKBURST_BENCH_TOP_TRIALS` (on/off pairs, default 5),
//! `TICKBURST_BENCH_TOP_SECONDS` (one trial, default 4),
//! `TICKBURST_BENCH_TOP_IDLE` (the guests' `--idle`, default
//! `self-test-exits`; `hlt` measures `top` over quiet VMs),
//! `TICKBURST_BENCH_TOP_INTERVAL` (`top --interval`, default `1s`),
//! `TICKBURST_BENCH_TOP_BIN` (the `tickburst` that runs `top`: another
//! build, for a before/after). The bench holds
//! the VM lock while its VMs run. Figures, not a timed test: nothing is
//! asserted beyond the run working; on a loaded host the CPU figures read
//! high, so run it on a quiet one (or take the quietest of several runs).

use guest_payload::abi;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tickburst");
/// How long `top` runs after its first line for every VM before its CPU
/// is counted (the first interval after opening all its events); the "off"
/// trials wait as long.
const TOP_WARMUP: Duration = Duration::from_millis(1200);
/// The longest wait for that first line (32 VMs on a loaded host).
const TOP_SETTLE_MAX: Duration = Duration::from_secs(60);
/// How long a VM may take to show a counting guest.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The `tickburst` that runs `top`: `TICKBURST_BENCH_TOP_BIN` (another
/// build, for a before/after), else the one built with the bench (the VMs
/// always run that one).
fn top_bin() -> String {
    env_or("TICKBURST_BENCH_TOP_BIN", BIN)
}

/// One running tickburst VM and where its guest's counter lives.
struct Vm {
    child: Child,
    mem: File,
    /// Offset in `/proc/PID/mem` of vCPU 0's slot.
    slot: u64,
}

/// Reads a little-endian u64 at `at` of `mem`.
fn read_u64(mem: &File, at: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, at).ok()?;
    Some(u64::from_le_bytes(b))
}

/// The address of vCPU 0's slot in process `pid`: the anonymous writable
/// mapping whose bytes at `SHARED_BASE` are a slot (magic, ABI version, its
/// own address).
fn find_slot(pid: u32, mem: &File) -> Option<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        let range = f.next()?;
        let perms = f.next()?;
        if !perms.starts_with("rw") || f.nth(3).is_some() {
            return None;
        }
        let (lo, hi) = range.split_once('-')?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let slot = lo + abi::SHARED_BASE;
        if hi < slot + abi::SHARED_SIZE as u64 {
            return None;
        }
        let magic = read_u64(mem, slot)?;
        let version = read_u64(mem, slot + 8)? as u32;
        let addr = read_u64(mem, slot + abi::SLOT_ADDR_OFFSET as u64)?;
        (magic == abi::MAGIC && version == abi::ABI_VERSION && addr == abi::SHARED_BASE)
            .then_some(slot)
    })
}

impl Vm {
    /// Starts one VM with `--idle idle` and waits until its guest counts.
    fn start(idle: &str) -> Vm {
        let mut child = Command::new(BIN)
            .args(["watch", "--idle", idle, "--host-probes", "off"])
            .args(["--period", "1ms", "--interval", "10s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {BIN}: {e}"));
        let pid = child.id();
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("VM {pid} ended before counting: {status}");
            }
            if let Ok(mem) = File::open(format!("/proc/{pid}/mem")) {
                if let Some(slot) = find_slot(pid, &mem) {
                    let vm = Vm { child, mem, slot };
                    if vm.counter(idle) > 0 {
                        return vm;
                    }
                    child = vm.child;
                }
            }
            assert!(started.elapsed() < BOOT_TIMEOUT, "VM {pid} never counted");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The guest's counter: CPUID loops, or ticks for a non-exit guest.
    fn counter(&self, idle: &str) -> u64 {
        let off = if idle == "self-test-exits" {
            abi::EXIT_LOOPS_OFFSET
        } else {
            abi::TICK_COUNT_OFFSET
        };
        read_u64(&self.mem, self.slot + off as u64).unwrap_or(0)
    }

    /// Ends the VM at once: SIGKILL (the VMM writes nothing here, and
    /// SIGINT lets it analyse its whole run first: minutes each in the
    /// emulator while the others still spin).
    fn kill(&self) {
        // SAFETY: signals our own child, which is alive until we wait for it.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL) };
    }
}

/// CPU time of every thread of `pid`, seconds: the first field of each
/// `/proc/PID/task/TID/schedstat` (ns on a CPU, user and system: what
/// utime + stime count, without their 10 ms ticks).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

/// A `/proc/PID/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Lines in the file at `path` (0 if it cannot be read).
fn lines_in(path: &std::path::Path) -> usize {
    std::fs::read(path).map_or(0, |b| BufReader::new(&b[..]).lines().count())
}

/// What one "on" trial measured of `top`.
struct TopFigures {
    cpu_share: f64,
    rss_kib: u64,
    hwm_kib: u64,
    lines: usize,
}

/// Sum of the guests' counters, and of their VMMs' CPU time (s).
fn total(vms: &[Vm], idle: &str) -> (u64, f64) {
    vms.iter().fold((0, 0.0), |(n, cpu), v| {
        (n + v.counter(idle), cpu + cpu_seconds(v.child.id()))
    })
}

/// The guests' rates over one trial.
#[derive(Clone, Copy)]
struct Rates {
    /// Loops per second of wall time.
    wall: f64,
    /// Loops per second of the VMMs' CPU time (what a filter that runs on
    /// every exit adds to; the host's load does not change it).
    cpu: f64,
}

/// One trial of `secs`: the guests' rate (loops/s), and `top`'s figures if
/// `with_top`.
fn trial(vms: &[Vm], idle: &str, secs: f64, with_top: bool) -> (Rates, Option<TopFigures>) {
    let json =
        std::env::temp_dir().join(format!("tickburst-bench-top-{}.ndjson", std::process::id()));
    let top = with_top.then(|| {
        let pids: Vec<String> = vms.iter().map(|v| v.child.id().to_string()).collect();
        let child = Command::new(top_bin())
            .args([
                "top",
                "--interval",
                &env_or("TICKBURST_BENCH_TOP_INTERVAL", "1s"),
            ])
            .args(["--pid", &pids.join(",")])
            .arg("--json")
            .arg(&json)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting top: {e}"));
        // Steady state: `top` has written a line for every VM (it found and
        // opened them all), then one interval more.
        let started = Instant::now();
        while lines_in(&json) < vms.len() && started.elapsed() < TOP_SETTLE_MAX {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(TOP_WARMUP);
        child
    });
    if !with_top {
        std::thread::sleep(TOP_WARMUP);
    }
    let cpu0 = top.as_ref().map(|t| cpu_seconds(t.id()));
    let (c0, t0) = (total(vms, idle), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (c1, t1) = (total(vms, idle), Instant::now());
    let elapsed = (t1 - t0).as_secs_f64();
    let loops = c1.0.saturating_sub(c0.0) as f64;
    let rate = Rates {
        wall: loops / elapsed,
        cpu: loops / (c1.1 - c0.1).max(1e-9),
    };
    let figures = top.map(|t| {
        let pid = t.id();
        let cpu = cpu_seconds(pid) - cpu0.unwrap_or(0.0);
        let rss_kib = status_kib(pid, "VmRSS:");
        let hwm_kib = status_kib(pid, "VmHWM:");
        // SAFETY: signals our own child, alive until we wait for it.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
        let out = t.wait_with_output().expect("top waited for");
        if !out.status.success() {
            panic!(
                "top failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
        }
        let lines = lines_in(&json);
        let _ = std::fs::remove_file(&json);
        TopFigures {
            cpu_share: cpu / elapsed,
            rss_kib,
            hwm_kib,
            lines,
        }
    });
    (rate, figures)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !std::path::Path::new("/dev/kvm").exists() {
        println!("top_cost: no /dev/kvm, nothing measured");
        return;
    }
    let counts: Vec<usize> = env_or("TICKBURST_BENCH_TOP_VMS", "1,8,32")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    let pairs: usize = env_or("TICKBURST_BENCH_TOP_TRIALS", "5")
        .parse()
        .unwrap_or(5)
        .max(1);
    let secs: f64 = env_or("TICKBURST_BENCH_TOP_SECONDS", "4")
        .parse()
        .unwrap_or(4.0);
    let idle = env_or("TICKBURST_BENCH_TOP_IDLE", "self-test-exits");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: getloadavg writes at most 3 doubles into the array.
    let load = {
        let mut l = [0f64; 3];
        unsafe { libc::getloadavg(l.as_mut_ptr(), 3) };
        l[0]
    };
    println!(
        "top_cost: guests --idle {idle}, {pairs} off/on pairs of {secs} s per VM count, \
         top --interval {}, {cpus} CPUs, load average {load:.2} at start",
        env_or("TICKBURST_BENCH_TOP_INTERVAL", "1s")
    );
    println!(
        "{:>4}  {:>9}  {:>9}  {:>9}  {:>14}  {:>11}  {:>11}  {:>9}  {:>14}",
        "VMs",
        "top CPU%",
        "RSS MiB",
        "HWM MiB",
        "guest loops",
        "top off",
        "top on",
        "slowdown",
        "on/off min..max"
    );
    let _lock = tickburst_testkit::lock();
    for &n in &counts {
        let vms: Vec<Vm> = (0..n).map(|_| Vm::start(&idle)).collect();
        let mut off = Vec::new();
        let mut on = Vec::new();
        let mut figs = Vec::new();
        // off, on, off, on, ..., off: each "on" between two "off"s.
        off.push(trial(&vms, &idle, secs, false).0);
        for _ in 0..pairs {
            let (rate, f) = trial(&vms, &idle, secs, true);
            on.push(rate);
            figs.push(f.expect("top figures"));
            off.push(trial(&vms, &idle, secs, false).0);
        }
        let cpu: Vec<f64> = figs.iter().map(|f| f.cpu_share * 100.0).collect();
        let (cpu_lo, _) = min_max(&cpu);
        let rss = figs.iter().map(|f| f.rss_kib).max().unwrap_or(0) as f64 / 1024.0;
        let hwm = figs.iter().map(|f| f.hwm_kib).max().unwrap_or(0) as f64 / 1024.0;
        let by = |pick: fn(&Rates) -> f64| -> (f64, f64, f64, f64, f64) {
            let ratios: Vec<f64> = on
                .iter()
                .enumerate()
                .map(|(i, r)| pick(r) / ((pick(&off[i]) + pick(&off[i + 1])) / 2.0))
                .collect();
            let (lo, hi) = min_max(&ratios);
            let offs = median(off.iter().map(pick).collect());
            let ons = median(on.iter().map(pick).collect());
            (offs, ons, (1.0 - median(ratios)) * 100.0, lo, hi)
        };
        for (i, (what, pick)) in [
            ("per wall s", (|r: &Rates| r.wall) as fn(&Rates) -> f64),
            ("per VMM CPU s", |r: &Rates| r.cpu),
        ]
        .into_iter()
        .enumerate()
        {
            let (offs, ons, slow, lo, hi) = by(pick);
            let head = if i == 0 {
                format!(
                    "{n:>4}  {:>9.3}  {rss:>9.1}  {hwm:>9.1}",
                    median(cpu.clone())
                )
            } else {
                format!("{:>4}  {:>9}  {:>9}  {:>9}", "", "", "", "")
            };
            println!(
                "{head}  {what:>14}  {offs:>11.0}  {ons:>11.0}  {slow:>8.2}%  {lo:>6.3}..{hi:<6.3}"
            );
        }
        println!(
            "      top CPU% per trial {:?} (quietest {cpu_lo:.3}); NDJSON lines per trial {:?}",
            cpu.iter()
                .map(|c| (c * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>(),
            figs.iter().map(|f| f.lines).collect::<Vec<_>>()
        );
        for vm in &vms {
            vm.kill();
        }
        for mut vm in vms {
            let _ = vm.child.wait();
        }
    }
}
