//! tickburst's bare-metal guest.
//!
//! Entered in 64-bit long mode by the VMM on every vCPU at once (identity-mapped
//! page tables, flat GDT, a stack per vCPU, GS base at the vCPU's slot,
//! interrupts off). Each vCPU loads the IDT (the first one builds it), checks
//! that its LAPIC ID is the one its slot was written for, programs its LAPIC
//! timer from its slot's configuration block, enables interrupts and idles (HLT
//! or spin). Before that, when the VMM asks for it, a probe phase shows the
//! host KVM's timer hrtimer (see `probe_timer`). The timer ISR stores a TSC timestamp per tick in the vCPU's ring,
//! bumps its counters and writes EOI. There is no other shared mutable state:
//! everything per vCPU lives in its slot, found through GS.
//!
//! Built by `build.rs` with the stable host toolchain; see the crate docs.

#![no_std]
#![no_main]

#[path = "../src/abi.rs"]
#[allow(dead_code)]
mod abi;

use abi::{ApicMode, GuestConfig, IdleMode, SharedPage, TimerMode};
use core::arch::{asm, global_asm};
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicU32, Ordering};

// ---- LAPIC registers (xAPIC MMIO offsets; x2APIC MSR = 0x800 + offset / 16) ----

/// IA32_APIC_BASE MSR.
const MSR_IA32_APIC_BASE: u32 = 0x1b;
/// IA32_APIC_BASE: xAPIC global enable.
const APIC_BASE_ENABLE: u64 = 1 << 11;
/// IA32_APIC_BASE: x2APIC mode enable.
const APIC_BASE_EXTD: u64 = 1 << 10;
/// xAPIC MMIO base.
const XAPIC_MMIO_BASE: u64 = 0xfee0_0000;
/// First x2APIC MSR.
const X2APIC_MSR_BASE: u32 = 0x800;

/// Local APIC ID register.
const APIC_ID: u32 = 0x020;
/// xAPIC: the ID sits in bits 24-31 of the ID register (x2APIC: all 32 bits).
const XAPIC_ID_SHIFT: u32 = 24;
/// Task priority register.
const APIC_TPR: u32 = 0x080;
/// End-of-interrupt register.
const APIC_EOI: u32 = 0x0b0;
/// Spurious-interrupt vector register.
const APIC_SVR: u32 = 0x0f0;
/// LVT timer register.
const APIC_LVT_TIMER: u32 = 0x320;
/// Timer initial count register.
const APIC_TMICT: u32 = 0x380;
/// Timer divide configuration register.
const APIC_TDCR: u32 = 0x3e0;

/// SVR: APIC software enable.
const APIC_SVR_ENABLE: u32 = 1 << 8;
/// LVT timer mode: one-shot (bits 17-18 = 00).
const APIC_LVT_TIMER_ONESHOT: u32 = 0;
/// LVT timer mode: periodic (bits 17-18 = 01).
const APIC_LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// LVT timer mode: TSC-deadline (bits 17-18 = 10).
const APIC_LVT_TIMER_TSC_DEADLINE: u32 = 2 << 17;
/// IA32_TSC_DEADLINE MSR.
const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// LVT: masked.
const APIC_LVT_MASKED: u32 = 1 << 16;

/// CPUID leaf the exit-heavy self-test asks (the vendor leaf: always there).
const CPUID_LEAF_EXIT: u32 = 0;
/// CPUID.1:ECX x2APIC support.
const CPUID_1_ECX_X2APIC: u32 = 1 << 21;
/// CPUID.1:ECX TSC-deadline timer support.
const CPUID_1_ECX_TSC_DEADLINE: u32 = 1 << 24;

// ---- IDT ----

const IDT_ENTRIES: usize = 256;
/// Number of architectural exception vectors.
const EXCEPTION_VECTORS: usize = 32;
/// Kernel code selector set up by the VMM's GDT.
const CODE_SELECTOR: u16 = 0x08;
/// IDT gate type: present, DPL 0, 64-bit interrupt gate.
const GATE_INTERRUPT: u8 = 0x8e;

