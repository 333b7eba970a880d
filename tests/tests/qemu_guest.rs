//! tickburst's guest under QEMU (`guest_payload::QEMU_GUEST_ELF`): it boots
//! with `qemu-system-x86_64 -accel kvm -kernel`, says ready on its serial
//! port, and its LAPIC timer then runs periodically at 1 kHz, seen from the
//! host: the callbacks of the QEMU vCPU's own LAPIC hrtimer.
//!
//! How the hrtimer is found: `timer:hrtimer_start` filtered to
//! `function == apic_timer_fn` is sampled on every CPU (with the task's pid)
//! from before QEMU starts; the guest's write of the timer's initial count
//! starts the hrtimer in QEMU's vCPU thread. Only task-context samples count
//! (an interrupt that re-arms another VM's hrtimer while a QEMU thread is
//! current carries QEMU's pid too; see `perf::in_task_context`). Then
//! `timer:hrtimer_expire_entry` filtered to `hrtimer == <that address>` is
//! counted on every CPU: nothing of another VM can enter the count.
//!
//! Skips where `qemu-system-x86_64` is not installed (`.ci/run` installs
//! Debian's `qemu-system-x86`) or where perf is not permitted (not root).

use perf_event::{SampleFlag, Sampler};
use std::time::{Duration, Instant};
use tickburst::host::perf::{
    in_task_context, le_u32, le_u64, open_tracepoint, PerfError, Sampling, RECORD_SAMPLE,
};
use tickburst::host::tracefs;
use tickburst_testkit::qemu::{qemu_or_skip, Firmware, QemuGuest};
use tickburst_testkit::{is_root, kvm_or_skip};

/// Where the sample's fields start with `PERF_SAMPLE_TID | PERF_SAMPLE_RAW`:
/// u32 pid, u32 tid, u32 raw size, raw data.
const SAMPLE_PID: usize = 0;
/// See [`SAMPLE_PID`].
const SAMPLE_RAW_DATA: usize = 12;
/// How long the callbacks are counted.
const COUNT_FOR: Duration = Duration::from_secs(2);
/// The guest's built-in timer frequency.
const GUEST_HZ: f64 = 1000.0;

/// Per-CPU samplers of `hrtimer_start` for LAPIC timers (any task).
fn lapic_hrtimer_starts(
    root: &std::path::Path,
    apic_timer_fn: u64,
) -> Result<Vec<Sampler>, String> {
    let id = tracefs::event_id(root, "timer/hrtimer_start").map_err(|e| e.to_string())?;
    let filter = format!("function == {apic_timer_fn:#x}");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..cpus)
        .map(|cpu| {
            open_tracepoint(
                id,
                None,
                Some(cpu),
                Some(&filter),
                Some(Sampling::drained(SampleFlag::TID | SampleFlag::RAW)),
            )
            .and_then(|c| c.sampled(64 * 4096).map_err(PerfError::Ring))
            .map_err(|e| e.to_string())
        })
        .collect()
}

/// Offsets in `hrtimer_start`'s raw data (from its `format` file).
#[derive(Clone, Copy)]
struct StartFields {
    hrtimer: usize,
    common_flags: usize,
}

/// The hrtimer addresses `pid` started in task context, from the samplers'
/// rings.
fn hrtimers_of(samplers: &mut [Sampler], pid: u32, fields: StartFields) -> Vec<u64> {
    let mut found = Vec::new();
    for sampler in samplers {
        while let Some(record) = sampler.next_record() {
            if record.ty() != RECORD_SAMPLE {
                continue;
            }
            let bytes = record.to_contiguous();
            if le_u32(&bytes, SAMPLE_PID) != Some(pid) {
                continue;
            }
            match bytes.get(SAMPLE_RAW_DATA + fields.common_flags) {
                Some(&flags) if in_task_context(flags) => {}
                _ => continue,
            }
            if let Some(hrtimer) = le_u64(&bytes, SAMPLE_RAW_DATA + fields.hrtimer) {
                if !found.contains(&hrtimer) {
                    found.push(hrtimer);
                }
            }
        }
    }
    found
}

fn boots_and_ticks_at_1khz(firmware: Firmware) {
    let test = format!("qemu_guest_{}", firmware.name());
    let Some(qemu) = qemu_or_skip(&test) else {
        return;
    };
    let Some(_vm) = kvm_or_skip(&test) else {
        return;
    };
    let tracefs = tracefs::locate_or_mount(is_root()).expect("tracefs");
    let apic_timer_fn = tracefs::apic_timer_fn_address().expect("apic_timer_fn in kallsyms");
    let field = |name| {
        tracefs::field_offset(&tracefs.root, "timer/hrtimer_start", name)
            .expect("hrtimer_start format")
    };
    let fields = StartFields {
        hrtimer: field("hrtimer"),
        common_flags: field("common_flags"),
    };
    let mut starts = match lapic_hrtimer_starts(&tracefs.root, apic_timer_fn) {
        Ok(s) => s,
        Err(e) if e.contains("denied") => {
            eprintln!("SKIPPED {test}: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };

    let guest = QemuGuest::start(&qemu, &firmware).expect("QEMU boots the guest");
    eprintln!(
        "{test}: QEMU pid {} ready after {:.1} ms",
        guest.pid(),
        guest.ready_after().as_secs_f64() * 1e3
    );
    // The guest arms its timer right after the ready line; its hrtimer_start
    // sample is then in a ring.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut hrtimers = Vec::new();
    while hrtimers.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        hrtimers = hrtimers_of(&mut starts, guest.pid(), fields);
    }
    drop(starts);
    assert_eq!(
        hrtimers.len(),
        1,
        "one LAPIC hrtimer started in QEMU's threads (one vCPU): {hrtimers:x?}"
    );
    let hrtimer = hrtimers[0];

    let entry = tracefs::event_id(&tracefs.root, "timer/hrtimer_expire_entry").unwrap();
    let filter = format!("hrtimer == {hrtimer:#x}");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut counters: Vec<_> = (0..cpus)
        .map(|cpu| open_tracepoint(entry, None, Some(cpu), Some(&filter), None).unwrap())
        .collect();
    let started = Instant::now();
    std::thread::sleep(COUNT_FOR);
    let callbacks: u64 = counters.iter_mut().map(|c| c.read().unwrap()).sum();
    let elapsed = started.elapsed().as_secs_f64();
    let rate = callbacks as f64 / elapsed;
    eprintln!(
        "{test}: hrtimer {hrtimer:#x}: {callbacks} callbacks in {elapsed:.3} s = {rate:.1}/s"
    );
    assert!(
        (rate - GUEST_HZ).abs() < GUEST_HZ * 0.05,
        "the QEMU guest's LAPIC timer runs at {rate:.1}/s, not ~{GUEST_HZ}/s"
    );
    // Still running: the count was not of a VM that died meanwhile.
    assert!(std::path::Path::new(&format!("/proc/{}", guest.pid())).exists());
}

#[test]
fn qemu_guest_qboot() {
    match tickburst_testkit::qemu::find_qboot() {
        Some(rom) => boots_and_ticks_at_1khz(Firmware::Qboot(rom)),
        None => eprintln!(
            "SKIPPED qemu_guest_qboot: {} not installed",
            tickburst_testkit::qemu::QBOOT_ROM
        ),
    }
}

#[test]
fn qemu_guest_seabios() {
    boots_and_ticks_at_1khz(Firmware::SeaBios);
}
