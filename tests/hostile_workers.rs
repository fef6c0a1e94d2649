//! Workers are untrusted from Apache's side: a worker runs tenant code, and
//! nothing it sends may desync the client connection, reach a log file raw,
//! or make an Apache thread wait forever. Also: queue-timeout is a real
//! bound (a request answered 503 is never run later), and request-timeout
//! measures the application, not a slow client.
//!
//! `tests/workers/hostile_worker.py` is a worker that speaks the frame
//! protocol and lies on demand (declared as language `hostile` here).

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

// ------------------------------------------------------------- helpers --

/// An Apache with group `evil` (the hostile worker) mounted at /h, plus `extra`.
fn start_hostile(name: &str, extra: &str) -> Apache {
    ensure_user("procd-test-a");
    let conf = format!(
        "ProcdLanguages @DIR@/hostile.toml\n\
         LanguageGroup evil language=hostile user=procd-test-a app=@DIR@/hostile_worker.py env=HOSTILE_PID_FILE=@DIR@/claim_pid\n\
         LanguageMount /h evil\n{extra}"
    );
    let mut a = Apache::new(name, Mpm::Event, &conf);
    let worker = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workers/hostile_worker.py");
    std::fs::copy(worker, a.dir.join("hostile_worker.py")).unwrap();
    std::fs::write(
        a.dir.join("hostile.toml"),
        format!(
            "[language.hostile]\nprotocol = \"procd\"\ncommand = \"/usr/bin/python3 {}/hostile_worker.py\"\n",
            a.dir.display()
        ),
    )
    .unwrap();
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    if !wait_until(Duration::from_secs(10), || a.get("/h/ok").status == 200) {
        a.fail("the hostile group does not answer /h/ok");
    }
    a
}

/// Sends `raw` and reads until the server closes or `limit` passes:
/// (bytes, closed by the server).
fn exchange(a: &Apache, raw: &[u8], limit: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.write_all(raw).unwrap();
    let deadline = Instant::now() + limit;
    let (mut got, mut buf) = (Vec::new(), [0u8; 65536]);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return (got, false);
            }
            Err(_) => return (got, true),
        }
    }
}

/// Waits up to 3 s for the error log to contain `needle`.
fn log_has(a: &Apache, needle: &str) -> bool {
    wait_until(Duration::from_secs(3), || a.error_log().contains(needle))
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

// ---------------------------------------------- 3. untrusted responses --

#[test]
fn a_lying_content_length_never_desyncs_the_connection() {
    let a = start_hostile("hostile-cl", "");
    // Too many bytes: a smuggled response after the declared 5 bytes, with a
    // second request pipelined on the same connection.
    for path in ["/h/cl-long", "/h/cl-long-split"] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n");
        let (got, closed) = exchange(&a, raw.as_bytes(), Duration::from_secs(5));
        let text = String::from_utf8_lossy(&got);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        if !closed || !text.starts_with("HTTP/1.1 200") || body != "hello" || text.contains("X-Smuggled") {
            a.fail(&format!("{path}: closed={closed}, the client read {text:?}"));
        }
        if !log_has(&a, "more than its Content-Length (5)") {
            a.fail(&format!("{path}: no log line for a Content-Length exceeded"));
        }
    }
    // Too few: the declared 100 bytes never come; the next response must not
    // be read as the rest of this body.
    let raw = "GET /h/cl-short HTTP/1.1\r\nHost: x\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n";
    let (got, closed) = exchange(&a, raw.as_bytes(), Duration::from_secs(5));
    let text = String::from_utf8_lossy(&got);
    if !closed || text.contains("Hello, World!") || !text.ends_with("\r\n\r\nhello") {
        a.fail(&format!("cl-short: closed={closed}, the client read {text:?}"));
    }
    if !log_has(&a, "sent 5 bytes of its Content-Length (100)") {
        a.fail("cl-short: no log line for a short body");
    }
    // A HEAD answer and a 304 have a Content-Length without a body: not cut.
    let r = a.request("HEAD /h/cl-short HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if r.status != 200 || !r.head.contains("Content-Length: 100") || !r.body.is_empty() {
        a.fail(&format!("HEAD: {} {:?} {:?}", r.status, r.head, r.text()));
    }
    let r = a.get("/h/not-modified");
    if r.status != 304 || !r.body.is_empty() {
        a.fail(&format!("304: {} {:?}", r.status, r.head));
    }
    // Invalid values: 502 before anything is sent.
    for v in ["5x", "-1", "%2B5", "", "0x5", "99999999999999999999999", "5,5", "5%205", "5%0D"] {
        let r = a.get(&format!("/h/cl-value?v={v}"));
        if r.status != 502 || r.text().contains("hello") {
            a.fail(&format!("Content-Length {v:?}: {} {:?}", r.status, r.text()));
        }
    }
    if !log_has(&a, "invalid Content-Length") {
        a.fail("no log line for an invalid Content-Length");
    }
    let r = a.get("/h/cl-conflict");
    if r.status != 502 || r.text().contains("hello") || !log_has(&a, "conflicting Content-Length") {
        a.fail(&format!("conflicting Content-Length: {} {:?}", r.status, r.text()));
    }
    // The same value twice is one header.
    let r = a.get("/h/cl-same");
    if r.status != 200 || r.text() != "hello" || r.head.to_ascii_lowercase().matches("content-length").count() != 1 {
        a.fail(&format!("duplicate equal Content-Length: {} {:?} {:?}", r.status, r.head, r.text()));
    }
    // Honest answers are untouched, also on a kept-alive connection.
    let raw = "GET /h/ok HTTP/1.1\r\nHost: x\r\n\r\nGET /h/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (got, closed) = exchange(&a, raw.as_bytes(), Duration::from_secs(5));
    if !closed || count(&got, b"HTTP/1.1 200 OK") != 2 || count(&got, b"\r\n\r\nhello") != 2 {
        a.fail(&format!("keep-alive: {:?}", String::from_utf8_lossy(&got)));
    }
}