#[repr(C)]
#[derive(Clone, Copy)]
struct IdtEntry {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl IdtEntry {
    const MISSING: IdtEntry = IdtEntry {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attr: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn gate(handler: u64) -> IdtEntry {
        IdtEntry {
            offset_low: handler as u16,
            selector: CODE_SELECTOR,
            ist: 0,
            type_attr: GATE_INTERRUPT,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, packed)]
struct DescriptorTablePointer {
    limit: u16,
    base: u64,
}

/// The IDT, shared by all vCPUs: built once by the first vCPU to start.
static mut IDT: [IdtEntry; IDT_ENTRIES] = [IdtEntry::MISSING; IDT_ENTRIES];
/// [`IDT`] state: [`IDT_EMPTY`], [`IDT_BUILDING`] or [`IDT_READY`].
static IDT_STATE: AtomicU32 = AtomicU32::new(IDT_EMPTY);
/// Set once by `guest_main` (before `sti`) for [`IdleMode::SelfTestHostile`];
/// read by every vCPU's ISR.
static HOSTILE: AtomicU32 = AtomicU32::new(0);

/// Nobody has started building the IDT.
const IDT_EMPTY: u32 = 0;
/// One vCPU is building the IDT; the others wait.
const IDT_BUILDING: u32 = 1;
/// The IDT is complete and never written again.
const IDT_READY: u32 = 2;

// Entry point, exception stubs and the timer/spurious ISR stubs.
//
// Each exception stub passes its vector in edi and the frame pointer in rsi to
// `exception_entry`; vectors with an error code are told apart there.
// The timer stub saves every caller-saved GPR and the FPU/SSE state, so the
// Rust ISR may clobber anything.
global_asm!(
    ".section .text.start, \"ax\"",
    ".global _start",
    "_start:",
    "    and rsp, -16",
    "    call guest_main",
    "2:  cli",
    "    hlt",
    "    jmp 2b",
    ".text",
    ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "exception_stub_\\n:",
    "    mov edi, \\n",
    "    mov rsi, rsp",
    "    and rsp, -16",
    "    call exception_entry",
    ".endr",
    ".section .rodata",
    ".balign 8",
    ".global EXCEPTION_STUBS",
    "EXCEPTION_STUBS:",
    ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    "    .quad exception_stub_\\n",
    ".endr",
    ".text",
    // An interrupt stub: saves every caller-saved GPR and the FPU/SSE
    // state around a call of the Rust handler.
    ".macro isr_stub name, handler",
    ".global \\name",
    "\\name:",
    "    push rax",
    "    push rcx",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    push rbp",
    "    mov rbp, rsp",
    "    sub rsp, 512",
    "    and rsp, -16",
    "    fxsave64 [rsp]",
    "    call \\handler",
    "    fxrstor64 [rsp]",
    "    mov rsp, rbp",
    "    pop rbp",
    "    pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop rcx",
    "    pop rax",
    "    iretq",
    ".endm",
    "isr_stub timer_stub, timer_isr",
    "isr_stub probe_stub, probe_isr",
    ".global spurious_stub",
    "spurious_stub:",
    "    lock inc qword ptr gs:[{spurious_counter}]",
    "    iretq",
    spurious_counter = const abi::RESULTS_OFFSET
        + core::mem::offset_of!(abi::GuestResults, spurious_count),
);

unsafe extern "C" {
    static EXCEPTION_STUBS: [u64; EXCEPTION_VECTORS];
    fn timer_stub();
    fn probe_stub();
    fn spurious_stub();
}

/// This vCPU's slot: the VMM loaded its address into GS base and wrote it at
/// `GS:[SLOT_ADDR_OFFSET]`.
fn shared() -> *mut SharedPage {
    let slot: u64;
    // SAFETY: a load through GS, whose base the VMM set to this vCPU's slot
    // before the vCPU first ran; the guest never changes GS.
    unsafe {
        asm!("mov {}, qword ptr gs:[{off}]", out(reg) slot, off = const abi::SLOT_ADDR_OFFSET,
             options(nostack, readonly, preserves_flags))
    };
    slot as *mut SharedPage
}

/// This vCPU's configuration block.
fn config() -> GuestConfig {
    // SAFETY: the slot is identity mapped; the VMM wrote the config block
    // before starting the vCPU and never writes it while the guest runs.
    unsafe { core::ptr::read_volatile(addr_of!((*shared()).config)) }
}

fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: rdtsc only reads the time-stamp counter.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

fn rdmsr(msr: u32) -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: only architectural MSRs known to KVM are read.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

fn wrmsr(msr: u32, value: u64) {
    // SAFETY: only the APIC base and x2APIC MSRs are written, with valid values.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack))
    };
}

fn cpuid_ecx(leaf: u32) -> u32 {
    let ecx: u32;
    // SAFETY: cpuid is always available in long mode; rbx is preserved by hand
    // because LLVM reserves it.
    unsafe {
        asm!("mov {tmp:r}, rbx", "cpuid", "mov rbx, {tmp:r}", tmp = out(reg) _,
             inout("eax") leaf => _, inout("ecx") 0 => ecx, out("edx") _, options(nostack))
    };
    ecx
}

fn outl(port: u16, value: u32) {
    // SAFETY: the status port is handled by the VMM; writing it has no other effect.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack)) };
}

/// Reads a LAPIC register in the current mode.
fn apic_read(mode: ApicMode, reg: u32) -> u32 {
    match mode {
        ApicMode::X2Apic => rdmsr(X2APIC_MSR_BASE + (reg >> 4)) as u32,
        // SAFETY: as in `apic_write`.
        ApicMode::XApic => unsafe {
            core::ptr::read_volatile((XAPIC_MMIO_BASE + u64::from(reg)) as *const u32)
        },
    }
}

/// This vCPU's LAPIC ID.
fn apic_id(mode: ApicMode) -> u32 {
    match mode {
        ApicMode::X2Apic => apic_read(mode, APIC_ID),
        ApicMode::XApic => apic_read(mode, APIC_ID) >> XAPIC_ID_SHIFT,
    }
}

/// Writes a LAPIC register in the current mode.
fn apic_write(mode: ApicMode, reg: u32, value: u32) {
    match mode {
        ApicMode::X2Apic => wrmsr(X2APIC_MSR_BASE + (reg >> 4), u64::from(value)),
        // SAFETY: the LAPIC page is identity mapped by the VMM's page tables
        // and `reg` is one of the register offsets above.
        ApicMode::XApic => unsafe {
            core::ptr::write_volatile((XAPIC_MMIO_BASE + u64::from(reg)) as *mut u32, value)
        },
    }
}

fn report(status: u32) {
    // SAFETY: the slot is identity mapped and only this vCPU writes its results.
    unsafe { core::ptr::write_volatile(addr_of_mut!((*shared()).results.status), status) };
    outl(abi::STATUS_PORT, status);
}

fn fail_config(error: u32) -> ! {
    // SAFETY: as in `report`.
    unsafe { core::ptr::write_volatile(addr_of_mut!((*shared()).results.error), error) };
    report(abi::STATUS_BAD_CONFIG);
    halt_forever()
}

fn halt_forever() -> ! {
    loop {
        // SAFETY: cli; hlt stops this CPU; nothing runs afterwards.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Builds the IDT if this vCPU is the first to get here, waits until it is
/// built otherwise, and loads it.
fn install_idt() {
    match IDT_STATE.compare_exchange(IDT_EMPTY, IDT_BUILDING, Ordering::Acquire, Ordering::Acquire)
    {
        Ok(_) => {
            // SAFETY: only the vCPU that won the exchange writes the IDT, and
            // nobody reads it before IDT_READY is published below.
            unsafe {
                let idt = &mut *addr_of_mut!(IDT);
                let stubs = &*addr_of!(EXCEPTION_STUBS);
                for (entry, stub) in idt.iter_mut().zip(stubs.iter()) {
                    *entry = IdtEntry::gate(*stub);
                }
                idt[usize::from(abi::TIMER_VECTOR)] = IdtEntry::gate(timer_stub as usize as u64);
                idt[usize::from(abi::PROBE_VECTOR)] = IdtEntry::gate(probe_stub as usize as u64);
                idt[usize::from(abi::SPURIOUS_VECTOR)] =
                    IdtEntry::gate(spurious_stub as usize as u64);
            }
            IDT_STATE.store(IDT_READY, Ordering::Release);
        }
        Err(_) => {
            while IDT_STATE.load(Ordering::Acquire) != IDT_READY {
                core::hint::spin_loop();
            }
        }
    }
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<[IdtEntry; IDT_ENTRIES]>() - 1) as u16,
        base: addr_of!(IDT) as u64,
    };
    // SAFETY: the IDT is complete (IDT_READY) and lives for the whole run.
    unsafe { asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack)) };
}

