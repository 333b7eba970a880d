//! `--json-stream FILE`: one JSON object per line as the run goes. Each line
//! is written at once (a `kill -9` of tickburst loses none) and forced to
//! the disk right after by a thread of its own (`fdatasync`, coalesced when
//! lines come faster than the disk), so a reboot or a hard lockup of the
//! host leaves every line up to the last report window on disk, and the
//! session never waits for the disk. Lines, by `type`:
//!
//! - `window`: a report window of the subject (the fields of the record's
//!   `windows[]`) and `vcpu_ticks` (every vCPU's ticks, with `--vcpus`);
//! - `pause`: `run`/`sweep`, a pause once its observation is over
//!   (`index`, `start_ns`, `end_ns`, `stats`: the fields of `pauses[]`);
//! - `detected`: `watch`, a pause found in the ticks (`index`, `pause`:
//!   the fields of `detected[]`, `stats`);
//! - `summary`: every `--summary-every` (the fields of
//!   [`PeriodicSummary`]);
//! - `note`: a progress note (`text`);
//! - `end`: the run's end (`outcome`, `verdict`), when it ended at all.
//!
//! A write that fails (a full disk) stops the stream on its last whole
//! line (a partial line is cut off, or the error says where it starts); the
//! run, its record and its picture go on, and the error is said at the end.

use crate::session::observer::RunObserver;
use serde_json::{json, Value};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use tickburst_analysis::figures::{PauseSpan, PauseStats, Window};
use tickburst_analysis::periodic::PeriodicSummary;
use tickburst_analysis::record::{DetectedPause, Record};

/// The NDJSON writer, an observer of the session.
pub struct JsonStream {
    file: File,
    /// A regular file: synced, and cut back to its last whole line when a
    /// write fails (a device or FIFO is written as it is).
    regular: bool,
    /// Whole lines written, and their bytes.
    lines: u64,
    bytes: u64,
    /// Asks the sync thread for an `fdatasync` after a line.
    sync: Option<std::sync::mpsc::Sender<()>>,
    /// The sync thread; its first error.
    syncer: Option<JoinHandle<Result<(), String>>>,
    /// The first write error (the run goes on; it is reported at the end,
    /// after the record is written).
    error: Option<String>,
}

/// Forces the file's data to disk each time it is asked; requests that
/// came while it synced are served by one more sync.
fn sync_on_request(file: File, asked: Receiver<()>) -> Result<(), String> {
    while asked.recv().is_ok() {
        while asked.try_recv().is_ok() {}
        file.sync_data().map_err(|e| format!("fdatasync: {e}"))?;
    }
    Ok(())
}

