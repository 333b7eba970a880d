//! The one boundary between a saved record (untrusted: people share them) and
//! the analysis. [`crate::record::Record::load`] and
//! [`crate::record::Record::from_json`] read a record through here; nothing
//! else hands file data to the analysis.
//!
//! Two stages, both bounded in memory and time for any input:
//!
//! 1. while parsing: the file is at most [`MAX_RECORD_BYTES`], and every list
//!    in the record is read by a capped deserializer ([`capped`]) that stops
//!    at its limit, so no list grows past it whatever the text says;
//! 2. after parsing, [`record`]: the sample sets (`samples` and every
//!    `vcpus.list[].samples`) are checked against the limits below and the
//!    invariants the analysis relies on; host marks are put in time order.
//!
//! Its free text that a terminal shows is then escaped and capped
//! ([`MAX_SHOWN_TEXT`]).
//!
//! A record that fails either stage is rejected with one line naming the
//! field ([`ValidateError`]).
//!
//! Tick times are delta-encoded, so they are in order by construction; the
//! only way to make them out of order is to overflow `u64`, which is
//! rejected. Ticks after `end_ns` are kept (the analysis ignores them).

use crate::bounded::BoundedTicks;
use crate::figures::PauseSpan;
use crate::irq_runs::HostEvents;
use crate::record::Record;
use crate::samples::{last_tick, RawSamples};

pub use crate::limits::*;
use thiserror::Error;

/// Why a record is not valid (after it parsed as JSON).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ValidateError {
    /// A number outside its allowed range.
    #[error("{field} is {value} (allowed {allowed})")]
    OutOfRange {
        /// The field, as a path (`samples.interval_ns`).
        field: String,
        /// Its value.
        value: u64,
        /// The allowed range, in words.
        allowed: &'static str,
    },
    /// More report windows than [`MAX_WINDOWS`].
    #[error("{prefix}.end_ns {end_ns} at {prefix}.interval_ns {interval_ns} makes {windows} report windows (allowed at most {MAX_WINDOWS})")]
    TooManyWindows {
        /// The sample set (`samples`, `vcpus.list[1].samples`).
        prefix: String,
        /// `end_ns`.
        end_ns: u64,
        /// `interval_ns`.
        interval_ns: u64,
        /// Windows it makes.
        windows: u64,
    },
    /// A list longer than its limit.
    #[error("{field} has {count} entries (allowed at most {max})")]
    TooMany {
        /// The list.
        field: String,
        /// Its length.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Tick times past `u64`.
    #[error("{0}: tick times overflow u64 (the sum of the deltas)")]
    TickOverflow(String),
    /// A pause that is not a span inside the run, in order.
    #[error("{field}[{index}] [{start_ns}, {end_ns}] is not a span inside the run after the previous pause (run ends at {run_end_ns})")]
    BadPause {
        /// The list (`samples.pauses`).
        field: String,
        /// 0-based index.
        index: usize,
        /// Its start.
        start_ns: u64,
        /// Its end.
        end_ns: u64,
        /// `end_ns` of the sample set.
        run_end_ns: u64,
    },
    /// The per-event host samples are inconsistent.
    #[error("{field}: {why}")]
    HostEvents {
        /// `samples.host_events`.
        field: String,
        /// What is wrong.
        why: String,
    },
    /// hv/sw switches out of time order.
    #[error("host.timer_backend.switches[{0}] is earlier than the switch before it")]
    SwitchesUnsorted(usize),
    /// A list cut off while parsing (see [`capped`]); the text names it.
    #[error("{0}")]
    Capped(String),
    /// A version-3 summary that disagrees with itself; the text names the
    /// field.
    #[error("{0}")]
    Inconsistent(String),
}

fn in_range(
    field: impl Into<String>,
    value: u64,
    (lo, hi): (u64, u64),
    allowed: &'static str,
) -> Result<(), ValidateError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(ValidateError::OutOfRange {
            field: field.into(),
            value,
            allowed,
        })
    }
}

fn at_most(field: impl Into<String>, count: usize, max: usize) -> Result<(), ValidateError> {
    if count <= max {
        Ok(())
    } else {
        Err(ValidateError::TooMany {
            field: field.into(),
            count,
            max,
        })
    }
}

/// Checks one sample set (`prefix` names it in errors) and puts its host
/// marks in time order. Returns its number of ticks.
pub fn samples(s: &mut RawSamples, prefix: &str) -> Result<usize, ValidateError> {
    in_range(
        format!("{prefix}.period_ns"),
        s.period_ns,
        PERIOD_RANGE_NS,
        "1us..1s",
    )?;
    in_range(
        format!("{prefix}.interval_ns"),
        s.interval_ns,
        INTERVAL_RANGE_NS,
        "10ms..60s",
    )?;
    in_range(
        format!("{prefix}.end_ns"),
        s.end_ns,
        (0, MAX_RUN_NS),
        "0..7 days",
    )?;
    let windows = s.end_ns.div_ceil(s.interval_ns);
    if windows > MAX_WINDOWS {
        return Err(ValidateError::TooManyWindows {
            prefix: prefix.into(),
            end_ns: s.end_ns,
            interval_ns: s.interval_ns,
            windows,
        });
    }
    at_most(
        format!("{prefix}.tick_deltas_ns"),
        s.tick_deltas_ns.len(),
        MAX_TICKS,
    )?;
    last_tick(&s.tick_deltas_ns)
        .map_err(|_| ValidateError::TickOverflow(format!("{prefix}.tick_deltas_ns")))?;
    pause_spans(&s.pauses, s.end_ns, &format!("{prefix}.pauses"))?;
    at_most(
        format!("{prefix}.host_marks"),
        s.host_marks.len(),
        MAX_HOST_MARKS,
    )?;
    if !s.host_marks.is_sorted_by_key(|m| m.t_ns) {
        s.host_marks.sort_by_key(|m| m.t_ns);
    }
    if let Some(e) = &s.host_events {
        host_events(e, &format!("{prefix}.host_events"))?;
    }
    if let Some(b) = &s.bounded {
        bounded(b, s, windows, &format!("{prefix}.bounded"))?;
    }
    Ok(s.tick_deltas_ns.len())
}

