//! Supervision policy as pure functions: given what happened and when,
//! what the manager does. No processes, no clocks read here: callers pass
//! `now` and durations, so every rule is unit-tested on its own.

use std::time::Duration;

/// A worker that exits sooner than this after starting counts as a crash
/// of a crash loop.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Quick crashes in a row after which replacements back off.
pub const CRASH_LOOP_AFTER: u32 = 3;
/// The first back-off delay; each further failure doubles it ...
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// ... up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Between SIGTERM and SIGKILL for draining stragglers.
pub const KILL_GRACE: Duration = Duration::from_secs(2);
/// `apachectl stop`: workers get EOF, then SIGTERM after this ...
pub const STOP_TERM_AFTER: Duration = Duration::from_secs(1);
/// ... and SIGKILL after this.
pub const STOP_KILL_AFTER: Duration = Duration::from_secs(3);

/// The delay before attempt number `failures + 1` (failures ≥ 1):
/// 0.5 s, 1 s, 2 s ... 60 s.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.clamp(1, 16) - 1;
    FIRST_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// Where the generation of an exited worker stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Starting,
    Serving,
    Draining,
}

/// What the manager does when a worker exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterExit {
    /// Shutting down: nothing.
    Nothing,
    /// A draining generation lost a worker; `drained` when it was the last.
    DrainProgress { drained: bool },
    /// A starting generation cannot become ready: discard it, back off.
    FailGeneration,
    /// Start a replacement now; `failures` is the group's new count of
    /// quick crashes in a row.
    Replace { failures: u32 },
    /// Back off before replacing (a crash loop, or a worker that never
    /// became ready).
    BackOff,
    /// A worker told to retire (recycled, or idle above MIN) has gone, as
    /// expected: nothing to replace.
    Retired,
}

/// The facts about one worker's exit.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub stage: Stage,
    pub stopping: bool,
    pub was_ready: bool,
    pub uptime: Duration,
    /// Workers of the generation still running.
    pub left: usize,
    /// The group's quick crashes in a row so far.
    pub failures: u32,
    /// It had been told to retire.
    pub retired: bool,
    /// It exited with status 0 (recycled itself after maximum-requests),
    /// within the group's allowance of such exits per second.
    pub clean: bool,
}

/// Clean exits a group may have per second before further ones count as
/// crashes (a worker that exits 0 in a loop must not keep the manager
/// forking): ten per process, at least twenty.
pub fn clean_exits_per_second(processes: u32) -> u32 {
    processes.saturating_mul(10).max(20)
}

pub fn after_exit(e: Exit) -> AfterExit {
    if e.stopping {
        return AfterExit::Nothing;
    }
    match e.stage {
        Stage::Draining => AfterExit::DrainProgress { drained: e.left == 0 },
        Stage::Starting => AfterExit::FailGeneration,
        Stage::Serving if e.retired => AfterExit::Retired,
        // Recycled (maximum-requests): replaced at once, even before it
        // counted as ready (a quiet worker may serve its N requests within
        // its first second), and not a crash.
        Stage::Serving if e.clean => AfterExit::Replace { failures: e.failures },
        Stage::Serving if !e.was_ready => AfterExit::BackOff,
        Stage::Serving if e.uptime >= STABLE_AFTER => AfterExit::Replace { failures: 0 },
        Stage::Serving if e.failures + 1 >= CRASH_LOOP_AFTER => AfterExit::BackOff,
        Stage::Serving => AfterExit::Replace { failures: e.failures + 1 },
    }
}

/// A step of a draining generation's deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainStep {
    /// `graceful-timeout` has passed: SIGTERM the stragglers.
    Terminate,
    /// `KILL_GRACE` after that: SIGKILL them.
    Kill,
}

/// What a draining generation needs now, `elapsed` after it began to drain.
pub fn drain_step(elapsed: Duration, graceful_timeout: Duration, terminated: bool) -> Option<DrainStep> {
    if !terminated && elapsed >= graceful_timeout {
        Some(DrainStep::Terminate)
    } else if terminated && elapsed >= graceful_timeout + KILL_GRACE {
        Some(DrainStep::Kill)
    } else {
        None
    }
}

/// What `apachectl stop` does to workers still running `elapsed` after it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopStep {
    Wait,
    Terminate,
    Kill,
}

pub fn stop_step(elapsed: Duration, terminated: bool) -> StopStep {
    if elapsed >= STOP_KILL_AFTER {
        StopStep::Kill
    } else if !terminated && elapsed >= STOP_TERM_AFTER {
        StopStep::Terminate
    } else {
        StopStep::Wait
    }
}

