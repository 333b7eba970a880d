//! tickburst's guest for QEMU: the same timer code as `main.rs`, booted by
//! `qemu-system-x86_64 -accel kvm -kernel <elf>` instead of by tickburst.
//!
//! tickburst starts its guest directly in long mode with a configuration it
//! writes into guest memory. QEMU cannot do that, so this image adds what a
//! VMM would do:
//!
//! - a **PVH ELF note** (`XEN_ELFNOTE_PHYS32_ENTRY`): QEMU's x86 machines load
//!   an ELF that carries it and enter it in 32-bit protected mode, paging off,
//!   through the firmware (SeaBIOS with its `pvh.bin` option ROM, or qboot);
//! - a **32-bit entry** (`pvh_start32`) that loads a flat GDT, turns on PAE,
//!   loads static page tables identity-mapping the first 4 GiB with 2 MiB pages
//!   (RAM and the xAPIC page), sets `EFER.LME` and paging, and far-returns into
//!   64-bit code;
//! - **a built-in default configuration** in vCPU 0's slot (the same
//!   [`abi::SharedPage`] tickburst writes): periodic LAPIC timer at 1 ms
//!   (KVM's 1 GHz APIC bus, initial count 1 000 000, divide by 1), x2APIC
//!   where CPUID offers it (else xAPIC), HLT idle, no probe phase; GS base
//!   points at the slot as tickburst sets it;
//! - one line on COM1 (`0x3f8`), [`READY_LINE`], right before it calls the
//!   shared `guest_main`, which arms the timer at once (no I/O on the way, and
//!   the configuration it checks was built to pass those checks).
//!
//! Only the boot processor runs; QEMU's other CPUs, if any, stay in
//! wait-for-SIPI. `guest_main` still writes its status to
//! [`abi::STATUS_PORT`] (`0x510`, a 32-bit write): on QEMU that is fw_cfg's
//! 16-bit selector port, which ignores 32-bit accesses.
//!
//! Built by `build.rs` as a second artifact (`qemu-guest.elf`) with
//! `qemu.ld`; `main.rs` is compiled in unchanged as a module.

#![no_std]
#![no_main]

// The tickburst guest itself: its IDT, `guest_main`, the ISRs and the panic
// handler. Its crate-level attributes (`no_std`, `no_main`) are this crate's
// too, so the module's copies are inert.
#[allow(unused_attributes)]
#[path = "main.rs"]
mod guest;

#[path = "../src/abi.rs"]
#[allow(dead_code)]
mod abi;

use abi::{ApicMode, GuestConfig, GuestResults, IdleMode, SharedPage, TimerMode};
use core::arch::{asm, global_asm};
use core::ptr::addr_of_mut;

/// The line written to COM1 when the guest is about to arm its timer.
const READY_LINE: &[u8] = b"tickburst-guest ready\n";

// ---- the default configuration ----

/// KVM's LAPIC timer counts at 1 GHz (1 ns APIC bus cycle) unless the VMM
/// changes it; QEMU does not.
const APIC_BUS_HZ: u32 = 1_000_000_000;
/// Timer frequency of the default configuration: one tick per millisecond.
const TIMER_HZ: u32 = 1_000;
/// LAPIC timer divisor of the default configuration.
const TIMER_DIVISOR: u32 = 1;

// ---- CPU registers and bits (as in KVM selftests' processor.h) ----

/// CPUID leaf with the feature flags and the initial APIC ID.
const CPUID_LEAF_FEATURES: u32 = 1;
/// CPUID.1:ECX x2APIC support.
const CPUID_1_ECX_X2APIC: u32 = 1 << 21;
/// CPUID.1:EBX bits 24-31: the initial APIC ID.
const CPUID_1_EBX_APIC_ID_SHIFT: u32 = 24;
/// IA32_GS_BASE MSR.
const MSR_GS_BASE: u32 = 0xc000_0101;

// ---- COM1 (16550 UART) ----

/// COM1's I/O base.
const COM1: u16 = 0x3f8;
/// Transmit holding register (DLAB 0) / divisor latch low (DLAB 1).
const UART_TX: u16 = 0;
/// Interrupt enable register (DLAB 0) / divisor latch high (DLAB 1).
const UART_IER: u16 = 1;
/// FIFO control register.
const UART_FCR: u16 = 2;
/// Line control register.
const UART_LCR: u16 = 3;
/// Line status register.
const UART_LSR: u16 = 5;
/// LCR: divisor latch access.
const UART_LCR_DLAB: u8 = 1 << 7;
/// LCR: 8 data bits, no parity, 1 stop bit.
const UART_LCR_8N1: u8 = 0x03;
/// FCR: enable and clear both FIFOs.
const UART_FCR_ENABLE_CLEAR: u8 = 0x07;
/// LSR: the transmit holding register is empty.
const UART_LSR_THRE: u8 = 1 << 5;
/// Divisor for 115200 baud (115200 / 115200).
const UART_DIVISOR_115200: u8 = 1;

