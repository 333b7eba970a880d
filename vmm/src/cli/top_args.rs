//! The arguments of `tickburst top` and their validation into the session's
//! [`TopConfig`]. Defaults come from the session and the analysis crate,
//! limits from [`crate::cli::arg_limits`].

use crate::cli::arg_limits::{duration_in, shown, TOP_DURATION_RANGE_NS, TOP_INTERVAL_RANGE_NS};
use crate::session::top::config::ExportConfig;
use crate::session::top::config::{TopConfig, DEFAULT_INTERVAL_NS};
use crate::session::top::discover::process_alive;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use tickburst_analysis::top::DEFAULT_MAX_RUN;

/// Arguments of `tickburst top`.
#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// Only the VMs of these VMM pids (repeat, or comma-separate); `top`
    /// ends when all of these processes have exited.
    ///
    /// A pid that does not exist or has exited (a zombie) is a usage error.
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Length of one line (100ms to 1h).
    #[arg(long, default_value_t = shown(DEFAULT_INTERVAL_NS), allow_hyphen_values = true)]
    pub interval: String,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, allow_hyphen_values = true)]
    pub duration: Option<String>,
    /// One line per VM (its vCPUs folded) instead of one per vCPU.
    ///
    /// The vcpu column then says allN: rates summed, the longest run of any
    /// vCPU, flags prefixed with their vCPU.
    #[arg(long)]
    pub per_vm: bool,
    /// Flag a run of more than this many callbacks in one interrupt.
    #[arg(long, default_value_t = DEFAULT_MAX_RUN)]
    pub max_run: u64,
    /// Count the LAPIC interrupts each guest accepts (the irq/s column,
    /// `guest_interrupts_total`): what shows a stopped VM where its timer
    /// is on sw (the host's callbacks go on, the guest gets none).
    ///
    /// Off by default: it is a perf counter on every vCPU thread that runs
    /// at each interrupt the guest accepts, and an exit-heavy guest pays for
    /// it (0.5% where the hv timer runs, 8 VMs in the emulated Intel host:
    /// docs/benchmarks-top.md). Without it irq/s says n/a.
    #[arg(long)]
    pub irq: bool,
    /// Write one NDJSON object per interval and vCPU to FILE, flushed per line.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the rates over time into FILE.svg at the end.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (a port alone:
    /// 127.0.0.1; the documented port is 9863).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Write Prometheus metrics to DIR/tickburst.prom every interval,
    /// atomically (node_exporter's textfile collector).
    #[arg(long, value_name = "DIR")]
    pub textfile: Option<PathBuf>,
    /// With --listen or --textfile, print the table on stdout too (by
    /// default only notes and one line per VM seen or gone, on stderr).
    #[arg(long)]
    pub table: bool,
}

/// The address of `--listen`: `PORT` (on loopback), `IPv4:PORT` or
/// `[IPv6]:PORT`.
pub fn listen_addr(value: &str) -> Result<SocketAddr, String> {
    let addr = match value.parse::<u16>() {
        Ok(port) => SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Err(_) => value.parse::<SocketAddr>().map_err(|_| {
            format!(
                "--listen {}: not PORT, ADDR:PORT or [ADDR]:PORT",
                value.escape_debug()
            )
        })?,
    };
    Ok(addr)
}

impl TopArgs {
    /// Checks `--listen` and `--textfile` (DIR must be a directory).
    pub fn to_export_config(&self) -> Result<ExportConfig, String> {
        let listen = self.listen.as_deref().map(listen_addr).transpose()?;
        if let Some(dir) = &self.textfile {
            if !dir.is_dir() {
                return Err(format!("--textfile {}: not a directory", dir.display()));
            }
        }
        Ok(ExportConfig {
            listen,
            textfile: self.textfile.clone(),
            table: self.table,
        })
    }

    /// Checks the arguments (a usage error says what is wrong in one line).
    pub fn to_config(&self) -> Result<TopConfig, String> {
        if let Some(p) = self.pid.iter().find(|&&p| p == 0 || !process_alive(p)) {
            return Err(format!("--pid {p}: no such process (or it has exited)"));
        }
        let (lo, hi) = TOP_INTERVAL_RANGE_NS;
        let interval_ns = duration_in("interval", &self.interval, lo, hi)?;
        let (lo, hi) = TOP_DURATION_RANGE_NS;
        Ok(TopConfig {
            pids: (!self.pid.is_empty()).then(|| self.pid.clone()),
            interval_ns,
            duration_ns: self
                .duration
                .as_deref()
                .map(|d| duration_in("duration", d, lo, hi))
                .transpose()?,
            per_vm: self.per_vm,
            max_run: self.max_run,
            irq: self.irq,
            json: self.json.clone(),
            plot: self.plot.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(interval: &str, duration: Option<&str>, pid: Vec<u32>) -> TopArgs {
        TopArgs {
            pid,
            interval: interval.into(),
            duration: duration.map(Into::into),
            per_vm: false,
            max_run: 100,
            irq: false,
            json: None,
            plot: None,
            listen: None,
            textfile: None,
            table: false,
        }
    }

    #[test]
    fn the_export_flags_are_checked() {
        assert_eq!(listen_addr("9863").unwrap().to_string(), "127.0.0.1:9863");
        assert_eq!(listen_addr("0.0.0.0:1").unwrap().to_string(), "0.0.0.0:1");
        assert_eq!(listen_addr("[::1]:9863").unwrap().to_string(), "[::1]:9863");
        for bad in ["", "70000", "host:1", "1.2.3.4", "\n"] {
            assert!(listen_addr(bad).is_err(), "{bad}");
        }
        let mut a = args("1s", None, vec![]);
        assert_eq!(a.to_export_config().unwrap(), ExportConfig::default());
        a.textfile = Some("/nonexistent".into());
        let e = a.to_export_config().unwrap_err();
        assert_eq!(e, "--textfile /nonexistent: not a directory");
        a.textfile = Some(std::env::temp_dir());
        a.listen = Some("9863".into());
        assert!(a.to_export_config().unwrap().any());
    }

    #[test]
    fn arguments_are_checked() {
        let c = args("1s", None, vec![]).to_config().unwrap();
        assert_eq!(
            (c.interval_ns, c.duration_ns, c.pids),
            (1_000_000_000, None, None)
        );
        let own = std::process::id();
        let c = args("500ms", Some("1h"), vec![own, 1]).to_config().unwrap();
        assert_eq!(c.duration_ns, Some(3_600_000_000_000));
        assert_eq!(c.pids, Some(vec![own, 1]));
        let e = args("1s", None, vec![u32::MAX]).to_config().unwrap_err();
        assert!(e.contains("no such process"), "{e}");
        // A zombie has exited: not a process to follow.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let zombie = child.id();
        while !std::fs::read_to_string(format!("/proc/{zombie}/stat"))
            .is_ok_and(|s| crate::session::top::proc_text::has_exited(&s))
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let e = args("1s", None, vec![zombie]).to_config().unwrap_err();
        assert!(e.contains("has exited"), "{e}");
        let _ = child.wait();
        for bad in [
            args("1ms", None, vec![]),
            args("1", None, vec![]),
            args("1s", Some("-1s"), vec![]),
            args("1s", Some("400d"), vec![]),
        ] {
            assert!(bad.to_config().is_err(), "{bad:?}");
        }
        let e = args("1ms", None, vec![]).to_config().unwrap_err();
        assert_eq!(e, "--interval 1ms is out of range: allowed 100ms to 3600s");
        assert!(args("1s", None, vec![0]).to_config().is_err());
        assert_eq!(shown(DEFAULT_INTERVAL_NS), "1s");
    }
}
