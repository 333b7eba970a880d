//! VM set-up: KVM handle, in-kernel irqchip, guest memory, the guest image
//! and every vCPU in long mode.
//!
//! Each vCPU starts directly in long mode at the guest's entry point: the VMM
//! sets its registers and marks the APs runnable (`KVM_SET_MP_STATE`) instead
//! of the guest waking them with INIT/SIPI. That way every vCPU runs the same
//! guest code from the same first instruction (no real-mode trampoline in the
//! guest), and set-up stays a few ioctls per vCPU.

use crate::arch::{cpuid, gdt, layout, paging, regs, timer::TimerSettings};
use guest_payload::abi::{self, ApicMode, GuestConfig, IdleMode, TimerMode};
use kvm_bindings::{
    kvm_fpu, kvm_mp_state, kvm_userspace_memory_region, KVM_CAP_X86_APIC_BUS_CYCLES_NS,
    KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use linux_loader::loader::{elf::Elf, KernelLoader};
use std::io::Cursor;
use std::mem::offset_of;
use thiserror::Error;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

/// Default APIC bus cycle KVM uses when the capability is not reported (1 GHz).
pub const DEFAULT_APIC_BUS_CYCLE_NS: u64 = 1;
/// x87 FPU control word after FNINIT.
const FPU_CONTROL_WORD: u16 = 0x37f;
/// MXCSR after reset (all SSE exceptions masked).
const MXCSR_DEFAULT: u32 = 0x1f80;

/// Errors setting up the VM.
#[derive(Debug, Error)]
pub enum VmError {
    /// `/dev/kvm` could not be opened or used.
    #[error("{0}")]
    KvmUnavailable(String),
    /// A KVM ioctl failed.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// Which step.
        what: &'static str,
        /// The errno.
        source: kvm_ioctls::Error,
    },
    /// Guest memory could not be created or written.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The guest image could not be loaded.
    #[error("loading the guest image: {0}")]
    Load(String),
    /// More vCPUs were asked for than KVM (or the memory map) allows.
    #[error("--vcpus {asked}: this host allows 1 to {max} (KVM_CAP_MAX_VCPUS, at most {layout})", layout = layout::MAX_VCPUS)]
    TooManyVcpus {
        /// vCPUs asked for.
        asked: u32,
        /// The most this host allows.
        max: u32,
    },
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// Environment variable naming another KVM device node than `/dev/kvm`
/// (used by the tests to check the "KVM missing" path).
pub const KVM_DEVICE_ENV: &str = "TICKBURST_KVM_DEVICE";

/// Opens `/dev/kvm` (or `$TICKBURST_KVM_DEVICE`), turning the usual failures
/// into a message that says how to fix them.
pub fn open_kvm() -> Result<Kvm, VmError> {
    let path = std::env::var_os(KVM_DEVICE_ENV).unwrap_or_else(|| "/dev/kvm".into());
    let shown = path.to_string_lossy().into_owned();
    let path = std::ffi::CString::new(path.into_encoded_bytes())
        .map_err(|_| VmError::KvmUnavailable(format!("bad {KVM_DEVICE_ENV}")))?;
    Kvm::new_with_path(path).map_err(|e| {
        let how = match e.errno() {
            libc::ENOENT => format!("{shown} does not exist: load the KVM module (modprobe kvm_intel or kvm_amd) or use a host with KVM"),
            libc::EACCES | libc::EPERM => format!("permission denied on {shown}: run as root or add your user to the 'kvm' group"),
            _ => format!("cannot open {shown}: {e}"),
        };
        VmError::KvmUnavailable(how)
    })
}

/// What the guest should do, written into its configuration block.
#[derive(Debug, Clone, Copy)]
pub struct GuestSetup {
    /// LAPIC access mode.
    pub apic: ApicMode,
    /// Idle loop.
    pub idle: IdleMode,
    /// Timer programming.
    pub timer: TimerSettings,
    /// LVT timer mode.
    pub timer_mode: TimerMode,
    /// Timer period, ns (for the TSC-deadline period).
    pub period_ns: u64,
    /// Number of vCPUs (1 to [`max_vcpus`]).
    pub vcpus: u32,
    /// Initial count of the guest's probe one-shot, 0 for no probe phase
    /// (see [`abi::STATUS_PROBED`]).
    pub probe_count: u32,
}

/// Guest TSC cycles in `period_ns` at `tsc_khz`.
pub fn tsc_cycles(period_ns: u64, tsc_khz: u32) -> u64 {
    (u128::from(period_ns) * u128::from(tsc_khz) / 1_000_000) as u64
}

/// A VM with its memory and vCPUs, ready to run.
pub struct Vm {
    /// The VM fd (kept for the VM's lifetime).
    pub vm: VmFd,
    /// Guest RAM, shared with the guest.
    pub mem: GuestMemoryMmap,
    /// The vCPUs, index = KVM vCPU id = APIC ID (each is moved into its
    /// thread).
    pub vcpus: Vec<VcpuFd>,
    /// Guest TSC frequency (`KVM_GET_TSC_KHZ`).
    pub tsc_khz: u32,
}

/// The most vCPUs a run may have here: what KVM allows
/// (`KVM_CAP_MAX_VCPUS`), at most [`layout::MAX_VCPUS`].
pub fn max_vcpus(kvm: &Kvm) -> u32 {
    (kvm.get_max_vcpus() as u32).clamp(1, layout::MAX_VCPUS)
}

/// Reads the APIC bus cycle KVM uses (`KVM_CAP_X86_APIC_BUS_CYCLES_NS`
/// returns the default cycle in ns; older kernels do not know the capability
/// and use 1 ns).
pub fn apic_bus_cycle_ns(kvm: &Kvm) -> u64 {
    match kvm.check_extension_raw(u64::from(KVM_CAP_X86_APIC_BUS_CYCLES_NS)) {
        n if n > 0 => n as u64,
        _ => DEFAULT_APIC_BUS_CYCLE_NS,
    }
}

impl Vm {
    /// Creates the VM: irqchip, memory, page tables, GDT, guest image, and
    /// each vCPU in long mode at the guest's entry point with its own stack
    /// and slot (config block written).
    pub fn create(kvm: &Kvm, setup: &GuestSetup) -> Result<Vm, VmError> {
        let max = max_vcpus(kvm);
        if setup.vcpus == 0 || setup.vcpus > max {
            return Err(VmError::TooManyVcpus {
                asked: setup.vcpus,
                max,
            });
        }
        let vm = kvm.create_vm().map_err(|e| {
            VmError::KvmUnavailable(format!(
                "KVM_CREATE_VM failed: {e} (is another hypervisor holding VMX/SVM?)"
            ))
        })?;
        vm.set_tss_address(layout::KVM_TSS_ADDR)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        vm.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;

        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), layout::MEM_SIZE as usize)])
                .map_err(|e| VmError::Memory(e.to_string()))?;
        for (slot, region) in mem.iter().enumerate() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|e| VmError::Memory(e.to_string()))?;
            let region_desc = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region is a live mmap owned by `mem`, which outlives
            // the VM fd in `Vm` (fields drop in declaration order: vm first).
            unsafe { vm.set_user_memory_region(region_desc) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
        }

        write_boot_tables(&mem)?;
        let entry = load_guest(&mem)?;

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let mut vcpus = Vec::with_capacity(setup.vcpus as usize);
        for index in 0..setup.vcpus {
            vcpus.push(create_vcpu(&vm, &supported, index, entry)?);
        }
        let tsc_khz = vcpus[0].get_tsc_khz().map_err(kvm_err("KVM_GET_TSC_KHZ"))?;
        for index in 0..setup.vcpus {
            write_config(&mem, setup, tsc_cycles(setup.period_ns, tsc_khz), index)?;
        }
        Ok(Vm {
            vm,
            mem,
            vcpus,
            tsc_khz,
        })
    }
}

