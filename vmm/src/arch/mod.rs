//! x86-64 boot state for the tickburst guest: memory map, GDT, identity page
//! tables, control and segment registers, CPUID, LAPIC timer arithmetic.

pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod paging;
pub mod regs;
pub mod timer;
