//! The Apache side of one request to a group: what every protocol shares
//! (the [`Client`] Apache is reached through, the [`Target`] group, the
//! [`Outcome`] and its failures, connecting within the queue timeout,
//! explaining a worker's death, checking Content-Length), and one backend
//! per protocol, chosen by [`serve`]: `procd` (the framed protocol of
//! src/protocol/PROTOCOL.md), `fastcgi` (php-cgi), `cgi` (a script per
//! request, run by the group's launcher) and `http` (HTTP/1.1 to any
//! program, with Upgrade tunnels).
//!
//! Safe Rust: Apache is reached only through the [`Client`] trait, which the
//! FFI layer implements over `request_rec`.

#![forbid(unsafe_code)]

mod cgi;
mod fastcgi;
mod http;
mod procd;
mod readbuf;
mod stream;

use crate::config::languages::{Listen, Protocol};

use crate::protocol::escape_log_bounded;
use std::net::TcpStream;
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
    /// What the request says about its body (before any is read).
    fn body_length(&self) -> BodyLength;
    /// The request as the `http` backend forwards it.
    fn http_request(&self) -> HttpRequest;
    /// Answers `101 Switching Protocols` with `headers` and turns the
    /// client connection into a byte pipe (the `tunnel_*` calls); it is
    /// closed after the request.
    fn switch_protocols(&mut self, headers: &[(String, String)]) -> Result<(), String>;
    /// After `switch_protocols`: what the client sent, without blocking.
    fn tunnel_read(&mut self, max: usize) -> TunnelRead;
    /// After `switch_protocols`: sends `data` to the client now (blocking
    /// at most Apache's `Timeout`); false if the client has gone.
    fn tunnel_write(&mut self, data: &[u8]) -> bool;
    /// After `switch_protocols`: no more bytes to the client (half-close).
    fn tunnel_shutdown_write(&mut self);
    /// After `switch_protocols`: the client connection's socket, to poll
    /// for readability (data Apache holds already is read first by
    /// `tunnel_read`).
    fn tunnel_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>>;
    /// A worker took the request after it waited `_waited` for one, and
    /// said it is pid `_pid` (0: unknown): for procd-status.
    fn taken(&mut self, _waited: Duration, _pid: u32) {}
}

/// The request body's framing, from the request headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    None,
    Known(u64),
    Chunked,
}

/// A request as the `http` backend forwards it.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub method: Vec<u8>,
    /// Path and query as the client sent them (still percent-encoded).
    pub target: Vec<u8>,
    /// The client's headers, in order.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub client_ip: String,
    pub https: bool,
    /// The `LanguageMount` prefix the request came through ("" for `/` or
    /// a `LanguageHandler`).
    pub prefix: String,
}

/// A non-blocking read from a tunnelled client connection.
#[derive(Debug, PartialEq, Eq)]
pub enum TunnelRead {
    Data(Vec<u8>),
    WouldBlock,
    /// The client will send no more (it half-closed or left).
    Closed,
    Failed(String),
}

/// Where and how to reach a group.
pub struct Target {
    pub group: String,
    /// What its workers speak.
    pub protocol: Protocol,
    /// Where: the group's socket, or (`http` only) a loopback port.
    pub listen: Listen,
    /// `RUNTIME/GROUP.sock`; for `listen=tcp` the port is in `GROUP.port`
    /// beside it.
    pub socket: PathBuf,
    /// `RUNTIME/exits`: how workers ended (written by the manager).
    pub exits: PathBuf,
    pub queue_timeout: Duration,
    pub request_timeout: Duration,
}

impl Target {
    /// The file through which Apache's children find the serving
    /// generation: the group's socket (a new generation's is renamed over
    /// it), or for `listen=tcp` the file that names its port (replaced by
    /// rename likewise).
    pub(super) fn published(&self) -> PathBuf {
        match self.listen {
            Listen::Unix => self.socket.clone(),
            Listen::Tcp => crate::manager::port_file(self.socket.parent().unwrap_or(Path::new("/")), &self.group),
        }
    }

