//! The vCPU thread and the **kick** pause method.
//!
//! Kick is what QEMU `stop` / `virsh suspend` do: set `immediate_exit` in the
//! vCPU's `kvm_run` and signal the vCPU thread (SIGRTMIN) so `KVM_RUN` returns
//! at once, keep the thread parked outside `KVM_RUN` for the pause, then let it
//! re-enter. The signal handler only stores `immediate_exit = 1` through a
//! thread-local pointer, so a kick that lands just before `KVM_RUN` is not lost.

use crate::arch::regs;
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
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
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
    /// for [`crate::vm::start_guest`].
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
pub struct VcpuControl {
    state: Mutex<ControlState>,
    changed: Condvar,
}

thread_local! {
    static KVM_RUN_PTR: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN_PTR.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is set by this thread to its own vCPU's mmapped
        // kvm_run and cleared before the vCPU is dropped; a single byte store
        // is async-signal-safe.
        unsafe { std::ptr::write_volatile(&mut (*run).immediate_exit, 1) };
    }
}

/// Installs the kick signal handler (idempotent).
pub fn install_kick_handler() -> Result<(), VcpuError> {
    register_signal_handler(SIGRTMIN(), kick_handler).map_err(|e| VcpuError::Start(e.to_string()))
}

/// Handle to a running vCPU thread.
pub struct VcpuHandle {
    index: u32,
    control: Arc<VcpuControl>,
    thread: Option<JoinHandle<()>>,
    tid: libc::pid_t,
}

/// How long a pause or resume may take to be acknowledged by the vCPU thread.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

impl VcpuHandle {
    /// Starts the thread of vCPU `index` (named `vcpuN`); events arrive on
    /// `events`. The thread waits for [`VcpuHandle::go`] before it first
    /// enters `KVM_RUN`. `mem` is the guest memory, read only to report a
    /// guest's fault from the vCPU's slot.
    pub fn spawn(
        index: u32,
        vcpu: VcpuFd,
        mem: GuestMemoryMmap,
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
                    vcpu_loop(index, vcpu, &mem, &thread_control, &events);
                }
            })
            .map_err(|e| VcpuError::Start(e.to_string()))?;
        let tid = tid_rx
            .recv()
            .map_err(|_| VcpuError::Start("vCPU thread died at start".into()))?;
        Ok(VcpuHandle {
            index,
            control,
            thread: Some(thread),
            tid,
        })
    }

    /// The vCPU's index (= APIC ID).
    pub fn index(&self) -> u32 {
        self.index
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

    /// Kicks the vCPU out of `KVM_RUN` and parks it. Returns when the vCPU is
    /// parked, with the time it left guest mode, or `None` if it did not
    /// acknowledge (it exited).
    pub fn pause(&self) -> Option<Instant> {
        self.request_pause();
        self.wait_paused()
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

    /// Lets a parked vCPU re-enter `KVM_RUN`; returns when it has, with the
    /// time of re-entry, or `None` if it was not paused.
    pub fn resume(&self) -> Option<Instant> {
        if !self.request_resume() {
            return None;
        }
        self.wait_resumed()
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

    /// Whether the vCPU is parked now.
    pub fn is_paused(&self) -> bool {
        self.control
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .paused
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

fn vcpu_loop(
    index: u32,
    mut vcpu: VcpuFd,
    mem: &GuestMemoryMmap,
    control: &VcpuControl,
    events: &Sender<VcpuEvent>,
) {
    KVM_RUN_PTR.with(|p| p.set(vcpu.get_kvm_run() as *mut kvm_run));
    let result = run_until_stopped(index, &mut vcpu, mem, control, events);
    KVM_RUN_PTR.with(|p| p.set(std::ptr::null_mut()));
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
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    control: &VcpuControl,
    events: &Sender<VcpuEvent>,
) -> Result<String, VcpuError> {
    loop {
        if !park_if_requested(control) {
            return Ok(describe(vcpu));
        }
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
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
                        return Err(guest_error(vcpu, mem, index, raw))
                    }
                    other => {
                        return Err(VcpuError::UnexpectedExit {
                            what: format!("status {other:#x} on port {:#x}", abi::STATUS_PORT),
                            regs: describe(vcpu),
                        })
                    }
                }
            }
            VcpuExit::Intr => vcpu.set_kvm_immediate_exit(0),
            VcpuExit::Shutdown => return Err(VcpuError::Shutdown(describe(vcpu))),
            other => {
                let what = format!("{other:?}");
                return Err(VcpuError::UnexpectedExit {
                    what,
                    regs: describe(vcpu),
                });
            }
        }
    }
}

/// Reads the fault or config error the guest left in vCPU `index`'s slot. The
/// values are only printed, never used as indices.
fn guest_error(vcpu: &VcpuFd, mem: &GuestMemoryMmap, index: u32, status: [u8; 4]) -> VcpuError {
    let regs = describe(vcpu);
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
