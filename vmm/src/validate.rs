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
//! A record that fails either stage is rejected with one line naming the
//! field ([`ValidateError`]).
//!
//! Tick times are delta-encoded, so they are in order by construction; the
//! only way to make them out of order is to overflow `u64`, which is
//! rejected. Ticks after `end_ns` are kept (the analysis ignores them).

use crate::analysis::PauseSpan;
use crate::irq_runs::HostEvents;
use crate::record::Record;
use crate::samples::{decode_ticks, RawSamples};
use serde::de::{Deserialize, Deserializer, Error as _, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;
use thiserror::Error;

const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000 * MS;

/// Largest record file read, bytes (64 MiB; real records are 0.5-2 MB).
pub const MAX_RECORD_BYTES: u64 = 64 << 20;
/// Allowed timer period, ns (1 us to 1 s, as the command line allows).
pub const PERIOD_RANGE_NS: (u64, u64) = (1_000, SECOND);
/// Allowed report window, ns (10 ms to 60 s, as the command line allows).
pub const INTERVAL_RANGE_NS: (u64, u64) = (10 * MS, 60 * SECOND);
/// Longest run a record may claim, ns (7 days).
pub const MAX_RUN_NS: u64 = 7 * 24 * 3_600 * SECOND;
/// Most report windows (`end_ns / interval_ns`, rounded up).
pub const MAX_WINDOWS: u64 = 500_000;
/// Most ticks in one sample set, and in the whole record together.
pub const MAX_TICKS: usize = 10_000_000;
/// Most pauses in one record.
pub const MAX_PAUSES: usize = 10_000;
/// Most host marks (one per 10 ms: 2.7 hours).
pub const MAX_HOST_MARKS: usize = 1_000_000;
/// Most sampled host events of each kind (`sw_runs`, `hv_ns`).
pub const MAX_HOST_EVENTS: usize = MAX_TICKS;
/// Most hv/sw switches (`host.timer_backend.switches`).
pub const MAX_SWITCHES: usize = 2 * MAX_TICKS;
/// Most vCPUs (`vcpus.list`, `config.pause_vcpus`): the guest's limit.
pub const MAX_VCPUS: usize = crate::arch::layout::MAX_VCPUS as usize;
/// Most entries of the other lists of a record (stored figures that are
/// recomputed, sweep rows, detected pauses, pause lengths).
pub const MAX_OTHER_LIST: usize = MAX_WINDOWS as usize;

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
}

/// What [`capped`] reports when a list is longer than its limit: the start
/// of the parse error's text, so the loader can tell it from bad JSON.
pub const CAPPED_MARK: &str = "list too long: ";

/// Reads a JSON list, failing as soon as it has more than `max` entries
/// (`what` names it in the error). Memory stays within `max` entries
/// whatever the text holds.
pub fn capped<'de, D, T>(d: D, max: usize, what: &'static str) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Capped<T> {
        max: usize,
        what: &'static str,
        marker: PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Capped<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a list of at most {} entries ({})", self.max, self.what)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(x) = seq.next_element()? {
                if out.len() >= self.max {
                    return Err(A::Error::custom(format_args!(
                        "{CAPPED_MARK}{} has more than {} entries (allowed at most {})",
                        self.what, self.max, self.max
                    )));
                }
                out.push(x);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Capped {
        max,
        what,
        marker: PhantomData,
    })
}

macro_rules! capped_lists {
    ($($name:ident: $max:expr, $what:literal;)*) => {$(
        #[doc = concat!("Reads `", $what, "` with [`capped`] (limit `", stringify!($max), "`).")]
        pub fn $name<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
        where
            D: Deserializer<'de>,
            T: Deserialize<'de>,
        {
            capped(d, $max, $what)
        }
    )*};
}

capped_lists! {
    ticks: MAX_TICKS, "tick_deltas_ns";
    pauses: MAX_PAUSES, "pauses";
    host_marks: MAX_HOST_MARKS, "host_marks";
    events: MAX_HOST_EVENTS, "host_events.sw_runs / hv_ns";
    switches: MAX_SWITCHES, "host.timer_backend.switches";
    vcpu_list: MAX_VCPUS, "vcpus list";
    other: MAX_OTHER_LIST, "list";
}

/// [`other`] for an optional list.
pub fn other_opt<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Wrap<T>(Vec<T>);
    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Wrap<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            other(d).map(Wrap)
        }
    }
    Ok(Option::<Wrap<T>>::deserialize(d)?.map(|w| w.0))
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
    decode_ticks(&s.tick_deltas_ns)
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
    Ok(s.tick_deltas_ns.len())
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
    Ok(())
}

/// `text` made safe for the one line of an error: control characters (a
/// newline in a crafted string) escaped, at most `max` characters kept.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
