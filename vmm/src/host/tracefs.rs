//! tracefs and kallsyms: where tracepoint ids live and where `apic_timer_fn` is.
//!
//! tickburst reads tracepoint ids and formats here; the one change to global
//! tracing state, `top`'s kprobe event, is [`crate::host::kprobe_event`]. If tracefs is not mounted and we are root, it is mounted in
//! a mount namespace of tickburst's own ([`mount_private`]): no other process
//! sees the mount, none can unmount it under us (two tickburst processes, a
//! `top` and a `run`, each mounting and unmounting the one global mount took
//! tracefs away from each other), and it goes with the process however the
//! process ends.

use crate::host::ksyms::KsymsError;
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Where tracefs is normally mounted.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Legacy location under debugfs.
pub const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Tracepoints tickburst uses, as `system/name`.
pub const TRACEPOINTS: &[&str] = &[
    "timer/hrtimer_expire_entry",
    "timer/hrtimer_expire_exit",
    "timer/hrtimer_start",
    "kvm/kvm_exit",
    "kvm/kvm_hv_timer_state",
];

/// A located tracefs.
#[derive(Debug)]
pub struct TracefsMount {
    /// The tracefs root.
    pub root: PathBuf,
    /// Whether this process mounted it (in its own mount namespace).
    pub mounted_by_us: bool,
}

/// Why tracefs, a tracepoint or a field of one is not usable; each keeps
/// the kernel's errno where there is one.
#[derive(Debug, Error)]
pub enum TracefsError {
    /// Mounted, but this user may not look inside.
    #[error("tracefs at {0}: permission denied (its mode lets only its owner in: run as root, or mount it with a mode or gid that lets this user read it)")]
    Denied(&'static str),
    /// Not mounted, and this process may not mount it.
    #[error("tracefs is not mounted at {TRACEFS} (mounting it needs root)")]
    NotMounted,
    /// A step of mounting it privately failed.
    #[error("{what}: {source}")]
    Mount {
        /// The step.
        what: String,
        /// The kernel's error.
        source: io::Error,
    },
    /// The tracepoint's id is not there (an older kernel, or no module).
    #[error("tracepoint {event} not found ({source})")]
    NoEvent {
        /// `system/name`.
        event: String,
        /// The error reading its `id`.
        source: io::Error,
    },
    /// The tracepoint's id is not a number.
    #[error("tracepoint {event}: bad id {text:?}")]
    BadId {
        /// `system/name`.
        event: String,
        /// What its `id` file holds.
        text: String,
    },
    /// The tracepoint's `format` could not be read.
    #[error("tracepoint {event} format not readable ({source})")]
    NoFormat {
        /// `system/name`.
        event: String,
        /// The error reading it.
        source: io::Error,
    },
    /// The tracepoint has no such field.
    #[error("tracepoint {event} has no field {field}")]
    NoField {
        /// `system/name`.
        event: String,
        /// The field.
        field: String,
    },
    /// A kernel symbol's address is not known.
    #[error(transparent)]
    Symbol(#[from] KsymsError),
}

/// Set once this process has mounted tracefs in its own mount namespace.
static MOUNTED_PRIVATELY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn has_events(root: &Path) -> bool {
    root.join("events").is_dir()
}

/// Where tracefs is mounted but this user may not look inside (a mount
/// with mode 0700 and a user without `CAP_DAC_OVERRIDE`): says so, naming
/// the path, rather than "not mounted".
fn denied() -> Option<TracefsError> {
    [TRACEFS, DEBUGFS_TRACING].iter().find_map(|root| {
        match std::fs::metadata(Path::new(root).join("events")) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                Some(TracefsError::Denied(root))
            }
            _ => None,
        }
    })
}

/// Where tracefs is mounted now, if anywhere.
pub fn find() -> Option<PathBuf> {
    [TRACEFS, DEBUGFS_TRACING]
        .iter()
        .map(PathBuf::from)
        .find(|p| has_events(p))
}

/// Finds tracefs, or mounts it privately ([`mount_private`]) when
/// `may_mount` (root).
pub fn locate_or_mount(may_mount: bool) -> Result<TracefsMount, TracefsError> {
    if let Some(root) = find() {
        return Ok(TracefsMount {
            root,
            mounted_by_us: MOUNTED_PRIVATELY.load(std::sync::atomic::Ordering::Relaxed),
        });
    }
    if let Some(why) = denied() {
        return Err(why);
    }
    if !may_mount {
        return Err(TracefsError::NotMounted);
    }
    mount_private()?;
    Ok(TracefsMount {
        root: PathBuf::from(TRACEFS),
        mounted_by_us: true,
    })
}

