//! The memory shared between the tickburst guest and the VMM.
//!
//! This one file is compiled into both sides: into the `no_std` guest program
//! (through `#[path]`) and into the VMM (as `guest_payload::abi`). Everything
//! here is `#[repr(C)]` plain data so both sides agree on every offset; the
//! layout is asserted in the unit tests of this crate.
//!
//! Every vCPU has its own [`SharedPage`], a *slot*: slot `i` (vCPU `i`, APIC ID
//! `i`) starts at [`slot_addr`]`(i)`. The VMM points the vCPU's GS base at its
//! slot, so one guest program serves every vCPU: it finds its slot through
//! `GS:[SLOT_ADDR_OFFSET]`.
//!
//! Direction of data:
//! - the VMM writes each slot's [`GuestConfig`] block before the vCPU first runs,
//!   and afterwards only [`GuestConfig::start`], once (see [`STATUS_PROBED`]);
//! - the guest writes the [`GuestResults`] block and the tick ring while it runs.
//!
//! The VMM treats everything the guest writes as untrusted input: it never
//! indexes with a value read from here without bounding it first.

/// Guest-physical address of the first slot (vCPU 0's [`SharedPage`]).
pub const SHARED_BASE: u64 = 0x0020_0000;

/// Most vCPUs (slots) a guest can have.
pub const MAX_VCPUS: usize = 64;

/// Distance between two slots: a [`SharedPage`] rounded up to 4 KiB.
pub const SLOT_STRIDE: u64 = (SHARED_SIZE as u64).next_multiple_of(0x1000);

/// Guest-physical address of vCPU `index`'s slot.
///
/// ```
/// use guest_payload::abi::{slot_addr, SHARED_BASE, SLOT_STRIDE};
/// assert_eq!(slot_addr(0), SHARED_BASE);
/// assert_eq!(slot_addr(3), SHARED_BASE + 3 * SLOT_STRIDE);
/// ```
pub const fn slot_addr(index: u32) -> u64 {
    SHARED_BASE + index as u64 * SLOT_STRIDE
}

/// Value of [`SharedPage::magic`] ("TICKBRST").
pub const MAGIC: u64 = 0x5453_5242_4b43_4954;

/// Version of this layout; bump it on any change. Version 2 added the timer
/// mode and the TSC-deadline period; version 3 one slot per vCPU (the APIC ID
/// and slot address in the config, the last deadline in the results);
/// version 4 the probe phase ([`GuestConfig::probe_count`],
/// [`GuestConfig::start`], [`GuestResults::probe_ticks`], [`STATUS_PROBED`]).
pub const ABI_VERSION: u32 = 4;

/// Number of entries of the tick ring (a power of two).
///
/// At the shortest period KVM allows by default (200 us) this holds 13 s of
/// ticks, far more than the VMM's collector needs between two drains.
pub const RING_ENTRIES: usize = 1 << 16;

/// I/O port the guest writes its status codes to (`out dx, eax`).
pub const STATUS_PORT: u16 = 0x0510;

/// Status code written to [`STATUS_PORT`]: the timer is programmed and
/// interrupts are enabled.
pub const STATUS_READY: u32 = 0x5245_4144; // "READ"
/// Status code written to [`STATUS_PORT`]: the probe one-shot fired while the
/// vCPU was halted (so KVM has started the LAPIC timer's hrtimer in the vCPU's
/// thread, where the host can learn its address), the timer is stopped and
/// interrupts are off. The guest then waits until the VMM sets
/// [`GuestConfig::start`] to a nonzero value before it reports ready and arms
/// its timer: the host's set-up never runs while the timer is armed.
pub const STATUS_PROBED: u32 = 0x5052_4f42; // "PROB"
/// Status code written to [`STATUS_PORT`]: the guest took an exception; the
/// details are in [`GuestResults`].
pub const STATUS_FAULT: u32 = 0x4641_554c; // "FAUL"
/// Status code written to [`STATUS_PORT`]: the configuration block was
/// rejected; [`GuestResults::error`] says why.
pub const STATUS_BAD_CONFIG: u32 = 0x4243_4647; // "BCFG"

