//! How the VM is paused (`--pause-method`).
//!
//! - `kick`: the vCPU thread is kicked out of `KVM_RUN` and parked (QEMU
//!   `stop`, `virsh suspend`); the VMM process keeps running.
//! - `sigstop`: the whole VMM process is stopped and continued (`kill -STOP` /
//!   `kill -CONT`, as in the bug report), by the [`crate::pause::supervisor`].
//! - `freeze`: the VMM's cgroup is frozen and thawed (container pause), by
//!   the supervisor through [`crate::pause::cgroup`].

use serde::{Deserialize, Serialize};

/// A pause method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PauseMethod {
    /// vCPU kicked out of KVM_RUN and parked; the VMM keeps running.
    Kick,
    /// The whole VMM process stopped with SIGSTOP, continued with SIGCONT.
    Sigstop,
    /// The VMM's cgroup frozen and thawed (v2 cgroup.freeze or v1 freezer).
    Freeze,
}

impl PauseMethod {
    /// The name used on the command line and in records.
    pub fn name(self) -> &'static str {
        match self {
            PauseMethod::Kick => "kick",
            PauseMethod::Sigstop => "sigstop",
            PauseMethod::Freeze => "freeze",
        }
    }

    /// Whether the method stops the whole VMM process, so a supervising
    /// process must do it.
    pub fn needs_supervisor(self) -> bool {
        self != PauseMethod::Kick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_supervision() {
        assert_eq!(PauseMethod::Sigstop.name(), "sigstop");
        assert!(!PauseMethod::Kick.needs_supervisor());
        assert!(PauseMethod::Freeze.needs_supervisor());
    }
}
