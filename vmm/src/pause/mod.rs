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
//! The VMM dies with its supervisor ([`parent_death`]); the [`guard`] thaws
//! and removes its cgroup if the supervisor dies, and the supervisor
//! replaces a guard that dies ([`guard_handle`]). Both signal the VMM only
//! through a [`pidfd`], and wait on pidfds to see a death at once
//! ([`poll`]); the descriptors they pass down are claimed once ([`fds`]).

pub mod cgroup;
pub mod fds;
pub mod guard;
pub mod guard_handle;
pub mod kick;
pub mod parent_death;
pub mod pidfd;
pub mod poll;
pub mod protocol;
pub mod supervisor;
pub mod supervisor_error;
pub mod task_state;