#[unsafe(no_mangle)]
extern "C" fn guest_main() -> ! {
    install_idt();
    let config = config();
    if config.magic != abi::MAGIC || config.abi_version != abi::ABI_VERSION {
        fail_config(abi::ERR_BAD_MAGIC);
    }
    let Some(mode) = ApicMode::from_raw(config.apic_mode) else {
        fail_config(abi::ERR_BAD_APIC_MODE)
    };
    let Some(idle) = IdleMode::from_raw(config.idle_mode) else {
        fail_config(abi::ERR_BAD_IDLE_MODE)
    };
    if idle == IdleMode::SelfTestFault {
        // SAFETY: deliberately raises #UD; the IDT installed above reports it.
        unsafe { asm!("ud2", options(nomem, nostack)) };
    }
    let Some(timer) = TimerMode::from_raw(config.timer_mode) else {
        fail_config(abi::ERR_BAD_TIMER_MODE)
    };
    if config.initial_count == 0 || abi::divisor_for_config(config.divide_config).is_none() {
        fail_config(abi::ERR_BAD_TIMER);
    }
    if timer == TimerMode::TscDeadline
        && (config.tsc_period == 0 || cpuid_ecx(1) & CPUID_1_ECX_TSC_DEADLINE == 0)
    {
        fail_config(abi::ERR_NO_TSC_DEADLINE);
    }

    let mut base = rdmsr(MSR_IA32_APIC_BASE) | APIC_BASE_ENABLE;
    if mode == ApicMode::X2Apic {
        if cpuid_ecx(1) & CPUID_1_ECX_X2APIC == 0 {
            fail_config(abi::ERR_NO_X2APIC);
        }
        base |= APIC_BASE_EXTD;
    }
    wrmsr(MSR_IA32_APIC_BASE, base);
    if apic_id(mode) != config.apic_id {
        fail_config(abi::ERR_WRONG_SLOT);
    }
    let lvt_mode = match timer {
        TimerMode::Periodic => APIC_LVT_TIMER_PERIODIC,
        TimerMode::OneShot => APIC_LVT_TIMER_ONESHOT,
        TimerMode::TscDeadline => APIC_LVT_TIMER_TSC_DEADLINE,
    };

    apic_write(mode, APIC_TPR, 0);
    apic_write(mode, APIC_SVR, APIC_SVR_ENABLE | u32::from(abi::SPURIOUS_VECTOR));
    apic_write(mode, APIC_LVT_TIMER, APIC_LVT_MASKED);
    apic_write(mode, APIC_TDCR, config.divide_config);
    if config.probe_count != 0 {
        probe_timer(mode, config.probe_count);
    }
    apic_write(mode, APIC_LVT_TIMER, lvt_mode | u32::from(abi::TIMER_VECTOR));

    // SAFETY: as in `report`.
    unsafe { core::ptr::write_volatile(addr_of_mut!((*shared()).results.ready_tsc), rdtsc()) };
    report(abi::STATUS_READY);
    // Arming the timer last keeps the first tick after the ready report.
    match timer {
        TimerMode::Periodic | TimerMode::OneShot => {
            apic_write(mode, APIC_TMICT, config.initial_count)
        }
        TimerMode::TscDeadline => arm_deadline(rdtsc() + config.tsc_period),
    }

    if idle == IdleMode::SelfTestHostile {
        HOSTILE.store(1, Ordering::Relaxed);
    }
    match idle {
        IdleMode::Hlt | IdleMode::SelfTestHostile => loop {
            // SAFETY: enables interrupts and waits for the next one; the IDT is live.
            unsafe { asm!("sti", "hlt", options(nomem, nostack)) };
        },
        IdleMode::SelfTestExits => exit_loop(),
        IdleMode::Spin | IdleMode::SelfTestFault => {
            // SAFETY: as above.
            unsafe { asm!("sti", options(nomem, nostack)) };
            loop {
                core::hint::spin_loop();
            }
        }
    }
}

