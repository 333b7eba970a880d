//! The live table: one line per report window as a run goes, with the
//! progress notes; the printer is the session's observer.

use crate::output::summary::detected_summary;
use crate::session::observer::RunObserver;
use tickburst_analysis::count::Count;
use tickburst_analysis::figures::{PauseStats, Window};
use tickburst_analysis::periodic::PeriodicSummary;
use tickburst_analysis::record::DetectedPause;

/// Header of the live table (guest columns).
pub const TABLE_HEADER: &str = "     t_s     guest  expected";
/// Extra header when host probes are on.
pub const HOST_HEADER: &str =
    "  sw_timer  hv_timer       all  irq_inj     exits  halt_exits  scope";

/// Extra header with several vCPUs: every vCPU's ticks in the window, and
/// their sum.
pub const VCPUS_HEADER: &str = "  | ticks per vCPU (0 1 ...) = all";

/// The per-vCPU cells of a table line (empty with one vCPU).
pub fn vcpu_cells(vcpu_ticks: &[u64]) -> String {
    if vcpu_ticks.is_empty() {
        return String::new();
    }
    let cells: Vec<String> = vcpu_ticks.iter().map(u64::to_string).collect();
    format!(
        "  | {} = {}",
        cells.join(" "),
        vcpu_ticks.iter().sum::<u64>()
    )
}

fn cell(v: Count) -> String {
    v.get().map_or_else(|| "n/a".into(), |n| n.to_string())
}

/// One live table line.
pub fn window_line(w: &Window) -> String {
    let host = w.host.as_ref().map_or_else(String::new, |h| {
        format!(
            "  {:>8}  {:>8}  {:>8}  {:>7}  {:>8}  {:>10}  {}",
            cell(h.sw_timer),
            cell(h.hv_timer),
            cell(h.all),
            cell(h.irq_injections),
            cell(h.exits),
            cell(h.halt_exits),
            h.scope
        )
    });
    format!(
        "{:8.3}  {:8}  {:8.1}{}{}",
        w.t_ms / 1e3,
        w.guest_ticks,
        w.expected_ticks,
        host,
        if w.paused { "  PAUSED" } else { "" }
    )
}

/// Prints a line on stdout; a closed pipe (`| head`) is not an error: the run
/// goes on and still writes its record.
pub fn out(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Prints windows as they complete (header before the first), and notes.
#[derive(Default)]
pub struct TablePrinter {
    header_done: bool,
}

impl RunObserver for TablePrinter {
    fn detected(&mut self, index: usize, pause: &DetectedPause, stats: &PauseStats) {
        out(&format!(
            "# detected {}\n{}",
            if pause.vmm_stalled {
                "(the VMM process was stopped too: SIGSTOP or freeze)"
            } else {
                "(only the vCPU stalled; the VMM kept running)"
            },
            detected_summary(index, stats)
        ));
    }
    fn window(&mut self, window: &Window, vcpu_ticks: &[u64]) {
        if !self.header_done {
            let host = if window.host.is_some() {
                HOST_HEADER
            } else {
                ""
            };
            let vcpus = if vcpu_ticks.is_empty() {
                ""
            } else {
                VCPUS_HEADER
            };
            out(&format!("{TABLE_HEADER}{host}{vcpus}"));
            self.header_done = true;
        }
        out(&(window_line(window) + &vcpu_cells(vcpu_ticks)));
    }
    fn note(&mut self, text: &str) {
        out(&format!("# {text}"));
    }
    fn summary(&mut self, s: &PeriodicSummary) {
        out(&summary_line(s));
    }
}

/// The line of a periodic summary.
pub fn summary_line(s: &PeriodicSummary) -> String {
    format!(
        "# summary {:.0}-{:.0} s: rate {} (nominal {:.2} Hz), worst lateness {}, pauses seen {}",
        s.from_ms / 1e3,
        s.to_ms / 1e3,
        s.rate_hz
            .map_or("n/a (paused)".into(), |r| format!("{r:.2} Hz")),
        s.nominal_hz,
        s.worst_late_us
            .map_or("n/a".into(), |us| format!("{:.3} ms", us / 1e3)),
        s.pauses_seen
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_line_marks_pauses() {
        let w = Window {
            t_ms: 2000.0,
            duration_ms: 1000.0,
            guest_ticks: 0,
            expected_ticks: 0.0,
            paused: true,
            host: None,
        };
        let line = window_line(&w);
        assert!(line.contains("2.000") && line.ends_with("PAUSED"), "{line}");
    }
}
