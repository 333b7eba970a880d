//! `--plot FILE.svg`: pictures of a run (guest ticks and host callbacks per
//! report window over time, pauses shaded, each resume's burst marked), of a
//! sweep (burst against pause length with the fitted line), of a check (one
//! run panel per case) and of a bpftrace log (all/hv/sw per second).
//!
//! Drawn with plotters' SVG back end into a string, then written atomically.

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use thiserror::Error;
use tickburst_analysis::bpftrace::LogAnalysis;
use tickburst_analysis::record::Record;
use tickburst_analysis::sweep::SweepSummary;

/// Why a plot could not be written.
#[derive(Debug, Error)]
pub enum PlotError {
    /// Drawing failed.
    #[error("drawing: {0}")]
    Draw(String),
    /// Writing failed (the error names the file).
    #[error("writing {0}")]
    Write(#[from] crate::output::files::OutputError),
}

fn draw_err<E: std::fmt::Debug>(e: E) -> PlotError {
    PlotError::Draw(format!("{e:?}"))
}

const GUEST: RGBColor = RGBColor(31, 119, 180);
const HOST: RGBColor = RGBColor(214, 39, 40);
const EXPECTED: RGBColor = RGBColor(20, 20, 20);
const FALLBACK: RGBColor = RGBColor(148, 0, 211);
const PAUSE: RGBColor = RGBColor(255, 200, 120);
const WIDTH: u32 = 1000;
const PANEL_HEIGHT: u32 = 420;
/// A run panel with its zoom strip.
const RUN_ZOOM_HEIGHT: u32 = 720;

mod log;
mod run;
mod steps;
mod sweep;

use log::log_panel;
use run::run_panel;
use sweep::sweep_panel;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The legend box.
fn legend<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    position: SeriesLabelPosition,
) -> Result<(), PlotError> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(draw_err)
}

