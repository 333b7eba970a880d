//! tickburst's release tasks, run as `cargo xtask TASK` (the alias is in
//! `.cargo/config.toml`):
//!
//! - `dist`: a static binary, man pages, completions, the systemd unit, a
//!   `.deb` and an `.rpm` in `target/dist/` (docs/install.md);
//! - `dist-check` (root, /dev/kvm): the `.deb` installed into a clean Debian
//!   bullseye root runs `doctor` and boots the guest; the `.rpm`'s payload
//!   and scripts are as expected.
//!
//! Exit codes: 0 done, 1 a step failed (its tool's own words on stderr),
//! 2 usage.

mod binary;
mod check;
mod chroot;
mod deb;
mod dist;
mod docs;
mod error;
mod layout;
mod meta;
mod rpm;
mod stage;
mod tool;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// tickburst's release tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Args {
    /// The task.
    #[command(subcommand)]
    task: Task,
}

/// The tasks.
#[derive(Debug, Subcommand)]
enum Task {
    /// Build the static binary, man pages, completions, .deb and .rpm into
    /// target/dist/.
    Dist,
    /// Check what `dist` built: the .deb in a clean Debian bullseye root
    /// (doctor, a short run), the .rpm's files and scripts (root, /dev/kvm).
    DistCheck,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = meta::Meta::read().and_then(|meta| match args.task {
        Task::Dist => dist::dist(&meta),
        Task::DistCheck => check::check(&meta),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::from(1)
        }
    }
}