/// [`GuestResults::error`]: no error.
pub const ERR_NONE: u32 = 0;
/// [`GuestResults::error`]: magic or ABI version mismatch.
pub const ERR_BAD_MAGIC: u32 = 1;
/// [`GuestResults::error`]: unknown APIC mode.
pub const ERR_BAD_APIC_MODE: u32 = 2;
/// [`GuestResults::error`]: unknown idle mode.
pub const ERR_BAD_IDLE_MODE: u32 = 3;
/// [`GuestResults::error`]: initial count 0 or divide value invalid.
pub const ERR_BAD_TIMER: u32 = 4;
/// [`GuestResults::error`]: CPUID says the requested APIC mode is absent.
pub const ERR_NO_X2APIC: u32 = 5;
/// [`GuestResults::error`]: unknown timer mode.
pub const ERR_BAD_TIMER_MODE: u32 = 6;
/// [`GuestResults::error`]: CPUID says TSC-deadline mode is absent, or the
/// TSC period is 0.
pub const ERR_NO_TSC_DEADLINE: u32 = 7;
/// [`GuestResults::error`]: the LAPIC's ID is not [`GuestConfig::apic_id`]
/// (the vCPU runs with another vCPU's slot).
pub const ERR_WRONG_SLOT: u32 = 8;

/// What a [`GuestResults::error`] code means (for the VMM's messages).
///
/// ```
/// assert!(guest_payload::abi::error_text(8).contains("APIC ID"));
/// ```
pub const fn error_text(code: u32) -> &'static str {
    match code {
        ERR_NONE => "no error",
        ERR_BAD_MAGIC => "magic or ABI version mismatch",
        ERR_BAD_APIC_MODE => "unknown APIC mode",
        ERR_BAD_IDLE_MODE => "unknown idle mode",
        ERR_BAD_TIMER => "timer initial count 0 or bad divide value",
        ERR_NO_X2APIC => "CPUID has no x2APIC",
        ERR_BAD_TIMER_MODE => "unknown timer mode",
        ERR_NO_TSC_DEADLINE => "CPUID has no TSC-deadline timer, or the TSC period is 0",
        ERR_WRONG_SLOT => "the LAPIC's APIC ID is not the one of the vCPU's slot",
        _ => "unknown error code",
    }
}

/// How the guest runs its LAPIC timer.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerMode {
    /// LVT periodic mode: the LAPIC reloads the count itself (the subject).
    Periodic = 1,
    /// LVT one-shot mode, re-armed in the ISR (a control).
    OneShot = 2,
    /// LVT TSC-deadline mode: the ISR writes the next deadline to
    /// `IA32_TSC_DEADLINE` (a control).
    TscDeadline = 3,
}

impl TimerMode {
    /// Decodes the raw value stored in [`GuestConfig::timer_mode`].
    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Periodic),
            2 => Some(Self::OneShot),
            3 => Some(Self::TscDeadline),
            _ => None,
        }
    }
}

/// How the guest talks to its local APIC.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApicMode {
    /// Memory-mapped registers at `0xFEE0_0000`.
    XApic = 1,
    /// MSRs `0x800..=0x8FF`.
    X2Apic = 2,
}

/// What the guest does between interrupts.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleMode {
    /// `sti; hlt` in a loop: the vCPU blocks in KVM between ticks.
    Hlt = 1,
    /// A `pause` loop: the vCPU stays in guest mode.
    Spin = 2,
    /// Self-test of the VMM's untrusted-input path: HLT idle, but the timer
    /// ISR writes hostile ring contents on a fixed pattern of ticks (see
    /// [`hostile_action`]): stamps from the past and from the future, head
    /// jumps past a whole ring, head regressions.
    SelfTestHostile = 0xe,
    /// Exit-heavy self-test (the cost of the host's tracing): interrupts on,
    /// the guest executes CPUID in a loop (every CPUID exits to KVM, which
    /// handles it in the kernel) and counts the loops in
    /// [`GuestResults::exit_loops`]; the timer ticks as usual.
    SelfTestExits = 0xd,
    /// Self-test of the VMM's fault path: the guest executes `ud2` right after
    /// installing its IDT, so it reports vector 6 (#UD).
    SelfTestFault = 0xf,
}

/// What the [`IdleMode::SelfTestHostile`] guest does on its tick number `n`
/// (0-based) instead of a plain ring entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostileAction {
    /// A plain entry: the tick's TSC.
    Plain,
    /// An entry stamped [`HOSTILE_PAST_CYCLES`] before the tick: out of order
    /// (or before the run).
    Past,
    /// An entry stamped [`HOSTILE_FUTURE_CYCLES`] after the tick.
    Future,
    /// A plain entry, then the head moved past a whole ring and then some:
    /// the VMM sees entries it never got (lost) and stale slots.
    HeadJump,
    /// A plain entry, then the head moved back by [`HOSTILE_HEAD_BACK`].
    HeadBack,
}

