//! A minimal HTTP/1.1 client for the tests: one request per connection,
//! chunked bodies decoded, and timing of when a part of a body arrived.

use super::apache::Apache;
use super::apache::wait_until;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A minimal HTTP answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Apache {
    /// A GET over a fresh connection.
    pub fn get(&self, path: &str) -> Response {
        self.request(&format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
    }

    /// Sends a raw request and reads the whole answer (connection closes).
    pub fn request(&self, raw: &str) -> Response {
        self.request_bytes(raw.as_bytes())
    }

    /// Sends raw bytes and reads the whole answer (connection closes).
    pub fn request_bytes(&self, raw: &[u8]) -> Response {
        let mut s =
            TcpStream::connect(("127.0.0.1", self.port)).unwrap_or_else(|e| self.fail(&format!("connect: {e}")));
        s.set_read_timeout(Some(Duration::from_secs(20))).ok();
        s.write_all(raw).unwrap_or_else(|e| self.fail(&format!("send: {e}")));
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap_or_else(|e| self.fail(&format!("read: {e}")));
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| self.fail("no HTTP head"));
        let head = String::from_utf8_lossy(&buf[..split]).into_owned();
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut body = buf[split + 4..].to_vec();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body).unwrap_or_else(|| self.fail("malformed chunked body"));
        }
        Response { status, head, body }
    }
}

/// Decodes a chunked HTTP body.
pub fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Reads the whole answer; also when `needle` first arrived (since `started`).
/// A read interrupted by a signal (other tests' children) is retried.
pub fn read_until_closed(
    c: &mut std::net::TcpStream,
    started: std::time::Instant,
    needle: &str,
) -> (String, Option<Duration>) {
    let (mut got, mut buf, mut first_seen) = (Vec::new(), [0u8; 4096], None);
    loop {
        let n = match c.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) | Ok(0) => break,
            Ok(n) => n,
        };
        got.extend_from_slice(&buf[..n]);
        if first_seen.is_none() && memchr::memmem::find(&got, needle.as_bytes()).is_some() {
            first_seen = Some(started.elapsed());
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), first_seen)
}

/// A GET to 127.0.0.1:`port` over a fresh connection, for client threads
/// (no `Apache` at hand): the answer, or what went wrong.
pub fn http_get(port: u16, path: &str) -> Result<Response, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("{path}: connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("{path}: send: {e}"))?;
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 16384];
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("{path}: read after {} bytes: {e}", buf.len())),
        }
    }
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{path}: no HTTP head in {:?}", String::from_utf8_lossy(&buf)))?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut body = buf[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body).ok_or_else(|| format!("{path}: a cut chunked body ({} bytes)", body.len()))?;
    }
    Ok(Response { status, head, body })
}

