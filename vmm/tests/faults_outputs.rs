//! Fault injection on output files and saved records, through the real
//! binary on real special files: a character device made with mknod, a
//! FIFO, `/dev/full`, a read-only and a full tmpfs (skipped, with the
//! reason printed, where they cannot be made), `kill -9` while a record is
//! written, and hostile records (property tests) under a memory bound.
//!
//! After each case: no temporary file left, a record either absent or
//! complete, NDJSON whole up to its last line, the documented exit code and
//! at most one `tickburst: ...` line (exactly one on an error).

use proptest::prelude::*;
use serde_json::Value;
use std::ffi::CString;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tickburst::record::Record;
use tickburst::validate::{MAX_LIST_BYTES, MAX_TICKS};
use tickburst_testkit::{kvm_or_skip, tickburst};

/// The bound on `analyze`'s peak RSS for any hostile record of this file
/// (strings of up to 200 MB among them).
const ANALYZE_RSS_BOUND_KIB: i64 = 96 * 1024;
/// The hostile case of the most ticks a record may hold.
const TICKS_CASE: &str = "10^7 tick deltas";
/// The hostile case of lists that pass their budget together
/// ([`MAX_LIST_BYTES`]): refused, in memory bounded by that budget.
const LISTS_CASE: &str = "10^7 host events";

/// A fresh scratch directory of this test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickburst-faults-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The `tickburst:` lines of stderr.
fn error_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("tickburst:"))
        .map(str::to_string)
        .collect()
}

/// Exit 2 and exactly one `tickburst:` line, containing `needle`.
fn one_error(out: &Output, needle: &str) -> String {
    let lines = error_lines(out);
    assert_eq!(out.status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(needle), "{}", lines[0]);
    lines[0].clone()
}

/// No `.NAME.tmp.PID` (nor any other hidden file) in `dir`.
fn no_temp(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// The record at `path` is absent or complete (it loads).
fn absent_or_complete(path: &Path) {
    if path.exists() {
        Record::load(path).unwrap_or_else(|e| panic!("{}: incomplete: {e}", path.display()));
    }
}

/// Every line of the NDJSON text is one JSON object; the text ends on a
/// whole line.
fn ndjson_whole(text: &[u8]) -> usize {
    assert!(
        text.is_empty() || text.ends_with(b"\n"),
        "a partial last line"
    );
    let text = String::from_utf8(text.to_vec()).unwrap();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert!(v["type"].is_string(), "{l}");
    }
    text.lines().count()
}

fn mknod_char(path: &Path, major: u32, minor: u32) -> bool {
    let c = CString::new(s(path)).unwrap();
    // SAFETY: a NUL-terminated path that outlives the call.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    r == 0
}

fn mkfifo(path: &Path) {
    let c = CString::new(s(path)).unwrap();
    // SAFETY: a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

/// Mounts a tmpfs of `opts` on `dir`; `None` (with the reason printed)
/// where it cannot be.
fn tmpfs(dir: &Path, opts: &str, test: &str) -> Option<Mounted> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tickburst-faults", s(dir)])
        .output();
    match out {
        Ok(o) if o.status.success() => Some(Mounted(dir.to_path_buf())),
        Ok(o) => {
            eprintln!(
                "SKIPPED {test}: cannot mount a tmpfs ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: cannot run mount: {e}");
            None
        }
    }
}

/// A tmpfs, unmounted when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A short `run` (about 1 s) with `extra` arguments.
fn short_run(extra: &[&str]) -> (Output, Duration) {
    let t = Instant::now();
    let out = tickburst!()
        .args([
            "run",
            "--pause-method",
            "kick",
            "--warmup",
            "300ms",
            "--pause",
            "100ms",
            "--observe",
            "300ms",
            "--cycles",
            "1",
            "--host-probes",
            "off",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out, t.elapsed())
}

fn ran(out: &Output) -> bool {
    String::from_utf8_lossy(&out.stdout).contains("outcome:")
}

/// A real record (the rig's fixed kernel), as text.
fn real_record() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rig-fixed-spin.json"),
    )
    .unwrap()
}

