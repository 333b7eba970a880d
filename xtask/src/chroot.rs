//! A fresh Debian bullseye root for the `.deb`: debootstrapped once into a
//! cache under /var/tmp, copied for every check (the package is installed
//! fresh each time), with /proc, /sys and /dev/kvm mounted in; everything is
//! unmounted and the copy removed when the [`Root`] is dropped, also when a
//! step failed.

use crate::error::{io, Error, Result};
use crate::tool;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the pristine root is cached (a second check is fast).
pub const CACHE: &str = "/var/tmp/tickburst-dist/bullseye";
/// The suite: glibc 2.31.
pub const SUITE: &str = "bullseye";
/// The mirror.
pub const MIRROR: &str = "http://deb.debian.org/debian";
/// The PATH inside the root.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Makes the cached root if it is not there: `debootstrap --variant=minbase`
/// into a temporary folder, renamed when complete.
pub fn ensure_cache() -> Result<PathBuf> {
    let cache = PathBuf::from(CACHE);
    if cache.join("usr/bin/dpkg").is_file() {
        return Ok(cache);
    }
    let tmp = cache.with_extension("tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io("remove", &tmp))?;
    }
    fs::create_dir_all(&tmp).map_err(io("create", &tmp))?;
    eprintln!(
        "debootstrap {SUITE} into {} (once; cached)",
        cache.display()
    );
    tool::output(
        Command::new("debootstrap")
            .args(["--variant=minbase", SUITE])
            .arg(&tmp)
            .arg(MIRROR),
    )?;
    fs::rename(&tmp, &cache).map_err(io("rename into place", &cache))?;
    Ok(cache)
}

/// A copy of the cached root with /proc, /sys and /dev/kvm mounted.
#[derive(Debug)]
pub struct Root {
    /// The copy.
    dir: PathBuf,
    /// What is mounted, in mount order.
    mounts: Vec<PathBuf>,
}

impl Root {
    /// Copies `cache` to a fresh folder and mounts /proc, /sys and /dev/kvm.
    pub fn fresh(cache: &Path) -> Result<Root> {
        let dir = cache.with_file_name(format!("work-{}", std::process::id()));
        if dir.exists() {
            return Err(Error::Check(format!(
                "{} exists (a check still running?)",
                dir.display()
            )));
        }
        tool::output(Command::new("cp").arg("-a").arg(cache).arg(&dir))?;
        let mut root = Root {
            dir,
            mounts: Vec::new(),
        };
        // The root a mount point of its own, as a container's is: tickburst
        // makes "/" private before it mounts tracefs, which fails (EINVAL)
        // where "/" is no mount point.
        let itself = root.dir.clone();
        root.mount(&["--bind".as_ref(), itself.as_os_str()], "")?;
        root.mount(&["-t".as_ref(), "proc".as_ref(), "proc".as_ref()], "proc")?;
        root.mount(&["-t".as_ref(), "sysfs".as_ref(), "sysfs".as_ref()], "sys")?;
        let kvm = root.dir.join("dev/kvm");
        fs::write(&kvm, b"").map_err(io("create", &kvm))?;
        root.mount(&["--bind".as_ref(), "/dev/kvm".as_ref()], "dev/kvm")?;
        Ok(root)
    }

    /// Mounts with `args` onto `rel` inside the root.
    fn mount(&mut self, args: &[&std::ffi::OsStr], rel: &str) -> Result<()> {
        let at = self.dir.join(rel);
        tool::output(Command::new("mount").args(args).arg(&at))?;
        self.mounts.push(at);
        Ok(())
    }

    /// The root's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A command that runs `args` inside the root (a clean environment).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("chroot");
        c.env_clear()
            .env("PATH", PATH)
            .env("LC_ALL", "C")
            .arg(&self.dir)
            .args(args);
        c
    }

    /// A command that runs `args` inside the root while it holds `lock`
    /// (`flock LOCK chroot ROOT ARGS`).
    pub fn command_locked(&self, lock: &str, args: &[&str]) -> Command {
        let mut c = Command::new("flock");
        c.env_clear()
            .env("PATH", PATH)
            .env("LC_ALL", "C")
            .arg(lock)
            .arg("chroot")
            .arg(&self.dir)
            .args(args);
        c
    }

    /// Runs `args` inside the root; returns stdout or the tool's words.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        tool::output(&mut self.command(args))
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let mut all = true;
        while let Some(at) = self.mounts.pop() {
            if let Err(e) = tool::output(Command::new("umount").arg(&at)) {
                eprintln!("xtask: {e}; detaching it (umount -l)");
                if let Err(e) = tool::output(Command::new("umount").arg("-l").arg(&at)) {
                    eprintln!("xtask: {e}");
                    all = false;
                }
            }
        }
        // Never delete below a mount point that is still there.
        if all {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                eprintln!("xtask: remove {}: {e}", self.dir.display());
            }
        } else {
            eprintln!(
                "xtask: {} left in place: not everything unmounted",
                self.dir.display()
            );
        }
    }
}
