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
/// Exit status after a panic (logged as PD0210); httpd starts a new manager.
pub const EXIT_PANIC: i32 = 70;
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
/// Most bytes read from one worker's output pipe per round of the event
/// loop: a worker that writes without pause cannot hold the manager.
const READ_BUDGET: usize = 64 << 10;
/// Worker output a group may log per second (bytes); more is dropped,
/// counted, and summed up in one line (PD0212) per `OUTPUT_SUMMARY`.
const OUTPUT_RATE: u64 = 1 << 20;
/// Bytes a group may log at once before the rate applies.
const OUTPUT_BURST: u64 = 4 << 20;
const OUTPUT_SUMMARY: Duration = Duration::from_secs(5);
/// Generation sockets live here, under the runtime dir, until they are
/// renamed over `<group>.sock`: no group name can collide with them.
pub const GENERATIONS: &str = "generations";
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
    pub const PANIC: &str = "PD0210";
    pub const REFUSED: &str = "PD0211";
    pub const OUTPUT_DROPPED: &str = "PD0212";
    pub const ORPHAN: &str = "PD0213";
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
    output: OutputBudget,
}

/// A group's allowance of worker output (a token bucket), and what was
/// dropped over it since the last summary.
struct OutputBudget {
    tokens: u64,
    refilled: Instant,
    dropped_lines: u64,
    dropped_bytes: u64,
    since: Instant,
}

impl Default for OutputBudget {
    fn default() -> Self {
        let now = Instant::now();
        OutputBudget { tokens: OUTPUT_BURST, refilled: now, dropped_lines: 0, dropped_bytes: 0, since: now }
    }
}

impl OutputBudget {
    /// Whether a line of `len` bytes may be logged now.
    fn allow(&mut self, len: usize) -> bool {
        let now = Instant::now();
        let earned = (now.duration_since(self.refilled).as_micros() as u64).saturating_mul(OUTPUT_RATE) / 1_000_000;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(OUTPUT_BURST);
            self.refilled = now;
        }
        let cost = len as u64 + 1;
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            self.dropped_lines += 1;
            self.dropped_bytes += cost;
            false
        }
    }

    /// The summary line owed, if anything was dropped and it is time.
    fn summary(&mut self) -> Option<String> {
        if self.dropped_lines == 0 {
            self.since = Instant::now();
            return None;
        }
        if self.since.elapsed() < OUTPUT_SUMMARY {
            return None;
        }
        let text = format!(
            "worker output over the limit of {} KiB/s: {} line(s), {} bytes dropped in the last {} s",
            OUTPUT_RATE >> 10,
            self.dropped_lines,
            self.dropped_bytes,
            self.since.elapsed().as_secs()
        );
        self.dropped_lines = 0;
        self.dropped_bytes = 0;
        self.since = Instant::now();
        Some(text)
    }
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
    /// The httpd parent: the only process whose plans are applied.
    httpd: Pid,
    /// When bytes from another process on the control channel were last logged.
    refused_logged: Option<Instant>,
    /// Processes workers left behind, now our children: (group, generation)
    /// they end with.
    orphans: HashMap<Pid, (String, u64)>,
}

/// Sends `sig` to a worker's process group (it is a session leader) and to
/// the worker itself, in case it left its group.
fn signal_worker(pid: Pid, sig: Signal) {
    let _ = killpg(pid, sig);
    let _ = kill(pid, sig);
}

