//! The `http` backend: HTTP/1.1 to any program serving on the group's
//! Unix socket, or for `listen=tcp` on the loopback port its serving
//! generation published (PROTOCOL.md, "The http protocol"). Bodies stream both
//! ways (a chunked request body is re-chunked), `100 Continue` is end to
//! end, idle connections are kept per Apache child for the next request,
//! and an `Upgrade` (WebSocket) answered `101` becomes a tunnel.
//!
//! What the program sends is hostile input: its head is parsed by the
//! bounded parser of `protocol::http`, bad framing is a 502, and every
//! wait has a deadline.

use super::readbuf::ReadBuf;
use super::stream::Stream;
use super::{
    BodyLength, Client, ConnectError, HttpRequest, Outcome, Target, TunnelRead, bad_gateway_plain, connect_failure,
    connect_tcp_within, connect_within, recent_death,
};
use crate::config::languages::Listen;
use crate::protocol::escape_log_bounded;
use crate::protocol::http::{
    ChunkedDecoder, Forwarding, Framing, HeadSearch, RequestBody, ResponseHead, encode_request_head, has_token,
    requested_upgrade, response_framing, strip_hop_by_hop,
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How often Apache asks the kernel whether the program took a queued request.
const QUEUE_POLL: Duration = Duration::from_millis(100);
/// Largest piece of request body read from the client at once.
const BODY_CHUNK: usize = 64 << 10;
/// Read buffer for the program's answer (and each tunnel direction).
const READ_CHUNK: usize = 64 << 10;
/// How long Apache waits for the program's `100 Continue` (or its answer)
/// before it sends the body anyway, as curl does.
const CONTINUE_WAIT: Duration = Duration::from_secs(1);
/// Idle connections kept per Apache child process, all groups together:
/// enough for one per thread of a threaded child (the harness and Debian
/// run 25-64 threads), as mod_proxy keeps one backend connection per
/// thread. With fewer, a busy child closes and opens a connection for most
/// requests (measured: 16 made Node's p99 at -c 64 five times mod_proxy's).
const POOL_CAP: usize = 256;
/// An idle connection older than this is closed, not reused: less than
/// common keep-alive timeouts of servers (Node: 5 s), so that a request
/// seldom meets a connection its program is closing.
const POOL_IDLE: Duration = Duration::from_secs(2);

/// An idle keep-alive connection to a program.
struct Idle {
    /// The file its generation was published in (`Target::published`).
    published: PathBuf,
    /// Which generation that was when it was connected (`generation_of`):
    /// a new one (a new socket or port file renamed over the path) makes
    /// the connection stale.
    generation: u64,
    stream: Stream,
    since: Instant,
}

static POOL: Mutex<Vec<Idle>> = Mutex::new(Vec::new());

/// Which generation of the group serves now: the inode of its socket, or
/// for `listen=tcp` the port it published (never one handed out lately).
fn generation_of(target: &Target, published: &Path) -> Option<u64> {
    match target.listen {
        Listen::Unix => std::fs::metadata(published).ok().map(|m| m.ino()),
        Listen::Tcp => super::published_port(published).ok().map(u64::from),
    }
}

/// A new connection to the group's serving generation, and which
/// generation that is.
fn connect(target: &Target, published: &Path, deadline: Instant) -> Result<(Stream, u64), ConnectError> {
    match target.listen {
        Listen::Unix => {
            let inode = generation_of(target, published).unwrap_or(0);
            Ok((Stream::Unix(connect_within(published, deadline)?), inode))
        }
        Listen::Tcp => connect_tcp_within(published, deadline).map(|(s, port)| (Stream::Tcp(s), u64::from(port))),
    }
}

/// Whether an idle connection is still usable: open, and nothing unasked
/// for waiting in it.
fn still_open(stream: &Stream) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    matches!(
        recv(stream.as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
        Err(nix::errno::Errno::EAGAIN)
    )
}

/// An idle connection to the serving generation (`generation`) of the
/// group published at `published`, if any.
fn pool_take(published: &Path, generation: u64) -> Option<Stream> {
    // The lock is held for list work only: every Apache thread of the
    // child passes here twice a request, so the checks and the closing of
    // stale connections (system calls) happen after it is released.
    loop {
        let (candidate, stale) = {
            let mut pool = POOL.lock().ok()?;
            let now = Instant::now();
            // Stale ones are rare: no allocation unless there are some.
            let mut stale = Vec::new();
            let mut at = 0;
            while at < pool.len() {
                let i = &pool[at];
                if now.duration_since(i.since) >= POOL_IDLE || (i.published == published && i.generation != generation)
                {
                    stale.push(pool.remove(at));
                } else {
                    at += 1;
                }
            }
            let candidate = pool.iter().rposition(|i| i.published == published).map(|pos| pool.remove(pos));
            (candidate, stale)
        };
        drop(stale);
        let idle = candidate?;
        if still_open(&idle.stream) {
            return Some(idle.stream);
        }
    }
}

fn pool_put(published: &Path, generation: u64, stream: Stream) {
    let idle = Idle { published: published.to_path_buf(), generation, stream, since: Instant::now() };
    let evicted = match POOL.lock() {
        Ok(mut pool) => {
            let evicted = (pool.len() >= POOL_CAP).then(|| pool.remove(0));
            pool.push(idle);
            evicted
        }
        Err(_) => None,
    };
    drop(evicted);
}

/// What one try of the exchange came to.
enum Attempt {
    Finished(Outcome),
    /// Nothing was consumed from the client and nothing sent to it: the
    /// request may be tried once more on a new connection (`why` if not).
    Retry(String),
}

/// Facts about the request, the same for every try.
struct Request<'a> {
    head: Vec<u8>,
    body: BodyLength,
    expect_continue: bool,
    upgrade: Option<String>,
    head_request: bool,
    /// GET, HEAD, OPTIONS: safe to send again when a connection broke
    /// before any answer (RFC 9110 §9.2.2).
    idempotent: bool,
    target: &'a Target,
    queue_timeout: Duration,
    started: SystemTime,
}

