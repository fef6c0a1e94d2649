//! The `fastcgi` backend: FastCGI (responder role) to workers such as
//! `php-cgi`, which accept on the group's socket (their fd 0). One
//! connection per request (no FCGI_KEEP_CONN): a php-cgi serves one
//! connection at a time, so a kept connection would pin it to one Apache
//! thread.
//!
//! The exchange, and why:
//! 1. Connect (within `queue-timeout`) and send BEGIN_REQUEST and the
//!    PARAMS records whole, with the empty one that ends them (a worker
//!    that takes the request has all of it at once, no round trip). Among
//!    the parameters: when Apache began to queue it and its queue-timeout.
//! 2. Wait until a worker has read them (the kernel's count of unread
//!    bytes drops to zero; a tiny send buffer makes the socket writable
//!    exactly then, so the wait is a `poll`, not a timer). Nobody within
//!    `queue-timeout`: 503. A worker that takes such a request later
//!    finds it older than its queue-timeout, and the guard drops it unrun
//!    (`procd_php_guard.php`). **A request answered 503 is never run.**
//! 3. From then on `request-timeout` runs: the body as STDIN records and
//!    their end (as Apache reads it from the client, interleaved with
//!    reading the answer, so neither side can block the other), STDOUT
//!    parsed as a CGI head then streamed to the client, STDERR lines to
//!    the error log, until END_REQUEST.

use super::readbuf::ReadBuf;
use super::{
    BodyLength, Client, Outcome, Target, bad_gateway_plain, connect_failure, connect_within, content_length, epoch_ms,
    recent_death,
};
use crate::protocol::cgi::{CgiHead, head_may_have_changed, parse_head};
use crate::protocol::escape_log_bounded;
use crate::protocol::fastcgi::{self, Record, kind};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::fs::File;
use std::io::{ErrorKind, Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime};

/// Largest body chunk read from the client for one STDIN record (a
/// multiple of 8: no padding).
pub(super) const BODY_CHUNK: usize = 65_528;
/// A chunked request body is held in memory up to this size, then spooled
/// to an unlinked temporary file: php-cgi needs CONTENT_LENGTH.
pub const SPOOL_IN_MEMORY: usize = 1 << 20;
/// At most this much of a worker's STDERR is logged per request (then one
/// line says how much was dropped); a line is cut at `STDERR_LINE`.
const STDERR_BUDGET: usize = 64 << 10;
const STDERR_LINE: usize = 8 << 10;
/// Longest single wait before the kernel is asked again whether a worker
/// took the request (when the send-buffer wake-up does not fire).
const TAKEN_POLL_MAX: Duration = Duration::from_millis(5);

/// Where the request body comes from.
pub(super) enum Body {
    /// Streamed from the client as the worker consumes it.
    Client,
    /// A chunked body, read whole before connecting (bounded in memory).
    Memory(Vec<u8>, usize),
    File(File),
    Done,
}

impl Body {
    /// The next piece of the body (at most `BODY_CHUNK`); empty at its end.
    pub(super) fn next_piece(&mut self, client: &mut dyn Client) -> Result<Vec<u8>, String> {
        match self {
            Body::Client => client.read_body(BODY_CHUNK),
            Body::Memory(data, at) => {
                let end = (*at + BODY_CHUNK).min(data.len());
                let piece = data[*at..end].to_vec();
                *at = end;
                Ok(piece)
            }
            Body::File(f) => {
                let mut buf = vec![0u8; BODY_CHUNK];
                let n = f.read(&mut buf).map_err(|e| format!("reading the spooled body: {e}"))?;
                buf.truncate(n);
                Ok(buf)
            }
            Body::Done => Ok(Vec::new()),
        }
    }
}