impl JsonStream {
    /// Creates (truncates) `path`; a device or FIFO is opened as it is.
    pub fn create(path: &Path) -> Result<JsonStream, String> {
        let shown = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            return Err(shown(&"is a directory"));
        }
        let file = File::create(path).map_err(|e| shown(&e))?;
        let regular = file.metadata().map_err(|e| shown(&e))?.is_file();
        let (sync, syncer) = if regular {
            let synced = file.try_clone().map_err(|e| shown(&e))?;
            let (sync, asked) = std::sync::mpsc::channel();
            let syncer = std::thread::Builder::new()
                .name("json-stream-sync".into())
                .spawn(move || sync_on_request(synced, asked))
                .map_err(|e| shown(&format!("sync thread: {e}")))?;
            (Some(sync), Some(syncer))
        } else {
            (None, None)
        };
        Ok(JsonStream {
            file,
            regular,
            lines: 0,
            bytes: 0,
            sync,
            syncer,
            error: None,
        })
    }

    /// Writes one line (a line this short is one `write` to a regular
    /// file, so it appears whole) and asks for it to be forced to disk. A
    /// failed write (a full disk) ends the stream on its last whole line:
    /// a partial line is cut off again, or, where it cannot be, the error
    /// says where it starts.
    fn line(&mut self, v: Value) {
        if self.error.is_some() {
            return;
        }
        let mut text = v.to_string();
        text.push('\n');
        let bytes = text.as_bytes();
        let mut done = 0;
        while done < bytes.len() {
            match self.file.write(&bytes[done..]) {
                Ok(0) => {
                    self.stopped(done, std::io::ErrorKind::WriteZero.into());
                    return;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stopped(done, e);
                    return;
                }
            }
        }
        self.lines += 1;
        self.bytes += bytes.len() as u64;
        if let Some(sync) = &self.sync {
            let _ = sync.send(());
        }
    }

    /// Notes that the stream stopped after its whole lines, `partial`
    /// bytes of the next one written; cuts those off when it can.
    fn stopped(&mut self, partial: usize, e: std::io::Error) {
        let whole = self.bytes;
        let mut text = format!(
            "{e}; the stream stopped after line {} (byte {whole})",
            self.lines
        );
        if partial > 0 {
            let cut = self.regular && self.file.set_len(whole).is_ok();
            if !cut {
                text.push_str(&format!(", followed by {partial} bytes of a partial line"));
            }
        }
        self.error = Some(text);
    }

    /// The `end` line, from the finished record, synced; the first write or
    /// sync error.
    pub fn finish(mut self, record: &Record) -> Result<(), String> {
        self.line(json!({
            "type": "end",
            "outcome": record.outcome,
            "verdict": record.verdict.kind,
        }));
        self.sync = None;
        let synced = self.syncer.take().map_or(Ok(()), |t| {
            t.join().unwrap_or(Err("sync thread panicked".into()))
        });
        let last = if self.regular {
            self.file.sync_data().map_err(|e| format!("fdatasync: {e}"))
        } else {
            Ok(())
        };
        match self.error {
            Some(e) => Err(e),
            None => synced.and(last),
        }
    }
}

/// `value` as a JSON object with `type` first.
fn typed(kind: &str, value: Value) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("type".into(), kind.into());
    if let Value::Object(m) = value {
        out.extend(m);
    }
    Value::Object(out)
}

impl RunObserver for JsonStream {
    fn window(&mut self, window: &Window, vcpu_ticks: &[u64]) {
        let mut v = typed("window", json!(window));
        if !vcpu_ticks.is_empty() {
            v["vcpu_ticks"] = json!(vcpu_ticks);
        }
        self.line(v);
    }
    fn note(&mut self, text: &str) {
        self.line(json!({"type": "note", "text": text}));
    }
    fn detected(&mut self, index: usize, pause: &DetectedPause, stats: &PauseStats) {
        self.line(json!({"type": "detected", "index": index, "pause": pause, "stats": stats}));
    }
    fn summary(&mut self, summary: &PeriodicSummary) {
        self.line(typed("summary", json!(summary)));
    }
    fn paused(&mut self, index: usize, span: &PauseSpan, stats: &PauseStats) {
        self.line(json!({
            "type": "pause",
            "index": index,
            "start_ns": span.start_ns,
            "end_ns": span.end_ns,
            "stats": stats,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_one_object_on_disk_at_once() {
        let path = std::env::temp_dir().join(format!("tickburst-ndjson-{}", std::process::id()));
        let mut s = JsonStream::create(&path).unwrap();
        let w = Window {
            t_ms: 0.0,
            duration_ms: 1000.0,
            guest_ticks: 1000,
            expected_ticks: 1000.0,
            paused: false,
            host: None,
        };
        s.window(&w, &[]);
        s.note("a\nb");
        // Read while the writer is still open: flushed already.
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["type"], "window");
        assert_eq!(lines[0]["guest_ticks"], 1000);
        assert_eq!(lines[1]["text"], "a\nb");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_full_device_stops_the_stream_and_says_where() {
        let mut s = JsonStream::create(Path::new("/dev/full")).unwrap();
        s.note("x");
        s.note("y");
        let e = s.error.clone().unwrap();
        assert!(e.contains("after line 0 (byte 0)"), "{e}");
    }
}
