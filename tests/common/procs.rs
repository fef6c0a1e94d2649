//! Processes seen through /proc: liveness, parents and descendants, uids,
//! descriptors, CPU time, zombies, and descriptors shared with another
//! process (kcmp).

use std::collections::BTreeSet;

pub fn pid_alive(pid: i32) -> bool {
    // A zombie is dead for our purposes only once reaped; /proc shows both.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()
}

pub fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// Every live descendant of `root`.
pub fn descendants(root: i32) -> BTreeSet<i32> {
    let pids = all_pids();
    let mut found = BTreeSet::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &c in &pids {
            if parent_of(c) == Some(p) && found.insert(c) {
                frontier.push(c);
            }
        }
    }
    found
}

/// Processes whose command line mentions `needle` (our private directory).
pub fn pids_mentioning(needle: &str) -> BTreeSet<i32> {
    all_pids()
        .into_iter()
        .filter(|p| *p != std::process::id() as i32)
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .filter(|p| pid_alive(*p))
        .collect()
}

/// The process manager of an Apache master (its child named procd-manager).
pub fn manager_of(master: i32) -> Option<i32> {
    all_pids().into_iter().find(|p| parent_of(*p) == Some(master) && comm(*p) == "procd-manager")
}

/// The direct children of `pid`.
pub fn children(pid: i32) -> BTreeSet<i32> {
    all_pids().into_iter().filter(|p| parent_of(*p) == Some(pid) && pid_alive(*p)).collect()
}

pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

/// (real uid, real gid) of a process.
pub fn uid_gid(pid: i32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u32 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(u32::MAX)
    };
    (field("Uid:"), field("Gid:"))
}

/// What each open descriptor of a process points to (socket:[..], paths, pipes).
pub fn fd_targets(pid: i32) -> BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()).map(|t| t.display().to_string()).collect())
        .unwrap_or_default()
}

/// User + system CPU time of a process, in clock ticks.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    // After the comm: state(0) ppid(1) ... utime(11) stime(12)
    fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Zombies among the children of `pid`.
pub fn zombie_children(pid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|p| parent_of(*p) == Some(pid))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .collect()
}

/// Whether `pid` is left with no zombie children within 2 s: a child
/// killed a moment ago is a zombie until its parent's next wake-up reaps
/// it; only one that stays is a fault.
pub fn zombies_reaped(pid: i32) -> bool {
    super::apache::wait_until(std::time::Duration::from_secs(2), || zombie_children(pid).is_empty())
}

/// Every open descriptor of a process: (number, what it points to). Each
/// descriptor counts, also two pointing to the same pipe or file.
pub fn fd_list(pid: i32) -> Vec<(i32, String)> {
    let dir =
        std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"));
    let mut fds: Vec<(i32, String)> = dir
        .filter_map(|e| {
            let e = e.ok()?;
            let n: i32 = e.file_name().to_str()?.parse().ok()?;
            // A descriptor closed while we look is gone; nothing to count.
            Some((n, std::fs::read_link(e.path()).ok()?.display().to_string()))
        })
        .collect();
    fds.sort();
    fds
}

/// How many descriptors a process has open (0 if it is gone).
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// kcmp(KCMP_FILE): whether `fd1` of `pid1` and `fd2` of `pid2` are the
/// same open file description. Panics if the kernel cannot say (no kcmp,
/// or not allowed): a check built on it must not pass silently.
pub fn same_description(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> bool {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp only compares kernel objects of two processes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1 as libc::c_long,
            pid2 as libc::c_long,
            KCMP_FILE,
            fd1 as libc::c_long,
            fd2 as libc::c_long,
        )
    };
    match r {
        0 => true,
        1..=3 => false,
        _ => {
            let e = std::io::Error::last_os_error();
            // The descriptor was closed meanwhile: not shared.
            if e.raw_os_error() == Some(libc::EBADF) && (!fd_open(pid1, fd1) || !fd_open(pid2, fd2)) {
                return false;
            }
            panic!(
                "kcmp(pid {pid1} fd {fd1}, pid {pid2} fd {fd2}) failed: {e}; the descriptor checks need kcmp \
                 (CONFIG_KCMP, and ptrace access to both processes: run as root)"
            )
        }
    }
}

fn fd_open(pid: i32, fd: i32) -> bool {
    std::fs::symlink_metadata(format!("/proc/{pid}/fd/{fd}")).is_ok()
}

/// Descriptors of `pid` that share an open file description with one of
/// `master`'s: inherited, not merely the same file opened again (kcmp(2)).
/// Panics if kcmp does not work (checked first on a descriptor of ours).
pub fn shared_descriptions(master: i32, pid: i32) -> Vec<String> {
    let me = std::process::id() as i32;
    let probe = std::fs::File::open("/proc/self/stat").expect("open a probe file");
    let probe_fd = std::os::fd::AsRawFd::as_raw_fd(&probe);
    assert!(same_description(me, probe_fd, me, probe_fd), "kcmp says a descriptor differs from itself");
    let theirs = fd_list(master);
    assert!(!theirs.is_empty(), "the httpd master {master} has no descriptors: is it alive?");
    let mut shared = Vec::new();
    for (fd, target) in fd_list(pid) {
        for (mfd, mtarget) in &theirs {
            // The same description always has the same target.
            if &target == mtarget && same_description(pid, fd, master, *mfd) {
                shared.push(format!("fd {fd} -> {target} (master fd {mfd})"));
            }
        }
    }
    shared
}
