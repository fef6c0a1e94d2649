//! The process-level primitives mod_procd needs that only exist as unsafe
//! calls: forking the manager out of the httpd parent, fork+exec of a
//! worker with its file descriptors placed and its credentials dropped, and
//! a few system calls nix does not wrap. No Apache here: the manager uses
//! this layer directly. Everything else (the manager's event loop,
//! supervision) is safe Rust on top of these and of nix.

use crate::protocol::launch::{FASTCGI_LISTEN_FD, LISTEN_FD, STATUS_FD};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};
use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// Closes every descriptor from `first` up (Linux close_range, with a
/// /proc/self/fd walk as fallback for old kernels).
fn close_from(first: RawFd) {
    // SAFETY: close_range only closes descriptors; called in a freshly
    // forked, single-threaded child, where nothing else uses them.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, libc::c_uint::MAX, 0) };
    if rc != 0 {
        for fd in first..65_536 {
            // SAFETY: as above; EBADF for unused numbers is harmless.
            unsafe { libc::close(fd) };
        }
    }
}

/// Default dispositions for every catchable signal and an empty mask: a
/// child of httpd inherits Apache's handlers and mask, and exec keeps the
/// mask.
fn reset_signals() {
    for sig in Signal::iterator() {
        if sig == Signal::SIGKILL || sig == Signal::SIGSTOP {
            continue;
        }
        // SAFETY: setting SIG_DFL installs no Rust handler.
        let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

fn dev_null_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        for target in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), target) };
        }
    }
}

/// What `fork_manager` returns in each process.
pub enum Forked {
    Parent(Pid),
    /// In the new manager: the control descriptor, moved to fd 3.
    Manager(OwnedFd),
}

/// Forks the manager from the httpd parent. In the child: a process group
/// of its own in a session without a controlling terminal (Apache's, or a
/// new one when Apache's has one),
/// SIGTERM when the httpd parent dies, default signals, stdio on /dev/null,
/// and every descriptor of Apache's closed except `control`.
pub fn fork_manager(control: BorrowedFd<'_>) -> nix::Result<Forked> {
    // SAFETY: the httpd parent runs no threads (mod_procd starts none, and
    // Apache's MPMs keep the parent single-threaded), so the child may run
    // arbitrary code after fork.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        ForkResult::Child => {
            let parent = nix::unistd::getppid();
            // SAFETY: dup2 of a descriptor we own onto fd 3 in this child.
            unsafe { libc::dup2(control.as_raw_fd(), 3) };
            close_from(4);
            dev_null_stdio();
            reset_signals();
            // A process group of its own (out of reach of the
            // `killpg(getpgrp())` with which the MPMs end their children)
            // in Apache's session, unless that session has a controlling
            // terminal (httpd run in the foreground from a shell): then a
            // session of its own, so that no worker can reach the
            // administrator's terminal. Under the kernel's autogroup
            // scheduling (one CPU share per session, on by default in
            // Debian) Apache and every worker are then one share, as with
            // mod_wsgi's daemons, mod_fcgid or mod_cgid. With a session of
            // the manager's own instead, the Python benchmark lost about a
            // third of its throughput and its p99 at 64 connections grew
            // by half (README, "Performance").
            if session_has_terminal() {
                let _ = nix::unistd::setsid();
            } else {
                let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            }
            // `ps -o comm` and /proc/PID/comm show "procd-manager".
            let _ = nix::sys::prctl::set_name(c"procd-manager");
            let _ = nix::sys::prctl::set_pdeathsig(Some(Signal::SIGTERM));
            if nix::unistd::getppid() != parent {
                // httpd died between fork and prctl.
                exit_now(0);
            }
            // SAFETY: fd 3 is ours (dup2 above) and nothing else owns it.
            Ok(Forked::Manager(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(3) }))
        }
    }
}

/// Whether this process's session has a controlling terminal
/// (`/proc/self/stat`'s tty_nr); unreadable counts as yes.
fn session_has_terminal() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return true;
    };
    // After the command name: state ppid pgrp session tty_nr ...
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after_name.split_whitespace().nth(4) != Some("0")
}

/// Writes all of `bytes` to the stream socket `fd` within `limit`, waiting
/// for room as needed (the descriptor may be blocking or not).
pub fn send_all(fd: RawFd, bytes: &[u8], limit: std::time::Duration) -> Result<(), String> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::socket::{MsgFlags, send};
    let deadline = std::time::Instant::now() + limit;
    let mut sent = 0;
    while sent < bytes.len() {
        match send(fd, &bytes[sent..], MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT) {
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(format!("timed out after {} s with {sent} bytes sent", limit.as_secs()));
                }
                // SAFETY: `fd` is open for the duration of this call (the caller owns it).
                let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
                let ms = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
                let mut fds = [PollFd::new(borrowed, PollFlags::POLLOUT)];
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(format!("poll: {e}")),
                }
            }
            Err(e) => return Err(format!("{e} after {sent} of {} bytes", bytes.len())),
        }
    }
    Ok(())
}

