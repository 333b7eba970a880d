//! Guest-physical memory map.
//!
//! ```text
//! 0x0000_0500  GDT (4 entries)
//! 0x0000_9000  PML4, then PDPT, then 4 page directories (identity map of 4 GiB)
//! 0x0001_0000  vCPU stacks, 8 KiB each (vCPU i's top: stack_top(i))
//! 0x0010_0000  guest ELF image
//! 0x0020_0000  slots: vCPU i's SharedPage at abi::slot_addr(i)
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
/// Bottom of vCPU 0's stack.
pub const STACKS_BASE: u64 = 0x1_0000;
/// Stack size per vCPU (the guest needs well under 2 KiB: an ISR frame with
/// the FXSAVE area, and a few small Rust frames).
pub const STACK_SIZE: u64 = 0x2000;
/// Most vCPUs the map has room for.
pub const MAX_VCPUS: u32 = abi::MAX_VCPUS as u32;
/// Where the guest ELF is linked.
pub const GUEST_LOAD_ADDR: u64 = 0x10_0000;
/// Where vCPU 0's slot lives (from the ABI).
pub const SHARED_ADDR: u64 = abi::SHARED_BASE;
/// Size of guest RAM: everything above, for [`MAX_VCPUS`] slots, rounded up
/// to 2 MiB. Pages the guest never touches cost the host nothing.
pub const MEM_SIZE: u64 = mem_size(MAX_VCPUS);
/// Size of guest RAM for a VM of `vcpus` vCPUs: the map above up to the
/// last of their slots, rounded up to 2 MiB. KVM's memslot set-up costs
/// time in proportion to the size (~6 ms for the 36 MiB of 64 slots on
/// this nested host, ~1 ms for one vCPU's 4 MiB), so a VM gets only what
/// its vCPUs use.
///
/// ```
/// use tickburst::arch::layout::{mem_size, MAX_VCPUS, MEM_SIZE};
/// assert_eq!(mem_size(MAX_VCPUS), MEM_SIZE);
/// assert!(mem_size(1) < MEM_SIZE);
/// ```
pub const fn mem_size(vcpus: u32) -> u64 {
    (abi::slot_addr(vcpus) + 1).next_multiple_of(2 << 20)
}
/// Base of the xAPIC MMIO page.
pub const APIC_MMIO_BASE: u64 = 0xfee0_0000;
/// Address for KVM's real-mode TSS (three pages, outside RAM).
pub const KVM_TSS_ADDR: usize = 0xfffb_d000;
/// Size of a 4 KiB page.
pub const PAGE_SIZE: u64 = 0x1000;

/// Initial stack pointer of vCPU `index` (16-byte aligned; the stack grows
/// down from here to `STACKS_BASE + index * STACK_SIZE`).
///
/// ```
/// use tickburst::arch::layout::{stack_top, STACKS_BASE, STACK_SIZE};
/// assert_eq!(stack_top(0), STACKS_BASE + STACK_SIZE);
/// ```
pub const fn stack_top(index: u32) -> u64 {
    STACKS_BASE + (index as u64 + 1) * STACK_SIZE
}

// The map above holds together: checked when the crate compiles.
const _: () = {
    assert!(GDT_ADDR + 32 <= PML4_ADDR);
    assert!(PD_ADDR + PD_COUNT * PAGE_SIZE <= STACKS_BASE);
    assert!(
        stack_top(MAX_VCPUS - 1) <= GUEST_LOAD_ADDR,
        "stacks below the image"
    );
    assert!(GUEST_LOAD_ADDR < SHARED_ADDR);
    assert!(abi::slot_addr(MAX_VCPUS - 1) + abi::SHARED_SIZE as u64 <= MEM_SIZE);
    assert!(
        APIC_MMIO_BASE < PD_COUNT << 30,
        "LAPIC page is identity mapped"
    );
    assert!(MEM_SIZE <= KVM_TSS_ADDR as u64);
    assert!(
        tickburst_analysis::limits::MAX_VCPUS == MAX_VCPUS as usize,
        "a record's vCPU limit is the guest's"
    );
};
