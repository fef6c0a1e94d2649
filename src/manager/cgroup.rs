//! Containment by cgroup v2, where the kernel offers it: each generation's
//! workers start in a cgroup of their own, which no process of theirs can
//! leave (the cgroup is root's), so whatever they start, daemonised or
//! not, ends with the generation (`cgroup.kill`). Where there is no
//! writable cgroup v2, the manager falls back to process groups and its
//! subreaper (see `orphans`).
//!
//! Layout: `<the manager's own cgroup>/procd-<httpd pid>/<group>.<gen>.m<manager pid>`.
//! The httpd pid names the instance, so a manager that httpd restarts
//! finds (and kills) what a previous manager of the same httpd left, and
//! two Apache instances never touch each other's cgroups.

use std::path::{Path, PathBuf};

pub struct Cgroups {
    /// `procd-<httpd pid>` under the manager's cgroup; None: unavailable.
    base: Option<PathBuf>,
    /// Killed cgroups not empty yet, removed on a later tick.
    dying: Vec<PathBuf>,
}

/// Where cgroup v2 is mounted, from /proc/self/mountinfo.
fn v2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2"))
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// This process's cgroup v2 path (the `0::` line of /proc/self/cgroup).
fn own_cgroup() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_string)
}

/// Turns off pressure-stall accounting in a cgroup of ours (kernels 6.1+):
/// we only need containment, and accounting at each extra level is work on
/// every sleep and wake-up of the workers.
fn quiet(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.pressure"), "0");
}

/// Kills every process in `dir` (and its sub-cgroups).
fn kill_all(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
        // Kernels before 5.14: one by one (the cgroup cannot be left, so
        // repeating this on later ticks ends it).
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.split_whitespace().filter_map(|p| p.parse().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

impl Cgroups {
    /// Sets up the instance's cgroup, killing what a previous manager of
    /// the same httpd left there. Returns why not, when it cannot.
    pub fn new(httpd: u32) -> (Cgroups, Option<String>) {
        let base = v2_mount()
            .zip(own_cgroup())
            .map(|(mount, own)| mount.join(own.trim_start_matches('/')).join(format!("procd-{httpd}")));
        let mut cg = Cgroups { base: None, dying: Vec::new() };
        let Some(base) = base else {
            return (cg, Some("no cgroup v2 hierarchy is mounted".into()));
        };
        if let Err(e) = std::fs::create_dir(&base) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return (cg, Some(format!("cannot create {}: {e}", base.display())));
            }
        }
        quiet(&base);
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
                kill_all(&e.path());
                cg.dying.push(e.path());
            }
        }
        cg.base = Some(base);
        (cg, None)
    }

    /// Whether generations get cgroups of their own.
    pub fn available(&self) -> bool {
        self.base.is_some()
    }

    /// A new cgroup for a generation; its `cgroup.procs`, for the worker
    /// to enter before it execs. None: no containment by cgroup.
    ///
    /// The name carries this manager's pid: generation numbers start again
    /// at 1 in a manager that replaces a dead one, while the dead one's
    /// cgroups are still being killed and removed (`dying`); reusing one of
    /// those would have the sweep kill the new generation's workers.
    pub fn create(&mut self, group: &str, generation: u64) -> Option<PathBuf> {
        let dir = self.base.as_ref()?.join(format!("{group}.{generation}.m{}", std::process::id()));
        if self.dying.contains(&dir) {
            return None;
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                quiet(&dir);
                Some(dir)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Some(dir),
            Err(_) => None,
        }
    }

    /// Ends everything in a generation's cgroup, then removes it.
    pub fn end(&mut self, dir: &Path) {
        kill_all(dir);
        if std::fs::remove_dir(dir).is_err() {
            self.dying.push(dir.to_path_buf());
        }
    }

    /// The cgroup `pid` is in, if it is one of ours.
    pub fn of(&self, pid: nix::unistd::Pid) -> Option<PathBuf> {
        let base = self.base.as_ref()?;
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let name = path.rsplit('/').next()?;
        let dir = base.join(name);
        (path.ends_with(&format!("/procd-{}/{name}", base_pid(base)?))).then_some(dir)
    }

    /// Retries removing killed cgroups (the kernel empties them shortly).
    pub fn sweep(&mut self) {
        self.dying.retain(|d| {
            kill_all(d);
            std::fs::remove_dir(d).is_err() && d.exists()
        });
    }

    /// At shutdown: everything goes.
    pub fn end_all(&mut self) {
        let Some(base) = self.base.clone() else { return };
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
                self.end(&e.path());
            }
        }
        for _ in 0..50 {
            self.sweep();
            if self.dying.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir(&base);
    }
}

fn base_pid(base: &Path) -> Option<&str> {
    base.file_name()?.to_str()?.strip_prefix("procd-")
}
