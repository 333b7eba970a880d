//! `top --listen` / `top --textfile`: an observer that passes everything to
//! the table printer (or any other observer) and also keeps the Prometheus
//! metrics ([`PromMetrics`]), served by [`MetricsServer`] and written to
//! `DIR/tickburst.prom` (atomically: a temporary file in DIR renamed over
//! it, as the node_exporter textfile collector wants).
//!
//! As a service it logs one line per VM seen or gone on stderr (the
//! journal, under the unit), and nothing else per interval: with an export
//! on, the table is printed only with `--table`, and `top`'s other notes
//! (what cannot be measured, lost events) go to stderr instead. It reloads
//! nothing: a SIGHUP (what `kill -HUP` or a reload habit sends) is logged
//! and ignored, where it would otherwise end the process. A text file that
//! cannot be written after the start (a full disk) is logged once, the
//! endpoint and the table go on, and the next write that works is logged.

use crate::output::files::{self, OutputError};
use crate::output::top_http::{HttpError, MetricsServer, SharedMetrics};
use crate::output::top_prom::{HostLabels, PromMetrics, RunWindow};
use crate::session::top::config::ExportConfig;
use crate::session::top::observer::TopObserver;
use crate::session::top::setup::Columns;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tickburst_analysis::top::TopRow;

/// The file written in `--textfile DIR`.
pub const TEXTFILE_NAME: &str = "tickburst.prom";

/// Why the exporter (or the observer it wraps) stopped `top`.
#[derive(Debug, Error)]
pub enum ExporterError<E: std::error::Error + 'static> {
    /// The wrapped observer.
    #[error(transparent)]
    Inner(E),
    /// The endpoint could not be opened.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The text file cannot be written (checked at start).
    #[error("--textfile: {0}")]
    Textfile(#[from] OutputError),
}

/// The exporter around observer `O`.
pub struct Exporter<O> {
    inner: O,
    cfg: ExportConfig,
    metrics: SharedMetrics,
    server: Option<MetricsServer>,
    /// Set by SIGHUP (registered when an export is on).
    hangup: Arc<AtomicBool>,
    /// The text file's last write failed (said once).
    textfile_failing: bool,
}

fn unix_now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl<O> Exporter<O> {
    /// An exporter for `cfg` around `inner` (the endpoint opens when `top`
    /// starts).
    pub fn new(cfg: ExportConfig, inner: O) -> Exporter<O> {
        Exporter {
            inner,
            cfg,
            metrics: Arc::new(Mutex::new(PromMetrics::default())),
            server: None,
            hangup: Arc::new(AtomicBool::new(false)),
            textfile_failing: false,
        }
    }

    /// The text file's path, when written.
    pub fn textfile(&self) -> Option<PathBuf> {
        self.cfg.textfile.as_ref().map(|d| d.join(TEXTFILE_NAME))
    }

    fn log(&self, line: &str) {
        if self.cfg.any() {
            eprintln!("tickburst top: {line}");
        }
    }
}

impl<O: TopObserver> TopObserver for Exporter<O> {
    type Error = ExporterError<O::Error>;

    fn start(&mut self, columns: Columns) -> Result<(), Self::Error> {
        self.inner.start(columns).map_err(ExporterError::Inner)?;
        *self.metrics.lock().unwrap_or_else(|p| p.into_inner()) =
            PromMetrics::new(HostLabels::of_this_host(), unix_now_s());
        if let Some(path) = self.textfile() {
            files::check(&path)?;
        }
        if let Some(addr) = self.cfg.listen {
            let server = MetricsServer::start(addr, self.metrics.clone())?;
            self.log(&format!("serving http://{}/metrics", server.addr));
            self.server = Some(server);
        }
        if let Some(path) = self.textfile() {
            self.log(&format!("writing {} every interval", path.display()));
        }
        if self.cfg.any() {
            // Not fatal: without it a SIGHUP ends `top` as before.
            if let Err(e) =
                signal_hook::flag::register(signal_hook::consts::SIGHUP, self.hangup.clone())
            {
                self.log(&format!("SIGHUP not handled: {e}"));
            }
        }
        Ok(())
    }