/// Sends one request to `target`'s program and streams the answer (or
/// tunnels the connection) to `client`.
pub fn proxy(client: &mut dyn Client, target: &Target) -> Outcome {
    let HttpRequest { method, target: path, headers, client_ip, https, prefix } = client.http_request();
    let body = client.body_length();
    // A tunnel only where the client connection can be one.
    let upgrade = requested_upgrade(&method, &headers).filter(|_| client.tunnel_fd().is_some());
    let expect_continue =
        headers.iter().any(|(n, v)| n.eq_ignore_ascii_case(b"expect") && v.eq_ignore_ascii_case(b"100-continue"));
    let request_body = match body {
        BodyLength::None => RequestBody::None,
        BodyLength::Known(n) => RequestBody::Length(n),
        BodyLength::Chunked => RequestBody::Chunked,
    };
    let fwd = Forwarding {
        client_ip: &client_ip,
        proto: if https { "https" } else { "http" },
        prefix: &prefix,
        upgrade: upgrade.as_deref(),
    };
    let mut head = Vec::with_capacity(1024);
    encode_request_head(&method, &path, &headers, request_body, &fwd, &mut head);
    let req = Request {
        head,
        body,
        expect_continue: expect_continue && body != BodyLength::None,
        upgrade,
        head_request: client.head_only(),
        idempotent: matches!(method.as_slice(), b"GET" | b"HEAD" | b"OPTIONS"),
        target,
        queue_timeout: target.queue_timeout.max(Duration::from_millis(50)),
        started: SystemTime::now(),
    };
    let mut body_read = false;
    // A pooled connection first (requests without a body only: one that
    // broke can be sent again), then a new one; a broken try is repeated
    // once.
    let mut pooled = req.body == BodyLength::None && req.upgrade.is_none();
    let published = target.published();
    let mut tries = 0;
    loop {
        tries += 1;
        let conn = if pooled {
            generation_of(target, &published)
                .and_then(|generation| Some((pool_take(&published, generation)?, generation, true)))
        } else {
            None
        };
        let (stream, generation, reused) = match conn {
            Some(c) => c,
            None => match connect(target, &published, Instant::now() + req.queue_timeout) {
                Ok((s, generation)) => (s, generation, false),
                Err(e) => return connect_failure(target, req.queue_timeout, e),
            },
        };
        match exchange(client, &req, stream, &published, generation, reused, &mut body_read) {
            Attempt::Finished(outcome) => return outcome,
            Attempt::Retry(_) if reused => pooled = false,
            Attempt::Retry(_) if tries < 2 => pooled = false,
            Attempt::Retry(why) => return bad_gateway_plain(why),
        }
    }
}