/// The main log, for the panic hook (which cannot reach the manager).
static MAIN_LOG: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

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
            httpd: nix::unistd::getppid(),
            refused_logged: None,
            orphans: HashMap::new(),
        }
    }

    /// A new configuration from httpd: every group starts a new generation.
    fn apply(&mut self, plan: Plan) {
        self.logs.reset(&plan.main_error_log);
        if let Ok(mut main) = MAIN_LOG.lock() {
            main.clone_from(&plan.main_error_log);
        }
        for g in &plan.groups {
            self.logs.set_owner(&g.error_log, g.uid, g.gid);
        }
        #[cfg(debug_assertions)]
        if let Some(file) = std::env::var_os("PROCD_TEST_PANIC_ONCE") {
            // Test hook (debug builds only): prove a panic never returns
            // into httpd's code.
            if std::fs::remove_file(file).is_ok() {
                panic!("test panic requested by PROCD_TEST_PANIC_ONCE");
            }
        }
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
            group.restart_mtime = gp.restart_file.as_deref().and_then(restart_mtime);
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
        let path = Path::new(&self.plan.runtime_dir).join(GENERATIONS).join(format!("{name}.{gen_id}.sock"));
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
        self.kill_orphans_of(&gen_.plan.name, gen_.id, &gen_.plan.error_log);
        for pid in &gen_.workers {
            signal_worker(*pid, Signal::SIGKILL);
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
        let workers = gen_.workers.clone();
        if workers.is_empty() {
            // Nothing to wait for (a generation in back-off): gone now,
            // with its listener.
            self.forget_generation(name, gen_id, "it had no workers");
            return;
        }
        for pid in workers {
            if let Some(w) = self.workers.get_mut(&pid) {
                w.status = None; // EOF on fd 4: finish and exit
            }
            if !ready_message {
                signal_worker(pid, Signal::SIGTERM);
            }
        }
    }

    /// Drops a drained generation (its listener closes with it).
    fn forget_generation(&mut self, name: &str, gen_id: u64, why: &str) {
        let Some(group) = self.groups.get_mut(name) else {
            return;
        };
        let Some(pos) = group.generations.iter().position(|g| g.id == gen_id) else {
            return;
        };
        let gen_ = group.generations.remove(pos);
        self.logs.group(
            &gen_.plan.error_log,
            "notice",
            id::DRAINED,
            name,
            &format!("generation {gen_id} has drained and stopped ({why})"),
        );
        self.kill_orphans_of(name, gen_id, &gen_.plan.error_log);
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
                    self.forget_generation(&name, gen_id, "its last worker exited");
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
        let mut buf = std::mem::take(&mut w.partial);
        if let Some(fd) = w.output.as_ref() {
            read_some(fd, &mut buf, READ_BUDGET);
        }
        self.log_output(pid, &w.error_log, &w.group, &mut buf, true);
    }

    /// Logs the complete lines at the front of `buf` (and, with `all` or
    /// past `MAX_LINE`, the rest), within the group's output budget.
    fn log_output(&mut self, pid: Pid, log: &str, group: &str, buf: &mut Vec<u8>, all: bool) {
        let mut budget = self.groups.get_mut(group).map(|g| std::mem::take(&mut g.output));
        let mut start = 0;
        let mut emit = |logs: &mut Logs, line: &[u8]| {
            if budget.as_mut().is_none_or(|b| b.allow(line.len())) {
                logs.worker_output(log, group, pid.as_raw(), line);
            }
        };
        for nl in memchr::memchr_iter(b'\n', buf) {
            emit(&mut self.logs, &buf[start..nl]);
            start = nl + 1;
        }
        while buf.len() - start > MAX_LINE {
            emit(&mut self.logs, &buf[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        if all && start < buf.len() {
            emit(&mut self.logs, &buf[start..]);
            start = buf.len();
        }
        buf.drain(..start);
        if let (Some(g), Some(b)) = (self.groups.get_mut(group), budget) {
            g.output = b;
        }
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
                        signal_worker(pid, Signal::SIGKILL);
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
                    signal_worker(pid, sig);
                }
            }
            // A drained generation with no workers left (e.g. they died in
            // back-off) goes with its listener.
            let empty: Vec<u64> = self.groups[&name]
                .generations
                .iter()
                .filter(|g| matches!(g.phase, Phase::Draining { .. }) && g.workers.is_empty())
                .map(|g| g.id)
                .collect();
            for gid in empty {
                self.forget_generation(&name, gid, "no workers left");
            }
            // What was dropped of the group's worker output.
            let summary = self.groups.get_mut(&name).and_then(|g| Some((g.output.summary()?, g.plan.clone()?)));
            if let Some((text, plan)) = summary {
                self.logs.group(&plan.error_log, "warn", id::OUTPUT_DROPPED, &name, &text);
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
                let mtime = restart_mtime(&file);
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
        self.adopt_orphans();
    }

    /// The manager is a child subreaper: a process a worker started and
    /// left behind (daemonised, in a session of its own, out of the
    /// worker's process group) becomes the manager's child once its parent
    /// ends. Such an orphan lives as long as the serving generation of a
    /// group of its user (it may be a legitimate background job), and is
    /// killed when that generation ends; one that belongs to no such
    /// generation is killed at once.
    fn adopt_orphans(&mut self) {
        for pid in own_children() {
            if self.workers.contains_key(&pid) || self.orphans.contains_key(&pid) {
                continue;
            }
            let uid = process_uid(pid);
            let home = self.groups.iter().find_map(|(name, g)| {
                g.generations
                    .iter()
                    .find(|x| x.phase == Phase::Serving && Some(x.plan.uid) == uid)
                    .map(|x| (name.clone(), x.id, x.plan.error_log.clone()))
            });
            let what = process_name(pid);
            match home {
                Some((group, generation, log)) => {
                    self.logs.group(
                        &log,
                        "notice",
                        id::ORPHAN,
                        &group,
                        &format!(
                            "pid {pid} ({what}), left running by a worker, now belongs to the manager; it ends with generation {generation}"
                        ),
                    );
                    self.orphans.insert(pid, (group, generation));
                }
                None => {
                    signal_worker(pid, Signal::SIGKILL);
                    self.logs.manager(
                        "warn",
                        id::ORPHAN,
                        &format!("killed pid {pid} ({what}), left running by a worker whose group no longer serves"),
                    );
                }
            }
        }
    }

    /// Kills what the workers of a generation left running.
    fn kill_orphans_of(&mut self, name: &str, gen_id: u64, log: &str) {
        let theirs: Vec<Pid> =
            self.orphans.iter().filter(|(_, (g, id))| g == name && *id == gen_id).map(|(p, _)| *p).collect();
        for pid in theirs {
            self.orphans.remove(&pid);
            let what = process_name(pid);
            signal_worker(pid, Signal::SIGKILL);
            self.logs.group(
                log,
                "warn",
                id::ORPHAN,
                name,
                &format!("killed pid {pid} ({what}), left running by a worker of generation {gen_id}, which has ended"),
            );
        }
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
            signal_worker(pid, Signal::SIGTERM);
        }
        let start = Instant::now();
        let mut termed = false;
        while !self.workers.is_empty() && start.elapsed() < STOP_GRACE {
            if !termed && start.elapsed() >= Duration::from_secs(1) {
                termed = true;
                for pid in self.workers.keys() {
                    signal_worker(*pid, Signal::SIGTERM);
                }
            }
            self.reap();
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in self.workers.keys() {
            signal_worker(*pid, Signal::SIGKILL);
        }
        for pid in own_children() {
            let _ = kill(pid, Signal::SIGKILL);
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
                        self.orphans.remove(&pid);
                        self.worker_exited(pid, status);
                    }
                }
            }
        }
    }

    /// Reads the control channel. Only bytes the kernel says the httpd
    /// parent sent are kept: any other holder of the channel (none should
    /// exist) is refused and logged. Returns false at EOF.
    fn read_control(&mut self, control: &OwnedFd) -> bool {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg};
        let mut buf = vec![0u8; 65536];
        loop {
            let mut space = nix::cmsg_space!(UnixCredentials);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let (n, sender) =
                match recvmsg::<()>(control.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_DONTWAIT) {
                    Ok(msg) => {
                        let sender = msg.cmsgs().ok().and_then(|mut c| {
                            c.find_map(|m| match m {
                                ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                                _ => None,
                            })
                        });
                        (msg.bytes, sender)
                    }
                    Err(Errno::EAGAIN) => break,
                    Err(Errno::EINTR) => continue,
                    Err(_) => return false,
                };
            if n == 0 {
                return false;
            }
            if sender == Some(self.httpd.as_raw()) {
                if self.control_buf.len() + n > crate::config::plan::MAX_PLAN + 4 {
                    self.logs.manager("crit", id::MANAGER, "the control channel carries more than a plan; exiting");
                    crate::ffi::os::exit_now(EXIT_PANIC);
                }
                self.control_buf.extend_from_slice(&buf[..n]);
            } else if self.refused_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                self.refused_logged = Some(Instant::now());
                let who = sender.map_or("an unknown process".to_string(), |p| format!("pid {p}"));
                self.logs.manager(
                    "crit",
                    id::REFUSED,
                    &format!(
                        "refused {n} bytes on the control channel from {who}: only the httpd parent (pid {}) configures the manager",
                        self.httpd
                    ),
                );
            }
        }
        while self.control_buf.len() >= 4 {
            let len = u32::from_be_bytes([
                self.control_buf[0],
                self.control_buf[1],
                self.control_buf[2],
                self.control_buf[3],
            ]) as usize;
            if len > crate::config::plan::MAX_PLAN {
                self.logs.manager("crit", id::MANAGER, &format!("a control frame of {len} bytes; exiting"));
                crate::ffi::os::exit_now(EXIT_PANIC);
            }
            if self.control_buf.len() < 4 + len {
                break;
            }
            let frame: Vec<u8> = self.control_buf.drain(..4 + len).skip(4).collect();
            match std::str::from_utf8(&frame).map_err(|e| e.to_string()).and_then(Plan::from_text) {
                Ok(plan) => self.apply(plan),
                Err(e) => self.logs.manager("error", id::MANAGER, &log::escape(e.as_bytes())),
            }
        }
        true
    }
}