    fn note(&mut self, text: &str) {
        self.inner.note(text);
        // Without the table, the notes go to the journal; those of a VM
        // seen or gone are said by `vm_seen` / `vm_gone` in one line.
        if !self.cfg.prints_table() && !text.starts_with("VM pid ") {
            self.log(text.strip_prefix("tickburst top: ").unwrap_or(text));
        }
    }

    fn vm_seen(&mut self, pid: u32, name: &str, vcpus: usize) {
        self.inner.vm_seen(pid, name, vcpus);
        self.log(&format!("VM seen: pid {pid} vm {name:?} {vcpus} vCPU(s)"));
    }

    fn vm_gone(&mut self, pid: u32, name: &str) {
        self.inner.vm_gone(pid, name);
        self.log(&format!("VM gone: pid {pid} vm {name:?}"));
    }

    fn table(&mut self) {
        self.inner.table();
    }

    fn rows(&mut self, rows: &[TopRow]) -> Result<(), Self::Error> {
        self.inner.rows(rows).map_err(ExporterError::Inner)?;
        let text = {
            let mut m = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
            m.update(rows, unix_now_s());
            self.cfg
                .textfile
                .is_some()
                .then(|| m.render(RunWindow::LastInterval))
        };
        if self.hangup.swap(false, Ordering::Relaxed) {
            self.log("SIGHUP: nothing to reload (flags are read at start: restart to change them)");
        }
        if let (Some(path), Some(text)) = (self.textfile(), text) {
            match files::write_bytes(&path, text.as_bytes()) {
                Ok(()) if std::mem::take(&mut self.textfile_failing) => {
                    self.log(&format!("--textfile: {} written again", path.display()));
                }
                Ok(()) => {}
                Err(e) if !std::mem::replace(&mut self.textfile_failing, true) => {
                    self.log(&format!(
                        "--textfile: {e} (said once; trying every interval)"
                    ));
                }
                Err(_) => {}
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Self::Error> {
        self.inner.finish().map_err(ExporterError::Inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An observer that keeps nothing.
    struct Quiet;
    impl TopObserver for Quiet {
        type Error = std::io::Error;
        fn start(&mut self, _: Columns) -> Result<(), std::io::Error> {
            Ok(())
        }
        fn note(&mut self, _: &str) {}
        fn table(&mut self) {}
        fn rows(&mut self, _: &[TopRow]) -> Result<(), std::io::Error> {
            Ok(())
        }
        fn finish(&mut self) -> Result<(), std::io::Error> {
            Ok(())
        }
    }

    #[test]
    fn the_textfile_is_replaced_whole_every_interval() {
        let dir = std::env::temp_dir().join(format!("tickburst-textfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = ExportConfig {
            listen: None,
            textfile: Some(dir.clone()),
            table: false,
        };
        let mut e = Exporter::new(cfg, Quiet);
        e.start(Columns::default()).unwrap();
        let row = TopRow::from_ndjson(
            r#"{"t_s":0.0,"interval_s":1.0,"pid":9,"name":"vm9","vcpu":0,"tid":null,
            "hv_per_s":null,"sw_per_s":250.0,"irq_per_s":250.0,"backend":"sw","switches":0,
            "longest_run":1,"longest_run_late_ms":null,"longest_run_us":null,"sw_lost":0,
            "fell_back_at_s":null,"flags":[]}"#,
        )
        .unwrap();
        e.rows(std::slice::from_ref(&row)).unwrap();
        // The directory gone meanwhile: said, not fatal; written again
        // once it is back.
        std::fs::remove_dir_all(&dir).unwrap();
        e.rows(std::slice::from_ref(&row)).unwrap();
        assert!(e.textfile_failing);
        std::fs::create_dir_all(&dir).unwrap();
        e.rows(&[row]).unwrap();
        assert!(!e.textfile_failing);
        let text = std::fs::read_to_string(dir.join(TEXTFILE_NAME)).unwrap();
        assert!(
            text.contains("tickburst_vcpu_sw_callbacks_total{pid=\"9\",vm=\"vm9\",vcpu=\"0\"} 750"),
            "{text}"
        );
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [TEXTFILE_NAME], "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
        let bad = ExportConfig {
            listen: None,
            textfile: Some("/nonexistent/dir".into()),
            table: false,
        };
        let err = Exporter::new(bad, Quiet)
            .start(Columns::default())
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--textfile: /nonexistent/dir/tickburst.prom"),
            "{err}"
        );
    }
}