/// Why reading from the program stopped.
enum ReadError {
    Timeout,
    Closed,
}

/// Reads more of the program's answer into `buf`, waiting until `until`.
fn read_more(stream: &Stream, buf: &mut Vec<u8>, chunk: &mut [u8], until: Instant) -> Result<usize, ReadError> {
    match super::read_within(stream.as_fd(), chunk, until).transpose() {
        None => Err(ReadError::Timeout),
        Some(got) => keep(got, buf, chunk),
    }
}

/// Reads into `buf` what the program has already sent, without waiting:
/// `None` if nothing is there yet.
fn take_ready(stream: &Stream, buf: &mut Vec<u8>, chunk: &mut [u8]) -> Option<Result<usize, ReadError>> {
    super::read_ready(stream.as_fd(), chunk).transpose().map(|got| keep(got, buf, chunk))
}

/// A read's bytes appended to `buf`; its end or error is the end of the connection.
fn keep(got: std::io::Result<usize>, buf: &mut Vec<u8>, chunk: &[u8]) -> Result<usize, ReadError> {
    match got {
        Ok(0) | Err(_) => Err(ReadError::Closed),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        }
    }
}

/// Whether the program has sent something (or closed) that is not read yet.
fn readable_now(stream: &Stream) -> bool {
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// One connection's exchange.
struct Conn<'a> {
    stream: Stream,
    buf: Vec<u8>,
    chunk: ReadBuf,
    /// When the program was seen to take the request (read it, or answer).
    taken: Option<Instant>,
    /// Any byte of an answer arrived.
    answered: bool,
    req: &'a Request<'a>,
    queue_deadline: Instant,
    /// request-timeout, moved on by the time spent waiting on the client.
    deadline: Option<Instant>,
    /// The send timeout the socket has now. A pooled connection always
    /// has its group's queue-timeout (see `exchange`).
    write_timeout: Option<Duration>,
}

/// A failure while reading the head: what to do about it.
enum HeadError {
    Outcome(Outcome),
    Retry(String),
}

