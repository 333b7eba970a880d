//! The VM and its vCPUs: KVM handle, guest memory, the guest's slots in
//! shared memory, the vCPU threads and the kick that parks them.

pub mod vcpu;
pub mod vm;