/// How far back a [`HostileAction::Past`] stamp is, in TSC cycles.
pub const HOSTILE_PAST_CYCLES: u64 = 1 << 30;
/// How far ahead a [`HostileAction::Future`] stamp is, in TSC cycles.
pub const HOSTILE_FUTURE_CYCLES: u64 = 1 << 44;
/// How many entries a [`HostileAction::HeadBack`] moves the head back: the
/// head stays below where the VMM read for this many ticks (50 ms at 1 ms),
/// so a VMM that polls every 2 ms at low priority on a loaded host sees it
/// (with 3 it missed all three regressions of a run once).
pub const HOSTILE_HEAD_BACK: u64 = 50;
/// How far a [`HostileAction::HeadJump`] moves the head beyond a whole ring.
pub const HOSTILE_HEAD_JUMP_EXTRA: u64 = 5;

/// The hostile pattern: a past stamp every 7th tick, a future one every 11th,
/// a head jump every 997th and a head regression every 1499th.
///
/// ```
/// use guest_payload::abi::{hostile_action, HostileAction};
/// assert_eq!(hostile_action(3), HostileAction::Past);
/// assert_eq!(hostile_action(0), HostileAction::Plain);
/// ```
pub const fn hostile_action(n: u64) -> HostileAction {
    if n % 1499 == 700 {
        HostileAction::HeadBack
    } else if n % 997 == 500 {
        HostileAction::HeadJump
    } else if n % 11 == 5 {
        HostileAction::Future
    } else if n % 7 == 3 {
        HostileAction::Past
    } else {
        HostileAction::Plain
    }
}

impl ApicMode {
    /// Decodes the raw value stored in [`GuestConfig::apic_mode`].
    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::XApic),
            2 => Some(Self::X2Apic),
            _ => None,
        }
    }
}

impl IdleMode {
    /// Decodes the raw value stored in [`GuestConfig::idle_mode`].
    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Hlt),
            2 => Some(Self::Spin),
            0xd => Some(Self::SelfTestExits),
            0xe => Some(Self::SelfTestHostile),
            0xf => Some(Self::SelfTestFault),
            _ => None,
        }
    }
}

/// Interrupt vector of the LAPIC timer.
pub const TIMER_VECTOR: u8 = 0x40;
/// Spurious-interrupt vector programmed into the SVR.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// Vector of the probe one-shot (see [`STATUS_PROBED`]): counted apart from
/// the ticks.
pub const PROBE_VECTOR: u8 = 0x41;

/// Configuration written by the VMM before the vCPU runs.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestConfig {
    /// Must be [`MAGIC`].
    pub magic: u64,
    /// Must be [`ABI_VERSION`].
    pub abi_version: u32,
    /// Raw [`ApicMode`].
    pub apic_mode: u32,
    /// Raw [`IdleMode`].
    pub idle_mode: u32,
    /// LAPIC timer initial count (TMICT), nonzero.
    pub initial_count: u32,
    /// LAPIC timer divide configuration register value (TDCR encoding).
    pub divide_config: u32,
    /// Raw [`TimerMode`].
    pub timer_mode: u32,
    /// Period in guest TSC cycles ([`TimerMode::TscDeadline`] only).
    pub tsc_period: u64,
    /// APIC ID of the vCPU this slot belongs to (the guest checks it).
    pub apic_id: u32,
    /// Initial count of the probe one-shot (same divider as the timer), or 0
    /// to skip the probe phase (see [`STATUS_PROBED`]).
    pub probe_count: u32,
    /// Guest-physical address of this slot; the guest reads it through GS.
    pub slot_addr: u64,
    /// Set nonzero by the VMM when the guest may leave the probe phase; the
    /// one field written while the guest runs.
    pub start: u64,
}

