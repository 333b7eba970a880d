//! The vCPU thread and the **kick** pause method.
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

use crate::arch::regs;
use crate::vstate::vm::Vcpu;
use guest_payload::abi::{self, GuestResults};
use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::cell::Cell;
use std::mem::offset_of;
use std::os::unix::thread::JoinHandleExt;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

/// Errors of the vCPU thread.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VcpuError {
    /// The guest reported an exception.
    #[error("guest took exception vector {vector} at rip {rip:#x} (error code {error_code:#x}); vCPU: {regs}")]
    GuestFault {
        /// Exception vector.
        vector: u32,
        /// Faulting instruction.
        rip: u64,
        /// Error code pushed by the CPU, or 0.
        error_code: u64,
        /// vCPU registers.
        regs: String,
    },
    /// The guest rejected its configuration block.
    #[error("guest rejected its configuration (error code {0}: {text}); vCPU: {1}", text = abi::error_text(*.0))]
    GuestBadConfig(u32, String),
    /// The guest shut down (triple fault).
    #[error("guest shut down (triple fault); vCPU: {0}")]
    Shutdown(String),
    /// KVM reported an exit tickburst does not expect.
    #[error("unexpected vCPU exit {what}; vCPU: {regs}")]
    UnexpectedExit {
        /// The exit.
        what: String,
        /// vCPU registers.
        regs: String,
    },
    /// `KVM_RUN` failed.
    #[error("KVM_RUN failed: {0}")]
    Run(String),
    /// Starting the thread or the signal handler failed.
    #[error("starting the vCPU thread: {0}")]
    Start(String),
}

/// What a vCPU thread tells the VMM.
#[derive(Debug, Clone)]
pub struct VcpuEvent {
    /// Which vCPU (index = APIC ID).
    pub vcpu: u32,
    /// What happened.
    pub kind: VcpuEventKind,
}

/// What happened on a vCPU.
#[derive(Debug, Clone)]
pub enum VcpuEventKind {
    /// The guest reported ready; `at` is when `KVM_RUN` returned with the report.
    Ready {
        /// Host time of the ready report.
        at: Instant,
    },
    /// The guest finished its probe phase ([`abi::STATUS_PROBED`]) and waits
    /// for [`crate::vstate::vm::start_guest`].
    Probed,
    /// The thread ended: `Ok` when asked to stop, with the vCPU registers.
    Exited(Result<String, VcpuError>),
}

#[derive(Debug, Default)]
struct ControlState {
    go: bool,
    pause_requested: bool,
    paused: bool,
    stop: bool,
    paused_at: Option<Instant>,
    resumed_at: Option<Instant>,
}

/// Shared control block between the VMM and the vCPU thread.
#[derive(Debug, Default)]
struct VcpuControl {
    state: Mutex<ControlState>,
    changed: Condvar,
}

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
/// [`vcpu_loop`] the vCPU is a parameter and the target a local, and locals
/// drop before parameters, on return and on unwinding alike.
struct KickTarget {
    run: *mut kvm_run,
}

impl KickTarget {
    fn publish(vcpu: &mut Vcpu) -> KickTarget {
        let run = vcpu.kvm_run_ptr();
        KVM_RUN_PTR.with(|p| p.set(run));
        KickTarget { run }
    }

    /// Clears `immediate_exit` after a kick made `KVM_RUN` return.
    fn clear_immediate_exit(&self) {
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

/// Handle to a running vCPU thread.
pub struct VcpuHandle {
    control: Arc<VcpuControl>,
    thread: Option<JoinHandle<()>>,
    tid: libc::pid_t,
}

/// How long a pause or resume may take to be acknowledged by the vCPU thread.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

impl VcpuHandle {
    /// Starts the thread of vCPU `index` (named `vcpuN`); events arrive on
    /// `events`. The thread waits for [`VcpuHandle::go`] before it first
    /// enters `KVM_RUN`. The vCPU's guest memory handle is read only to
    /// report a guest's fault from the vCPU's slot.
    pub fn spawn(
        index: u32,
        vcpu: Vcpu,
        events: Sender<VcpuEvent>,
    ) -> Result<VcpuHandle, VcpuError> {
        install_kick_handler()?;
        let control = Arc::new(VcpuControl::default());
        let thread_control = control.clone();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                let _ = tid_tx.send(unsafe { libc::gettid() });
                if wait_for_go(&thread_control) {
                    vcpu_loop(index, vcpu, &thread_control, &events);
                }
            })
            .map_err(|e| VcpuError::Start(e.to_string()))?;
        let tid = tid_rx
            .recv()
            .map_err(|_| VcpuError::Start("vCPU thread died at start".into()))?;
        Ok(VcpuHandle {
            control,
            thread: Some(thread),
            tid,
        })
    }