/// Creates vCPU `index` (APIC ID `index`) in long mode at `entry`, with its
/// stack, GS at its slot, and runnable (APs too: no INIT/SIPI).
fn create_vcpu(
    vm: &VmFd,
    supported: &kvm_bindings::CpuId,
    index: u32,
    entry: u64,
) -> Result<VcpuFd, VmError> {
    let vcpu = vm
        .create_vcpu(u64::from(index))
        .map_err(kvm_err("KVM_CREATE_VCPU"))?;
    let mut cpu = supported.clone();
    cpuid::adjust(&mut cpu, index);
    vcpu.set_cpuid2(&cpu).map_err(kvm_err("KVM_SET_CPUID2"))?;
    let mut sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    regs::long_mode_sregs(&mut sregs, abi::slot_addr(index));
    vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
    vcpu.set_regs(&regs::entry_regs(entry, layout::stack_top(index)))
        .map_err(kvm_err("KVM_SET_REGS"))?;
    let fpu = kvm_fpu {
        fcw: FPU_CONTROL_WORD,
        mxcsr: MXCSR_DEFAULT,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm_err("KVM_SET_FPU"))?;
    if index != 0 {
        // With the in-kernel irqchip an AP starts waiting for INIT/SIPI;
        // its registers are already set, so let it run.
        let runnable = kvm_mp_state {
            mp_state: KVM_MP_STATE_RUNNABLE,
        };
        vcpu.set_mp_state(runnable)
            .map_err(kvm_err("KVM_SET_MP_STATE"))?;
    }
    Ok(vcpu)
}

