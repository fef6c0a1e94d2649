//! The process manager: one long-lived process per httpd instance, forked
//! from the httpd parent, that runs every group's workers.
//!
//! Single-threaded. Its parts:
//! - `event_loop`: the one `poll` (signals, control channel, worker pipes)
//!   and the timer tick;
//! - this file: groups and their generations as state (`Phase`), workers,
//!   and the transitions below;
//! - `policy`: the rules as pure functions (back-off, replacement, crash
//!   loops, drain and stop deadlines), unit-tested without processes;
//! - `control`: plans from the httpd parent; `launch`: one worker's start;
//!   `runtime`: the runtime dir and sockets; `output` and `log`: worker
//!   output and log files; `orphans`: what workers leave behind; `procs`:
//!   signals and /proc.
//!
//! A group's life, per configuration generation:
//! 1. *starting*: a new socket `generations/<group>.<gen>.sock`,
//!    `processes` workers started on it; each must become ready (READY on
//!    fd 4, or for programs that cannot say so, stay up for a second)
//!    within `startup-timeout`.
//! 2. *serving*: the new socket is renamed over `<group>.sock` (atomic:
//!    Apache children connecting now reach the new generation) and the
//!    previous generation starts draining. A generation that fails to start
//!    is discarded and the previous one keeps serving.
//! 3. *draining*: the manager closes its end of each worker's status
//!    channel (EOF: finish what you hold, drain the backlog, exit). After
//!    `graceful-timeout` stragglers get SIGTERM, then SIGKILL.

#![forbid(unsafe_code)]

mod cgroup;
mod control;
mod event_loop;
mod launch;
mod log;
mod orphans;
mod output;
mod parent_wake;
mod policy;
mod pool;
mod procs;
mod runtime;
mod status;
mod tcp;

#[cfg(not(any(test, feature = "fuzzing")))]
pub use event_loop::run_forked;

use launch::start_worker;
use output::{MAX_LINE, OutputBudget, READ_BUDGET, read_some};
use procs::{describe, own_children, signal_worker};
pub use runtime::{EXITS, port_file};
use runtime::{
    GENERATIONS, bind_socket, mark_down, mark_up, prepare_runtime_dir, publish_port, restart_mtime, unpublish_port,
};

use crate::config::languages::Listen;
use crate::config::plan::{GroupPlan, Plan, SETTLE_MS};
use log::{Logs, SharedLogs};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Exit status meaning "could not start at all; do not restart me".
pub const EXIT_STARTUP_FAILURE: i32 = 78;
/// Exit status after a panic (logged as PD0210); httpd starts a new manager.
pub const EXIT_PANIC: i32 = 70;
/// How often the manager checks its timers (start-up, drain, back-off,
/// restart files).
const TICK: Duration = Duration::from_millis(100);
/// How long after a generation starts draining its workers that cannot
/// read EOF on fd 4 may get SIGTERM (once their backlog is empty).
const QUIET_GRACE: Duration = Duration::from_millis(100);
/// How long exit records are kept.
const EXIT_RECORD_AGE: Duration = Duration::from_secs(120);

/// Log ids: the one catalogue.
use crate::logid::{self as id, Level, pd_log};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Serving,
    Draining { since: Instant, terminated: bool },
}

/// Where a generation's workers take their connections.
enum Listener {
    /// The generation's Unix socket (each worker's fd 3, or fd 0 for
    /// FastCGI), at `path` until it is renamed over the group's path.
    Unix { socket: UnixListener, path: PathBuf },
    /// `listen=tcp`: the loopback port its program binds, published in
    /// `GROUP.port` once the listener there is seen to be the group user's.
    Tcp { port: u16 },
}

impl Listener {
    /// The port of a `listen=tcp` generation.
    fn port(&self) -> Option<u16> {
        match self {
            Listener::Tcp { port } => Some(*port),
            Listener::Unix { .. } => None,
        }
    }

    /// Whether connections wait to be accepted (for a port: on the group
    /// user's listener there; `uid`).
    fn has_pending(&self, uid: u32) -> bool {
        match self {
            Listener::Unix { socket, .. } => procs::has_pending(socket),
            Listener::Tcp { port } => {
                matches!(tcp::who_listens(*port, uid), tcp::Owner::Group { backlog } if backlog > 0)
            }
        }
    }

    /// Removes the socket file of a generation that is going (a port has none).
    fn remove_socket(&self) {
        if let Listener::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `listen=tcp`: what Apache's children are told about a serving
/// generation's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// No `GROUP.port`: not serving yet, its program is being replaced, or
    /// writing the file failed (tried again at the next tick).
    Hidden,
    /// `GROUP.port` names the port.
    Published,
    /// Its program runs but nothing listens on the port: no `GROUP.port`,
    /// and `GROUP.down` says why (Apache answers 503 at once).
    Deaf,
}

struct Generation {
    id: u64,
    plan: GroupPlan,
    listener: Listener,
    /// `listen=tcp`: whether its port is published (see `Shown`).
    shown: Shown,
    /// Publishing its port failed and that was logged (once until it works).
    publish_failed: bool,
    phase: Phase,
    started: Instant,
    workers: Vec<Pid>,
    /// The generation's cgroup, where cgroup v2 is available.
    cgroup: Option<PathBuf>,
    /// Draining workers that cannot read EOF on fd 4 (php-cgi) have been
    /// sent SIGTERM (once their listener's backlog was empty).
    quiet_termed: bool,
    /// Workers started so far (the next one's slot).
    spawned: u32,
    /// Whether connections waited on the listener at the last look.
    waiting_before: bool,
}

/// What a worker is there for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Serving,
    /// Started to take over from this worker, which drains once this one
    /// is ready (recycling without a gap).
    Replacing(Pid),
    /// Told to finish and exit (recycled or idle above MIN): its exit is
    /// expected and not replaced.
    Retiring,
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
    role: Role,
    /// Whether fd 4 is still read (READY, then RECYCLE); false once the
    /// worker closed it or sent more than a loader would.
    status_watch: bool,
    /// Bytes read from fd 4 so far.
    status_bytes: usize,
    /// Why the worker asked to be recycled (RECYCLE on fd 4), if it did.
    reported_recycle: Option<String>,
    /// Why it is being replaced, once it is.
    retire_reason: String,
    /// Read and write system calls so far, and when that last changed.
    activity: Option<u64>,
    active_at: Instant,
    /// FastCGI workers: the connection (socket inode) it has held, and for
    /// how long, not counting time blocked on Apache.
    busy: Option<Busy>,
}

