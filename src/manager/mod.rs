//! The process manager: one long-lived process per httpd instance, forked
//! from the httpd parent, that runs every group's workers.
//!
//! Single-threaded: one `poll` over a signalfd (SIGCHLD, SIGTERM), the
//! control socket from httpd (each message is a new [`Plan`]), and each
//! worker's output pipe and status channel.
//!
//! A group's life, per configuration generation:
//! 1. *starting*: a new socket `<group>.<gen>.sock`, `processes` workers
//!    started on it; each must become ready (READY on fd 4, or for programs
//!    that cannot say so, stay up for a second) within `startup-timeout`.
//! 2. *serving*: the new socket is renamed over `<group>.sock` (atomic:
//!    Apache children connecting now reach the new generation) and the
//!    previous generation starts draining. A generation that fails to start
//!    is discarded and the previous one keeps serving.
//! 3. *draining*: the manager closes its end of each worker's status
//!    channel (EOF: finish what you hold, drain the backlog, exit). After
//!    `graceful-timeout` stragglers get SIGTERM, then SIGKILL.

#![forbid(unsafe_code)]

mod log;

use crate::config::plan::{GroupPlan, Plan, SETTLE_MS};
use crate::ffi::os::{Launch, spawn_worker};
use log::Logs;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Exit status meaning "could not start at all; do not restart me".
pub const EXIT_STARTUP_FAILURE: i32 = 78;
/// A worker that exits sooner than this after starting counts as a failed start.
const STABLE_AFTER: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Between SIGTERM and SIGKILL for stragglers.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How often the manager checks its timers (start-up, drain, back-off,
/// restart files).
const TICK: Duration = Duration::from_millis(100);
/// `apachectl stop`: how long workers get after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Longest line of worker output kept before it is logged in pieces.
const MAX_LINE: usize = 8192;
/// Under the runtime dir: one file per recently exited worker, named by pid:
/// its group on the first line, then how it ended.
pub const EXITS: &str = "exits";
/// How long exit records are kept.
const EXIT_RECORD_AGE: Duration = Duration::from_secs(120);

/// Log ids of the manager.
mod id {
    pub const MANAGER: &str = "PD0200";
    pub const WORKER_STARTED: &str = "PD0201";
    pub const WORKER_EXITED: &str = "PD0202";
    pub const BACKOFF: &str = "PD0203";
    pub const GENERATION_SERVING: &str = "PD0204";
    pub const GENERATION_FAILED: &str = "PD0205";
    pub const DRAINED: &str = "PD0206";
    pub const STRAGGLER: &str = "PD0207";
    pub const SPAWN_FAILED: &str = "PD0208";
    pub const RESTART_FILE: &str = "PD0209";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Serving,
    Draining { since: Instant, terminated: bool },
}

struct Generation {
    id: u64,
    plan: GroupPlan,
    listener: UnixListener,
    /// The socket's own path until it is renamed over the group's path.
    path: PathBuf,
    phase: Phase,
    started: Instant,
    workers: Vec<Pid>,
}

struct Worker {
    group: String,
    generation: u64,
    /// Manager's end of fd 4; dropping it tells the worker to drain.
    status: Option<OwnedFd>,
    output: Option<OwnedFd>,
    partial: Vec<u8>,
    started: Instant,
    ready: bool,
    error_log: String,
}

#[derive(Default)]
struct Group {
    plan: Option<GroupPlan>,
    generations: Vec<Generation>,
    failures: u32,
    retry_at: Option<Instant>,
    restart_mtime: Option<SystemTime>,
}

impl Group {
    fn generation(&self, phase_is: impl Fn(Phase) -> bool) -> Option<&Generation> {
        self.generations.iter().find(|g| phase_is(g.phase))
    }
}

pub struct Manager {
    plan: Plan,
    groups: BTreeMap<String, Group>,
    workers: HashMap<Pid, Worker>,
    logs: Logs,
    next_generation: u64,
    control_buf: Vec<u8>,
    /// Set once shutdown begins: exits are expected, nothing is replaced.
    stopping: bool,
}

fn describe(status: WaitStatus) -> String {
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

impl Manager {
    fn new() -> Manager {
        Manager {
            plan: Plan::default(),
            groups: BTreeMap::new(),
            workers: HashMap::new(),
            logs: Logs::new(),
            next_generation: 1,
            control_buf: Vec::new(),
            stopping: false,
        }
    }

    /// A new configuration from httpd: every group starts a new generation.
    fn apply(&mut self, plan: Plan) {
        self.logs.reset(&plan.main_error_log);
        if !plan.build.is_empty() && plan.build != crate::config::plan::build_id() {
            self.logs.manager(
                "warn",
                id::MANAGER,
                &format!(
                    "httpd now runs mod_procd build {}, this manager build {}: loaders and request handling are the new build's; the manager itself is updated at the next full restart (apachectl restart)",
                    plan.build,
                    crate::config::plan::build_id()
                ),
            );
        }
        if let Err(e) = prepare_runtime_dir(Path::new(&plan.runtime_dir), plan.socket_gid, &plan.loaders) {
            self.logs.manager(
                "error",
                id::MANAGER,
                &format!("cannot prepare the runtime dir {}: {e}; groups cannot start", plan.runtime_dir),
            );
        }
        let old_dir = std::mem::replace(&mut self.plan, plan);
        self.logs.manager(
            "notice",
            id::MANAGER,
            &format!("new configuration: {} group(s), runtime dir {}", self.plan.groups.len(), self.plan.runtime_dir),
        );
        let names: Vec<String> = self.plan.groups.iter().map(|g| g.name.clone()).collect();
        // Groups that are gone: drain everything they run.
        let removed: Vec<String> = self.groups.keys().filter(|n| !names.contains(n)).cloned().collect();
        for name in removed {
            let stable = Path::new(&old_dir.runtime_dir).join(format!("{name}.sock"));
            let _ = std::fs::remove_file(stable);
            if let Some(g) = self.groups.get_mut(&name) {
                g.plan = None;
            }
            self.drain_all(&name, "the group was removed from the configuration");
        }
        for gp in self.plan.groups.clone() {
            let group = self.groups.entry(gp.name.clone()).or_default();
            group.plan = Some(gp.clone());
            group.failures = 0;
            group.retry_at = None;
            group.restart_mtime = gp.restart_file.as_ref().and_then(|f| std::fs::metadata(f).ok()?.modified().ok());
            self.start_generation(&gp.name);
        }
    }

    /// Starts a new generation of `name` (replacing one still starting).
    fn start_generation(&mut self, name: &str) {
        let Some(plan) = self.groups.get(name).and_then(|g| g.plan.clone()) else {
            return;
        };
        if plan.argv.is_empty() {
            return; // cgi: no resident workers
        }
        if let Some(pos) = self.groups[name].generations.iter().position(|g| g.phase == Phase::Starting) {
            let gen_ = self.groups.get_mut(name).map(|g| g.generations.remove(pos));
            if let Some(gen_) = gen_ {
                self.discard(gen_);
            }
        }
        let gen_id = self.next_generation;
        self.next_generation += 1;
        let path = Path::new(&self.plan.runtime_dir).join(format!("{name}.{gen_id}.sock"));
        let _ = std::fs::remove_file(&path);
        let listener = match bind_socket(&path, self.plan.socket_gid) {
            Ok(l) => l,
            Err(e) => {
                self.logs.group(
                    &plan.error_log,
                    "error",
                    id::GENERATION_FAILED,
                    name,
                    &format!("cannot create socket {}: {e}", path.display()),
                );
                self.schedule_retry(name, "its socket could not be created");
                return;
            }
        };
        let generation = Generation {
            id: gen_id,
            plan: plan.clone(),
            listener,
            path,
            phase: Phase::Starting,
            started: Instant::now(),
            workers: Vec::new(),
        };
        if let Some(g) = self.groups.get_mut(name) {
            g.generations.push(generation);
        }
        for _ in 0..plan.processes {
            if !self.spawn(name, gen_id) {
                self.fail_starting(name, "a worker could not be started");
                return;
            }
        }
    }

    fn spawn(&mut self, name: &str, gen_id: u64) -> bool {
        let Some(gen_) = self.groups.get(name).and_then(|g| g.generations.iter().find(|x| x.id == gen_id)) else {
            return false;
        };
        let plan = &gen_.plan;
        match start_worker(plan, gen_id, &gen_.listener) {
            Ok((pid, status, output)) => {
                let text = format!(
                    "generation {gen_id}: started worker pid {pid} as user {} ({})",
                    plan.user,
                    plan.argv.join(" ")
                );
                let log = plan.error_log.clone();
                self.logs.group(&log, "notice", id::WORKER_STARTED, name, &text);
                self.workers.insert(
                    pid,
                    Worker {
                        group: name.to_string(),
                        generation: gen_id,
                        status: Some(status),
                        output: Some(output),
                        partial: Vec::new(),
                        started: Instant::now(),
                        ready: false,
                        error_log: log,
                    },
                );
                if let Some(g) =
                    self.groups.get_mut(name).and_then(|g| g.generations.iter_mut().find(|x| x.id == gen_id))
                {
                    g.workers.push(pid);
                }
                true
            }
            Err(e) => {
                let log = plan.error_log.clone();
                self.logs.group(&log, "error", id::SPAWN_FAILED, name, &format!("cannot start a worker: {e}"));
                false
            }
        }
    }

    /// Kills a generation that never served and removes its socket.
    fn discard(&mut self, gen_: Generation) {
        for pid in &gen_.workers {
            let _ = killpg(*pid, Signal::SIGKILL);
            if let Some(w) = self.workers.get_mut(pid) {
                w.status = None;
            }
        }
        let _ = std::fs::remove_file(&gen_.path);
    }

    /// The starting generation of `name` failed.
    fn fail_starting(&mut self, name: &str, why: &str) {
        let Some(group) = self.groups.get_mut(name) else {
            return;
        };
        let Some(pos) = group.generations.iter().position(|g| g.phase == Phase::Starting) else {
            return;
        };
        let gen_ = group.generations.remove(pos);
        let serving = group.generation(|p| p == Phase::Serving).map(|g| g.id);
        let log = gen_.plan.error_log.clone();
        let consequence = match serving {
            Some(old) => format!("the previous generation ({old}) keeps serving"),
            None => "the group has no working generation: requests to it will fail until it starts".to_string(),
        };
        self.logs.group(
            &log,
            "error",
            id::GENERATION_FAILED,
            name,
            &format!("generation {} failed to start: {why}; {consequence}", gen_.id),
        );
        self.discard(gen_);
        self.schedule_retry(name, why);
    }

    /// Back-off before the next attempt: 0.5 s, 1 s, 2 s ... 60 s.
    fn schedule_retry(&mut self, name: &str, why: &str) {
        let Some(group) = self.groups.get_mut(name) else {
            return;
        };
        group.failures += 1;
        let delay =
            Duration::from_millis(500u64.saturating_mul(1 << group.failures.min(8).saturating_sub(1))).min(MAX_BACKOFF);
        group.retry_at = Some(Instant::now() + delay);
        let (failures, log) = (group.failures, group.plan.as_ref().map(|p| p.error_log.clone()).unwrap_or_default());
        self.logs.group(
            &log,
            "error",
            id::BACKOFF,
            name,
            &format!("workers fail to start ({failures} time(s) in a row; last: {why}); next attempt in {} ms. Check the group's command and the lines above", delay.as_millis()),
        );
    }

    /// Promotes `name`'s starting generation if every worker is ready.
    fn maybe_promote(&mut self, name: &str) {
        let Some(group) = self.groups.get_mut(name) else {
            return;
        };
        let Some(gen_) = group.generations.iter_mut().find(|g| g.phase == Phase::Starting) else {
            return;
        };
        let all_ready = gen_.workers.len() as u32 >= gen_.plan.processes
            && gen_.workers.iter().all(|p| self.workers.get(p).is_some_and(|w| w.ready));
        if !all_ready {
            return;
        }
        let stable = Path::new(&self.plan.runtime_dir).join(format!("{name}.sock"));
        if let Err(e) = std::fs::rename(&gen_.path, &stable) {
            let why = format!("cannot rename {} over {}: {e}", gen_.path.display(), stable.display());
            self.fail_starting(name, &why);
            return;
        }
        gen_.phase = Phase::Serving;
        gen_.path = stable;
        let (new_id, log, count) = (gen_.id, gen_.plan.error_log.clone(), gen_.workers.len());
        group.failures = 0;
        let old: Vec<u64> =
            group.generations.iter().filter(|g| g.phase == Phase::Serving && g.id != new_id).map(|g| g.id).collect();
        self.logs.group(
            &log,
            "notice",
            id::GENERATION_SERVING,
            name,
            &format!("generation {new_id} is serving with {count} worker(s)"),
        );
        for old_id in old {
            self.drain(name, old_id);
        }
    }

    fn drain(&mut self, name: &str, gen_id: u64) {
        let Some(gen_) = self.groups.get_mut(name).and_then(|g| g.generations.iter_mut().find(|x| x.id == gen_id))
        else {
            return;
        };
        gen_.phase = Phase::Draining { since: Instant::now(), terminated: false };
        let ready_message = gen_.plan.ready_message;
        for pid in gen_.workers.clone() {
            if let Some(w) = self.workers.get_mut(&pid) {
                w.status = None; // EOF on fd 4: finish and exit
            }
            if !ready_message {
                let _ = killpg(pid, Signal::SIGTERM);
            }
        }
    }

    fn drain_all(&mut self, name: &str, why: &str) {
        let ids: Vec<(u64, Phase)> =
            self.groups.get(name).map(|g| g.generations.iter().map(|x| (x.id, x.phase)).collect()).unwrap_or_default();
        for (gid, phase) in ids {
            match phase {
                Phase::Starting => {
                    if let Some(group) = self.groups.get_mut(name) {
                        if let Some(pos) = group.generations.iter().position(|g| g.id == gid) {
                            let g = group.generations.remove(pos);
                            self.discard(g);
                        }
                    }
                }
                Phase::Serving => self.drain(name, gid),
                Phase::Draining { .. } => {}
            }
        }
        self.logs.manager("notice", id::DRAINED, &format!("group {name}: stopping ({why})"));
    }

    /// A worker was reaped.
    fn worker_exited(&mut self, pid: Pid, status: WaitStatus) {
        let Some(mut w) = self.workers.remove(&pid) else {
            return;
        };
        self.flush_output(pid, &mut w);
        self.record_exit(pid, &w.group, &describe(status));
        let name = w.group.clone();
        let Some(group) = self.groups.get_mut(&name) else {
            return;
        };
        let Some(gen_) = group.generations.iter_mut().find(|g| g.id == w.generation) else {
            return;
        };
        gen_.workers.retain(|p| *p != pid);
        let phase = gen_.phase;
        let gen_id = gen_.id;
        let how = describe(status);
        let uptime = w.started.elapsed();
        if self.stopping {
            self.logs.group(
                &w.error_log,
                "info",
                id::WORKER_EXITED,
                &name,
                &format!("worker pid {pid} {how} (stopping)"),
            );
            return;
        }
        match phase {
            Phase::Draining { .. } => {
                let left = gen_.workers.len();
                self.logs.group(
                    &w.error_log,
                    "info",
                    id::WORKER_EXITED,
                    &name,
                    &format!("generation {gen_id}: old worker pid {pid} {how} (draining, {left} left)"),
                );
                if left == 0 {
                    if let Some(pos) = group.generations.iter().position(|g| g.id == gen_id) {
                        group.generations.remove(pos);
                    }
                    self.logs.group(
                        &w.error_log,
                        "notice",
                        id::DRAINED,
                        &name,
                        &format!("generation {gen_id} has drained and stopped"),
                    );
                }
            }
            Phase::Starting => {
                let why = format!("worker pid {pid} {how} before it was ready");
                self.logs.group(
                    &w.error_log,
                    "error",
                    id::WORKER_EXITED,
                    &name,
                    &format!("generation {gen_id}: {why}"),
                );
                self.fail_starting(&name, &why);
            }
            Phase::Serving => {
                self.logs.group(
                    &w.error_log,
                    "error",
                    id::WORKER_EXITED,
                    &name,
                    &format!(
                        "generation {gen_id}: worker pid {pid} {how} after {} ms; replacing it",
                        uptime.as_millis()
                    ),
                );
                if !w.ready {
                    self.schedule_retry(&name, &format!("worker pid {pid} {how} before it was ready"));
                } else if uptime < STABLE_AFTER {
                    // Ready, then died soon: replace at once, but back off if
                    // it keeps happening (a crash loop).
                    let loops = self.groups.get_mut(&name).map(|g| {
                        g.failures += 1;
                        g.failures
                    });
                    if loops.unwrap_or(0) >= 3 {
                        self.schedule_retry(
                            &name,
                            &format!("worker pid {pid} {how} {} ms after starting", uptime.as_millis()),
                        );
                    } else {
                        self.spawn(&name, gen_id);
                    }
                } else {
                    if let Some(g) = self.groups.get_mut(&name) {
                        g.failures = 0;
                    }
                    self.spawn(&name, gen_id);
                }
            }
        }
    }

    /// Writes how a worker ended to `RUNTIME/exits/PID`, for the request
    /// handler's log line; forgets records older than two minutes.
    fn record_exit(&mut self, pid: Pid, group: &str, how: &str) {
        let dir = Path::new(&self.plan.runtime_dir).join(EXITS);
        let file = dir.join(pid.as_raw().to_string());
        if std::fs::write(&file, format!("{group}\n{how}")).is_ok() {
            let _ = nix::unistd::chown(&file, None, Some(nix::unistd::Gid::from_raw(self.plan.socket_gid)));
            let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640));
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let old = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
                if old.is_some_and(|age| age > EXIT_RECORD_AGE) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Logs what a worker that just exited still had in its pipe.
    fn flush_output(&mut self, pid: Pid, w: &mut Worker) {
        if let Some(fd) = w.output.as_ref() {
            read_available(fd, &mut w.partial);
        }
        for line in w.partial.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            self.logs.worker_output(&w.error_log, &w.group, pid.as_raw(), line);
        }
        w.partial.clear();
    }

    /// Timers: start-up timeouts, retries, drain deadlines, restart files.
    fn tick(&mut self) {
        let now = Instant::now();
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for name in names {
            // Settled workers that cannot say READY.
            let settle = Duration::from_millis(SETTLE_MS);
            let pids: Vec<Pid> = self.groups[&name].generations.iter().flat_map(|g| g.workers.clone()).collect();
            let mut became_ready = false;
            for pid in pids {
                let quiet = self.groups[&name]
                    .generations
                    .iter()
                    .find(|g| g.workers.contains(&pid))
                    .is_some_and(|g| !g.plan.ready_message);
                if let Some(w) = self.workers.get_mut(&pid) {
                    if quiet && !w.ready && w.started.elapsed() >= settle {
                        w.ready = true;
                        became_ready = true;
                    }
                }
            }
            if became_ready {
                self.maybe_promote(&name);
            }
            let group = &self.groups[&name];
            // Start-up timeout of a starting generation.
            if let Some(g) = group.generation(|p| p == Phase::Starting) {
                let limit = Duration::from_millis(g.plan.startup_timeout_ms);
                if g.started.elapsed() > limit {
                    let why = format!("not every worker became ready within startup-timeout ({} s)", limit.as_secs());
                    self.fail_starting(&name, &why);
                }
            }
            // Serving workers that never became ready in time.
            let group = &self.groups[&name];
            if let Some(g) = group.generation(|p| p == Phase::Serving) {
                let limit = Duration::from_millis(g.plan.startup_timeout_ms);
                for pid in g.workers.clone() {
                    if self.workers.get(&pid).is_some_and(|w| !w.ready && w.started.elapsed() > limit) {
                        let _ = killpg(pid, Signal::SIGKILL);
                    }
                }
            }
            // Drain deadlines.
            let mut stragglers = Vec::new();
            if let Some(group) = self.groups.get_mut(&name) {
                for g in group.generations.iter_mut() {
                    if let Phase::Draining { since, terminated } = g.phase {
                        let timeout = Duration::from_millis(g.plan.graceful_timeout_ms);
                        if !terminated && since.elapsed() >= timeout {
                            g.phase = Phase::Draining { since, terminated: true };
                            stragglers.push((g.id, g.workers.clone(), Signal::SIGTERM, g.plan.error_log.clone()));
                        } else if terminated && since.elapsed() >= timeout + KILL_GRACE {
                            stragglers.push((g.id, g.workers.clone(), Signal::SIGKILL, g.plan.error_log.clone()));
                        }
                    }
                }
            }
            for (gid, pids, sig, log) in stragglers {
                if !pids.is_empty() {
                    self.logs.group(
                        &log,
                        "warn",
                        id::STRAGGLER,
                        &name,
                        &format!(
                            "generation {gid}: {} worker(s) still running after graceful-timeout; sending {}",
                            pids.len(),
                            sig.as_str()
                        ),
                    );
                }
                for pid in pids {
                    let _ = killpg(pid, sig);
                }
            }
            // Retries after back-off.
            let group = &self.groups[&name];
            if group.retry_at.is_some_and(|t| now >= t) && group.plan.is_some() {
                if let Some(g) = self.groups.get_mut(&name) {
                    g.retry_at = None;
                }
                let serving = self.groups[&name]
                    .generation(|p| p == Phase::Serving)
                    .map(|g| (g.id, g.workers.len(), g.plan.processes));
                match serving {
                    // Refill the serving generation.
                    Some((gid, have, want)) if (have as u32) < want => {
                        for _ in have as u32..want {
                            self.spawn(&name, gid);
                        }
                    }
                    Some(_) => {}
                    None => {
                        if self.groups[&name].generation(|p| p == Phase::Starting).is_none() {
                            self.start_generation(&name);
                        }
                    }
                }
            }
            // restart-file: touch it to restart only this group.
            let group = &self.groups[&name];
            if let Some(file) = group.plan.as_ref().and_then(|p| p.restart_file.clone()) {
                let mtime = std::fs::metadata(&file).ok().and_then(|m| m.modified().ok());
                if mtime.is_some() && mtime != group.restart_mtime {
                    let log = group.plan.as_ref().map(|p| p.error_log.clone()).unwrap_or_default();
                    if let Some(g) = self.groups.get_mut(&name) {
                        g.restart_mtime = mtime;
                    }
                    self.logs.group(
                        &log,
                        "notice",
                        id::RESTART_FILE,
                        &name,
                        &format!("{file} changed: starting a new generation"),
                    );
                    self.start_generation(&name);
                }
            }
        }
        // Groups that were removed and have fully drained.
        self.groups.retain(|_, g| g.plan.is_some() || !g.generations.is_empty());
    }

    /// Everything stops: `apachectl stop` or `graceful-stop`, or httpd is
    /// gone. Workers first get EOF on their status channel (finish what you
    /// hold, then exit); whoever is left after a second gets SIGTERM, and
    /// SIGKILL after `STOP_GRACE`. Bounded: about 3 s in all.
    fn shutdown(&mut self, why: &str) -> ! {
        self.stopping = true;
        self.logs.manager("notice", id::MANAGER, &format!("stopping all groups ({why})"));
        let mut quiet = Vec::new();
        for (pid, w) in self.workers.iter_mut() {
            w.status = None;
            let speaks_status = self
                .groups
                .get(&w.group)
                .and_then(|g| g.generations.iter().find(|x| x.id == w.generation))
                .is_some_and(|g| g.plan.ready_message);
            if !speaks_status {
                quiet.push(*pid);
            }
        }
        for pid in quiet {
            let _ = killpg(pid, Signal::SIGTERM);
        }
        let start = Instant::now();
        let mut termed = false;
        while !self.workers.is_empty() && start.elapsed() < STOP_GRACE {
            if !termed && start.elapsed() >= Duration::from_secs(1) {
                termed = true;
                for pid in self.workers.keys() {
                    let _ = killpg(*pid, Signal::SIGTERM);
                }
            }
            self.reap();
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in self.workers.keys() {
            let _ = killpg(*pid, Signal::SIGKILL);
            let _ = kill(*pid, Signal::SIGKILL);
        }
        while !self.workers.is_empty() && start.elapsed() < STOP_GRACE + Duration::from_secs(2) {
            self.reap();
            std::thread::sleep(Duration::from_millis(10));
        }
        for g in self.groups.values() {
            for gen_ in &g.generations {
                let _ = std::fs::remove_file(&gen_.path);
            }
        }
        crate::ffi::os::exit_now(0);
    }

    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.worker_exited(pid, status);
                    }
                }
            }
        }
    }

    fn read_control(&mut self, control: &OwnedFd) -> bool {
        let mut buf = [0u8; 65536];
        loop {
            match nix::unistd::read(control.as_raw_fd(), &mut buf) {
                Ok(0) => return false,
                Ok(n) => self.control_buf.extend_from_slice(&buf[..n]),
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(_) => return false,
            }
        }
        while self.control_buf.len() >= 4 {
            let len = u32::from_be_bytes([
                self.control_buf[0],
                self.control_buf[1],
                self.control_buf[2],
                self.control_buf[3],
            ]) as usize;
            if self.control_buf.len() < 4 + len {
                break;
            }
            let frame: Vec<u8> = self.control_buf.drain(..4 + len).skip(4).collect();
            match Plan::from_text(&String::from_utf8_lossy(&frame)) {
                Ok(plan) => self.apply(plan),
                Err(e) => self.logs.manager("error", id::MANAGER, &e),
            }
        }
        true
    }
}

