//! `tickburst top --listen` and `--textfile` on real KVM: a tickburst VM
//! (named by its argv[0]) is watched, `/metrics` is scraped over TCP, its
//! counters grow, its series carry the VM's pid, name and vCPU, the
//! exposition passes `promtool check metrics` (Debian's `prometheus`
//! package; that check says SKIPPED where promtool is not installed), the
//! text file says the same, and the series go when the VM does, with one
//! stderr line for the VM seen and one for it gone. The end-to-end test
//! with a real Prometheus is `tests/prometheus/test-e2e`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};
use tickburst_testkit::{is_root, kvm_or_skip, tickburst};

const NAME: &str = "tb-exporter-test";

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill() on a pid this test started and has not reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// The lines of `r`, as they come, on a channel.
fn lines(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line of `rx` containing `what`, within `limit`.
fn wait_line(rx: &Receiver<String>, what: &str, limit: Duration) -> Option<String> {
    let end = Instant::now() + limit;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(what) => return Some(l),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// GET `path`: the status line and the body.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The value of the sample `name{labels}` of an exposition text.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

/// `promtool check metrics` of `text`: its complaint, if any; `None` when
/// promtool is not installed.
fn promtool_check(text: &str) -> Option<Result<(), String>> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Some(if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    })
}

#[test]
fn top_exports_a_vm_over_http_and_in_a_textfile() {
    let Some(_vm) = kvm_or_skip("top_exports_a_vm") else {
        return;
    };
    if !is_root() {
        eprintln!("SKIPPED top_exports_a_vm: top needs root or CAP_PERFMON");
        return;
    }
    let dir = std::env::temp_dir().join(format!("tickburst-exporter-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut top = tickburst!()
        .args([
            "top",
            "--irq",
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "500ms",
            "--textfile",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines(top.stderr.take().unwrap());
    let serving = wait_line(&err, "serving http://", Duration::from_secs(60)).expect("top serves");
    let addr: SocketAddr = serving
        .split("http://")
        .nth(1)
        .and_then(|a| a.strip_suffix("/metrics"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{serving}"));
    assert_eq!(get(addr, "/").0, "HTTP/1.1 404 Not Found");

    let mut vm = tickburst!()
        .arg0(NAME)
        .args(["watch", "--period", "1ms", "--duration", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = lines(vm.stdout.take().unwrap());
    assert!(wait_line(&out, "guest ready", Duration::from_secs(120)).is_some());
    std::thread::spawn(move || out.iter().for_each(drop));
    let pid = vm.id();
    let seen = wait_line(&err, "VM seen", Duration::from_secs(10)).expect("a VM seen line");
    assert_eq!(
        seen,
        format!("tickburst top: VM seen: pid {pid} vm \"{NAME}\" 1 vCPU(s)")
    );
    let labels = format!("pid=\"{pid}\",vm=\"{NAME}\",vcpu=\"0\"");
    let sw = "tickburst_vcpu_sw_callbacks_total";
    // The counter appears once the timer is learnt, then grows by ~1000/s.
    let t = Instant::now();
    let (first, first_at) = loop {
        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        if let Some(v) = sample(&body, sw, &labels).filter(|v| *v > 0.0) {
            break (v, Instant::now());
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no {sw} of pid {pid}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(3));
    let (_, body) = get(addr, "/metrics");
    let grown = sample(&body, sw, &labels).unwrap_or(0.0) - first;
    let rate = grown / first_at.elapsed().as_secs_f64();
    assert!(
        (500.0..1500.0).contains(&rate),
        "~1000/s: {rate:.0}/s\n{body}"
    );
    let irq = sample(&body, "tickburst_vcpu_guest_interrupts_total", &labels);
    assert!(irq.is_some_and(|v| v > 0.0), "{body}");
    let backend = format!("{labels},backend=\"sw\"");
    assert!(
        sample(&body, "tickburst_vcpu_timer_backend", &backend).is_some(),
        "{body}"
    );
    assert!(body.contains("tickburst_info{version=\""), "{body}");
    assert!(body.lines().any(|l| l == "tickburst_vms 1"), "{body}");
    match promtool_check(&body) {
        Some(r) => r.unwrap_or_else(|e| panic!("promtool check metrics: {e}\n{body}")),
        None => eprintln!("SKIPPED promtool check metrics: promtool not installed"),
    }
    let textfile = std::fs::read_to_string(dir.join("tickburst.prom")).unwrap();
    assert!(
        sample(&textfile, sw, &labels).is_some_and(|v| v > 0.0),
        "{textfile}"
    );

    signal(&vm, libc::SIGTERM);
    vm.wait().unwrap();
    let gone = wait_line(&err, "VM gone", Duration::from_secs(10)).expect("a VM gone line");
    assert_eq!(
        gone,
        format!("tickburst top: VM gone: pid {pid} vm \"{NAME}\"")
    );
    std::thread::sleep(Duration::from_secs(2));
    let (_, body) = get(addr, "/metrics");
    assert!(!body.contains(&format!("pid=\"{pid}\"")), "gone: {body}");
    signal(&top, libc::SIGTERM);
    assert_eq!(top.wait().unwrap().code(), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}
