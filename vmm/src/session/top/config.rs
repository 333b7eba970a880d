//! What `top` runs with (validated by the command line) and why it stops
//! with an error.

use crate::session::top::discover::DiscoverError;
use std::path::PathBuf;
use thiserror::Error;

/// Default `--interval`: one line per second, as a run's report window.
pub use crate::session::config::DEFAULT_INTERVAL_NS;

/// Why `top` stopped with an error (every one exits 2).
#[derive(Debug, Error)]
pub enum TopError {
    /// Not allowed to open perf events on tracepoints.
    #[error("top: no permission: {0}")]
    Permission(String),
    /// Neither timer back end can be measured on this host.
    #[error("top: cannot measure on this host: {0}")]
    CannotMeasure(String),
    /// `/proc` not readable.
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    /// The observer could not write its output (the NDJSON file, the
    /// picture).
    #[error(transparent)]
    Output(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Validated `top` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TopConfig {
    /// Only these pids (`None`: every VM).
    pub pids: Option<Vec<u32>>,
    /// Interval, ns.
    pub interval_ns: u64,
    /// End after, ns (`None`: Ctrl-C).
    pub duration_ns: Option<u64>,
    /// Fold vCPUs per VM (the table's business).
    pub per_vm: bool,
    /// `--max-run`.
    pub max_run: u64,
    /// `--irq`: count the interrupts each guest accepts (a counter on every
    /// vCPU thread, which the guests pay for).
    pub irq: bool,
    /// NDJSON file (the observer's business).
    pub json: Option<PathBuf>,
    /// SVG file (the observer's business).
    pub plot: Option<PathBuf>,
}

/// Default port of `top --listen` (documented in docs/fleet.md; the unit
/// listens on `127.0.0.1:9863`).
pub const DEFAULT_METRICS_PORT: u16 = 9863;

/// Where `top` exports Prometheus metrics (none: only the table).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportConfig {
    /// `--listen`: serve `/metrics` here.
    pub listen: Option<std::net::SocketAddr>,
    /// `--textfile`: write `DIR/tickburst.prom` every interval.
    pub textfile: Option<PathBuf>,
    /// `--table`: with an export on, print the table on stdout too (by
    /// default a service's journal gets only its notes and one line per VM
    /// seen or gone, on stderr).
    pub table: bool,
}

impl ExportConfig {
    /// Whether any export is on (then VMs seen and gone are logged on
    /// stderr, one line each, for the journal).
    pub fn any(&self) -> bool {
        self.listen.is_some() || self.textfile.is_some()
    }

    /// Whether the table is printed on stdout: always without an export,
    /// with one only when `--table` asks.
    pub fn prints_table(&self) -> bool {
        !self.any() || self.table
    }
}
