//! Output files (`--json`, `--plot`, `check --json`, `analyze --json`):
//! checked before any work starts ([`check`]), then written whole or not at
//! all ([`write`]).
//!
//! - A regular file (or none yet) is replaced atomically: the text goes to
//!   an unnamed file in the same directory (`O_TMPFILE`), forced to disk,
//!   given the name `.NAME.tmp.PID` (`linkat`) and renamed over `NAME`. A
//!   `kill -9` while writing leaves nothing behind; one between the link
//!   and the rename (microseconds) leaves `.NAME.tmp.PID`, which the next
//!   write of `NAME` removes (as it removes those of dead processes made
//!   where the file system has no `O_TMPFILE` and a named temporary file is
//!   written instead).
//! - Anything else that exists and is not a directory (a character device
//!   such as `/dev/null` or `/dev/stdout`, a FIFO, a socket) is written in
//!   place: never replaced by a regular file.
//! - A directory is refused.

use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why an output file cannot be (or was not) written. Each names the path.
#[derive(Debug, Error)]
pub enum OutputError {
    /// The path is a directory.
    #[error("{0}: is a directory")]
    Directory(String),
    /// The path has no file name (`/`, `..`).
    #[error("{0}: not a file path")]
    NotAFilePath(String),
    /// The file or its directory cannot be written.
    #[error("{path}: {source}")]
    Io {
        /// The path, as shown.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
}

impl OutputError {
    fn io(path: &Path, source: std::io::Error) -> OutputError {
        OutputError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// How a path is written.
enum Target {
    /// A regular file, or none yet: replaced atomically.
    Replace,
    /// A device, FIFO or socket: written in place.
    InPlace,
}

/// How `path` would be written; a directory is refused.
fn target(path: &Path) -> Result<Target, OutputError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(OutputError::Directory(path.display().to_string())),
        Ok(m) if m.is_file() => Ok(Target::Replace),
        Ok(_) => Ok(Target::InPlace),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Target::Replace),
        Err(e) => Err(OutputError::io(path, e)),
    }
}

/// The directory and file name of `path`.
fn split(path: &Path) -> Result<(PathBuf, &OsStr), OutputError> {
    let name = path
        .file_name()
        .ok_or_else(|| OutputError::NotAFilePath(path.display().to_string()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// Checks, before any work starts, that `path` can be written as [`write`]
/// will write it: a device or FIFO may be written by this user
/// (`access`), otherwise its directory takes a new file.
pub fn check(path: &Path) -> Result<(), OutputError> {
    match target(path)? {
        // Not opened: opening a FIFO and closing it again would end its
        // reader's input.
        Target::InPlace => writable(path).map_err(|e| OutputError::io(path, e)),
        Target::Replace => {
            let (dir, _) = split(path)?;
            match open_unnamed(&dir) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => probe_named(&dir).map_err(|e| OutputError::io(path, e)),
                Err(e) => Err(OutputError::io(path, e)),
            }
        }
    }
}

/// Writes what `write` writes to `path` (through a buffer: a large record
/// is never whole in memory), as the module says: atomically for a regular
/// file, in place for a device or FIFO.
pub fn write(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), OutputError> {
    match target(path)? {
        Target::InPlace => {
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| OutputError::io(path, e))?;
            let mut w = BufWriter::new(file);
            write(&mut w)
                .and_then(|()| w.flush())
                .map_err(|e| OutputError::io(path, e))
        }
        Target::Replace => replace(path, write),
    }
}

/// [`write`] of `bytes`.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    write(path, |w| w.write_all(bytes))
}

