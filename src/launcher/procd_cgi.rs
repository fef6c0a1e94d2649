//! mod_procd's CGI launcher: a small program of its own (compiled into the
//! module's crate only for tests and fuzzing), built by build.rs with the
//! Rust standard library only and shipped inside the .so; the manager keeps
//! it in a sealed memfd and execs it from there (`argv[0]`
//! `procd-cgi-launcher`, no file anywhere). One runs per `processes` of a
//! `language=cgi` group, as the group's user, and runs one CGI script per
//! request (RFC 3875), so that neither the root manager nor suexec forks on
//! Apache's request path.
//!
//! Why a native program: a script is started with posix_spawn (the kernel's
//! vfork: nothing of the launcher's memory is copied), where the earlier
//! Perl launcher's fork copied its page tables and then faulted in the pages
//! it touched before exec, about half a millisecond a request. And it is a
//! clean executable image: nothing of httpd's memory (TLS keys) reaches a
//! process of the tenant's user.
//!
//! The launch contract (src/protocol/PROTOCOL.md, "CGI launcher"):
//!   fd 3   the group's listening Unix socket: accept on it
//!   fd 4   the status channel: we write READY; EOF means "drain and exit"
//!   fd 1,2 a pipe to the manager: each line goes to the group's error log
//!   PROCD_SCRIPT_ROOTS        directories (one a line) scripts may be run from
//!   PROCD_SCRIPT_EXTS         extensions a script's name may end with
//!   PROCD_REQUEST_TIMEOUT_MS  a script running longer is killed with its
//!                             process group
//!   PROCD_APP                 with `app=`: the one script to run
//!
//! Per connection: Apache sends one REQUEST frame (type 0x01, u32 length,
//! u8 version 1, then NAME\0VALUE\0 pairs: the CGI environment), then the
//! request body, CONTENT_LENGTH bytes, then shuts its side down. The
//! launcher checks the script and spawns it with the connection as stdin
//! and stdout and the group's log as stderr, in a process group of its own.
//! Apache reads the script's output until EOF.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const REQUEST: u8 = 0x01;
const VERSION: u8 = 1;
pub(crate) const MAX_FRAME: usize = 1 << 20;
/// How long a connection may take to send its REQUEST frame.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
const LISTENER_FD: RawFd = 3;
const STATUS_FD: RawFd = 4;

/// The C library calls the standard library has no form of.
mod sys {
    pub const SIGKILL: i32 = 9;
    const F_SETFD: i32 = 2;
    const FD_CLOEXEC: i32 = 1;
    const WNOHANG: i32 = 1;

    #[repr(C)]
    pub struct PollFd {
        fd: i32,
        events: i16,
        pub revents: i16,
    }

    impl PollFd {
        pub fn readable(fd: i32) -> PollFd {
            PollFd { fd, events: POLLIN, revents: 0 }
        }
    }

    const POLLIN: i16 = 0x1;

    unsafe extern "C" {
        fn poll(fds: *mut PollFd, n: std::ffi::c_ulong, timeout_ms: i32) -> i32;
        fn kill(pid: i32, sig: i32) -> i32;
        fn fcntl(fd: i32, cmd: i32, ...) -> i32;
        fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    }

    /// poll(2) for input on `fds` for at most `wait`: how many are ready
    /// (0 on timeout, -1 on error, EINTR included).
    pub fn wait_readable(fds: &mut [PollFd], wait: std::time::Duration) -> i32 {
        // Rounded up: a deadline 0.9 ms away is not a poll of 0 ms.
        let ms = wait.as_micros().div_ceil(1000).min(60_000) as i32;
        // SAFETY: `fds` is a valid, exclusively borrowed array of
        // `fds.len()` pollfd structures for the duration of the call.
        unsafe { poll(fds.as_mut_ptr(), fds.len() as std::ffi::c_ulong, ms) }
    }

    /// kill(2): a signal to a process (pid > 0) or process group (pid < 0).
    pub fn signal(pid: i32, sig: i32) {
        // SAFETY: kill takes two integers and touches no memory of ours.
        unsafe {
            kill(pid, sig);
        }
    }

