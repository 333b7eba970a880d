//! The tickburst guest and its shared-memory ABI.
//!
//! - [`abi`]: the `#[repr(C)]` memory layout shared by guest and VMM.
//! - [`GUEST_ELF`]: the bare-metal guest program, built by this crate's build
//!   script from `guest/main.rs` and embedded, so the VMM needs no file at run
//!   time.
//! - [`QEMU_GUEST_ELF`]: the same guest made bootable by QEMU
//!   (`qemu-system-x86_64 -accel kvm -kernel <file>`, from `guest/qemu.rs`):
//!   a PVH entry, its own page tables and a built-in configuration (periodic
//!   LAPIC timer at 1 ms, HLT idle); it prints [`QEMU_READY_LINE`] on COM1.
//!
//! ```
//! assert_eq!(&guest_payload::GUEST_ELF[..4], b"\x7fELF");
//! ```

#![no_std]
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod abi;

/// The guest program as a statically linked x86-64 ELF image (linked at 1 MiB,
/// entry `_start`, expects 64-bit long mode with identity-mapped memory).
pub static GUEST_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.elf"));

/// The guest for QEMU as a statically linked x86-64 ELF image (linked at
/// 1 MiB, a PVH note `XEN_ELFNOTE_PHYS32_ENTRY` naming its 32-bit entry).
/// Write it to a file and pass it to `qemu-system-x86_64 -accel kvm -kernel`.
pub static QEMU_GUEST_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/qemu-guest.elf"));

/// The line (without its newline) [`QEMU_GUEST_ELF`] writes to COM1 right
/// before it arms its periodic LAPIC timer.
pub const QEMU_READY_LINE: &str = "tickburst-guest ready";

#[cfg(test)]
mod tests {
    use super::abi::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layout_is_stable() {
        assert_eq!(size_of::<GuestConfig>(), 64);
        assert_eq!(offset_of!(GuestConfig, magic), 0);
        assert_eq!(offset_of!(GuestConfig, abi_version), 8);
        assert_eq!(offset_of!(GuestConfig, apic_mode), 12);
        assert_eq!(offset_of!(GuestConfig, idle_mode), 16);
        assert_eq!(offset_of!(GuestConfig, initial_count), 20);
        assert_eq!(offset_of!(GuestConfig, divide_config), 24);
        assert_eq!(offset_of!(GuestConfig, timer_mode), 28);
        assert_eq!(offset_of!(GuestConfig, tsc_period), 32);
        assert_eq!(offset_of!(GuestConfig, apic_id), 40);
        assert_eq!(offset_of!(GuestConfig, probe_count), 44);
        assert_eq!(offset_of!(GuestConfig, slot_addr), 48);
        assert_eq!(offset_of!(GuestConfig, start), 56);
        assert_eq!(size_of::<GuestResults>(), 80);
        assert_eq!(offset_of!(GuestResults, status), 0);
        assert_eq!(offset_of!(GuestResults, error), 4);
        assert_eq!(offset_of!(GuestResults, fault_vector), 8);
        assert_eq!(offset_of!(GuestResults, probe_ticks), 12);
        assert_eq!(offset_of!(GuestResults, fault_rip), 16);
        assert_eq!(offset_of!(GuestResults, fault_error_code), 24);
        assert_eq!(offset_of!(GuestResults, ready_tsc), 32);
        assert_eq!(offset_of!(GuestResults, tick_count), 40);
        assert_eq!(offset_of!(GuestResults, ring_head), 48);
        assert_eq!(offset_of!(GuestResults, spurious_count), 56);
        assert_eq!(offset_of!(GuestResults, deadline), 64);
        assert_eq!(offset_of!(GuestResults, exit_loops), 72);
        assert_eq!(CONFIG_OFFSET, 0);
        assert_eq!(SLOT_ADDR_OFFSET, 48);
        assert_eq!(RESULTS_OFFSET, 64);
        assert_eq!(RING_OFFSET, 144);
        assert_eq!(EXIT_LOOPS_OFFSET, 136);
        assert_eq!(RING_HEAD_OFFSET, 112);
        assert_eq!(TICK_COUNT_OFFSET, 104);
        assert_eq!(SHARED_SIZE, 144 + 8 * RING_ENTRIES);
        assert_eq!(SLOT_STRIDE % 0x1000, 0);
        assert!(SLOT_STRIDE >= SHARED_SIZE as u64);
        assert_eq!(slot_addr(1) - slot_addr(0), SLOT_STRIDE);
        assert!(RING_ENTRIES.is_power_of_two());
    }