#[test]
fn only_final_statuses_200_to_599() {
    let a = start_hostile("hostile-status", "");
    for s in [100, 101, 103, 199, 600, 999] {
        let r = a.get(&format!("/h/status?s={s}"));
        if r.status != 502 || r.text().contains("hello") {
            a.fail(&format!("status {s}: the client got {} {:?}", r.status, r.text()));
        }
        if !log_has(&a, &format!("invalid status {s}")) {
            a.fail(&format!("status {s}: no log line"));
        }
    }
    // 204 and 304 have no body: bytes a worker sends anyway never reach the
    // client, where they would be read as the next response.
    let raw = "GET /h/status?s=204 HTTP/1.1\r\nHost: x\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (got, _) = exchange(&a, raw.as_bytes(), Duration::from_secs(5));
    let text = String::from_utf8_lossy(&got);
    if !text.starts_with("HTTP/1.1 204") || text.contains("hello") || !text.ends_with("\r\n\r\nHello, World!\n") {
        a.fail(&format!("204 with a body: the client read {text:?}"));
    }
    for s in [200, 404, 410] {
        let r = a.get(&format!("/h/status?s={s}"));
        if r.status != s {
            a.fail(&format!("status {s}: the client got {}", r.status));
        }
    }
}

#[test]
fn worker_text_reaches_the_log_escaped() {
    let a = start_hostile("hostile-log", "");
    let r = a.get("/h/error-text");
    if r.status != 500 || r.text().contains("FORGED") {
        a.fail(&format!("error-text: {} {:?}", r.status, r.text()));
    }
    // Apache's own log escaping doubles the backslash of our `\xNN`.
    let has = |needle: &str| wait_until(Duration::from_secs(3), || a.error_log().replace(r"\\", r"\").contains(needle));
    if !has(r#""boom\x0d\x0a[Mon Jan 01"#) || !has(r"FORGED LINE\x1b[2J\x1b]0;title\x07\x7f\x9b31m tail") {
        a.fail("the ERROR text is not in the log, escaped as \\xNN");
    }
    let r = a.get("/h/bad-header");
    if r.status != 502 || !has(r"X-Evil\x1b[31m\x0dForged") {
        a.fail(&format!("bad-header: {}: its name is not in the log, escaped", r.status));
    }
    let log = std::fs::read(a.dir.join("error.log")).unwrap();
    let raw: Vec<String> =
        log.iter().filter(|b| (**b < 0x20 && **b != b'\n') || **b == 0x7f).map(|b| format!("0x{b:02x}")).collect();
    if !raw.is_empty() || count(&log, "\u{9b}".as_bytes()) != 0 {
        a.fail(&format!("control characters reached the error log raw: {raw:?}"));
    }
    if log.split(|b| *b == b'\n').any(|l| l.starts_with(b"[Mon Jan 01")) {
        a.fail("a worker forged a line of the error log");
    }
}

#[test]
fn the_pid_in_hello_is_only_displayed() {
    let conf =
        "LanguageGroup victim language=python user=procd-test-a \"command=/usr/bin/python3 @DIR@/echo_worker.py\"";
    let a = start_hostile("hostile-pid", conf);
    // A worker of another group dies: the manager records how.
    let who = a.wait_for_group("victim", Duration::from_secs(10));
    let pid = field(&who, "pid").to_string();
    let _ = ask(&a.socket("victim"), "crash");
    let record = a.dir.join("run/procd/exits").join(&pid);
    if !wait_until(Duration::from_secs(5), || record.exists()) {
        a.fail(&format!("no exit record {} for the crashed victim worker", record.display()));
    }
    // The hostile worker claims that pid in its HELLO, then closes.
    std::fs::write(a.dir.join("claim_pid"), &pid).unwrap();
    let _ = std::process::Command::new("chmod").arg("a+r").arg(a.dir.join("claim_pid")).status();
    let r = a.get("/h/spoof-pid");
    if r.status != 502 || !log_has(&a, &format!("group evil: worker pid {pid} ")) {
        a.fail(&format!("spoof-pid: {}", r.status));
    }
    let line = a.error_log().lines().find(|l| l.contains("group evil: worker pid")).unwrap_or_default().to_string();
    if line.contains("exited with status 3") {
        a.fail(&format!("another group's exit record was reported for a claimed pid: {line}"));
    }
}
