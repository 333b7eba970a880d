//! VM set-up: KVM handle, in-kernel irqchip, guest memory, the guest image
//! and every vCPU in long mode.
//!
//! Each vCPU starts directly in long mode at the guest's entry point: the VMM
//! sets its registers and marks the APs runnable (`KVM_SET_MP_STATE`) instead
//! of the guest waking them with INIT/SIPI. That way every vCPU runs the same
//! guest code from the same first instruction (no real-mode trampoline in the
//! guest), and set-up stays a few ioctls per vCPU.

use crate::arch::{cpuid, gdt, layout, paging, regs};
use crate::vstate::kvm::{max_vcpus, tsc_cycles};
use crate::vstate::slots::{self, GuestSetup, SlotError};
use guest_payload::abi;
use kvm_bindings::{
    kvm_fpu, kvm_mp_state, kvm_run, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES,
    KVM_MP_STATE_RUNNABLE,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use linux_loader::loader::{elf::Elf, KernelLoader};
use std::io::Cursor;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

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
    /// A guest slot could not be written.
    #[error(transparent)]
    Slot(#[from] SlotError),
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

/// A VM with its memory and vCPUs, ready to run.
///
/// # Ownership: the guest memory outlives every fd that can run the guest
///
/// KVM maps guest RAM from this process's address space (the memslots hold
/// the host virtual address of the mmap). If the mmap went away while the VM
/// could still run, a later mapping at the same address would become guest
/// RAM. So every fd that can run the guest or reach its memory (the VM fd
/// and each vCPU fd) is owned together with a handle to the memory, in a
/// struct whose fields drop in declaration order with the fd first:
///
/// - `Vm`: `vcpus` (each a [`Vcpu`]), then the VM fd, then `mem`;
/// - [`Vcpu`]: its vCPU fd, then its own `mem` handle.
///
/// The fields are private and nothing hands out the memory or an fd by value
/// or by `&mut`, so the pairs cannot be taken apart. A `GuestMemoryMmap` clone
/// (vm-memory 0.18) is a new `Vec` of `Arc` clones of the same regions: it
/// shares the mapping, and the region is unmapped when its last `Arc` drops.
/// Whichever handle drops last, the fd paired with it is already closed, and
/// every other fd was closed before its own handle dropped; clones made for
/// other uses (the run's reader) can only make the mapping live longer.
/// Other fds that pin the kernel's VM object (the vCPU stats fd of
/// `KVM_GET_STATS_FD`) cannot run a vCPU or touch guest memory.
///
/// Neither can be taken apart outside this module:
///
/// ```compile_fail,E0451
/// fn split(vm: tickburst::vstate::vm::Vm) {
///     let tickburst::vstate::vm::Vm { mem, .. } = vm;
/// }
/// ```
///
/// ```compile_fail,E0451
/// fn split(vcpu: tickburst::vstate::vm::Vcpu) {
///     let tickburst::vstate::vm::Vcpu { fd, .. } = vcpu;
/// }
/// ```
pub struct Vm {
    /// The vCPUs not yet taken ([`Vm::take_vcpus`]); dropped first.
    vcpus: Vec<Vcpu>,
    /// The VM fd, held for the VM's lifetime (never used after set-up);
    /// dropped before `mem`.
    vm_fd: VmFd,
    /// Guest RAM, shared with the guest; dropped last.
    mem: GuestMemoryMmap,
    /// Guest TSC frequency (`KVM_GET_TSC_KHZ`).
    tsc_khz: u32,
}

impl Vm {
    /// Guest RAM. Clones share the mapping (see the ownership note on [`Vm`]).
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Guest TSC frequency in kHz (`KVM_GET_TSC_KHZ`).
    pub fn tsc_khz(&self) -> u32 {
        self.tsc_khz
    }

    /// Takes the vCPUs, index = KVM vCPU id = APIC ID (each is moved into its
    /// thread); each carries its own handle to guest memory.
    pub fn take_vcpus(&mut self) -> Vec<Vcpu> {
        std::mem::take(&mut self.vcpus)
    }
}

/// One vCPU fd owned together with a handle to guest memory, so the memory
/// cannot be unmapped while the fd is open (fields drop in declaration order:
/// the fd first; see the ownership note on [`Vm`]).
pub struct Vcpu {
    fd: VcpuFd,
    mem: GuestMemoryMmap,
}

impl Vcpu {
    /// The vCPU fd, for ioctls that take `&self`.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Guest RAM.
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// `KVM_RUN` ([`VcpuFd::run`]).
    pub fn run(&mut self) -> Result<VcpuExit<'_>, kvm_ioctls::Error> {
        self.fd.run()
    }

    /// Raw pointer to this vCPU's mmapped `kvm_run`, valid while `self`
    /// lives (the mapping belongs to the vCPU fd and is unmapped when it
    /// drops).
    pub fn kvm_run_ptr(&mut self) -> *mut kvm_run {
        self.fd.get_kvm_run()
    }
}

impl Vm {
    /// Creates the VM: memory, irqchip, page tables, GDT, guest image, and
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
        // The memory is created before the VM fd, so that on an error below
        // the locals drop in reverse order: the VM fd first, then the memory
        // (from `vm` on, the `Vm` itself keeps that order).
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(
            GuestAddress(0),
            layout::mem_size(setup.vcpus) as usize,
        )])
        .map_err(|e| VmError::Memory(e.to_string()))?;
        let vm_fd = kvm.create_vm().map_err(|e| {
            VmError::KvmUnavailable(format!(
                "KVM_CREATE_VM failed: {e} (is another hypervisor holding VMX/SVM?)"
            ))
        })?;
        let mut vm = Vm {
            vcpus: Vec::with_capacity(setup.vcpus as usize),
            vm_fd,
            mem,
            tsc_khz: 0,
        };
        // The memslot before the irqchip: KVM_SET_USER_MEMORY_REGION waits
        // for an SRCU grace period of the VM, which takes 0.2-0.4 ms on a
        // fresh VM here but 4-8 ms once KVM_CREATE_IRQCHIP has registered
        // its devices on the VM's I/O buses (measured on this 6.18 host).
        set_memslots(&vm.vm_fd, &vm.mem)?;
        vm.vm_fd
            .set_tss_address(layout::KVM_TSS_ADDR)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        vm.vm_fd
            .create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        write_boot_tables(&vm.mem)?;
        let entry = load_guest(&vm.mem)?;
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let vcpus = (0..setup.vcpus)
            .map(|index| create_vcpu(&vm.vm_fd, &supported, index, entry))
            .collect::<Result<Vec<_>, VmError>>()?;
        for fd in vcpus {
            vm.vcpus.push(Vcpu {
                fd,
                mem: vm.mem.clone(),
            });
        }
        vm.tsc_khz = vm.vcpus[0]
            .fd
            .get_tsc_khz()
            .map_err(kvm_err("KVM_GET_TSC_KHZ"))?;
        let tsc_period = tsc_cycles(setup.period_ns, vm.tsc_khz);
        for index in 0..setup.vcpus {
            slots::write_config(&vm.mem, slots::config(setup, tsc_period, index), index)?;
        }
        Ok(vm)
    }
}

