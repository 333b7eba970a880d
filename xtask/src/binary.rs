//! The static `tickburst` binary: built for the explicit gnu target with
//! `+crt-static` (an explicit `--target` keeps the flag off build scripts
//! and proc macros, so the guest payload's build.rs still runs as a normal
//! host program), stripped, and checked to be statically linked.

use crate::error::{io, Error, Result};
use crate::meta::Meta;
use crate::tool;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target the static binary is built for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The flags that link the C runtime statically.
pub const RUSTFLAGS: &str = "-C target-feature=+crt-static";

/// Builds the release binary; returns the path cargo left it at. The
/// linker's warnings (glibc functions that need shared libraries at run
/// time) are printed by cargo.
pub fn build(meta: &Meta) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    tool::status(
        Command::new(cargo)
            .current_dir(&meta.root)
            .args([
                "build",
                "--release",
                "--locked",
                "--target",
                TARGET,
                "-p",
                "tickburst",
            ])
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env("RUSTFLAGS", RUSTFLAGS),
    )?;
    Ok(meta.target.join(TARGET).join("release").join("tickburst"))
}

/// Copies the binary to `dest` and strips its symbols (`strip`, from
/// binutils, which the guest's link already needs).
pub fn install_stripped(built: &Path, dest: &Path) -> Result<()> {
    std::fs::copy(built, dest).map_err(io("copy the binary to", dest))?;
    tool::output(Command::new("strip").arg("--strip-all").arg(dest))?;
    Ok(())
}

/// Fails unless `file` calls the binary statically linked and `ldd` finds
/// no shared library; returns `file`'s line.
pub fn check_static(bin: &Path) -> Result<String> {
    let file = tool::output(Command::new("file").arg("-b").arg(bin))?;
    if !file.contains("statically linked") && !file.contains("static-pie linked") {
        return Err(Error::Check(format!(
            "{}: not static: {}",
            bin.display(),
            file.trim()
        )));
    }
    // ldd exits 1 with "not a dynamic executable" on a static binary and
    // prints "statically linked" for a static PIE.
    let ldd = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(io("run ldd on", bin))?;
    let words = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    if !(words.contains("statically linked") || words.contains("not a dynamic executable")) {
        return Err(Error::Check(format!(
            "ldd {}: links shared libraries:\n{}",
            bin.display(),
            words.trim()
        )));
    }
    Ok(file.trim().to_string())
}

/// glibc functions that, linked statically, may load NSS modules (shared
/// libraries of the build's glibc) at run time; GNU ld warns of them, the
/// rust-lld that links here does not.
const NSS_FUNCTIONS: [&str; 10] = [
    "getaddrinfo",
    "gethostbyname",
    "gethostbyname2_r",
    "getpwnam",
    "getpwnam_r",
    "getpwuid",
    "getpwuid_r",
    "getgrnam",
    "getgrgid_r",
    "getservbyname_r",
];

/// The [`NSS_FUNCTIONS`] whose code is in the unstripped binary `built`
/// (`nm`: a defined text symbol; an archive member pulled in whose function
/// was garbage-collected does not count).
pub fn nss_functions(built: &Path) -> Result<Vec<String>> {
    let nm = tool::output(Command::new("nm").arg("--defined-only").arg(built))?;
    let mut found: Vec<String> = nm
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, kind, name) = (f.next()?, f.next()?, f.next()?);
            let code = matches!(kind, "T" | "t" | "W" | "w");
            (code && NSS_FUNCTIONS.contains(&name)).then(|| name.to_string())
        })
        .collect();
    found.sort();
    found.dedup();
    Ok(found)
}