    /// Marks an inherited descriptor close-on-exec: scripts must not get
    /// the group's listener or the status channel.
    pub fn close_on_exec(fd: i32) {
        // SAFETY: fcntl(F_SETFD) on an integer descriptor; an invalid one
        // only makes it fail.
        unsafe {
            fcntl(fd, F_SETFD, FD_CLOEXEC);
        }
    }

    /// A child of ours that has ended (reaped), if any.
    pub fn reap_one() -> Option<i32> {
        let mut status = 0;
        // SAFETY: `status` is a valid int for the kernel to write.
        let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
        (pid > 0).then_some(pid)
    }
}

/// One line to the group's error log, control characters replaced, at
/// most `LOG_CHARS` characters (a name in it comes from the request).
fn log(text: &str) {
    const LOG_CHARS: usize = 512;
    let mut clean: String = text.chars().take(LOG_CHARS).map(|c| if c.is_control() { '?' } else { c }).collect();
    if text.chars().nth(LOG_CHARS).is_some() {
        clean.push_str("...");
    }
    // A log that cannot be written is no reason to stop serving.
    let _ = writeln!(std::io::stderr().lock(), "cgi launcher: {clean}");
}

/// Names a request may not set, whatever Apache's configuration passes:
/// they make the dynamic loader, a shell or an interpreter run code of the
/// sender's choosing as the group's user (suexec refuses them too). Only
/// Apache's children can connect to the group's socket, but code running
/// in them (mod_php, say) is not to be trusted with the group's user.
fn dangerous_name(name: &[u8]) -> bool {
    const PREFIXES: &[&[u8]] = &[b"LD_", b"BASH_FUNC_", b"MALLOC_", b"PYTHON", b"PERL5", b"RUBY", b"NODE_", b"GCONV_"];
    const NAMES: &[&[u8]] = &[
        b"BASH_ENV",
        b"ENV",
        b"SHELLOPTS",
        b"BASHOPTS",
        b"PS4",
        b"IFS",
        b"CDPATH",
        b"PERLLIB",
        b"PERLIO",
        b"GLIBC_TUNABLES",
        b"LOCPATH",
        b"NLSPATH",
        b"HOSTALIASES",
        b"RES_OPTIONS",
        b"LOCALDOMAIN",
        b"TZDIR",
        b"PHPRC",
        b"PHP_INI_SCAN_DIR",
        b"JAVA_TOOL_OPTIONS",
        b"_JAVA_OPTIONS",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

/// What every script may run and inherits, from the launch environment.
struct Setup {
    roots: Vec<PathBuf>,
    exts: Vec<String>,
    app: Option<PathBuf>,
    timeout: Option<Duration>,
    /// The group's environment without ours (`PROCD_*`, `LISTEN_*`).
    base_env: Vec<(OsString, OsString)>,
    user: String,
}

impl Setup {
    fn from_env() -> Setup {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        let roots = var("PROCD_SCRIPT_ROOTS")
            .lines()
            .filter(|r| r.starts_with('/'))
            .filter_map(|r| std::fs::canonicalize(r).ok())
            .collect();
        let exts = var("PROCD_SCRIPT_EXTS")
            .split_whitespace()
            .filter(|e| e.starts_with('.'))
            .map(|e| e.to_ascii_lowercase())
            .collect();
        let app = std::env::var_os("PROCD_APP").filter(|a| !a.is_empty()).map(PathBuf::from);
        let timeout =
            var("PROCD_REQUEST_TIMEOUT_MS").parse::<u64>().ok().filter(|&ms| ms > 0).map(Duration::from_millis);
        let base_env = std::env::vars_os()
            .filter(|(k, _)| {
                let k = k.as_bytes();
                !k.starts_with(b"PROCD_") && !k.starts_with(b"LISTEN_")
            })
            .collect();
        let user = std::env::var("USER").unwrap_or_else(|_| "of this group".into());
        Setup { roots, exts, app, timeout, base_env, user }
    }

    /// The script to run, checked: under a LanguageHandler directory, with
    /// a mapped extension. Err((status, reason)) on refusal.
    fn script_for(&self, env: &[(OsString, OsString)]) -> Result<PathBuf, (u16, String)> {
        if let Some(app) = &self.app {
            // A mounted script (app=): the administrator named it.
            if !app.is_file() {
                return Err((404, format!("app= script '{}' does not exist", app.display())));
            }
            return Ok(app.clone());
        }
        let path = lookup(env, "SCRIPT_FILENAME").unwrap_or_default();
        let shown = path.to_string_lossy();
        let real = match std::fs::canonicalize(path) {
            Ok(real) if real.is_file() => real,
            _ => return Err((404, format!("script '{shown}' does not exist"))),
        };
        if !self.roots.iter().any(|root| real.starts_with(root) && real != *root) {
            let roots: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
            return Err((
                403,
                format!(
                    "refusing to run '{shown}': it is not under a directory where this group is named by LanguageHandler ({})",
                    if roots.is_empty() { "none".to_string() } else { roots.join(", ") }
                ),
            ));
        }
        let name = real.as_os_str().as_bytes().to_ascii_lowercase();
        if !self.exts.iter().any(|e| name.ends_with(e.as_bytes())) {
            return Err((
                403,
                format!(
                    "refusing to run '{shown}': its name does not end with an extension LanguageHandler maps to this group ({})",
                    if self.exts.is_empty() { "none".to_string() } else { self.exts.join(" ") }
                ),
            ));
        }
        Ok(real)
    }
}

fn lookup<'a>(env: &'a [(OsString, OsString)], name: &str) -> Option<&'a OsStr> {
    env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_os_str())
}