/// One request a FastCGI worker is seen holding.
struct Busy {
    inode: u64,
    counted: Duration,
    last: Instant,
}

#[derive(Default)]
struct Group {
    plan: Option<GroupPlan>,
    generations: Vec<Generation>,
    failures: u32,
    retry_at: Option<Instant>,
    restart_mtime: Option<SystemTime>,
    output: OutputBudget,
    /// When the pool (activity, memory, age) was last looked at.
    pool_checked: Option<Instant>,
    /// Clean exits (status 0: a worker recycled after maximum-requests)
    /// in the current second, bounded by `policy::clean_exits_per_second`.
    clean_exits: (Option<Instant>, u32),
    /// What the manager did to the group, by reason (procd-status).
    events: crate::status::Events,
    recent: Vec<crate::status::Event>,
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
    logs: SharedLogs,
    next_generation: u64,
    control: crate::protocol::control::Decoder,
    /// Set once shutdown begins: exits are expected, nothing is replaced.
    stopping: bool,
    /// The httpd parent: the only process whose plans are applied.
    httpd: Pid,
    /// When bytes from another process on the control channel were last logged.
    refused_logged: Option<Instant>,
    /// Processes workers left behind, now our children: (group, generation)
    /// they end with.
    orphans: HashMap<Pid, (String, u64)>,
    /// Without cgroups: the descendants of workers (and of orphans) seen so
    /// far, with the generation they come from, so that one that becomes
    /// the manager's ends with that generation (see `orphans`).
    lineage: HashMap<Pid, (String, u64)>,
    cgroups: cgroup::Cgroups,
    /// Why there is no containment by cgroup, logged with the first plan.
    no_cgroups: Option<String>,
    /// When the manager started, and its last `status.json`.
    started_wall: SystemTime,
    written: status::Written,
    /// Loopback ports handed out to `listen=tcp` generations lately.
    ports: tcp::Ports,
    /// After a graceful plan: the watch that wakes the httpd parent out of
    /// the MPM's one-second sleep (see `parent_wake`).
    parent_wake: Option<parent_wake::ParentWake>,
    /// The CGI launcher's program, made once (see `runtime::cgi_launcher_memfd`).
    cgi_launcher: Option<std::os::fd::OwnedFd>,
}

/// Who listens on a group's port, for a log line that says what happened.
fn describe_owner(owner: tcp::Owner, plan: &GroupPlan) -> String {
    match owner {
        tcp::Owner::Nobody => "not listened on by anyone".to_string(),
        tcp::Owner::Group { .. } => format!("listened on by the group's user {}", plan.user),
        tcp::Owner::Other { uid } => format!(
            "listened on by {}, not by the group's user {} (uid {}): another user took the port before the program bound it (or the program runs its listener as another user)",
            tcp::user_name(uid),
            plan.user,
            plan.uid
        ),
    }
}

/// The main log, for the panic hook (which cannot reach the manager).
static MAIN_LOG: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

impl Manager {
    fn new() -> Manager {
        let (cgroups, no_cgroups) = cgroup::Cgroups::new(nix::unistd::getppid().as_raw() as u32);
        Manager {
            plan: Plan::default(),
            groups: BTreeMap::new(),
            workers: HashMap::new(),
            logs: SharedLogs::new(),
            next_generation: 1,
            control: Default::default(),
            stopping: false,
            httpd: nix::unistd::getppid(),
            refused_logged: None,
            orphans: HashMap::new(),
            lineage: HashMap::new(),
            cgroups,
            no_cgroups,
            started_wall: SystemTime::now(),
            written: Default::default(),
            ports: Default::default(),
            parent_wake: None,
            cgi_launcher: None,
        }
    }

