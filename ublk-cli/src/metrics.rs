//! `ublk add --metrics ADDR`: the device's figures at `http://ADDR/metrics` for a Prometheus
//! scraper, in the [`exposition`](crate::exposition) format.
//!
//! A minimal HTTP/1.1 server on std's `TcpListener`, on threads of its own so it never touches
//! the queues: `GET` (or `HEAD`) `/metrics` gets 200, another path 404, another method 405,
//! anything that is not an HTTP/1.x request 400; every answer closes the connection. Each
//! connection gets a thread and [`HEAD_DEADLINE`] to send its request, so a slow or silent
//! client holds one thread for that long and never the others; at most [`MAX_CONNECTIONS`] are
//! served at once, more are closed unanswered.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::error::CliError;
use crate::exposition::CONTENT_TYPE;

/// How long a client has to send its request line and headers.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);

/// How long writing the answer may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// The longest request head read; a scraper's is a few hundred bytes.
const MAX_HEAD: usize = 8192;

/// The listening socket, bound before the device is made so a taken address is refused first.
#[derive(Debug)]
pub struct Metrics {
    listener: TcpListener,
}

impl Metrics {
    /// Binds `addr`.
    pub fn bind(addr: SocketAddr) -> Result<Metrics, CliError> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| CliError::io(format!("serving metrics on {addr} (--metrics)"), e))?;
        Ok(Metrics { listener })
    }

    /// The address it listens on (the port the system chose, for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers scrapers with `render()` on a thread of its own, for the life of the process.
    pub fn serve(self, render: impl Fn() -> String + Send + Sync + 'static) -> io::Result<()> {
        let render = Arc::new(render);
        let active = Arc::new(AtomicUsize::new(0));
        std::thread::Builder::new()
            .name("ublk-metrics".into())
            .spawn(move || {
                for stream in self.listener.incoming() {
                    // A failed accept (the peer gave up, no descriptors left) concerns that
                    // connection only.
                    let Ok(stream) = stream else { continue };
                    if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                        active.fetch_sub(1, Ordering::AcqRel);
                        continue;
                    }
                    let slot = Slot(Arc::clone(&active));
                    let render = Arc::clone(&render);
                    let spawned = std::thread::Builder::new()
                        .name("ublk-metrics-conn".into())
                        .spawn(move || {
                            let _slot = slot;
                            let _ = answer(stream, &*render);
                        });
                    // The closure (and with it the slot and the stream) is dropped on failure.
                    drop(spawned);
                }
            })
            .map(drop)
    }
}

/// A connection being served: gives its place back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads one request from `stream` and answers it.
fn answer(mut stream: TcpStream, render: &dyn Fn() -> String) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let Some(head) = read_head(&mut stream)? else {
        return Ok(());
    };
    let response = respond(&head, render);
    stream.write_all(&response)?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// The request head (up to its blank line), or `None` if the client sent none in time. A head
/// too long to be a scraper's is returned as read: [`respond`] refuses it.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + HEAD_DEADLINE;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !ends_head(&head) && head.len() < MAX_HEAD {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) if head.is_empty() => return Ok(None),
            // Closed mid-head: answer what came (it is incomplete, so a 400).
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some(head))
}

fn ends_head(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n")
}

/// The whole response to a request head.
fn respond(head: &[u8], render: &dyn Fn() -> String) -> Vec<u8> {
    let Some(line) = request_line(head) else {
        return response("400 Bad Request", "text/plain", "bad request\n", true, "");
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return response("400 Bad Request", "text/plain", "bad request\n", true, "");
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || !target.starts_with('/') {
        return response("400 Bad Request", "text/plain", "bad request\n", true, "");
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        let head_only = method == "HEAD";
        return response(
            "404 Not Found",
            "text/plain",
            "not found: try /metrics\n",
            !head_only,
            "",
        );
    }
    match method {
        "GET" => response("200 OK", CONTENT_TYPE, &render(), true, ""),
        "HEAD" => response("200 OK", CONTENT_TYPE, &render(), false, ""),
        _ => response(
            "405 Method Not Allowed",
            "text/plain",
            "only GET and HEAD\n",
            true,
            "Allow: GET, HEAD\r\n",
        ),
    }
}

/// The request line of a complete head, if it is one (ASCII, ends with CRLF or LF).
fn request_line(head: &[u8]) -> Option<&str> {
    if !ends_head(head) {
        return None;
    }
    let end = head.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&head[..end]).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    (line.is_ascii() && !line.is_empty()).then_some(line)
}

fn response(status: &str, kind: &str, body: &str, with_body: bool, extra: &str) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{extra}\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> SocketAddr {
        let metrics = Metrics::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = metrics.local_addr().unwrap();
        metrics.serve(|| "ublk_x 1\n".to_owned()).unwrap();
        addr
    }

    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn metrics_are_served_and_everything_else_refused() {
        let addr = served();
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.contains("Content-Length: 9\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nublk_x 1\n"), "{ok}");
        let head = exchange(addr, b"HEAD /metrics?x=1 HTTP/1.0\n\n");
        assert!(
            head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let missing = exchange(addr, b"GET / HTTP/1.1\r\n\r\n");
        assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
        let post = exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(
            post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD"),
            "{post}"
        );
        for bad in [
            &b"garbage\r\n\r\n"[..],
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
        ] {
            let answer = exchange(addr, bad);
            assert!(answer.starts_with("HTTP/1.1 400 "), "{bad:?}: {answer}");
        }
        // Exactly as much as is read, so the server closes with nothing unread (which would
        // reset the connection under the answer).
        let huge = [b'a'; MAX_HEAD];
        assert!(exchange(addr, &huge).starts_with("HTTP/1.1 400 "));
    }

    #[test]
    fn a_silent_client_does_not_hold_up_others() {
        let addr = served();
        let silent: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let started = Instant::now();
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            started.elapsed() < HEAD_DEADLINE,
            "waited for the silent ones"
        );
        drop(silent);
    }

    #[test]
    fn a_taken_address_is_refused_by_name() {
        let first = Metrics::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let err = Metrics::bind(addr).unwrap_err().to_string();
        assert!(
            err.contains(&addr.to_string()) && err.contains("--metrics"),
            "{err}"
        );
    }
}