/// A field of the flat JSON object the test apps print: a string
/// (unescaped) or, for other values, the raw text up to `,` or `}`.
pub fn json_field(body: &str, key: &str) -> Option<String> {
    let needle = format!("\"{key}\":");
    let rest = body[body.find(&needle)? + needle.len()..].trim_start();
    let Some(s) = rest.strip_prefix('"') else {
        return Some(rest.split([',', '}']).next()?.trim().to_string());
    };
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// The sha256 of `data` in hex, as `sha256sum` prints it.
pub fn sha256_hex(data: &[u8]) -> String {
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().expect("stdin").write_all(data).expect("write to sha256sum");
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// A 5 MB binary upload to `PREFIX/upload` (the app echoes its sha256 and
/// length), then a 20 MB answer from `PREFIX/big?mb=20` (bytes 0..=255
/// repeated): what every language's test checks about bodies.
pub fn big_bodies_both_ways(a: &Apache, prefix: &str) {
    let payload: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i.wrapping_mul(7919) >> 3) as u8).collect();
    let expected = sha256_hex(&payload);
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    write!(
        s,
        "POST {prefix}/upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    )
    .unwrap();
    s.write_all(&payload).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    if !answer.contains(&format!("{expected} {}", payload.len())) {
        a.fail(&format!("upload digest: expected {expected}, got {answer}"));
    }
    let r = a.get(&format!("{prefix}/big?mb=20"));
    if r.status != 200 || r.body.len() != 20 << 20 || r.body[..256] != (0..=255u8).collect::<Vec<_>>()[..] {
        a.fail(&format!("20 MB response: {} {} bytes", r.status, r.body.len()));
    }
}

/// `path` answers "first", pauses about a second, then `last`: the first
/// part must reach the client before the last is made.
pub fn first_part_before_the_last(a: &Apache, path: &str, last: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    let t0 = Instant::now();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let (text, first_at) = read_until_closed(&mut s, t0, "first");
    let total = t0.elapsed();
    let first = first_at.unwrap_or_else(|| a.fail(&format!("{path}: no first part in {text:?}")));
    eprintln!("{path}: first part after {} ms, all after {} ms", first.as_millis(), total.as_millis());
    if first > Duration::from_millis(700) || total < Duration::from_millis(900) || !text.contains(last) {
        a.fail(&format!("{path}: first part at {first:?}, end at {total:?}: {text:?}"));
    }
}

/// `path` answers 413 without reading the body of a POST that expects
/// `100 Continue`: the client gets the 413 and no 100 Continue.
pub fn refused_without_100_continue(a: &Apache, path: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    if !text.starts_with("HTTP/1.1 413") || text.contains("100 Continue") {
        a.fail(&format!("expected a bare 413: {text}"));
    }
}

/// 100-continue end to end: `PREFIX/reject` answers 413 without reading,
/// so the client gets no 100 Continue; `PREFIX/upload` reads the body, so
/// 100 Continue comes first, then the answer.
pub fn expect_100_continue_end_to_end(a: &Apache, prefix: &str) {
    refused_without_100_continue(a, &format!("{prefix}/reject"));
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST {prefix}/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 25];
    s.read_exact(&mut first).unwrap();
    if !String::from_utf8_lossy(&first).starts_with("HTTP/1.1 100 Continue") {
        a.fail(&format!("expected 100 Continue, got {:?}", String::from_utf8_lossy(&first)));
    }
    s.write_all(b"abcd").unwrap();
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    if !rest.contains("200 OK") || !rest.contains(" 4") {
        a.fail(&format!("after 100 Continue: {rest}"));
    }
}

/// Five `apachectl graceful` under 4 clients asking `PREFIX/whoami?s=0.05`
/// (whose answer starts with the worker's generation, or with anything
/// that differs between generations) until after the last: no request
/// fails, answers come from at least 5 generations, no generation was
/// signalled (PD0207) or failed to start (PD0205). Returns the first words
/// of the answers.
pub fn five_gracefuls_under_load(a: &mut Apache, group: &str, prefix: &str) -> BTreeSet<String> {
    let path = format!("{prefix}/whoami?s=0.05");
    let serving = format!("PD0204: group {group}: generation");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let generations = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failures, generations, port) =
                (stop.clone(), ok.clone(), failures.clone(), generations.clone(), a.port);
            let path = path.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(90);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    match http_get(port, &path) {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                            let text = r.text();
                            let generation = text.split_whitespace().next().unwrap_or("").to_string();
                            generations.lock().unwrap().insert(generation);
                        }
                        Ok(r) => failures.lock().unwrap().push(format!("{} {:?}", r.status, r.text())),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for i in 1..=5 {
        let before = a.log_count(&serving);
        a.graceful();
        if !wait_until(Duration::from_secs(20), || a.log_count(&serving) > before) {
            a.fail(&format!("graceful {i}: no new generation of {group} serves"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let answered = ok.load(Ordering::SeqCst);
    let generations = generations.lock().unwrap().clone();
    eprintln!("{answered} answers from {} generations, {} failures", generations.len(), failures.len());
    if !failures.is_empty() {
        a.fail(&format!(
            "{} of {} requests failed, e.g. {:?}",
            failures.len(),
            answered + failures.len(),
            &failures[..failures.len().min(5)]
        ));
    }
    if generations.len() < 5 || answered < 50 {
        a.fail(&format!("{answered} answers from generations {generations:?}"));
    }
    if a.log_count("PD0207") > 0 || a.log_count("PD0205") > 0 {
        a.fail("a generation was signalled (PD0207) or failed to start (PD0205)");
    }
    generations
}
