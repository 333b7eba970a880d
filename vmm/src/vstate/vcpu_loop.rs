//! The body of a vCPU thread: `KVM_RUN` in a loop, parked while a pause is
//! asked for, the guest's status reports turned into events, and a guest's
//! fault read from its slot.

use crate::arch::regs;
use crate::vstate::kick::KickTarget;
use crate::vstate::slots;
use crate::vstate::tsc_sync::{self, TscSync};
use crate::vstate::vcpu_control::{
    park_if_requested, VcpuControl, VcpuError, VcpuEvent, VcpuEventKind,
};
use crate::vstate::vm::Vcpu;
use guest_payload::abi::{self, GuestResults};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

pub(crate) fn describe(vcpu: &VcpuFd) -> String {
    match vcpu.get_regs() {
        Ok(r) => regs::describe(&r, vcpu.get_sregs().ok().as_ref()),
        Err(e) => format!("(registers unavailable: {e})"),
    }
}

/// Runs the vCPU until stopped. `vcpu` is a parameter so that it drops
/// after every local, the [`KickTarget`] included.
pub(crate) fn vcpu_loop(
    index: u32,
    mut vcpu: Vcpu,
    control: &VcpuControl,
    events: &Sender<VcpuEvent>,
) {
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
        if !park_if_requested(control, || tsc_sync::read(vcpu.fd()).ok()) {
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
                        let sync = ready_sync(vcpu, index);
                        let _ = events.send(VcpuEvent {
                            vcpu: index,
                            kind: VcpuEventKind::Ready { sync },
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

/// The vCPU's TSC at a host time, read now that the guest reported ready;
/// if KVM cannot read it, the guest's own stamp of the report paired with
/// now (late by however long the thread took to run again).
fn ready_sync(vcpu: &Vcpu, index: u32) -> TscSync {
    tsc_sync::read(vcpu.fd()).unwrap_or_else(|_| TscSync {
        tsc: slots::read_results(vcpu.mem(), index).map_or(0, |r| r.ready_tsc),
        at: Instant::now(),
        width: Duration::MAX,
    })
}

/// Reads the fault or config error the guest left in vCPU `index`'s slot. The
/// values are only printed, never used as indices.
fn guest_error(vcpu: &Vcpu, index: u32, status: [u8; 4]) -> VcpuError {
    let regs = describe(vcpu.fd());
    let r = slots::read_results(vcpu.mem(), index).unwrap_or(GuestResults {
        error: u32::MAX,
        fault_vector: u32::MAX,
        fault_rip: u64::MAX,
        fault_error_code: u64::MAX,
        ..GuestResults::default()
    });
    match u32::from_le_bytes(status) {
        abi::STATUS_FAULT => VcpuError::GuestFault {
            vector: r.fault_vector,
            rip: r.fault_rip,
            error_code: r.fault_error_code,
            regs,
        },
        _ => VcpuError::GuestBadConfig(r.error, regs),
    }
}