fn write_boot_tables(mem: &GuestMemoryMmap) -> Result<(), VmError> {
    let merr = |e: vm_memory::GuestMemoryError| VmError::Memory(e.to_string());
    for (i, entry) in gdt::gdt().iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(layout::GDT_ADDR + 8 * i as u64))
            .map_err(merr)?;
    }
    for (addr, table) in paging::identity_tables() {
        for (i, entry) in table.iter().enumerate() {
            mem.write_obj(*entry, GuestAddress(addr + 8 * i as u64))
                .map_err(merr)?;
        }
    }
    Ok(())
}

fn load_guest(mem: &GuestMemoryMmap) -> Result<u64, VmError> {
    let mut image = Cursor::new(guest_payload::GUEST_ELF);
    let loaded = Elf::load(
        mem,
        None,
        &mut image,
        Some(GuestAddress(layout::GUEST_LOAD_ADDR)),
    )
    .map_err(|e| VmError::Load(e.to_string()))?;
    if loaded.kernel_end > layout::SHARED_ADDR {
        return Err(VmError::Load(format!(
            "guest image ends at {:#x}, over the shared page at {:#x}",
            loaded.kernel_end,
            layout::SHARED_ADDR
        )));
    }
    Ok(loaded.kernel_load.0)
}

/// Writes vCPU `index`'s config block into its slot.
fn write_config(
    mem: &GuestMemoryMmap,
    setup: &GuestSetup,
    tsc_period: u64,
    index: u32,
) -> Result<(), VmError> {
    let config = GuestConfig {
        magic: abi::MAGIC,
        abi_version: abi::ABI_VERSION,
        apic_mode: setup.apic as u32,
        idle_mode: setup.idle as u32,
        initial_count: setup.timer.initial_count,
        divide_config: setup.timer.divide_config,
        timer_mode: setup.timer_mode as u32,
        tsc_period,
        apic_id: index,
        probe_count: setup.probe_count,
        slot_addr: abi::slot_addr(index),
        start: 0,
    };
    let base = GuestAddress(abi::slot_addr(index) + abi::CONFIG_OFFSET as u64);
    let merr = |e: vm_memory::GuestMemoryError| VmError::Memory(e.to_string());
    // Field by field: GuestConfig is plain data, but vm-memory's ByteValued
    // impls are for primitives, and this keeps the ABI the single definition.
    mem.write_obj(config.magic, base).map_err(merr)?;
    let words = [
        (offset_of!(GuestConfig, abi_version), config.abi_version),
        (offset_of!(GuestConfig, apic_mode), config.apic_mode),
        (offset_of!(GuestConfig, idle_mode), config.idle_mode),
        (offset_of!(GuestConfig, initial_count), config.initial_count),
        (offset_of!(GuestConfig, divide_config), config.divide_config),
        (offset_of!(GuestConfig, timer_mode), config.timer_mode),
        (offset_of!(GuestConfig, apic_id), config.apic_id),
        (offset_of!(GuestConfig, probe_count), config.probe_count),
    ];
    for (offset, value) in words {
        mem.write_obj(value, base.unchecked_add(offset as u64))
            .map_err(merr)?;
    }
    for (offset, value) in [
        (offset_of!(GuestConfig, tsc_period), config.tsc_period),
        (offset_of!(GuestConfig, slot_addr), config.slot_addr),
        (offset_of!(GuestConfig, start), config.start),
    ] {
        mem.write_obj(value, base.unchecked_add(offset as u64))
            .map_err(merr)?;
    }
    Ok(())
}

/// Lets vCPU `index`'s guest leave its probe phase (sets
/// [`GuestConfig::start`]; the one config write while the guest runs).
pub fn start_guest(mem: &GuestMemoryMmap, index: u32) -> Result<(), VmError> {
    let at = abi::slot_addr(index) + (abi::CONFIG_OFFSET + offset_of!(GuestConfig, start)) as u64;
    mem.write_obj(1u64, GuestAddress(at))
        .map_err(|e| VmError::Memory(e.to_string()))
}
