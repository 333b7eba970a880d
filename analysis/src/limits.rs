//! The limits of a saved record and the capped deserializers that hold its
//! lists to them while parsing (stage 1 of `validate`).

use serde::de::{Deserialize, Deserializer, Error as _, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000 * MS;

/// Largest record file read, bytes: 1 KiB for each of [`MAX_WINDOWS`]
/// report windows (488 MiB). A window of a record costs ~330 bytes with
/// host probes, and 6 more per vCPU; a record of minutes is 0.1-2 MB.
pub const MAX_RECORD_BYTES: u64 = MAX_WINDOWS * 1024;
/// Allowed timer period, ns (1 us to 1 s, as the command line allows).
pub const PERIOD_RANGE_NS: (u64, u64) = (1_000, SECOND);
/// Allowed report window, ns (10 ms to 60 s, as the command line allows).
pub const INTERVAL_RANGE_NS: (u64, u64) = (10 * MS, 60 * SECOND);
/// Longest run a record may claim, ns (7 days).
pub const MAX_RUN_NS: u64 = 7 * 24 * 3_600 * SECOND;
/// Most report windows (`end_ns / interval_ns`, rounded up).
pub const MAX_WINDOWS: u64 = 500_000;
/// The longest run a record holds at report windows of `interval_ns`:
/// [`MAX_WINDOWS`] windows, at most [`MAX_RUN_NS`]. The command line refuses
/// a longer planned run, and a `watch` without `--duration` ends there.
pub fn longest_run_ns(interval_ns: u64) -> u64 {
    interval_ns.saturating_mul(MAX_WINDOWS).min(MAX_RUN_NS)
}
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
/// Most vCPUs (`vcpus.list`, `config.pause_vcpus`): the guest's limit
/// (`guest_payload::abi::MAX_VCPUS`; the `tickburst` crate asserts they agree).
pub const MAX_VCPUS: usize = 64;
/// Most entries of the other lists of a record (stored figures that are
/// recomputed, sweep rows, detected pauses, pause lengths).
pub const MAX_OTHER_LIST: usize = MAX_WINDOWS as usize;

/// Most memory the lists of one record take together while it is read,
/// bytes (each entry counted at its size in memory). By the limits above,
/// the largest record tickburst writes holds 500 000 report windows (96
/// bytes each: 48 MB) and 10^6 host marks (56 bytes: 56 MB) besides its
/// 2^18 kept ticks (2 MB); a format-2 record of 10^7 ticks (80 MB) with
/// 10^6 marks, ~140 MB. Each list has its own limit as well; this one
/// bounds them all together, so no mix of long lists costs more.
pub const MAX_LIST_BYTES: usize = 160 << 20;

thread_local! {
    /// The bytes the lists of the record being read on this thread take so
    /// far; `None` where no record is being read (nothing is counted).
    static LIST_BYTES: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Counts the lists' memory against [`MAX_LIST_BYTES`] while `parse` reads
/// one record on this thread.
pub fn with_list_budget<R>(parse: impl FnOnce() -> R) -> R {
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            LIST_BYTES.set(None);
        }
    }
    LIST_BYTES.set(Some(0));
    let _disarm = Disarm;
    parse()
}

/// Charges one list entry of `size` bytes to the record being read: `Err`
/// with the text of the error once the lists together pass
/// [`MAX_LIST_BYTES`].
fn charge(size: usize, what: &str) -> Result<(), String> {
    match LIST_BYTES.get() {
        None => Ok(()),
        Some(used) if used.saturating_add(size) > MAX_LIST_BYTES => Err(format!(
            "{CAPPED_MARK}the lists of the record take more than {} MiB together (reading {what})",
            MAX_LIST_BYTES >> 20
        )),
        Some(used) => {
            LIST_BYTES.set(Some(used + size));
            Ok(())
        }
    }
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
                charge(std::mem::size_of::<T>(), self.what).map_err(A::Error::custom)?;
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
    window_ticks: MAX_OTHER_LIST, "samples.bounded.window_ticks";
    pause_lengths: MAX_OTHER_LIST, "config.pause_lengths_ms";
    windows: MAX_OTHER_LIST, "windows";
}

/// The optional list `detected`, read with [`capped`].
pub fn detected_opt<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Wrap<T>(Vec<T>);
    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Wrap<T> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            capped(d, MAX_OTHER_LIST, "detected").map(Wrap)
        }
    }
    Ok(Option::<Wrap<T>>::deserialize(d)?.map(|w| w.0))
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