/// The exit-heavy self-test (`IdleMode::SelfTestExits`): with interrupts on
/// (the timer keeps ticking), CPUID in a loop, each one an exit to KVM, and
/// the loops counted in this vCPU's `exit_loops` for the host to read.
fn exit_loop() -> ! {
    let page = shared();
    // SAFETY: enables interrupts; the IDT is live and the timer ISR does not
    // touch `exit_loops`.
    unsafe { asm!("sti", options(nomem, nostack)) };
    let mut loops: u64 = 0;
    loop {
        cpuid_ecx(CPUID_LEAF_EXIT);
        loops += 1;
        // SAFETY: the slot is identity mapped and only this vCPU's loop
        // writes `exit_loops`.
        unsafe { core::ptr::write_volatile(addr_of_mut!((*page).results.exit_loops), loops) };
    }
}

/// The probe phase (see `abi::STATUS_PROBED`): a one-shot of `count` on the
/// probe vector, waited for in HLT. KVM starts the LAPIC timer's hrtimer in
/// this vCPU's thread either way: at once with the sw timer, or, with the hv
/// timer (which counts only in guest mode), when the halted vCPU blocks. The
/// host learns the hrtimer's address from that. Then the guest reports
/// `STATUS_PROBED` and waits with interrupts off and no timer armed until the
/// VMM sets `start`.
fn probe_timer(mode: ApicMode, count: u32) {
    apic_write(mode, APIC_LVT_TIMER, APIC_LVT_TIMER_ONESHOT | u32::from(abi::PROBE_VECTOR));
    apic_write(mode, APIC_TMICT, count);
    let page = shared();
    // SAFETY: the slot is identity mapped; `probe_ticks` is written only by
    // this vCPU's probe ISR. `sti; hlt` takes an interrupt that became
    // pending after the check (the STI shadow covers the HLT), so no wake-up
    // is lost; `cli` closes the window again.
    unsafe {
        while core::ptr::read_volatile(addr_of!((*page).results.probe_ticks)) == 0 {
            asm!("sti", "hlt", "cli", options(nomem, nostack));
        }
    }
    apic_write(mode, APIC_LVT_TIMER, APIC_LVT_MASKED);
    report(abi::STATUS_PROBED);
    // SAFETY: the VMM writes `start` once, after the probe report; a volatile
    // read sees it.
    while unsafe { core::ptr::read_volatile(addr_of!((*page).config.start)) } == 0 {
        core::hint::spin_loop();
    }
}

