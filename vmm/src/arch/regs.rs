//! Long-mode register state for each vCPU at entry.

use super::gdt::{self, CODE_SELECTOR, DATA_SELECTOR, TSS_SELECTOR};
use super::layout::{GDT_ADDR, PML4_ADDR};
use kvm_bindings::{kvm_regs, kvm_sregs};

/// CR0: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0: monitor coprocessor.
pub const CR0_MP: u64 = 1 << 1;
/// CR0: extension type.
pub const CR0_ET: u64 = 1 << 4;
/// CR0: native FPU error reporting.
pub const CR0_NE: u64 = 1 << 5;
/// CR0: paging.
pub const CR0_PG: u64 = 1 << 31;
/// CR4: physical address extension.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4: FXSAVE/FXRSTOR and SSE enabled.
pub const CR4_OSFXSR: u64 = 1 << 9;
/// CR4: unmasked SSE exceptions.
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// EFER: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER: long mode active.
pub const EFER_LMA: u64 = 1 << 10;
/// RFLAGS: the reserved bit 1, always set.
pub const RFLAGS_RESERVED: u64 = 1 << 1;

/// Fills `sregs` (as read from KVM) with 64-bit long-mode state: flat
/// segments from [`gdt::gdt`], paging on with the identity tables, SSE on,
/// and GS based at `gs_base` (the vCPU's slot, its per-CPU data).
pub fn long_mode_sregs(sregs: &mut kvm_sregs, gs_base: u64) {
    let table = gdt::gdt();
    let code = gdt::segment(table[usize::from(CODE_SELECTOR >> 3)], CODE_SELECTOR);
    let data = gdt::segment(table[usize::from(DATA_SELECTOR >> 3)], DATA_SELECTOR);
    let tss = gdt::segment(table[usize::from(TSS_SELECTOR >> 3)], TSS_SELECTOR);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.gs.base = gs_base;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&table) - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_PG;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.efer = EFER_LME | EFER_LMA;
}

/// General-purpose registers at entry: `rip` at the ELF entry point, the
/// vCPU's stack at `stack_top`, interrupts off.
pub fn entry_regs(entry: u64, stack_top: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsp: stack_top,
        rbp: stack_top,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

/// One line with the registers a user needs to see why a guest stopped.
pub fn describe(regs: &kvm_regs, sregs: Option<&kvm_sregs>) -> String {
    let mut line = format!(
        "rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rcx={:#x} rdx={:#x}",
        regs.rip, regs.rsp, regs.rflags, regs.rax, regs.rcx, regs.rdx
    );
    if let Some(s) = sregs {
        line.push_str(&format!(
            " cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
            s.cr0, s.cr3, s.cr4, s.efer
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_bits() {
        let mut sregs = kvm_sregs::default();
        long_mode_sregs(&mut sregs, 0x20_0000);
        assert_eq!(sregs.gs.base, 0x20_0000);
        assert_eq!(sregs.fs.base, 0);
        assert_eq!(sregs.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_ne!(sregs.cr4 & CR4_PAE, 0);
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(sregs.cr3, PML4_ADDR);
        assert_eq!(sregs.cs.l, 1);
        assert_eq!(sregs.cs.selector, CODE_SELECTOR);
        assert_eq!(sregs.ss.selector, DATA_SELECTOR);
        assert_eq!(sregs.gdt.limit, 31);
    }

    #[test]
    fn entry_regs_start_with_interrupts_off() {
        let regs = entry_regs(0x10_0000, 0x1_2000);
        assert_eq!(regs.rsp, 0x1_2000);
        assert_eq!(regs.rip, 0x10_0000);
        assert_eq!(regs.rflags, RFLAGS_RESERVED);
        assert_eq!(regs.rsp % 16, 0);
        assert!(describe(&regs, None).contains("rip=0x100000"));
    }
}
