//! A package's file tree: the entries of [`crate::layout`] copied from
//! `target/dist/` under a fresh root, man pages gzipped.

use crate::error::{io, Error, Result};
use crate::layout::Entry;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Makes `root` (emptied first) hold `entries` from `dist`; returns the
/// installed size in bytes.
pub fn stage(dist: &Path, root: &Path, entries: &[Entry]) -> Result<u64> {
    if root.exists() {
        fs::remove_dir_all(root).map_err(io("remove", root))?;
    }
    let mut size = 0;
    for e in entries {
        let src = dist.join(&e.src);
        let dest = root.join(e.dest.trim_start_matches('/'));
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(io("create", dir))?;
        }
        if e.gzip {
            gzip(&src, &dest)?;
        } else {
            fs::copy(&src, &dest).map_err(io("copy", &src))?;
        }
        fs::set_permissions(&dest, fs::Permissions::from_mode(e.mode))
            .map_err(io("chmod", &dest))?;
        size += fs::metadata(&dest).map_err(io("stat", &dest))?.len();
    }
    Ok(size)
}

/// `gzip -9n` (no name or time stamp: the same input gives the same bytes).
fn gzip(src: &Path, dest: &Path) -> Result<()> {
    let out = fs::File::create(dest).map_err(io("create", dest))?;
    let st = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .arg(src)
        .stdout(out)
        .stderr(Stdio::piped())
        .output()
        .map_err(io("run gzip on", src))?;
    if !st.status.success() {
        return Err(Error::Tool {
            tool: format!("gzip -9 -n -c {}", src.display()),
            status: st.status.to_string(),
            words: String::from_utf8_lossy(&st.stderr).trim().to_string(),
        });
    }
    Ok(())
}