/// The most NAME/VALUE pairs a REQUEST may carry (Apache sends about 40).
pub(crate) const MAX_PAIRS: usize = 4096;

/// A REQUEST frame arriving on a connection, read as the bytes come
/// (never past the frame: the request body follows it, for the script).
pub(crate) struct FrameReader {
    head: [u8; 5],
    /// What the header announces.
    length: usize,
    payload: Vec<u8>,
    got: usize,
}

impl FrameReader {
    pub(crate) fn new() -> FrameReader {
        FrameReader { head: [0; 5], length: 0, payload: Vec::new(), got: 0 }
    }

    /// Reads what `sock` has: `Ok(Some(env))` once the frame is whole,
    /// `Ok(None)` when the rest has not come yet (non-blocking socket), or
    /// why the connection is refused.
    pub(crate) fn feed(&mut self, sock: &mut impl Read) -> Result<Option<Vec<(OsString, OsString)>>, String> {
        // The payload grows as its bytes come, not to what a 5-byte header
        // announces (512 pending connections must not hold 512 MiB).
        let mut chunk = [0u8; 16 << 10];
        loop {
            if self.got >= 5 && self.payload.len() == self.length {
                return parse_request(&self.payload).map(Some);
            }
            let read = if self.got < 5 {
                sock.read(&mut self.head[self.got..])
            } else {
                let want = (self.length - self.payload.len()).min(chunk.len());
                sock.read(&mut chunk[..want])
            };
            match read {
                Ok(0) if self.got == 0 => {
                    return Err("no REQUEST frame from Apache (it closed); connection closed".into());
                }
                Ok(0) => return Err("a REQUEST frame cut short (the connection closed); connection closed".into()),
                Ok(n) => {
                    if self.got >= 5 {
                        self.payload.extend_from_slice(&chunk[..n]);
                    }
                    self.got += n;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(format!("reading the REQUEST frame failed ({e}); connection closed")),
            }
            if self.got == 5 {
                let length = u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]]) as usize;
                if self.head[0] != REQUEST || !(1..=MAX_FRAME).contains(&length) {
                    return Err(format!(
                        "not a REQUEST frame from Apache (type {}, {length} bytes); connection closed",
                        self.head[0]
                    ));
                }
                self.length = length;
            }
        }
    }
}