/// Whether a worker that cannot say READY counts as ready: it stayed up
/// for `settle`.
pub fn settled(says_ready: bool, ready: bool, uptime: Duration, settle: Duration) -> bool {
    !says_ready && !ready && uptime >= settle
}

/// A serving generation's pool, as the scaling rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    pub min: u32,
    pub max: u32,
    /// Workers that serve or will (not retiring).
    pub live: u32,
    /// Of those, started but not ready yet.
    pub starting: u32,
    /// Connections wait on the group's socket now, and did at the previous
    /// look (a tick earlier).
    pub waiting_now: bool,
    pub waiting_before: bool,
}

/// Whether to start one more worker: below MIN (a refill), or requests
/// wait while every worker is busy, up to MAX. One start at a time: a
/// worker still starting will take the waiting requests. With no worker
/// at all, the first waiting request starts one (a cold start).
pub fn scale_up(p: Pool) -> bool {
    if p.live >= p.max || p.starting > 0 {
        return false;
    }
    p.live < p.min || (p.waiting_now && (p.live == 0 || p.waiting_before))
}

/// Which worker retires for inactivity: above MIN, the one idle longest if
/// that is at least `timeout` (`idle[i]`: how long worker i has done
/// nothing). One at a time.
pub fn retire_idle(live: u32, min: u32, idle: &[Duration], timeout: Duration) -> Option<usize> {
    if live <= min || timeout.is_zero() {
        return None;
    }
    let (i, longest) = idle.iter().enumerate().max_by_key(|(_, d)| **d)?;
    (*longest >= timeout).then_some(i)
}

/// Why a worker is replaced while it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recycle {
    /// It asked for it (RECYCLE on its status channel: maximum-requests
    /// served, a request stuck past request-timeout).
    Reported(String),
    /// Its resident memory passed `memory-limit`.
    Memory { resident: u64, limit: u64 },
    /// It is older than `lifetime`.
    Lifetime { age: Duration, limit: Duration },
}

impl std::fmt::Display for Recycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MIB: u64 = 1 << 20;
        match self {
            Recycle::Reported(why) => write!(f, "{why}, as the worker reported"),
            Recycle::Memory { resident, limit } => {
                write!(f, "memory-limit: resident set {} MiB > {} MiB", resident.div_ceil(MIB), limit / MIB)
            }
            Recycle::Lifetime { age, limit } => write!(f, "lifetime: {} s > {} s", age.as_secs(), limit.as_secs()),
        }
    }
}

/// The facts about one serving, ready worker.
#[derive(Debug, Clone, Copy)]
pub struct Health<'a> {
    pub reported: Option<&'a str>,
    pub resident: Option<u64>,
    pub age: Duration,
}

