//! An HTTP proxy between a client and an S3 server that answers chosen requests itself
//! with 500 or 503, or stalls them, to test retries against a real server.
//!
//! Each client connection carries one request: the proxy adds `Connection: close` to the
//! request it forwards (the header is not signed), so the server closes after its answer
//! and the client opens a new connection for the next request. That makes every request a
//! separate, countable unit the proxy can pick for a fault.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Which requests fail: request number `n` (counting from 0) gets a 503 when
/// `n % error_every == 1`, a 500 when `n % error_every == 2`, and a stall of `stall` when
/// `n % stall_every == 3`. Zero turns a kind off; `error_every == 1` fails everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Period of 500/503 answers (0: none; 1: every request gets a 503).
    pub error_every: u64,
    /// Period of stalls (0: none).
    pub stall_every: u64,
    /// How long a stalled request hangs before the proxy drops it.
    pub stall: Duration,
    /// Stall every read of a pack (`GET …/data/…`), whatever the period.
    pub stall_pack_reads: bool,
    /// Answer 403 AccessDenied to every object deletion outside `locks/`, as the store does
    /// for credentials whose policy allows `s3:DeleteObject` on `locks/*` only (aborting a
    /// multipart upload stays allowed).
    pub refuse_deletes: bool,
    /// Answer 404 NoSuchKey to every read of a snapshot (`GET …/snapshots/…`) while the
    /// listing still names it: a store whose nodes have not converged after a delete.
    pub missing_snapshot_reads: bool,
}

#[derive(Default)]
struct Shared {
    faults: Mutex<Faults>,
    requests: AtomicU64,
    errors: AtomicU64,
    stalls: AtomicU64,
    stop: AtomicBool,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`: the endpoint to give the client.
    pub endpoint: String,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`http://host:port`).
    pub fn start(upstream: &str, faults: Faults) -> FaultProxy {
        let upstream = upstream
            .strip_prefix("http://")
            .expect("an http:// upstream")
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let shared = Arc::new(Shared::default());
        *shared.faults.lock().expect("faults") = faults;
        let sh = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (sh, up) = (sh.clone(), upstream.clone());
                std::thread::spawn(move || serve(conn, &up, &sh));
            }
        });
        FaultProxy { endpoint, shared }
    }

    /// Changes which requests fail from now on.
    pub fn set(&self, faults: Faults) {
        *self.shared.faults.lock().expect("faults") = faults;
    }

    /// (requests seen, 500/503 answers given, stalls).
    pub fn counts(&self) -> (u64, u64, u64) {
        let s = &self.shared;
        (
            s.requests.load(Ordering::SeqCst),
            s.errors.load(Ordering::SeqCst),
            s.stalls.load(Ordering::SeqCst),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
    }
}

/// Reads until the end of the request head; returns (head, bytes read past it).
fn read_head(c: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        let n = c.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn answer(c: &mut TcpStream, code: u16) {
    let (reason, s3code) = if code == 503 {
        ("Slow Down", "SlowDown")
    } else if code == 403 {
        ("Forbidden", "AccessDenied")
    } else if code == 404 {
        ("Not Found", "NoSuchKey")
    } else {
        ("Internal Server Error", "InternalError")
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{s3code}</Code>\
         <Message>injected by the test proxy</Message></Error>"
    );
    let _ = write!(
        c,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = c.shutdown(Shutdown::Write);
    // Drain what the client still sends (a request body), so closing does not reset the
    // connection before it reads the answer.
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let mut sink = [0u8; 65536];
    while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
}

fn serve(mut c: TcpStream, upstream: &str, sh: &Shared) {
    let Some((head, rest)) = read_head(&mut c) else {
        return;
    };
    let n = sh.requests.fetch_add(1, Ordering::SeqCst);
    let f = *sh.faults.lock().expect("faults");
    if f.error_every == 1 || (f.error_every > 2 && n % f.error_every == 1) {
        sh.errors.fetch_add(1, Ordering::SeqCst);
        return answer(&mut c, 503);
    }
    if f.error_every > 2 && n % f.error_every == 2 {
        sh.errors.fetch_add(1, Ordering::SeqCst);
        return answer(&mut c, 500);
    }
    let target = head.lines().next().unwrap_or_default();
    if f.refuse_deletes
        && target.starts_with("DELETE ")
        && !target.contains("/locks/")
        && !target.contains("uploadId=")
    {
        sh.errors.fetch_add(1, Ordering::SeqCst);
        return answer(&mut c, 403);
    }
    if f.missing_snapshot_reads && target.starts_with("GET ") && target.contains("/snapshots/") {
        sh.errors.fetch_add(1, Ordering::SeqCst);
        return answer(&mut c, 404);
    }
    let pack_read =
        head.starts_with("GET ") && head.lines().next().is_some_and(|l| l.contains("/data/"));
    if (f.stall_pack_reads && pack_read) || (f.stall_every > 3 && n % f.stall_every == 3) {
        sh.stalls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(f.stall);
        return;
    }
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return; // the server is down: the client sees the connection close
    };
    let mut lines: Vec<&str> = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("Connection: close");
    let head = format!("{}\r\n\r\n", lines.join("\r\n"));
    if up.write_all(head.as_bytes()).is_err() || up.write_all(&rest).is_err() {
        return;
    }
    let (mut c2, mut up2) = match (c.try_clone(), up.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return,
    };
    let body = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut up2);
    });
    let _ = std::io::copy(&mut up, &mut c);
    let _ = c.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
    let _ = body.join();
}