/// Guarantee: `--json` to a device or FIFO writes in place (the node
/// stays), to a directory or a read-only file system is refused before the
/// run; `--json-stream` on a full device or file system loses neither the
/// record nor a whole line.
#[test]
fn run_outputs_on_special_files() {
    let Some(_vm) = kvm_or_skip("run_outputs_on_special_files") else {
        return;
    };
    let dir = scratch("run");

    // A character device (the host's null, c 1 3) made in the directory.
    let null = dir.join("null");
    assert!(mknod_char(&null, 1, 3), "mknod (root needed)");
    let (out, _) = short_run(&["--json", s(&null)]);
    assert_eq!(out.status.code(), Some(0), "{:?}", error_lines(&out));
    assert!(std::fs::metadata(&null)
        .unwrap()
        .file_type()
        .is_char_device());

    // A FIFO with a reader: the whole record comes through it.
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(&fifo).unwrap())
    };
    let (out, _) = short_run(&["--json", s(&fifo)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = reader.join().unwrap();
    Record::from_json(std::str::from_utf8(&text).unwrap()).expect("the record through the FIFO");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());

    // A directory: refused before the run.
    let (out, took) = short_run(&["--json", s(&dir)]);
    one_error(&out, "--json");
    assert!(!ran(&out) && took < Duration::from_millis(900), "{took:?}");

    // A full device as the stream, the record to a file: exit 2, the
    // record complete, one line naming the stream.
    let json = dir.join("run.json");
    let (out, _) = short_run(&["--json-stream", "/dev/full", "--json", s(&json)]);
    one_error(&out, "--json-stream");
    Record::load(&json).expect("the record, written although the stream failed");
    no_temp(&dir);

    // A read-only file system: refused before the run.
    let ro = dir.join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    if let Some(_m) = tmpfs(
        &ro,
        "ro,size=1m",
        "run_outputs_on_special_files (read-only)",
    ) {
        let (out, took) = short_run(&["--json", s(&ro.join("run.json"))]);
        one_error(&out, "--json");
        assert!(!ran(&out) && took < Duration::from_millis(900), "{took:?}");
        let (out, _) = short_run(&["--plot", s(&ro.join("run.svg"))]);
        one_error(&out, "--plot");
    }

    // A full tmpfs as the stream: it ends on a whole line, the record
    // (elsewhere) is complete.
    let full = dir.join("full");
    std::fs::create_dir_all(&full).unwrap();
    if let Some(_m) = tmpfs(&full, "size=16k", "run_outputs_on_special_files (full)") {
        let _ = std::fs::write(full.join("filler"), vec![b'x'; 12 * 1024]);
        let stream = full.join("s.ndjson");
        let (out, _) = short_run(&["--json-stream", s(&stream), "--json", s(&json)]);
        let lines = error_lines(&out);
        assert!(lines.len() <= 1, "{lines:?}");
        if out.status.code() == Some(2) {
            assert!(lines[0].contains("stopped after line"), "{lines:?}");
        }
        ndjson_whole(&std::fs::read(&stream).unwrap());
        Record::load(&json).expect("record");
        no_temp(&full);
    }
    no_temp(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Guarantee: `analyze --json`/`--plot` write devices and FIFOs in place
/// and refuse a directory before reading; the record is read once (a FIFO
/// and `/dev/stdin` work).
#[test]
fn analyze_reads_once_and_writes_in_place() {
    let dir = scratch("analyze");
    let rec = dir.join("run.json");
    std::fs::write(&rec, real_record()).unwrap();
    let verdict = |out: &Output| {
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{:?}",
            error_lines(out)
        );
        assert!(error_lines(out).is_empty(), "{:?}", error_lines(out));
    };

    // From a FIFO.
    let fifo = dir.join("in.fifo");
    mkfifo(&fifo);
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(&fifo, real_record()).unwrap())
    };
    verdict(&tickburst!().args(["analyze", s(&fifo)]).output().unwrap());
    writer.join().unwrap();

    // From /dev/stdin, a pipe.
    let out = tickburst!()
        .args(["analyze", "/dev/stdin"])
        .stdin(std::fs::File::open(&rec).unwrap())
        .output()
        .unwrap();
    verdict(&out);

    // To a character device made here, and to the host's /dev/null.
    let null = dir.join("null");
    assert!(mknod_char(&null, 1, 3), "mknod (root needed)");
    for target in [s(&null), "/dev/null"] {
        let out = tickburst!()
            .args(["analyze", s(&rec), "--json", target, "--plot", target])
            .output()
            .unwrap();
        verdict(&out);
        assert!(std::fs::metadata(target)
            .unwrap()
            .file_type()
            .is_char_device());
    }

    // To a full device: exit 2, one line.
    let out = tickburst!()
        .args(["analyze", s(&rec), "--json", "/dev/full"])
        .output()
        .unwrap();
    one_error(&out, "--json");

    // To a directory: refused before the record is read.
    let out = tickburst!()
        .args(["analyze", "/nonexistent.json", "--json", s(&dir)])
        .output()
        .unwrap();
    one_error(&out, "--json");
    no_temp(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Guarantee: a `kill -9` at any moment of the record write leaves no
/// temporary file and a record absent or complete; stale temporary files
/// of dead processes are removed by the next write.
#[test]
fn kill_during_the_record_write_leaves_nothing() {
    let dir = scratch("kill");
    let rec = dir.join("in.json");
    std::fs::write(&rec, real_record()).unwrap();
    let outp = dir.join("out.json");
    // A stale one, as an older tickburst killed while writing left it.
    std::fs::write(dir.join(".out.json.tmp.2147483646"), b"{\"form").unwrap();
    for i in 0..24u64 {
        let _ = std::fs::remove_file(&outp);
        let mut child = tickburst!()
            .args(["analyze", s(&rec), "--json", s(&outp), "--format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(2_000 * i));
        let _ = child.kill();
        let _ = child.wait();
        absent_or_complete(&outp);
        if i == 0 {
            continue;
        }
        let stale: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp."))
            .collect();
        // The stale file goes with the first write that got that far.
        if outp.exists() {
            assert!(stale.is_empty(), "{stale:?}");
        }
    }
    let out = tickburst!()
        .args(["analyze", s(&rec), "--json", s(&outp)])
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)));
    absent_or_complete(&outp);
    assert!(outp.exists());
    no_temp(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes `head`, `fill` repeated `times` times, and `tail` to `path`
/// (the test process never holds a hostile text whole: a child started by
/// `vfork` counts its parent's RSS in its own peak).
fn write_parts(path: &Path, head: &[u8], fill: &[u8], times: usize, tail: &[u8]) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(head).unwrap();
    for _ in 0..times {
        f.write_all(fill).unwrap();
    }
    f.write_all(tail).unwrap();
    f.flush().unwrap();
}

/// Runs `analyze` on the file `path`; its output and its peak RSS, KiB
/// (`wait4`'s, of this one child; the test process's RSS at the spawn is
/// included, so the figure is an upper bound).
#[allow(clippy::zombie_processes)] // reaped by wait4, for its rusage
fn analyze_peak(path: &Path) -> (Output, i64) {
    let dir = path.parent().unwrap();
    let (o, e) = (dir.join("stdout"), dir.join("stderr"));
    let child = tickburst!()
        .args(["analyze", s(path)])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the child's pid, a valid status and rusage to fill.
    let r = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut u) };
    assert_eq!(r, child.id() as libc::pid_t);
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    use std::os::unix::process::ExitStatusExt;
    let out = Output {
        status: std::process::ExitStatus::from_raw(code.map_or(status, |c| c << 8)),
        stdout: std::fs::read(&o).unwrap(),
        stderr: std::fs::read(&e).unwrap(),
    };
    (out, u.ru_maxrss)
}