/// Registers every region of `mem` with the VM as a memslot.
fn set_memslots(vm_fd: &VmFd, mem: &GuestMemoryMmap) -> Result<(), VmError> {
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
        // SAFETY: `host..host + len` is the live mmap of this region of
        // `mem`, the memory of the `Vm` that owns `vm_fd`; the `Vm` drops
        // the VM fd (and every vCPU fd) before its memory handle, and every
        // other handle is paired the same way (see [`Vm`]), so the mapping
        // outlives every fd that can use this memslot.
        unsafe { vm_fd.set_user_memory_region(region_desc) }
            .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::kvm::open_kvm;
    use crate::vstate::test_setup::guest_setup as setup;

    /// A vCPU taken from its `Vm` keeps guest memory mapped after the `Vm`
    /// (VM fd and its memory handle) is gone: the vCPU's handle shares the
    /// mapping.
    #[test]
    fn a_taken_vcpu_keeps_guest_memory_mapped() {
        let Some(_lock) = tickburst_testkit::kvm_or_skip("a_taken_vcpu_keeps_guest_memory_mapped")
        else {
            return;
        };
        let kvm = open_kvm().unwrap();
        let mut vm = Vm::create(&kvm, &setup(2)).unwrap();
        assert!(vm.tsc_khz() > 0);
        let vcpus = vm.take_vcpus();
        assert_eq!(vcpus.len(), 2);
        assert!(vm.take_vcpus().is_empty(), "taken once");
        let host = |m: &GuestMemoryMmap| {
            m.iter()
                .next()
                .unwrap()
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .unwrap()
        };
        let mapped = host(vm.mem());
        drop(vm);
        let magic = GuestAddress(abi::slot_addr(1) + abi::CONFIG_OFFSET as u64);
        for v in &vcpus {
            assert_eq!(host(v.mem()), mapped, "same mapping, not a copy");
            assert_eq!(v.mem().read_obj::<u64>(magic).unwrap(), abi::MAGIC);
        }
    }
}
