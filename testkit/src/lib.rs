//! What every tickburst test shares, in one dev-only crate that no shipped
//! build links: the VM lock (one VM at a time across test binaries on a
//! 2-core host), skip-or-fail when KVM is missing
//! (`TICKBURST_REQUIRE_KVM=1` turns the skip into a failure), the
//! `tickburst` binary of the test ([`tickburst!`]), temporary paths,
//! signals, editing a JSON record ([`json`]) and a QEMU guest ([`qemu`]).
//!
//! ```no_run
//! let Some(_vm) = tickburst_testkit::kvm_or_skip("my_test") else { return };
//! // ... boot a guest ...
//! ```

#![deny(missing_docs)]

pub mod json;
pub mod qemu;
pub mod svg;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Set to `1` to make KVM tests fail instead of skip when KVM is unusable.
pub const REQUIRE_KVM_ENV: &str = "TICKBURST_REQUIRE_KVM";
/// Lock file that serialises VM-booting tests across processes.
pub const LOCK_PATH: &str = "/tmp/tickburst-kvm-tests.lock";

/// Holds the exclusive VM lock until dropped.
pub struct VmLock {
    _file: File,
}

/// Whether KVM must be present (`TICKBURST_REQUIRE_KVM=1`).
pub fn kvm_required() -> bool {
    std::env::var(REQUIRE_KVM_ENV).is_ok_and(|v| v == "1")
}

/// Takes the VM lock if KVM is usable. If it is not, prints why and returns
/// `None` (the caller returns: skipped), or panics when KVM is required.
pub fn kvm_or_skip(test: &str) -> Option<VmLock> {
    if let Err(e) = kvm_ioctls::Kvm::new() {
        let why = match e.errno() {
            libc::ENOENT => "/dev/kvm does not exist".to_string(),
            libc::EACCES | libc::EPERM => "permission denied on /dev/kvm".to_string(),
            _ => format!("cannot open /dev/kvm: {e}"),
        };
        if kvm_required() {
            panic!("{test}: KVM is required ({REQUIRE_KVM_ENV}=1) but unusable: {why}");
        }
        eprintln!("SKIPPED {test}: KVM unusable: {why}");
        return None;
    }
    Some(lock())
}

/// Takes the exclusive VM lock (blocking).
pub fn lock() -> VmLock {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_PATH)
        .unwrap_or_else(|e| panic!("opening {LOCK_PATH}: {e}"));
    // SAFETY: flock on a file descriptor we own; it is released when the file
    // is closed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(
        rc,
        0,
        "flock {LOCK_PATH}: {}",
        std::io::Error::last_os_error()
    );
    VmLock { _file: file }
}

/// A [`Command`] for the `tickburst` binary the calling test target was
/// built with (`CARGO_BIN_EXE_tickburst`, so only in the `tickburst`
/// package's integration tests and benches), with `args` if given.
///
/// ```ignore
/// let out = tickburst_testkit::output(&mut tickburst_testkit::tickburst!(&["--version"]));
/// ```
#[macro_export]
macro_rules! tickburst {
    () => {
        ::std::process::Command::new(env!("CARGO_BIN_EXE_tickburst"))
    };
    ($args:expr) => {{
        let mut cmd = ::std::process::Command::new(env!("CARGO_BIN_EXE_tickburst"));
        cmd.args($args);
        cmd
    }};
}

/// Runs `cmd` to the end and returns what it wrote (panics only when it
/// cannot be started).
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()))
}

/// A path named `name` in this test process's own temporary folder
/// (`$TMPDIR/tickburst-tests-<pid>/`, created), so test binaries running at
/// once never share a file.
pub fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickburst-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir.join(name)
}

/// Sends `sig` to `pid`, a process the test started (and has not reaped),
/// so the pid cannot name another process; a failure is ignored (it may
/// have exited already).
pub fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) takes no pointers; the pid is a child of this test,
    // not yet reaped, so it still names that child.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Whether this test runs as root (perf, cgroups and tracefs need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A file of the tests' recorded data (`vmm/tests/data/<name>`: real records
/// and bpftrace logs of the rig).
///
/// The path is made from this crate's directory by text (its parent, then
/// `vmm/tests/data`), never through `testkit/..`: the rig copies only the
/// data folders into the emulated host, where `testkit/` does not exist.
pub fn data(name: &str) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the testkit crate lives in the workspace's folder");
    workspace.join("vmm/tests/data").join(name)
}
