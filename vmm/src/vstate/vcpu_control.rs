//! What the VMM and a vCPU thread share: the control block (go, pause,
//! stop), and what the thread reports (events and errors).

use crate::vstate::tsc_sync::TscSync;
use guest_payload::abi;
use std::sync::{Condvar, Mutex};
use std::time::Instant;
use thiserror::Error;

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
    /// The guest reported ready; `sync` pairs its TSC with host time, read
    /// right after `KVM_RUN` returned with the report.
    Ready {
        /// The vCPU's TSC at a host time.
        sync: TscSync,
    },
    /// The guest finished its probe phase ([`abi::STATUS_PROBED`]) and waits
    /// for [`crate::vstate::slots::start_guest`].
    Probed,
    /// The thread ended: `Ok` when asked to stop, with the vCPU registers.
    Exited(Result<String, VcpuError>),
}

/// What the VMM asked and what the thread did (under [`VcpuControl::state`]).
#[derive(Debug, Default)]
pub(crate) struct ControlState {
    pub(crate) go: bool,
    pub(crate) pause_requested: bool,
    pub(crate) paused: bool,
    pub(crate) stop: bool,
    pub(crate) paused_at: Option<Instant>,
    pub(crate) resumed_at: Option<Instant>,
    /// The vCPU's TSC at a host time, read as it parked.
    pub(crate) paused_sync: Option<TscSync>,
}

/// Shared control block between the VMM and the vCPU thread.
#[derive(Debug, Default)]
pub(crate) struct VcpuControl {
    pub(crate) state: Mutex<ControlState>,
    pub(crate) changed: Condvar,
}

/// Waits until [`crate::vstate::vcpu::VcpuHandle::go`] or stop; `false` means stop.
pub(crate) fn wait_for_go(control: &VcpuControl) -> bool {
    let mut st = control.state.lock().unwrap_or_else(|p| p.into_inner());
    while !st.go && !st.stop {
        st = control.changed.wait(st).unwrap_or_else(|p| p.into_inner());
    }
    !st.stop
}

/// Parks the thread while a pause is requested; `sync` reads the vCPU's
/// TSC at a host time as it parks. Returns `false` to stop.
pub(crate) fn park_if_requested(
    control: &VcpuControl,
    sync: impl FnOnce() -> Option<TscSync>,
) -> bool {
    let mut st = control.state.lock().unwrap_or_else(|p| p.into_inner());
    if st.stop {
        return false;
    }
    if st.pause_requested {
        st.paused = true;
        st.paused_at = Some(Instant::now());
        st.paused_sync = sync();
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
