//! `top --listen ADDR:PORT`: a small HTTP/1.1 server on `std::net` that
//! answers `GET /metrics` with [`PromMetrics`] and nothing else.
//!
//! Requests are untrusted: the request head is read up to
//! [`REQUEST_MAX`] bytes within [`CLIENT_DEADLINE`], at most
//! [`CLIENTS_MAX`] clients are served at once (each on its own thread;
//! more are answered 503 and closed), and every answer closes the
//! connection. The sampler only shares the metrics behind a mutex held
//! while a text is rendered, never while a client is read or written: a
//! slow or bad client stalls nobody but itself.

use crate::output::top_prom::{PromMetrics, RunWindow};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Longest request head read, bytes.
pub const REQUEST_MAX: usize = 8 * 1024;
/// How long one client may take to send its request and take the answer.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(5);
/// After the answer, how long and how much of what a client still sends
/// is read and dropped.
const DRAIN_TIME: Duration = Duration::from_millis(200);
const DRAIN_MAX: usize = 64 * 1024;
/// Clients served at once.
pub const CLIENTS_MAX: usize = 16;

/// Why the endpoint could not be opened.
#[derive(Debug, Error)]
pub enum HttpError {
    /// Binding the address failed.
    #[error("--listen {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
}

/// The metrics shared between `top`'s loop and the endpoint.
pub type SharedMetrics = Arc<Mutex<PromMetrics>>;

/// The running endpoint (its accept thread lives as long as the process).
#[derive(Debug)]
pub struct MetricsServer {
    /// The address bound (the port chosen when 0 was asked).
    pub addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` and serves `metrics` on a thread.
    pub fn start(addr: SocketAddr, metrics: SharedMetrics) -> Result<MetricsServer, HttpError> {
        let listener =
            TcpListener::bind(addr).map_err(|source| HttpError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| HttpError::Bind { addr, source })?;
        let active = Arc::new(AtomicUsize::new(0));
        std::thread::Builder::new()
            .name("top-metrics".into())
            .spawn(move || accept_loop(listener, metrics, active))
            .map_err(|source| HttpError::Bind { addr, source })?;
        Ok(MetricsServer { addr: bound })
    }
}

fn accept_loop(listener: TcpListener, metrics: SharedMetrics, active: Arc<AtomicUsize>) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else {
            // EMFILE and the like: do not spin.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if active.fetch_add(1, Ordering::AcqRel) >= CLIENTS_MAX {
            active.fetch_sub(1, Ordering::AcqRel);
            let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = stream.write_all(&response(503, "Service Unavailable", "too many clients\n"));
            continue;
        }
        let (metrics, active2) = (metrics.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("top-metrics-client".into())
            .spawn(move || {
                serve(stream, &metrics);
                active2.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics` (a query string allowed).
    Metrics,
    /// `GET` of another path.
    NotFound,
    /// Another method.
    MethodNotAllowed,
    /// Not an HTTP request line.
    Bad,
}

/// Parses the request line of `head`.
pub fn parse_request(head: &[u8]) -> Request {
    let line_end = head
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Request::Bad;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Request::Bad;
    }
    if method != "GET" {
        return Request::MethodNotAllowed;
    }
    match target.split('?').next() {
        Some("/metrics") => Request::Metrics,
        _ => Request::NotFound,
    }
}

fn response(code: u16, reason: &str, body: &str) -> Vec<u8> {
    let content_type = if code == 200 {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut r = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if code == 405 {
        r.push_str("Allow: GET\r\n");
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// Reads the request head (to the blank line) within the deadline and the
/// size bound; `None` when the client sent too much or too little in time.
fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, u16> {
    let start = Instant::now();
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let left = CLIENT_DEADLINE.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(408);
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf) {
            Ok(0) => return if head.is_empty() { Err(0) } else { Err(400) },
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(408),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(head);
        }
        if head.len() > REQUEST_MAX {
            return Err(431);
        }
    }
}

fn serve(mut stream: TcpStream, metrics: &SharedMetrics) {
    let _ = stream.set_write_timeout(Some(CLIENT_DEADLINE));
    let answer = match read_head(&mut stream) {
        Ok(head) => match parse_request(&head) {
            Request::Metrics => {
                let text = match metrics.lock() {
                    Ok(mut m) => m.render(RunWindow::SinceScrape),
                    Err(p) => p.into_inner().render(RunWindow::SinceScrape),
                };
                response(200, "OK", &text)
            }
            Request::NotFound => response(404, "Not Found", "only /metrics here\n"),
            Request::MethodNotAllowed => response(405, "Method Not Allowed", "GET only\n"),
            Request::Bad => response(400, "Bad Request", "not an HTTP/1 request\n"),
        },
        Err(0) => return,
        Err(408) => response(408, "Request Timeout", "request too slow\n"),
        Err(431) => response(
            431,
            "Request Header Fields Too Large",
            "request too large\n",
        ),
        Err(_) => response(400, "Bad Request", "incomplete request\n"),
    };
    let _ = stream.write_all(&answer);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // What the client still sends is read (a little, briefly) before the
    // close: closing on unread bytes resets the connection, and the client
    // may lose the answer.
    let _ = stream.set_read_timeout(Some(DRAIN_TIME));
    let mut buf = [0u8; 4096];
    let mut left = DRAIN_MAX;
    while left > 0 {
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => left = left.saturating_sub(n),
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::top_prom::HostLabels;

    fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn requests_are_parsed_strictly() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(
            parse_request(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::MethodNotAllowed
        );
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"\xff\xfe",
            b"GET  /metrics HTTP/1.1",
            b"",
        ] {
            assert_eq!(parse_request(bad), Request::Bad, "{bad:?}");
        }
    }

    #[test]
    fn serves_metrics_404s_the_rest_and_a_stalled_client_stalls_nobody() {
        let metrics = Arc::new(Mutex::new(PromMetrics::new(
            HostLabels {
                labels: vec![("version".into(), "t".into())],
            },
            0.0,
        )));
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), metrics.clone()).unwrap();
        let addr = server.addr;
        // A client that connects and sends half a request, then nothing.
        let mut stalled = TcpStream::connect(addr).unwrap();
        stalled.write_all(b"GET /metr").unwrap();
        let t = Instant::now();
        let ok = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "not held up by the stalled one"
        );
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(ok.contains("tickburst_info{version=\"t\"} 1"), "{ok}");
        // The sampler's lock is free while the stalled client waits.
        assert!(metrics.try_lock().is_ok());
        assert!(get(addr, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(addr, b"hello\r\n\r\n").starts_with("HTTP/1.1 400"));
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', REQUEST_MAX * 4));
        assert!(get(addr, &huge).starts_with("HTTP/1.1 431"));
        // The stalled client is answered 408 at its deadline and closed.
        stalled.set_read_timeout(Some(CLIENT_DEADLINE * 3)).unwrap();
        let mut out = String::new();
        let _ = stalled.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        let e = MetricsServer::start(addr, metrics).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!("--listen {addr}: ")),
            "{e}"
        );
    }
}