// Boot: the PVH note, the 32-bit entry, the GDT, the page tables and the
// boot stack.
//
// The page tables are static data, complete at link time: PML4[0] ->
// PDPT, PDPT[0..4] -> four page directories, PD entry j of directory i maps
// the 2 MiB page at (i * 512 + j) * 2 MiB. The LAPIC page (0xfee00000) falls
// in the last directory, whose entries are uncached (PCD | PWT).
global_asm!(
    // PVH: XEN_ELFNOTE_PHYS32_ENTRY (18), name "Xen", the 32-bit entry as a
    // 64-bit value (QEMU reads a pointer-sized value from an ELF64 note).
    ".section .note.pvh, \"a\", @note",
    ".balign 4",
    "    .long 4",          // namesz ("Xen\0")
    "    .long 8",          // descsz
    "    .long {xen_elfnote_phys32_entry}",
    "    .asciz \"Xen\"",
    "    .balign 4",
    "    .quad pvh_start32",
    "    .balign 4",
    // The 32-bit entry (PVH boot ABI: protected mode, paging off, flat CS
    // and DS, interrupts off, ebx = start info, which this guest ignores).
    ".section .text.pvh, \"ax\"",
    ".code32",
    ".global pvh_start32",
    "pvh_start32:",
    "    cli",
    "    cld",
    "    lgdt [boot_gdt_pointer]",
    "    mov ax, {data_selector}",
    "    mov ds, ax",
    "    mov es, ax",
    "    mov ss, ax",
    "    mov esp, offset boot_stack_top",
    "    mov eax, cr4",
    "    or eax, {cr4_pae}",
    "    mov cr4, eax",
    "    mov eax, offset boot_pml4",
    "    mov cr3, eax",
    "    mov ecx, {msr_efer}",
    "    rdmsr",
    "    or eax, {efer_lme}",
    "    wrmsr",
    "    mov eax, cr0",
    "    or eax, {cr0_pg_pe}",
    "    mov cr0, eax",
    // Compatibility mode now; a far return loads the 64-bit code segment.
    "    push {code_selector}",
    "    mov eax, offset long_start64",
    "    push eax",
    "    retf",
    ".code64",
    "long_start64:",
    "    mov ax, {data_selector}",
    "    mov ds, ax",
    "    mov es, ax",
    "    mov ss, ax",
    "    xor eax, eax",
    "    mov fs, ax",
    // Loading GS clears its base; `qemu_setup` sets the base afterwards.
    "    mov gs, ax",
    "    lea rsp, [rip + boot_stack_top]",
    "    call qemu_setup",
    "    call guest_main",
    "2:  cli",
    "    hlt",
    "    jmp 2b",
    // GDT: null, 64-bit code (0x08, the selector main.rs's IDT gates use),
    // flat data (0x10).
    ".section .rodata.boot, \"a\"",
    ".balign 16",
    "boot_gdt:",
    "    .quad 0",
    "    .quad 0x00af9a000000ffff",
    "    .quad 0x00cf92000000ffff",
    "boot_gdt_end:",
    ".balign 4",
    "    .word 0",
    "boot_gdt_pointer:",
    "    .word boot_gdt_end - boot_gdt - 1",
    "    .long boot_gdt",
    ".section .data.pagetables, \"aw\"",
    ".balign 4096",
    "boot_pml4:",
    "    .quad boot_pdpt + {pte_table}",
    "    .fill 511, 8, 0",
    "boot_pdpt:",
    "    .quad boot_pd + {pte_table}",
    "    .quad boot_pd + 0x1000 + {pte_table}",
    "    .quad boot_pd + 0x2000 + {pte_table}",
    "    .quad boot_pd + 0x3000 + {pte_table}",
    "    .fill 508, 8, 0",
    "boot_pd:",
    ".set page, 0",
    ".rept 1536",
    "    .quad (page << 21) + {pde_ram}",
    ".set page, page + 1",
    ".endr",
    ".rept 512",
    "    .quad (page << 21) + {pde_mmio}",
    ".set page, page + 1",
    ".endr",
    ".section .bss.stack, \"aw\", @nobits",
    ".balign 16",
    "boot_stack:",
    "    .skip {stack_size}",
    "boot_stack_top:",
    ".text",
    xen_elfnote_phys32_entry = const 18,
    data_selector = const 0x10,
    code_selector = const 0x08,
    cr4_pae = const 1 << 5,
    msr_efer = const 0xc000_0080u32,
    efer_lme = const 1 << 8,
    cr0_pg_pe = const (1u32 << 31) | 1,
    // present | writable
    pte_table = const 0x3,
    // present | writable | 2 MiB page
    pde_ram = const 0x83,
    // present | writable | PWT | PCD | 2 MiB page
    pde_mmio = const 0x9b,
    stack_size = const 0x4000,
);

