//! Builds the bare-metal guest (`guest/main.rs`) with the host's stable rustc
//! and leaves the ELF in `OUT_DIR/guest.elf`, where `src/lib.rs` embeds it;
//! likewise its QEMU-bootable variant (`guest/qemu.rs`, which compiles
//! `main.rs` in as a module) in `OUT_DIR/qemu-guest.elf`.
//!
//! No extra rustup target is needed: the guest is compiled for the host target
//! as a `no_std`, `no_main`, statically linked image at 1 MiB.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    for path in [
        "guest/main.rs",
        "guest/link.ld",
        "guest/qemu.rs",
        "guest/qemu.ld",
        "src/abi.rs",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }

    // The guest tickburst boots (entered in long mode by the VMM).
    build_guest(
        &manifest,
        "tickburst_guest",
        "guest/main.rs",
        "guest/link.ld",
        &out.join("guest.elf"),
    );
    // The same guest for QEMU (`-kernel`, PVH entry, built-in configuration).
    build_guest(
        &manifest,
        "tickburst_qemu_guest",
        "guest/qemu.rs",
        "guest/qemu.ld",
        &out.join("qemu-guest.elf"),
    );
}

/// Compiles and links one guest image from `source` with linker script `script`.
fn build_guest(manifest: &Path, name: &str, source: &str, script: &str, elf: &Path) {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let source = manifest.join(source);
    let script = manifest.join(script);

    let status = Command::new(rustc)
        .arg("--edition=2021")
        .arg("--crate-type=bin")
        .arg(format!("--crate-name={name}"))
        .args(["-C", "opt-level=2"])
        .args(["-C", "panic=abort"])
        .args(["-C", "debuginfo=0"])
        .args(["-C", "relocation-model=static"])
        .args(["-C", "no-redzone=yes"])
        .args(["-C", "link-arg=-nostartfiles"])
        .args(["-C", "link-arg=-nostdlib"])
        .args(["-C", "link-arg=-static"])
        .arg("-C")
        .arg(format!("link-arg=-Wl,-T,{}", script.display()))
        .args(["-C", "link-arg=-Wl,--build-id=none"])
        .arg("-o")
        .arg(elf)
        .arg(&source)
        // The guest must not pick up the host crate's flags (e.g. coverage).
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("failed to start rustc for the guest");
    if !status.success() {
        panic!("building the tickburst guest {name} failed: {status}");
    }
}
