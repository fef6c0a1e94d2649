//! Processes as the manager sees them: signalling workers, explaining how
//! they ended, and finding its own children (orphans it adopted) in /proc.

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, OwnedFd};

/// Sends `sig` to a worker's process group (it leads one) and to the
/// worker itself, in case it left its group.
pub fn signal_worker(pid: Pid, sig: Signal) {
    let _ = killpg(pid, sig);
    let _ = kill(pid, sig);
}

pub fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, sig, core) => {
            let hint = match sig {
                Signal::SIGKILL => " (killed: by the manager, an administrator, or the kernel's out-of-memory killer)",
                Signal::SIGSEGV | Signal::SIGBUS | Signal::SIGABRT => " (crashed)",
                _ => "",
            };
            format!("was killed by signal {}{}{hint}", sig.as_str(), if core { " with a core dump" } else { "" })
        }
        other => format!("{other:?}"),
    }
}

/// The real uid of a process.
pub fn process_uid(pid: Pid) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// A process's name, escaped for a log line.
pub fn process_name(pid: Pid) -> String {
    let comm = std::fs::read(format!("/proc/{pid}/comm")).unwrap_or_default();
    super::log::escape(comm.trim_ascii_end())
}

/// The manager's children, from /proc (the kernel's list when it has it,
/// else a scan of every process's parent).
pub fn own_children() -> Vec<Pid> {
    let me = std::process::id();
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")) {
        return text.split_whitespace().filter_map(|p| p.parse().ok()).map(Pid::from_raw).collect();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| s.rsplit(')').next()?.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(me)
        })
        .map(Pid::from_raw)
        .collect()
}

/// The children of `pid` (of all its threads), from the kernel's lists;
/// none where the kernel keeps no such list.
pub fn children_of(pid: Pid) -> Vec<Pid> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).map(Pid::from_raw).collect::<Vec<_>>())
        .collect()
}

pub fn set_nonblocking(fd: &OwnedFd) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    if let Ok(flags) = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL) {
        let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK));
    }
}

/// A process's resident set in bytes (`/proc/PID/statm`).
pub fn resident_bytes(pid: Pid) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096);
    Some(pages.saturating_mul(u64::try_from(page).unwrap_or(4096)))
}

/// How many read and write system calls a process (all its threads) has
/// made (`/proc/PID/io`): a worker blocked in accept makes none, so an
/// unchanged count means idle, in any language.
pub fn io_calls(pid: Pid) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| -> Option<u64> { io.lines().find_map(|l| l.strip_prefix(name))?.trim().parse().ok() };
    Some(field("syscr:")?.saturating_add(field("syscw:")?))
}

/// Whether a listening socket has connections waiting to be accepted.
pub fn has_pending(listener: &std::os::unix::net::UnixListener) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// The Unix socket connections a process holds, as (fd, inode), outside
/// the launch contract's descriptors 0..=4.
pub fn held_sockets(pid: Pid) -> Vec<(i32, u64)> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            if fd <= crate::protocol::launch::STATUS_FD {
                return None;
            }
            let target = std::fs::read_link(e.path()).ok()?;
            let inode = target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()?;
            Some((fd, inode))
        })
        .collect()
}

/// The inodes of the Unix sockets bound under `dir` (listeners and the
/// connections they accepted carry their path), from /proc/net/unix.
pub fn sockets_under(dir: &str) -> std::collections::HashSet<u64> {
    let text = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let path = fields.get(7)?;
            (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
                .then(|| fields.get(6)?.parse().ok())?
        })
        .collect()
}

/// Whether `pid` is blocked in a read or write on descriptor `fd` (waiting
/// for Apache: to send it the body, or to take its output).
pub fn blocked_on(pid: Pid, fd: i32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) else {
        return false;
    };
    let mut words = text.split_whitespace();
    let (Some(nr), Some(arg0)) = (words.next().and_then(|w| w.parse::<i64>().ok()), words.next()) else {
        return false;
    };
    let io = [libc::SYS_read, libc::SYS_write, libc::SYS_readv, libc::SYS_writev, libc::SYS_recvfrom, libc::SYS_sendto];
    io.contains(&nr) && i64::from_str_radix(arg0.trim_start_matches("0x"), 16) == Ok(i64::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_are_explained() {
        let p = Pid::from_raw(1);
        assert_eq!(describe(WaitStatus::Exited(p, 3)), "exited with status 3");
        assert!(describe(WaitStatus::Signaled(p, Signal::SIGKILL, false)).contains("out-of-memory"));
        assert!(describe(WaitStatus::Signaled(p, Signal::SIGSEGV, true)).contains("core dump"));
    }
}
