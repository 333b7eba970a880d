//! The tickburst guest and its shared-memory ABI.
//!
//! - [`abi`]: the `#[repr(C)]` memory layout shared by guest and VMM.
//! - [`GUEST_ELF`]: the bare-metal guest program, built by this crate's build
//!   script from `guest/main.rs` and embedded, so the VMM needs no file at run
//!   time.
//!
//! ```
//! assert_eq!(&guest_payload::GUEST_ELF[..4], b"\x7fELF");
//! ```

#![no_std]

pub mod abi;

/// The guest program as a statically linked x86-64 ELF image (linked at 1 MiB,
/// entry `_start`, expects 64-bit long mode with identity-mapped memory).
pub static GUEST_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.elf"));

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
        assert_eq!(size_of::<GuestResults>(), 72);
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
        assert_eq!(CONFIG_OFFSET, 0);
        assert_eq!(SLOT_ADDR_OFFSET, 48);
        assert_eq!(RESULTS_OFFSET, 64);
        assert_eq!(RING_OFFSET, 136);
        assert_eq!(RING_HEAD_OFFSET, 112);
        assert_eq!(TICK_COUNT_OFFSET, 104);
        assert_eq!(SHARED_SIZE, 136 + 8 * RING_ENTRIES);
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
}
