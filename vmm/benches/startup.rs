//! `cargo bench -p tickburst --bench startup`: start-up of tickburst and of
//! QEMU side by side, in one run, from process start to "guest ready".
//!
//! - tickburst: `tickburst run --warmup 10ms --cycles 0 --observe 0s`, with
//!   the default probes (`auto`) and with `--host-probes off`. Two figures
//!   per run: `timing.setup_us` from the `--json` record (measured inside
//!   the process, from the start of `main`), and the wall time from spawning
//!   the process to reading its `# guest ready` line on a pipe (the same
//!   measure as QEMU's).
//! - QEMU: `qemu-system-x86_64 -accel kvm` with the project's own guest
//!   (`guest_payload::QEMU_GUEST_ELF`, through
//!   [`tickburst_testkit::qemu`]), the wall time from spawn to reading the
//!   guest's first serial line on a pipe; with qboot (`-bios qboot.rom`,
//!   the default `pc` machine), and for reference with the `microvm`
//!   machine (its firmware is qboot too) and with QEMU's default SeaBIOS
//!   (fewer runs: seconds each on a nested host).
//!
//! Each figure is the min and the median of N runs
//! (`TICKBURST_BENCH_STARTUP_RUNS`, default 10); the ratio is QEMU+qboot's
//! median over tickburst's (spawn to ready line, both). Every VM run holds
//! the VM lock. Where QEMU is not installed, it says so and prints
//! tickburst's figures only; without `/dev/kvm`, nothing is measured.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;
use tickburst_testkit::qemu::{self, Firmware, QemuGuest};

const BIN: &str = env!("CARGO_BIN_EXE_tickburst");
/// Runs of SeaBIOS (about 4 s each on the nested development host).
const SEABIOS_RUNS: usize = 3;

/// Min and median of `values` (not empty).
fn min_median(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (values[0], median)
}

/// One short tickburst run: (spawn to `# guest ready` line, `timing.setup_us`)
/// in ms.
fn tickburst_once(probes: &str) -> Result<(f64, f64), String> {
    let json = std::env::temp_dir().join(format!(
        "tickburst-bench-startup-{}.json",
        std::process::id()
    ));
    let _vm = tickburst_testkit::lock();
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--warmup",
            "10ms",
            "--cycles",
            "0",
            "--observe",
            "0s",
        ])
        .args(["--host-probes", probes])
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {BIN}: {e}"))?;
    let mut ready_line = None;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let Ok(line) = line else { break };
        if ready_line.is_none() && line.starts_with("# guest ready") {
            ready_line = Some(started.elapsed());
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("tickburst run --host-probes {probes}: {status}"));
    }
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&json).map_err(|e| format!("{}: {e}", json.display()))?,
    )
    .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&json);
    let setup_us = record["timing"]["setup_us"]
        .as_f64()
        .ok_or("no timing.setup_us in the record")?;
    let ready_line = ready_line.ok_or("no '# guest ready' line")?;
    Ok((ready_line.as_secs_f64() * 1e3, setup_us / 1e3))
}

/// One QEMU boot: spawn to the guest's ready line, ms.
fn qemu_once(binary: &std::path::Path, firmware: &Firmware) -> Result<f64, String> {
    let _vm = tickburst_testkit::lock();
    let guest = QemuGuest::start(binary, firmware)?;
    Ok(guest.ready_after().as_secs_f64() * 1e3)
}

fn runs() -> usize {
    std::env::var("TICKBURST_BENCH_STARTUP_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(10)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Err(e) = tickburst::vstate::kvm::open_kvm() {
        println!("startup: not measured: {e}");
        return;
    }
    let n = runs();
    println!(
        "start-up, process spawn -> guest ready: min / median of N runs in ms \
         (a shared 2-CPU host: others' work disturbs the figures)"
    );

    let mut tickburst_line = Vec::new();
    for probes in ["auto", "off"] {
        let mut line = Vec::new();
        let mut setup = Vec::new();
        for _ in 0..n {
            match tickburst_once(probes) {
                Ok((l, s)) => {
                    line.push(l);
                    setup.push(s);
                }
                Err(e) => println!("  tickburst --host-probes {probes}: {e}"),
            }
        }
        if line.is_empty() {
            continue;
        }
        let (line_min, line_med) = min_median(line.clone());
        let (setup_min, setup_med) = min_median(setup);
        println!(
            "tickburst --host-probes {probes:<4} N={:<3} spawn -> '# guest ready' line {line_min:7.1} / {line_med:7.1}   \
             (timing.setup_us, from main: {setup_min:.1} / {setup_med:.1})",
            line.len()
        );
        tickburst_line.push((probes, line_med));
    }

    let Some(binary) = qemu::find_qemu() else {
        println!(
            "QEMU: not measured: {} not installed (Debian: apt-get install qemu-system-x86)",
            qemu::QEMU_BINARY
        );
        return;
    };
    let mut firmwares = Vec::new();
    match qemu::find_qboot() {
        Some(rom) => firmwares.push((Firmware::Qboot(rom), n)),
        None => println!("QEMU + qboot: not measured: {} not found", qemu::QBOOT_ROM),
    }
    firmwares.push((Firmware::Microvm, n));
    firmwares.push((Firmware::SeaBios, SEABIOS_RUNS.min(n)));
    let mut qboot_median = None;
    let mut microvm_median = None;
    for (firmware, runs) in firmwares {
        let mut times = Vec::new();
        for _ in 0..runs {
            match qemu_once(&binary, &firmware) {
                Ok(ms) => times.push(ms),
                Err(e) => println!("  QEMU + {}: {e}", firmware.name()),
            }
        }
        if times.is_empty() {
            continue;
        }
        let count = times.len();
        let (min, med) = min_median(times);
        println!(
            "QEMU + {:<7} N={count:<3} spawn -> guest's serial ready line {min:7.1} / {med:7.1}",
            firmware.name()
        );
        match firmware {
            Firmware::Qboot(_) => qboot_median = Some(med),
            Firmware::Microvm => microvm_median = Some(med),
            Firmware::SeaBios => {}
        }
    }
    if qboot_median.is_none() {
        println!("ratio: not computed (QEMU + qboot did not boot)");
    }
    for (name, qemu_med) in [
        ("QEMU+qboot", qboot_median),
        ("QEMU microvm", microvm_median),
    ] {
        let Some(qemu_med) = qemu_med else { continue };
        for (probes, med) in &tickburst_line {
            println!(
                "ratio {name} / tickburst --host-probes {probes}: {:.1}x (medians, spawn -> ready line)",
                qemu_med / med
            );
        }
    }
}
