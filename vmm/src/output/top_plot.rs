//! `top --plot FILE.svg`: sw callbacks and hv expiries per second of every
//! vCPU over the session (one line each), drawn
//! with plotters at the end (also after Ctrl-C) and written atomically.

use crate::output::plot::{write_svg, PlotError};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;
use tickburst_analysis::top::TopRow;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 480;

fn draw_err<E: std::fmt::Debug>(e: E) -> PlotError {
    PlotError::Draw(format!("{e:?}"))
}

/// A series: label and (t_s, per_s) points.
type Series = (String, Vec<(f64, f64)>);

/// The series of the rows: per (pid, vCPU) its sw and, where measured, hv.
fn series(rows: &[TopRow]) -> Vec<Series> {
    let mut by: BTreeMap<(u32, u32, bool), Series> = BTreeMap::new();
    for r in rows {
        let mid = r.t_s + r.interval_s / 2.0;
        for (hv, v) in [(false, r.sw_per_s), (true, r.hv_per_s)] {
            if let Some(v) = v {
                let kind = if hv { "hv" } else { "sw" };
                by.entry((r.pid, r.vcpu, hv))
                    .or_insert_with(|| {
                        (
                            format!("{} {} vCPU {} {kind}/s", r.pid, r.name, r.vcpu),
                            Vec::new(),
                        )
                    })
                    .1
                    .push((mid, v));
            }
        }
    }
    by.into_values().collect()
}

/// Draws the rows into an SVG string.
pub fn render(rows: &[TopRow]) -> Result<String, PlotError> {
    let all = series(rows);
    let t_max = rows
        .iter()
        .map(|r| r.t_s + r.interval_s)
        .fold(1.0, f64::max);
    let y_max = all
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold(1.0, f64::max)
        * 1.2;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("tickburst top: LAPIC timer per vCPU", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("time since top started (s)")
            .y_desc("per second")
            .draw()
            .map_err(draw_err)?;
        for (k, (name, points)) in all.into_iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(draw_err)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
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
            tid: None,
            hv_per_s: hv,
            sw_per_s: Some(1000.0),
            irq_per_s: None,
            backend: Backend::Sw,
            switches: 0,
            longest_run: Some(1),
            longest_run_late_ms: None,
            longest_run_us: None,
            sw_lost: 0,
            fell_back_at_s: None,
            flags: vec![],
        };
        let rows = [row(0.0, 0, None), row(1.0, 0, None), row(0.0, 1, Some(5.0))];
        assert_eq!(series(&rows).len(), 3);
        let svg = render(&rows).unwrap();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
        let texts: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        assert!(texts.contains(&"9 vm vCPU 0 sw/s"), "{texts:?}");
        assert!(texts.contains(&"9 vm vCPU 1 hv/s"), "{texts:?}");
        assert!(render(&[]).is_ok());
    }
}
