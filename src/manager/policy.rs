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
}
