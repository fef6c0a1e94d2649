//! The Apache side of one request to a group: what every protocol shares
//! (the [`Client`] Apache is reached through, the [`Target`] group, the
//! [`Outcome`] and its failures, connecting within the queue timeout,
//! explaining a worker's death, checking Content-Length), and one backend
//! per protocol, chosen by [`serve`]: `procd` (the framed protocol of
//! src/protocol/PROTOCOL.md) today; FastCGI, CGI and HTTP next.
//!
//! Safe Rust: Apache is reached only through the [`Client`] trait, which the
//! FFI layer implements over `request_rec`.

#![forbid(unsafe_code)]

mod procd;

use crate::config::languages::Protocol;

use crate::protocol::escape_log_bounded;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the handler needs from Apache for one request.
pub trait Client {
    /// Up to `max` bytes of the request body; empty at its end. The first
    /// call is what makes Apache send `100 Continue`.
    fn read_body(&mut self, max: usize) -> Result<Vec<u8>, String>;
    /// Status and headers, before any body byte.
    fn start_response(&mut self, status: u16, headers: &[(String, String)]);
    /// Body bytes; false if the client has gone.
    fn write(&mut self, data: &[u8]) -> bool;
    /// Pass what was written to the client now; false if the client has gone.
    fn flush(&mut self) -> bool;
    /// The application answered without reading the body: no `100 Continue`,
    /// and the connection closes after the response.
    fn body_not_read(&mut self);
    /// End a response whose headers are out, signalling an error to the
    /// client (no clean end of a chunked body; the connection closes).
    fn abort(&mut self);
    /// A HEAD request: the response has headers only (Apache drops body bytes).
    fn head_only(&self) -> bool;
    /// A worker took the request after it waited `_waited` for one, and
    /// said it is pid `_pid` (0: unknown): for procd-status.
    fn taken(&mut self, _waited: Duration, _pid: u32) {}
}

/// Where and how to reach a group.
pub struct Target {
    pub group: String,
    /// What its workers speak.
    pub protocol: Protocol,
    pub socket: PathBuf,
    /// `RUNTIME/exits`: how workers ended (written by the manager).
    pub exits: PathBuf,
    pub queue_timeout: Duration,
    pub request_timeout: Duration,
}

/// How a request ended, for the FFI layer.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The response was sent (or the client left; nothing more to say).
    Done,
    /// Nothing was sent yet: answer with this status (and Retry-After).
    Failed { status: u16, retry_after: Option<u32>, log: String },
    /// The headers were out when it failed: the response was cut; log this.
    Cut { log: String },
}

/// Sends one request to `target`'s group with the backend of its protocol
/// and streams the answer to `client`.
pub fn serve(client: &mut dyn Client, target: &Target, env: Vec<u8>) -> Outcome {
    match target.protocol {
        Protocol::Procd => procd::proxy(client, target, env),
        other => Outcome::Failed {
            status: 500,
            retry_after: None,
            log: format!(
                "group {}: its language speaks {}, which this build of mod_procd cannot serve requests with yet",
                target.group,
                other.name()
            ),
        },
    }
}

/// How the manager says a worker of `group` ended, waiting briefly for the
/// record. `pid` is what the worker claimed in its HELLO: a record of
/// another group's worker (a pid a hostile worker borrowed) is not it.
pub(super) fn worker_fate(exits: &Path, group: &str, pid: u32) -> String {
    let file = exits.join(pid.to_string());
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let Some((g, how)) = text.split_once('\n') {
                if g == group {
                    return how.to_string();
                }
            }
        }
        if Instant::now() >= deadline {
            return "closed the connection (it may have crashed; see the group's error log)".to_string();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A worker of `group` that died since `since`, as "worker pid P HOW": for a
/// connection that closed before its worker's first frame.
pub(super) fn recent_death(exits: &Path, group: &str, since: std::time::SystemTime) -> Option<String> {
    // File times come from the kernel's coarse clock, a few ms behind.
    let since = since - Duration::from_millis(20);
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let newest = std::fs::read_dir(exits)
            .ok()?
            .flatten()
            .filter_map(|e| {
                let modified = e.metadata().ok()?.modified().ok()?;
                let text = std::fs::read_to_string(e.path()).ok()?;
                let (g, how) = text.split_once('\n')?;
                (modified >= since && g == group)
                    .then(|| (modified, format!("worker pid {} {how}", e.file_name().to_string_lossy())))
            })
            .max();
        if newest.is_some() || Instant::now() >= deadline {
            return newest.map(|(_, text)| text);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(super) enum ConnectError {
    /// The listen backlog stayed full until the deadline.
    QueueFull,
    Io(std::io::Error),
}

/// Connects to a group's socket without ever blocking: a full listen
/// backlog (EAGAIN) is retried after a short sleep until `deadline`. (A
/// blocking connect waits for room in the backlog for as long as it takes.)
/// So is a socket that is not there yet or has no listener (ENOENT,
/// ECONNREFUSED): the group is starting (Apache or the manager just
/// started, or its workers are in back-off), and the request waits for it
/// like any queued request; at the deadline the error is returned.
pub(super) fn connect_within(path: &Path, deadline: Instant) -> Result<UnixStream, ConnectError> {
    use nix::errno::Errno;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    use std::os::fd::AsRawFd;
    let io = |e: Errno| ConnectError::Io(std::io::Error::from(e));
    let addr = UnixAddr::new(path).map_err(io)?;
    let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)
        .map_err(io)?;
    let mut pause = Duration::from_millis(5);
    loop {
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => break,
            Err(Errno::EINTR) => {}
            Err(e @ (Errno::EAGAIN | Errno::ENOENT | Errno::ECONNREFUSED)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(if e == Errno::EAGAIN { ConnectError::QueueFull } else { io(e) });
                }
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(io(e)),
        }
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false).map_err(ConnectError::Io)?;
    Ok(stream)
}

/// Milliseconds since the epoch (the clock the worker compares with).
pub(super) fn epoch_ms(t: std::time::SystemTime) -> u128 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// The worker's `Content-Length`, checked, as one header: `None` if it sent
/// none; an error (502 before anything is sent) if a value is not a plain
/// decimal number or two values differ.
pub(super) fn content_length(headers: &mut Vec<(String, String)>) -> Result<Option<u64>, String> {
    let mut found: Option<u64> = None;
    for (name, value) in headers.iter() {
        if !name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        let digits = value.trim_matches([' ', '\t']);
        let n = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| format!("invalid Content-Length \"{}\"", escape_log_bounded(value)))?;
        match found {
            Some(m) if m != n => return Err(format!("conflicting Content-Length headers ({m} and {n})")),
            _ => found = Some(n),
        }
    }
    if let Some(n) = found {
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case("content-length"));
        headers.push(("Content-Length".to_string(), n.to_string()));
    }
    Ok(found)
}

pub(super) fn bad_gateway_plain(log: String) -> Outcome {
    Outcome::Failed { status: 502, retry_after: None, log }
}
