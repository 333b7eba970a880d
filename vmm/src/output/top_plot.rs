//! `top --plot FILE.svg`: sw callbacks and hv expiries per second of every
//! vCPU over the session, drawn at the end (also after Ctrl-C) and written
//! atomically. Each interval is a step at its real width on a log axis (a
//! normal second and a storm are both readable); the most callbacks in one
//! interrupt of each vCPU is ringed and labelled, and a fall-back from the hv
//! to the sw timer is a dashed line.

use crate::output::plot::{write_svg, PlotError};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::BTreeMap;
use std::path::Path;
use tickburst_analysis::top::TopRow;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 520;
/// A rate of 0 is drawn here (the bottom of the log axis).
const FLOOR: f64 = 0.5;
/// Head room above the highest step (a factor on the log axis) for the
/// legend.
const HEAD_ROOM: f64 = 300.0;
/// A run of more callbacks than this in one interrupt is ringed.
const STORM_RUN: u64 = 1;
const FALLBACK: RGBColor = RGBColor(148, 0, 211);

fn draw_err<E: std::fmt::Debug>(e: E) -> PlotError {
    PlotError::Draw(format!("{e:?}"))
}

/// A series: label, steps (t0_s, t1_s, per_s) and its biggest run in one
/// interrupt (t_mid_s, per_s of that step, callbacks).
struct Series {
    name: String,
    steps: Vec<(f64, f64, f64)>,
    worst_run: Option<(f64, f64, u64)>,
}

/// What a series counts.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Signal {
    /// sw timer callbacks (where runs in one interrupt happen).
    Sw,
    /// hv timer expiries.
    Hv,
    /// LAPIC interrupts the guest accepted.
    Irq,
}

/// The series of the rows: per (pid, vCPU) its sw and, where measured, hv
/// and the interrupts the guest accepted.
fn series(rows: &[TopRow]) -> Vec<Series> {
    let mut by: BTreeMap<(u32, u32, Signal), Series> = BTreeMap::new();
    for r in rows {
        for (signal, v) in [
            (Signal::Sw, r.sw_per_s),
            (Signal::Hv, r.hv_per_s),
            (Signal::Irq, r.irq_per_s),
        ] {
            let Some(v) = v else { continue };
            let kind = match signal {
                Signal::Sw => "sw",
                Signal::Hv => "hv",
                Signal::Irq => "guest irq",
            };
            let s = by.entry((r.pid, r.vcpu, signal)).or_insert_with(|| Series {
                name: format!("{} {} vCPU {} {kind}/s", r.pid, r.name, r.vcpu),
                steps: Vec::new(),
                worst_run: None,
            });
            let (t0, t1) = (r.t_s, r.t_s + r.interval_s);
            s.steps.push((t0, t1, v));
            // Runs are sw callbacks.
            if let (Signal::Sw, Some(n)) = (signal, r.longest_run.filter(|&n| n > STORM_RUN)) {
                if s.worst_run.is_none_or(|w| n > w.2) {
                    s.worst_run = Some(((t0 + t1) / 2.0, v, n));
                }
            }
        }
    }
    by.into_values().collect()
}

/// The falls back to sw: (s since start, who).
fn fallbacks(rows: &[TopRow]) -> Vec<(f64, String)> {
    let mut seen: BTreeMap<(u32, u32), (f64, String)> = BTreeMap::new();
    for r in rows {
        if let Some(t) = r.fell_back_at_s {
            seen.entry((r.pid, r.vcpu))
                .or_insert_with(|| (t, format!("{} {} vCPU {}", r.pid, r.name, r.vcpu)));
        }
    }
    seen.into_values().collect()
}