/// Reads a chunked body whole: in memory up to `SPOOL_IN_MEMORY`, the rest
/// in an unlinked temporary file. Returns the body and its length.
pub(super) fn spool(client: &mut dyn Client) -> Result<(Body, u64), String> {
    let mut mem = Vec::new();
    loop {
        let chunk = client.read_body(BODY_CHUNK)?;
        if chunk.is_empty() {
            let n = mem.len() as u64;
            return Ok((Body::Memory(mem, 0), n));
        }
        mem.extend_from_slice(&chunk);
        if mem.len() > SPOOL_IN_MEMORY {
            break;
        }
    }
    let mut file = temp_file().map_err(|e| format!("cannot create a temporary file to spool the chunked body: {e}"))?;
    let mut total = mem.len() as u64;
    file.write_all(&mem).map_err(|e| format!("spooling the chunked body: {e}"))?;
    drop(mem);
    loop {
        let chunk = client.read_body(BODY_CHUNK)?;
        if chunk.is_empty() {
            break;
        }
        total += chunk.len() as u64;
        file.write_all(&chunk).map_err(|e| format!("spooling the chunked body: {e}"))?;
    }
    file.rewind().map_err(|e| format!("spooling the chunked body: {e}"))?;
    Ok((Body::File(file), total))
}

/// An unlinked file in the temporary directory, readable only by us.
fn temp_file() -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    match std::fs::OpenOptions::new().read(true).write(true).mode(0o600).custom_flags(libc::O_TMPFILE).open(&dir) {
        Ok(f) => Ok(f),
        Err(_) => {
            // No O_TMPFILE here: a fresh name, unlinked at once.
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.join(format!(".procd-body-{}-{n}", std::process::id()));
            let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        }
    }
}

/// The CGI environment blob (`name\0value\0` ...) as FastCGI pairs.
fn pairs(env: &[u8], extra: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(env.len() + 256);
    let mut parts = env.split(|b| *b == 0);
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        if k.is_empty() || extra.iter().any(|(name, _)| name.as_bytes() == k) {
            continue;
        }
        fastcgi::encode_pair(&mut out, k, v);
    }
    for (k, v) in extra {
        fastcgi::encode_pair(&mut out, k.as_bytes(), v.as_bytes());
    }
    out
}

/// What the worker's STDERR costs the log, per request.
struct Stderr {
    line: Vec<u8>,
    logged: usize,
    dropped: usize,
}

impl Stderr {
    fn feed(&mut self, group: &str, mut data: &[u8]) {
        while !data.is_empty() {
            let nl = memchr::memchr(b'\n', data);
            let take = nl.map_or(data.len(), |i| i + 1);
            let room = STDERR_LINE - self.line.len();
            let (part, rest) = data.split_at(take.min(room));
            self.line.extend_from_slice(part);
            data = rest;
            if self.line.ends_with(b"\n") || self.line.len() >= STDERR_LINE {
                self.emit(group);
            }
        }
    }

    fn emit(&mut self, group: &str) {
        let line = std::mem::take(&mut self.line);
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.is_empty() {
            return;
        }
        if self.logged + text.len() > STDERR_BUDGET {
            self.dropped += text.len();
            return;
        }
        self.logged += text.len();
        let latin1: String = text.iter().map(|b| *b as char).collect();
        crate::logid::pd_log!(
            crate::logid::WORKER_STDERR,
            group = group,
            "worker stderr: {}",
            escape_log_bounded(&latin1)
        );
    }

    fn finish(&mut self, group: &str) {
        if !self.line.is_empty() {
            self.emit(group);
        }
        if self.dropped > 0 {
            crate::logid::pd_log!(
                crate::logid::WORKER_STDERR,
                group = group,
                "worker stderr: {} more bytes of this request's error output were not logged (at most {STDERR_BUDGET} per request)",
                self.dropped
            );
        }
    }
}

/// Waits until the worker has read everything sent so far (it took the
/// request). `Err(())` at `deadline`.
fn wait_taken(stream: &UnixStream, deadline: Instant) -> Result<(), ()> {
    let mut pause = Duration::from_micros(50);
    loop {
        if matches!(crate::os::unread_by_peer(stream), Ok(0)) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(());
        }
        // With the tiny send buffer, writable means "the worker read it".
        let wait = left.min(Duration::from_millis(100));
        let ms = u16::try_from(wait.as_millis().max(1)).unwrap_or(100);
        let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
        let before = Instant::now();
        let _ = poll(&mut fds, PollTimeout::from(ms));
        if matches!(crate::os::unread_by_peer(stream), Ok(0)) {
            return Ok(());
        }
        if before.elapsed() < Duration::from_millis(1) {
            // Writable with bytes still unread: fall back to a short sleep.
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(TAKEN_POLL_MAX);
        }
    }
}

