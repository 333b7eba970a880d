//! Reads the per-second log of the bug report's bpftrace script and judges
//! it with the same rules as a live run (`tickburst analyze --from-bpftrace`).
//!
//! Input: lines holding `all_count N`, `hv_timer N` and `sw_timer N` (any
//! whitespace between and around; every other line is ignored), one line per
//! second. A pause is a run of lines with `all_count 0` between lines with
//! timer activity. For each pause:
//!
//! - nominal rate: the median `all_count` of the lines before the first pause,
//!   leaving out the line right before the pause (the pause starts inside it);
//! - host burst ratio: `all_count` of the first line after the pause (the
//!   second the resume falls in) over the nominal rate;
//! - hv timer in use before: any `hv_timer` > 0 before the pause;
//! - fallback: hv was in use before, and every line after the resume line has
//!   `hv_timer 0` and `sw_timer` > 0 (needs at least one such line).

use crate::verdict::Evidence;
use serde::Serialize;
use thiserror::Error;

/// Why a log cannot be judged.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BpftraceError {
    /// No line had all three counters.
    #[error("no 'all_count N  hv_timer N  sw_timer N' line found")]
    NoLines,
    /// No run of zero lines between active lines.
    #[error("no pause found (no line with all_count 0 between lines with timer activity)")]
    NoPause,
    /// The timer never ran before the pause.
    #[error("no timer activity before the pause: cannot tell the nominal rate")]
    NoRate,
    /// More pauses than [`MAX_PAUSES`]: not a log of a pause experiment.
    #[error("more than {MAX_PAUSES} pauses (runs of all_count 0 lines): not judged")]
    TooManyPauses,
    /// The log could not be read.
    #[error("{0}")]
    Io(String),
}

/// One line of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Interval {
    /// 1-based line number in the input.
    pub line: usize,
    /// `advance_periodic_target_expiration` calls (all).
    pub all: u64,
    /// `kvm_lapic_expired_hv_timer` calls.
    pub hv: u64,
    /// `apic_timer_fn` calls.
    pub sw: u64,
}

/// One pause found in the log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogPause {
    /// Line of the first zero interval.
    pub first_zero_line: usize,
    /// Number of zero intervals.
    pub zero_intervals: usize,
    /// Estimated pause length, s: the zero intervals plus the idle part of
    /// the interval before them.
    pub estimated_s: f64,
    /// The interval the resume falls in.
    pub resume: Interval,
    /// `resume.all` over nominal.
    pub host_burst_ratio: f64,
    /// Whether the hv timer ran before this pause.
    pub hv_before: bool,
    /// hv before, only sw afterwards.
    pub fell_back_to_sw: bool,
    /// Seconds from the log's first interval to the resume interval.
    pub resume_s: f64,
}

/// The whole log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogAnalysis {
    /// The intervals read, the first [`MAX_KEPT_INTERVALS`] of them.
    pub intervals: Vec<Interval>,
    /// Intervals read in all (shown in JSON only when some were not kept).
    #[serde(skip_serializing_if = "Self::all_kept")]
    pub intervals_total: usize,
    /// Nominal callbacks per second.
    pub nominal_per_s: f64,
    /// Each pause.
    pub pauses: Vec<LogPause>,
}

/// Longest line looked at, bytes; the rest of a longer line is skipped (a
/// counter line is about 50 bytes).
pub const MAX_LINE_BYTES: usize = 4096;
/// Most intervals kept for the picture and the JSON details (the first
/// ones: almost 3 hours of per-second lines); the analysis sees every line.
pub const MAX_KEPT_INTERVALS: usize = 10_000;
/// Most lines before the first pause the nominal rate is the median of
/// (the last ones before it: an hour of per-second lines).
pub const NOMINAL_LINES: usize = 3_600;
/// Most pauses in one log.
pub const MAX_PAUSES: usize = 1_000;

fn value_after(tokens: &[&str], key: &str) -> Option<u64> {
    let i = tokens.iter().position(|t| *t == key)?;
    tokens.get(i + 1)?.parse().ok()
}

/// The interval on line `line` (1-based), if the line holds the three
/// counters.
pub fn parse_line(line: usize, text: &str) -> Option<Interval> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    Some(Interval {
        line,
        all: value_after(&tokens, "all_count")?,
        hv: value_after(&tokens, "hv_timer")?,
        sw: value_after(&tokens, "sw_timer")?,
    })
}

