//! The sweep panel: the burst in the first second after each resume against
//! the pause length, guest and host, with the fitted lines, the nominal count
//! (no burst) dashed on top and the pauses judged a burst ringed.

use super::{draw_err, legend, Area, PlotError, EXPECTED, GUEST, HOST};
use plotters::prelude::*;
use tickburst_analysis::sweep::{LineFit, SweepRow, SweepSummary};

/// A sweep series: name, colour, points (pause s, count, judged a burst),
/// fitted line.
type SweepSeries<'a> = (
    &'a str,
    RGBColor,
    Vec<(f64, f64, bool)>,
    Option<&'a LineFit>,
);

/// The verdict a sweep row carries when its pause was a burst.
const BURST: &str = "burst";

/// `1200` rather than `1200.0`; thousands as `12k`.
fn count_label(v: &f64) -> String {
    match v.abs() {
        a if a >= 10_000.0 => format!("{:.0}k", v / 1e3),
        _ => format!("{v:.0}"),
    }
}

/// Burst against pause length, with the fitted lines.
pub(super) fn sweep_panel(area: &Area, s: &SweepSummary) -> Result<(), PlotError> {
    let x_max = s.rows.iter().map(|r| r.pause_s).fold(0.1, f64::max) * 1.1;
    let y_of = |r: &SweepRow| r.host_first_1s.unwrap_or(0).max(r.guest_first_1s) as f64;
    let y_max = s
        .rows
        .iter()
        .map(y_of)
        .fold(s.nominal_hz, f64::max)
        .max(1.0)
        * 1.45;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "burst against pause length (a stall grows with the pause; a fixed kernel stays at nominal)",
            ("sans-serif", 17),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("pause length (s)")
        .y_desc("events in the first second after resume")
        .y_label_formatter(&count_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(draw_err)?;
    let burst = |r: &SweepRow| r.verdict == BURST;
    let series: [SweepSeries; 2] = [
        (
            "host timer callbacks (sw + hv)",
            HOST,
            s.rows
                .iter()
                .filter_map(|r| r.host_first_1s.map(|h| (r.pause_s, h as f64, burst(r))))
                .collect(),
            s.host_fit.as_ref(),
        ),
        (
            "guest timer ticks",
            GUEST,
            s.rows
                .iter()
                .map(|r| (r.pause_s, r.guest_first_1s as f64, burst(r)))
                .collect(),
            s.guest_fit.as_ref(),
        ),
    ];
    for (name, color, points, fit) in series {
        if points.is_empty() {
            continue;
        }
        if let Some(f) = fit {
            let line = [(0.0, f.intercept), (x_max, f.intercept + f.slope * x_max)];
            chart
                .draw_series(LineSeries::new(line, color.mix(0.7).stroke_width(2)))
                .map_err(draw_err)?
                .label(format!(
                    "{name} fit: slope {:+.1} per paused second, R^2 {}",
                    f.slope,
                    f.r_squared
                        .map_or_else(|| "n/a".into(), |r| format!("{r:.3}"))
                ))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&(x, y, _)| Circle::new((x, y), 5, color.filled())),
            )
            .map_err(draw_err)?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
    }
    let ringed: Vec<(f64, f64)> = s
        .rows
        .iter()
        .filter(|r| burst(r))
        .flat_map(|r| {
            std::iter::once((r.pause_s, r.guest_first_1s as f64))
                .chain(r.host_first_1s.map(|h| (r.pause_s, h as f64)))
        })
        .collect();
    if !ringed.is_empty() {
        chart
            .draw_series(
                ringed
                    .into_iter()
                    .map(|p| Circle::new(p, 9, BLACK.stroke_width(2))),
            )
            .map_err(draw_err)?
            .label("pause judged a burst")
            .legend(|(x, y)| Circle::new((x + 8, y), 6, BLACK.stroke_width(2)));
    }
    // Nominal last, dashed: the count of a second with no burst.
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, s.nominal_hz), (x_max, s.nominal_hz)],
            8,
            5,
            EXPECTED.stroke_width(2),
        ))
        .map_err(draw_err)?
        .label(format!("nominal: {:.0} in 1 s (no burst)", s.nominal_hz))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], EXPECTED.stroke_width(2)));
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}
