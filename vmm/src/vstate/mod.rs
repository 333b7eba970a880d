//! The VM and its vCPUs: the KVM handle, guest memory and the guest's slots
//! in it, the vCPU threads, and the kick that makes a thread leave
//! `KVM_RUN`.

pub mod kick;
pub mod kvm;
pub mod slots;
mod test_setup;
pub mod tsc_sync;
pub mod vcpu;
pub mod vcpu_control;
pub mod vcpu_loop;
pub mod vm;
