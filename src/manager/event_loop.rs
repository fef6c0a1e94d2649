//! The manager's event loop: one `poll` over a signalfd (SIGCHLD, SIGTERM),
//! the control channel from httpd, and each worker's output pipe and
//! status channel; timers every `TICK`.

use super::output::{READ_BUDGET, read_some};
use super::procs::set_nonblocking;
use super::{EXIT_STARTUP_FAILURE, MAIN_LOG, Manager, TICK, id, log, parent_wake};
use crate::logid::pd_log;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

/// The manager's entry, in the process `fork_manager` made: runs the
/// manager and never returns. A panic must not unwind back into the httpd
/// start-up code this process was forked from (it would go on as a second
/// httpd parent): the manager's panic hook has logged it, and the process
/// exits with `EXIT_PANIC`, which the httpd parent answers by starting a new
/// manager.
pub fn run_forked(control: OwnedFd) -> ! {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(control)));
    crate::os::exit_now(super::EXIT_PANIC)
}

/// The manager's main loop. Never returns.
pub fn run(control: OwnedFd) -> ! {
    std::panic::set_hook(Box::new(|info| {
        let path = MAIN_LOG.lock().map(|p| p.clone()).unwrap_or_default();
        let line = format!(
            "[{}] [procd:crit] [pid {}] {}: the process manager panicked ({info}); it exits and httpd starts a new one. Please report this.\n",
            crate::os::log_time(),
            std::process::id(),
            id::MANAGER_PANIC
        );
        log::append_line(&path, &line);
    }));
    // Orphans of workers (daemonised grandchildren) become our children,
    // so they can be found and killed.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let mut m = Manager::new();
    // This process's subscriber: events go to the manager's log files,
    // not to Apache (whose global one was inherited with the fork).
    let _subscriber = tracing::subscriber::set_default(m.logs.subscriber());
    let mut mask = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    if mask.thread_block().is_err() {
        crate::os::exit_now(EXIT_STARTUP_FAILURE);
    }
    let _ = ignore_sigpipe();
    let Ok(signals) = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) else {
        crate::os::exit_now(EXIT_STARTUP_FAILURE);
    };
    set_nonblocking(&control);
    // Files the manager creates are never writable by others, not even in
    // the moment before their mode is set.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
    let mut control = Some(control);
    let mut last_tick = Instant::now();
    loop {
        // Worker fds to watch, in a fixed order for this round.
        let mut watched: Vec<(Pid, bool)> = Vec::new();
        // (A closed control channel is watched as no event at all.)
        let control_events = if control.is_some() { PollFlags::POLLIN } else { PollFlags::empty() };
        let control_fd = control.as_ref().map_or(signals.as_fd(), |c| c.as_fd());
        let mut fds: Vec<PollFd> =
            vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN), PollFd::new(control_fd, control_events)];
        for (pid, w) in &m.workers {
            if let Some(fd) = &w.output {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                watched.push((*pid, true));
            }
            if let Some(fd) = &w.status {
                if w.status_watch {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    watched.push((*pid, false));
                }
            }
        }
        // Groups with no worker: a connection on their socket is a cold start.
        let cold = m.cold_listeners();
        let first_cold = fds.len();
        for (_, fd) in &cold {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
        }
        let wait = if m.parent_wake.is_some() { parent_wake::LOOK_EVERY } else { TICK };
        let _ = poll(&mut fds, PollTimeout::from(wait.as_millis().min(1000) as u16));
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        let woken: Vec<String> =
            cold.into_iter().enumerate().filter(|(i, _)| ready[first_cold + i]).map(|(_, (name, _))| name).collect();
        for name in woken {
            m.look_at_pool(&name, Instant::now());
        }
        if ready[0] {
            while let Ok(Some(info)) = signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => {}
                    Ok(sig) => m.shutdown(&format!("received {}", sig.as_str())),
                    Err(_) => {}
                }
            }
        }
        if ready[1] && control.as_ref().is_some_and(|c| !m.read_control(c)) {
            if !m.httpd_alive() {
                m.shutdown("httpd has exited");
            }
            // httpd lives, so another holder of the channel (a process some
            // module forked from httpd without exec) closed it: the groups
            // keep running; httpd's next plan fails to send, and it then
            // starts a new manager.
            control = None;
            pd_log!(
                id::REFUSED,
                "the control channel was closed while httpd runs (by a process other than httpd that holds a copy); groups keep running, and the next graceful restart starts a new manager"
            );
        }
        for (i, (pid, is_output)) in watched.into_iter().enumerate() {
            if !ready[i + 2] {
                continue;
            }
            let Some(w) = m.workers.get_mut(&pid) else {
                continue;
            };
            if is_output {
                let mut buf = std::mem::take(&mut w.partial);
                let open = w.output.as_ref().is_some_and(|fd| read_some(fd, &mut buf, READ_BUDGET));
                if !open {
                    w.output = None;
                }
                let (log, group) = (w.error_log.clone(), w.group.clone());
                m.log_output(pid, &log, &group, &mut buf, !open);
                if let Some(w) = m.workers.get_mut(&pid) {
                    w.partial = buf;
                }
            } else {
                let mut msg = Vec::new();
                let open = w.status.as_ref().is_some_and(|fd| read_some(fd, &mut msg, 4096));
                m.status_message(pid, &msg, open);
            }
        }
        m.reap();
        m.look_at_parent(Instant::now());
        // Timers need no finer grain than this; a busy worker's output must
        // not make the manager stat restart files for every line.
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            m.tick();
        }
    }
}

/// SIGPIPE: a worker that closes its status channel must not kill the
/// manager.
fn ignore_sigpipe() -> nix::Result<()> {
    let ignore = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::SigIgn,
        nix::sys::signal::SaFlags::empty(),
        SigSet::empty(),
    );
    crate::os::set_sigaction(Signal::SIGPIPE, &ignore)
}