/// Writes what it can of `out[*at..]` without blocking; `Err` if the worker
/// closed its side.
fn write_some(stream: &mut UnixStream, out: &[u8], at: &mut usize) -> Result<(), ()> {
    while *at < out.len() {
        match stream.write(&out[*at..]) {
            Ok(0) => return Err(()),
            Ok(n) => *at += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    Ok(())
}

/// Sends one request to `target`'s FastCGI workers and streams the answer.
pub fn proxy(client: &mut dyn Client, target: &Target, env: Vec<u8>) -> Outcome {
    let g = &target.group;
    // 0. A chunked body is read whole first (bounded memory, then a file):
    // php-cgi needs CONTENT_LENGTH, and a client that is slow to send it
    // must not hold a worker.
    let mut extra: Vec<(&str, String)> = Vec::new();
    let mut body = match client.body_length() {
        BodyLength::None => Body::Done,
        BodyLength::Known(_) => Body::Client,
        BodyLength::Chunked => match spool(client) {
            Ok((body, n)) => {
                extra.push(("CONTENT_LENGTH", n.to_string()));
                body
            }
            Err(e) => {
                return Outcome::Failed {
                    status: 400,
                    retry_after: None,
                    log: format!("group {g}: reading the chunked request body failed: {e}"),
                };
            }
        },
    };
    let started = SystemTime::now();
    let queue_timeout = target.queue_timeout.max(Duration::from_millis(50));
    let queue_deadline = Instant::now() + queue_timeout;
    // The worker's guard drops a request that waited past queue-timeout
    // (Apache answered it 503 then): a request is sent whole, so a worker
    // that takes it has everything at once.
    extra.push(("PROCD_QUEUED_AT_MS", epoch_ms(started).to_string()));
    extra.push(("PROCD_QUEUE_TIMEOUT_MS", queue_timeout.as_millis().to_string()));
    let mut out = Vec::with_capacity(env.len() + 512);
    fastcgi::encode_begin(&mut out, false);
    fastcgi::encode_params(&mut out, &pairs(&env, &extra));
    fastcgi::encode_end(&mut out, kind::PARAMS);
    drop(env);

    // 1. Connect and queue the request; STDIN follows once a worker has
    // read it (php-cgi reads STDIN only when the script wants it, so bytes
    // of it would stay unread and hide that the request was taken).
    let mut stream = match connect_within(&target.socket, queue_deadline) {
        Ok(s) => s,
        Err(e) => return connect_failure(target, queue_timeout, e),
    };
    // The smallest send buffer: once the queued request is in the socket,
    // it is not writable again until a worker has read it.
    let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::SndBuf, &1);
    let queue_left = queue_deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let _ = stream.set_write_timeout(Some(queue_left));
    let unavailable = |log: String| Outcome::Failed { status: 503, retry_after: Some(5), log };
    if let Err(e) = stream.write_all(&out) {
        return unavailable(format!(
            "group {g}: cannot queue the request ({e}): no worker took it within queue-timeout ({} s); the group is overloaded or its requests are slow: add processes=",
            queue_timeout.as_secs_f32()
        ));
    }
    // 2. A worker takes it.
    if wait_taken(&stream, queue_deadline).is_err() {
        return unavailable(format!(
            "group {g}: no worker became free within queue-timeout ({} s); the group is overloaded or its requests are slow: add processes= (the request was not run)",
            queue_timeout.as_secs_f32()
        ));
    }
    let taken = Instant::now();
    let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::SndBuf, &(256 << 10));
    if stream.set_nonblocking(true).is_err() {
        return bad_gateway_plain(format!("group {g}: cannot make the worker connection non-blocking"));
    }

    // 3. The body, the answer.
    out.clear();
    let mut out_at = 0;
    // The end of STDIN is sent even without a body (Body::Done gives it).
    let mut body_done = false;
    let mut deadline = taken + target.request_timeout;
    // Records not decoded yet: grows to what the answers need (a hello
    // page's few hundred bytes), not a 64 KiB allocation per request.
    let mut inbuf: Vec<u8> = Vec::new();
    let mut chunk = ReadBuf::take(64 << 10);
    let mut head_buf: Vec<u8> = Vec::new();
    let mut head_sent = false;
    let mut redirect: Option<String> = None;
    let mut declared: Option<u64> = None;
    let mut sent: u64 = 0;
    let mut bodiless = false;
    let mut unflushed = false;
    let mut worker_gone_writing = false;
    let mut stderr = Stderr { line: Vec::new(), logged: 0, dropped: 0 };
    let fail = |head_sent: bool, status: u16, log: String| {
        if head_sent { Outcome::Cut { log } } else { Outcome::Failed { status, retry_after: None, log } }
    };
    let dead_worker = |what: &str| {
        let who = recent_death(&target.exits, g, started)
            .unwrap_or_else(|| "the worker closed the connection (it may have crashed)".to_string());
        format!("group {g}: {who} {what}")
    };

    let outcome = 'exchange: loop {
        // Refill what goes to the worker: the next piece of the body.
        if out_at == out.len() && !body_done && !worker_gone_writing {
            out.clear();
            out_at = 0;
            let waiting = Instant::now();
            let piece = body.next_piece(client);
            deadline += waiting.elapsed();
            match piece {
                Ok(piece) if piece.is_empty() => {
                    fastcgi::encode_end(&mut out, kind::STDIN);
                    body_done = true;
                    body = Body::Done;
                }
                Ok(piece) => fastcgi::encode_stream(&mut out, kind::STDIN, &piece),
                Err(e) => {
                    break fail(
                        head_sent,
                        400,
                        format!("group {g}: reading the request body from the client failed: {e}"),
                    );
                }
            }
        }
        if out_at < out.len() && !worker_gone_writing && write_some(&mut stream, &out, &mut out_at).is_err() {
            // The worker stopped reading (it may have answered already).
            worker_gone_writing = true;
        }

        // Read what the worker sent.
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if out_at == out.len() && !body_done && !worker_gone_writing {
                    continue; // more body to send first
                }
                if unflushed {
                    let waiting = Instant::now();
                    let flushed = client.flush();
                    deadline += waiting.elapsed();
                    unflushed = false;
                    if !flushed {
                        break Outcome::Done;
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break fail(
                        head_sent,
                        504,
                        format!(
                            "group {g}: request-timeout ({} s) exceeded: the worker did not finish in time; the manager kills it and starts another",
                            target.request_timeout.as_secs_f32()
                        ),
                    );
                }
                let mut flags = PollFlags::POLLIN;
                if out_at < out.len() && !worker_gone_writing {
                    flags |= PollFlags::POLLOUT;
                }
                let ms = u16::try_from(left.as_millis().clamp(1, 10_000)).unwrap_or(10_000);
                let mut fds = [PollFd::new(stream.as_fd(), flags)];
                let _ = poll(&mut fds, PollTimeout::from(ms));
                continue;
            }
            Err(_) => 0,
        };
        if n == 0 {
            stderr.finish(g);
            break fail(head_sent, 502, dead_worker("before it finished its response"));
        }
        inbuf.extend_from_slice(&chunk[..n]);
        let mut used_total = 0;
        loop {
            let (record, used) = match fastcgi::decode(&inbuf[used_total..]) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    stderr.finish(g);
                    break 'exchange fail(
                        head_sent,
                        502,
                        format!("group {g}: malformed response from the worker: {e}"),
                    );
                }
            };
            used_total += used;
            match record {
                Record::Stderr(data) => stderr.feed(g, data),
                Record::Stdout(data) if redirect.is_some() => {
                    let _ = data; // a local redirect's body is discarded
                }
                Record::Stdout(data) if !head_sent => {
                    head_buf.extend_from_slice(data);
                    if !head_may_have_changed(head_buf.len(), data) {
                        continue;
                    }
                    match parse_head(&head_buf) {
                        Ok(None) => {}
                        Err(e) => {
                            stderr.finish(g);
                            break 'exchange fail(false, 502, format!("group {g}: bad answer from the worker: {e}"));
                        }
                        Ok(Some((CgiHead::LocalRedirect { location }, _))) => redirect = Some(location),
                        Ok(Some((CgiHead::Response { status, mut headers }, used))) => {
                            let length = match content_length(&mut headers) {
                                Ok(length) => length,
                                Err(why) => {
                                    stderr.finish(g);
                                    break 'exchange fail(
                                        false,
                                        502,
                                        format!("group {g}: bad answer from the worker: {why}"),
                                    );
                                }
                            };
                            bodiless = status == 204 || status == 304;
                            if !bodiless && !client.head_only() {
                                declared = length;
                            }
                            client.start_response(status, &headers);
                            head_sent = true;
                            let rest = head_buf.split_off(used);
                            head_buf = Vec::new();
                            if let Some(outcome) =
                                write_body(client, g, &rest, declared, &mut sent, bodiless, &mut deadline)
                            {
                                break 'exchange outcome;
                            }
                            unflushed = !rest.is_empty();
                        }
                    }
                }
                Record::Stdout(data) => {
                    if let Some(outcome) = write_body(client, g, data, declared, &mut sent, bodiless, &mut deadline) {
                        break 'exchange outcome;
                    }
                    unflushed |= !data.is_empty();
                }
                Record::EndRequest { protocol_status, .. } => {
                    stderr.finish(g);
                    if protocol_status != fastcgi::status::REQUEST_COMPLETE {
                        let status = if protocol_status == fastcgi::status::OVERLOADED { 503 } else { 502 };
                        break 'exchange fail(
                            head_sent,
                            status,
                            format!(
                                "group {g}: the worker refused the request (FastCGI protocol status {protocol_status})"
                            ),
                        );
                    }
                    if let Some(location) = redirect.take() {
                        break 'exchange Outcome::LocalRedirect { location };
                    }
                    if !head_sent {
                        break 'exchange fail(
                            false,
                            502,
                            format!("group {g}: the worker ended the request without a response head"),
                        );
                    }
                    break 'exchange match declared {
                        Some(limit) if sent < limit => Outcome::Cut {
                            log: format!(
                                "group {g}: the worker ended its response after it sent {sent} bytes of its Content-Length ({limit})"
                            ),
                        },
                        _ => Outcome::Done,
                    };
                }
            }
        }
        inbuf.drain(..used_total);
    };
    if !body_done && client.body_length() != BodyLength::None {
        client.body_not_read();
    }
    if let Outcome::Cut { .. } = outcome {
        client.abort();
    }
    outcome
}