/// Rust half of the probe ISR: counts the interrupt and writes EOI.
#[unsafe(no_mangle)]
extern "C" fn probe_isr() {
    let page = shared();
    // SAFETY: as in `timer_isr`: only this vCPU's probe ISR writes
    // `probe_ticks`, and it does not nest.
    unsafe {
        let n = core::ptr::read_volatile(addr_of!((*page).results.probe_ticks));
        core::ptr::write_volatile(addr_of_mut!((*page).results.probe_ticks), n + 1);
        let apic_raw = core::ptr::read_volatile(addr_of!((*page).config.apic_mode));
        apic_write(ApicMode::from_raw(apic_raw).unwrap_or(ApicMode::X2Apic), APIC_EOI, 0);
    }
}

/// Writes the next TSC deadline (also in xAPIC mode: it is an MSR) and keeps
/// it in this vCPU's results.
fn arm_deadline(deadline: u64) {
    // SAFETY: the deadline is written before `sti` and then only by this
    // vCPU's ISR, which does not nest.
    unsafe { core::ptr::write_volatile(addr_of_mut!((*shared()).results.deadline), deadline) };
    wrmsr(MSR_IA32_TSC_DEADLINE, deadline);
}

/// Re-arms the one-shot and TSC-deadline timers. The next deadline is one
/// period after the last; if that is already past (after a pause) it is one
/// period from now, so missed periods are skipped, never made up: these are
/// the controls that must not burst.
fn rearm(page: *mut SharedPage, timer: TimerMode, mode: ApicMode, now: u64) {
    match timer {
        TimerMode::Periodic => {}
        TimerMode::OneShot => {
            // SAFETY: as in `config`.
            let count = unsafe { core::ptr::read_volatile(addr_of!((*page).config.initial_count)) };
            apic_write(mode, APIC_TMICT, count)
        }
        TimerMode::TscDeadline => {
            // SAFETY: as in `config` and `arm_deadline`.
            let (last, period) = unsafe {
                (
                    core::ptr::read_volatile(addr_of!((*page).results.deadline)),
                    core::ptr::read_volatile(addr_of!((*page).config.tsc_period)),
                )
            };
            let next = last.wrapping_add(period);
            arm_deadline(if next > now { next } else { now + period });
        }
    }
}