/// The CGI environment in a REQUEST frame's payload (a name given twice
/// keeps its last value), or why not.
fn parse_request(payload: &[u8]) -> Result<Vec<(OsString, OsString)>, String> {
    if payload.first() != Some(&VERSION) {
        return Err("REQUEST of an unknown version; connection closed".into());
    }
    let mut fields: Vec<&[u8]> = payload[1..].split(|&b| b == 0).collect();
    fields.pop(); // what follows the last NUL
    if fields.len() / 2 > MAX_PAIRS {
        return Err(format!("a REQUEST of more than {MAX_PAIRS} variables; connection closed"));
    }
    let mut env: Vec<(OsString, OsString)> = Vec::with_capacity(fields.len() / 2);
    let mut at: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    for pair in fields.chunks_exact(2).filter(|pair| !pair[0].is_empty() && !pair[0].contains(&b'=')) {
        let value = OsString::from_vec(pair[1].to_vec());
        match at.get(pair[0]) {
            Some(&i) => env[i].1 = value,
            None => {
                at.insert(pair[0], env.len());
                env.push((OsString::from_vec(pair[0].to_vec()), value));
            }
        }
    }
    Ok(env)
}

/// A connection whose REQUEST frame has not all come yet.
struct Pending {
    sock: UnixStream,
    frame: FrameReader,
    deadline: Instant,
}

/// Why Apache no longer waits for this request (see PROTOCOL.md), or None.
/// (A peek cannot tell: Apache shuts its side down after the body anyway.)
fn abandoned(env: &[(OsString, OsString)]) -> Option<String> {
    let number = |k: &str| lookup(env, k)?.to_str()?.parse::<u64>().ok();
    let (queued_at, limit) = (number("PROCD_QUEUED_AT_MS")?, number("PROCD_QUEUE_TIMEOUT_MS")?);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let waited = now.saturating_sub(queued_at);
    (waited + 5 >= limit).then(|| {
        format!("it waited {waited} ms in the queue, longer than queue-timeout ({limit} ms): Apache answered 503")
    })
}

/// A short CGI answer of the launcher's own (the script never ran).
fn refuse(sock: &mut UnixStream, status: u16, why: &str) {
    log(why);
    let _ = write!(sock, "Status: {status}\r\nContent-Type: text/plain\r\n\r\n{status}\n");
}

/// A script that runs, and when it is killed.
struct Running {
    pid: i32,
    deadline: Option<Instant>,
    what: String,
}

struct Launcher {
    setup: Setup,
    running: Vec<Running>,
    /// Names dropped from requests' environments so far (logged once each).
    refused_names: std::collections::HashSet<Vec<u8>>,
}

impl Launcher {
    /// Runs the request whose frame has come (`sock` is blocking again).
    fn serve(&mut self, mut sock: UnixStream, mut env: Vec<(OsString, OsString)>) {
        env.retain(|(name, _)| {
            let name = name.as_bytes();
            if !dangerous_name(name) {
                return true;
            }
            if self.refused_names.len() < 64 && self.refused_names.insert(name.to_vec()) {
                log(&format!(
                    "the request's environment may not set {}: it would run code of the sender's as this group's user; dropped (logged once per launcher; to set it for every script, use env= on the LanguageGroup)",
                    String::from_utf8_lossy(name)
                ));
            }
            false
        });
        let what = format!(
            "{} {}",
            lookup(&env, "REQUEST_METHOD").unwrap_or(OsStr::new("?")).to_string_lossy(),
            lookup(&env, "REQUEST_URI").unwrap_or(OsStr::new("?")).to_string_lossy()
        );
        if let Some(why) = abandoned(&env) {
            return log(&format!("request dropped unrun: {what}: {why}"));
        }
        let script = match self.setup.script_for(&env) {
            Ok(script) => script,
            Err((status, why)) => return refuse(&mut sock, status, &why),
        };
        match self.spawn(&sock, &env, &script) {
            Ok(child) => {
                let pid = child.id() as i32;
                let what = format!("{what} ({}, pid {pid})", script.display());
                // The script's process group is killed a second after
                // request-timeout (Apache answered 504 at it). It is reaped
                // by pid (reap_and_enforce), not through `child`.
                let deadline = self.setup.timeout.map(|t| Instant::now() + t + Duration::from_secs(1));
                self.running.push(Running { pid, deadline, what });
            }
            Err(e) => {
                let shown = script.display();
                let (status, why) = match e.kind() {
                    ErrorKind::PermissionDenied => {
                        (403, format!("'{shown}' is not executable by user {} (chmod +x it)", self.setup.user))
                    }
                    ErrorKind::WouldBlock | ErrorKind::OutOfMemory => (503, format!("cannot start {shown}: {e}")),
                    // EMFILE, ENFILE: out of descriptors, not the script's fault.
                    _ if matches!(e.raw_os_error(), Some(23 | 24)) => (503, format!("cannot start {shown}: {e}")),
                    _ => (500, format!("cannot run {shown}: {e} (is its #! interpreter installed?)")),
                };
                refuse(&mut sock, status, &why);
            }
        }
    }

