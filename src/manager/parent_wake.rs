//! After a graceful restart, a wake for the httpd parent while an old child
//! is still busy.
//!
//! The MPMs replace old children one for one as they exit, and start the
//! rest only when a one-second sleep passes without an exit (event.c and
//! worker.c `server_main_loop`: "we hit a 1 second timeout in which none of
//! the previous generation of children needed to be reaped"). The SIGCHLD
//! handler mod_procd installs in the parent (`os::wake_on_child_exit`)
//! ends that sleep at each exit. But an old child still busy with a long
//! request does not exit, and if another child's exit was reaped before the
//! parent went to sleep (mod_cgid's daemon is restarted at every graceful),
//! the parent sleeps the whole second with no child taking connections:
//! measured here, ~1 s without intake at half the gracefuls.
//!
//! So for a while after each graceful plan, the manager looks at what the
//! parent is doing (`/proc/PID/syscall`: root may read it) and, once the
//! parent has slept in that wait for `AFTER`, sends it one SIGCHLD. The
//! parent's sleep ends with no child to reap, which the MPM takes as the
//! end of its second: it starts the children still missing. Nothing else
//! changes: the signal is only sent where the parent catches SIGCHLD and no
//! other module had a handler for it when the plan was made (so the
//! handler is mod_procd's, which does nothing), to a parent that is still
//! ours, only once per graceful, and only into the MPM's plain sleep
//! (`select` or `pselect6` with no descriptors, which is what `apr_sleep`
//! is).

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::Read;
use std::time::{Duration, Instant};

/// How long the parent must have slept before it is woken: long enough for
/// children it just started to be up (an extra idle-maintenance pass then
/// sees them), short against the second it would sleep.
pub const AFTER: Duration = Duration::from_millis(50);
/// How long after a graceful plan the manager watches (the MPM's own second
/// has passed by then).
pub const WATCH_FOR: Duration = Duration::from_millis(1500);
/// How often it looks, while watching.
pub const LOOK_EVERY: Duration = Duration::from_millis(10);

/// `select`-like system calls of this machine (a sleep when they wait on
/// no descriptors), and plain sleeps.
#[cfg(target_arch = "x86_64")]
const SELECTS: &[libc::c_long] = &[libc::SYS_select, libc::SYS_pselect6];
#[cfg(not(target_arch = "x86_64"))]
const SELECTS: &[libc::c_long] = &[libc::SYS_pselect6];
#[cfg(target_arch = "x86_64")]
const SLEEPS: &[libc::c_long] = &[libc::SYS_nanosleep, libc::SYS_clock_nanosleep];
#[cfg(not(target_arch = "x86_64"))]
const SLEEPS: &[libc::c_long] = &[libc::SYS_clock_nanosleep];

/// Whether a `/proc/PID/syscall` line is a plain sleep: `select` or
/// `pselect6` with no descriptors and no sets (`apr_sleep`), or
/// `nanosleep` / `clock_nanosleep`.
pub fn is_plain_sleep(line: &str) -> bool {
    let mut fields = line.split_whitespace();
    let Some(number) = fields.next().and_then(|n| n.parse::<libc::c_long>().ok()) else {
        return false;
    };
    let args: Vec<&str> = fields.take(4).collect();
    (SELECTS.contains(&number) && args.len() == 4 && args.iter().all(|a| *a == "0x0")) || SLEEPS.contains(&number)
}

/// Whether a `/proc/PID/status` text says the process catches SIGCHLD.
pub fn catches_sigchld(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGCHLD - 1)) != 0)
}

/// Reads at most `limit` bytes of a /proc file.
fn read_bounded(path: &str, limit: u64) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path).ok()?.take(limit).read_to_string(&mut text).ok()?;
    Some(text)
}

/// One graceful restart's watch.
pub struct ParentWake {
    until: Instant,
    asleep_since: Option<Instant>,
}

impl ParentWake {
    pub fn new(now: Instant) -> ParentWake {
        ParentWake { until: now + WATCH_FOR, asleep_since: None }
    }

    /// Looks at the parent once; true when the watch is over (woken, or
    /// nothing to do).
    pub fn look(&mut self, httpd: Pid, now: Instant) -> bool {
        if now >= self.until {
            return true;
        }
        let syscall = read_bounded(&format!("/proc/{httpd}/syscall"), 256).unwrap_or_default();
        if !is_plain_sleep(&syscall) {
            self.asleep_since = None;
            return false;
        }
        let since = *self.asleep_since.get_or_insert(now);
        if now.duration_since(since) < AFTER {
            return false;
        }
        let status = read_bounded(&format!("/proc/{httpd}/status"), 16 << 10).unwrap_or_default();
        if catches_sigchld(&status) {
            let _ = kill(httpd, Signal::SIGCHLD);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_mpms_plain_sleep_counts() {
        // What the httpd parent shows in ap_wait_or_timeout's apr_sleep.
        let line = |n: libc::c_long, rest: &str| format!("{n} {rest}");
        assert!(is_plain_sleep(&line(libc::SYS_pselect6, "0x0 0x0 0x0 0x0 0x7ffc5913a9a0 0x0 0x7ffc5913a990 0x7f99")));
        assert!(is_plain_sleep(&line(libc::SYS_clock_nanosleep, "0x0 0x0 0x7ffd 0x7ffd 0x0 0x0 0x7ffd 0x7fc0")));
        #[cfg(target_arch = "x86_64")]
        assert!(is_plain_sleep("270 0x0 0x0 0x0 0x0 0x7ffc5913a9a0 0x0 0x7ffc5913a990 0x7f99732c8954"));
        // Waiting on descriptors, reading, running, or nothing readable.
        assert!(!is_plain_sleep(&line(libc::SYS_pselect6, "0x5 0x7ffc 0x0 0x0 0x7ffc 0x0 0x7ffc 0x7f99")));
        assert!(!is_plain_sleep("0 0x3 0x7fed 0x20000 0x7fed 0xffffffff 0x0 0x7fff 0x7fed"));
        assert!(!is_plain_sleep("running"));
        assert!(!is_plain_sleep(""));
        assert!(!is_plain_sleep(&line(libc::SYS_pselect6, "0x0")));
    }

    #[test]
    fn sigchld_caught_or_not() {
        assert!(catches_sigchld("Name:\tapache2\nSigIgn:\t0000000000001000\nSigCgt:\t00000000080146eb\n"));
        assert!(!catches_sigchld("SigCgt:\t00000000080046eb\n"));
        assert!(!catches_sigchld("SigCgt:\tzz\n"));
        assert!(!catches_sigchld(""));
    }
}
