//! The `.deb`, built by Debian's own `dpkg-deb` from the staged tree and a
//! control file made from Cargo.toml's metadata.

use crate::error::{io, Result};
use crate::layout::{self, Format};
use crate::meta::Meta;
use crate::stage::stage;
use crate::tool;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `target/dist/tickburst_VERSION_amd64.deb`; returns its path.
pub fn build(meta: &Meta, alerts: bool) -> Result<PathBuf> {
    let dist = meta.dist();
    let root = dist.join("deb-root");
    let size = stage(&dist, &root, &layout::entries(Format::Deb, alerts))?;
    let debian = root.join("DEBIAN");
    fs::create_dir_all(&debian).map_err(io("create", &debian))?;
    write(&debian.join("control"), &control(meta, size), 0o644)?;
    let script = format!("#!/bin/sh\nset -e\n{}\n", layout::RELOAD_SCRIPT);
    write(&debian.join("postinst"), &script, 0o755)?;
    write(&debian.join("postrm"), &script, 0o755)?;
    let deb = dist.join(meta.deb_name());
    tool::output(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&root)
            .arg(&deb),
    )?;
    Ok(deb)
}

/// The control file: version, license and description from Cargo.toml.
fn control(meta: &Meta, installed_bytes: u64) -> String {
    format!(
        "Package: tickburst\n\
         Version: {}\n\
         Architecture: amd64\n\
         Maintainer: tickburst developers <tickburst@localhost>\n\
         Installed-Size: {}\n\
         Section: admin\n\
         Priority: optional\n\
         Description: {}\n \
         A static binary (any glibc or none): `tickburst run` boots its own guest on\n \
         /dev/kvm; `tickburst top` watches every KVM VM on the host (unit\n \
         tickburst-top.service). License: {}.\n",
        meta.version.replace('-', "~"),
        installed_bytes.div_ceil(1024),
        meta.description,
        meta.license,
    )
}

/// Writes `text` to `path` with `mode`.
pub fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).map_err(io("write", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io("chmod", path))
}