/// The real uid of a process.
fn process_uid(pid: Pid) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// A process's name, escaped for a log line.
fn process_name(pid: Pid) -> String {
    let comm = std::fs::read(format!("/proc/{pid}/comm")).unwrap_or_default();
    log::escape(comm.trim_ascii_end())
}

/// The manager's children, from /proc (the kernel's list when it has it,
/// else a scan of every process's parent).
fn own_children() -> Vec<Pid> {
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

/// Reads what is there, up to `budget` bytes, without blocking; returns
/// false on EOF.
fn read_some(fd: &OwnedFd, into: &mut Vec<u8>, budget: usize) -> bool {
    let mut buf = [0u8; 16384];
    let mut got = 0;
    while got < budget {
        let want = buf.len().min(budget - got);
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[..want]) {
            Ok(0) => return false,
            Ok(n) => {
                into.extend_from_slice(&buf[..n]);
                got += n;
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return true,
        }
    }
    true
}

fn set_nonblocking(fd: &OwnedFd) {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    if let Ok(flags) = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL) {
        let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK));
    }
}

/// The time a restart file was last touched: only a regular file counts,
/// never what a link a tenant planted points to (lstat, not stat).
fn restart_mtime(path: &str) -> Option<SystemTime> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_file() { meta.modified().ok() } else { None }
}

