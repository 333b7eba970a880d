//! Pause methods (`--pause-method`):
//!
//! - `kick`: the vCPU threads are kicked out of `KVM_RUN` and parked (QEMU
//!   `stop`, `virsh suspend`); the VMM process keeps running ([`kick`]).
//! - `sigstop`: the whole VMM process is stopped and continued (`kill -STOP`
//!   / `kill -CONT`, as in the bug report), by the [`supervisor`], which the
//!   VMM asks over a pipe ([`protocol`]).
//! - `freeze`: the VMM's cgroup is frozen and thawed (container pause), by
//!   the supervisor through [`cgroup`].
//!
//! The [`guard`] continues and thaws the VMM if the supervisor dies; both
//! signal it only through a [`pidfd`], and the descriptors they pass down
//! are claimed once ([`fds`]).

pub mod cgroup;
pub mod fds;
pub mod guard;
pub mod kick;
pub mod pidfd;
pub mod protocol;
pub mod supervisor;