impl Conn<'_> {
    fn group(&self) -> &str {
        &self.req.target.group
    }

    fn mark_taken(&mut self) {
        if self.taken.is_none() {
            let now = Instant::now();
            self.taken = Some(now);
            self.deadline = Some(now + self.req.target.request_timeout);
        }
    }

    fn how_it_ended(&self) -> String {
        recent_death(&self.req.target.exits, self.group(), self.req.started)
            .map_or_else(|| "the program closed the connection".to_string(), |d| format!("{d}: the connection closed"))
    }

    /// Reads the next response head. `continue_wait`: return `Ok(None)` if
    /// neither `100 Continue` nor an answer came within `CONTINUE_WAIT`
    /// after the program took the request; a `100` is returned then, and
    /// skipped otherwise. Other interim answers (102, 103) are skipped.
    fn read_head(&mut self, continue_wait: bool) -> Result<Option<ResponseHead>, HeadError> {
        let g = self.req.target.group.clone();
        let mut search = HeadSearch::default();
        loop {
            match search.parse(&self.buf) {
                Ok(Some((head, used))) => {
                    self.buf.drain(..used);
                    match head.status {
                        100 if continue_wait => return Ok(Some(head)),
                        101 => return Ok(Some(head)),
                        100..=199 => continue,
                        _ => return Ok(Some(head)),
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(HeadError::Outcome(bad_gateway_plain(format!(
                        "group {g}: bad answer from the program: {e}"
                    ))));
                }
            }
            let until = match (self.taken, self.deadline) {
                (Some(taken), _) if continue_wait => taken + CONTINUE_WAIT,
                (Some(_), Some(deadline)) => deadline,
                _ => (Instant::now() + QUEUE_POLL).min(self.queue_deadline),
            };
            let Conn { stream, buf, chunk, .. } = self;
            match read_more(stream, buf, chunk, until) {
                Ok(_) => {
                    self.answered = true;
                    self.mark_taken();
                }
                Err(ReadError::Timeout) if self.taken.is_none() => {
                    if matches!(crate::os::unread_by_peer(&self.stream), Ok(0)) {
                        self.mark_taken();
                    } else if Instant::now() >= self.queue_deadline {
                        return Err(HeadError::Outcome(Outcome::Failed {
                            status: 503,
                            retry_after: Some(5),
                            log: format!(
                                "group {g}: the program did not take the request within queue-timeout ({} s); it is overloaded or its requests are slow: add processes=",
                                self.req.queue_timeout.as_secs_f32()
                            ),
                        }));
                    }
                }
                Err(ReadError::Timeout) if continue_wait => return Ok(None),
                Err(ReadError::Timeout) => {
                    return Err(HeadError::Outcome(Outcome::Failed {
                        status: 504,
                        retry_after: None,
                        log: format!(
                            "group {g}: request-timeout ({} s) exceeded before the program answered",
                            self.req.target.request_timeout.as_secs_f32()
                        ),
                    }));
                }
                Err(ReadError::Closed) if self.answered => {
                    return Err(HeadError::Outcome(bad_gateway_plain(format!(
                        "group {g}: {} in the middle of its response head",
                        self.how_it_ended()
                    ))));
                }
                Err(ReadError::Closed) => {
                    return Err(HeadError::Retry(format!(
                        "group {g}: {} without answering (it may have crashed: see the group's error log)",
                        self.how_it_ended()
                    )));
                }
            }
        }
    }

    /// Writes all of `data` to the program (the body: bounded by
    /// request-timeout).
    fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.set_write_timeout(self.req.target.request_timeout.max(self.req.queue_timeout));
        self.stream.write_all(data)
    }

    /// A system call only when the timeout changes (a body is sent in
    /// many writes, and most requests on a pooled connection need none).
    fn set_write_timeout(&mut self, timeout: Duration) {
        if self.write_timeout != Some(timeout) && self.stream.set_write_timeout(Some(timeout)).is_ok() {
            self.write_timeout = Some(timeout);
        }
    }
}

/// The body was not all sent: why.
enum BodyStop {
    /// The program answered first.
    Answered,
    Failed(Outcome),
}

/// Streams the request body from the client to the program (re-chunked if
/// the client sent it chunked), stopping early if the program answers.
fn send_body(client: &mut dyn Client, conn: &mut Conn<'_>, body_read: &mut bool) -> Result<(), BodyStop> {
    let g = conn.group().to_string();
    let chunked = conn.req.body == BodyLength::Chunked;
    loop {
        if readable_now(&conn.stream) {
            return Err(BodyStop::Answered);
        }
        let waiting = Instant::now();
        let read = client.read_body(BODY_CHUNK);
        if let Some(d) = conn.deadline.as_mut() {
            *d += waiting.elapsed();
        }
        *body_read = true;
        let data = match read {
            Ok(data) => data,
            Err(e) => {
                return Err(BodyStop::Failed(Outcome::Failed {
                    status: 400,
                    retry_after: None,
                    log: format!("group {g}: reading the request body from the client failed: {e}"),
                }));
            }
        };
        let mut out = Vec::with_capacity(data.len() + 16);
        if chunked {
            if data.is_empty() {
                out.extend_from_slice(b"0\r\n\r\n");
            } else {
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
            }
        } else {
            out = data.clone();
        }
        if !out.is_empty() {
            if let Err(e) = conn.send(&out) {
                if readable_now(&conn.stream) {
                    return Err(BodyStop::Answered);
                }
                let not_taken = conn.taken.is_none() && !matches!(crate::os::unread_by_peer(&conn.stream), Ok(0));
                let outcome = if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut {
                    if not_taken {
                        Outcome::Failed {
                            status: 503,
                            retry_after: Some(5),
                            log: format!("group {g}: the program did not take the request in time; it is overloaded"),
                        }
                    } else {
                        Outcome::Failed {
                            status: 504,
                            retry_after: None,
                            log: format!("group {g}: the program stopped reading the request body (request-timeout)"),
                        }
                    }
                } else {
                    bad_gateway_plain(format!("group {g}: {} while it read the request body", conn.how_it_ended()))
                };
                return Err(BodyStop::Failed(outcome));
            }
        }
        if data.is_empty() {
            return Ok(());
        }
    }
}

