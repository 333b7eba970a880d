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
