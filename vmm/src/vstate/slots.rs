//! The guest's slots in shared memory: one [`abi::SharedPage`] per vCPU at
//! [`abi::slot_addr`], holding the config block the VMM writes, the results
//! block the guest writes, and the tick ring.
//!
//! The config and results blocks move as whole `#[repr(C)]` values through
//! vm-memory's [`ByteValued`] ([`Bytes::write_obj`] / [`Bytes::read_obj`]);
//! the ring's head is read with an acquire load and each entry on its own,
//! since the guest writes them while the VMM reads. This is also where the
//! mode names of the command line and the record become the ABI's codes.

use crate::arch::timer::TimerSettings;
use guest_payload::abi::{self, ApicMode, GuestConfig, GuestResults, IdleMode, TimerMode};
use std::mem::{offset_of, size_of};
use std::sync::atomic::Ordering;
use thiserror::Error;
use tickburst_analysis::names::{Apic, Idle, Timer};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

/// A slot could not be written.
#[derive(Debug, Error)]
pub enum SlotError {
    /// Guest memory refused the write (the slot is outside guest RAM).
    #[error("guest memory: {0}")]
    Memory(#[from] GuestMemoryError),
}

/// [`GuestConfig`] as bytes (the orphan rule keeps `ByteValued` off the ABI
/// type itself).
#[repr(transparent)]
#[derive(Clone, Copy, Default)]
struct ConfigBytes(GuestConfig);

/// [`GuestResults`] as bytes.
#[repr(transparent)]
#[derive(Clone, Copy, Default)]
struct ResultsBytes(GuestResults);

// Neither block has padding: its size is the sum of its fields' sizes.
const _: () = {
    assert!(size_of::<GuestConfig>() == 8 + 4 * 6 + 8 + 4 * 2 + 8 * 2);
    assert!(size_of::<GuestResults>() == 4 * 4 + 8 * 8);
    assert!(offset_of!(GuestConfig, start) + 8 == size_of::<GuestConfig>());
    assert!(offset_of!(GuestResults, exit_loops) + 8 == size_of::<GuestResults>());
};

// SAFETY: `ConfigBytes` is `repr(transparent)` over `GuestConfig`, which is
// `repr(C)` with only `u32` and `u64` fields and no padding (the sizes are
// asserted above), so every byte of it is initialised and every bit pattern
// is a valid value.
unsafe impl ByteValued for ConfigBytes {}
// SAFETY: as for `ConfigBytes`: `GuestResults` is `repr(C)`, only `u32` and
// `u64` fields, no padding (asserted above), every bit pattern valid.
unsafe impl ByteValued for ResultsBytes {}

/// What the guest should do, written into each slot's config block.
#[derive(Debug, Clone, Copy)]
pub struct GuestSetup {
    /// LAPIC access mode.
    pub apic: Apic,
    /// Idle loop.
    pub idle: Idle,
    /// Timer programming.
    pub timer: TimerSettings,
    /// LVT timer mode.
    pub timer_mode: Timer,
    /// Timer period, ns (for the TSC-deadline period).
    pub period_ns: u64,
    /// Number of vCPUs (1 to what KVM allows).
    pub vcpus: u32,
    /// Initial count of the guest's probe one-shot, 0 for no probe phase
    /// (see [`abi::STATUS_PROBED`]).
    pub probe_count: u32,
}

/// The ABI code of an APIC mode.
pub fn apic_code(apic: Apic) -> ApicMode {
    match apic {
        Apic::X2Apic => ApicMode::X2Apic,
        Apic::XApic => ApicMode::XApic,
    }
}

/// The ABI code of an idle mode.
pub fn idle_code(idle: Idle) -> IdleMode {
    match idle {
        Idle::Hlt => IdleMode::Hlt,
        Idle::Spin => IdleMode::Spin,
        Idle::SelfTestHostile => IdleMode::SelfTestHostile,
        Idle::SelfTestExits => IdleMode::SelfTestExits,
        Idle::SelfTestFault => IdleMode::SelfTestFault,
    }
}

/// The ABI code of a timer mode.
pub fn timer_code(timer: Timer) -> TimerMode {
    match timer {
        Timer::Periodic => TimerMode::Periodic,
        Timer::OneShot => TimerMode::OneShot,
        Timer::TscDeadline => TimerMode::TscDeadline,
    }
}

/// vCPU `index`'s config block (`tsc_period`: the period in guest TSC
/// cycles).
pub fn config(setup: &GuestSetup, tsc_period: u64, index: u32) -> GuestConfig {
    GuestConfig {
        magic: abi::MAGIC,
        abi_version: abi::ABI_VERSION,
        apic_mode: apic_code(setup.apic) as u32,
        idle_mode: idle_code(setup.idle) as u32,
        initial_count: setup.timer.initial_count,
        divide_config: setup.timer.divide_config,
        timer_mode: timer_code(setup.timer_mode) as u32,
        tsc_period,
        apic_id: index,
        probe_count: setup.probe_count,
        slot_addr: abi::slot_addr(index),
        start: 0,
    }
}

fn config_addr(index: u32) -> GuestAddress {
    GuestAddress(abi::slot_addr(index) + abi::CONFIG_OFFSET as u64)
}

fn results_addr(index: u32) -> GuestAddress {
    GuestAddress(abi::slot_addr(index) + abi::RESULTS_OFFSET as u64)
}

/// Writes vCPU `index`'s config block, whole, before the vCPU first runs.
pub fn write_config(
    mem: &GuestMemoryMmap,
    config: GuestConfig,
    index: u32,
) -> Result<(), SlotError> {
    Ok(mem.write_obj(ConfigBytes(config), config_addr(index))?)
}

/// Lets vCPU `index`'s guest leave its probe phase (sets
/// [`GuestConfig::start`]; the one config write while the guest runs).
pub fn start_guest(mem: &GuestMemoryMmap, index: u32) -> Result<(), SlotError> {
    let at = config_addr(index).0 + offset_of!(GuestConfig, start) as u64;
    Ok(mem.write_obj(1u64, GuestAddress(at))?)
}

/// vCPU `index`'s results block as the guest left it (untrusted: values to
/// print or count, never indices), or `None` if it cannot be read.
pub fn read_results(mem: &GuestMemoryMmap, index: u32) -> Option<GuestResults> {
    mem.read_obj::<ResultsBytes>(results_addr(index))
        .ok()
        .map(|r| r.0)
}

/// vCPU `index`'s ring head: the guest's count of entries ever written
/// (read with acquire ordering: the entries it counts are written before).
pub fn ring_head(mem: &GuestMemoryMmap, index: u32) -> u64 {
    let at = abi::slot_addr(index) + abi::RING_HEAD_OFFSET as u64;
    mem.load::<u64>(GuestAddress(at), Ordering::Acquire)
        .unwrap_or(0)
}

/// The TSC in vCPU `index`'s ring slot `slot` (reduced modulo the ring size
/// here, whatever the caller passes).
pub fn ring_entry(mem: &GuestMemoryMmap, index: u32, slot: usize) -> u64 {
    let slot = slot % abi::RING_ENTRIES;
    let at = abi::slot_addr(index) + (abi::RING_OFFSET + slot * 8) as u64;
    mem.read_obj::<u64>(GuestAddress(at)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_through_guest_memory() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(
            GuestAddress(0),
            (abi::slot_addr(2) as usize).next_multiple_of(0x1000),
        )])
        .unwrap();
        let setup = GuestSetup {
            apic: Apic::XApic,
            idle: Idle::Spin,
            timer: crate::arch::timer::settings_for_period(1_000_000, 1).unwrap(),
            timer_mode: Timer::TscDeadline,
            period_ns: 1_000_000,
            vcpus: 2,
            probe_count: 7,
        };
        let c = config(&setup, 123, 1);
        write_config(&mem, c, 1).unwrap();
        let back: ConfigBytes = mem.read_obj(config_addr(1)).unwrap();
        assert_eq!(back.0, c);
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress(config_addr(1).0 + 12))
                .unwrap(),
            ApicMode::XApic as u32,
            "apic_mode at its ABI offset"
        );
        start_guest(&mem, 1).unwrap();
        let back: ConfigBytes = mem.read_obj(config_addr(1)).unwrap();
        assert_eq!(back.0.start, 1);

        let results = GuestResults {
            tick_count: 5,
            ready_tsc: 9,
            ..GuestResults::default()
        };
        mem.write_obj(ResultsBytes(results), results_addr(0))
            .unwrap();
        assert_eq!(read_results(&mem, 0), Some(results));
        assert_eq!(read_results(&mem, 40), None, "outside guest RAM");
    }
}
