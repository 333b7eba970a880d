//! A user with `CAP_PERFMON` but without `CAP_DAC_OVERRIDE` where tracefs
//! is mounted with mode 0700 (its default on current kernels): `doctor`,
//! `top` and `run` say "permission denied" and name the path, never
//! "tracefs is not mounted".
//!
//! Real parts only: a private mount namespace (`unshare -m`, nothing leaks
//! to the host) with tracefs mounted at `/sys/kernel/tracing` and a copy of
//! `/dev/kvm` that `nobody` may open; the binary then runs as uid 65534 with
//! `CAP_PERFMON` as its only capability (`setpriv`, util-linux). Needs root;
//! skipped with the reason printed otherwise.

use std::path::PathBuf;
use std::process::{Command, Output};
use tickburst_testkit::{is_root, kvm_or_skip};

const DENIED: &str = "tracefs at /sys/kernel/tracing: permission denied";

/// The binary copied where `nobody` can reach it (the build tree may be
/// private), removed on drop.
struct Reachable(PathBuf);

impl Reachable {
    fn new() -> Reachable {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("tickburst-tracefs-denied-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("tickburst");
        std::fs::copy(env!("CARGO_BIN_EXE_tickburst"), &bin).unwrap();
        Reachable(dir)
    }
}

impl Drop for Reachable {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `tickburst ARGS` as nobody with CAP_PERFMON in a mount namespace of
/// its own where tracefs is mounted with mode 0700 and `/dev/kvm` is open to
/// all. `None` (skipped, reason printed) where the tools or the namespace
/// are missing.
fn as_nobody_with_perfmon(bin: &Reachable, args: &str) -> Option<Output> {
    let script = format!(
        "set -e
         mount -t tracefs -o mode=0700 nodev /sys/kernel/tracing
         test \"$(stat -c %a /sys/kernel/tracing)\" = 700
         dev=$(mktemp -d)
         mount -t tmpfs -o mode=0755 none \"$dev\"
         mknod -m 666 \"$dev/kvm\" c 10 232
         mount --bind \"$dev/kvm\" /dev/kvm
         exec setpriv --reuid=65534 --regid=65534 --clear-groups \
           --inh-caps=-all,+perfmon --ambient-caps=-all,+perfmon \
           --bounding-set=-all,+perfmon {}/tickburst {args}",
        bin.0.display()
    );
    match Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
    {
        Ok(out) if out.status.code() == Some(0) || has_tickburst_output(&out) => Some(out),
        Ok(out) => {
            eprintln!(
                "SKIPPED {args}: the namespace could not be set up: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("SKIPPED {args}: unshare: {e}");
            None
        }
    }
}

fn has_tickburst_output(out: &Output) -> bool {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    all.contains("tracefs") || all.contains("tickburst")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_tracefs_this_user_may_not_enter_is_permission_denied_not_unmounted() {
    if !is_root() {
        eprintln!("SKIPPED tracefs_denied: needs root to make the namespace");
        return;
    }
    let bin = Reachable::new();

    // doctor: one `--` line for tracefs with the reason; doctor itself exits 0.
    let Some(out) = as_nobody_with_perfmon(&bin, "doctor") else {
        return;
    };
    let all = text(&out);
    let line = all
        .lines()
        .find(|l| l.contains(" tracefs "))
        .unwrap_or_else(|| panic!("doctor has a tracefs line: {all}"));
    assert!(line.starts_with("--") && line.contains(DENIED), "{all}");
    assert!(!all.contains("not mounted"), "{all}");
    // Privileges really were dropped: KVM is open to all here, tracefs is not.
    assert!(
        all.lines().any(|l| l.starts_with("ok  KVM API version")),
        "{all}"
    );

    // top: nothing to measure without tracepoints on a sw-only host: exit 2
    // and one line that says why; where an hv timer exists it runs on.
    let Some(out) = as_nobody_with_perfmon(&bin, "top --duration 1s") else {
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(DENIED), "top: {}", text(&out));
    assert!(!text(&out).contains("not mounted"), "{}", text(&out));
    if out.status.code() == Some(2) {
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }

    // run: the guest runs; the host probes that need tracefs are missing
    // with the reason, and the verdict says the host side was not measured.
    let Some(_vm) = kvm_or_skip("tracefs_denied run") else {
        return;
    };
    let Some(out) =
        as_nobody_with_perfmon(&bin, "run --warmup 300ms --pause 200ms --observe 500ms")
    else {
        return;
    };
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("# host probes missing:") && l.contains(DENIED)),
        "{all}"
    );
    assert!(all.contains("outcome: completed"), "{all}");
    assert!(!all.contains("not mounted"), "{all}");
}