fn memchr_nl(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|b| *b == b'\n')
}

/// Reads what is there without blocking; returns false on EOF.
fn read_available(fd: &OwnedFd, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 8192];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => return false,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => continue,
            Err(_) => return true,
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    if let Ok(flags) = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL) {
        let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK));
    }
}

/// The runtime dir: 0711 root (others may pass through to a socket they may
/// open, but not list it); `loaders/` (0755, the shipped loaders, 0644);
/// `exits/` (0750 root:Apache's group: how each worker ended, read by the
/// request handler to explain a failed request).
fn prepare_runtime_dir(dir: &Path, apache_gid: u32, loader_files: &[(String, String)]) -> std::io::Result<()> {
    let root = Some(nix::unistd::Uid::from_raw(0));
    let wheel = Some(nix::unistd::Gid::from_raw(0));
    std::fs::create_dir_all(dir)?;
    nix::unistd::chown(dir, root, wheel)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
    let loaders = dir.join("loaders");
    std::fs::create_dir_all(&loaders)?;
    nix::unistd::chown(&loaders, root, wheel)?;
    std::fs::set_permissions(&loaders, std::fs::Permissions::from_mode(0o755))?;
    for (file, source) in loader_files {
        let tmp = loaders.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, source)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, loaders.join(file))?;
    }
    let exits = dir.join(EXITS);
    std::fs::create_dir_all(&exits)?;
    nix::unistd::chown(&exits, root, Some(nix::unistd::Gid::from_raw(apache_gid)))?;
    std::fs::set_permissions(&exits, std::fs::Permissions::from_mode(0o750))?;
    // Sockets of a previous manager (killed, or httpd killed) are stale.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() == 3 && parts[2] == "sock" && parts[1].chars().all(|c| c.is_ascii_digit()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// A listening socket only root and Apache's group (its child user) may
