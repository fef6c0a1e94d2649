//! A serving generation's pool of workers: scaling between MIN and MAX,
//! recycling (maximum-requests, memory-limit, lifetime) with the
//! replacement ready before the old worker stops, and retiring idle
//! workers above MIN. The rules are `policy`'s; this applies them.

use super::procs::{io_calls, resident_bytes, signal_worker};
use super::status::Kind;
use super::{Manager, Phase, Role, id, policy};
use crate::config::plan::DEFAULT_INACTIVITY_MS;
use crate::logid::pd_log;
use crate::status::reason_key;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// How often activity, memory and age are looked at.
const POOL_CHECK: Duration = Duration::from_secs(1);
/// A status channel that carried more than this is no longer read: a
/// loader sends READY and at most one RECYCLE.
const STATUS_BUDGET: usize = 4096;

impl Manager {
    /// A worker's message on fd 4 (`bytes`; `open`: the channel is still
    /// open).
    pub(super) fn status_message(&mut self, pid: Pid, bytes: &[u8], open: bool) {
        // A program on a port is ready only once the port checks say so
        // (`look_at_ports`): its READY would skip them.
        let on_port = self.workers.get(&pid).is_some_and(|w| {
            self.groups
                .get(&w.group)
                .and_then(|g| g.generations.iter().find(|x| x.id == w.generation))
                .is_some_and(|g| g.listener.port().is_some())
        });
        let Some(w) = self.workers.get_mut(&pid) else {
            return;
        };
        w.status_bytes += bytes.len();
        let recycle = crate::protocol::launch::recycle_reason(bytes);
        let ready = !on_port && !w.ready && crate::protocol::launch::says_ready(bytes);
        if let Some(why) = &recycle {
            w.reported_recycle = Some(why.clone());
        }
        if !open || w.status_bytes > STATUS_BUDGET {
            w.status_watch = false;
            if !w.ready && !ready {
                // Closed without READY: its exit (or the start-up timeout) decides.
                w.status = None;
            }
        }
        if ready {
            self.worker_ready(pid);
        }
        if let Some(why) = recycle {
            self.recycle_now(pid, &policy::Recycle::Reported(why).to_string());
        }
    }

    /// Starts recycling `pid` of a serving generation at once. With other
    /// ready workers enough to stay at MIN, it retires now (and a worker is
    /// started if the pool falls below MIN); otherwise its replacement
    /// starts first and it serves until that is ready. One recycling at a
    /// time per generation: others wait for the next look.
    fn recycle_now(&mut self, pid: Pid, reason: &str) {
        let Some(w) = self.workers.get_mut(&pid) else {
            return;
        };
        if w.role != Role::Serving || !w.ready {
            return;
        }
        w.retire_reason = reason.to_string();
        let (name, gen_id) = (w.group.clone(), w.generation);
        let Some(gen_) = self
            .groups
            .get(&name)
            .and_then(|g| g.generations.iter().find(|x| x.id == gen_id && x.phase == Phase::Serving))
        else {
            return;
        };
        let (min, log) = (gen_.plan.processes, gen_.plan.error_log.clone());
        if gen_.listener.port().is_some() {
            // One program on one port: its replacement cannot bind that
            // port beside it, so it comes as a new generation on a new port
            // (the old one drains once the new one serves), as at a graceful
            // restart.
            if self.groups.get(&name).is_some_and(|g| g.generation(|p| p == Phase::Starting).is_some()) {
                return;
            }
            pd_log!(id::RECYCLE, group = %name, log = %log, generation = gen_id, pid = pid.as_raw(), reason = reason, "recycling worker pid {pid} ({reason}): a new generation starts on a new port; pid {pid} serves until it is ready");
            self.note(&name, Kind::Recycle, &reason_key(reason), &format!("worker pid {pid}: {reason}"));
            self.note(&name, Kind::Generation, "recycle", reason);
            self.start_generation(&name);
            return;
        }
        let others: Vec<&super::Worker> =
            gen_.workers.iter().filter(|p| **p != pid).filter_map(|p| self.workers.get(p)).collect();
        if others.iter().any(|o| matches!(o.role, Role::Replacing(_))) {
            return;
        }
        let ready_others = others.iter().filter(|o| o.role == Role::Serving && o.ready).count() as u32;
        let live_others = others.iter().filter(|o| o.role != Role::Retiring).count() as u32;
        if ready_others >= min.max(1) {
            pd_log!(id::RECYCLE, group = %name, log = %log, generation = gen_id, pid = pid.as_raw(), reason = reason, "recycling worker pid {pid} ({reason}): {ready_others} other worker(s) serve meanwhile");
            self.note(&name, Kind::Recycle, &reason_key(reason), &format!("worker pid {pid}: {reason}"));
            self.retire(pid, reason);
            if live_others < min {
                self.spawn_as(&name, gen_id, Role::Serving);
            }
        } else if let Some(new) = self.spawn_as(&name, gen_id, Role::Replacing(pid)) {
            pd_log!(id::RECYCLE, group = %name, log = %log, generation = gen_id, pid = pid.as_raw(), reason = reason, "recycling worker pid {pid} ({reason}): replacement pid {new} is starting; pid {pid} serves until it is ready");
            self.note(&name, Kind::Recycle, &reason_key(reason), &format!("worker pid {pid}: {reason}"));
        }
    }

