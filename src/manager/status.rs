//! The manager's state for procd-status: counters of what it did to each
//! group (by reason), and `RUNTIME/status.json`, a snapshot written (to a
//! temporary name, then renamed) at most once a second when something
//! changed and at least every `REWRITE` otherwise. Mode 0640, root:Apache's
//! group, like the sockets: Apache's children read it, nobody else. No
//! environment value, command line or path is written: only names, numbers
//! and the reasons the manager logs.

use super::procs::resident_bytes;
use super::{Manager, Phase, Role};
use crate::status::{
    Event, GenerationState, GroupState, Limits, ManagerState, RECENT, SCHEMA_VERSION, STATE_FILE, WorkerState,
};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// The snapshot is looked at this often ...
const LOOK: Duration = Duration::from_secs(1);
/// ... and rewritten at least this often, changed or not (its time tells
/// readers the manager is alive).
const REWRITE: Duration = Duration::from_secs(3);
/// A worker that made system calls this recently counts as busy.
const ACTIVE: Duration = Duration::from_millis(1500);

/// What kind of thing happened to a group, for its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A new generation starts: key start, graceful-restart, restart-file, retry.
    Generation,
    /// A worker is recycled: key from the reason (maximum-requests ...).
    Recycle,
    /// Scaling: key up or down.
    Scale,
    /// A worker exited: key crash, expected, failed-start.
    Exit,
    /// A back-off period begins.
    Backoff,
}

/// When the snapshot was last written, and what it said (without its time).
#[derive(Default)]
pub(super) struct Written {
    at: Option<Instant>,
    looked: Option<Instant>,
    body: String,
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Manager {
    /// Counts one event of `group` and keeps it among the recent ones.
    pub(super) fn note(&mut self, group: &str, kind: Kind, key: &str, reason: &str) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        let e = &mut g.events;
        let (map, name) = match kind {
            Kind::Generation => (Some(&mut e.generations), "new generation"),
            Kind::Recycle => (Some(&mut e.recycles), "recycle"),
            Kind::Scale => (Some(&mut e.scale), "scale"),
            Kind::Exit => (Some(&mut e.exits), "worker exit"),
            Kind::Backoff => {
                e.backoffs += 1;
                (None, "back-off")
            }
        };
        if let Some(map) = map {
            *map.entry(key.to_string()).or_default() += 1;
        }
        if kind == Kind::Exit && key == "expected" {
            return; // counted, but not news
        }
        let mut text: String = reason.chars().take(300).collect();
        if text.is_empty() {
            text = key.to_string();
        }
        g.recent.push(Event { at_ms: epoch_ms(SystemTime::now()), kind: name.to_string(), reason: text });
        if g.recent.len() > RECENT {
            let over = g.recent.len() - RECENT;
            g.recent.drain(..over);
        }
    }

    /// The manager's state now.
    pub(super) fn snapshot(&self) -> ManagerState {
        let mut groups = Vec::new();
        for (name, g) in &self.groups {
            let plan = g.plan.as_ref().or_else(|| g.generations.last().map(|x| &x.plan));
            let Some(plan) = plan else { continue };
            let limits = Limits {
                processes_min: plan.processes,
                processes_max: plan.max_processes.max(plan.processes),
                threads: plan.threads,
                maximum_requests: plan.maximum_requests,
                memory_limit_bytes: plan.memory_limit,
                lifetime_ms: plan.lifetime_ms,
                request_timeout_ms: plan.request_timeout_ms,
                startup_timeout_ms: plan.startup_timeout_ms,
                graceful_timeout_ms: plan.graceful_timeout_ms,
                inactivity_timeout_ms: plan.inactivity_timeout_ms,
            };
            let mut generations = Vec::new();
            let mut workers = Vec::new();
            for gen_ in &g.generations {
                let phase = match gen_.phase {
                    Phase::Starting => "starting",
                    Phase::Serving => "serving",
                    Phase::Draining { .. } => "draining",
                };
                generations.push(GenerationState {
                    id: gen_.id,
                    phase: phase.into(),
                    age_ms: gen_.started.elapsed().as_millis() as u64,
                    port: match gen_.listener {
                        super::Listener::Tcp { port } => Some(port),
                        super::Listener::Unix { .. } => None,
                    },
                });
                for pid in &gen_.workers {
                    let Some(w) = self.workers.get(pid) else { continue };
                    let state = if matches!(gen_.phase, Phase::Draining { .. }) {
                        "draining"
                    } else if w.role == Role::Retiring {
                        "retiring"
                    } else if !w.ready {
                        "starting"
                    } else {
                        "ready"
                    };
                    workers.push(WorkerState {
                        pid: pid.as_raw() as u32,
                        generation: gen_.id,
                        state: state.into(),
                        age_ms: w.started.elapsed().as_millis() as u64,
                        resident_bytes: resident_bytes(*pid),
                        active: w.activity.is_some() && w.active_at.elapsed() < ACTIVE,
                    });
                }
            }
            groups.push(GroupState {
                name: name.clone(),
                language: plan.language.clone(),
                protocol: plan.protocol.name().into(),
                user: plan.user.clone(),
                removed: g.plan.is_none(),
                limits,
                generations,
                workers,
                failures: g.failures,
                retry_in_ms: g.retry_at.map(|t| t.saturating_duration_since(Instant::now()).as_millis() as u64),
                events: g.events.clone(),
                recent: g.recent.clone(),
            });
        }
        ManagerState {
            schema: SCHEMA_VERSION,
            written_at_ms: 0,
            pid: std::process::id(),
            started_at_ms: epoch_ms(self.started_wall),
            version: env!("CARGO_PKG_VERSION").to_string(),
            build: crate::config::plan::build_id(),
            groups,
        }
    }

    /// Writes `status.json` when it is due (see the module's comment).
    pub(super) fn write_status(&mut self, now: Instant) {
        if self.plan.runtime_dir.is_empty() || self.written.looked.is_some_and(|t| now - t < LOOK) {
            return;
        }
        self.written.looked = Some(now);
        let mut state = self.snapshot();
        // Ages and memory change all the time: compare what counts.
        let mut key = state.clone();
        for g in &mut key.groups {
            g.generations.iter_mut().for_each(|x| x.age_ms = 0);
            g.workers.iter_mut().for_each(|w| {
                w.age_ms = 0;
                w.resident_bytes = w.resident_bytes.map(|b| b >> 20);
            });
            g.retry_in_ms = g.retry_in_ms.map(|_| 0);
        }
        let body = serde_json::to_string(&key).unwrap_or_default();
        if body == self.written.body && self.written.at.is_some_and(|t| now - t < REWRITE) {
            return;
        }
        state.written_at_ms = epoch_ms(SystemTime::now());
        let Ok(text) = serde_json::to_vec(&state) else { return };
        let dir = Path::new(&self.plan.runtime_dir);
        if write_file(dir, &text, self.plan.socket_gid).is_ok() {
            self.written = Written { at: Some(now), looked: Some(now), body };
        }
    }
}

/// `DIR/status.json`, whole or not at all (a temporary name, then rename).
fn write_file(dir: &Path, text: &[u8], gid: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(text)?;
    nix::unistd::fchown(std::os::fd::AsRawFd::as_raw_fd(&f), None, Some(nix::unistd::Gid::from_raw(gid)))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o640))?;
    drop(f);
    std::fs::rename(&tmp, dir.join(STATE_FILE))
}