/// Results written by the guest.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestResults {
    /// Last status code written to [`STATUS_PORT`].
    pub status: u32,
    /// One of the `ERR_*` codes.
    pub error: u32,
    /// Exception vector when `status == STATUS_FAULT`.
    pub fault_vector: u32,
    /// Probe one-shot interrupts taken ([`STATUS_PROBED`]).
    pub probe_ticks: u32,
    /// Faulting RIP when `status == STATUS_FAULT`.
    pub fault_rip: u64,
    /// Exception error code (0 where the exception has none).
    pub fault_error_code: u64,
    /// Guest TSC when the guest reported ready.
    pub ready_tsc: u64,
    /// Number of timer interrupts taken so far.
    pub tick_count: u64,
    /// Number of ring entries ever written (monotonic; entry `i` lives in
    /// `ring[i % RING_ENTRIES]`). Written after the entry it counts.
    pub ring_head: u64,
    /// Spurious interrupts taken.
    pub spurious_count: u64,
    /// The last TSC deadline armed ([`TimerMode::TscDeadline`] only; the
    /// guest's own per-vCPU state, informative for the VMM).
    pub deadline: u64,
    /// CPUID loops done ([`IdleMode::SelfTestExits`] only; each one exit).
    pub exit_loops: u64,
}

/// One vCPU's slot, at [`slot_addr`].
#[repr(C)]
pub struct SharedPage {
    /// VMM -> guest.
    pub config: GuestConfig,
    /// Guest -> VMM.
    pub results: GuestResults,
    /// Guest TSC at each timer interrupt, indexed by tick number modulo
    /// [`RING_ENTRIES`].
    pub ring: [u64; RING_ENTRIES],
}

/// Byte offset of [`SharedPage::config`].
pub const CONFIG_OFFSET: usize = core::mem::offset_of!(SharedPage, config);
/// Byte offset of [`SharedPage::results`].
pub const RESULTS_OFFSET: usize = core::mem::offset_of!(SharedPage, results);
/// Byte offset of [`SharedPage::ring`].
pub const RING_OFFSET: usize = core::mem::offset_of!(SharedPage, ring);
/// Byte offset of [`GuestResults::ring_head`] inside the shared page.
pub const RING_HEAD_OFFSET: usize = RESULTS_OFFSET + core::mem::offset_of!(GuestResults, ring_head);
/// Byte offset of [`GuestResults::tick_count`] inside the shared page.
pub const TICK_COUNT_OFFSET: usize =
    RESULTS_OFFSET + core::mem::offset_of!(GuestResults, tick_count);
/// Byte offset of [`GuestResults::exit_loops`] inside the shared page.
pub const EXIT_LOOPS_OFFSET: usize =
    RESULTS_OFFSET + core::mem::offset_of!(GuestResults, exit_loops);
/// Byte offset of [`GuestConfig::slot_addr`] inside a slot (read by the
/// guest as `GS:[SLOT_ADDR_OFFSET]`).
pub const SLOT_ADDR_OFFSET: usize = CONFIG_OFFSET + core::mem::offset_of!(GuestConfig, slot_addr);
/// Size in bytes of one slot's data.
pub const SHARED_SIZE: usize = core::mem::size_of::<SharedPage>();

/// Encodes a LAPIC timer divisor (1, 2, 4, ..., 128) as the value of the
/// divide configuration register (bits 0, 1 and 3), or `None` for any other
/// divisor.
pub const fn divide_config_for(divisor: u32) -> Option<u32> {
    match divisor {
        2 => Some(0b0000),
        4 => Some(0b0001),
        8 => Some(0b0010),
        16 => Some(0b0011),
        32 => Some(0b1000),
        64 => Some(0b1001),
        128 => Some(0b1010),
        1 => Some(0b1011),
        _ => None,
    }
}

/// Decodes a divide configuration register value back into the divisor.
pub const fn divisor_for_config(config: u32) -> Option<u32> {
    match config {
        0b0000 => Some(2),
        0b0001 => Some(4),
        0b0010 => Some(8),
        0b0011 => Some(16),
        0b1000 => Some(32),
        0b1001 => Some(64),
        0b1010 => Some(128),
        0b1011 => Some(1),
        _ => None,
    }
}

// The layout both sides rely on, checked when either side compiles (the
// VMM moves the config and results blocks as whole values).
const _: () = {
    assert!(core::mem::size_of::<GuestConfig>() == 64);
    assert!(core::mem::size_of::<GuestResults>() == 80);
    assert!(CONFIG_OFFSET == 0);
    assert!(RESULTS_OFFSET == 64);
    assert!(RING_OFFSET == 144);
    assert!(SLOT_ADDR_OFFSET == 48);
    assert!(RING_HEAD_OFFSET == 112);
    assert!(TICK_COUNT_OFFSET == 104);
    assert!(EXIT_LOOPS_OFFSET == 136);
};