/// What to draw.
pub enum Picture<'a> {
    /// One run (run, watch, analyze RUN.json).
    Run(&'a Record),
    /// A sweep: the run and the fit.
    Sweep(&'a Record, &'a SweepSummary),
    /// A check: one panel per case.
    Check(&'a [(String, Record)]),
    /// A bpftrace log.
    Log(&'a LogAnalysis),
}

impl<'a> Picture<'a> {
    /// The picture of a record: its sweep panel too when it is a sweep.
    pub fn of_record(r: &'a Record) -> Picture<'a> {
        match &r.sweep {
            Some(s) => Picture::Sweep(r, s),
            None => Picture::Run(r),
        }
    }
}

/// The height of a run panel.
fn run_height(r: &Record) -> u32 {
    if run::has_zoom(r) {
        RUN_ZOOM_HEIGHT
    } else {
        PANEL_HEIGHT
    }
}

/// Draws the picture into an SVG string.
pub fn render(picture: &Picture) -> Result<String, PlotError> {
    let heights: Vec<u32> = match picture {
        Picture::Run(r) => vec![run_height(r)],
        Picture::Log(_) => vec![PANEL_HEIGHT],
        Picture::Sweep(r, _) => vec![run_height(r), PANEL_HEIGHT],
        Picture::Check([]) => vec![PANEL_HEIGHT],
        Picture::Check(cases) => cases.iter().map(|(_, r)| run_height(r)).collect(),
    };
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (WIDTH, heights.iter().sum())).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut areas = Vec::new();
        let mut rest = root.clone();
        for (k, h) in heights.iter().enumerate() {
            if k + 1 == heights.len() {
                areas.push(rest.clone());
            } else {
                let (top, bottom) = rest.split_vertically(*h);
                areas.push(top);
                rest = bottom;
            }
        }
        match picture {
            Picture::Run(r) => run_panel(&areas[0], &title(r), r)?,
            Picture::Sweep(r, s) => {
                run_panel(&areas[0], &title(r), r)?;
                sweep_panel(&areas[1], s)?;
            }
            Picture::Check(cases) => {
                for ((name, r), area) in cases.iter().zip(areas.iter()) {
                    run_panel(area, &format!("{name}: {}", title(r)), r)?;
                }
            }
            Picture::Log(log) => log_panel(&areas[0], log)?,
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

fn title(r: &Record) -> String {
    format!(
        "{} timer, period {:.0} us, {} {}, pause by {} (verdict: {})",
        r.config.timer,
        r.config.actual_period_ns as f64 / 1e3,
        r.config.apic,
        r.config.idle,
        r.config.pause_method,
        r.verdict.kind.label()
    )
}

/// Draws and writes atomically.
pub fn write(path: &Path, picture: &Picture) -> Result<(), PlotError> {
    write_svg(path, &render(picture)?)
}

/// Writes a drawn picture as [`crate::output::files::write`] does
/// (atomically; a device or FIFO in place).
pub fn write_svg(path: &Path, svg: &str) -> Result<(), PlotError> {
    Ok(crate::output::files::write_bytes(path, svg.as_bytes())?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tickburst_analysis::bpftrace;

    #[test]
    fn bpftrace_picture_has_the_three_series() {
        let text = "all_count 4768 hv_timer 4768 sw_timer 0\nall_count 0 hv_timer 0 sw_timer 0\nall_count 51543 hv_timer 1 sw_timer 51541\nall_count 4768 hv_timer 0 sw_timer 4768\n";
        let log = bpftrace::analyze(&bpftrace::parse(text).unwrap()).unwrap();
        let svg = render(&Picture::Log(&log)).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("sw timer (apic_timer_fn)"));
        assert!(svg.contains("callbacks per second"));
        let texts = tickburst_testkit::svg::svg_texts(&svg);
        tickburst_testkit::svg::assert_has_texts(
            &texts,
            &[
                "all (advance_periodic_target_expiration)",
                "hv timer (kvm_lapic_expired_hv_timer)",
                "interval (s)",
                "callbacks per second (log scale)",
                "nominal: 4768 per second",
            ],
        );
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("resume 1: 10.81x nominal") && t.contains("fell back")),
            "{texts:?}"
        );
    }

    /// The rig's records (vmm/tests/data): a 10 s pause on an Intel host
    /// with the hv timer, the fix reverted (burst) and in place (ok).
    pub(super) fn rig(fixed: bool) -> Record {
        let text = if fixed {
            include_str!("../../tests/data/rig-fixed-spin.json")
        } else {
            include_str!("../../tests/data/rig-unfixed-spin.json")
        };
        serde_json::from_str(text).expect("a rig record")
    }

    use tickburst_testkit::svg::svg_texts as texts;

    #[test]
    fn unfixed_run_marks_the_storm_and_the_fallback_on_a_log_axis() {
        let r = rig(false);
        let texts = texts(&render(&Picture::Run(&r)).unwrap());
        let has = |prefix: &str| texts.iter().any(|t| t.starts_with(prefix));
        tickburst_testkit::svg::assert_has_texts(
            &texts,
            &[
                "events per second (log scale)",
                "guest timer ticks",
                "host timer callbacks (sw + hv)",
                "expected guest ticks (nominal rate, 0 while paused)",
                "pause (vCPU not running)",
                "time since the guest was ready (s)",
                // Log ticks: a normal second and the storm on one axis.
                "1k",
                "1M",
            ],
        );
        assert!(
            has("longest run in one interrupt: 9999 callbacks in 42"),
            "{texts:?}"
        );
        assert!(
            has("KVM fell back from the hv to the sw timer (t=12.001 s)"),
            "{texts:?}"
        );
        assert!(has("zoom on resume 1 (after a 10.0 s pause)"), "{texts:?}");
        assert!(has("resume 1: guest"), "{texts:?}");
        assert!(has("steps of 10 ms from the resume on"), "{texts:?}");
    }

    #[test]
    fn fixed_run_has_no_storm_and_no_fallback_marked() {
        let r = rig(true);
        let texts = texts(&render(&Picture::Run(&r)).unwrap());
        assert!(
            !texts.iter().any(|t| t.contains("callbacks in ")),
            "{texts:?}"
        );
        assert!(!texts.iter().any(|t| t.contains("fell back")), "{texts:?}");
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("resume 1: guest") && t.ends_with("(no storm)")),
            "{texts:?}"
        );
    }

    #[test]
    fn check_picture_has_one_run_panel_per_case() {
        let cases = [
            ("unfixed".to_string(), rig(false)),
            ("fixed".to_string(), rig(true)),
        ];
        let svg = render(&Picture::Check(&cases)).unwrap();
        let texts = texts(&svg);
        assert_eq!(
            texts
                .iter()
                .filter(|t| t.starts_with("zoom on resume"))
                .count(),
            2
        );
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("unfixed: periodic timer")),
            "{texts:?}"
        );
    }

    #[test]
    fn sweep_picture_rings_bursts_and_shows_nominal() {
        use tickburst_analysis::sweep::{fit, SweepRow};
        let row = |pause_s: f64, host: u64, verdict: &str| SweepRow {
            pause_s,
            guest_during: 0,
            guest_first_1s: 1000,
            guest_burst_ratio: 1.0,
            host_during: Some(0),
            host_first_1s: Some(host),
            host_burst_ratio: Some(host as f64 / 1000.0),
            verdict: verdict.into(),
        };
        let rows = vec![
            row(1.0, 2000, "burst"),
            row(2.0, 3000, "burst"),
            row(0.1, 1000, "ok"),
        ];
        let points: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (r.pause_s, r.host_first_1s.unwrap() as f64))
            .collect();
        let s = SweepSummary {
            nominal_hz: 1000.0,
            host_fit: fit(&points),
            guest_fit: None,
            reading: String::new(),
            rows,
        };
        let r = rig(true);
        let texts = texts(&render(&Picture::Sweep(&r, &s)).unwrap());
        tickburst_testkit::svg::assert_has_texts(
            &texts,
            &[
                "pause judged a burst",
                "nominal: 1000 in 1 s (no burst)",
                "3000",
            ],
        );
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("host timer callbacks (sw + hv) fit: slope +")),
            "{texts:?}"
        );
    }
}