/// Everything needed to start one worker.
pub struct Launch<'a> {
    pub argv: &'a [CString],
    /// Environment without LISTEN_PID (added in the child, where the pid is known).
    pub env: &'a [CString],
    pub uid: u32,
    pub gid: u32,
    pub groups: &'a [u32],
    pub home: &'a CString,
    /// Becomes fd 3 (LISTEN_FDS=1), or fd 0 for FastCGI workers.
    pub listen: BorrowedFd<'a>,
    /// `LISTEN_FD` (3), or `FASTCGI_LISTEN_FD` (0: then fd 3 is /dev/null).
    pub listen_at: RawFd,
    /// Becomes fd 4: the status channel (READY from the worker; EOF from the
    /// manager means "finish what you hold and exit").
    pub status: BorrowedFd<'a>,
    /// Becomes fds 1 and 2.
    pub output: BorrowedFd<'a>,
    /// The `cgroup.procs` of the generation's cgroup, entered before exec.
    pub cgroup_procs: Option<&'a CString>,
    /// The program is this descriptor's file (`fexecve`; `argv[0]` is only
    /// its name): mod_procd's own programs, kept in a sealed memfd, which
    /// runs where the runtime dir's file system is mounted noexec.
    pub program: Option<BorrowedFd<'a>>,
}

/// Where a `Launch::program` descriptor waits for exec (close-on-exec).
const PROGRAM_FD: RawFd = STATUS_FD + 1;

/// Says why on `log` (the manager's log pipe for this worker: its own
/// descriptor until fd 2 is placed, then fd 2) and exits.
fn child_fail_to(log: RawFd, what: &str, err: nix::Error) -> ! {
    let msg = format!("mod_procd: cannot start worker: {what}: {err}\n");
    // SAFETY: write(2) to the log pipe and _exit: the only safe ways out of
    // a failed child after fork.
    unsafe {
        libc::write(log, msg.as_ptr().cast(), msg.len());
        libc::_exit(crate::protocol::launch::EXIT_CANNOT_START);
    }
}

/// `child_fail_to` fd 2, once the log pipe is there.
fn child_fail(what: &str, err: nix::Error) -> ! {
    child_fail_to(2, what, err)
}