/// Rust half of the timer ISR: one ring entry and EOI per interrupt.
#[unsafe(no_mangle)]
extern "C" fn timer_isr() {
    let tsc = rdtsc();
    let page = shared();
    // Only the two fields the ISR needs on every tick; validated by
    // guest_main before `sti`, so the fallbacks are never taken.
    // SAFETY: as in `config`.
    let (apic_raw, timer_raw) = unsafe {
        (
            core::ptr::read_volatile(addr_of!((*page).config.apic_mode)),
            core::ptr::read_volatile(addr_of!((*page).config.timer_mode)),
        )
    };
    let mode = ApicMode::from_raw(apic_raw).unwrap_or(ApicMode::X2Apic);
    let timer = TimerMode::from_raw(timer_raw).unwrap_or(TimerMode::Periodic);
    // SAFETY: the slot is identity mapped; this vCPU's ISR is the only writer
    // of its ring and counters and cannot nest (interrupt gate, EOI last).
    unsafe {
        let head = core::ptr::read_volatile(addr_of!((*page).results.ring_head));
        let ticks = core::ptr::read_volatile(addr_of!((*page).results.tick_count));
        let action = if HOSTILE.load(Ordering::Relaxed) != 0 {
            abi::hostile_action(ticks)
        } else {
            abi::HostileAction::Plain
        };
        let (stamp, next_head) = match action {
            abi::HostileAction::Plain => (tsc, head + 1),
            abi::HostileAction::Past => (tsc.wrapping_sub(abi::HOSTILE_PAST_CYCLES), head + 1),
            abi::HostileAction::Future => (tsc.wrapping_add(abi::HOSTILE_FUTURE_CYCLES), head + 1),
            abi::HostileAction::HeadJump => (
                tsc,
                head + 1 + abi::RING_ENTRIES as u64 + abi::HOSTILE_HEAD_JUMP_EXTRA,
            ),
            abi::HostileAction::HeadBack => (tsc, (head + 1).saturating_sub(abi::HOSTILE_HEAD_BACK)),
        };
        let slot = (head as usize) & (abi::RING_ENTRIES - 1);
        core::ptr::write_volatile(addr_of_mut!((*page).ring[slot]), stamp);
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::Release);
        core::ptr::write_volatile(addr_of_mut!((*page).results.ring_head), next_head);
        core::ptr::write_volatile(addr_of_mut!((*page).results.tick_count), ticks + 1);
        rearm(page, timer, mode, tsc);
        apic_write(mode, APIC_EOI, 0);
    }
}

/// Exception frame as pushed by the CPU (without error code).
#[repr(C)]
struct ExceptionFrame {
    rip: u64,
    cs: u64,
    rflags: u64,
}

/// Vectors for which the CPU pushes an error code.
fn has_error_code(vector: u32) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

#[unsafe(no_mangle)]
extern "C" fn exception_entry(vector: u32, frame: *const u64) -> ! {
    // SAFETY: `frame` is the stack pointer at exception entry, which holds the
    // CPU-pushed frame (optionally preceded by an error code).
    let (error_code, rip) = unsafe {
        if has_error_code(vector) {
            (*frame, (*(frame.add(1) as *const ExceptionFrame)).rip)
        } else {
            (0, (*(frame as *const ExceptionFrame)).rip)
        }
    };
    let page = shared();
    // SAFETY: as in `report`.
    unsafe {
        core::ptr::write_volatile(addr_of_mut!((*page).results.fault_vector), vector);
        core::ptr::write_volatile(addr_of_mut!((*page).results.fault_rip), rip);
        core::ptr::write_volatile(addr_of_mut!((*page).results.fault_error_code), error_code);
    }
    report(abi::STATUS_FAULT);
    halt_forever()
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    halt_forever()
}
