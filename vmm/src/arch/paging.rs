//! Identity page tables for the first 4 GiB (2 MiB pages), so the guest sees
//! its RAM and the xAPIC MMIO page at their physical addresses.

use super::layout::{APIC_MMIO_BASE, PAGE_SIZE, PDPT_ADDR, PD_ADDR, PD_COUNT, PML4_ADDR};

/// Page-table entry: present.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Page-table entry: writable.
pub const PTE_WRITABLE: u64 = 1 << 1;
/// Page-table entry: write-through.
pub const PTE_PWT: u64 = 1 << 3;
/// Page-table entry: cache disabled.
pub const PTE_PCD: u64 = 1 << 4;
/// Page-directory entry: maps a 2 MiB page.
pub const PDE_PAGE_SIZE: u64 = 1 << 7;
/// Size of a large page.
pub const LARGE_PAGE: u64 = 2 << 20;
/// Entries per table.
pub const ENTRIES: usize = 512;

/// One table to write at a guest-physical address.
pub type Table = (u64, Box<[u64; ENTRIES]>);

/// Builds the PML4, the PDPT and [`PD_COUNT`] page directories.
pub fn identity_tables() -> Vec<Table> {
    let mut pml4 = Box::new([0u64; ENTRIES]);
    pml4[0] = PDPT_ADDR | PTE_PRESENT | PTE_WRITABLE;
    let mut pdpt = Box::new([0u64; ENTRIES]);
    let mut tables = Vec::new();
    for gib in 0..PD_COUNT {
        let pd_addr = PD_ADDR + gib * PAGE_SIZE;
        pdpt[gib as usize] = pd_addr | PTE_PRESENT | PTE_WRITABLE;
        let mut pd = Box::new([0u64; ENTRIES]);
        for (slot, entry) in pd.iter_mut().enumerate() {
            let phys = (gib << 30) + slot as u64 * LARGE_PAGE;
            *entry = phys | PTE_PRESENT | PTE_WRITABLE | PDE_PAGE_SIZE;
            if (phys..phys + LARGE_PAGE).contains(&APIC_MMIO_BASE) {
                *entry |= PTE_PCD | PTE_PWT;
            }
        }
        tables.push((pd_addr, pd));
    }
    tables.insert(0, (PDPT_ADDR, pdpt));
    tables.insert(0, (PML4_ADDR, pml4));
    tables
}

/// Walks `tables` like the MMU would and returns the physical address `virt`
/// maps to (used by the tests and by diagnostics).
pub fn translate(tables: &[Table], virt: u64) -> Option<u64> {
    let lookup = |addr: u64| tables.iter().find(|(a, _)| *a == addr).map(|(_, t)| t);
    let pml4 = lookup(PML4_ADDR)?;
    let pml4e = pml4[((virt >> 39) & 0x1ff) as usize];
    if pml4e & PTE_PRESENT == 0 {
        return None;
    }
    let pdpt = lookup(pml4e & !0xfff)?;
    let pdpte = pdpt[((virt >> 30) & 0x1ff) as usize];
    if pdpte & PTE_PRESENT == 0 {
        return None;
    }
    let pd = lookup(pdpte & !0xfff)?;
    let pde = pd[((virt >> 21) & 0x1ff) as usize];
    if pde & PTE_PRESENT == 0 || pde & PDE_PAGE_SIZE == 0 {
        return None;
    }
    Some((pde & !(LARGE_PAGE - 1) & 0x000f_ffff_ffff_f000) | (virt & (LARGE_PAGE - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::layout::{GUEST_LOAD_ADDR, SHARED_ADDR};

    #[test]
    fn identity_maps_ram_and_lapic() {
        let tables = identity_tables();
        assert_eq!(tables.len(), 2 + PD_COUNT as usize);
        for addr in [
            0,
            GUEST_LOAD_ADDR,
            SHARED_ADDR + 0x1234,
            APIC_MMIO_BASE + 0xb0,
        ] {
            assert_eq!(translate(&tables, addr), Some(addr), "{addr:#x}");
        }
        assert_eq!(translate(&tables, 4 << 30), None, "nothing above 4 GiB");
    }

    #[test]
    fn lapic_page_is_uncached_and_ram_is_not() {
        let tables = identity_tables();
        let pd3 = &tables
            .iter()
            .find(|(a, _)| *a == PD_ADDR + 3 * PAGE_SIZE)
            .unwrap()
            .1;
        let lapic = pd3[((APIC_MMIO_BASE >> 21) & 0x1ff) as usize];
        assert_eq!(lapic & (PTE_PCD | PTE_PWT), PTE_PCD | PTE_PWT);
        let pd0 = &tables.iter().find(|(a, _)| *a == PD_ADDR).unwrap().1;
        assert_eq!(pd0[0] & PTE_PCD, 0);
    }
}