    /// Where requests go, for log lines.
    fn address(&self) -> String {
        match self.listen {
            Listen::Unix => self.socket.display().to_string(),
            Listen::Tcp => format!("the 127.0.0.1 port named in {}", self.published().display()),
        }
    }
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
    /// A CGI local redirect (`Location: /path`, status 200): Apache serves
    /// `location` instead, as a GET.
    LocalRedirect { location: String },
}

/// Sends one request to `target`'s group with the backend of its protocol
/// and streams the answer to `client`.
pub fn serve(client: &mut dyn Client, target: &Target, env: Vec<u8>) -> Outcome {
    if matches!(target.protocol, Protocol::Procd | Protocol::Cgi) {
        if let Some(refused) = request_too_large(&target.group, env.len()) {
            return refused;
        }
    }
    match target.protocol {
        Protocol::Procd => procd::proxy(client, target, env),
        Protocol::Fastcgi => fastcgi::proxy(client, target, env),
        Protocol::Cgi => cgi::proxy(client, target, env),
        Protocol::Http => http::proxy(client, target),
    }
}

/// Room left in the REQUEST frame for what the backends add to the
/// environment (the queue stamps) and the version byte.
const REQUEST_FRAME_RESERVE: usize = 256;

/// A REQUEST frame whose environment (every request header is in it)
/// would pass the protocol's frame limit is never sent: the worker would
/// refuse it and close, and Apache would see a broken connection and blame
/// the group. 431 (Request Header Fields Too Large), with the sizes.
fn request_too_large(group: &str, env_len: usize) -> Option<Outcome> {
    let max = crate::protocol::MAX_FRAME - REQUEST_FRAME_RESERVE;
    (env_len > max).then(|| Outcome::Failed {
        status: 431,
        retry_after: None,
        log: format!(
            "group {group}: the request's headers and variables take {env_len} bytes, over the {max} that fit \
             the protocol's 1 MiB frame limit; not sent (lower LimitRequestFieldSize to refuse such requests earlier)"
        ),
    })
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
    /// The group has no working generation and waits in back-off, or its
    /// program does not listen: why (the manager's `GROUP.down` file).
    Down(String),
    /// `listen=tcp`: connections to the published port were refused for
    /// `REFUSED_GRACE` while it stayed published: nothing listens there.
    NotListening(u16),
    /// `listen=tcp`: the port file is there but cannot be read, or holds
    /// no port: why.
    PortFile(String),
    Io(std::io::Error),
}

/// What one connect attempt says: an error to wait out or retry
/// (`connect_retrying` decides), or the end.
pub(super) enum Failed {
    Errno(nix::errno::Errno),
    Final(ConnectError),
}

impl From<nix::errno::Errno> for Failed {
    fn from(e: nix::errno::Errno) -> Failed {
        Failed::Errno(e)
    }
}

/// `listen=tcp`: how long connections refused by a port that is still
/// published are tried again. The manager unpublishes the port of a
/// program that died as soon as it reaps it, and of one that stopped
/// listening within a tick (100 ms); a refusal that outlasts this is a
/// program that is not listening, answered 503 at once rather than waited
/// out for the whole queue-timeout.
const REFUSED_GRACE: Duration = Duration::from_millis(300);
/// `listen=tcp`: how long one connect waits for its handshake. A full
/// accept backlog drops the SYN, which the kernel would send again only
/// after 1 s, then 3 s ...: short connects, tried again (with the port
/// file read again) until queue-timeout, take a free slot sooner.
const TCP_TRY: Duration = Duration::from_millis(250);

/// Unix sockets: how long one connect waits in the kernel for room in a
/// full listen backlog before the path is looked up again (a generation
/// switch puts a new socket there).
const UNIX_TRY: Duration = Duration::from_millis(50);

