//! The pause protocol between the VMM and its supervisor: one text line each
//! way over a pipe pair the VMM finds through [`SUPERVISOR_ENV`].
//!
//! `pause <sigstop|freeze> <ns> <tid>` -> `ok <start_mono_ns> <end_mono_ns>`
//! or `err <message>`.

use crate::pause::fds::{claim_fds, FdKind};
use crate::pause::parent_death::{arm_after_exec, ParentDeathError};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::sync::{Mutex, OnceLock};
use tickburst_analysis::names::PauseMethod;

/// Environment variable holding the VMM's ends of the pipes (`read,write`).
pub const SUPERVISOR_ENV: &str = "TICKBURST_SUPERVISOR_FDS";

/// The request line for a pause of `ns` by `method`, vCPU thread `tid`.
pub(crate) fn request_line(method: PauseMethod, ns: u64, tid: i32) -> String {
    format!("pause {method} {ns} {tid}")
}

/// Reads a request line: the method, the length and the vCPU thread.
pub(crate) fn parse_request(line: &str) -> Result<(PauseMethod, u64, i32), String> {
    let bad = || format!("bad request: {}", line.trim());
    match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["pause", method, ns, tid] => Ok((
            method.parse().map_err(|_| bad())?,
            ns.parse().map_err(|_| bad())?,
            tid.parse().map_err(|_| bad())?,
        )),
        _ => Err(bad()),
    }
}

/// The reply line to a request.
pub(crate) fn reply_line(reply: &Result<(u64, u64), String>) -> String {
    match reply {
        Ok((s, e)) => format!("ok {s} {e}"),
        Err(e) => format!("err {e}"),
    }
}

struct Link {
    to_parent: File,
    from_parent: BufReader<File>,
}

/// What this process found in [`SUPERVISOR_ENV`].
enum Claimed {
    /// Not supervised (or the variable did not name the pipes).
    No,
    /// Supervised: the pipes.
    Link(Mutex<Link>),
    /// Supervised, but it could not be made to die with its supervisor.
    Unsafe(ParentDeathError),
}

static LINK: OnceLock<Claimed> = OnceLock::new();

/// Claims the pipes from [`SUPERVISOR_ENV`] (once per process: the
/// OnceLock, and the variable is removed) and makes this process die with
/// the supervisor.
fn claimed() -> &'static Claimed {
    LINK.get_or_init(|| {
        let Ok(mut fds) = claim_fds(SUPERVISOR_ENV, &[FdKind::PipeRead, FdKind::PipeWrite]) else {
            return Claimed::No;
        };
        let (Some(to_parent), Some(from_parent)) = (fds.pop(), fds.pop()) else {
            return Claimed::No;
        };
        let (to_parent, from_parent) = (File::from(to_parent), File::from(from_parent));
        if let Err(e) = arm_after_exec(from_parent.as_raw_fd()) {
            return Claimed::Unsafe(e);
        }
        Claimed::Link(Mutex::new(Link {
            to_parent,
            from_parent: BufReader::new(from_parent),
        }))
    })
}

/// The link to the supervisor.
fn link() -> Option<&'static Mutex<Link>> {
    match claimed() {
        Claimed::Link(link) => Some(link),
        _ => None,
    }
}

/// Whether this process runs under a supervisor. The first call claims the
/// pipes from [`SUPERVISOR_ENV`] and removes it from the environment, so
/// make it before other threads start (`main` does); it also makes this
/// process die with the supervisor ([`crate::pause::parent_death`]), and
/// kills it at once if the supervisor is gone already. An error when the
/// parent-death signal cannot be set: the VMM must not run then.
pub fn is_supervised() -> Result<bool, &'static ParentDeathError> {
    match claimed() {
        Claimed::No => Ok(false),
        Claimed::Link(_) => Ok(true),
        Claimed::Unsafe(e) => Err(e),
    }
}

/// Asks the supervisor to stop this whole process (or freeze its cgroup) for
/// `ns`, and returns the CLOCK_MONOTONIC times at which every thread (vCPU
/// thread `tid` first) was seen stopped, or the cgroup frozen, and right
/// before it was continued or thawed. Blocks (stopped) for the pause.
pub fn request_pause(method: PauseMethod, ns: u64, tid: i32) -> Result<(u64, u64), String> {
    let link = link().ok_or_else(|| {
        format!(
            "--pause-method {} needs the tickburst supervisor (run the tickburst binary)",
            method.name()
        )
    })?;
    let mut link = link.lock().unwrap_or_else(|p| p.into_inner());
    writeln!(link.to_parent, "{}", request_line(method, ns, tid))
        .map_err(|e| format!("supervisor gone: {e}"))?;
    let mut line = String::new();
    match link.from_parent.read_line(&mut line) {
        Ok(0) => return Err("supervisor gone (pipe closed)".into()),
        Err(e) => return Err(format!("supervisor gone: {e}")),
        Ok(_) => {}
    }
    parse_reply(&line)
}

/// Reads a reply line: the two edges, or the supervisor's error.
pub(crate) fn parse_reply(line: &str) -> Result<(u64, u64), String> {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("ok") => {
            let start = words.next().and_then(|w| w.parse().ok());
            let end = words.next().and_then(|w| w.parse().ok());
            match (start, end) {
                (Some(s), Some(e)) if e >= s => Ok((s, e)),
                _ => Err(format!("bad supervisor reply: {}", line.trim())),
            }
        }
        Some("err") => Err(line.trim().trim_start_matches("err").trim().to_string()),
        _ => Err(format!("bad supervisor reply: {}", line.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies() {
        assert_eq!(parse_reply("ok 10 20\n"), Ok((10, 20)));
        assert!(parse_reply("ok 20 10\n").is_err());
        assert_eq!(parse_reply("err no freezer\n"), Err("no freezer".into()));
        assert!(parse_reply("").is_err());
    }

    #[test]
    fn requests_round_trip() {
        let line = request_line(PauseMethod::Freeze, 5, 7);
        assert_eq!(parse_request(&line), Ok((PauseMethod::Freeze, 5, 7)));
        assert!(parse_request("pause kick2 5 7").is_err());
        assert!(parse_request("pause freeze x 7").is_err());
        assert_eq!(parse_reply(&reply_line(&Ok((1, 2)))), Ok((1, 2)));
        assert_eq!(
            parse_reply(&reply_line(&Err("no".into()))),
            Err("no".into())
        );
    }
}