/// Whether this user may write `path` (`access(W_OK)`: permissions and a
/// read-only mount).
fn writable(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated path that outlives the call; access only
    // reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The name a file gets before it is renamed over `name`.
fn temp_name(name: &OsStr, pid: u32) -> std::ffi::OsString {
    let mut t = std::ffi::OsString::from(".");
    t.push(name);
    t.push(format!(".tmp.{pid}"));
    t
}

/// An unnamed file in `dir` (`O_TMPFILE`); `None` where the file system
/// does not have them.
fn open_unnamed(dir: &Path) -> std::io::Result<Option<File>> {
    match OpenOptions::new()
        .write(true)
        .mode(0o666)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
    {
        Ok(f) => Ok(Some(f)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Where `O_TMPFILE` is missing: whether `dir` takes a new file (one made
/// and removed at once).
fn probe_named(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(temp_name(OsStr::new("tickburst-probe"), std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// Atomic replace of a regular file (or none).
fn replace(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), OutputError> {
    let (dir, name) = split(path)?;
    let io = |e| OutputError::io(path, e);
    remove_stale(&dir, name);
    let tmp = dir.join(temp_name(name, std::process::id()));
    let unnamed = open_unnamed(&dir).map_err(io)?;
    let named = unnamed.is_none();
    let result = (|| {
        let file = match unnamed {
            Some(f) => f,
            None => File::create(&tmp)?,
        };
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        if !named {
            link_unnamed(&file, &tmp)?;
        }
        std::fs::rename(&tmp, path)?;
        // The rename itself on disk (best effort: some file systems refuse).
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Gives the unnamed `file` the name `to` (`linkat` through
/// `/proc/self/fd`, else `AT_EMPTY_PATH`, which needs
/// `CAP_DAC_READ_SEARCH`).
fn link_unnamed(file: &File, to: &Path) -> std::io::Result<()> {
    let c = |p: &[u8]| CString::new(p).map_err(std::io::Error::other);
    let to = c(to.as_os_str().as_bytes())?;
    let _ = std::fs::remove_file(OsStr::from_bytes(to.as_bytes()));
    let fd = file.as_raw_fd();
    let proc_path = c(format!("/proc/self/fd/{fd}").as_bytes())?;
    // SAFETY: both paths are NUL-terminated strings that outlive the call;
    // linkat reads them and touches no other memory of this process.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let empty = c(b"")?;
    // SAFETY: `fd` is the open file's descriptor, borrowed for the call;
    // the paths are NUL-terminated strings that outlive it.
    let r = unsafe {
        libc::linkat(
            fd,
            empty.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Removes `.NAME.tmp.PID` files of `name` in `dir` left by processes that
/// are gone (killed while writing), and this process's own.
fn remove_stale(dir: &Path, name: &OsStr) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = temp_name(name, 0);
    let prefix = &prefix.as_bytes()[..prefix.len() - 1];
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file.as_bytes().strip_prefix(prefix) else {
            continue;
        };
        let Some(pid) = std::str::from_utf8(pid)
            .ok()
            .and_then(|p| p.parse::<libc::pid_t>().ok())
            .filter(|&p| p > 0)
        else {
            continue;
        };
        if pid as u32 == std::process::id() || !alive(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether process `pid` exists (of this pid namespace).
fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: kill with signal 0 sends nothing; it only checks the pid.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tickburst-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_atomically_and_leaves_no_temp() {
        let dir = scratch("replace");
        let path = dir.join("run.json");
        write_bytes(&path, b"old").unwrap();
        write_bytes(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(listing(&dir), vec!["run.json"]);
        assert!(write_bytes(&dir.join("missing/x.json"), b"x").is_err());
        assert!(check(&dir.join("missing/x.json")).is_err());
        assert!(matches!(check(&dir), Err(OutputError::Directory(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_temps_of_dead_processes_are_removed() {
        let dir = scratch("stale");
        // A pid that cannot exist (above pid_max's largest value).
        std::fs::write(dir.join(".run.json.tmp.2147483646"), b"half").unwrap();
        // One of a live process (ours is removed, so pid 1's stays).
        std::fs::write(dir.join(".run.json.tmp.1"), b"live").unwrap();
        std::fs::write(dir.join(".other.json.tmp.2147483646"), b"other").unwrap();
        write_bytes(&dir.join("run.json"), b"x").unwrap();
        assert_eq!(
            listing(&dir),
            vec![".other.json.tmp.2147483646", ".run.json.tmp.1", "run.json"]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn devices_are_written_in_place() {
        write_bytes(Path::new("/dev/null"), b"x").unwrap();
        check(Path::new("/dev/null")).unwrap();
        assert!(std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device());
    }
}
