//! Guest-physical memory map.
//!
//! ```text
//! 0x0000_0500  GDT (4 entries)
//! 0x0000_9000  PML4, then PDPT, then 4 page directories (identity map of 4 GiB)
//! 0x0008_0000  top of the boot stack (grows down)
//! 0x0010_0000  guest ELF image
//! 0x0020_0000  shared page (guest_payload::abi::SharedPage)
//! 0xFEE0_0000  LAPIC (xAPIC MMIO, emulated by KVM, not backed by RAM)
//! ```

use guest_payload::abi;

/// Guest-physical address of the GDT.
pub const GDT_ADDR: u64 = 0x500;
/// Guest-physical address of the PML4 table.
pub const PML4_ADDR: u64 = 0x9000;
/// Guest-physical address of the page-directory-pointer table.
pub const PDPT_ADDR: u64 = PML4_ADDR + PAGE_SIZE;
/// Guest-physical address of the first of [`PD_COUNT`] page directories.
pub const PD_ADDR: u64 = PDPT_ADDR + PAGE_SIZE;
/// Number of page directories (one per GiB identity mapped).
pub const PD_COUNT: u64 = 4;
/// Initial stack pointer.
pub const STACK_TOP: u64 = 0x8_0000;
/// Where the guest ELF is linked.
pub const GUEST_LOAD_ADDR: u64 = 0x10_0000;
/// Where the shared page lives (from the ABI).
pub const SHARED_ADDR: u64 = abi::SHARED_BASE;
/// Size of guest RAM: everything above fits in it with room to spare.
pub const MEM_SIZE: u64 = 4 << 20;
/// Base of the xAPIC MMIO page.
pub const APIC_MMIO_BASE: u64 = 0xfee0_0000;
/// Address for KVM's real-mode TSS (three pages, outside RAM).
pub const KVM_TSS_ADDR: usize = 0xfffb_d000;
/// Size of a 4 KiB page.
pub const PAGE_SIZE: u64 = 0x1000;

// The map above holds together: checked when the crate compiles.
const _: () = {
    assert!(GDT_ADDR + 32 <= PML4_ADDR);
    assert!(
        PD_ADDR + PD_COUNT * PAGE_SIZE <= STACK_TOP - PAGE_SIZE,
        "stack room below 0x80000"
    );
    assert!(STACK_TOP <= GUEST_LOAD_ADDR);
    assert!(GUEST_LOAD_ADDR < SHARED_ADDR);
    assert!(SHARED_ADDR + abi::SHARED_SIZE as u64 <= MEM_SIZE);
    assert!(
        APIC_MMIO_BASE < PD_COUNT << 30,
        "LAPIC page is identity mapped"
    );
    assert!(MEM_SIZE <= KVM_TSS_ADDR as u64);
};
