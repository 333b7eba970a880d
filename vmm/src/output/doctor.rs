//! The doctor's findings as a table.

use crate::session::doctor::DoctorReport;

/// The doctor's table.
pub fn table(report: &DoctorReport) -> String {
    let width = report.items.iter().map(|i| i.name.len()).max().unwrap_or(0);
    report
        .items
        .iter()
        .map(|i| {
            format!(
                "{} {:width$}  {}  -- {}",
                if i.ok { "ok " } else { "-- " },
                i.name,
                i.value,
                i.consequence
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
