//! The **kick**: how a vCPU thread is made to leave `KVM_RUN` at once.
//!
//! Kick is what QEMU `stop` / `virsh suspend` do: set `immediate_exit` in the
//! vCPU's `kvm_run` and signal the vCPU thread (SIGRTMIN) so `KVM_RUN` returns
//! at once, keep the thread parked outside `KVM_RUN` for the pause, then let it
//! re-enter. The signal handler only stores `immediate_exit = 1` through a
//! thread-local pointer, so a kick that lands just before `KVM_RUN` is not lost.
//!
//! `kvm_run` from a signal handler: the pointer is published by the vCPU
//! thread itself, to its own vCPU's mmapped `kvm_run`, by a [`KickTarget`]
//! that is created after the vCPU is moved into the thread's loop and
//! dropped before it (on every path, unwinding included), so the handler
//! never sees a pointer into an unmapped `kvm_run`. The handler and the
//! thread write `immediate_exit` only through that raw pointer with volatile
//! one-byte stores and never form a `&mut kvm_run` for it. (kvm-ioctls forms
//! its own `&mut kvm_run` inside `VcpuFd::run` after `KVM_RUN` returns, to
//! decode the exit; that is outside this crate. A kick landing there only
//! stores the one byte through the raw pointer, a field the decoding does
//! not read.)

use crate::vstate::vcpu_control::VcpuError;
use crate::vstate::vm::Vcpu;
use kvm_bindings::kvm_run;
use std::cell::Cell;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

thread_local! {
    static KVM_RUN_PTR: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// Stores `value` into `run`'s `immediate_exit` through the raw pointer (no
/// reference into `kvm_run` is formed).
///
/// # Safety
///
/// `run` must point to a live, mapped `kvm_run`.
unsafe fn store_immediate_exit(run: *mut kvm_run, value: u8) {
    // SAFETY: the caller guarantees `run` points to a mapped kvm_run;
    // addr_of_mut! takes the field's address without a reference, and a
    // volatile one-byte store cannot tear.
    unsafe { std::ptr::write_volatile(std::ptr::addr_of_mut!((*run).immediate_exit), value) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // A const-initialised Cell of a raw pointer has no destructor, so the
    // access neither allocates nor fails; try_with (not with) leaves the
    // handler without any panic path all the same.
    let run = KVM_RUN_PTR
        .try_with(Cell::get)
        .unwrap_or(std::ptr::null_mut());
    if !run.is_null() {
        // SAFETY: a non-null KVM_RUN_PTR was published by this very thread
        // (the handler runs on the thread it interrupts) through a
        // KickTarget, pointing to its own vCPU's mmapped kvm_run; the
        // KickTarget clears it before that vCPU (and the mapping) is dropped.
        unsafe { store_immediate_exit(run, 1) };
    }
}

/// Publishes this thread's vCPU `kvm_run` to the kick handler while it lives.
///
/// Create it only with the pointer of a [`Vcpu`] that outlives it: in
/// [`crate::vstate::vcpu_loop`] the vCPU is a parameter and the target a local, and locals
/// drop before parameters, on return and on unwinding alike.
pub(crate) struct KickTarget {
    run: *mut kvm_run,
}

impl KickTarget {
    /// Publishes `vcpu`'s `kvm_run` for this thread's kick handler.
    pub(crate) fn publish(vcpu: &mut Vcpu) -> KickTarget {
        let run = vcpu.kvm_run_ptr();
        KVM_RUN_PTR.with(|p| p.set(run));
        KickTarget { run }
    }

    /// Clears `immediate_exit` after a kick made `KVM_RUN` return.
    pub(crate) fn clear_immediate_exit(&self) {
        // SAFETY: `run` is the kvm_run of the vCPU that outlives `self` (see
        // the type's contract); only this thread and its signal handler
        // write the byte, both through the raw pointer.
        unsafe { store_immediate_exit(self.run, 0) };
    }
}

impl Drop for KickTarget {
    fn drop(&mut self) {
        KVM_RUN_PTR.with(|p| p.set(std::ptr::null_mut()));
    }
}

/// Installs the kick signal handler (idempotent).
pub fn install_kick_handler() -> Result<(), VcpuError> {
    register_signal_handler(SIGRTMIN(), kick_handler).map_err(|e| VcpuError::Start(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::kvm::open_kvm;
    use crate::vstate::vm::Vm;

    fn one_vcpu() -> Vcpu {
        let kvm = open_kvm().unwrap();
        Vm::create(&kvm, &crate::vstate::test_setup::guest_setup(1))
            .unwrap()
            .take_vcpus()
            .pop()
            .unwrap()
    }

    fn published() -> *mut kvm_run {
        KVM_RUN_PTR.with(Cell::get)
    }

    fn immediate_exit(run: *mut kvm_run) -> u8 {
        // SAFETY: the tests pass the kvm_run of a vCPU they hold.
        unsafe { std::ptr::read_volatile(std::ptr::addr_of!((*run).immediate_exit)) }
    }

    fn kick_self() {
        // SAFETY: signals this thread; the SIGRTMIN handler is installed.
        unsafe { libc::pthread_kill(libc::pthread_self(), SIGRTMIN()) };
    }

    /// The kick handler sets `immediate_exit` only while a `KickTarget` of
    /// this thread lives; the target clears the pointer when it goes, also
    /// when the thread unwinds.
    #[test]
    fn kick_reaches_kvm_run_only_while_published() {
        let Some(_lock) =
            tickburst_testkit::kvm_or_skip("kick_reaches_kvm_run_only_while_published")
        else {
            return;
        };
        install_kick_handler().unwrap();
        let mut vcpu = one_vcpu();
        std::thread::spawn(move || {
            let run = vcpu.kvm_run_ptr();
            assert!(published().is_null());
            kick_self();
            assert_eq!(immediate_exit(run), 0, "nothing published: no store");

            let target = KickTarget::publish(&mut vcpu);
            assert_eq!(published(), run);
            kick_self();
            assert_eq!(
                immediate_exit(run),
                1,
                "the kick stored through the pointer"
            );
            target.clear_immediate_exit();
            assert_eq!(immediate_exit(run), 0);
            drop(target);
            assert!(published().is_null());
            kick_self();
            assert_eq!(immediate_exit(run), 0, "unpublished: no store");

            let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _target = KickTarget::publish(&mut vcpu);
                panic!("unwinding with the target published");
            }));
            assert!(unwound.is_err());
            assert!(published().is_null(), "cleared on unwinding");
        })
        .join()
        .unwrap();
    }
}
