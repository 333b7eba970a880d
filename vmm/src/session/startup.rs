//! Waiting for every vCPU's start-up reports (probed, ready), with the
//! limit, Ctrl-C, and the registers of a vCPU that did not report.

use crate::session::error::RunError;
use crate::vstate::tsc_sync::TscSync;
use crate::vstate::vcpu::Vcpus;
use crate::vstate::vcpu_control::{VcpuEvent, VcpuEventKind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long the guest has to report each start-up step (probe, ready).
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The probe-phase report (`STATUS_PROBED`) of a vCPU.
pub(super) fn probed(kind: &VcpuEventKind) -> Option<()> {
    matches!(kind, VcpuEventKind::Probed).then_some(())
}

/// The ready report (`STATUS_READY`) of a vCPU: its TSC at a host time.
pub(super) fn ready(kind: &VcpuEventKind) -> Option<TscSync> {
    match kind {
        VcpuEventKind::Ready { sync } => Some(*sync),
        _ => None,
    }
}

/// Waits until every vCPU gave the report `report` picks ([`probed`],
/// [`ready`]); returns what it picked of each.
pub(super) fn wait_all<T: Copy>(
    vcpus: &mut Vcpus,
    rx: &Receiver<VcpuEvent>,
    stop: Option<&AtomicBool>,
    report: fn(&VcpuEventKind) -> Option<T>,
) -> Result<Vec<T>, RunError> {
    let mut ready: Vec<Option<T>> = vec![None; vcpus.0.len()];
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(VcpuEvent { vcpu, kind }) => match kind {
                VcpuEventKind::Ready { .. } | VcpuEventKind::Probed => {
                    let Some(got) = report(&kind) else { continue };
                    if let Some(slot) = ready.get_mut(vcpu as usize) {
                        *slot = Some(got);
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
fn first_missing<T>(ready: &[Option<T>]) -> u32 {
    ready.iter().position(Option::is_none).unwrap_or(0) as u32
}