/// Checks a version-3 summary against its sample set.
fn bounded(
    b: &BoundedTicks,
    s: &RawSamples,
    windows: u64,
    prefix: &str,
) -> Result<(), ValidateError> {
    at_most(
        format!("{prefix}.window_ticks"),
        b.window_ticks.len(),
        windows as usize,
    )?;
    pause_spans(&b.kept_spans, s.end_ns, &format!("{prefix}.kept_spans"))?;
    let acc = &b.steady;
    let order = match (acc.first_ns, acc.last_ns) {
        (Some(f), Some(l)) => f <= l && l <= s.end_ns && acc.ticks >= 1,
        (None, None) => acc.ticks == 0,
        _ => false,
    };
    if !order || acc.ticks > b.ticks_total || acc.intervals.total() > acc.ticks {
        return Err(ValidateError::Inconsistent(format!(
            "{prefix}.steady: first/last tick, ticks and intervals disagree"
        )));
    }
    if b.ticks_total < s.tick_deltas_ns.len() as u64 {
        return Err(ValidateError::Inconsistent(format!(
            "{prefix}.ticks_total is less than the ticks stored"
        )));
    }
    Ok(())
}

/// Checks pause spans: at most [`MAX_PAUSES`], each `start <= end`, in order,
/// not overlapping, inside `[0, run_end_ns]`.
pub fn pause_spans(spans: &[PauseSpan], run_end_ns: u64, field: &str) -> Result<(), ValidateError> {
    at_most(field, spans.len(), MAX_PAUSES)?;
    let mut prev_end = 0;
    for (index, p) in spans.iter().enumerate() {
        if p.end_ns < p.start_ns || p.start_ns < prev_end || p.end_ns > run_end_ns {
            return Err(ValidateError::BadPause {
                field: field.into(),
                index,
                start_ns: p.start_ns,
                end_ns: p.end_ns,
                run_end_ns,
            });
        }
        prev_end = p.end_ns;
    }
    Ok(())
}

/// Checks per-event host samples: bounded lists, then
/// [`HostEvents::validate`] (sorted, runs of at least one callback).
pub fn host_events(e: &HostEvents, field: &str) -> Result<(), ValidateError> {
    at_most(format!("{field}.sw_runs"), e.sw_runs.len(), MAX_HOST_EVENTS)?;
    at_most(format!("{field}.hv_ns"), e.hv_ns.len(), MAX_HOST_EVENTS)?;
    e.validate().map_err(|why| ValidateError::HostEvents {
        field: field.into(),
        why,
    })
}

/// Validates a parsed record in place: every sample set, the total number
/// of ticks, the vCPU list and the hv/sw switches. After this the analysis
/// runs in memory and time bounded by the limits above.
pub fn record(r: &mut Record) -> Result<(), ValidateError> {
    let mut total = samples(&mut r.samples, "samples")?;
    if let Some(v) = &mut r.vcpus {
        at_most("vcpus.list", v.list.len(), MAX_VCPUS)?;
        at_most("vcpus.paused", v.paused.len(), MAX_VCPUS)?;
        for (i, row) in v.list.iter_mut().enumerate() {
            total = total.saturating_add(samples(
                &mut row.samples,
                &format!("vcpus.list[{i}].samples"),
            )?);
        }
    }
    // The subject's ticks are also one vCPU's: twice the limit in all.
    at_most("ticks of all sample sets together", total, 2 * MAX_TICKS)?;
    at_most("config.pause_vcpus", r.config.pause_vcpus.len(), MAX_VCPUS)?;
    if let Some(b) = &r.host.timer_backend {
        at_most(
            "host.timer_backend.switches",
            b.switches.len(),
            MAX_SWITCHES,
        )?;
        if let Some(i) = b.switches.windows(2).position(|w| w[1].0 < w[0].0) {
            return Err(ValidateError::SwitchesUnsorted(i + 1));
        }
    }
    shown_text(r);
    Ok(())
}

/// Most characters of a record's free text that reaches a terminal.
pub const MAX_SHOWN_TEXT: usize = 500;

/// The free text of a record that a summary or report prints (`error`,
/// the back end's and the probes' reasons) made safe for a terminal, once,
/// here: control characters escaped (a newline cannot forge an output line,
/// an escape sequence cannot reach the terminal), at most
/// [`MAX_SHOWN_TEXT`] characters.
fn shown_text(r: &mut Record) {
    let safe = |t: &mut String| {
        if t.len() > MAX_SHOWN_TEXT || t.chars().any(char::is_control) {
            *t = one_line(t, MAX_SHOWN_TEXT);
        }
    };
    if let Some(e) = &mut r.error {
        safe(e);
    }
    if let Some(reason) = r
        .host
        .timer_backend
        .as_mut()
        .and_then(|b| b.reason.as_mut())
    {
        safe(reason);
    }
    if let Some(p) = &mut r.host.probes {
        p.missing.iter_mut().for_each(|m| safe(&mut m.reason));
    }
}
