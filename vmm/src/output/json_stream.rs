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

use crate::session::observer::RunObserver;
use serde_json::{json, Value};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use tickburst_analysis::analysis::{PauseSpan, PauseStats, Window};
use tickburst_analysis::periodic::PeriodicSummary;
use tickburst_analysis::record::{DetectedPause, Record};

/// The NDJSON writer, an observer of the session.
pub struct JsonStream {
    file: File,
    /// Asks the sync thread for an `fdatasync` after a line.
    sync: Option<std::sync::mpsc::Sender<()>>,
    /// The sync thread; its first error.
    syncer: Option<JoinHandle<Result<(), String>>>,
    /// The first write error (the run goes on; it is reported at the end).
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
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> Result<JsonStream, String> {
        let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let synced = file
            .try_clone()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let (sync, asked) = std::sync::mpsc::channel();
        let syncer = std::thread::Builder::new()
            .name("json-stream-sync".into())
            .spawn(move || sync_on_request(synced, asked))
            .map_err(|e| format!("{}: sync thread: {e}", path.display()))?;
        Ok(JsonStream {
            file,
            sync: Some(sync),
            syncer: Some(syncer),
            error: None,
        })
    }

    /// Writes one line (`write_all`: a line this short is one `write` to a
    /// regular file, so it appears whole) and asks for it to be forced to
    /// disk.
    fn line(&mut self, v: Value) {
        if self.error.is_some() {
            return;
        }
        let mut text = v.to_string();
        text.push('\n');
        if let Err(e) = self.file.write_all(text.as_bytes()) {
            self.error = Some(e.to_string());
        }
        if let Some(sync) = &self.sync {
            let _ = sync.send(());
        }
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
        let last = self.file.sync_data().map_err(|e| format!("fdatasync: {e}"));
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
}
