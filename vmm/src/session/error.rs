//! Why a session ends before it produced a record.

use crate::arch::timer::{settings_for_period, TimerSettings};
use crate::vstate::kvm::KvmUnavailable;
use crate::vstate::slots::SlotError;
use crate::vstate::vcpu_control::VcpuError;
use crate::vstate::vm::VmError;
use std::time::Duration;
use thiserror::Error;

/// Errors that end a run before it produced a record.
#[derive(Debug, Error)]
pub enum RunError {
    /// KVM cannot be used on this host (exit code 125).
    #[error("{0}")]
    KvmUnavailable(String),
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// VM setup failed.
    #[error("VM setup: {0}")]
    Setup(VmError),
    /// The guest failed before it was ready.
    #[error("guest failed to start on vCPU {vcpu}: {source}")]
    Guest {
        /// Which vCPU.
        vcpu: u32,
        /// What went wrong.
        source: VcpuError,
    },
    /// The guest did not report ready in time.
    #[error("guest not ready within {timeout:?} on vCPU {vcpu}; vCPU: {regs}")]
    NotReady {
        /// The limit.
        timeout: Duration,
        /// The first vCPU that was not ready.
        vcpu: u32,
        /// Its registers when it was stopped.
        regs: String,
    },
    /// Ctrl-C or SIGTERM before the guest was ready.
    #[error("interrupted before the guest was ready")]
    Interrupted,
}

impl From<VmError> for RunError {
    fn from(e: VmError) -> Self {
        match e {
            VmError::KvmUnavailable(msg) => RunError::KvmUnavailable(msg),
            e @ VmError::TooManyVcpus { .. } => RunError::Config(e.to_string()),
            other => RunError::Setup(other),
        }
    }
}

impl From<KvmUnavailable> for RunError {
    fn from(e: KvmUnavailable) -> Self {
        RunError::KvmUnavailable(e.0)
    }
}

impl From<SlotError> for RunError {
    fn from(e: SlotError) -> Self {
        RunError::Setup(VmError::Slot(e))
    }
}

/// Converts the period into LAPIC settings, turning errors into a message.
pub fn timer_settings(period_ns: u64, bus_cycle_ns: u64) -> Result<TimerSettings, RunError> {
    settings_for_period(period_ns, bus_cycle_ns).map_err(|e| RunError::Config(e.to_string()))
}