    /// The script, in a process group of its own, with the connection as
    /// stdin and stdout, our stderr, in its directory, with the group's
    /// environment plus the request's. posix_spawn: nothing is copied.
    fn spawn(&self, sock: &UnixStream, env: &[(OsString, OsString)], script: &Path) -> std::io::Result<Child> {
        let stdin = OwnedFd::from(sock.try_clone()?);
        let stdout = OwnedFd::from(sock.try_clone()?);
        let dir = script.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("/"));
        // The group's environment wins over the request's, and names that
        // would run code of the sender's are dropped (see dangerous_name).
        let request_env = env.iter().filter(|(k, _)| {
            let k = k.as_bytes();
            !matches!(k, b"PROCD_QUEUED_AT_MS" | b"PROCD_QUEUE_TIMEOUT_MS" | b"HTTP_PROXY")
                && !self.setup.base_env.iter().any(|(base, _)| base.as_bytes() == k)
        });
        Command::new(script)
            .env_clear()
            .envs(self.setup.base_env.iter().map(|(k, v)| (k, v)))
            .envs(request_env.map(|(k, v)| (k, v)))
            .current_dir(dir)
            .process_group(0)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::inherit())
            .spawn()
    }

    /// Reaps the scripts that ended; kills those past their deadline.
    fn reap_and_enforce(&mut self) {
        while let Some(pid) = sys::reap_one() {
            self.running.retain(|r| r.pid != pid);
        }
        let now = Instant::now();
        let secs = self.setup.timeout.map_or(0.0, |t| t.as_secs_f64());
        for r in self.running.iter_mut().filter(|r| r.deadline.is_some_and(|d| now > d)) {
            log(&format!("request-timeout ({secs} s): killing {} and its process group", r.what));
            sys::signal(-r.pid, sys::SIGKILL);
            sys::signal(r.pid, sys::SIGKILL);
            r.deadline = None;
        }
    }
}

/// How often the launcher looks at its scripts and the status channel
/// when nothing else happens.
const TICK: Duration = Duration::from_millis(200);
/// The most connections whose frame is still coming: past that, new ones
/// wait in the socket's backlog.
const MAX_PENDING: usize = 512;

impl Launcher {
    /// A connection's frame progressed: run it, keep waiting, or drop it.
    fn progress(&mut self, mut p: Pending) -> Option<Pending> {
        match p.frame.feed(&mut p.sock) {
            Ok(None) => Some(p),
            Ok(Some(env)) => {
                // The script gets this socket: blocking, as any stdin.
                match p.sock.set_nonblocking(false) {
                    Ok(()) => self.serve(p.sock, env),
                    Err(e) => log(&format!("cannot make a connection blocking: {e}; connection closed")),
                }
                None
            }
            Err(why) => {
                log(&why);
                None
            }
        }
    }

    /// How long poll may sleep: a tick, or less until the next deadline of
    /// a frame or a script.
    fn poll_timeout(&self, pending: &[Pending], now: Instant) -> Duration {
        let frames = pending.iter().map(|p| p.deadline);
        let scripts = self.running.iter().filter_map(|r| r.deadline);
        frames.chain(scripts).map(|d| d.saturating_duration_since(now)).fold(TICK, Duration::min)
    }
}

/// After EOF on the status channel: how long the launcher still takes
/// new connections (one may have found the group's socket just before
/// the manager swapped it), before it serves only what it holds.
const DRAIN_GRACE: Duration = Duration::from_millis(200);
/// The most connections accepted in one pass of the loop, so that
/// reaping, timeouts and slow frames get their turn.
const ACCEPTS_PER_PASS: usize = 64;