/// Connects to a group's socket, waiting at most until `deadline`. While
/// the listen backlog is full the connect waits in the kernel for room (a
/// blocking socket's connect is bounded by its send timeout: `UNIX_TRY` or
/// the time left, then EAGAIN, tried again). A socket that is not there
/// yet or has no listener (ENOENT, ECONNREFUSED) means the group is
/// starting (Apache or the manager just started, or its workers are in
/// back-off): the request waits for it like any queued request, trying
/// again after a short sleep; at the deadline the error is returned. The
/// stream keeps that send timeout (at most `UNIX_TRY`) until the caller
/// sets another.
pub(super) fn connect_within(path: &Path, deadline: Instant) -> Result<UnixStream, ConnectError> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    use std::os::fd::AsRawFd;
    let io = |e: nix::errno::Errno| ConnectError::Io(std::io::Error::from(e));
    let addr = UnixAddr::new(path).map_err(io)?;
    let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(io)?;
    let stream = UnixStream::from(fd);
    connect_retrying(path, deadline, || {
        // Never zero: a zero send timeout means "wait for ever".
        let left = deadline.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(1), UNIX_TRY);
        stream.set_write_timeout(Some(left)).map_err(|e| Failed::Final(ConnectError::Io(e)))?;
        Ok(connect(stream.as_raw_fd(), &addr)?)
    })?;
    Ok(stream)
}

