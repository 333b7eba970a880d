//! A kprobe event of tickburst's own in tracefs, as `perf probe` makes one:
//! a line `p:tickburst/hv_expired_<pid>_<n> FUNCTION` appended to
//! `kprobe_events`, its tracepoint id read from `events/tickburst/.../id`.
//!
//! Why: each perf event of the kprobe PMU registers a kprobe of its own, so
//! with N vCPU threads watched every call of the function runs N handlers.
//! One kprobe event serves any number of per-thread perf counters opened on
//! its id: one handler per call (docs/benchmarks-top.md).
//!
//! This is the one place tickburst changes global tracing state, and it
//! undoes it: the event is removed when the last [`KprobeEvent`] handle is
//! dropped (after the perf counters on it are closed; the kernel refuses
//! with `EBUSY` before). An event left by a tickburst that was killed
//! (`SIGKILL`, a crash) names its process: the next one removes it
//! ([`remove_stale`]). `kprobe_events` is only ever appended to: opening it
//! with truncation would remove every kprobe event on the host.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use thiserror::Error;

/// The event group of tickburst's kprobe events.
pub const GROUP: &str = "tickburst";
/// The start of their names; the creating process's pid follows.
const PREFIX: &str = "hv_expired_";
/// The control file under the tracefs root.
const CONTROL: &str = "kprobe_events";

/// Events made by this process so far (a name is never reused).
static MADE: AtomicU32 = AtomicU32::new(0);

/// Why a kprobe event could not be made; each keeps the kernel's errno.
#[derive(Debug, Error)]
pub enum KprobeEventError {
    /// Writing the definition failed (no `CONFIG_KPROBE_EVENTS`, not
    /// writable without root, an unknown function).
    #[error("{}: {source}", .path.display())]
    Define {
        /// The control file.
        path: PathBuf,
        /// The kernel's error.
        source: io::Error,
    },
    /// The new event's id could not be read.
    #[error("kprobe event {name}: id not readable ({source})")]
    Id {
        /// `group/event`.
        name: String,
        /// The error.
        source: io::Error,
    },
    /// The new event's id is not a number.
    #[error("kprobe event {name}: bad id {text:?}")]
    BadId {
        /// `group/event`.
        name: String,
        /// What its `id` file holds.
        text: String,
    },
}

/// A kprobe event this process made; removed when dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct KprobeEvent {
    /// `group/event`.
    name: String,
    /// Its tracepoint id.
    id: u64,
    /// The control file it was defined in.
    control: PathBuf,
}

impl KprobeEvent {
    /// Defines a kprobe event on `function` in the tracefs at `root`.
    pub fn create(root: &Path, function: &str) -> Result<KprobeEvent, KprobeEventError> {
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let name = format!("{GROUP}/{PREFIX}{}_{n}", std::process::id());
        let control = root.join(CONTROL);
        append(&control, &format!("p:{name} {function}\n")).map_err(|source| {
            KprobeEventError::Define {
                path: control.clone(),
                source,
            }
        })?;
        // Defined: from here a failure removes it again (the drop).
        let mut event = KprobeEvent {
            name,
            id: 0,
            control,
        };
        let id_path = root.join("events").join(&event.name).join("id");
        let text = std::fs::read_to_string(id_path).map_err(|source| KprobeEventError::Id {
            name: event.name.clone(),
            source,
        })?;
        event.id = text.trim().parse().map_err(|_| KprobeEventError::BadId {
            name: event.name.clone(),
            text: text.trim().into(),
        })?;
        Ok(event)
    }

    /// Its tracepoint id (for `perf_event_open`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// `group/event`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for KprobeEvent {
    fn drop(&mut self) {
        if let Err(e) = remove(&self.control, &self.name) {
            // Nothing to return to; said once, and the next tickburst
            // removes it (its pid is in the name).
            eprintln!(
                "tickburst: kprobe event {} not removed from {}: {e}",
                self.name,
                self.control.display()
            );
        }
    }
}

/// Appends `line` to the control file (never truncating it).
fn append(control: &Path, line: &str) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(control)?
        .write_all(line.as_bytes())
}

/// Removes event `name` (`group/event`).
fn remove(control: &Path, name: &str) -> io::Result<()> {
    append(control, &format!("-:{name}\n"))
}

/// The events in a `kprobe_events` listing made by a tickburst process
/// that `alive` says is gone, as `group/event`. Pure.
pub fn stale(listing: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| {
            // "p:tickburst/hv_expired_123_0 kvm_lapic_expired_hv_timer"
            let def = l.split_whitespace().next()?;
            let name = def.split_once(':')?.1;
            let rest = name
                .strip_prefix(GROUP)?
                .strip_prefix('/')?
                .strip_prefix(PREFIX)?;
            let pid: u32 = rest.split('_').next()?.parse().ok()?;
            (!alive(pid)).then(|| name.to_string())
        })
        .collect()
}

/// Removes the events of tickburst processes that are gone from the tracefs
/// at `root`; returns each one's name and the outcome. A `kprobe_events`
/// that cannot be read: nothing.
pub fn remove_stale(root: &Path, alive: impl Fn(u32) -> bool) -> Vec<(String, io::Result<()>)> {
    let control = root.join(CONTROL);
    let listing = std::fs::read_to_string(&control).unwrap_or_default();
    stale(&listing, alive)
        .into_iter()
        .map(|name| {
            let r = remove(&control, &name);
            (name, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_of_gone_tickbursts_are_stale() {
        let listing = "p:tickburst/hv_expired_100_0 kvm_lapic_expired_hv_timer\n\
                       p:tickburst/hv_expired_200_3 kvm_lapic_expired_hv_timer\n\
                       p:probe/hv_expired_300_0 kvm_lapic_expired_hv_timer\n\
                       r:tickburst/other_400 do_sys_open\n\
                       p:tickburst/hv_expired_x_0 f\n\
                       garbage\n";
        let gone = stale(listing, |pid| pid == 200);
        assert_eq!(gone, vec!["tickburst/hv_expired_100_0".to_string()]);
        assert!(stale("", |_| false).is_empty());
    }

    #[test]
    fn a_control_file_that_refuses_says_where_and_why() {
        let dir = std::env::temp_dir().join(format!("tb-kpev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // No kprobe_events at all: the definition fails, naming the file.
        let e = KprobeEvent::create(&dir, "f").unwrap_err();
        assert!(matches!(e, KprobeEventError::Define { .. }), "{e}");
        assert!(e.to_string().contains("kprobe_events"), "{e}");
        // Nothing to read: nothing removed.
        assert!(remove_stale(&dir, |_| false).is_empty());
        // A listing (here a plain file): the gone one is removed by
        // appending its removal, the listing kept.
        let control = dir.join(CONTROL);
        let listing = "p:tickburst/hv_expired_100_0 f\np:tickburst/hv_expired_200_0 f\n";
        std::fs::write(&control, listing).unwrap();
        let removed = remove_stale(&dir, |pid| pid == 200);
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].0, "tickburst/hv_expired_100_0");
        assert!(removed[0].1.is_ok());
        let after = std::fs::read_to_string(&control).unwrap();
        assert_eq!(after, format!("{listing}-:tickburst/hv_expired_100_0\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