    /// A new configuration from httpd: every group starts a new generation.
    fn apply(&mut self, plan: Plan) {
        self.logs.lock().reset(&plan.main_error_log);
        if let Ok(mut main) = MAIN_LOG.lock() {
            main.clone_from(&plan.main_error_log);
        }
        if let Some(why) = self.no_cgroups.take() {
            pd_log!(
                id::CGROUPS,
                "no cgroup v2 containment ({why}): what workers leave running is found through the manager's subreaper, and may escape it by chains of daemons"
            );
        }
        for g in &plan.groups {
            self.logs.lock().set_owner(&g.error_log, g.uid, g.gid, &g.groups);
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
            pd_log!(level: Level::Warn, id::MANAGER, "httpd now runs mod_procd build {}, this manager build {}: loaders and request handling are the new build's; the manager itself is updated at the next full restart (apachectl restart)",
                    plan.build,
                    crate::config::plan::build_id());
        }
        if let Err(e) = prepare_runtime_dir(Path::new(&plan.runtime_dir), plan.socket_gid, &plan.loaders) {
            pd_log!(level: Level::Error, id::MANAGER, "cannot prepare the runtime dir {}: {e}; groups cannot start", plan.runtime_dir);
        }
        let old_dir = std::mem::replace(&mut self.plan, plan);
        if !old_dir.runtime_dir.is_empty() && self.plan.wake_parent {
            // Not this manager's first plan: httpd restarts gracefully.
            self.parent_wake = Some(parent_wake::ParentWake::new(Instant::now()));
        }
        if old_dir.runtime_dir != self.plan.runtime_dir {
            // A new manager (the old plan is empty), or a new runtime dir:
            // no port published there is this manager's, and the ports it
            // published in the old one are not read any more. Serving
            // generations publish theirs again at the next tick.
            runtime::remove_port_files(Path::new(&self.plan.runtime_dir));
            if !old_dir.runtime_dir.is_empty() {
                runtime::remove_port_files(Path::new(&old_dir.runtime_dir));
            }
            for g in self.groups.values_mut().flat_map(|g| g.generations.iter_mut()) {
                if std::mem::replace(&mut g.shown, Shown::Hidden) == Shown::Deaf && !old_dir.runtime_dir.is_empty() {
                    mark_up(Path::new(&old_dir.runtime_dir), &g.plan.name);
                }
            }
        }
        pd_log!(
            id::MANAGER,
            "new configuration: {} group(s), runtime dir {}",
            self.plan.groups.len(),
            self.plan.runtime_dir
        );
        let names: Vec<String> = self.plan.groups.iter().map(|g| g.name.clone()).collect();
        // Groups that are gone: drain everything they run.
        let removed: Vec<String> = self.groups.keys().filter(|n| !names.contains(n)).cloned().collect();
        for name in removed {
            let stable = Path::new(&old_dir.runtime_dir).join(format!("{name}.sock"));
            let _ = std::fs::remove_file(stable);
            unpublish_port(Path::new(&old_dir.runtime_dir), &name);
            if let Some(g) = self.groups.get_mut(&name) {
                g.plan = None;
            }
            mark_up(Path::new(&old_dir.runtime_dir), &name);
            self.drain_all(&name, "the group was removed from the configuration");
        }
        for gp in self.plan.groups.clone() {
            // Starting afresh: requests wait for it rather than fail.
            mark_up(Path::new(&self.plan.runtime_dir), &gp.name);
            let group = self.groups.entry(gp.name.clone()).or_default();
            let (key, why) = if group.generations.is_empty() && group.events.generations.is_empty() {
                ("start", "httpd started, or the group is new")
            } else {
                ("graceful-restart", "a new configuration from httpd (apachectl graceful)")
            };
            group.plan = Some(gp.clone());
            group.failures = 0;
            group.retry_at = None;
            group.restart_mtime = gp.restart_file.as_deref().and_then(restart_mtime);
            self.note(&gp.name, status::Kind::Generation, key, why);
            self.start_generation(&gp.name);
        }
    }

