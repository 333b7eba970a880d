//! The cgroup freezer, as container runtimes pause: a cgroup created for the
//! run, frozen and thawed through cgroup v2 `cgroup.freeze`, or through the
//! v1 `freezer.state` on v1 and hybrid hosts; removed afterwards.
//!
//! Which one: v2 when a cgroup2 file system is mounted and a cgroup created
//! there has `cgroup.freeze` (kernel 5.2+); else the v1 freezer hierarchy.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long a freeze may take to complete.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of the freezer.
#[derive(Debug, Error)]
pub enum CgroupError {
    /// Neither freezer can be used.
    #[error("no writable cgroup freezer: {0}")]
    Unavailable(String),
    /// A cgroup file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The freeze did not complete in time.
    #[error("cgroup {0} did not report frozen within {FREEZE_TIMEOUT:?}")]
    Timeout(PathBuf),
}

/// Freezer interface version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `cgroup.freeze` / `cgroup.events`.
    V2,
    /// `freezer.state`.
    V1,
}

/// Mount points of the cgroup2 file system and the v1 freezer hierarchy,
/// from the text of `/proc/self/mountinfo`.
pub fn mounts(mountinfo: &str) -> (Option<PathBuf>, Option<PathBuf>) {
    let mut v2 = None;
    let mut v1 = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split_whitespace().nth(4);
        let mut r = right.split_whitespace();
        let fstype = r.next();
        let super_opts = r.nth(1).unwrap_or("");
        match (fstype, mount_point) {
            (Some("cgroup2"), Some(mp)) if v2.is_none() => v2 = Some(PathBuf::from(mp)),
            (Some("cgroup"), Some(mp))
                if v1.is_none() && super_opts.split(',').any(|o| o == "freezer") =>
            {
                v1 = Some(PathBuf::from(mp))
            }
            _ => {}
        }
    }
    (v2, v1)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write(path: &Path, text: &str) -> Result<(), CgroupError> {
    std::fs::write(path, text).map_err(io(path))
}

/// A cgroup created for one run.
#[derive(Debug)]
pub struct Freezer {
    dir: PathBuf,
    version: Version,
}

/// The directories [`Freezer::create`] may create for `name`, in the order
/// it tries them (the v2 hierarchy, then the v1 freezer), with the root of
/// each (`None` where it is not mounted). The supervisor names them all to
/// its guard before it creates one, so none can be left behind.
fn candidates(name: &str) -> [(Option<PathBuf>, Version); 2] {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let (v2, v1) = mounts(&info);
    let dir = |root: Option<PathBuf>| root.map(|r| r.join(format!("tickburst-{name}")));
    [(dir(v2), Version::V2), (dir(v1), Version::V1)]
}

/// The directories [`Freezer::create`] may create for `name`.
pub fn candidate_dirs(name: &str) -> Vec<PathBuf> {
    candidates(name)
        .into_iter()
        .filter_map(|(d, _)| d)
        .collect()
}

impl Freezer {
    /// Creates `tickburst-<name>` in the v2 hierarchy, else in the v1 freezer.
    pub fn create(name: &str) -> Result<Freezer, CgroupError> {
        let mut why = Vec::new();
        for (dir, version) in candidates(name) {
            let probe = match version {
                Version::V2 => "cgroup.freeze",
                Version::V1 => "freezer.state",
            };
            let Some(dir) = dir else {
                why.push(format!("{version:?} not mounted"));
                continue;
            };
            let root = dir.parent().unwrap_or(&dir).to_path_buf();
            match std::fs::create_dir(&dir) {
                Ok(()) if dir.join(probe).exists() => return Ok(Freezer { dir, version }),
                Ok(()) => {
                    let _ = std::fs::remove_dir(&dir);
                    why.push(format!("{}: no {probe}", root.display()));
                }
                Err(e) => why.push(format!("{}: {e}", dir.display())),
            }
        }
        Err(CgroupError::Unavailable(why.join("; ")))
    }

    /// The cgroup directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// Freezes and waits until the kernel reports the cgroup frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        let (file, value, state_file, done) = match self.version {
            Version::V2 => ("cgroup.freeze", "1", "cgroup.events", "frozen 1"),
            Version::V1 => ("freezer.state", "FROZEN", "freezer.state", "FROZEN"),
        };
        write(&self.dir.join(file), value)?;
        let state = self.dir.join(state_file);
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&state).map_err(io(&state))?;
            if text.lines().any(|l| l.trim() == done) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Timeout(self.dir.clone()));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// Thaws (idempotent).
    pub fn thaw(&self) -> Result<(), CgroupError> {
        thaw_dir(&self.dir, self.version)
    }
}

/// Thaws the cgroup at `dir` (used by the guard process too).
pub fn thaw_dir(dir: &Path, version: Version) -> Result<(), CgroupError> {
    match version {
        Version::V2 => write(&dir.join("cgroup.freeze"), "0"),
        Version::V1 => write(&dir.join("freezer.state"), "THAWED"),
    }
}

/// Guesses the version of an existing freezer cgroup directory.
pub fn version_of(dir: &Path) -> Version {
    if dir.join("cgroup.freeze").exists() {
        Version::V2
    } else {
        Version::V1
    }
}

impl Drop for Freezer {
    /// Thaws and removes the cgroup (it must be empty by then: the VMM has
    /// exited). Errors are ignored: nothing more can be done at this point.
    fn drop(&mut self) {
        let _ = self.thaw();
        let deadline = Instant::now() + Duration::from_secs(1);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
35 30 0:31 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,freezer
36 30 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn finds_both_hierarchies_on_a_hybrid_host() {
        let (v2, v1) = mounts(HYBRID);
        assert_eq!(v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(v1.as_deref(), Some(Path::new("/sys/fs/cgroup/freezer")));
    }

    #[test]
    fn pure_v2_and_nothing() {
        let v2_only = "31 1 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            mounts(v2_only),
            (Some(PathBuf::from("/sys/fs/cgroup")), None)
        );
        assert_eq!(mounts("garbage\n\n - \n"), (None, None));
    }
}