/// Parses the lines that hold the three counters (a log already in memory;
/// [`read`] streams one).
pub fn parse(text: &str) -> Result<Vec<Interval>, BpftraceError> {
    let intervals: Vec<Interval> = text
        .lines()
        .enumerate()
        .filter_map(|(i, line)| parse_line(i + 1, line))
        .collect();
    if intervals.is_empty() {
        return Err(BpftraceError::NoLines);
    }
    Ok(intervals)
}

fn median(mut v: Vec<u64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2] as f64)
}

/// A pause whose figures are still being gathered.
struct OpenPause {
    /// The figures known at its resume.
    pause: LogPause,
    /// Lines after the resume line so far.
    after_lines: usize,
    /// Whether every one of them had `hv_timer 0` and `sw_timer` > 0.
    after_sw_only: bool,
}

impl OpenPause {
    fn close(mut self) -> LogPause {
        self.pause.fell_back_to_sw =
            self.pause.hv_before && self.after_lines > 0 && self.after_sw_only;
        self.pause
    }
}

/// A run of `all_count 0` lines after timer activity: a pause if activity
/// follows.
struct ZeroRun {
    /// Its first line.
    first: Interval,
    /// Its length.
    len: usize,
    /// Any `hv_timer` > 0 before it.
    hv_before: bool,
    /// Whether its lines had `hv_timer 0` and `sw_timer` > 0 (they are the
    /// previous pause's "after" should the log end in them).
    sw_only: bool,
}

/// Finds the pauses of a log one interval at a time, in memory bounded by
/// the constants above whatever the log's length.
#[derive(Default)]
pub struct Summarizer {
    /// Intervals seen.
    seen: usize,
    /// The first [`MAX_KEPT_INTERVALS`] of them.
    kept: Vec<Interval>,
    /// Before the first pause: the last `NOMINAL_LINES + 1` values of `all`.
    recent: std::collections::VecDeque<u64>,
    /// The nominal rate, once the first pause is found.
    nominal: Option<f64>,
    /// Any `hv_timer` > 0 so far, outside the current run of zero lines.
    hv_seen: bool,
    /// `all` of the last line with timer activity.
    prev_all: Option<u64>,
    /// The current run of zero lines after timer activity.
    zeros: Option<ZeroRun>,
    /// The last pause, still collecting its lines after the resume.
    open: Option<OpenPause>,
    /// Pauses closed.
    pauses: Vec<LogPause>,
}

impl Summarizer {
    /// Takes the next interval of the log.
    pub fn push(&mut self, iv: Interval) -> Result<(), BpftraceError> {
        let index = self.seen;
        self.seen += 1;
        if self.kept.len() < MAX_KEPT_INTERVALS {
            self.kept.push(iv);
        }
        if iv.all == 0 {
            // Leading zero lines (nothing before them) are no pause.
            if self.prev_all.is_none() {
                self.before_first_pause(iv.all);
                self.hv_seen |= iv.hv > 0;
                return Ok(());
            }
            let sw_only = iv.hv == 0 && iv.sw > 0;
            match &mut self.zeros {
                Some(z) => {
                    z.len += 1;
                    z.sw_only &= sw_only;
                }
                None => {
                    self.zeros = Some(ZeroRun {
                        first: iv,
                        len: 1,
                        hv_before: self.hv_seen,
                        sw_only,
                    })
                }
            }
            self.hv_seen |= iv.hv > 0;
            return Ok(());
        }
        if let Some(ZeroRun {
            first,
            len,
            hv_before,
            ..
        }) = self.zeros.take()
        {
            // A run of zero lines between active ones: a pause, resumed here.
            if self.pauses.len() + usize::from(self.open.is_some()) >= MAX_PAUSES {
                return Err(BpftraceError::TooManyPauses);
            }
            let nominal = match self.nominal {
                Some(n) => n,
                None => {
                    let last = self.recent.pop_back();
                    let n = median(self.recent.drain(..).collect())
                        .or_else(|| median(last.into_iter().collect()))
                        .filter(|&n| n > 0.0)
                        .ok_or(BpftraceError::NoRate)?;
                    self.nominal = Some(n);
                    n
                }
            };
            let partial = self.prev_all.unwrap_or(0) as f64 / nominal;
            if let Some(p) = self.open.take() {
                self.pauses.push(p.close());
            }
            self.open = Some(OpenPause {
                pause: LogPause {
                    first_zero_line: first.line,
                    zero_intervals: len,
                    estimated_s: len as f64 + (1.0 - partial).clamp(0.0, 1.0),
                    resume: iv,
                    host_burst_ratio: iv.all as f64 / nominal,
                    hv_before,
                    fell_back_to_sw: false,
                    resume_s: index as f64,
                },
                after_lines: 0,
                after_sw_only: true,
            });
        } else if let Some(p) = &mut self.open {
            p.after_lines += 1;
            p.after_sw_only &= iv.hv == 0 && iv.sw > 0;
        } else {
            self.before_first_pause(iv.all);
        }
        self.hv_seen |= iv.hv > 0;
        self.prev_all = Some(iv.all);
        Ok(())
    }