/// fork+exec of a worker as `uid`/`gid`, leading a process group of its
/// own in the manager's session, killed when the manager dies.
pub fn spawn_worker(l: &Launch<'_>) -> nix::Result<Pid> {
    let manager = nix::unistd::getpid();
    // SAFETY: the manager is single-threaded, so the child may allocate and
    // run ordinary code before exec.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            // Move sources out of the way first (to 5 and up: never one of
            // the targets, whatever RLIMIT_NOFILE allows), so that dup2 onto
            // 0..4 never overwrites another source. Every step is checked: a
            // worker never runs with a descriptor in the wrong place. Until
            // fd 2 is placed, fd 2 is the manager's (/dev/null): failures
            // are told on the log pipe's own descriptor.
            let log = l.output.as_raw_fd();
            let high = |fd: RawFd, what: &str| {
                // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we own.
                let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, STATUS_FD + 1) };
                if moved < 0 {
                    child_fail_to(log, &format!("moving the {what} descriptor"), nix::Error::last());
                }
                moved
            };
            let listen = high(l.listen.as_raw_fd(), "listening socket");
            let status = high(l.status.as_raw_fd(), "status channel");
            let output = high(l.output.as_raw_fd(), "output pipe");
            let null = match std::fs::File::open("/dev/null") {
                Ok(f) => f,
                Err(e) => {
                    child_fail_to(log, "open /dev/null", nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
                }
            };
            let null = high(null.as_raw_fd(), "/dev/null");
            let program = l.program.map(|fd| high(fd.as_raw_fd(), "program"));
            let fastcgi = l.listen_at == FASTCGI_LISTEN_FD;
            let (fd0, fd3) = if fastcgi { (listen, null) } else { (null, listen) };
            for (source, target, what) in [
                (fd0, 0, if fastcgi { "fd 0 (listening socket)" } else { "stdin" }),
                (output, 1, "stdout"),
                (output, 2, "stderr"),
                (fd3, LISTEN_FD, if fastcgi { "fd 3 (/dev/null)" } else { "fd 3 (listening socket)" }),
                (status, STATUS_FD, "fd 4 (status channel)"),
            ] {
                // SAFETY: placing our own descriptors at fixed numbers; dup2
                // clears close-on-exec on the targets.
                if unsafe { libc::dup2(source, target) } != target {
                    // Before fd 2 is placed, or if placing it failed: the
                    // moved copy of the log pipe.
                    let to = if target > 2 { 2 } else { output };
                    child_fail_to(to, &format!("placing {what}"), nix::Error::last());
                }
            }
            if let Some(program) = program.filter(|fd| *fd != PROGRAM_FD) {
                // SAFETY: duplicating our own descriptor onto 5 (whatever was
                // there is a moved source, already placed), close-on-exec.
                if unsafe { libc::dup3(program, PROGRAM_FD, libc::O_CLOEXEC) } != PROGRAM_FD {
                    child_fail("placing the program's descriptor", nix::Error::last());
                }
            }
            close_from(if program.is_some() { PROGRAM_FD + 1 } else { PROGRAM_FD });
            reset_signals();
            // A process group of its own (signalled as one) in the
            // manager's session, not a session of its own: under autogroup
            // scheduling a session per worker made each worker as heavy as
            // all of Apache, and a group with more processes heavier than
            // one with fewer (see fork_manager). That session has no
            // controlling terminal, and a worker, not its leader, can never
            // acquire one.
            if let Err(e) = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0)) {
                child_fail("setpgid", e);
            }
            if let Some(procs) = l.cgroup_procs {
                // Still root here: enter the generation's cgroup, which the
                // worker's user cannot leave.
                let entered = std::fs::OpenOptions::new()
                    .write(true)
                    .open(std::path::Path::new(std::ffi::OsStr::from_bytes(procs.as_bytes())))
                    .and_then(|mut f| std::io::Write::write_all(&mut f, b"0"));
                if let Err(e) = entered {
                    child_fail(
                        "entering the generation's cgroup",
                        nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                    );
                }
            }
            if l.uid == 0 || l.gid == 0 || l.groups.contains(&0) {
                child_fail("refusing to run a worker with uid or gid 0", nix::Error::EPERM);
            }
            let gids: Vec<Gid> = l.groups.iter().map(|g| Gid::from_raw(*g)).collect();
            if let Err(e) = nix::unistd::setgroups(&gids) {
                child_fail("setgroups", e);
            }
            if let Err(e) = nix::unistd::setgid(Gid::from_raw(l.gid)) {
                child_fail("setgid", e);
            }
            if let Err(e) = nix::unistd::setuid(Uid::from_raw(l.uid)) {
                child_fail("setuid", e);
            }
            // After setuid: changing credentials clears the death signal.
            let _ = nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL));
            if nix::unistd::getppid() != manager {
                // SAFETY: leaving a child whose manager is already gone.
                unsafe { libc::_exit(0) };
            }
            if let Err(e) = nix::unistd::chdir(l.home.as_c_str()) {
                child_fail(&format!("chdir {}", l.home.to_string_lossy()), e);
            }
            let mut env: Vec<CString> = l.env.to_vec();
            if !fastcgi {
                if let Ok(pid) = CString::new(format!("LISTEN_PID={}", nix::unistd::getpid())) {
                    env.push(pid);
                }
            }
            let Some(name) = l.argv.first() else { child_fail("argv", nix::Error::EINVAL) };
            let err = match program {
                Some(_) => nix::unistd::fexecve(PROGRAM_FD, l.argv, &env),
                None => nix::unistd::execve(name, l.argv, &env),
            }
            .err()
            .unwrap_or(nix::Error::EINVAL);
            child_fail(&format!("exec {}", name.to_string_lossy()), err);
        }
    }
}

/// The time as Apache writes it in error logs: `Sun Nov 22 06:42:48.093576 2026`.
pub fn log_time() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() as libc::time_t;
    // SAFETY: localtime_r and strftime write only into the buffers given.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        let mut head = [0u8; 64];
        let mut year = [0u8; 16];
        let n = libc::strftime(head.as_mut_ptr().cast(), head.len(), c"%a %b %d %H:%M:%S".as_ptr(), &tm);
        let m = libc::strftime(year.as_mut_ptr().cast(), year.len(), c"%Y".as_ptr(), &tm);
        format!(
            "{}.{:06} {}",
            String::from_utf8_lossy(&head[..n]),
            now.subsec_micros(),
            String::from_utf8_lossy(&year[..m])
        )
    }
}

