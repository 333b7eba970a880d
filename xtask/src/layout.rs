//! What the packages hold and where each file is installed: one list that
//! `dist` stages from and `dist-check` checks the packages against.

use clap::CommandFactory;
use tickburst::cli::args::Cli;

/// The package formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Debian's `.deb`.
    Deb,
    /// RPM (RHEL, Fedora, SUSE).
    Rpm,
}

/// One installed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where it is in `target/dist/` (relative).
    pub src: String,
    /// Where the package installs it (absolute).
    pub dest: String,
    /// Its mode.
    pub mode: u32,
    /// Whether it is gzipped on the way (man pages).
    pub gzip: bool,
}

/// The systemd unit's file name (source in `dist/`).
pub const UNIT: &str = "tickburst-top.service";
/// The alert rules' file name (in `dist/`, written by the exporter's work;
/// packaged when present).
pub const ALERTS: &str = "alerts.yml";
/// Where the alert rules go.
pub const ALERTS_DIR: &str = "/usr/share/tickburst";

/// The man pages' names without `.1`: `tickburst` and `tickburst-SUB` for
/// every visible subcommand of the CLI.
pub fn man_pages() -> Vec<String> {
    let cli = Cli::command();
    let mut pages = vec!["tickburst".to_string()];
    pages.extend(
        cli.get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| format!("tickburst-{}", s.get_name())),
    );
    pages
}

/// The completions: (file in `target/dist/completions/`, deb path, rpm path).
pub const COMPLETIONS: [(&str, &str, &str); 3] = [
    (
        "tickburst.bash",
        "/usr/share/bash-completion/completions/tickburst",
        "/usr/share/bash-completion/completions/tickburst",
    ),
    (
        "_tickburst",
        "/usr/share/zsh/vendor-completions/_tickburst",
        "/usr/share/zsh/site-functions/_tickburst",
    ),
    (
        "tickburst.fish",
        "/usr/share/fish/vendor_completions.d/tickburst.fish",
        "/usr/share/fish/vendor_completions.d/tickburst.fish",
    ),
];

/// Every file a package of `format` holds; `alerts` when the rules file is
/// packaged.
pub fn entries(format: Format, alerts: bool) -> Vec<Entry> {
    let file = |src: String, dest: String, mode| Entry {
        src,
        dest,
        mode,
        gzip: false,
    };
    let mut v = vec![file("tickburst".into(), "/usr/bin/tickburst".into(), 0o755)];
    for page in man_pages() {
        v.push(Entry {
            src: format!("man/{page}.1"),
            dest: format!("/usr/share/man/man1/{page}.1.gz"),
            mode: 0o644,
            gzip: true,
        });
    }
    for (src, deb, rpm) in COMPLETIONS {
        let dest = if format == Format::Deb { deb } else { rpm };
        v.push(file(format!("completions/{src}"), dest.into(), 0o644));
    }
    let unit_dir = match format {
        Format::Deb => "/lib/systemd/system",
        Format::Rpm => "/usr/lib/systemd/system",
    };
    v.push(file(UNIT.into(), format!("{unit_dir}/{UNIT}"), 0o644));
    if alerts {
        v.push(file(ALERTS.into(), format!("{ALERTS_DIR}/{ALERTS}"), 0o644));
    }
    v
}

/// The maintainer script run after install and after removal: systemd
/// re-reads its units (nothing is enabled or started: the service is the
/// operator's choice).
pub const RELOAD_SCRIPT: &str =
    "if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || true; fi";

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_file_has_one_absolute_place_and_formats_differ_only_by_distro_paths() {
        for format in [Format::Deb, Format::Rpm] {
            let e = entries(format, true);
            let dests: BTreeSet<_> = e.iter().map(|e| e.dest.clone()).collect();
            assert_eq!(dests.len(), e.len(), "{format:?}: a path twice");
            assert!(e.iter().all(|e| e.dest.starts_with('/')));
        }
        let deb = entries(Format::Deb, true);
        let rpm = entries(Format::Rpm, true);
        let differ: Vec<_> = deb
            .iter()
            .zip(&rpm)
            .filter(|(d, r)| d.dest != r.dest)
            .map(|(d, _)| d.src.as_str())
            .collect();
        assert_eq!(differ, ["completions/_tickburst", UNIT]);
        assert_eq!(entries(Format::Deb, false).len() + 1, deb.len());
    }

    #[test]
    fn the_unit_runs_the_packaged_binary_as_an_exporter_restarted_on_failure() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/tickburst-top.service");
        let unit = std::fs::read_to_string(path).unwrap();
        let bin = &entries(Format::Deb, false)[0].dest;
        let exec: Vec<_> = unit
            .lines()
            .filter(|l| l.starts_with("ExecStart="))
            .collect();
        assert_eq!(
            exec,
            [format!("ExecStart={bin} top --listen 127.0.0.1:9863")]
        );
        assert!(unit.lines().any(|l| l == "Restart=on-failure"));
        assert!(unit.lines().any(|l| l == "DeviceAllow=/dev/kvm rw"));
        let caps = unit
            .lines()
            .find(|l| l.starts_with("CapabilityBoundingSet="))
            .unwrap();
        assert!(
            caps.contains("CAP_PERFMON") && caps.contains("CAP_SYS_ADMIN"),
            "{caps}"
        );
    }
}