/// Whether a worker is to be replaced, and why (0 limits: none).
pub fn recycle(h: Health, memory_limit: u64, lifetime: Duration) -> Option<Recycle> {
    if let Some(why) = h.reported {
        return Some(Recycle::Reported(why.to_string()));
    }
    if let Some(resident) = h.resident.filter(|r| memory_limit > 0 && *r > memory_limit) {
        return Some(Recycle::Memory { resident, limit: memory_limit });
    }
    (!lifetime.is_zero() && h.age >= lifetime).then_some(Recycle::Lifetime { age: h.age, limit: lifetime })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_a_second_to_a_minute() {
        let ms: Vec<u128> = (1..=10).map(|f| backoff(f).as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]);
        assert_eq!(backoff(0), FIRST_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    fn exit(stage: Stage) -> Exit {
        Exit {
            stage,
            stopping: false,
            was_ready: true,
            uptime: Duration::from_secs(60),
            left: 1,
            failures: 0,
            retired: false,
            clean: false,
        }
    }

    #[test]
    fn recycled_workers_are_replaced_at_once() {
        let quick = Exit { uptime: Duration::from_millis(30), was_ready: false, clean: true, ..exit(Stage::Serving) };
        assert_eq!(after_exit(quick), AfterExit::Replace { failures: 0 });
        assert_eq!(after_exit(Exit { failures: 2, ..quick }), AfterExit::Replace { failures: 2 });
        assert_eq!(after_exit(Exit { clean: true, ..exit(Stage::Starting) }), AfterExit::FailGeneration);
        assert_eq!(clean_exits_per_second(1), 20);
        assert_eq!(clean_exits_per_second(8), 80);
    }

    #[test]
    fn replacement_and_crash_loops() {
        assert_eq!(after_exit(exit(Stage::Serving)), AfterExit::Replace { failures: 0 });
        let quick = Exit { uptime: Duration::from_millis(200), ..exit(Stage::Serving) };
        assert_eq!(after_exit(quick), AfterExit::Replace { failures: 1 });
        assert_eq!(after_exit(Exit { failures: 1, ..quick }), AfterExit::Replace { failures: 2 });
        assert_eq!(after_exit(Exit { failures: 2, ..quick }), AfterExit::BackOff, "the third quick crash");
        assert_eq!(after_exit(Exit { failures: 7, ..exit(Stage::Serving) }), AfterExit::Replace { failures: 0 });
        assert_eq!(after_exit(Exit { was_ready: false, ..exit(Stage::Serving) }), AfterExit::BackOff);
        assert_eq!(after_exit(exit(Stage::Starting)), AfterExit::FailGeneration);
        assert_eq!(after_exit(Exit { stopping: true, ..exit(Stage::Serving) }), AfterExit::Nothing);
    }

    #[test]
    fn draining_generations_end_with_their_last_worker() {
        assert_eq!(after_exit(exit(Stage::Draining)), AfterExit::DrainProgress { drained: false });
        assert_eq!(after_exit(Exit { left: 0, ..exit(Stage::Draining) }), AfterExit::DrainProgress { drained: true });
    }

    #[test]
    fn drain_deadlines() {
        let t = Duration::from_secs(30);
        assert_eq!(drain_step(Duration::from_secs(29), t, false), None);
        assert_eq!(drain_step(t, t, false), Some(DrainStep::Terminate));
        assert_eq!(drain_step(t + Duration::from_secs(1), t, true), None);
        assert_eq!(drain_step(t + KILL_GRACE, t, true), Some(DrainStep::Kill));
        assert_eq!(drain_step(Duration::ZERO, Duration::ZERO, false), Some(DrainStep::Terminate));
    }

    #[test]
    fn stop_escalates_at_one_and_three_seconds() {
        assert_eq!(stop_step(Duration::from_millis(900), false), StopStep::Wait);
        assert_eq!(stop_step(Duration::from_millis(1000), false), StopStep::Terminate);
        assert_eq!(stop_step(Duration::from_millis(2000), true), StopStep::Wait);
        assert_eq!(stop_step(Duration::from_millis(3000), true), StopStep::Kill);
    }

    #[test]
    fn quiet_workers_settle() {
        let s = Duration::from_secs(1);
        assert!(settled(false, false, s, s));
        assert!(!settled(true, false, s, s), "a worker that says READY waits for it");
        assert!(!settled(false, false, s / 2, s));
        assert!(!settled(false, true, s, s), "already ready");
    }

    #[test]
    fn scaling_starts_one_worker_at_a_time_while_requests_wait() {
        let p = Pool { min: 1, max: 3, live: 1, starting: 0, waiting_now: true, waiting_before: true };
        assert!(scale_up(p));
        assert!(!scale_up(Pool { waiting_before: false, ..p }), "one look may catch a request in passing");
        assert!(!scale_up(Pool { starting: 1, ..p }), "a worker still starting takes the queue first");
        assert!(!scale_up(Pool { live: 3, ..p }), "never above MAX");
        assert!(scale_up(Pool { live: 0, min: 0, waiting_before: false, ..p }), "cold start at the first request");
        assert!(!scale_up(Pool { live: 0, min: 0, waiting_now: false, ..p }), "MIN=0 and nobody asks: nothing");
        assert!(scale_up(Pool { live: 0, min: 1, waiting_now: false, waiting_before: false, ..p }), "refill to MIN");
    }

    #[test]
    fn idle_workers_above_min_retire_one_at_a_time() {
        let s = Duration::from_secs;
        assert_eq!(retire_idle(3, 1, &[s(5), s(70), s(61)], s(60)), Some(1));
        assert_eq!(retire_idle(1, 1, &[s(500)], s(60)), None, "never below MIN");
        assert_eq!(retire_idle(3, 1, &[s(5), s(59)], s(60)), None);
        assert_eq!(retire_idle(3, 0, &[s(500)], Duration::ZERO), None, "no timeout: no retiring");
    }

    #[test]
    fn recycling_names_its_cause() {
        let h = Health { reported: None, resident: Some(300 << 20), age: Duration::from_secs(30) };
        assert_eq!(recycle(h, 0, Duration::ZERO), None);
        let memory = recycle(h, 200 << 20, Duration::ZERO).unwrap();
        assert_eq!(memory.to_string(), "memory-limit: resident set 300 MiB > 200 MiB");
        assert_eq!(
            recycle(h, 0, Duration::from_secs(20)),
            Some(Recycle::Lifetime { age: Duration::from_secs(30), limit: Duration::from_secs(20) })
        );
        assert_eq!(
            recycle(Health { reported: Some("maximum-requests"), ..h }, 200 << 20, Duration::ZERO)
                .map(|r| r.to_string()),
            Some("maximum-requests, as the worker reported".to_string())
        );
    }
}
