//! The vCPU threads: starting one, letting it run, parking it for a kick
//! pause and releasing it, stopping it; and the set of a run's threads.
//!
//! Kick is what QEMU `stop` / `virsh suspend` do: set `immediate_exit` in the
//! vCPU's `kvm_run` and signal the vCPU thread (SIGRTMIN) so `KVM_RUN` returns
//! at once ([`crate::vstate::kick`]), keep the thread parked outside
//! `KVM_RUN` for the pause, then let it re-enter.

use crate::vstate::kick::install_kick_handler;
use crate::vstate::tsc_sync::TscSync;
use crate::vstate::vcpu_control::{wait_for_go, VcpuControl, VcpuError, VcpuEvent};
use crate::vstate::vcpu_loop::vcpu_loop;
use crate::vstate::vm::Vcpu;
use std::os::unix::thread::JoinHandleExt;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vmm_sys_util::signal::SIGRTMIN;

/// Handle to a running vCPU thread.
pub struct VcpuHandle {
    control: Arc<VcpuControl>,
    thread: Option<JoinHandle<()>>,
    tid: libc::pid_t,
    /// Hands the thread its vCPU ([`VcpuHandle::give`]) before `go`.
    vcpu: Sender<Vcpu>,
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
        let handle = Self::spawn_waiting(index, events)?;
        handle.give(vcpu);
        Ok(handle)
    }

    /// Starts the thread of vCPU `index` before the vCPU exists, so that
    /// per-thread host probes can be opened on it while the VM is built;
    /// [`VcpuHandle::give`] hands it the vCPU, then [`VcpuHandle::go`] lets
    /// it run (a thread let go without its vCPU ends).
    pub fn spawn_waiting(index: u32, events: Sender<VcpuEvent>) -> Result<VcpuHandle, VcpuError> {
        install_kick_handler()?;
        let control = Arc::new(VcpuControl::default());
        let thread_control = control.clone();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (vcpu_tx, vcpu_rx) = std::sync::mpsc::channel::<Vcpu>();
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                let _ = tid_tx.send(unsafe { libc::gettid() });
                if wait_for_go(&thread_control) {
                    // Given before `go`, so already in the channel.
                    if let Ok(vcpu) = vcpu_rx.try_recv() {
                        vcpu_loop(index, vcpu, &thread_control, &events);
                    }
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
            vcpu: vcpu_tx,
        })
    }

    /// Hands the waiting thread its vCPU (before [`VcpuHandle::go`]).
    pub fn give(&self, vcpu: Vcpu) {
        // The thread holds the receiver until it ends; a send to a thread
        // that already ended drops the vCPU here.
        let _ = self.vcpu.send(vcpu);
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

    /// The vCPU's TSC at a host time, read as it last parked (`None`
    /// before its first pause, or if KVM could not read it).
    pub fn paused_sync(&self) -> Option<TscSync> {
        let st = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
        st.paused_sync
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

/// The vCPU threads of a run, by index. Dropping it (on any path, errors and
/// panics included) resumes and stops every vCPU.
pub struct Vcpus(pub Vec<VcpuHandle>);

impl Vcpus {
    /// Asks every thread to stop at once, then joins them one by one.
    pub fn stop_all(&mut self) {
        for h in &self.0 {
            h.request_stop();
        }
        for h in &mut self.0 {
            h.stop();
        }
    }
}

impl Drop for Vcpus {
    fn drop(&mut self) {
        self.stop_all();
    }
}
