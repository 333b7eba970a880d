//! The bpftrace log panel: all, hv and sw callbacks of each one-second line
//! as steps on a log axis, the nominal rate dashed on top, pauses shaded and
//! each resume labelled with its burst and whether KVM fell back to the sw
//! timer.

use super::run::{rate_label, FLOOR, HEAD_ROOM};
use super::{draw_err, Area, PlotError, EXPECTED, FALLBACK, GUEST, HOST, PAUSE};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use tickburst_analysis::bpftrace::{Interval, LogAnalysis};

/// A log series: name, colour, line width, which counter.
type LogSeries = (&'static str, RGBColor, u32, fn(&Interval) -> u64);

/// A bpftrace log: all, hv and sw per second.
pub(super) fn log_panel(area: &Area, log: &LogAnalysis) -> Result<(), PlotError> {
    let n = (log.intervals.len() as f64).max(1.0);
    let y_top = log
        .intervals
        .iter()
        .map(|i| i.all.max(i.hv).max(i.sw) as f64)
        .fold(log.nominal_per_s.max(10.0), f64::max)
        * HEAD_ROOM;
    let mut chart = ChartBuilder::on(area)
        .caption("bpftrace log: callbacks per second", ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n, (FLOOR..y_top).log_scale())
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("interval (s)")
        .y_desc("callbacks per second (log scale)")
        .y_label_formatter(&rate_label)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(draw_err)?;
    let idx = |line: usize| {
        log.intervals
            .iter()
            .position(|i| i.line == line)
            .unwrap_or(0) as f64
    };
    for p in &log.pauses {
        let start = idx(p.first_zero_line);
        chart
            .draw_series([Rectangle::new(
                [(start, FLOOR), (start + p.zero_intervals as f64, y_top)],
                PAUSE.mix(0.5).filled(),
            )])
            .map_err(draw_err)?;
    }
    let series: [LogSeries; 3] = [
        ("all (advance_periodic_target_expiration)", BLACK, 4, |i| {
            i.all
        }),
        ("hv timer (kvm_lapic_expired_hv_timer)", GUEST, 2, |i| i.hv),
        ("sw timer (apic_timer_fn)", HOST, 2, |i| i.sw),
    ];
    for (name, color, width, get) in series {
        let steps = log.intervals.iter().enumerate().flat_map(|(k, i)| {
            let v = (get(i) as f64).max(FLOOR);
            [(k as f64, v), (k as f64 + 1.0, v)]
        });
        chart
            .draw_series(LineSeries::new(steps, color.stroke_width(width)))
            .map_err(draw_err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 16, y)], color.stroke_width(width))
            });
    }
    for (k, p) in log.pauses.iter().enumerate() {
        let at = idx(p.resume.line);
        let mut text = format!(
            "resume {}: {:.2}x nominal in the first second",
            k + 1,
            p.host_burst_ratio
        );
        if p.fell_back_to_sw {
            text.push_str("; hv timer -> sw timer (fell back)");
        }
        let right = at > n * 0.5;
        let font = ("sans-serif", 12)
            .into_font()
            .color(if p.fell_back_to_sw { &FALLBACK } else { &BLACK })
            .pos(Pos::new(
                if right { HPos::Right } else { HPos::Left },
                VPos::Bottom,
            ));
        let peak = (p.resume.all as f64).max(FLOOR);
        chart
            .draw_series([EmptyElement::at((at + 0.5, peak))
                + Circle::new((0, 0), 6, BLACK.stroke_width(2))
                + Text::new(text, (if right { -10 } else { 10 }, -8), font)])
            .map_err(draw_err)?;
    }
    // Nominal last, dashed.
    chart
        .draw_series(DashedLineSeries::new(
            [
                (0.0, log.nominal_per_s.max(FLOOR)),
                (n, log.nominal_per_s.max(FLOOR)),
            ],
            8,
            5,
            EXPECTED.stroke_width(2),
        ))
        .map_err(draw_err)?
        .label(format!("nominal: {:.0} per second", log.nominal_per_s))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], EXPECTED.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(draw_err)
}