/// `connect_within` for a `listen=tcp` group: connects to 127.0.0.1 on
/// the port its serving generation published in `port_file`, read again
/// at each try (a generation switch publishes a new one). No file yet is
/// like no socket yet (the group is starting, or its program is being
/// replaced); a handshake that does not complete by `deadline` (the
/// program's accept backlog is full, so the kernel drops the SYN) is a
/// full queue. A refused connect is tried again only while the file
/// changes or goes (then the request waits as for a starting group), or
/// for `REFUSED_GRACE`; a port still published after that ends it:
/// `NotListening`. Returns the stream (TCP_NODELAY) and the port.
pub(super) fn connect_tcp_within(port_file: &Path, deadline: Instant) -> Result<(TcpStream, u16), ConnectError> {
    // The port that refused, and since when.
    let mut refused: Option<(u16, Instant)> = None;
    connect_retrying(port_file, deadline, || {
        let port = published_port(port_file)?;
        match tcp_connect_once(port, deadline) {
            Ok(stream) => Ok((stream, port)),
            Err(nix::errno::Errno::ECONNREFUSED) => {
                let since = match refused {
                    Some((p, since)) if p == port => since,
                    _ => refused.insert((port, Instant::now())).1,
                };
                if since.elapsed() >= REFUSED_GRACE {
                    return Err(Failed::Final(ConnectError::NotListening(port)));
                }
                Err(nix::errno::Errno::ECONNREFUSED.into())
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// Retries `attempt` until `deadline` while the group is starting
/// (ENOENT, ECONNREFUSED: nothing there yet, unless the manager says in
/// `GROUP.down`, beside `published`, that the group is down; a short sleep
/// growing to 50 ms between tries) or its queue is full (EAGAIN, after the
/// attempt itself waited: tried again at once).
fn connect_retrying<T>(
    published: &Path,
    deadline: Instant,
    mut attempt: impl FnMut() -> Result<T, Failed>,
) -> Result<T, ConnectError> {
    use nix::errno::Errno;
    let io = |e: Errno| ConnectError::Io(std::io::Error::from(e));
    let mut pause = Duration::from_millis(5);
    loop {
        match attempt() {
            Ok(connected) => return Ok(connected),
            Err(Failed::Final(e)) => return Err(e),
            Err(Failed::Errno(Errno::EINTR)) => {}
            Err(Failed::Errno(e @ (Errno::EAGAIN | Errno::ENOENT | Errno::ECONNREFUSED))) => {
                if e != Errno::EAGAIN {
                    // Not starting but failed: no point in waiting.
                    if let Some(why) = group_down(published) {
                        return Err(ConnectError::Down(why));
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(if e == Errno::EAGAIN { ConnectError::QueueFull } else { io(e) });
                }
                if e == Errno::EAGAIN {
                    // The connect itself waited (in the kernel, for room in
                    // the backlog, or for a TCP handshake): try again at once.
                    continue;
                }
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(Failed::Errno(e)) => return Err(io(e)),
        }
    }
}

/// One connect to 127.0.0.1:`port`, waiting for the handshake at most
/// `TCP_TRY` and never past `deadline` (then EAGAIN: nobody accepted it).
fn tcp_connect_once(port: u16, deadline: Instant) -> nix::Result<TcpStream> {
    use nix::errno::Errno;
    let left = deadline.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(1), TCP_TRY);
    let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, left).map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Errno::EAGAIN,
        _ => Errno::from_raw(e.raw_os_error().unwrap_or(libc::ECONNREFUSED)),
    })?;
    // Heads and small bodies go out at once, not after the peer's ACK.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The port in a `listen=tcp` group's `GROUP.port` (written by root, read
/// at most 16 bytes), remembered per Apache child while the file is the
/// same one (inode and modification time of the file opened, by fstat:
/// the manager replaces it by rename at each switch). No file: ENOENT (the
/// group is starting, or its program is being replaced); a file that
/// cannot be read or holds no port: `PortFile`.
pub(super) fn published_port(file: &Path) -> Result<u16, Failed> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    type Seen = (PathBuf, (u64, i64, i64), u16);
    static SEEN: std::sync::Mutex<Vec<Seen>> = std::sync::Mutex::new(Vec::new());
    let unreadable = |why: String| Failed::Final(ConnectError::PortFile(format!("{}: {why}", file.display())));
    let mut opened = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(nix::errno::Errno::ENOENT.into()),
        Err(e) => return Err(unreadable(format!("cannot open it: {e}"))),
    };
    let meta = opened.metadata().map_err(|e| unreadable(format!("cannot stat it: {e}")))?;
    let id = (meta.ino(), meta.mtime(), meta.mtime_nsec());
    if let Ok(seen) = SEEN.lock() {
        if let Some((_, _, port)) = seen.iter().find(|(f, i, _)| f == file && *i == id) {
            return Ok(*port);
        }
    }
    let mut text = String::new();
    opened.by_ref().take(16).read_to_string(&mut text).map_err(|e| unreadable(format!("cannot read it: {e}")))?;
    let port = text
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| unreadable(format!("it holds \"{}\", not a port number", text.trim())))?;
    if let Ok(mut seen) = SEEN.lock() {
        seen.retain(|(f, _, _)| f != file);
        if seen.len() >= 1024 {
            seen.remove(0);
        }
        seen.push((file.to_path_buf(), id, port));
    }
    Ok(port)
}

/// Why the group of socket `path` (or port file) is down, if the manager
/// says so: it writes `GROUP.down` beside `GROUP.sock` while the group has no working
/// generation and waits in back-off (at most 4 KiB read).
pub(super) fn group_down(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path.with_extension("down")).ok()?.take(4096).read_to_string(&mut text).ok()?;
    Some(text.trim().to_string())
}

/// Reads what a worker's connection has into `chunk`, waiting for it
/// until `until`: `Ok(Some(0))` the worker closed it, `Ok(None)` the time
/// is up (a socket error, ETIMEDOUT included, is an `Err`).
///
/// The wait is a `poll` for input, not a read blocked under a receive
/// timeout: on a Unix socket the kernel wakes every thread asleep in a
/// read of it whenever the peer reads what this side sent (the buffer
/// space freed is announced to all sleepers alike), so a blocked read woke
/// its Apache thread once for nothing at every request, when the worker
/// read the request. `poll` sleeps until there is input, the only thing
/// worth waking for; then a read that cannot block takes it. (TCP only
/// announces freed space to a writer that ran out of it: the same there.)
pub(super) fn read_within(
    fd: std::os::fd::BorrowedFd<'_>,
    chunk: &mut [u8],
    until: Instant,
) -> std::io::Result<Option<usize>> {
    use nix::errno::Errno;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        // At least a millisecond, rounded up; long waits in steps of a minute.
        let ms = left.min(Duration::from_secs(60)).as_nanos().div_ceil(1_000_000);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(u16::try_from(ms).unwrap_or(60_000))) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(n) = read_ready(fd, chunk)? {
            return Ok(Some(n));
        }
    }
}