/// connect to.
fn bind_socket(path: &Path, gid: u32) -> std::io::Result<UnixListener> {
    let listener = UnixListener::bind(path)?;
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(nix::unistd::Gid::from_raw(gid)))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

fn cstrings(items: impl IntoIterator<Item = String>) -> Result<Vec<CString>, String> {
    items
        .into_iter()
        .map(|s| CString::new(s).map_err(|_| "a NUL byte in the command or environment".to_string()))
        .collect()
}

/// Forks and execs one worker of `plan` on `listener`.
fn start_worker(plan: &GroupPlan, gen_id: u64, listener: &UnixListener) -> Result<(Pid, OwnedFd, OwnedFd), String> {
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| format!("socketpair: {e}"))?;
    let (out_read, out_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let argv = cstrings(plan.argv.clone())?;
    let mut env: Vec<String> = plan.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.extend([
        "LISTEN_FDS=1".to_string(),
        "LISTEN_FDNAMES=procd".to_string(),
        "PROCD_STATUS_FD=4".to_string(),
        format!("PROCD_GROUP={}", plan.name),
        format!("PROCD_GENERATION={gen_id}"),
        format!("PROCD_PROTOCOL={}", plan.protocol),
        format!("PROCD_THREADS={}", plan.threads),
    ]);
    if let Some(app) = &plan.app {
        env.push(format!("PROCD_APP={app}"));
    }
    let env = cstrings(env)?;
    let home = CString::new(plan.home.clone()).map_err(|_| "a NUL byte in home=".to_string())?;
    let launch = Launch {
        argv: &argv,
        env: &env,
        uid: plan.uid,
        gid: plan.gid,
        groups: &plan.groups,
        home: &home,
        listen: listener.as_fd(),
        status: theirs.as_fd(),
        output: out_write.as_fd(),
    };
    let pid = spawn_worker(&launch).map_err(|e| format!("fork: {e}"))?;
    drop(theirs);
    drop(out_write);
    set_nonblocking(&ours);
    set_nonblocking(&out_read);
    Ok((pid, ours, out_read))
}

