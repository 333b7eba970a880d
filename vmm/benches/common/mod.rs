//! What the benches share: running `tickburst` as a child with `--json` and
//! measuring it.

use std::process::Command;

/// A finished run of the binary (not every bench reads every field).
#[allow(dead_code)]
pub struct Measured {
    /// The record it wrote.
    pub record: serde_json::Value,
    /// Its size, bytes.
    pub record_bytes: u64,
    /// Peak RSS of the child, KiB (`ru_maxrss`).
    pub rss_kib: i64,
}

/// Runs `bin ARGS --json <temp file>`, waits for it, and returns its record
/// and peak RSS; `None` (with a line on stderr) if it failed.
pub fn run_measured(bin: &str, args: &[&str]) -> Option<Measured> {
    let json = std::env::temp_dir().join(format!(
        "tickburst-bench-{}-{}.json",
        std::process::id(),
        args.join("_").replace('/', "_")
    ));
    let child = Command::new(bin)
        .args(args)
        .arg("--json")
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for the child we spawned; the pointers are to live locals.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    if pid <= 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        eprintln!("tickburst {args:?} failed (status {status:#x})");
        return None;
    }
    let record_bytes = std::fs::metadata(&json).ok()?.len();
    let record = serde_json::from_slice(&std::fs::read(&json).ok()?).ok()?;
    let _ = std::fs::remove_file(&json);
    Some(Measured {
        record,
        record_bytes,
        rss_kib: usage.ru_maxrss,
    })
}