    /// A worker became ready: a replacement takes over from the worker it
    /// replaces, which drains; a starting generation may be complete.
    pub(super) fn worker_ready(&mut self, pid: Pid) {
        let Some(w) = self.workers.get_mut(&pid) else {
            return;
        };
        w.ready = true;
        let (name, role) = (w.group.clone(), w.role);
        if let Role::Replacing(old) = role {
            w.role = Role::Serving;
            let why = self.workers.get(&old).map(|o| o.retire_reason.clone()).unwrap_or_default();
            self.retire(old, &format!("replaced by pid {pid}, which is ready ({why})"));
        }
        self.maybe_promote(&name);
    }

    /// Tells a worker to finish what it holds and exit; its exit is not
    /// replaced.
    pub(super) fn retire(&mut self, pid: Pid, why: &str) {
        let Some(w) = self.workers.get_mut(&pid) else {
            return;
        };
        if w.role == Role::Retiring {
            return;
        }
        w.role = Role::Retiring;
        w.status = None; // EOF on fd 4: finish and exit
        let (name, log, gen_id) = (w.group.clone(), w.error_log.clone(), w.generation);
        let says_ready = self.groups.get(&name).and_then(|g| g.plan.as_ref()).is_none_or(|p| p.ready_message);
        if !says_ready {
            signal_worker(pid, Signal::SIGTERM);
        }
        pd_log!(id::RECYCLE, group = %name, log = %log, generation = gen_id, pid = pid.as_raw(), reason = why, "worker pid {pid} retires: {why}");
    }

    /// Listeners of groups that run no worker (processes=0-N, idle): a
    /// connection on one starts a worker at once. Duplicates, so that the
    /// manager may change while they are polled.
    pub(super) fn cold_listeners(&self) -> Vec<(String, std::os::fd::OwnedFd)> {
        let mut out = Vec::new();
        for (name, group) in &self.groups {
            if group.retry_at.is_some() || group.plan.is_none() {
                continue;
            }
            let Some(gen_) = group.generations.iter().find(|g| g.phase == Phase::Serving) else {
                continue;
            };
            let idle = gen_.workers.iter().all(|p| self.workers.get(p).is_none_or(|w| w.role == Role::Retiring));
            if let (true, super::Listener::Unix { socket, .. }) = (idle, &gen_.listener) {
                if let Ok(fd) = std::os::fd::AsFd::as_fd(socket).try_clone_to_owned() {
                    out.push((name.clone(), fd));
                }
            }
        }
        out
    }

