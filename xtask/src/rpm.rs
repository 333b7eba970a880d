//! The `.rpm`, built by `rpmbuild -bb` (Debian's `rpm` package) from the
//! staged tree and a spec made from Cargo.toml's metadata. No automatic
//! dependencies (the binary is static), no build-id links, no post-install
//! stripping or compression, an xz payload (smaller than this rpmbuild's gzip;
//! read by every rpm since 4.6, RHEL 6 and later): the payload is exactly [`crate::layout`]'s list.

use crate::deb::write;
use crate::error::{io, Error, Result};
use crate::layout::{self, Format};
use crate::meta::Meta;
use crate::stage::stage;
use crate::tool;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `target/dist/tickburst-VERSION-1.x86_64.rpm`; returns its path.
pub fn build(meta: &Meta, alerts: bool) -> Result<PathBuf> {
    let dist = meta.dist();
    let root = dist.join("rpm-root");
    let entries = layout::entries(Format::Rpm, alerts);
    stage(&dist, &root, &entries)?;
    let top = dist.join("rpmbuild");
    if top.exists() {
        fs::remove_dir_all(&top).map_err(io("remove", &top))?;
    }
    fs::create_dir_all(&top).map_err(io("create", &top))?;
    let spec_path = top.join("tickburst.spec");
    write(&spec_path, &spec(meta, &root, alerts)?, 0o644)?;
    tool::output(
        Command::new("rpmbuild")
            .arg("-bb")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .arg("--define")
            .arg(format!("_rpmdir {}", dist.display()))
            .args([
                "--define",
                "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
            ])
            .args(["--target", "x86_64-linux"])
            .arg(&spec_path),
    )?;
    Ok(dist.join(meta.rpm_name()))
}

/// The spec file.
fn spec(meta: &Meta, root: &Path, alerts: bool) -> Result<String> {
    let root = root
        .to_str()
        .ok_or_else(|| Error::Check(format!("{}: not UTF-8", root.display())))?;
    let mut files = String::new();
    if alerts {
        files.push_str(&format!("%dir {}\n", layout::ALERTS_DIR));
    }
    for e in layout::entries(Format::Rpm, alerts) {
        files.push_str(&format!("%attr({:04o},root,root) {}\n", e.mode, e.dest));
    }
    Ok(format!(
        "Name: tickburst\n\
         Version: {version}\n\
         Release: 1\n\
         Summary: {desc}\n\
         License: {license}\n\
         BuildArch: x86_64\n\
         AutoReqProv: no\n\
         %define _build_id_links none\n\
         %define debug_package %{{nil}}\n\
         %define __os_install_post %{{nil}}\n\
         %define _binary_payload w9.xzdio\n\
         \n\
         %description\n\
         {desc}. A static binary (any glibc or none): tickburst run boots its own\n\
         guest on /dev/kvm; tickburst top watches every KVM VM on the host\n\
         (unit tickburst-top.service).\n\
         \n\
         %install\n\
         cp -a {root}/. %{{buildroot}}/\n\
         \n\
         %post\n\
         {reload}\n\
         \n\
         %postun\n\
         {reload}\n\
         \n\
         %files\n\
         {files}",
        version = meta.version.replace('-', "~"),
        desc = meta.description,
        license = meta.license,
        reload = layout::RELOAD_SCRIPT,
    ))
}
