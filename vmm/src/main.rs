//! The `tickburst` command ([`tickburst::cli::commands`]). Exit codes: 0
//! success, 2 usage or runtime error, 125 KVM not usable on this host, 130
//! interrupted (partial report written).

#![deny(clippy::undocumented_unsafe_blocks)]

use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let started = Instant::now();
    let code = tickburst::cli::commands::main(std::env::args_os().collect(), started);
    ExitCode::from(code.clamp(0, 255) as u8)
}