/// Creates `dir` as root's with `mode`; refuses one that exists as a link
/// or as someone else's.
fn root_dir(dir: &Path, mode: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if !m.file_type().is_dir() || m.uid() != 0 => {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a directory owned by root: remove it",
                dir.display()
            )));
        }
        Ok(_) => {}
        Err(_) => std::fs::create_dir(dir)?,
    }
    nix::unistd::chown(dir, Some(nix::unistd::Uid::from_raw(0)), Some(nix::unistd::Gid::from_raw(gid)))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// The runtime dir: 0711 root (others may pass through to a socket they may
/// open, but not list it); `loaders/` (0755, the shipped loaders, 0644);
/// `generations/` (0711: sockets of generations not yet serving);
/// `exits/` (0750 root:Apache's group: how each worker ended, read by the
/// request handler to explain a failed request). The runtime dir and each
/// of its ancestors must be root's alone: root creates sockets and writes
/// files there.
fn prepare_runtime_dir(dir: &Path, apache_gid: u32, loader_files: &[(String, String)]) -> std::io::Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    root_dir(dir, 0o711, 0)?;
    if !crate::config::access::root_controls(dir) {
        return Err(std::io::Error::other(
            "it or a directory above it is writable by users other than root; use a directory only root can change (ProcdRuntimeDir)",
        ));
    }
    let loaders = dir.join("loaders");
    root_dir(&loaders, 0o755, 0)?;
    for (file, source) in loader_files {
        let tmp = loaders.join(format!(".{file}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        std::fs::write(&tmp, source)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, loaders.join(file))?;
    }
    root_dir(&dir.join(EXITS), 0o750, apache_gid)?;
    // Sockets of generations of a previous manager (killed, or httpd
    // killed) are stale; nothing else lives there.
    let generations = dir.join(GENERATIONS);
    root_dir(&generations, 0o711, 0)?;
    for entry in std::fs::read_dir(&generations)?.flatten() {
        let _ = std::fs::remove_file(entry.path());
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
    std::panic::set_hook(Box::new(|info| {
        let path = MAIN_LOG.lock().map(|p| p.clone()).unwrap_or_default();
        let line = format!(
            "[{}] [procd:crit] [pid {}] {}: the process manager panicked ({info}); it exits and httpd starts a new one. Please report this.\n",
            crate::ffi::os::log_time(),
            std::process::id(),
            id::PANIC
        );
        log::append_line(&path, &line);
    }));
    // Orphans of workers (daemonised grandchildren) become our children,
    // so they can be found and killed.
    let _ = nix::sys::prctl::set_child_subreaper(true);
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
    fn worker_output_is_rate_limited_and_summed_up() {
        let mut b = OutputBudget::default();
        let line = 8191;
        let allowed = (0..1000).filter(|_| b.allow(line)).count();
        let burst = (OUTPUT_BURST / (line as u64 + 1)) as usize;
        // (A descheduled test thread may earn a line or two meanwhile.)
        assert!((burst..burst + 3).contains(&allowed), "the burst, then nothing: {allowed}");
        assert_eq!(b.dropped_lines, 1000 - allowed as u64);
        assert_eq!(b.summary(), None, "not before OUTPUT_SUMMARY");
        b.since -= OUTPUT_SUMMARY;
        let text = b.summary().unwrap_or_default();
        assert!(text.contains(&format!("{} line(s)", 1000 - allowed)), "{text}");
        assert_eq!(b.summary(), None, "counted once");
    }

    #[test]
    fn exit_statuses_are_explained() {
        let p = Pid::from_raw(1);
        assert_eq!(describe(WaitStatus::Exited(p, 3)), "exited with status 3");
        assert!(describe(WaitStatus::Signaled(p, Signal::SIGKILL, false)).contains("out-of-memory"));
        assert!(describe(WaitStatus::Signaled(p, Signal::SIGSEGV, true)).contains("core dump"));
    }
}
