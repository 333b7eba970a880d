//! Pause methods: kick (the vCPU parked outside `KVM_RUN`), sigstop and
//! freeze (the whole VMM stopped by a supervising process).

pub mod cgroup;
pub mod method;
pub mod supervisor;