/// One try over `stream`.
fn exchange(
    client: &mut dyn Client,
    req: &Request<'_>,
    stream: Stream,
    published: &Path,
    generation: u64,
    reused: bool,
    body_read: &mut bool,
) -> Attempt {
    let g = req.target.group.clone();
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        chunk: ReadBuf::take(READ_CHUNK),
        taken: None,
        answered: false,
        req,
        queue_deadline: Instant::now() + req.queue_timeout,
        deadline: None,
        // Put back in the pool only with this timeout (below).
        write_timeout: reused.then_some(req.queue_timeout),
    };
    if reused {
        // An accepted connection: the program reads it now.
        conn.mark_taken();
    }
    // The head waits in the socket until the program accepts.
    conn.set_write_timeout(req.queue_timeout);
    if let Err(e) = conn.stream.write_all(&req.head) {
        let why = format!("group {g}: cannot send the request: {e}");
        return if reused || !*body_read { Attempt::Retry(why) } else { Attempt::Finished(bad_gateway_plain(why)) };
    }
    // The body, after the program's 100 Continue if the client waits for one.
    let mut early: Option<ResponseHead> = None;
    let mut body_complete = req.body == BodyLength::None;
    if !body_complete {
        if req.expect_continue {
            match conn.read_head(true) {
                Ok(Some(h)) if h.status == 100 => {}
                Ok(Some(h)) => early = Some(h),
                Ok(None) => {}
                Err(HeadError::Outcome(o)) => return Attempt::Finished(o),
                Err(HeadError::Retry(why)) => return retry_or_fail(why, req, reused, *body_read),
            }
        }
        if early.is_none() {
            match send_body(client, &mut conn, body_read) {
                Ok(()) => body_complete = true,
                Err(BodyStop::Answered) => {}
                Err(BodyStop::Failed(o)) => return Attempt::Finished(o),
            }
        }
    }
    let head = match early {
        Some(h) => h,
        None => match conn.read_head(false) {
            Ok(Some(h)) => h,
            Ok(None) => return Attempt::Finished(bad_gateway_plain(format!("group {g}: no answer"))),
            Err(HeadError::Outcome(o)) => return Attempt::Finished(o),
            Err(HeadError::Retry(why)) => return retry_or_fail(why, req, reused, *body_read),
        },
    };
    if head.status == 101 {
        return Attempt::Finished(upgrade(client, conn, head));
    }
    if !(200..=599).contains(&head.status) {
        return Attempt::Finished(bad_gateway_plain(format!(
            "group {g}: bad answer from the program: status {} is not a final status",
            head.status
        )));
    }
    let framing = match response_framing(&head, req.head_request) {
        Ok(f) => f,
        Err(e) => return Attempt::Finished(bad_gateway_plain(format!("group {g}: bad answer from the program: {e}"))),
    };
    let keep_alive = head.keeps_alive();
    let status = head.status;
    let mut headers = head.headers;
    strip_hop_by_hop(&mut headers);
    // Validated above; one Content-Length goes on.
    let _ = super::content_length(&mut headers);
    if !body_complete {
        client.body_not_read();
    }
    client.start_response(status, &headers);
    let (outcome, clean) = relay_body(client, &mut conn, framing);
    if clean && keep_alive && body_complete && conn.buf.is_empty() {
        conn.set_write_timeout(req.queue_timeout);
        if conn.write_timeout == Some(req.queue_timeout) {
            pool_put(published, generation, conn.stream);
        }
    }
    if let Outcome::Cut { .. } = outcome {
        client.abort();
    }
    Attempt::Finished(outcome)
}