fn main() {
    for fd in [LISTENER_FD, STATUS_FD] {
        sys::close_on_exec(fd);
    }
    // SAFETY: fds 3 and 4 are ours by the launch contract (the manager
    // opens them for us and nothing else in this process uses them).
    let listener = unsafe { UnixListener::from_raw_fd(LISTENER_FD) };
    let mut status = unsafe { File::from_raw_fd(STATUS_FD) };
    // Non-blocking accept (the flag is the socket's, shared by the group's
    // launchers, which all set the same): a connection whose frame is slow
    // to come waits beside the others, never in front of them.
    if let Err(e) = listener.set_nonblocking(true) {
        log(&format!("fd 3 is not the group's listening socket: {e}"));
        std::process::exit(1);
    }
    if let Err(e) = status.write_all(b"READY\n") {
        log(&format!("fd 4 is not the status channel: {e}"));
        std::process::exit(1);
    }
    let mut launcher = Launcher { setup: Setup::from_env(), running: Vec::new(), refused_names: Default::default() };
    let mut pending: Vec<Pending> = Vec::new();
    // EOF on the status channel: drain (since when).
    let mut drain_since: Option<Instant> = None;
    // After a failed accept (EMFILE...): the listener rests a little.
    let mut accept_paused_until: Option<Instant> = None;
    let mut accept_failing = false;
    loop {
        launcher.reap_and_enforce();
        let now = Instant::now();
        for p in pending.iter().filter(|p| now >= p.deadline) {
            let _ = p.sock.shutdown(std::net::Shutdown::Both);
        }
        let before = pending.len();
        pending.retain(|p| now < p.deadline);
        if pending.len() < before {
            log(&format!(
                "{} connection(s) sent no whole REQUEST frame within {} s; closed",
                before - pending.len(),
                FRAME_TIMEOUT.as_secs()
            ));
        }
        // Draining: after the grace, no new connection is taken (the
        // group's other launchers take them), and the launcher exits once
        // what it holds is done, however busy the socket stays.
        let grace_over = drain_since.is_some_and(|t| now.duration_since(t) >= DRAIN_GRACE);
        if grace_over && pending.is_empty() && launcher.running.is_empty() {
            std::process::exit(0);
        }
        // Poll set: the pending connections, the status channel (until its
        // EOF), the listener (while there is room, it is not resting and
        // the drain's grace has not passed).
        let mut fds: Vec<sys::PollFd> = pending.iter().map(|p| sys::PollFd::readable(p.sock.as_raw_fd())).collect();
        let status_at = drain_since.is_none().then(|| {
            fds.push(sys::PollFd::readable(STATUS_FD));
            fds.len() - 1
        });
        let resting = accept_paused_until.is_some_and(|t| now < t);
        let listener_at = (pending.len() < MAX_PENDING && !grace_over && !resting).then(|| {
            fds.push(sys::PollFd::readable(LISTENER_FD));
            fds.len() - 1
        });
        let mut wait = launcher.poll_timeout(&pending, now);
        let wake_at = drain_since.map(|t| t + DRAIN_GRACE).into_iter().chain(accept_paused_until.filter(|_| resting));
        if let Some(t) = wake_at.min() {
            wait = wait.min(t.saturating_duration_since(now));
        }
        if sys::wait_readable(&mut fds, wait) <= 0 {
            continue;
        }
        if status_at.is_some_and(|i| fds[i].revents != 0) {
            let mut buf = [0u8; 64];
            match status.read(&mut buf) {
                Ok(n) if n > 0 => {}
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
                _ => drain_since = Some(Instant::now()),
            }
        }
        // Frames that progressed (in the order they were polled).
        let mut waiting = Vec::with_capacity(pending.len());
        for (p, fd) in pending.drain(..).zip(&fds) {
            if fd.revents == 0 {
                waiting.push(p);
            } else if let Some(p) = launcher.progress(p) {
                waiting.push(p);
            }
        }
        pending = waiting;
        if listener_at.is_some_and(|i| fds[i].revents != 0) {
            // What is queued now, up to the caps.
            for _ in 0..ACCEPTS_PER_PASS {
                if pending.len() >= MAX_PENDING {
                    break;
                }
                match listener.accept() {
                    Ok((sock, _)) => {
                        accept_failing = false;
                        let p = Pending { sock, frame: FrameReader::new(), deadline: Instant::now() + FRAME_TIMEOUT };
                        // Accepted sockets do not inherit O_NONBLOCK.
                        if let Err(e) = p.sock.set_nonblocking(true) {
                            log(&format!("cannot make a connection non-blocking: {e}; connection closed"));
                            continue;
                        }
                        // Apache sends the frame with its connect: usually
                        // it is all there.
                        if let Some(p) = launcher.progress(p) {
                            pending.push(p);
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // Out of descriptors, say: the connection waits in
                        // the backlog while the listener rests 100 ms.
                        if !accept_failing {
                            log(&format!("accept on the group's socket failed: {e}; retrying every 100 ms"));
                        }
                        accept_failing = true;
                        accept_paused_until = Some(Instant::now() + Duration::from_millis(100));
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn read(bytes: &[u8]) -> Result<Vec<(OsString, OsString)>, String> {
        let (mut apache, mut launcher) = UnixStream::pair().unwrap();
        apache.write_all(bytes).unwrap();
        drop(apache);
        // A blocking socket: the reader goes on until the frame is whole.
        FrameReader::new().feed(&mut launcher).map(|env| env.expect("a blocking read finishes the frame"))
    }

    #[test]
    fn a_request_frame_is_the_environment() {
        let env = read(&frame(REQUEST, b"\x01A\x001\x00EMPTY\x00\x00B\x00x=y\x00")).unwrap();
        assert_eq!(env, [("A".into(), "1".into()), ("EMPTY".into(), "".into()), ("B".into(), "x=y".into())]);
        // Names that cannot be environment names are dropped; a value
        // without its name is ignored.
        let env = read(&frame(REQUEST, b"\x01=x\x001\x00\x00v\x00ODD\x00")).unwrap();
        assert!(env.is_empty(), "{env:?}");
    }

    #[test]
    fn anything_else_is_refused_without_reading_past_it() {
        assert!(read(&frame(2, b"\x01A\x001\x00")).unwrap_err().contains("type 2"));
        assert!(read(&frame(REQUEST, b"")).unwrap_err().contains("0 bytes"));
        assert!(read(&frame(REQUEST, b"\x02A\x001\x00")).unwrap_err().contains("unknown version"));
        let mut huge = vec![REQUEST];
        huge.extend_from_slice(&((MAX_FRAME + 1) as u32).to_be_bytes());
        assert!(read(&huge).unwrap_err().contains("bytes"));
        let mut short = frame(REQUEST, b"\x01A\x001\x00");
        short.truncate(8);
        assert!(read(&short).unwrap_err().contains("cut short"));
        assert!(read(b"\x01\x00").unwrap_err().contains("cut short"));
        assert!(read(b"").unwrap_err().contains("no REQUEST frame"));
    }

    proptest::proptest! {
        /// Whatever a connection sends, the reader answers or refuses
        /// (bounded: at most the frame it announces, 1 MiB).
        #[test]
        fn any_bytes_are_read_or_refused(kind in 0u8..3, payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = read(&frame(kind, &payload));
            let _ = read(&payload);
        }
    }

    #[test]
    fn the_body_after_the_frame_is_left_for_the_script() {
        let (mut apache, mut launcher) = UnixStream::pair().unwrap();
        let mut bytes = frame(REQUEST, b"\x01A\x001\x00");
        bytes.extend_from_slice(b"BODY");
        apache.write_all(&bytes).unwrap();
        drop(apache);
        FrameReader::new().feed(&mut launcher).unwrap().unwrap();
        let mut rest = String::new();
        launcher.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "BODY");
    }

    #[test]
    fn a_name_given_twice_keeps_its_last_value_and_too_many_are_refused() {
        let env = read(&frame(REQUEST, b"\x01A\x001\x00B\x002\x00A\x003\x00")).unwrap();
        assert_eq!(env, [("A".into(), "3".into()), ("B".into(), "2".into())]);
        let mut many = vec![VERSION];
        for i in 0..=MAX_PAIRS {
            many.extend_from_slice(format!("N{i}\0v\0").as_bytes());
        }
        assert!(read(&frame(REQUEST, &many)).unwrap_err().contains("more than 4096"));
    }

    #[test]
    fn a_frame_that_comes_in_pieces_waits_without_blocking() {
        let (mut apache, mut launcher) = UnixStream::pair().unwrap();
        launcher.set_nonblocking(true).unwrap();
        let whole = frame(REQUEST, b"\x01A\x001\x00");
        let mut reader = FrameReader::new();
        assert_eq!(reader.feed(&mut launcher), Ok(None), "nothing yet");
        for piece in [&whole[..3], &whole[3..7], &whole[7..9]] {
            apache.write_all(piece).unwrap();
            assert_eq!(reader.feed(&mut launcher), Ok(None));
        }
        apache.write_all(&whole[9..]).unwrap();
        apache.write_all(b"BODY").unwrap();
        assert_eq!(reader.feed(&mut launcher), Ok(Some(vec![("A".into(), "1".into())])));
        let mut rest = [0u8; 4];
        launcher.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"BODY", "the body is left for the script");
    }

    #[test]
    fn names_that_would_run_code_are_dangerous() {
        for name in [
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "BASH_ENV",
            "BASH_FUNC_x%%",
            "PERL5OPT",
            "PYTHONPATH",
            "RUBYOPT",
            "NODE_OPTIONS",
            "GLIBC_TUNABLES",
            "IFS",
        ] {
            assert!(dangerous_name(name.as_bytes()), "{name}");
        }
        for name in ["HTTP_HOST", "QUERY_STRING", "SCRIPT_FILENAME", "APP_ENV", "SSL_CLIENT_S_DN", "REDIRECT_STATUS"] {
            assert!(!dangerous_name(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn a_request_that_outwaited_its_queue_timeout_is_dropped() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let env = |at: u64, limit: u64| {
            vec![
                ("PROCD_QUEUED_AT_MS".into(), at.to_string().into()),
                ("PROCD_QUEUE_TIMEOUT_MS".into(), limit.to_string().into()),
            ]
        };
        assert!(abandoned(&env(now, 10_000)).is_none());
        assert!(abandoned(&env(now - 20_000, 10_000)).unwrap().contains("queue-timeout (10000 ms)"));
        assert!(abandoned(&[]).is_none());
    }

    #[test]
    fn only_mapped_scripts_under_the_roots_run() {
        let dir = std::env::temp_dir().join(format!("procd-launcher-test-{}", std::process::id()));
        let (inside, outside) = (dir.join("site"), dir.join("other"));
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        for f in [inside.join("a.CGI"), inside.join("a.txt"), outside.join("b.cgi")] {
            std::fs::write(f, "#!/bin/sh\n").unwrap();
        }
        std::os::unix::fs::symlink(outside.join("b.cgi"), inside.join("link.cgi")).unwrap();
        let setup = Setup {
            roots: vec![std::fs::canonicalize(&inside).unwrap()],
            exts: vec![".cgi".into()],
            app: None,
            timeout: None,
            base_env: vec![],
            user: "u".into(),
        };
        let run = |p: &Path| setup.script_for(&[("SCRIPT_FILENAME".into(), p.into())]);
        assert!(run(&inside.join("a.CGI")).is_ok(), "extensions match whatever their case");
        assert_eq!(run(&inside.join("a.txt")).unwrap_err().0, 403);
        assert_eq!(run(&inside.join("nothing.cgi")).unwrap_err().0, 404);
        assert_eq!(run(&inside).unwrap_err().0, 404, "a directory is not a script");
        assert_eq!(run(&outside.join("b.cgi")).unwrap_err().0, 403);
        assert_eq!(run(&inside.join("link.cgi")).unwrap_err().0, 403, "a link out of the roots");
        assert_eq!(run(&inside.join("../other/b.cgi")).unwrap_err().0, 403);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