    /// Kernel thread id of the vCPU thread (for per-thread perf events).
    pub fn tid(&self) -> libc::pid_t {
        self.tid
    }

    /// Lets the vCPU thread enter `KVM_RUN` for the first time (the thread
    /// waits, so host probes can be opened on it before the guest runs).
    pub fn go(&self) {
        let mut st = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
        st.go = true;
        self.control.changed.notify_all();
    }

    fn kick(&self) {
        if let Some(thread) = &self.thread {
            // SAFETY: pthread_kill on a joinable thread we own; the handler
            // for SIGRTMIN is installed.
            unsafe { libc::pthread_kill(thread.as_pthread_t(), SIGRTMIN()) };
        }
    }

    /// Asks the vCPU to park and kicks it, without waiting: pausing several
    /// vCPUs is [`VcpuHandle::request_pause`] on each, then
    /// [`VcpuHandle::wait_paused`] on each, so they stop together.
    pub fn request_pause(&self) {
        let mut st = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
        st.pause_requested = true;
        drop(st);
        self.kick();
    }

    /// Waits until the vCPU is parked (kicking it again every millisecond);
    /// returns the time it left guest mode, or `None` if it did not
    /// acknowledge (it exited).
    pub fn wait_paused(&self) -> Option<Instant> {
        let deadline = Instant::now() + ACK_TIMEOUT;
        loop {
            self.kick();
            let st = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
            let (st, _) = self
                .control
                .changed
                .wait_timeout_while(st, Duration::from_millis(1), |s| !s.paused && !s.stop)
                .unwrap_or_else(|p| p.into_inner());
            if st.paused {
                return st.paused_at;
            }
            if st.stop || Instant::now() > deadline || self.finished() {
                return None;
            }
        }
    }

    /// Lets a parked vCPU go without waiting; `false` if no pause was
    /// requested.
    pub fn request_resume(&self) -> bool {
        let mut st = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
        if !st.pause_requested {
            return false;
        }
        st.pause_requested = false;
        self.control.changed.notify_all();
        true
    }

    /// Waits until a released vCPU has left its parking spot; returns the
    /// time it did, or `None` if it did not.
    pub fn wait_resumed(&self) -> Option<Instant> {
        let st = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
        let (st, _) = self
            .control
            .changed
            .wait_timeout_while(st, ACK_TIMEOUT, |s| s.paused && !s.stop)
            .unwrap_or_else(|p| p.into_inner());
        if st.paused {
            None
        } else {
            st.resumed_at
        }
    }

    fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Resumes if paused and asks the thread to stop, without waiting.
    pub fn request_stop(&self) {
        let mut st = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
        st.stop = true;
        st.pause_requested = false;
        self.control.changed.notify_all();
        drop(st);
        self.kick();
    }