fn retry_or_fail(why: String, req: &Request<'_>, reused: bool, body_read: bool) -> Attempt {
    if !body_read && (reused || req.idempotent) {
        Attempt::Retry(why)
    } else {
        Attempt::Finished(bad_gateway_plain(why))
    }
}

/// Streams the response body; also whether the connection ended cleanly
/// at the end of the body (reusable).
fn relay_body(client: &mut dyn Client, conn: &mut Conn<'_>, framing: Framing) -> (Outcome, bool) {
    let g = conn.group().to_string();
    let mut decoder = ChunkedDecoder::default();
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut out = Vec::new();
    let mut pending = std::mem::take(&mut conn.buf);
    let timeout = conn.req.target.request_timeout;
    let mut deadline = conn.deadline.unwrap_or_else(|| Instant::now() + timeout);
    loop {
        // What is in hand, framed.
        out.clear();
        let done = match framing {
            Framing::None => true,
            Framing::UntilClose => {
                out.append(&mut pending);
                false
            }
            Framing::Length(_) => {
                let n = pending.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                out.extend(pending.drain(..n));
                left -= n as u64;
                left == 0
            }
            Framing::Chunked => match decoder.decode(&pending, &mut out) {
                Ok(used) => {
                    pending.drain(..used);
                    decoder.is_done()
                }
                Err(e) => {
                    return (Outcome::Cut { log: format!("group {g}: bad answer from the program: {e}") }, false);
                }
            },
        };
        if !out.is_empty() {
            let waiting = Instant::now();
            let written = client.write(&out);
            deadline += waiting.elapsed();
            if !written {
                return (Outcome::Done, false); // the client left
            }
        }
        if done {
            // Bytes past the end of the body: the program is confused.
            conn.buf = pending;
            return (Outcome::Done, true);
        }
        // More if the program has sent it (within request-timeout); if not,
        // pass on what the client has so far, then wait for it.
        let Conn { stream, chunk, .. } = conn;
        let ready = if Instant::now() < deadline { take_ready(stream, &mut pending, chunk) } else { None };
        let more = match ready {
            Some(more) => more,
            None => {
                let waiting = Instant::now();
                let flushed = client.flush();
                deadline += waiting.elapsed();
                if !flushed {
                    return (Outcome::Done, false);
                }
                read_more(stream, &mut pending, chunk, deadline)
            }
        };
        match more {
            Ok(_) => {}
            Err(ReadError::Closed) if framing == Framing::UntilClose => return (Outcome::Done, false),
            Err(ReadError::Closed) => {
                let log = format!("group {g}: {} before the end of its response", conn.how_it_ended());
                return (Outcome::Cut { log }, false);
            }
            Err(ReadError::Timeout) => {
                let log = format!(
                    "group {g}: request-timeout ({} s) exceeded while the program sent its response",
                    timeout.as_secs_f32()
                );
                return (Outcome::Cut { log }, false);
            }
        }
    }
}

