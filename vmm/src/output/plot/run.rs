//! The run panel: guest ticks, host callbacks and the expected rate as steps
//! on a log axis, pauses shaded, the longest run in one interrupt and the
//! hv -> sw fall-back marked; below it a zoom on the worst resume.

use super::steps::{fine_step_ns, host_is_fine, steps, Step};
use super::{draw_err, Area, PlotError, EXPECTED, FALLBACK, GUEST, HOST, PAUSE};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use tickburst_analysis::figures::{PauseStats, AFTER_SPAN_NS};
use tickburst_analysis::record::Record;

/// A rate of 0 is drawn here (the bottom of the log axis).
pub(super) const FLOOR: f64 = 0.5;
/// Head room above the highest step (a factor on the log axis) for the
/// legend and the marks.
pub(super) const HEAD_ROOM: f64 = 300.0;
/// The zoom shows this much before the resume ...
const ZOOM_BEFORE_S: f64 = 0.25;
/// ... and this much after it.
const ZOOM_AFTER_S: f64 = 1.25;

/// A run series: name, colour, line width, value of a step.
type RunSeries = (&'static str, RGBColor, u32, fn(&Step) -> Option<f64>);

type LogChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, LogCoord<f64>>>;

/// Whether a run panel has a zoom strip (its fine steps exist).
pub(super) fn has_zoom(r: &Record) -> bool {
    zoom_pause(r).is_some() && steps(r).iter().any(|s| s.fine)
}

/// The pause to zoom on: the longest run in one interrupt, else the largest
/// host burst, else the first.
fn zoom_pause(r: &Record) -> Option<(usize, &PauseStats)> {
    r.pauses.iter().enumerate().max_by(|(i, a), (j, b)| {
        let key = |p: &PauseStats| {
            (
                p.host_longest_run.unwrap_or(0),
                p.host_burst_ratio.unwrap_or(0.0),
            )
        };
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(j.cmp(i))
    })
}

/// `1`, `10`, `100`, `1k`, `10k`, `100k`, `1M` ...; the floor reads `0`.
pub(super) fn rate_label(v: &f64) -> String {
    if *v <= FLOOR * 1.01 {
        return "0".into();
    }
    let (div, unit) = match *v {
        v if v >= 1e6 => (1e6, "M"),
        v if v >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    let x = v / div;
    if (x - x.round()).abs() < 1e-6 {
        format!("{}{unit}", x.round())
    } else {
        format!("{x:.1}{unit}")
    }
}

fn floor(v: f64) -> f64 {
    v.max(FLOOR)
}

/// The step outline of one series (broken where it has no value).
fn step_lines(steps: &[Step], get: impl Fn(&Step) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
    let mut lines: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    for s in steps {
        match get(s) {
            Some(v) => {
                current.push((s.x0, floor(v)));
                current.push((s.x1, floor(v)));
            }
            None if !current.is_empty() => lines.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// The steps inside `[x0, x1]`, cut at its edges.
fn clip(all: &[Step], (x0, x1): (f64, f64)) -> Vec<Step> {
    all.iter()
        .filter(|s| s.x1 > x0 && s.x0 < x1)
        .map(|s| Step {
            x0: s.x0.max(x0),
            x1: s.x1.min(x1),
            ..s.clone()
        })
        .collect()
}

/// The longest run in one interrupt of a pause, as a mark: where it lies
/// (s) and its text; `None` where the record has no figure or no storm (the
/// resume's label then says it).
fn longest_run_mark(r: &Record, p: &PauseStats) -> Option<(f64, String)> {
    let n = p.host_longest_run.filter(|&n| n > 1)?;
    let start = (p.start_ms * 1e6) as u64;
    let end = (p.end_ms * 1e6) as u64 + AFTER_SPAN_NS;
    let at = r
        .samples
        .host_events
        .as_ref()
        .and_then(|e| e.longest_run(start, end))
        .map_or(p.end_ms / 1e3, |run| run.t_ns() as f64 / 1e9);
    let mut text = format!("longest run in one interrupt: {n} callbacks");
    if let Some(ms) = p.host_longest_run_ms {
        text.push_str(&format!(" in {ms:.0} ms"));
    }
    if let Some(late) = p.host_longest_run_late_ms {
        text.push_str(&format!(", first {:.1} s late", late / 1e3));
    }
    Some((at, text))
}

/// The step value of a series at `x`.
fn value_at(steps: &[Step], x: f64, get: impl Fn(&Step) -> Option<f64>) -> Option<f64> {
    steps
        .iter()
        .find(|s| s.x0 <= x && x < s.x1)
        .or(steps.last())
        .and_then(get)
}

/// One chart of the run over `x` (the whole run, or a zoom).
/// Whether a mark lies in the right third of the chart.
fn in_right_third(at: f64, (x0, x1): (f64, f64)) -> bool {
    at > x0 + (x1 - x0) * 0.66
}

/// How far a mark's text starts from the mark, pixels.
fn dx(at: f64, x: (f64, f64)) -> i32 {
    if in_right_third(at, x) {
        -10
    } else {
        10
    }
}

/// The style of a mark's text: starting at the mark, or ending at it in the
/// right third of the chart.
fn mark_font(size: u32, v: VPos, at: f64, (x0, x1): (f64, f64)) -> TextStyle<'static> {
    let h = if in_right_third(at, (x0, x1)) {
        HPos::Right
    } else {
        HPos::Left
    };
    ("sans-serif", size)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(h, v))
}

/// How a chart shows the run: the whole run (with or without a zoom below
/// it) or the zoom.
#[derive(Clone, Copy, PartialEq)]
enum View {
    /// The whole run, the marks with their texts.
    Whole,
    /// The whole run above a zoom: short texts (the zoom has the long ones).
    WholeAboveZoom,
    /// The zoom on one resume.
    Zoom,
}

fn chart(
    area: &Area,
    title: &str,
    r: &Record,
    all: &[Step],
    x: (f64, f64),
    view: View,
) -> Result<(), PlotError> {
    let zoom = view == View::Zoom;
    let shown = clip(all, x);
    let data_top = shown
        .iter()
        .flat_map(|s| [s.guest, s.host.unwrap_or(0.0), s.expected])
        .fold(10.0, f64::max);
    let y_top = data_top * HEAD_ROOM;
    let step_ms = fine_step_ns(r) as f64 / 1e6;
    let fine = all.iter().any(|s| s.fine);
    let host_note = if host_is_fine(r) || r.windows.iter().all(|w| w.host.is_none()) {
        ""
    } else {
        " (host: report windows)"
    };
    let steps_note = match (zoom, fine) {
        (true, _) => format!("steps of {step_ms:.0} ms from the resume on{host_note}"),
        (false, true) => format!(
            "steps: {:.0} ms report windows cut at pauses, {step_ms:.0} ms for 1 s after each resume{host_note}",
            r.config.interval_ms
        ),
        (false, false) => format!("steps: {:.0} ms report windows", r.config.interval_ms),
    };
    let mut chart: LogChart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x.0..x.1, (FLOOR..y_top).log_scale())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("time since the guest was ready (s)")
        .y_desc("events per second (log scale)")
        .y_label_formatter(&rate_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series([Text::new(
            steps_note,
            (x.1, y_top),
            ("sans-serif", 12)
                .into_font()
                .color(&RGBColor(90, 90, 90))
                .pos(Pos::new(HPos::Right, VPos::Top)),
        )])
        .map_err(draw_err)?;
    for p in &r.pauses {
        let (s, e) = ((p.start_ms / 1e3).max(x.0), (p.end_ms / 1e3).min(x.1));
        if s >= e {
            continue;
        }
        chart
            .draw_series([Rectangle::new(
                [(s, FLOOR), (e, y_top)],
                PAUSE.mix(0.5).filled(),
            )])
            .map_err(draw_err)?;
    }
    if r.pauses
        .iter()
        .any(|p| p.end_ms / 1e3 > x.0 && p.start_ms / 1e3 < x.1)
    {
        // One legend entry for every pause.
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(draw_err)?
            .label("pause (vCPU not running)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], PAUSE.filled()));
    }
    let series: [RunSeries; 2] = [
        ("host timer callbacks (sw + hv)", HOST, 3, |s| s.host),
        ("guest timer ticks", GUEST, 2, |s| Some(s.guest)),
    ];
    for (name, color, width, get) in series {
        let lines = step_lines(&shown, get);
        for (k, line) in lines.into_iter().enumerate() {
            let drawn = chart
                .draw_series(LineSeries::new(line, color.stroke_width(width)))
                .map_err(draw_err)?;
            if k == 0 {
                drawn.label(name).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(width))
                });
            }
        }
    }
    if let Some(at) = r
        .host
        .timer_backend
        .as_ref()
        .filter(|b| b.fell_back_to_sw)
        .and_then(|b| b.fallback_ms)
        .map(|ms| ms / 1e3)
        .filter(|t| (x.0..=x.1).contains(t))
    {
        chart
            .draw_series(DashedLineSeries::new(
                [(at, FLOOR), (at, y_top)],
                6,
                4,
                FALLBACK.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(format!(
                "KVM fell back from the hv to the sw timer (t={at:.3} s)"
            ))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], FALLBACK.stroke_width(2)));
    }
    let in_view = r
        .pauses
        .iter()
        .filter(|p| (x.0..=x.1).contains(&(p.end_ms / 1e3)))
        .count();
    // With several resumes in view, short labels (they would overlap).
    let short = view == View::WholeAboveZoom || in_view > 1;
    for (i, p) in r.pauses.iter().enumerate() {
        let resume = p.end_ms / 1e3;
        if (x.0..=x.1).contains(&resume) {
            let mut label = match p.host_burst_ratio {
                _ if short => format!("{}", i + 1),
                Some(h) => format!(
                    "resume {}: guest {:.2}x nominal in the first 100 ms, host {h:.2}x in the first 1 s",
                    i + 1,
                    p.burst_ratio
                ),
                None => format!(
                    "resume {}: guest {:.2}x nominal in the first 100 ms",
                    i + 1,
                    p.burst_ratio
                ),
            };
            if let (Some(n @ 0..=1), false) = (p.host_longest_run, short) {
                label.push_str(&format!("; longest run in one interrupt: {n} (no storm)"));
            }
            chart
                .draw_series([EmptyElement::at((resume, data_top * 6.0))
                    + TriangleMarker::new((0, 0), 6, BLACK.filled())
                    + Text::new(
                        label,
                        (dx(resume, x), -8),
                        mark_font(12, VPos::Bottom, resume, x),
                    )])
                .map_err(draw_err)?;
        }
        if let Some((at, text)) = longest_run_mark(r, p).filter(|(t, _)| (x.0..=x.1).contains(t)) {
            let y = value_at(&shown, at, |s| s.host).map_or(FLOOR, floor);
            let text = if short { String::new() } else { text };
            chart
                .draw_series([EmptyElement::at((at, y))
                    + Circle::new((0, 0), 7, BLACK.stroke_width(2))
                    + Text::new(text, (dx(at, x), 10), mark_font(13, VPos::Top, at, x))])
                .map_err(draw_err)?;
        }
    }
    // Expected last, dashed: it lies on the guest line when all is well.
    let expected = step_lines(&shown, |s| Some(s.expected));
    for (k, line) in expected.into_iter().enumerate() {
        let drawn = chart
            .draw_series(DashedLineSeries::new(line, 8, 5, EXPECTED.stroke_width(2)))
            .map_err(draw_err)?;
        if k == 0 {
            drawn
                .label("expected guest ticks (nominal rate, 0 while paused)")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], EXPECTED.stroke_width(2)));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(if zoom {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperLeft
        })
        .draw()
        .map_err(draw_err)
}

/// One run: the whole run, and a zoom on the worst resume when the record
/// holds its fine steps.
pub(super) fn run_panel(area: &Area, title: &str, r: &Record) -> Result<(), PlotError> {
    let all = steps(r);
    let end_s = all.last().map_or(1.0, |s| s.x1).max(0.001);
    let zoom = zoom_pause(r).filter(|_| all.iter().any(|s| s.fine));
    let Some((i, p)) = zoom else {
        return chart(area, title, r, &all, (0.0, end_s), View::Whole);
    };
    let (top, bottom) = area.split_vertically(area.dim_in_pixel().1 * 11 / 20);
    chart(&top, title, r, &all, (0.0, end_s), View::WholeAboveZoom)?;
    let resume = p.end_ms / 1e3;
    let x = (
        (resume - ZOOM_BEFORE_S).max(0.0),
        (resume + ZOOM_AFTER_S).min(end_s),
    );
    chart(
        &bottom,
        &format!(
            "zoom on resume {} (after a {:.1} s pause)",
            i + 1,
            (p.end_ms - p.start_ms) / 1e3
        ),
        r,
        &all,
        x,
        View::Zoom,
    )
}
