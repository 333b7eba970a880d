//! Waiting for every vCPU's start-up reports (probed, ready), with the
//! limit, Ctrl-C, and the registers of a vCPU that did not report.

use crate::session::error::RunError;
use crate::vstate::vcpu::Vcpus;
use crate::vstate::vcpu_control::{VcpuEvent, VcpuEventKind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long the guest has to report each start-up step (probe, ready).
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// A start-up report every vCPU gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// `STATUS_PROBED`.
    Probed,
    /// `STATUS_READY`.
    Ready,
}

/// Waits until every vCPU gave the report of `phase`; returns when each did.
pub(super) fn wait_all(
    vcpus: &mut Vcpus,
    rx: &Receiver<VcpuEvent>,
    stop: Option<&AtomicBool>,
    phase: Phase,
) -> Result<Vec<Instant>, RunError> {
    let mut ready: Vec<Option<Instant>> = vec![None; vcpus.0.len()];
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(VcpuEvent { vcpu, kind }) => match kind {
                VcpuEventKind::Ready { .. } | VcpuEventKind::Probed => {
                    let at = match (kind, phase) {
                        (VcpuEventKind::Ready { at }, Phase::Ready) => at,
                        (VcpuEventKind::Probed, Phase::Probed) => Instant::now(),
                        _ => continue,
                    };
                    if let Some(slot) = ready.get_mut(vcpu as usize) {
                        *slot = Some(at);
                    }
                    if ready.iter().all(Option::is_some) {
                        return Ok(ready.into_iter().flatten().collect());
                    }
                }
                VcpuEventKind::Exited(Err(source)) => return Err(RunError::Guest { vcpu, source }),
                VcpuEventKind::Exited(Ok(regs)) => {
                    return Err(RunError::NotReady {
                        timeout: READY_TIMEOUT,
                        vcpu,
                        regs,
                    })
                }
            },
            Err(RecvTimeoutError::Disconnected) => {
                return Err(RunError::NotReady {
                    timeout: READY_TIMEOUT,
                    vcpu: first_missing(&ready),
                    regs: "(vCPU thread gone)".into(),
                })
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            vcpus.stop_all();
            return Err(RunError::Interrupted);
        }
        if Instant::now() > deadline {
            let missing = first_missing(&ready);
            vcpus.stop_all();
            // The stopped threads report their registers.
            let mut regs = "(unavailable)".to_string();
            while let Ok(VcpuEvent { vcpu, kind }) = rx.recv_timeout(Duration::from_millis(500)) {
                match kind {
                    VcpuEventKind::Exited(Err(source)) => {
                        return Err(RunError::Guest { vcpu, source })
                    }
                    VcpuEventKind::Exited(Ok(r)) if vcpu == missing => regs = r,
                    _ => {}
                }
            }
            return Err(RunError::NotReady {
                timeout: READY_TIMEOUT,
                vcpu: missing,
                regs,
            });
        }
    }
}

/// The first vCPU that has not reported ready.
fn first_missing(ready: &[Option<Instant>]) -> u32 {
    ready.iter().position(Option::is_none).unwrap_or(0) as u32
}