/// Writes one hostile record file.
type MakeFile = Box<dyn Fn()>;

/// Stdout and stderr carry no raw control character from a record (ESC, a
/// forged line) besides the newlines between lines.
fn no_raw_control(out: &Output, forged: &str) {
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(!text.contains('\u{1b}'), "ESC reached the terminal");
        assert!(
            !text.lines().any(|l| l.starts_with(forged)),
            "a forged line: {text}"
        );
    }
}

/// Guarantee: hostile records (huge strings in any field, control
/// characters, long numbers, deep nesting) give the verdict or one line and
/// exit 2, with `analyze`'s memory under [`ANALYZE_RSS_BOUND_KIB`].
#[test]
fn hostile_records_stay_in_bounded_memory() {
    let dir = scratch("hostile");
    let base: Value = serde_json::from_str(&real_record()).unwrap();
    let forged = "FORGED-verdict: ok";
    let h = dir.join("h.json");
    // A record with "@@" at `field`, split there.
    let around = |field: &[&str]| -> (Vec<u8>, Vec<u8>) {
        let mut v = base.clone();
        let path: Vec<String> = field.iter().map(|s| s.to_string()).collect();
        let marker = Value::String(format!("\n{forged}\n\u{1b}[31m@@"));
        if path.len() == 1 {
            v[&path[0]] = marker;
        } else {
            tickburst_testkit::json::set_at(&mut v, &path, &marker);
        }
        let text = serde_json::to_string(&v).unwrap();
        let at = text.find("@@").unwrap();
        (text[..at].into(), text[at + 2..].into())
    };
    let mut cases: Vec<(&str, MakeFile)> = Vec::new();
    for (name, field, mb) in [
        ("kernel_release 50 MB", &["host", "kernel_release"][..], 50),
        ("error 200 MB", &["error"][..], 200),
        ("unknown field 100 MB", &["x_unknown"][..], 100),
    ] {
        let (head, tail) = around(field);
        let h = h.clone();
        cases.push((
            name,
            Box::new(move || write_parts(&h, &head, "é".repeat(1 << 19).as_bytes(), mb, &tail)),
        ));
    }
    // Half a million 64 KiB strings would be 32 GB; 4 000 of them: 256 MB.
    let (head, tail) = around(&["x_many"]);
    let (h2, one) = (h.clone(), format!("\",\"{}", "y".repeat(64 * 1024)));
    cases.push((
        "4000 strings of 64 KiB",
        Box::new(move || write_parts(&h2, &head, one.as_bytes(), 4_000, &tail)),
    ));
    let text = serde_json::to_string(&base).unwrap();
    let (h3, head) = (h.clone(), format!("{},\"x_num\":", &text[..text.len() - 1]));
    cases.push((
        "a 50 MB number",
        Box::new(move || write_parts(&h3, head.as_bytes(), &[b'7'; 1 << 20], 50, b"}")),
    ));
    // The most ticks a sample set may hold (10^7, every tick kept, as a
    // record of format 2): parsed, checked and analysed, not refused.
    let mut v = base.clone();
    if let Some(samples) = v["samples"].as_object_mut() {
        samples.remove("bounded");
        samples.insert("tick_deltas_ns".into(), Value::String("@@".into()));
    }
    let text = serde_json::to_string(&v).unwrap();
    let (head, tail) = text.split_once("\"@@\"").unwrap();
    let (h5, head, tail) = (h.clone(), format!("{head}[0"), format!("]{tail}"));
    cases.push((
        TICKS_CASE,
        Box::new(move || {
            write_parts(
                &h5,
                head.as_bytes(),
                b",1000",
                MAX_TICKS - 1,
                tail.as_bytes(),
            )
        }),
    ));
    // 10^7 host events of 32 bytes each (320 MB in memory, each list within
    // its own limit): refused once the lists pass their budget together.
    let mut v = base.clone();
    v["samples"]["host_events"]["sw_runs"] = Value::String("@@".into());
    let text = serde_json::to_string(&v).unwrap();
    let (head, tail) = text.split_once("\"@@\"").unwrap();
    let (h6, head, tail) = (h.clone(), format!("{head}[[0,1,0,0]"), format!("]{tail}"));
    cases.push((
        LISTS_CASE,
        Box::new(move || {
            write_parts(
                &h6,
                head.as_bytes(),
                b",[1000,1,0,0]",
                10_000_000,
                tail.as_bytes(),
            )
        }),
    ));
    let h4 = h.clone();
    cases.push((
        "nesting 100 000 deep",
        Box::new(move || write_parts(&h4, b"", b"[", 100_000, &[b']'; 100_000])),
    ));

    let mut peak = 0;
    for (name, make) in cases {
        make();
        let (out, rss) = analyze_peak(&h);
        let code = out.status.code();
        assert!(matches!(code, Some(0..=2)), "{name}: {code:?}");
        let lines = error_lines(&out);
        if name == LISTS_CASE {
            one_error(&out, "lists of the record take more than 160 MiB");
            assert!(
                rss < (MAX_LIST_BYTES >> 10) as i64 + 24 * 1024,
                "{name}: analyze peak RSS {rss} KiB, the lists' budget {} MiB",
                MAX_LIST_BYTES >> 20
            );
            eprintln!("{name}: exit {code:?}, analyze peak RSS {rss} KiB");
            continue;
        }
        if name == TICKS_CASE {
            assert!(matches!(code, Some(0 | 1)), "{name}: a verdict: {lines:?}");
        }
        if code == Some(2) {
            assert_eq!(lines.len(), 1, "{name}: {lines:?}");
            assert!(lines[0].len() < 600, "{name}: {} bytes", lines[0].len());
        } else {
            assert!(lines.is_empty(), "{name}: {lines:?}");
        }
        no_raw_control(&out, forged);
        assert!(
            out.stdout.len() < 1 << 20,
            "{name}: {} bytes out",
            out.stdout.len()
        );
        eprintln!("{name}: exit {code:?}, analyze peak RSS {rss} KiB");
        peak = peak.max(rss);
    }
    assert!(
        peak < ANALYZE_RSS_BOUND_KIB,
        "analyze peak RSS {peak} KiB (bound {ANALYZE_RSS_BOUND_KIB} KiB)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Guarantee: a 15 s spinning hv run's record keeps the changes of back
/// end, not the hv re-arms (the rig's record: 5001 events, one back end).
#[test]
fn spinning_hv_record_keeps_changes_only() {
    let mut v: Value = serde_json::from_str(&real_record()).unwrap();
    let before = serde_json::to_vec(&v).unwrap().len();
    let events: Vec<(f64, bool)> =
        serde_json::from_value(v["host"]["timer_backend"]["switches"].clone()).unwrap();
    assert!(events.len() > 5_000, "{}", events.len());
    let b = tickburst::figures::timer_backend(Ok(&events));
    assert_eq!(b.switches.len(), 1);
    v["host"]["timer_backend"] = serde_json::to_value(&b).unwrap();
    let after = serde_json::to_vec(&v).unwrap().len();
    eprintln!("15 s spinning hv record: {before} bytes before, {after} after");
    assert!(before - after > 90_000, "{before} -> {after}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Guarantee: a string of any content and length (to 4 MB) at any of a
    /// record's free-text fields gives the verdict or one line, no raw
    /// control character, no forged line.
    #[test]
    fn hostile_strings_at_any_text_field(
        field in 0usize..5,
        head in "[\\x00-\\x1f\"\\\\a-z\u{e9}\u{1b}]{0,64}",
        len in 0usize..4_000_000,
    ) {
        let dir = scratch("prop");
        let mut v: Value = serde_json::from_str(&real_record()).unwrap();
        let text = Value::String(format!("{head}\nFORGED-line\n{}", "z".repeat(len)));
        match field {
            0 => v["error"] = text,
            1 => v["host"]["kernel_release"] = text,
            2 => v["host"]["timer_backend"]["reason"] = text,
            3 => v["tickburst_version"] = text,
            _ => v["format"] = text,
        }
        let p = dir.join("p.json");
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        let (out, _) = analyze_peak(&p);
        let code = out.status.code();
        prop_assert!(matches!(code, Some(0..=2)), "{:?}", code);
        let lines = error_lines(&out);
        prop_assert!(lines.len() == usize::from(code == Some(2)), "{:?}", lines);
        no_raw_control(&out, "FORGED-line");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