fn outb(port: u16, value: u8) {
    // SAFETY: only COM1's registers are written; they have no effect on
    // memory.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) };
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: reads COM1's line status register; no side effect on memory.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack)) };
    value
}

fn wrmsr(msr: u32, value: u64) {
    // SAFETY: only IA32_GS_BASE is written, with the identity-mapped address
    // of vCPU 0's slot.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack))
    };
}

/// CPUID leaf `leaf`, subleaf 0: (ebx, ecx).
fn cpuid_ebx_ecx(leaf: u32) -> (u32, u32) {
    let ebx: u32;
    let ecx: u32;
    // SAFETY: cpuid is always available in long mode; rbx is saved by hand
    // because LLVM reserves it.
    unsafe {
        asm!("mov {tmp:r}, rbx", "cpuid", "xchg {tmp:r}, rbx", tmp = out(reg) ebx,
             inout("eax") leaf => _, inout("ecx") 0 => ecx, out("edx") _, options(nostack))
    };
    (ebx, ecx)
}

/// COM1 at 115200 8N1, FIFOs on, no interrupts.
fn serial_init() {
    outb(COM1 + UART_IER, 0);
    outb(COM1 + UART_LCR, UART_LCR_DLAB);
    outb(COM1 + UART_TX, UART_DIVISOR_115200);
    outb(COM1 + UART_IER, 0);
    outb(COM1 + UART_LCR, UART_LCR_8N1);
    outb(COM1 + UART_FCR, UART_FCR_ENABLE_CLEAR);
}

fn serial_write(bytes: &[u8]) {
    for &byte in bytes {
        while inb(COM1 + UART_LSR) & UART_LSR_THRE == 0 {
            core::hint::spin_loop();
        }
        outb(COM1 + UART_TX, byte);
    }
}

/// Writes the default configuration into vCPU 0's slot, points GS at it and
/// says ready on COM1. Called once, in long mode, before `guest_main`.
#[unsafe(no_mangle)]
extern "C" fn qemu_setup() {
    let (ebx, ecx) = cpuid_ebx_ecx(CPUID_LEAF_FEATURES);
    let apic_mode = if ecx & CPUID_1_ECX_X2APIC != 0 {
        ApicMode::X2Apic
    } else {
        ApicMode::XApic
    };
    let slot_addr = abi::slot_addr(0);
    let config = GuestConfig {
        magic: abi::MAGIC,
        abi_version: abi::ABI_VERSION,
        apic_mode: apic_mode as u32,
        idle_mode: IdleMode::Hlt as u32,
        initial_count: APIC_BUS_HZ / TIMER_DIVISOR / TIMER_HZ,
        divide_config: match abi::divide_config_for(TIMER_DIVISOR) {
            Some(value) => value,
            None => unreachable!(),
        },
        timer_mode: TimerMode::Periodic as u32,
        apic_id: ebx >> CPUID_1_EBX_APIC_ID_SHIFT,
        slot_addr,
        start: 1,
        ..GuestConfig::default()
    };
    let slot = slot_addr as *mut SharedPage;
    // SAFETY: the slot lies in RAM identity-mapped by the boot page tables
    // (QEMU's smallest useful machine has far more than the 3 MiB the slot
    // ends below), past this image, which QEMU loaded at 1 MiB; nothing else
    // uses it. The ring needs no clearing: entries count only once
    // `ring_head` (zeroed here) passes them.
    unsafe {
        core::ptr::write_volatile(addr_of_mut!((*slot).config), config);
        core::ptr::write_volatile(addr_of_mut!((*slot).results), GuestResults::default());
    }
    wrmsr(MSR_GS_BASE, slot_addr);
    serial_init();
    serial_write(READY_LINE);
}