    /// Starts a new generation of `name` (replacing one still starting).
    fn start_generation(&mut self, name: &str) {
        let Some(plan) = self.groups.get(name).and_then(|g| g.plan.clone()) else {
            return;
        };
        if plan.argv.is_empty() {
            return; // nothing to run (an http group without command=: configtest says so)
        }
        if let Some(pos) = self.groups[name].generations.iter().position(|g| g.phase == Phase::Starting) {
            let gen_ = self.groups.get_mut(name).map(|g| g.generations.remove(pos));
            if let Some(gen_) = gen_ {
                self.discard(gen_);
            }
        }
        let gen_id = self.next_generation;
        self.next_generation += 1;
        let listener = match self.new_listener(&plan, gen_id) {
            Ok(l) => l,
            Err((what, e)) => {
                pd_log!(id::GENERATION_FAILED, group = %name, log = %plan.error_log, "cannot create {what}: {e}");
                self.schedule_retry(name, &format!("{what} could not be created"));
                return;
            }
        };
        let generation = Generation {
            id: gen_id,
            plan: plan.clone(),
            listener,
            shown: Shown::Hidden,
            publish_failed: false,
            phase: Phase::Starting,
            started: Instant::now(),
            workers: Vec::new(),
            cgroup: self.cgroups.create(name, gen_id),
            waiting_before: false,
            quiet_termed: false,
            spawned: 0,
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
        // processes=0-N: serving at once, with no worker until a request.
        self.maybe_promote(name);
    }

    /// A new generation's listener: a socket under `generations/`, or for
    /// `listen=tcp` a free loopback port. On failure, what could not be
    /// created, and why.
    fn new_listener(&mut self, plan: &GroupPlan, gen_id: u64) -> Result<Listener, (String, std::io::Error)> {
        if plan.listen == Listen::Tcp {
            let port = self.ports.pick().map_err(|e| ("a loopback port for it".to_string(), e))?;
            return Ok(Listener::Tcp { port });
        }
        let path = Path::new(&self.plan.runtime_dir).join(GENERATIONS).join(format!("{}.{gen_id}.sock", plan.name));
        let _ = std::fs::remove_file(&path);
        match bind_socket(&path, self.plan.socket_gid) {
            Ok(socket) => Ok(Listener::Unix { socket, path }),
            Err(e) => Err((format!("socket {}", path.display()), e)),
        }
    }

    fn spawn(&mut self, name: &str, gen_id: u64) -> bool {
        self.spawn_as(name, gen_id, Role::Serving).is_some()
    }

    fn spawn_as(&mut self, name: &str, gen_id: u64, role: Role) -> Option<Pid> {
        // A cgi group runs mod_procd's launcher, from a sealed memfd made
        // once (a failure is a failed start like any other, tried again).
        let gen_ = self.groups.get(name).and_then(|g| g.generations.iter().find(|x| x.id == gen_id))?;
        let cgi = gen_.plan.protocol == crate::config::languages::Protocol::Cgi;
        let launcher = match (cgi, &self.cgi_launcher) {
            (true, None) => runtime::cgi_launcher_memfd()
                .map(|fd| self.cgi_launcher = Some(fd))
                .map_err(|e| format!("cannot hold the CGI launcher in memory (a sealed memfd): {e}")),
            _ => Ok(()),
        };
        // Looked up again: making the memfd needed `self` mutably.
        let gen_ = self.groups.get(name).and_then(|g| g.generations.iter().find(|x| x.id == gen_id))?;
        let plan = &gen_.plan;
        // Each new worker takes the next slot: replacements keep the
        // generation's recycling counts staggered.
        let slot = gen_.spawned;
        let program = if cgi { self.cgi_launcher.as_ref().map(std::os::fd::AsFd::as_fd) } else { None };
        match launcher.and_then(|()| start_worker(plan, gen_id, slot, &gen_.listener, gen_.cgroup.as_deref(), program))
        {
            Ok((pid, status, output)) => {
                let port = gen_.listener.port().map(|p| format!(", PORT={p}")).unwrap_or_default();
                let text = format!(
                    "generation {gen_id}: started worker pid {pid} as user {} ({}{port})",
                    plan.user,
                    plan.argv.join(" ")
                );
                let log = plan.error_log.clone();
                pd_log!(id::WORKER_STARTED, group = %name, log = %log, generation = gen_id, pid = pid.as_raw(), "{text}");
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
                        role,
                        status_watch: true,
                        status_bytes: 0,
                        reported_recycle: None,
                        retire_reason: String::new(),
                        activity: None,
                        active_at: Instant::now(),
                        busy: None,
                    },
                );
                if let Some(g) =
                    self.groups.get_mut(name).and_then(|g| g.generations.iter_mut().find(|x| x.id == gen_id))
                {
                    g.workers.push(pid);
                    g.spawned = g.spawned.wrapping_add(1);
                }
                Some(pid)
            }
            Err(e) => {
                let log = plan.error_log.clone();
                pd_log!(id::SPAWN_FAILED, group = %name, log = %log, "cannot start a worker: {e}");
                None
            }
        }
    }

    /// Kills a generation that never served and removes its socket.
    fn discard(&mut self, gen_: Generation) {
        self.kill_orphans_of(&gen_.plan.name, gen_.id, &gen_.plan.error_log);
        if let Some(dir) = &gen_.cgroup {
            self.cgroups.end(dir);
        }
        for pid in &gen_.workers {
            signal_worker(*pid, Signal::SIGKILL);
            if let Some(w) = self.workers.get_mut(pid) {
                w.status = None;
            }
        }
        gen_.listener.remove_socket();
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
        pd_log!(id::GENERATION_FAILED, group = %name, log = %log, generation = gen_.id, reason = why, "generation {} failed to start: {why}; {consequence}", gen_.id);
        self.discard(gen_);
        self.schedule_retry(name, why);
    }

    /// Back-off before the next attempt: 0.5 s, 1 s, 2 s ... 60 s.
    fn schedule_retry(&mut self, name: &str, why: &str) {
        let Some(group) = self.groups.get_mut(name) else {
            return;
        };
        group.failures += 1;
        let delay = policy::backoff(group.failures);
        group.retry_at = Some(Instant::now() + delay);
        let (failures, log) = (group.failures, group.plan.as_ref().map(|p| p.error_log.clone()).unwrap_or_default());
        if group.generation(|p| p == Phase::Serving).is_none() {
            let text = format!(
                "its workers fail to start ({failures} time(s) in a row; last: {why}); next attempt in {} ms",
                delay.as_millis()
            );
            mark_down(Path::new(&self.plan.runtime_dir), name, &text);
        }
        self.note(
            name,
            status::Kind::Backoff,
            "",
            &format!("{failures} failure(s) in a row ({why}); next attempt in {} ms", delay.as_millis()),
        );
        pd_log!(id::BACKOFF, group = %name, log = %log, reason = why, "workers fail to start ({failures} time(s) in a row; last: {why}); next attempt in {} ms. Check the group's command and the lines above", delay.as_millis());
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
        let runtime_dir = Path::new(&self.plan.runtime_dir);
        let stable = runtime_dir.join(format!("{name}.sock"));
        let switched = match &mut gen_.listener {
            Listener::Unix { path, .. } => match std::fs::rename(&*path, &stable) {
                Ok(()) => {
                    *path = stable;
                    // A listen=tcp generation before this one: its port is
                    // not the group's any more.
                    unpublish_port(runtime_dir, name);
                    Ok(())
                }
                Err(e) => Err(format!("cannot rename {} over {}: {e}", path.display(), stable.display())),
            },
            Listener::Tcp { port } => {
                // Checked again at the switch (the program may have gone
                // since it was seen ready).
                match tcp::who_listens(*port, gen_.plan.uid) {
                    tcp::Owner::Group { .. } => publish_port(runtime_dir, name, *port)
                        .map(|()| {
                            gen_.shown = Shown::Published;
                            let _ = std::fs::remove_file(&stable);
                        })
                        .map_err(|e| format!("cannot publish port {port} in {}: {e}", runtime_dir.display())),
                    other => Err(format!("at the switch, 127.0.0.1:{port} is {}", describe_owner(other, &gen_.plan))),
                }
            }
        };
        if let Err(why) = switched {
            self.fail_starting(name, &why);
            return;
        }
        gen_.phase = Phase::Serving;
        mark_up(Path::new(&self.plan.runtime_dir), name);
        let (new_id, log, count) = (gen_.id, gen_.plan.error_log.clone(), gen_.workers.len());
        group.failures = 0;
        let old: Vec<u64> =
            group.generations.iter().filter(|g| g.phase == Phase::Serving && g.id != new_id).map(|g| g.id).collect();
        pd_log!(id::GENERATION_SERVING, group = %name, log = %log, generation = new_id, "generation {new_id} is serving with {count} worker(s)");
        for old_id in old {
            self.drain(name, old_id);
        }
    }

    fn drain(&mut self, name: &str, gen_id: u64) {
        // What the workers started since the last tick is theirs: a worker
        // that drains fast may be gone before the next one (the orphans it
        // leaves would then go to the serving generation of their user).
        self.note_lineage();
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
        }
        if !ready_message {
            self.terminate_quiet(name, gen_id);
        }
    }

    /// Workers that cannot read EOF on fd 4 (php-cgi) drain by SIGTERM:
    /// php-cgi finishes the request it holds, then exits instead of
    /// accepting another. Sent only once nothing waits in the generation's
    /// listen backlog (no new connection reaches it once the new socket is
    /// renamed over the group's path), so what was queued is served, not
    /// dropped. Checked again every tick until then.
    fn terminate_quiet(&mut self, name: &str, gen_id: u64) {
        let Some(gen_) = self.groups.get_mut(name).and_then(|g| g.generations.iter_mut().find(|x| x.id == gen_id))
        else {
            return;
        };
        // A connect that found the old socket just before the rename may
        // still be on its way into the backlog: give it QUIET_GRACE.
        let settled = matches!(gen_.phase, Phase::Draining { since, .. } if since.elapsed() >= QUIET_GRACE);
        if gen_.quiet_termed || gen_.plan.ready_message || !settled || gen_.listener.has_pending(gen_.plan.uid) {
            return;
        }
        gen_.quiet_termed = true;
        for pid in gen_.workers.clone() {
            signal_worker(pid, Signal::SIGTERM);
        }
    }

    /// request-timeout for FastCGI workers, which cannot enforce it
    /// themselves: a worker that holds one connection of its group's
    /// socket for longer than request-timeout plus a second (time blocked
    /// reading from or writing to Apache not counted: a slow client never
    /// costs a worker its life) is killed and replaced. Apache has answered
    /// 504 by then.
    fn watch_requests(&mut self) {
        let mut ours: Option<std::collections::HashSet<u64>> = None;
        let runtime_dir = self.plan.runtime_dir.clone();
        let mut kills = Vec::new();
        for g in self.groups.values() {
            for gen_ in &g.generations {
                if gen_.plan.protocol != crate::config::languages::Protocol::Fastcgi {
                    continue;
                }
                let limit = Duration::from_millis(gen_.plan.request_timeout_ms) + Duration::from_secs(1);
                for pid in &gen_.workers {
                    let Some(w) = self.workers.get_mut(pid) else { continue };
                    let held = procs::held_sockets(*pid);
                    let conn = if held.is_empty() {
                        None
                    } else {
                        let known = ours.get_or_insert_with(|| procs::sockets_under(&runtime_dir));
                        held.into_iter().find(|(_, inode)| known.contains(inode))
                    };
                    let Some((fd, inode)) = conn else {
                        w.busy = None;
                        continue;
                    };
                    let now = Instant::now();
                    match &mut w.busy {
                        Some(b) if b.inode == inode => {
                            if !procs::blocked_on(*pid, fd) {
                                b.counted += now - b.last;
                            }
                            b.last = now;
                            if b.counted > limit {
                                kills.push((*pid, gen_.plan.name.clone(), gen_.plan.error_log.clone(), limit));
                                w.busy = None;
                            }
                        }
                        _ => w.busy = Some(Busy { inode, counted: Duration::ZERO, last: now }),
                    }
                }
            }
        }
        for (pid, name, log, limit) in kills {
            pd_log!(id::REQUEST_KILLED, group = %name, log = %log, "worker pid {pid} has been running one request for over {} s (request-timeout plus 1 s, time blocked on Apache not counted): killing it; a new worker replaces it",
                    limit.as_secs_f32());
            signal_worker(pid, Signal::SIGKILL);
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
        pd_log!(id::DRAINED, group = %name, log = %gen_.plan.error_log, generation = gen_id, reason = why, "generation {gen_id} has drained and stopped ({why})");
        self.kill_orphans_of(name, gen_id, &gen_.plan.error_log);
        if let Some(dir) = &gen_.cgroup {
            self.cgroups.end(dir);
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
        pd_log!(id::DRAINED, group = %name, reason = why, "stopping");
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
        if let (Listener::Tcp { .. }, Phase::Serving) = (&gen_.listener, gen_.phase) {
            // Its port is free now, and anyone may bind it: no request goes
            // there until a replacement listens on it as the group's user.
            unpublish_port(Path::new(&self.plan.runtime_dir), &name);
            if std::mem::replace(&mut gen_.shown, Shown::Hidden) == Shown::Deaf {
                // Requests wait for the replacement now, as at any crash.
                mark_up(Path::new(&self.plan.runtime_dir), &name);
            }
        }
        let (gen_id, left) = (gen_.id, gen_.workers.len());
        let stage = match gen_.phase {
            Phase::Starting => policy::Stage::Starting,
            Phase::Serving => policy::Stage::Serving,
            Phase::Draining { .. } => policy::Stage::Draining,
        };
        let how = describe(status);
        let uptime = w.started.elapsed();
        // Exit status 0 while serving: a worker recycled itself (php-cgi
        // after PHP_FCGI_MAX_REQUESTS, a loader after PROCD_MAX_REQUESTS).
        // A worker that can say READY and had not is not recycling: it
        // failed to start (a quiet php-cgi may serve its N requests within
        // its first second, before it counts as ready).
        let clean = matches!(status, WaitStatus::Exited(_, 0)) && (w.ready || !gen_.plan.ready_message) && {
            let now = Instant::now();
            let (since, count) = &mut group.clean_exits;
            if since.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                *since = Some(now);
                *count = 0;
            }
            *count += 1;
            *count <= policy::clean_exits_per_second(gen_.plan.processes)
        };
        // A replacement already on its way for this worker serves in its
        // place now: its exit was expected.
        let replacement = self.workers.iter_mut().find(|(_, x)| x.role == Role::Replacing(pid));
        let replaced = replacement.map(|(_, x)| x.role = Role::Serving).is_some();
        let Some(group) = self.groups.get_mut(&name) else {
            return;
        };
        let decision = policy::after_exit(policy::Exit {
            stage,
            stopping: self.stopping,
            was_ready: w.ready,
            uptime,
            left,
            failures: group.failures,
            retired: w.role == Role::Retiring || replaced,
            clean,
        });
        let log = w.error_log.clone();
        let (level, text) = match (&decision, stage) {
            (policy::AfterExit::Nothing, _) => (Level::Info, format!("worker pid {pid} {how} (stopping)")),
            (policy::AfterExit::Retired, _) => {
                (Level::Info, format!("generation {gen_id}: retired worker pid {pid} {how}"))
            }
            (_, policy::Stage::Draining) => {
                (Level::Info, format!("generation {gen_id}: old worker pid {pid} {how} (draining, {left} left)"))
            }
            (_, policy::Stage::Starting) => {
                (Level::Error, format!("generation {gen_id}: worker pid {pid} {how} before it was ready"))
            }
            (_, policy::Stage::Serving) => (
                Level::Error,
                format!("generation {gen_id}: worker pid {pid} {how} after {} ms; replacing it", uptime.as_millis()),
            ),
        };
        pd_log!(level: level, id::WORKER_EXITED, group = %name, log = %log, generation = gen_id, pid = pid.as_raw(), reason = %how, "{text}");
        let key = match decision {
            policy::AfterExit::Replace { .. } | policy::AfterExit::BackOff => "crash",
            policy::AfterExit::FailGeneration => "failed-start",
            _ => "expected",
        };
        self.note(&name, status::Kind::Exit, key, &format!("worker pid {pid} {how}"));
        match decision {
            policy::AfterExit::Nothing
            | policy::AfterExit::Retired
            | policy::AfterExit::DrainProgress { drained: false } => {}
            policy::AfterExit::DrainProgress { drained: true } => {
                self.forget_generation(&name, gen_id, "its last worker exited");
            }
            policy::AfterExit::FailGeneration => {
                self.fail_starting(&name, &format!("worker pid {pid} {how} before it was ready"));
            }
            policy::AfterExit::Replace { failures } => {
                if let Some(g) = self.groups.get_mut(&name) {
                    g.failures = failures;
                }
                self.spawn(&name, gen_id);
            }
            policy::AfterExit::BackOff => {
                let why = if w.ready {
                    format!("worker pid {pid} {how} {} ms after starting", uptime.as_millis())
                } else {
                    format!("worker pid {pid} {how} before it was ready")
                };
                self.schedule_retry(&name, &why);
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
        let mut logs = self.logs.lock();
        for nl in memchr::memchr_iter(b'\n', buf) {
            emit(&mut logs, &buf[start..nl]);
            start = nl + 1;
        }
        while buf.len() - start > MAX_LINE {
            emit(&mut logs, &buf[start..start + MAX_LINE]);
            start += MAX_LINE;
        }
        if all && start < buf.len() {
            emit(&mut logs, &buf[start..]);
            start = buf.len();
        }
        buf.drain(..start);
        if let (Some(g), Some(b)) = (self.groups.get_mut(group), budget) {
            g.output = b;
        }
    }

    /// While a graceful restart's watch runs (the event loop then wakes
    /// every `parent_wake::LOOK_EVERY`): looks at the httpd parent.
    fn look_at_parent(&mut self, now: Instant) {
        if let Some(watch) = self.parent_wake.as_mut() {
            // httpd is our parent: while getppid() says so, it has not been
            // reaped and its pid names no other process.
            let alive = nix::unistd::getppid() == self.httpd;
            if self.stopping || !alive || watch.look(self.httpd, now) {
                self.parent_wake = None;
            }
        }
    }

    /// Whether the httpd parent that forked this manager still runs.
    fn httpd_alive(&self) -> bool {
        nix::unistd::getppid() == self.httpd
    }

    /// Timers: start-up timeouts, retries, drain deadlines, restart files.
    fn tick(&mut self) {
        if !self.httpd_alive() {
            self.shutdown("httpd has exited");
        }
        let now = Instant::now();
        let names: Vec<String> = self.groups.keys().cloned().collect();
        // The kernel's socket tables, read at most once per tick.
        let mut tables = None;
        for name in names {
            // Programs on a port: ready once the group's user listens
            // there; serving ones still listening there, and nobody else.
            self.look_at_ports(&name, &mut tables);
            // Settled workers that cannot say READY (on a Unix socket).
            let settle = Duration::from_millis(SETTLE_MS);
            let pids: Vec<Pid> = self.groups[&name]
                .generations
                .iter()
                .filter(|g| matches!(g.listener, Listener::Unix { .. }))
                .flat_map(|g| g.workers.clone())
                .collect();
            for pid in pids {
                let quiet = self.groups[&name]
                    .generations
                    .iter()
                    .find(|g| g.workers.contains(&pid))
                    .is_some_and(|g| !g.plan.ready_message);
                if self.workers.get(&pid).is_some_and(|w| policy::settled(!quiet, w.ready, w.started.elapsed(), settle))
                {
                    self.worker_ready(pid);
                }
            }
            // Scaling, recycling, retiring.
            self.look_at_pool(&name, now);
            let group = &self.groups[&name];
            // Start-up timeout of a starting generation.
            if let Some(g) = group.generation(|p| p == Phase::Starting) {
                let limit = Duration::from_millis(g.plan.startup_timeout_ms);
                if g.started.elapsed() > limit {
                    let mut why =
                        format!("not every worker became ready within startup-timeout ({} s)", limit.as_secs());
                    if let Some(port) = g.listener.port() {
                        why.push_str(&format!(
                            ": nothing accepted connections on 127.0.0.1:{port}, the port in its PORT (the program must listen on 127.0.0.1 at $PORT; a slow starter needs a longer startup-timeout)"
                        ));
                    }
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
                        let signal = match policy::drain_step(since.elapsed(), timeout, terminated) {
                            Some(policy::DrainStep::Terminate) => Signal::SIGTERM,
                            Some(policy::DrainStep::Kill) => Signal::SIGKILL,
                            None => continue,
                        };
                        g.phase = Phase::Draining { since, terminated: true };
                        stragglers.push((g.id, g.workers.clone(), signal, g.plan.error_log.clone()));
                    }
                }
            }
            for (gid, pids, sig, log) in stragglers {
                if !pids.is_empty() {
                    pd_log!(id::STRAGGLER, group = %name, log = %log, generation = gid, "generation {gid}: {} worker(s) still running after graceful-timeout; sending {}",
                            pids.len(),
                            sig.as_str());
                }
                for pid in pids {
                    signal_worker(pid, sig);
                }
            }
            // Quiet workers of draining generations, once their backlog is empty.
            let quiet: Vec<u64> = self.groups[&name]
                .generations
                .iter()
                .filter(|g| matches!(g.phase, Phase::Draining { .. }) && !g.plan.ready_message && !g.quiet_termed)
                .map(|g| g.id)
                .collect();
            for gid in quiet {
                self.terminate_quiet(&name, gid);
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
                pd_log!(id::OUTPUT_DROPPED, group = %name, log = %plan.error_log, "{text}");
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
                            self.note(&name, status::Kind::Generation, "retry", "retry after back-off");
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
                    pd_log!(id::RESTART_FILE, group = %name, log = %log, "{file} changed: starting a new generation");
                    self.note(&name, status::Kind::Generation, "restart-file", "the restart file was touched");
                    self.start_generation(&name);
                }
            }
        }
        self.watch_requests();
        // Groups that were removed and have fully drained.
        self.groups.retain(|_, g| g.plan.is_some() || !g.generations.is_empty());
        self.note_lineage();
        self.adopt_orphans();
        self.cgroups.sweep();
        self.write_status(now);
    }

    /// `listen=tcp`, at every tick (`tables`: the kernel's socket tables,
    /// read on first use in this tick). A program that is not ready yet (of
    /// a starting generation, or the replacement of one that died in a
    /// serving one) is ready once a connection to its port is accepted and
    /// the listener there is the group user's; then a serving generation's
    /// port is published (again). A serving generation's port is looked at
    /// every tick as long as it serves:
    /// - nobody listens there (the program closed its listener but runs:
    ///   a supervisor shell, a stopped connector): unpublished at once,
    ///   with `GROUP.down` saying why (Apache answers 503 at once), and
    ///   published again when the group's user listens there again;
    /// - the group's user listens there and it is not published (writing
    ///   the file failed, or after the above): published;
    /// - another user listens where 127.0.0.1's connections go (a
    ///   squatter, or the program handing it to another user): `PD0218`,
    ///   unpublished; a starting generation fails (back-off, then a new
    ///   port); a serving one drains and a new generation starts on a new
    ///   port.
    ///
    /// A draining generation's port is never published (a new one's
    /// replaced it, or it was refused), so it is not looked at.
    fn look_at_ports(&mut self, name: &str, tables: &mut Option<tcp::Tables>) {
        let Some(group) = self.groups.get(name) else {
            return;
        };
        let mut looks = Vec::new();
        for g in &group.generations {
            let (Some(port), Phase::Starting | Phase::Serving) = (g.listener.port(), g.phase) else {
                continue;
            };
            looks.extend(g.workers.iter().map(|pid| (g.id, port, *pid, g.plan.clone())));
        }
        if looks.is_empty() {
            return;
        }
        let tables = tables.get_or_insert_with(tcp::Tables::read);
        let dir = PathBuf::from(&self.plan.runtime_dir);
        for (gen_id, port, pid, plan) in looks {
            // As things are now: an earlier look may have promoted a
            // generation (and begun draining the one before).
            let Some(phase) = self.generation_mut(name, gen_id).map(|g| g.phase) else {
                continue;
            };
            let Some(ready) = self.workers.get(&pid).filter(|w| w.role != Role::Retiring).map(|w| w.ready) else {
                continue;
            };
            if !matches!(phase, Phase::Starting | Phase::Serving) {
                continue;
            }
            match tables.owner(port, plan.uid) {
                tcp::Owner::Nobody if ready && phase == Phase::Serving => {
                    let Some(gen_) = self.generation_mut(name, gen_id) else {
                        continue;
                    };
                    if gen_.shown == Shown::Deaf {
                        continue;
                    }
                    gen_.shown = Shown::Deaf;
                    unpublish_port(&dir, name);
                    let why = format!(
                        "its program (worker pid {pid}) runs but nothing listens on 127.0.0.1:{port}, the port in its PORT, any more; no request is sent there until the program listens there again as the group's user {} (or exits and is replaced)",
                        plan.user
                    );
                    mark_down(&dir, name, &why);
                    pd_log!(id::PORT_DEAF, group = %name, log = %plan.error_log, generation = gen_id, pid = pid.as_raw(), reason = %why, "generation {gen_id}: {why}");
                }
                tcp::Owner::Nobody => {}
                tcp::Owner::Group { .. } => {
                    if !ready {
                        if !tcp::answers(port) {
                            continue;
                        }
                        self.worker_ready(pid);
                    }
                    if phase == Phase::Serving {
                        self.show_port(name, gen_id);
                    }
                }
                other => {
                    let why = format!(
                        "127.0.0.1:{port} (PORT of worker pid {pid}) is {}; no request is sent there",
                        describe_owner(other, &plan)
                    );
                    let refused = || {
                        pd_log!(id::PORT_REFUSED, group = %name, log = %plan.error_log, generation = gen_id, pid = pid.as_raw(), reason = %why, "generation {gen_id}: {why}");
                    };
                    if phase == Phase::Starting {
                        refused();
                        self.fail_starting(name, &why);
                    } else {
                        // The files first, then the line: whoever reads the
                        // line finds requests already waiting for the new
                        // generation, not the 503 of the deaf one.
                        unpublish_port(&dir, name);
                        if self.generation_mut(name, gen_id).map(|g| std::mem::replace(&mut g.shown, Shown::Hidden))
                            == Some(Shown::Deaf)
                        {
                            // Requests wait for the new generation.
                            mark_up(&dir, name);
                        }
                        refused();
                        self.note(name, status::Kind::Generation, "port-refused", &why);
                        self.drain(name, gen_id);
                        self.start_generation(name);
                    }
                    return;
                }
            }
        }
    }

    fn generation_mut(&mut self, name: &str, gen_id: u64) -> Option<&mut Generation> {
        self.groups.get_mut(name)?.generations.iter_mut().find(|g| g.id == gen_id)
    }

    /// Publishes the port of `name`'s serving generation `gen_id`, where
    /// its program listens as the group's user, unless it is already.
    /// A failure is logged once and tried again at the next tick.
    fn show_port(&mut self, name: &str, gen_id: u64) {
        let dir = PathBuf::from(&self.plan.runtime_dir);
        let Some(gen_) = self.generation_mut(name, gen_id) else {
            return;
        };
        let Some(port) = gen_.listener.port() else {
            return;
        };
        if gen_.shown == Shown::Published || gen_.phase != Phase::Serving {
            return;
        }
        let log = gen_.plan.error_log.clone();
        match publish_port(&dir, name, port) {
            Ok(()) => {
                gen_.publish_failed = false;
                if std::mem::replace(&mut gen_.shown, Shown::Published) == Shown::Deaf {
                    mark_up(&dir, name);
                    pd_log!(level: Level::Notice, id::PORT_DEAF, group = %name, log = %log, generation = gen_id, "generation {gen_id}: its program listens on 127.0.0.1:{port} again as the group's user: the port is published again");
                }
            }
            Err(e) if !gen_.publish_failed => {
                gen_.publish_failed = true;
                pd_log!(id::GENERATION_FAILED, group = %name, log = %log, generation = gen_id, "cannot publish port {port} in {}: {e}; requests wait for it, and it is tried again at every tick", dir.display());
            }
            Err(_) => {}
        }
    }

    /// Everything stops: `apachectl stop` or `graceful-stop`, or httpd is
    /// gone. Workers first get EOF on their status channel (finish what you
    /// hold, then exit); whoever is left after a second gets SIGTERM, and
    /// SIGKILL after `STOP_GRACE`. Bounded: about 3 s in all.
    fn shutdown(&mut self, why: &str) -> ! {
        self.stopping = true;
        pd_log!(id::MANAGER, "stopping all groups ({why})");
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
        while !self.workers.is_empty() {
            match policy::stop_step(start.elapsed(), termed) {
                policy::StopStep::Kill => break,
                policy::StopStep::Terminate => {
                    termed = true;
                    for pid in self.workers.keys() {
                        signal_worker(*pid, Signal::SIGTERM);
                    }
                }
                policy::StopStep::Wait => {}
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
        self.cgroups.end_all();
        while !self.workers.is_empty() && start.elapsed() < policy::STOP_KILL_AFTER + policy::KILL_GRACE {
            self.reap();
            std::thread::sleep(Duration::from_millis(10));
        }
        // What the workers left running becomes the manager's (a subreaper)
        // as each parent dies, also after the look above: killed until no
        // child is left, so nothing outlives the manager (without cgroups,
        // the only way to reach descendants in sessions of their own).
        let deadline = Instant::now() + policy::KILL_GRACE;
        loop {
            let left = own_children();
            if left.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in left {
                let _ = kill(pid, Signal::SIGKILL);
            }
            self.reap();
            std::thread::sleep(Duration::from_millis(10));
        }
        for (name, g) in &self.groups {
            for gen_ in &g.generations {
                gen_.listener.remove_socket();
            }
            unpublish_port(Path::new(&self.plan.runtime_dir), name);
        }
        crate::os::exit_now(0);
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
}