/// Body bytes to the client, held to the worker's Content-Length. `Some`
/// ends the exchange.
pub(super) fn write_body(
    client: &mut dyn Client,
    g: &str,
    data: &[u8],
    declared: Option<u64>,
    sent: &mut u64,
    bodiless: bool,
    deadline: &mut Instant,
) -> Option<Outcome> {
    if bodiless || data.is_empty() {
        return None;
    }
    let room = declared.map(|limit| limit - *sent);
    let over = room.is_some_and(|room| data.len() as u64 > room);
    let data = match (over, room) {
        (true, Some(room)) => &data[..room as usize],
        _ => data,
    };
    *sent += data.len() as u64;
    let waiting = Instant::now();
    let written = data.is_empty() || client.write(data);
    *deadline += waiting.elapsed();
    if !written {
        return Some(Outcome::Done); // the client left; closing tells the worker
    }
    over.then(|| Outcome::Cut {
        log: format!(
            "group {g}: the worker sent more than its Content-Length ({sent}); the response was stopped there"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_becomes_pairs_with_overrides() {
        let env = b"A\0one\0CONTENT_LENGTH\0\0B\0\0";
        let got = pairs(env, &[("CONTENT_LENGTH", "12".to_string())]);
        let decoded = fastcgi::decode_pairs(&got, 10).unwrap();
        assert_eq!(decoded, vec![(&b"A"[..], &b"one"[..]), (b"B", b""), (b"CONTENT_LENGTH", b"12")]);
    }
}