/// Where tracefs is not mounted: moves this process into a mount namespace
/// of its own (`unshare(CLONE_NEWNS)`, every mount made private so nothing
/// propagates back to the host's namespace) and mounts tracefs at
/// [`TRACEFS`] there. Children inherit it; the namespace and the mount end
/// with the last process in it.
///
/// A mount namespace belongs to a thread: called in a process with several
/// threads, only the calling thread moves. The command line calls it first
/// thing (`cli::commands::main`), before any thread starts.
pub fn mount_private() -> Result<(), TracefsError> {
    let cstr = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (root, target, fstype, source) = (cstr("/"), cstr(TRACEFS), cstr("tracefs"), cstr("nodev"));
    let os_err = |what: &str| TracefsError::Mount {
        what: what.into(),
        source: io::Error::last_os_error(),
    };
    // SAFETY: unshare(2) takes only flags; CLONE_NEWNS moves the calling
    // thread into a copy of its mount namespace and touches no memory of ours.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(os_err(
            "tracefs is not mounted; a private mount namespace for it",
        ));
    }
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call and
    // null for the unused source, type and data: changes the propagation of
    // the mounts in the namespace this thread has just made its own.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(os_err("tracefs is not mounted; making the mounts private"));
    }
    // SAFETY: mount(2) with NUL-terminated strings that outlive the call and
    // no data.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(os_err(&format!("mounting tracefs at {TRACEFS}")));
    }
    MOUNTED_PRIVATELY.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// The id of tracepoint `system/name` under `root`.
pub fn event_id(root: &Path, event: &str) -> Result<u64, TracefsError> {
    let path = root.join("events").join(event).join("id");
    let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::NoEvent {
        event: event.into(),
        source,
    })?;
    text.trim().parse().map_err(|_| TracefsError::BadId {
        event: event.into(),
        text,
    })
}

/// Offset of `field` in the raw data of a tracepoint, from its `format` text
/// (`field:void * hrtimer;\toffset:8;\tsize:8;\tsigned:0;`).
pub fn field_offset_in(format: &str, field: &str) -> Option<usize> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.split_whitespace().last()?.trim_start_matches('*');
        if name != field {
            return None;
        }
        rest.split(';')
            .find_map(|kv| kv.trim().strip_prefix("offset:"))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Offset of `field` in the raw data of tracepoint `system/name` under `root`
/// (read from its `format` file, so kernels that move fields still work).
pub fn field_offset(root: &Path, event: &str, field: &str) -> Result<usize, TracefsError> {
    let path = root.join("events").join(event).join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::NoFormat {
        event: event.into(),
        source,
    })?;
    field_offset_in(&text, field).ok_or_else(|| TracefsError::NoField {
        event: event.into(),
        field: field.into(),
    })
}

/// Address of `symbol` from `/proc/kallsyms` text (0 means hidden by
/// `kptr_restrict`, reported as `None`).
pub fn symbol_address(kallsyms: &str, symbol: &str) -> Option<u64> {
    kallsyms.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let addr = parts.next()?;
        let _kind = parts.next()?;
        let name = parts.next()?;
        if name != symbol {
            return None;
        }
        u64::from_str_radix(addr, 16).ok().filter(|&a| a != 0)
    })
}

/// Address of `apic_timer_fn` (the sw timer callback), or why not.
/// Reads `/proc/kallsyms` only up to its line ([`crate::host::ksyms`]).
pub fn apic_timer_fn_address() -> Result<u64, TracefsError> {
    use crate::host::ksyms::{kallsyms_address, APIC_TIMER_FN};
    Ok(kallsyms_address(APIC_TIMER_FN)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_symbols_and_ignores_hidden_ones() {
        let text =
            "ffffffff812c81d0 t apic_timer_fn\nffffffff812c8000 t apic_timer_fn_other [kvm]\n";
        assert_eq!(
            symbol_address(text, "apic_timer_fn"),
            Some(0xffff_ffff_812c_81d0)
        );
        assert_eq!(
            symbol_address("0000000000000000 t apic_timer_fn\n", "apic_timer_fn"),
            None
        );
        assert_eq!(symbol_address("garbage\n\n", "apic_timer_fn"), None);
    }

    #[test]
    fn field_offsets_from_a_format_file() {
        let format = "name: hrtimer_expire_entry\nID: 466\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:void * hrtimer;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:s64 now;\toffset:16;\tsize:8;\tsigned:1;\n";
        assert_eq!(field_offset_in(format, "hrtimer"), Some(8));
        assert_eq!(field_offset_in(format, "now"), Some(16));
        assert_eq!(field_offset_in(format, "common_type"), Some(0));
        assert_eq!(field_offset_in(format, "function"), None);
        assert_eq!(field_offset_in("garbage;\nfield:;;", "now"), None);
    }

    #[test]
    fn event_ids_from_a_tree() {
        let root = std::env::temp_dir().join(format!("tickburst-tracefs-{}", std::process::id()));
        std::fs::create_dir_all(root.join("events/timer/hrtimer_start")).unwrap();
        std::fs::write(root.join("events/timer/hrtimer_start/id"), "460\n").unwrap();
        assert_eq!(event_id(&root, "timer/hrtimer_start").unwrap(), 460);
        let e = event_id(&root, "kvm/kvm_exit").unwrap_err();
        assert!(
            matches!(&e, TracefsError::NoEvent { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{e}"
        );
        assert!(e.to_string().contains("not found"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