/// Reads what `fd` has for us now, without waiting: `Ok(None)` if nothing
/// is there yet. One system call where a zero-timeout `poll` and then a
/// read would take two.
pub(super) fn read_ready(fd: std::os::fd::BorrowedFd<'_>, chunk: &mut [u8]) -> std::io::Result<Option<usize>> {
    use nix::errno::Errno;
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::AsRawFd;
    loop {
        match recv(fd.as_raw_fd(), chunk, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => return Ok(Some(n)),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
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

/// The outcome of a failed connect to a group's socket.
pub(super) fn connect_failure(target: &Target, queue_timeout: Duration, e: ConnectError) -> Outcome {
    let g = &target.group;
    let unavailable = |log: String| Outcome::Failed { status: 503, retry_after: Some(5), log };
    match e {
        ConnectError::QueueFull => unavailable(format!(
            "group {g}: its connection queue is full: for queue-timeout ({} s) no worker took a connection and the listen backlog of {} stayed full, so this request was not queued. Every worker is busy: add processes= or threads=, find what makes requests slow (the group's error log), or raise queue-timeout=",
            queue_timeout.as_secs_f32(),
            target.address()
        )),
        ConnectError::Down(why) => unavailable(format!(
            "group {g} is not running: {}; the group's error log says more",
            escape_log_bounded(&why)
        )),
        ConnectError::NotListening(port) => unavailable(format!(
            "group {g}: its program is not listening: connections to 127.0.0.1:{port}, the port named in {}, were refused for {} ms; the request was not sent. The program runs but closed its listener, or just exited (the manager unpublishes the port at once then); the group's error log says more",
            target.published().display(),
            REFUSED_GRACE.as_millis()
        )),
        ConnectError::PortFile(why) => Outcome::Failed {
            status: 500,
            retry_after: None,
            log: format!(
                "group {g}: cannot use its port file {}; the manager writes it (root's, mode 0644) in the runtime dir: check the runtime dir's owner and permissions",
                escape_log_bounded(&why)
            ),
        },
        ConnectError::Io(e) => match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => unavailable(format!(
                "group {g} is not running: nothing listened on {} within queue-timeout ({} s); the group's error log says why its workers do not start",
                target.address(),
                queue_timeout.as_secs_f32()
            )),
            std::io::ErrorKind::PermissionDenied => Outcome::Failed {
                status: 500,
                retry_after: None,
                log: format!(
                    "Apache's user may not connect to {}: check the permissions of the runtime dir",
                    target.address()
                ),
            },
            _ => unavailable(format!("group {g}: cannot connect to {}: {e}", target.address())),
        },
    }
}

pub(super) fn bad_gateway_plain(log: String) -> Outcome {
    Outcome::Failed { status: 502, retry_after: None, log }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Voluntary context switches of the calling thread so far.
    fn sleeps_so_far() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// One exchange: the worker reads the request after 50 ms and answers
    /// 50 ms later; how many times the waiting thread went to sleep.
    fn sleeps_waiting_for_one_answer() -> u64 {
        use std::io::{Read, Write};
        use std::os::fd::AsFd;
        let (mut apache, mut worker) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut request = [0u8; 7];
            worker.read_exact(&mut request).unwrap();
            // A read blocked in the kernel is woken here, for nothing.
            std::thread::sleep(Duration::from_millis(50));
            worker.write_all(b"answer").unwrap();
        });
        apache.write_all(b"request").unwrap();
        let mut chunk = [0u8; 16];
        let before = sleeps_so_far();
        let n = read_within(apache.as_fd(), &mut chunk, Instant::now() + Duration::from_secs(10)).unwrap();
        let slept = sleeps_so_far() - before;
        peer.join().unwrap();
        assert_eq!(n.map(|n| &chunk[..n]), Some(&b"answer"[..]));
        slept
    }

    #[test]
    fn waiting_for_the_answer_sleeps_once_and_not_when_the_worker_reads_the_request() {
        // A blocked read sleeps twice in every round; a busy box can add a
        // sleep of its own (a page fault waiting for a lock) to a round, so
        // the best of three counts.
        let rounds: Vec<u64> = (0..3).map(|_| sleeps_waiting_for_one_answer()).collect();
        assert_eq!(rounds.iter().min(), Some(&1), "sleeps per answer in three rounds: {rounds:?}");
    }

    #[test]
    fn waiting_for_the_answer_ends_at_the_deadline_or_when_the_worker_closes() {
        use std::os::fd::AsFd;
        let (apache, worker) = UnixStream::pair().unwrap();
        let mut chunk = [0u8; 16];
        let t0 = Instant::now();
        assert_eq!(read_within(apache.as_fd(), &mut chunk, t0 + Duration::from_millis(150)).unwrap(), None);
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(2), "{took:?}");
        drop(worker);
        assert_eq!(read_within(apache.as_fd(), &mut chunk, Instant::now() + Duration::from_secs(5)).unwrap(), Some(0));
        // A worker that closes with the request unread resets the
        // connection: an error, not the end of the time.
        let (mut apache, worker) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut apache, b"request").unwrap();
        drop(worker);
        let e = read_within(apache.as_fd(), &mut chunk, Instant::now() + Duration::from_secs(5));
        assert!(matches!(e, Err(ref e) if e.kind() == std::io::ErrorKind::ConnectionReset), "{e:?}");
    }

    fn outcome<T>(r: Result<T, ConnectError>) -> String {
        match r {
            Ok(_) => "connected".into(),
            Err(ConnectError::QueueFull) => "queue full".into(),
            Err(ConnectError::Down(why)) => format!("down: {why}"),
            Err(ConnectError::NotListening(port)) => format!("not listening on {port}"),
            Err(ConnectError::PortFile(why)) => format!("port file: {why}"),
            Err(ConnectError::Io(e)) => format!("io: {:?}", e.kind()),
        }
    }

    /// A refused port that stays published ends in NotListening within
    /// about REFUSED_GRACE, not at queue-timeout; no file waits until the
    /// deadline (or fails at once when the manager says the group is
    /// down); a file that holds no port is reported as such.
    #[test]
    fn tcp_connects_end_promptly_and_say_why() {
        let dir = std::env::temp_dir().join(format!("procd-handler-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A file name per case: the port is remembered per file while its
        // inode and time stay the same.
        let file = |n: u32| dir.join(format!("g{n}.port"));
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        let far = Instant::now() + Duration::from_secs(20);

        std::fs::write(file(1), format!("{open}\n")).unwrap();
        assert_eq!(connect_tcp_within(&file(1), far).map(|(_, p)| p).ok(), Some(open));

        std::fs::write(file(2), format!("{closed}\n")).unwrap();
        let t = Instant::now();
        assert_eq!(outcome(connect_tcp_within(&file(2), far)), format!("not listening on {closed}"));
        assert!(t.elapsed() >= REFUSED_GRACE && t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

        std::fs::write(file(3), "garbage\n").unwrap();
        let said = outcome(connect_tcp_within(&file(3), far));
        assert!(said.contains("it holds \"garbage\", not a port number"), "{said}");

        let t = Instant::now();
        assert_eq!(outcome(connect_tcp_within(&file(4), Instant::now() + Duration::from_millis(200))), "io: NotFound");
        assert!(t.elapsed() >= Duration::from_millis(200), "{:?}", t.elapsed());

        std::fs::write(dir.join("g5.down"), "its program does not listen").unwrap();
        let t = Instant::now();
        assert_eq!(outcome(connect_tcp_within(&file(5), far)), "down: its program does not listen");
        assert!(t.elapsed() < Duration::from_secs(1));
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