/// A `101 Switching Protocols`: checked, passed on, then the tunnel.
fn upgrade(client: &mut dyn Client, mut conn: Conn<'_>, head: ResponseHead) -> Outcome {
    let g = conn.group().to_string();
    let asked = conn.req.upgrade.clone().unwrap_or_default();
    let given: Vec<&str> = head.values("upgrade").collect();
    let matches = !asked.is_empty()
        && given.len() == 1
        && asked.split(',').any(|p| p.trim().eq_ignore_ascii_case(given[0].trim()))
        && has_token(head.values("connection"), "upgrade");
    if !matches {
        return bad_gateway_plain(format!(
            "group {g}: bad answer from the program: 101 Switching Protocols to \"{}\" without a matching Upgrade request (asked: \"{}\")",
            escape_log_bounded(&given.join(", ")),
            escape_log_bounded(&asked)
        ));
    }
    let protocol = given[0].trim().to_string();
    let mut headers = head.headers;
    strip_hop_by_hop(&mut headers);
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-length"));
    headers.push(("Upgrade".to_string(), protocol));
    if let Err(e) = client.switch_protocols(&headers) {
        return Outcome::Cut { log: format!("group {g}: the tunnel could not start: {e}") };
    }
    let leftover = std::mem::take(&mut conn.buf);
    let idle = conn.req.target.request_timeout;
    match tunnel(client, conn.stream, &leftover, idle) {
        Ok(()) => Outcome::Done,
        Err(why) => {
            // The client's connection is a tunnel: no status to send, and
            // it closes after this request.
            Outcome::Cut { log: format!("group {g}: tunnel: {why}") }
        }
    }
}

/// Relays bytes both ways until both ends have closed, or nothing moved
/// for `idle`. Half-closes are passed on. Bounded: one `READ_CHUNK` in
/// hand per direction, written before more is read.
fn tunnel(client: &mut dyn Client, mut stream: Stream, leftover: &[u8], idle: Duration) -> Result<(), String> {
    if !leftover.is_empty() && !client.tunnel_write(leftover) {
        return Ok(()); // the client left
    }
    stream.set_nonblocking(true).map_err(|e| format!("the program's connection: {e}"))?;
    let mut up = true; // client -> program
    let mut down = true; // program -> client
    let mut last = Instant::now();
    let mut chunk = ReadBuf::take(READ_CHUNK);
    loop {
        while up {
            match client.tunnel_read(READ_CHUNK) {
                TunnelRead::Data(data) => {
                    last = Instant::now();
                    if let Err(e) = write_all_within(&mut stream, &data, idle) {
                        return Err(format!("writing to the program failed: {e}"));
                    }
                }
                TunnelRead::WouldBlock => break,
                TunnelRead::Closed | TunnelRead::Failed(_) => {
                    up = false;
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                }
            }
        }
        while down {
            match stream.read(&mut chunk) {
                Ok(0) => {
                    down = false;
                    client.tunnel_shutdown_write();
                }
                Ok(n) => {
                    last = Instant::now();
                    if !client.tunnel_write(&chunk[..n]) {
                        return Ok(()); // the client left
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    down = false;
                    client.tunnel_shutdown_write();
                }
            }
        }
        if !up && !down {
            return Ok(());
        }
        let left = idle.saturating_sub(last.elapsed());
        if left.is_zero() {
            return Err(format!("nothing moved either way for {} s (request-timeout); closed", idle.as_secs()));
        }
        let Some(client_fd) = client.tunnel_fd() else {
            return Err("the client connection has no socket to wait on".into());
        };
        let wait = PollTimeout::try_from(left.min(Duration::from_secs(1))).unwrap_or(PollTimeout::MAX);
        let mut fds = Vec::with_capacity(2);
        if up {
            fds.push(PollFd::new(client_fd, PollFlags::POLLIN));
        }
        if down {
            fds.push(PollFd::new(stream.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, wait) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
}

/// Writes all of `data` to a non-blocking stream, waiting for room at
/// most `limit` at a time.
fn write_all_within(stream: &mut Stream, mut data: &[u8], limit: Duration) -> std::io::Result<()> {
    while !data.is_empty() {
        match stream.write(data) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let wait = PollTimeout::try_from(limit).unwrap_or(PollTimeout::MAX);
                let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
                if poll(&mut fds, wait).map_err(std::io::Error::from)? == 0 {
                    return Err(ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
