//! The kick pause of several vCPUs: all are asked to leave `KVM_RUN` at
//! once, then waited for; at the end all are released at once, then waited
//! for. The session decides how long they stay parked.

use crate::vstate::vcpu::Vcpus;
use std::time::Instant;

/// Asks every vCPU in `set` to park, then waits for each; returns when each
/// left guest mode, or the first vCPU that did not acknowledge (it exited;
/// the ones already parked are released when the run stops its vCPUs).
pub fn park(vcpus: &Vcpus, set: &[u32]) -> Result<Vec<Instant>, u32> {
    for &i in set {
        vcpus.0[i as usize].request_pause();
    }
    set.iter()
        .map(|&i| vcpus.0[i as usize].wait_paused().ok_or(i))
        .collect()
}

/// Releases every vCPU in `set` at once, then waits for each; returns when
/// each re-entered `KVM_RUN` (`None`: it did not within the limit).
pub fn release(vcpus: &Vcpus, set: &[u32]) -> Vec<Option<Instant>> {
    for &i in set {
        vcpus.0[i as usize].request_resume();
    }
    set.iter()
        .map(|&i| vcpus.0[i as usize].wait_resumed())
        .collect()
}
