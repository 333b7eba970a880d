//! The live table of `top`: one line per interval and vCPU (or per VM with
//! `--per-vm`), `#` lines for notes. Its printer is `top`'s observer and
//! also writes the NDJSON file and, at the end, the picture.

use crate::output::plot::PlotError;
use crate::output::table::out;
use crate::output::top_ndjson::{NdjsonError, NdjsonWriter};
use crate::output::top_plot;
use crate::session::top::config::TopConfig;
use crate::session::top::observer::TopObserver;
use crate::session::top::setup::Columns;
use std::path::PathBuf;
use thiserror::Error;
use tickburst_analysis::top::TopRow;
use tickburst_analysis::top_fold::collapse;

/// Why the printer's files could not be written.
#[derive(Debug, Error)]
pub enum TopOutputError {
    /// The NDJSON file.
    #[error(transparent)]
    Ndjson(#[from] NdjsonError),
    /// The picture.
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// The header line.
pub fn header() -> String {
    format!(
        "{:>8} {:>8} {:<16} {:>4} {:>9} {:>9} {:>9} {:<7} {:>7} {:>7} {:>9}  flags",
        "t_s",
        "pid",
        "name",
        "vcpu",
        "hv/s",
        "sw/s",
        "irq/s",
        "backend",
        "left-hv",
        "run",
        "late_ms"
    )
}

fn rate(v: Option<f64>, available: bool) -> String {
    match (v, available) {
        (Some(v), _) => format!("{v:.1}"),
        (None, true) => "-".into(),
        (None, false) => "n/a".into(),
    }
}

/// One line of the table; `vcpu_label` is the vCPU index or `all(N)`.
fn line(r: &TopRow, vcpu_label: &str, cols: Columns) -> String {
    let run = r.longest_run.map_or("-".to_string(), |n| n.to_string());
    let late = r
        .longest_run_late_ms
        .map_or("-".to_string(), |ms| format!("{ms:.3}"));
    let mut name: String = r.name.chars().take(16).collect();
    if name.is_empty() {
        name.push('?');
    }
    format!(
        "{:>8.3} {:>8} {:<16} {:>4} {:>9} {:>9} {:>9} {:<7} {:>7} {:>7} {:>9}  {}",
        r.t_s,
        r.pid,
        name,
        vcpu_label,
        rate(r.hv_per_s, cols.hv),
        rate(r.sw_per_s, cols.sw),
        rate(r.irq_per_s, cols.irq),
        r.backend.name(),
        match (r.left_hv, cols.left_hv) {
            (Some(n), _) => n.to_string(),
            (None, true) => "-".into(),
            (None, false) => "n/a".into(),
        },
        run,
        late,
        r.flags.join(",")
    )
}

/// The lines of one interval: per vCPU, or per VM (rows of one pid folded)
/// when `per_vm`. `rows` are sorted by pid, then vCPU.
pub fn lines(rows: &[TopRow], cols: Columns, per_vm: bool) -> Vec<String> {
    if !per_vm {
        return rows
            .iter()
            .map(|r| line(r, &r.vcpu.to_string(), cols))
            .collect();
    }
    rows.chunk_by(|a, b| a.pid == b.pid)
        .filter_map(|vm| {
            let folded = collapse(vm)?;
            Some(line(&folded, &format!("all{}", vm.len()), cols))
        })
        .collect()
}

/// Prints `top`'s notes and lines on stdout, writes `--json` as it goes and
/// `--plot` at the end.
#[derive(Debug, Default)]
pub struct TopPrinter {
    columns: Columns,
    per_vm: bool,
    json_path: Option<PathBuf>,
    json: Option<NdjsonWriter>,
    plot: Option<PathBuf>,
    plotted: Vec<TopRow>,
    /// Print nothing on stdout (the files are still written).
    quiet: bool,
}

impl TopPrinter {
    /// A printer for `cfg`'s `--per-vm`, `--json` and `--plot` (the NDJSON
    /// file is created when `top` starts).
    pub fn new(cfg: &TopConfig) -> TopPrinter {
        TopPrinter {
            per_vm: cfg.per_vm,
            json_path: cfg.json.clone(),
            plot: cfg.plot.clone(),
            ..TopPrinter::default()
        }
    }
}

impl TopPrinter {
    /// The same printer printing nothing on stdout: `--json` and `--plot`
    /// are still written (`top --listen` as a service).
    pub fn quiet(self) -> TopPrinter {
        TopPrinter {
            quiet: true,
            ..self
        }
    }
}

impl TopObserver for TopPrinter {
    type Error = TopOutputError;

    fn start(&mut self, columns: Columns) -> Result<(), TopOutputError> {
        self.columns = columns;
        self.json = self
            .json_path
            .as_deref()
            .map(NdjsonWriter::create)
            .transpose()?;
        Ok(())
    }

    fn note(&mut self, text: &str) {
        if self.quiet {
            return;
        }
        out(&format!("# {text}"));
    }

    fn table(&mut self) {
        if self.quiet {
            return;
        }
        out(&header());
    }

    fn rows(&mut self, rows: &[TopRow]) -> Result<(), TopOutputError> {
        if !self.quiet {
            for line in lines(rows, self.columns, self.per_vm) {
                out(&line);
            }
        }
        if let Some(w) = self.json.as_mut() {
            for r in rows {
                w.write(r)?;
            }
        }
        if self.plot.is_some() {
            self.plotted.extend_from_slice(rows);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), TopOutputError> {
        if let Some(path) = &self.plot {
            top_plot::write(path, &self.plotted)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickburst_analysis::top::{Backend, VcpuTracker};

    fn row(pid: u32, vcpu: u32, sw: Option<f64>) -> TopRow {
        TopRow {
            t_s: 2.0,
            interval_s: 1.0,
            pid,
            name: "tickburst".into(),
            vcpu,
            tid: Some(7),
            sw_per_s: sw,
            irq_per_s: Some(999.0),
            backend: if sw.is_some() {
                Backend::Sw
            } else {
                Backend::Unknown
            },
            longest_run: sw.map(|_| 1),
            longest_run_late_ms: sw.map(|_| 0.004),
            ..TopRow::default()
        }
    }

    #[test]
    fn na_where_the_host_cannot_and_dash_while_learning() {
        let cols = Columns {
            hv: false,
            sw: true,
            irq: true,
            left_hv: false,
        };
        let l = lines(&[row(10, 0, Some(1000.0)), row(10, 1, None)], cols, false);
        assert_eq!(l.len(), 2);
        let f: Vec<&str> = l[0].split_whitespace().collect();
        assert_eq!(
            f[..9],
            [
                "2.000",
                "10",
                "tickburst",
                "0",
                "n/a",
                "1000.0",
                "999.0",
                "sw",
                "n/a"
            ]
        );
        let f: Vec<&str> = l[1].split_whitespace().collect();
        assert_eq!(f[4..6], ["n/a", "-"]);
        assert_eq!(header().split_whitespace().count(), 12);
    }

    #[test]
    fn per_vm_folds_each_pid() {
        let rows = [
            row(10, 0, Some(1000.0)),
            row(10, 1, Some(500.0)),
            row(11, 0, Some(1.0)),
        ];
        let l = lines(&rows, Columns::default(), true);
        assert_eq!(l.len(), 2);
        assert!(l[0].contains("all2") && l[0].contains("1500.0"), "{}", l[0]);
        assert!(l[1].contains("all1"), "{}", l[1]);
        let _ = VcpuTracker::default();
    }

    #[test]
    fn the_printer_writes_ndjson_as_it_goes_and_the_picture_at_the_end() {
        let dir = std::env::temp_dir();
        let id = std::process::id();
        let json = dir.join(format!("tickburst-top-printer-{id}.json"));
        let svg = dir.join(format!("tickburst-top-printer-{id}.svg"));
        let cfg = TopConfig {
            pids: None,
            interval_ns: 1_000_000_000,
            duration_ns: None,
            per_vm: false,
            irq: true,
            max_run: 100,
            json: Some(json.clone()),
            plot: Some(svg.clone()),
        };
        let mut p = TopPrinter::new(&cfg);
        p.start(Columns::default()).unwrap();
        p.rows(&[row(10, 0, Some(1000.0))]).unwrap();
        assert_eq!(std::fs::read_to_string(&json).unwrap().lines().count(), 1);
        assert!(!svg.exists());
        p.finish().unwrap();
        assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
        std::fs::remove_file(&json).unwrap();
        std::fs::remove_file(&svg).unwrap();
        let bad = TopConfig {
            json: Some("/nonexistent/dir/x.json".into()),
            ..cfg
        };
        let e = TopPrinter::new(&bad).start(Columns::default()).unwrap_err();
        assert!(e.to_string().starts_with("writing /nonexistent"), "{e}");
    }
}