    #[test]
    fn divide_config_round_trips() {
        for shift in 0..8 {
            let divisor = 1u32 << shift;
            let config = divide_config_for(divisor).unwrap();
            assert_eq!(divisor_for_config(config), Some(divisor));
        }
        assert_eq!(divide_config_for(3), None);
        assert_eq!(divisor_for_config(0b0100), None);
    }

    #[test]
    fn every_error_code_has_a_text() {
        for code in ERR_NONE..=ERR_WRONG_SLOT {
            assert_ne!(error_text(code), "unknown error code", "{code}");
        }
        assert_eq!(error_text(ERR_WRONG_SLOT + 1), "unknown error code");
    }

    #[test]
    fn modes_decode() {
        assert_eq!(ApicMode::from_raw(2), Some(ApicMode::X2Apic));
        assert_eq!(ApicMode::from_raw(1), Some(ApicMode::XApic));
        assert_eq!(ApicMode::from_raw(0), None);
        assert_eq!(IdleMode::from_raw(1), Some(IdleMode::Hlt));
        assert_eq!(IdleMode::from_raw(2), Some(IdleMode::Spin));
        assert_eq!(IdleMode::from_raw(0xd), Some(IdleMode::SelfTestExits));
        assert_eq!(IdleMode::from_raw(7), None);
    }

    #[test]
    fn embedded_guest_is_an_x86_64_elf_at_one_mib() {
        let elf = super::GUEST_ELF;
        assert_eq!(&elf[..4], b"\x7fELF");
        assert_eq!(elf[4], 2, "ELFCLASS64");
        let machine = u16::from_le_bytes([elf[18], elf[19]]);
        assert_eq!(machine, 62, "EM_X86_64");
        let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        assert!((0x10_0000..0x20_0000).contains(&entry), "entry {entry:#x}");
    }

    /// The PVH note QEMU looks for: type 18 (`XEN_ELFNOTE_PHYS32_ENTRY`),
    /// name "Xen", an 8-byte entry address below 2 MiB, in a PT_NOTE
    /// segment aligned to 4 (QEMU finds the descriptor after the name
    /// rounded up to the segment's alignment).
    #[test]
    fn qemu_guest_has_a_pvh_note() {
        let elf = super::QEMU_GUEST_ELF;
        assert_eq!(&elf[..4], b"\x7fELF");
        let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap());
        let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
        let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56));
        let mut entries = 0;
        for i in 0..usize::from(phnum) {
            let ph = phoff + i * phentsize;
            const PT_NOTE: u32 = 4;
            if u32_at(ph) != PT_NOTE {
                continue;
            }
            assert_eq!(u64_at(ph + 48), 4, "PT_NOTE alignment");
            let (offset, size) = (u64_at(ph + 8) as usize, u64_at(ph + 32) as usize);
            let mut note = offset;
            while note < offset + size {
                let (namesz, descsz, kind) = (u32_at(note), u32_at(note + 4), u32_at(note + 8));
                let name = note + 12;
                let desc = name + (namesz as usize).next_multiple_of(4);
                if kind == 18 && &elf[name..name + 4] == b"Xen\0" {
                    assert_eq!(descsz, 8);
                    let entry = u64_at(desc);
                    assert!((0x10_0000..0x20_0000).contains(&entry), "entry {entry:#x}");
                    entries += 1;
                }
                note = desc + (descsz as usize).next_multiple_of(4);
            }
        }
        assert_eq!(entries, 1, "one PVH entry note");
    }
}