/// The manager's main loop. Never returns.
pub fn run(control: OwnedFd) -> ! {
    let mut m = Manager::new();
    let mut mask = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    if mask.thread_block().is_err() {
        crate::ffi::os::exit_now(EXIT_STARTUP_FAILURE);
    }
    let _ = ignore_sigpipe();
    let Ok(signals) = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) else {
        crate::ffi::os::exit_now(EXIT_STARTUP_FAILURE);
    };
    set_nonblocking(&control);
    let mut last_tick = Instant::now();
    loop {
        // Worker fds to watch, in a fixed order for this round.
        let mut watched: Vec<(Pid, bool)> = Vec::new();
        let mut fds: Vec<PollFd> =
            vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN), PollFd::new(control.as_fd(), PollFlags::POLLIN)];
        for (pid, w) in &m.workers {
            if let Some(fd) = &w.output {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                watched.push((*pid, true));
            }
            if let Some(fd) = &w.status {
                if !w.ready {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    watched.push((*pid, false));
                }
            }
        }
        let _ = poll(&mut fds, PollTimeout::from(100u16));
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        if ready[0] {
            while let Ok(Some(info)) = signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => {}
                    Ok(sig) => m.shutdown(&format!("received {}", sig.as_str())),
                    Err(_) => {}
                }
            }
        }
        if ready[1] && !m.read_control(&control) {
            m.shutdown("httpd has exited");
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
                let open = w.output.as_ref().is_some_and(|fd| read_available(fd, &mut buf));
                if !open {
                    w.output = None;
                }
                let (log, group) = (w.error_log.clone(), w.group.clone());
                while let Some(nl) = memchr_nl(&buf) {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    m.logs.worker_output(&log, &group, pid.as_raw(), &line[..line.len() - 1]);
                }
                if buf.len() > MAX_LINE || (!open && !buf.is_empty()) {
                    m.logs.worker_output(&log, &group, pid.as_raw(), &buf);
                    buf.clear();
                }
                if let Some(w) = m.workers.get_mut(&pid) {
                    w.partial = buf;
                }
            } else {
                let mut msg = Vec::new();
                let open = w.status.as_ref().is_some_and(|fd| read_available(fd, &mut msg));
                if String::from_utf8_lossy(&msg).lines().any(|l| l.trim() == "READY") {
                    w.ready = true;
                    let name = w.group.clone();
                    m.maybe_promote(&name);
                } else if !open {
                    // The worker closed its status channel without READY; its
                    // exit (or the start-up timeout) decides.
                    w.status = None;
                }
            }
        }
        m.reap();
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
    crate::ffi::os::set_sigaction(Signal::SIGPIPE, &ignore)
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