    /// Resumes if paused, asks the thread to stop, and joins it.
    pub fn stop(&mut self) {
        self.request_stop();
        while !self.finished() {
            self.kick();
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for VcpuHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn describe(vcpu: &VcpuFd) -> String {
    match vcpu.get_regs() {
        Ok(r) => regs::describe(&r, vcpu.get_sregs().ok().as_ref()),
        Err(e) => format!("(registers unavailable: {e})"),
    }
}

/// Waits until [`VcpuHandle::go`] or stop; `false` means stop.
fn wait_for_go(control: &VcpuControl) -> bool {
    let mut st = control.state.lock().unwrap_or_else(|p| p.into_inner());
    while !st.go && !st.stop {
        st = control.changed.wait(st).unwrap_or_else(|p| p.into_inner());
    }
    !st.stop
}

/// Parks the thread while a pause is requested. Returns `false` to stop.
fn park_if_requested(control: &VcpuControl) -> bool {
    let mut st = control.state.lock().unwrap_or_else(|p| p.into_inner());
    if st.stop {
        return false;
    }
    if st.pause_requested {
        st.paused = true;
        st.paused_at = Some(Instant::now());
        control.changed.notify_all();
        while st.pause_requested && !st.stop {
            st = control.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.paused = false;
        st.resumed_at = Some(Instant::now());
        control.changed.notify_all();
        if st.stop {
            return false;
        }
    }
    true
}

/// Runs the vCPU until stopped. `vcpu` is a parameter so that it drops
/// after every local, the [`KickTarget`] included.
fn vcpu_loop(index: u32, mut vcpu: Vcpu, control: &VcpuControl, events: &Sender<VcpuEvent>) {
    let kick = KickTarget::publish(&mut vcpu);
    let result = run_until_stopped(index, &mut vcpu, &kick, control, events);
    drop(kick);
    {
        let mut st = control.state.lock().unwrap_or_else(|p| p.into_inner());
        st.stop = true;
        st.paused = false;
        control.changed.notify_all();
    }
    let _ = events.send(VcpuEvent {
        vcpu: index,
        kind: VcpuEventKind::Exited(result),
    });
}

fn run_until_stopped(
    index: u32,
    vcpu: &mut Vcpu,
    kick: &KickTarget,
    control: &VcpuControl,
    events: &Sender<VcpuEvent>,
) -> Result<String, VcpuError> {
    loop {
        if !park_if_requested(control) {
            return Ok(describe(vcpu.fd()));
        }
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                kick.clear_immediate_exit();
                continue;
            }
            Err(e) => return Err(VcpuError::Run(e.to_string())),
        };
        match exit {
            VcpuExit::IoOut(abi::STATUS_PORT, data) => {
                let mut raw = [0u8; 4];
                let n = data.len().min(4);
                raw[..n].copy_from_slice(&data[..n]);
                match u32::from_le_bytes(raw) {
                    abi::STATUS_READY => {
                        let _ = events.send(VcpuEvent {
                            vcpu: index,
                            kind: VcpuEventKind::Ready { at: Instant::now() },
                        });
                    }
                    abi::STATUS_PROBED => {
                        let _ = events.send(VcpuEvent {
                            vcpu: index,
                            kind: VcpuEventKind::Probed,
                        });
                    }
                    abi::STATUS_FAULT | abi::STATUS_BAD_CONFIG => {
                        return Err(guest_error(vcpu, index, raw))
                    }
                    other => {
                        return Err(VcpuError::UnexpectedExit {
                            what: format!("status {other:#x} on port {:#x}", abi::STATUS_PORT),
                            regs: describe(vcpu.fd()),
                        })
                    }
                }
            }
            VcpuExit::Intr => kick.clear_immediate_exit(),
            VcpuExit::Shutdown => return Err(VcpuError::Shutdown(describe(vcpu.fd()))),
            other => {
                let what = format!("{other:?}");
                return Err(VcpuError::UnexpectedExit {
                    what,
                    regs: describe(vcpu.fd()),
                });
            }
        }
    }
}

/// Reads the fault or config error the guest left in vCPU `index`'s slot. The
/// values are only printed, never used as indices.
fn guest_error(vcpu: &Vcpu, index: u32, status: [u8; 4]) -> VcpuError {
    let regs = describe(vcpu.fd());
    let mem = vcpu.mem();
    let results = abi::slot_addr(index) + abi::RESULTS_OFFSET as u64;
    let read32 = |offset: usize| {
        mem.read_obj::<u32>(GuestAddress(results + offset as u64))
            .unwrap_or(u32::MAX)
    };
    let read64 = |offset: usize| {
        mem.read_obj::<u64>(GuestAddress(results + offset as u64))
            .unwrap_or(u64::MAX)
    };
    match u32::from_le_bytes(status) {
        abi::STATUS_FAULT => VcpuError::GuestFault {
            vector: read32(offset_of!(GuestResults, fault_vector)),
            rip: read64(offset_of!(GuestResults, fault_rip)),
            error_code: read64(offset_of!(GuestResults, fault_error_code)),
            regs,
        },
        _ => VcpuError::GuestBadConfig(read32(offset_of!(GuestResults, error)), regs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::timer::settings_for_period;
    use crate::vstate::vm::{self, GuestSetup, Vm};
    use guest_payload::abi::{ApicMode, IdleMode, TimerMode};

    fn one_vcpu() -> Vcpu {
        let kvm = vm::open_kvm().unwrap();
        let setup = GuestSetup {
            apic: ApicMode::X2Apic,
            idle: IdleMode::Hlt,
            timer: settings_for_period(1_000_000, vm::DEFAULT_APIC_BUS_CYCLE_NS).unwrap(),
            timer_mode: TimerMode::Periodic,
            period_ns: 1_000_000,
            vcpus: 1,
            probe_count: 0,
        };
        Vm::create(&kvm, &setup)
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
        let Some(_lock) = crate::testing::kvm_or_skip("kick_reaches_kvm_run_only_while_published")
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