/// The outline of steps (a gap between intervals breaks the line).
fn outlines(steps: &[(f64, f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut lines: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut prev_end: Option<f64> = None;
    for &(t0, t1, v) in steps {
        let v = v.max(FLOOR);
        let joined = prev_end.is_some_and(|e| (t0 - e).abs() < 1e-6);
        match lines.last_mut() {
            Some(line) if joined => line.extend([(t0, v), (t1, v)]),
            _ => lines.push(vec![(t0, v), (t1, v)]),
        }
        prev_end = Some(t1);
    }
    lines
}

/// `1`, `10`, `1k`, `1M`; the floor reads `0`.
fn rate_label(v: &f64) -> String {
    match *v {
        v if v <= FLOOR * 1.01 => "0".into(),
        v if v >= 1e6 => format!("{:.0}M", v / 1e6),
        v if v >= 1e3 => format!("{:.0}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// Draws the rows into an SVG string.
pub fn render(rows: &[TopRow]) -> Result<String, PlotError> {
    let all = series(rows);
    let t_max = rows
        .iter()
        .map(|r| r.t_s + r.interval_s)
        .fold(1.0, f64::max);
    let y_top = all
        .iter()
        .flat_map(|s| s.steps.iter().map(|&(_, _, y)| y))
        .fold(10.0, f64::max)
        * HEAD_ROOM;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("tickburst top: LAPIC timer per vCPU", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..t_max, (FLOOR..y_top).log_scale())
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("time since top started (s); one step per interval")
            .y_desc("per second (log scale)")
            .y_label_formatter(&rate_label)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(draw_err)?;
        let mut worst = Vec::new();
        for (k, s) in all.into_iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            for (i, line) in outlines(&s.steps).into_iter().enumerate() {
                let drawn = chart
                    .draw_series(LineSeries::new(line, color.stroke_width(2)))
                    .map_err(draw_err)?;
                if i == 0 {
                    drawn.label(s.name.clone()).legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                    });
                }
            }
            worst.extend(s.worst_run);
        }
        for (t, who) in fallbacks(rows) {
            chart
                .draw_series(DashedLineSeries::new(
                    [(t, FLOOR), (t, y_top)],
                    6,
                    4,
                    FALLBACK.stroke_width(2),
                ))
                .map_err(draw_err)?
                .label(format!("{who}: KVM fell back from the hv to the sw timer"))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], FALLBACK.stroke_width(2)));
        }
        for (t, v, n) in worst {
            let right = t > t_max * 0.66;
            let font = ("sans-serif", 13).into_font().color(&BLACK).pos(Pos::new(
                if right { HPos::Right } else { HPos::Left },
                VPos::Bottom,
            ));
            chart
                .draw_series([EmptyElement::at((t, v.max(FLOOR)))
                    + Circle::new((0, 0), 7, BLACK.stroke_width(2))
                    + Text::new(
                        format!("{n} callbacks in one interrupt"),
                        (if right { -10 } else { 10 }, -8),
                        font,
                    )])
                .map_err(draw_err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Draws and writes atomically.
pub fn write(path: &Path, rows: &[TopRow]) -> Result<(), PlotError> {
    write_svg(path, &render(rows)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickburst_analysis::top::Backend;

    #[test]
    fn one_line_per_vcpu_and_signal() {
        let row = |t_s: f64, vcpu: u32, hv: Option<f64>| TopRow {
            t_s,
            interval_s: 1.0,
            pid: 9,
            name: "vm".into(),
            vcpu,
            hv_per_s: hv,
            sw_per_s: Some(1000.0),
            backend: Backend::Sw,
            left_hv: Some(0),
            longest_run: Some(1),
            ..TopRow::default()
        };
        let rows = [row(0.0, 0, None), row(1.0, 0, None), row(0.0, 1, Some(5.0))];
        assert_eq!(series(&rows).len(), 3);
        let svg = render(&rows).unwrap();
        let texts = tickburst_testkit::svg::svg_texts(&svg);
        assert!(texts.iter().any(|t| t == "9 vm vCPU 0 sw/s"), "{texts:?}");
        assert!(texts.iter().any(|t| t == "9 vm vCPU 1 hv/s"), "{texts:?}");
        assert!(render(&[]).is_ok());
    }

    #[test]
    fn storm_ringed_and_fallback_dashed_on_a_log_axis() {
        let row = |t_s: f64, sw: f64, run: u64, fell: Option<f64>| TopRow {
            t_s,
            interval_s: 1.0,
            pid: 7,
            name: "guest".into(),
            tid: Some(8),
            hv_per_s: Some(if fell.is_some() { 0.0 } else { 1000.0 }),
            sw_per_s: Some(sw),
            irq_per_s: Some(1000.0),
            backend: Backend::Sw,
            left_hv: Some(0),
            longest_run: Some(run),
            fell_back_at_s: fell,
            ..TopRow::default()
        };
        let rows = [
            row(0.0, 0.0, 0, None),
            row(1.0, 11000.0, 9999, Some(1.2)),
            row(2.0, 1000.0, 1, Some(1.2)),
        ];
        let svg = render(&rows).unwrap();
        let texts = tickburst_testkit::svg::svg_texts(&svg);
        tickburst_testkit::svg::assert_has_texts(
            &texts,
            &[
                "per second (log scale)",
                "9999 callbacks in one interrupt",
                "7 guest vCPU 0: KVM fell back from the hv to the sw timer",
                "7 guest vCPU 0 guest irq/s",
                "10k",
            ],
        );
    }
}