/// Ends this process at once, without running atexit handlers or flushing
/// stdio buffers inherited from httpd (the manager is a fork of httpd).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Installs a signal disposition that runs no Rust code (SIG_IGN/SIG_DFL).
pub fn set_sigaction(sig: Signal, action: &nix::sys::signal::SigAction) -> nix::Result<()> {
    if matches!(action.handler(), nix::sys::signal::SigHandler::Handler(_) | nix::sys::signal::SigHandler::SigAction(_))
    {
        return Err(nix::Error::EINVAL);
    }
    // SAFETY: only SIG_IGN / SIG_DFL reach here (checked above).
    unsafe { nix::sys::signal::sigaction(sig, action) }.map(|_| ())
}

/// Bytes this end of a stream socket has sent that the peer has not taken
/// yet (SIOCOUTQ). On a Unix socket: not read by the peer process, so zero
/// after a REQUEST means a worker took it. On TCP: not acknowledged by the
/// peer's kernel, which acknowledges what reaches the socket's receive
/// buffer (also of a connection still waiting to be accepted), so zero
/// means the request was delivered to the program's socket, not that the
/// program read it (PROTOCOL.md, "The http protocol", listen=tcp).
pub fn unread_by_peer(socket: &impl AsRawFd) -> std::io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one int through the pointer we pass.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n.max(0) as usize) }
}

/// Does nothing: its being installed is what counts (see
/// `wake_on_child_exit`).
extern "C" fn child_exited(_: libc::c_int) {}

/// What SIGCHLD does in this process now.
fn sigchld_handler() -> Option<libc::sighandler_t> {
    // SAFETY: a NULL new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        (libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) == 0).then_some(old.sa_sigaction)
    }
}

/// In the httpd parent: makes a child's exit end the parent's sleeps.
///
/// Apache's MPMs look for exited children with a non-blocking wait, then
/// sleep one second (`ap_wait_or_timeout`); after a graceful restart they
/// replace old children one for one as those exit, so intake pauses for
/// about a second at every graceful. With a handler for SIGCHLD installed,
/// a child's exit interrupts that sleep (select and nanosleep are never
/// restarted, whatever SA_RESTART says) and the parent reaps and replaces
/// at once.
///
/// Nothing else changes: the handler does nothing, SA_RESTART keeps every
/// other interrupted system call restarting as before, SA_NOCLDSTOP
/// ignores stops, and children stay waitable (no SA_NOCLDWAIT, never
/// SIG_IGN). It is installed only over the default disposition: if another
/// module handles or ignores SIGCHLD, this returns false and leaves it.
pub fn wake_on_child_exit() -> bool {
    if sigchld_handler() != Some(libc::SIG_DFL) {
        return false;
    }
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(child_exited),
        nix::sys::signal::SaFlags::SA_RESTART | nix::sys::signal::SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handler is an empty extern "C" function: async-signal-safe.
    unsafe { nix::sys::signal::sigaction(Signal::SIGCHLD, &action) }.is_ok()
}

/// Whether SIGCHLD is the default or mod_procd's own handler (no other
/// module's handler would see the manager's wake, `manager::parent_wake`).
pub fn sigchld_is_ours_to_take() -> bool {
    let now = sigchld_handler();
    now == Some(libc::SIG_DFL) || now == Some(child_exited as *const () as libc::sighandler_t)
}

/// Puts the default disposition back if ours is installed: before this
/// .so is unloaded (the handler's code goes with it), and in processes
/// forked from the parent that do not need it (Apache's children).
pub fn stop_waking_on_child_exit() {
    if sigchld_handler() == Some(child_exited as *const () as libc::sighandler_t) {
        // SAFETY: SIG_DFL installs no handler.
        let _ = unsafe { nix::sys::signal::signal(Signal::SIGCHLD, nix::sys::signal::SigHandler::SigDfl) };
    }
}

/// This process's command line as it was started (`/proc/self/cmdline`),
/// whatever the program did to its own argv since; empty if unreadable.
pub fn command_line() -> Vec<String> {
    std::fs::read("/proc/self/cmdline")
        .map(|raw| {
            raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
        })
        .unwrap_or_default()
}

/// This process's id, read once per process: `note_own_pid` is called in
/// every Apache child (child_init), so a request does not pay a `getpid`
/// system call (glibc no longer caches it).
static OWN_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub fn note_own_pid() {
    OWN_PID.store(std::process::id(), std::sync::atomic::Ordering::Relaxed);
}

pub fn own_pid() -> u32 {
    match OWN_PID.load(std::sync::atomic::Ordering::Relaxed) {
        0 => std::process::id(),
        pid => pid,
    }
}
