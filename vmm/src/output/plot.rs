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
use tickburst_analysis::sweep::{LineFit, SweepSummary};

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
const EXPECTED: RGBColor = RGBColor(120, 120, 120);
const PAUSE: RGBColor = RGBColor(255, 200, 120);
const WIDTH: u32 = 1000;
const PANEL_HEIGHT: u32 = 420;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// A sweep series: name, colour, points, fitted line.
type SweepSeries<'a> = (&'a str, RGBColor, Vec<(f64, f64)>, Option<&'a LineFit>);
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

/// One run: counts per window over time.
fn run_panel(area: &Area, title: &str, r: &Record) -> Result<(), PlotError> {
    let end_s = r
        .windows
        .last()
        .map_or(1.0, |w| (w.t_ms + w.duration_ms) / 1e3)
        .max(0.001);
    let host = |w: &tickburst_analysis::figures::Window| w.host.as_ref().and_then(|h| h.all.get());
    let y_max = r
        .windows
        .iter()
        .map(|w| (w.guest_ticks.max(host(w).unwrap_or(0)) as f64).max(w.expected_ticks))
        .fold(1.0, f64::max)
        * 1.25;
    let mut chart = panel(
        area,
        title,
        (0.0..end_s, 0.0..y_max),
        (
            "time since the guest was ready (s)",
            format!("events per {:.0} ms window", r.config.interval_ms),
        ),
        70,
    )?;
    for p in &r.pauses {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(p.start_ms / 1e3, 0.0), (p.end_ms / 1e3, y_max)],
                PAUSE.mix(0.5).filled(),
            )))
            .map_err(draw_err)?
            .label("pause (vCPU not running)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], PAUSE.filled()));
    }
    // Each window's count is drawn at the window's middle.
    let mid = |w: &tickburst_analysis::figures::Window| (w.t_ms + w.duration_ms / 2.0) / 1e3;
    chart
        .draw_series(LineSeries::new(
            r.windows.iter().map(|w| (mid(w), w.expected_ticks)),
            EXPECTED.stroke_width(1),
        ))
        .map_err(draw_err)?
        .label("expected guest ticks (nominal rate)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], EXPECTED));
    chart
        .draw_series(LineSeries::new(
            r.windows.iter().map(|w| (mid(w), w.guest_ticks as f64)),
            GUEST.stroke_width(2),
        ))
        .map_err(draw_err)?
        .label("guest timer ticks")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], GUEST.stroke_width(2)));
    let host_points: Vec<(f64, f64)> = r
        .windows
        .iter()
        .filter_map(|w| host(w).map(|n| (mid(w), n as f64)))
        .collect();
    if !host_points.is_empty() {
        chart
            .draw_series(LineSeries::new(host_points, HOST.stroke_width(2)))
            .map_err(draw_err)?
            .label("host timer callbacks (sw + hv)")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], HOST.stroke_width(2)));
    }
    for (i, p) in r.pauses.iter().enumerate() {
        let x = p.end_ms / 1e3;
        let run = p
            .host_longest_run
            .map_or(String::new(), |n| format!(", {n} in one interrupt"));
        let label = match p.host_burst_ratio {
            Some(h) => format!(
                "resume {}: guest {:.2}x, host {h:.2}x{run}",
                i + 1,
                p.burst_ratio
            ),
            None => format!("resume {}: guest {:.2}x", i + 1, p.burst_ratio),
        };
        chart
            .draw_series([EmptyElement::at((x, y_max * 0.95))
                + TriangleMarker::new((0, 0), 6, BLACK.filled())
                + Text::new(label, (6, -4), ("sans-serif", 12))])
            .map_err(draw_err)?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    Ok(())
}

/// Burst against pause length, with the fitted lines.
fn sweep_panel(area: &Area, s: &SweepSummary) -> Result<(), PlotError> {
    let x_max = s.rows.iter().map(|r| r.pause_s).fold(0.1, f64::max) * 1.1;
    let y_of = |r: &tickburst_analysis::sweep::SweepRow| {
        r.host_first_1s.unwrap_or(0).max(r.guest_first_1s) as f64
    };
    let y_max = s.rows.iter().map(y_of).fold(1.0, f64::max) * 1.3;
    let mut chart = panel(
        area,
        "burst against pause length",
        (0.0..x_max, 0.0..y_max),
        (
            "pause length (s)",
            "callbacks in the first second after resume",
        ),
        70,
    )?;
    let series: [SweepSeries; 2] = [
        (
            "guest ticks",
            GUEST,
            s.rows
                .iter()
                .map(|r| (r.pause_s, r.guest_first_1s as f64))
                .collect(),
            s.guest_fit.as_ref(),
        ),
        (
            "host callbacks",
            HOST,
            s.rows
                .iter()
                .filter_map(|r| r.host_first_1s.map(|h| (r.pause_s, h as f64)))
                .collect(),
            s.host_fit.as_ref(),
        ),
    ];
    for (name, color, points, fit) in series {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 5, color.filled())))
            .map_err(draw_err)?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
        if let Some(f) = fit {
            let line = [(0.0, f.intercept), (x_max, f.intercept + f.slope * x_max)];
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(1)))
                .map_err(draw_err)?
                .label(format!(
                    "{name} fit: slope {:.1}/s, R^2 {}",
                    f.slope,
                    f.r_squared
                        .map_or_else(|| "n/a".into(), |r| format!("{r:.3}"))
                ))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
    Ok(())
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

/// Draws the picture into an SVG string.
pub fn render(picture: &Picture) -> Result<String, PlotError> {
    let panels = match picture {
        Picture::Run(_) | Picture::Log(_) => 1,
        Picture::Sweep(..) => 2,
        Picture::Check(cases) => cases.len().max(1),
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, PANEL_HEIGHT * panels as u32))
            .into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let areas = root.split_evenly((panels, 1));
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