    /// The pool of `name`'s serving generation: one more worker when
    /// requests wait (or none runs and one is asked for), and every
    /// `POOL_CHECK` recycling and retiring.
    pub(super) fn look_at_pool(&mut self, name: &str, now: Instant) {
        let Some(group) = self.groups.get_mut(name) else {
            return;
        };
        if group.retry_at.is_some() || group.plan.is_none() {
            return; // in back-off: the retry refills
        }
        let Some(gen_) = group.generations.iter_mut().find(|g| g.phase == Phase::Serving) else {
            return;
        };
        let (gen_id, min, max) = (gen_.id, gen_.plan.processes, gen_.plan.max_processes);
        let live: Vec<Pid> = gen_
            .workers
            .iter()
            .copied()
            .filter(|p| self.workers.get(p).is_some_and(|w| w.role != Role::Retiring))
            .collect();
        let starting = live.iter().filter(|p| self.workers.get(p).is_some_and(|w| !w.ready)).count() as u32;
        let waiting_now = (live.len() as u32) < max && gen_.listener.has_pending(gen_.plan.uid);
        let pool = policy::Pool {
            min,
            max,
            live: live.len() as u32,
            starting,
            waiting_now,
            waiting_before: gen_.waiting_before,
        };
        gen_.waiting_before = waiting_now;
        let log = gen_.plan.error_log.clone();
        if policy::scale_up(pool) {
            let why = if pool.live == 0 && min == 0 {
                "cold start: a request waits and no worker runs".to_string()
            } else if pool.live < min {
                format!("below processes MIN ({min})")
            } else {
                format!("requests wait while all {} worker(s) are busy", pool.live)
            };
            if let Some(pid) = self.spawn_as(name, gen_id, Role::Serving) {
                pd_log!(id::SCALE, group = %name, log = %log, generation = gen_id, pid = pid.as_raw(), reason = %why, "scaling up to {} of {max} worker(s): {why}", pool.live + 1);
                self.note(name, Kind::Scale, "up", &why);
            }
        }
        let due = self.groups.get(name).is_some_and(|g| g.pool_checked.is_none_or(|t| now - t >= POOL_CHECK));
        if due {
            if let Some(g) = self.groups.get_mut(name) {
                g.pool_checked = Some(now);
            }
            self.check_workers(name, gen_id, &live, now);
        }
    }

    /// Activity, memory and age of a generation's live workers: retire one
    /// idle worker above MIN, or start the replacement of one to recycle.
    fn check_workers(&mut self, name: &str, gen_id: u64, live: &[Pid], now: Instant) {
        let Some(plan) = self.groups.get(name).and_then(|g| g.plan.clone()) else {
            return;
        };
        let mut idle = Vec::new();
        let mut ready = Vec::new();
        for pid in live {
            let Some(w) = self.workers.get_mut(pid) else {
                continue;
            };
            let calls = io_calls(*pid);
            if calls != w.activity {
                w.activity = calls;
                w.active_at = now;
            }
            if w.ready && w.role == Role::Serving {
                ready.push(*pid);
                idle.push(now - w.active_at);
            }
        }
        let timeout = Duration::from_millis(match plan.inactivity_timeout_ms {
            0 => DEFAULT_INACTIVITY_MS,
            t => t,
        });
        if plan.max_processes > plan.processes {
            if let Some(i) = policy::retire_idle(live.len() as u32, plan.processes, &idle, timeout) {
                let pid = ready[i];
                let why = format!(
                    "scaling down to {} worker(s): idle for {} s (inactivity-timeout {} s)",
                    live.len() - 1,
                    idle[i].as_secs(),
                    timeout.as_secs()
                );
                pd_log!(id::SCALE, group = %name, log = %plan.error_log, generation = gen_id, pid = pid.as_raw(), reason = %why, "{why}");
                self.note(name, Kind::Scale, "down", &why);
                self.retire(pid, "idle above processes MIN");
                return;
            }
        }
        let lifetime = Duration::from_millis(plan.lifetime_ms);
        for pid in ready {
            let Some(w) = self.workers.get(&pid) else {
                continue;
            };
            let health = policy::Health {
                reported: w.reported_recycle.as_deref(),
                resident: if plan.memory_limit > 0 { resident_bytes(pid) } else { None },
                age: w.started.elapsed(),
            };
            let Some(cause) = policy::recycle(health, plan.memory_limit, lifetime) else {
                continue;
            };
            self.recycle_now(pid, &cause.to_string());
            return;
        }
    }
}