    fn before_first_pause(&mut self, all: u64) {
        if self.recent.len() > NOMINAL_LINES {
            self.recent.pop_front();
        }
        self.recent.push_back(all);
    }

    /// The analysis of everything pushed.
    pub fn finish(mut self) -> Result<LogAnalysis, BpftraceError> {
        if self.seen == 0 {
            return Err(BpftraceError::NoLines);
        }
        let Some(mut last) = self.open.take() else {
            return Err(BpftraceError::NoPause);
        };
        // A log that ends in zero lines: they are the last pause's "after".
        if let Some(z) = self.zeros.take() {
            last.after_lines += z.len;
            last.after_sw_only &= z.sw_only;
        }
        self.pauses.push(last.close());
        Ok(LogAnalysis {
            intervals: self.kept,
            intervals_total: self.seen,
            nominal_per_s: self.nominal.unwrap_or(0.0),
            pauses: self.pauses,
        })
    }
}

/// Finds the pauses and their figures.
pub fn analyze(intervals: &[Interval]) -> Result<LogAnalysis, BpftraceError> {
    if intervals.is_empty() {
        return Err(BpftraceError::NoPause);
    }
    let mut s = Summarizer::default();
    for iv in intervals {
        s.push(*iv)?;
    }
    s.finish()
}

/// Reads and analyses a log line by line: memory is bounded by the
/// constants above, whatever the log's length (lines longer than
/// [`MAX_LINE_BYTES`] and lines that are not UTF-8 are ignored).
pub fn read<R: std::io::BufRead>(mut input: R) -> Result<LogAnalysis, BpftraceError> {
    let mut s = Summarizer::default();
    let mut line = Vec::with_capacity(256);
    let mut number = 0usize;
    loop {
        line.clear();
        let (more, too_long) = read_line(&mut input, &mut line)?;
        if !more {
            break;
        }
        number += 1;
        if too_long {
            continue;
        }
        if let Some(iv) = std::str::from_utf8(&line)
            .ok()
            .and_then(|text| parse_line(number, text))
        {
            s.push(iv)?;
        }
    }
    s.finish()
}

/// Reads one line into `line`, keeping at most [`MAX_LINE_BYTES`] of it.
/// Returns whether a line was there and whether it was longer.
fn read_line<R: std::io::BufRead>(
    input: &mut R,
    line: &mut Vec<u8>,
) -> Result<(bool, bool), BpftraceError> {
    let mut any = false;
    let mut too_long = false;
    loop {
        let buf = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BpftraceError::Io(e.to_string())),
        };
        if buf.is_empty() {
            return Ok((any, too_long));
        }
        any = true;
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        if chunk.len() > room {
            too_long = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = done.unwrap_or(buf.len());
        input.consume(used);
        if done.is_some() {
            return Ok((true, too_long));
        }
    }
}

impl LogAnalysis {
    fn all_kept(total: &usize) -> bool {
        *total <= MAX_KEPT_INTERVALS
    }
}

impl LogPause {
    /// What the verdict is judged on (a bpftrace log has no guest side).
    pub fn evidence(&self) -> Evidence {
        Evidence {
            guest_burst_ratio: None,
            host_burst_ratio: Ok(self.host_burst_ratio),
            host_callbacks_first_1s: Some(self.resume.all),
            hv_used_before: Ok(self.hv_before),
            fell_back_at_ms: self.fell_back_to_sw.then_some(self.resume_s * 1e3),
            longest_run: None,
        }
    }
}

#[cfg(test)]
mod tests;
