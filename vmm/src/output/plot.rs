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
use tickburst_analysis::bpftrace::{Interval, LogAnalysis};
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

mod run;
mod steps;
mod sweep;

use run::run_panel;
use sweep::sweep_panel;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// A log series: name, colour, which counter.
type LogSeries = (&'static str, RGBColor, fn(&Interval) -> u64);

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A captioned chart with its mesh and axis descriptions.
fn panel<'a, 'b>(
    area: &'a Area<'b>,
    caption: impl AsRef<str>,
    (x, y): (std::ops::Range<f64>, std::ops::Range<f64>),
    (x_desc, y_desc): (impl Into<String>, impl Into<String>),
    y_label_width: u32,
) -> Result<Chart<'a, 'b>, PlotError> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption.as_ref(), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(y_label_width)
        .build_cartesian_2d(x, y)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(draw_err)?;
    Ok(chart)
}

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

/// A bpftrace log: all, hv and sw per second.
fn log_panel(area: &Area, log: &LogAnalysis) -> Result<(), PlotError> {
    let n = log.intervals.len() as f64;
    let y_max = log
        .intervals
        .iter()
        .map(|i| i.all)
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.2;
    let mut chart = panel(
        area,
        "bpftrace log: callbacks per second",
        (0.0..n.max(1.0), 0.0..y_max),
        ("interval (s)", "callbacks per second"),
        80,
    )?;
    let idx = |line: usize| {
        log.intervals
            .iter()
            .position(|i| i.line == line)
            .unwrap_or(0) as f64
    };
    for p in &log.pauses {
        let start = idx(p.first_zero_line);
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(start, 0.0), (start + p.zero_intervals as f64, y_max)],
                PAUSE.mix(0.5).filled(),
            )))
            .map_err(draw_err)?;
    }
    let series: [LogSeries; 3] = [
        ("all (advance_periodic_target_expiration)", BLACK, |i| i.all),
        ("hv timer (kvm_lapic_expired_hv_timer)", GUEST, |i| i.hv),
        ("sw timer (apic_timer_fn)", HOST, |i| i.sw),
    ];
    for (name, color, get) in series {
        chart
            .draw_series(LineSeries::new(
                log.intervals
                    .iter()
                    .enumerate()
                    .map(|(k, i)| (k as f64 + 0.5, get(i) as f64)),
                color.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
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
        Picture::Check(cases) if cases.is_empty() => vec![PANEL_HEIGHT],
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
mod tests {
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
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        let texts: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        for name in [
            "all (advance_periodic_target_expiration)",
            "hv timer (kvm_lapic_expired_hv_timer)",
            "interval (s)",
        ] {
            assert!(texts.contains(&name), "{name} missing in {texts:?}");
        }
    }
}
