//! The package metadata (name, version, license, description) as Cargo.toml
//! gives it, read through `cargo metadata` so workspace inheritance is
//! resolved.

use crate::error::{Error, Result};
use crate::tool;
use std::path::PathBuf;
use std::process::Command;

/// The `tickburst` package's metadata and the workspace's paths.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Package version (`0.1.0`).
    pub version: String,
    /// SPDX license expression.
    pub license: String,
    /// One-line description.
    pub description: String,
    /// The workspace root.
    pub root: PathBuf,
    /// The target directory (`target/`).
    pub target: PathBuf,
}

impl Meta {
    /// Reads the metadata with `cargo metadata --no-deps`.
    pub fn read() -> Result<Meta> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let json = tool::output(Command::new(cargo).args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
        ]))?;
        let v: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| Error::Check(format!("cargo metadata: not JSON: {e}")))?;
        let pkg = v["packages"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "tickburst"))
            .ok_or_else(|| Error::Check("cargo metadata: no package `tickburst`".into()))?;
        let field = |k: &str| {
            pkg[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::Check(format!("Cargo.toml of tickburst has no `{k}`")))
        };
        let path = |k: &str| {
            v[k].as_str()
                .map(PathBuf::from)
                .ok_or_else(|| Error::Check(format!("cargo metadata: no `{k}`")))
        };
        Ok(Meta {
            version: field("version")?,
            license: field("license")?,
            description: field("description")?,
            root: path("workspace_root")?,
            target: path("target_directory")?,
        })
    }

    /// `target/dist/`, where the artifacts go.
    pub fn dist(&self) -> PathBuf {
        self.target.join("dist")
    }

    /// The `.deb`'s file name.
    pub fn deb_name(&self) -> String {
        format!("tickburst_{}_amd64.deb", self.version)
    }

    /// The `.rpm`'s file name.
    pub fn rpm_name(&self) -> String {
        format!("tickburst-{}-1.x86_64.rpm", self.version)
    }
}
