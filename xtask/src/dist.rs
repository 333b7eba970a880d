//! `cargo xtask dist`: everything into `target/dist/`.

use crate::error::{io, Result};
use crate::layout::{ALERTS, UNIT};
use crate::meta::Meta;
use crate::{binary, deb, docs, rpm};
use std::fs;

/// Builds the static binary, the man pages, the completions, copies the unit
/// (and the alert rules, when `dist/alerts.yml` exists), then the `.deb` and
/// the `.rpm`; prints each artifact with its size.
pub fn dist(meta: &Meta) -> Result<()> {
    let out = meta.dist();
    fs::create_dir_all(&out).map_err(io("create", &out))?;
    let built = binary::build(meta)?;
    let bin = out.join("tickburst");
    binary::install_stripped(&built, &bin)?;
    let how = binary::check_static(&bin)?;
    let nss = binary::nss_functions(&built)?;
    docs::man_pages(&out.join("man"))?;
    docs::completions(&out.join("completions"))?;
    let src = meta.root.join("dist");
    fs::copy(src.join(UNIT), out.join(UNIT)).map_err(io("copy", src.join(UNIT)))?;
    let alerts = src.join(ALERTS).is_file();
    if alerts {
        fs::copy(src.join(ALERTS), out.join(ALERTS)).map_err(io("copy", src.join(ALERTS)))?;
    } else {
        eprintln!("dist/{ALERTS} not present: the packages hold no alert rules");
        let _ = fs::remove_file(out.join(ALERTS));
    }
    let deb = deb::build(meta, alerts)?;
    let rpm = rpm::build(meta, alerts)?;
    println!("{}: {how}", bin.display());
    if nss.is_empty() {
        println!("glibc functions that load NSS modules at run time: none linked");
    } else {
        println!(
            "warning: linked glibc functions that may load NSS modules (the build's glibc) at run time: {}",
            nss.join(", ")
        );
    }
    for path in [&bin, &deb, &rpm] {
        let len = fs::metadata(path).map_err(io("stat", path))?.len();
        println!("{:>9} bytes  {}", len, path.display());
    }
    Ok(())
}
