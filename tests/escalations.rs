//! The manager's escalations at the times the README states, read from the
//! log lines' own timestamps ("Stopping", "Graceful restarts",
//! "Supervision", "Ready"): stop and graceful-stop (EOF, SIGTERM after
//! 1 s, SIGKILL after 3 s), graceful-timeout (SIGTERM, then SIGKILL 2 s
//! later, PD0207 each), start-up timeout (the hung worker is gone), and
//! back-off (0.5 s doubling, PD0203's "next attempt in N ms").
//!
//! Requests go straight to the group socket (the echo worker), so that
//! Apache's own shutdown does not hold them. Stop and graceful-stop run
//! under every MPM (Apache's own shutdown differs); the rest, the
//! manager's alone, under event. `ON_TERM=report` workers die
//! of SIGTERM, `ON_TERM=ignore` ones only of SIGKILL; both log the time
//! SIGTERM came.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn group(name: &str, extra: &str) -> String {
    format!(
        "LanguageGroup {name} language=python user=procd-test-a \"command=/usr/bin/python3 @DIR@/echo_worker.py\" processes=1 {extra}"
    )
}

/// Sends `line` to `group`'s socket on a thread: the answer, or the error.
fn ask_in_background(a: &Apache, group: &str, line: &'static str) -> std::thread::JoinHandle<Result<String, String>> {
    let socket = a.socket(group);
    std::thread::spawn(move || ask(&socket, line))
}

/// The epoch time of the first log line with `needle`, waiting up to `limit`.
fn time_of(a: &Apache, needle: &str, limit: Duration) -> f64 {
    let mut found = None;
    wait_until(limit, || {
        found = timed_lines(&a.error_log(), needle).first().map(|(t, _)| *t);
        found.is_some()
    });
    found.unwrap_or_else(|| a.fail(&format!("no log line with {needle:?}")))
}

/// The time a worker says SIGTERM came ("SIGTERM at EPOCH pid PID").
fn sigterm_at(a: &Apache, pid: i32) -> f64 {
    let needle = format!("pid {pid}");
    let mut at = None;
    wait_until(Duration::from_secs(6), || {
        at = a
            .error_log()
            .lines()
            .filter(|l| l.ends_with(&needle))
            .find_map(|l| l.split("SIGTERM at ").nth(1)?.split_whitespace().next()?.parse::<f64>().ok());
        at.is_some()
    });
    at.unwrap_or_else(|| a.fail(&format!("worker {pid} never logged that it got SIGTERM")))
}

fn pid_of(answer: &str) -> i32 {
    field(answer, "pid").parse().unwrap()
}

/// `secs` (since `t0`) is within [want, want + slack].
fn at(a: &Apache, what: &str, secs: f64, want: f64, slack: f64) {
    eprintln!("{what}: {secs:.3} s (README: {want} s)");
    // Measured between two log lines: the first may be written a little
    // after the moment the timer counts from (a loaded box: 76 ms seen).
    if !(want - 0.15..=want + slack).contains(&secs) {
        a.fail(&format!("{what} after {secs:.3} s; expected {want} s (+{slack} s)"));
    }
}

fn stop_escalates(how: &str, mpm: Mpm) {
    ensure_user("procd-test-a");
    let conf = [group("quick", ""), group("soft", "env=ON_TERM=report"), group("stubborn", "env=ON_TERM=ignore")];
    let mut a = Apache::new(&format!("escalate-{how}-{mpm:?}"), mpm, &conf.join("\n"));
    a.start();
    let quick = pid_of(&a.wait_for_group("quick", Duration::from_secs(10)));
    let soft = pid_of(&a.wait_for_group("soft", Duration::from_secs(10)));
    let stubborn = pid_of(&a.wait_for_group("stubborn", Duration::from_secs(10)));
    let manager = a.manager();
    // Held by the workers: 0.5 s (finishes), 4 s (SIGTERM at 1 s), 10 s
    // (SIGTERM ignored: SIGKILL at 3 s).
    let q = ask_in_background(&a, "quick", "sleep 0.5");
    let s = ask_in_background(&a, "soft", "sleep 4");
    let k = ask_in_background(&a, "stubborn", "sleep 10");
    std::thread::sleep(Duration::from_millis(200));
    let master = a.forget_master().unwrap();
    let issued = now_epoch();
    let out = std::process::Command::new(APACHE).arg("-f").arg(&a.conf).args(["-k", how]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all = [master, manager, quick, soft, stubborn];
    let gone = wait_until(Duration::from_secs(8), || all.iter().all(|p| !pid_alive(*p)));
    let gone_at = now_epoch();
    if !gone {
        a.fail(&format!(
            "{how}: still alive 8 s later: {:?}",
            all.iter().filter(|p| pid_alive(**p)).collect::<Vec<_>>()
        ));
    }
    let t0 = time_of(&a, "PD0200: stopping all groups", Duration::from_secs(1));
    // README ("Stopping"): graceful-stop reaches the manager once Apache's
    // own children are done, at once when they are idle (they are: the
    // requests go to the group sockets; 26 ms measured, 29 ms for stop;
    // about 1 s when Apache's parent still slept a second between looks).
    // graceful-stop: 1.018 s once under prefork in a clean-clone CI run,
    // 1.024 s once under event in a full local run (1 in 16 runs that
    // evening): the parent then slept its one second, as it does when a
    // child is not yet idle, or when the SIGCHLD that ends its sleep
    // arrives between its look for exits and the sleep (nothing can end a
    // sleep begun after the signal). So 1.5 s for graceful-stop.
    let most = if how == "graceful-stop" { 1.5 } else { 0.5 };
    eprintln!("{how} ({mpm:?}): the manager began stopping {:.3} s after the command (at most {most} s)", t0 - issued);
    if t0 - issued > most {
        a.fail(&format!("{how}: the manager began stopping {:.3} s after the command", t0 - issued));
    }
    if let Ok(answer) = q.join().unwrap().as_deref().map(str::to_string) {
        if !answer.starts_with("group=quick") {
            a.fail(&format!("{how}: the 0.5 s request: {answer:?}"));
        }
    } else {
        a.fail(&format!("{how}: the 0.5 s request was not allowed to finish"));
    }
    for (name, r) in [("soft", s.join().unwrap()), ("stubborn", k.join().unwrap())] {
        if r.is_ok() {
            a.fail(&format!("{how}: the request to {name} completed: {r:?}; it should have been ended"));
        }
    }
    at(&a, &format!("{how}: SIGTERM to a worker still busy"), sigterm_at(&a, soft) - t0, 1.0, 0.5);
    at(&a, &format!("{how}: SIGTERM to the stubborn worker"), sigterm_at(&a, stubborn) - t0, 1.0, 0.5);
    let killed = time_of(&a, &format!("worker pid {stubborn} was killed by signal SIGKILL"), Duration::from_secs(1));
    at(&a, &format!("{how}: SIGKILL to the stubborn worker"), killed - t0, 3.0, 0.5);
    // "no manager or worker is left after about 3 s"
    at(&a, &format!("{how}: everything gone (polled)"), gone_at - t0, 3.0, 0.8);
    // The quick worker finished and exited by itself; the soft one died of SIGTERM.
    for line in
        [format!("worker pid {quick} exited with status 0"), format!("worker pid {soft} was killed by signal SIGTERM")]
    {
        if !wait_until(Duration::from_secs(5), || a.error_log().contains(&line)) {
            a.fail(&format!("{how}: no line {line:?}"));
        }
    }
}

#[test]
fn stop_sends_sigterm_after_1s_and_sigkill_after_3s() {
    stop_escalates("stop", Mpm::Event);
}

#[test]
fn stop_sends_sigterm_after_1s_and_sigkill_after_3s_worker() {
    stop_escalates("stop", Mpm::Worker);
}

#[test]
fn stop_sends_sigterm_after_1s_and_sigkill_after_3s_prefork() {
    stop_escalates("stop", Mpm::Prefork);
}

#[test]
fn graceful_stop_sends_sigterm_after_1s_and_sigkill_after_3s() {
    stop_escalates("graceful-stop", Mpm::Event);
}

#[test]
fn graceful_stop_sends_sigterm_after_1s_and_sigkill_after_3s_worker() {
    stop_escalates("graceful-stop", Mpm::Worker);
}

#[test]
fn graceful_stop_sends_sigterm_after_1s_and_sigkill_after_3s_prefork() {
    stop_escalates("graceful-stop", Mpm::Prefork);
}

#[test]
fn graceful_timeout_stragglers_get_sigterm_then_sigkill_2s_later() {
    ensure_user("procd-test-a");
    let conf = [
        group("soft", "graceful-timeout=1 env=ON_TERM=report"),
        group("stubborn", "graceful-timeout=1 env=ON_TERM=ignore"),
    ];
    let mut a = Apache::new("escalate-graceful", Mpm::Event, &conf.join("\n"));
    a.start();
    let soft = pid_of(&a.wait_for_group("soft", Duration::from_secs(10)));
    let stubborn = pid_of(&a.wait_for_group("stubborn", Duration::from_secs(10)));
    let s = ask_in_background(&a, "soft", "sleep 10");
    let k = ask_in_background(&a, "stubborn", "sleep 10");
    std::thread::sleep(Duration::from_millis(200));
    a.graceful();
    if !wait_until(Duration::from_secs(8), || !pid_alive(soft) && !pid_alive(stubborn)) {
        a.fail("the old workers outlived graceful-timeout + 2 s by far");
    }
    if !wait_until(Duration::from_secs(2), || {
        a.log_count("PD0206: group soft: generation") == 1 && a.log_count("PD0206: group stubborn: generation") == 1
    }) {
        a.fail("the old generations did not drain (PD0206)");
    }
    for (name, pid) in [("soft", soft), ("stubborn", stubborn)] {
        // Generation ids count across groups: the group's second PD0204
        // line is its new generation serving, when the old one starts draining.
        let log = a.error_log();
        let serving = timed_lines(&log, &format!("PD0204: group {name}: generation"));
        let Some((t0, _)) = serving.get(1) else { a.fail(&format!("group {name}: no second generation")) };
        let line = |what: &str| {
            let found = timed_lines(&log, &format!("group {name}: generation"));
            found.into_iter().find(|(_, l)| l.contains(what)).map(|(t, _)| t - t0)
        };
        let term = timed_lines(&log, &format!("PD0207: group {name}:"))
            .into_iter()
            .find(|(_, l)| l.ends_with("sending SIGTERM"))
            .map(|(t, _)| t - t0)
            .unwrap_or_else(|| a.fail(&format!("group {name}: no PD0207 SIGTERM line")));
        at(&a, &format!("{name}: PD0207 SIGTERM"), term, 1.0, 0.5);
        at(&a, &format!("{name}: the worker got SIGTERM"), sigterm_at(&a, pid) - t0, 1.0, 0.5);
        let drained = line("has drained and stopped").unwrap_or_else(|| a.fail(&format!("group {name}: no PD0206")));
        let kill = timed_lines(&log, &format!("PD0207: group {name}:"))
            .into_iter()
            .find(|(_, l)| l.ends_with("sending SIGKILL"))
            .map(|(t, _)| t - t0);
        if name == "stubborn" {
            let kill = kill.unwrap_or_else(|| a.fail("no PD0207 SIGKILL line for the stubborn worker"));
            at(&a, "stubborn: PD0207 SIGKILL (2 s after SIGTERM)", kill, 3.0, 0.5);
            at(&a, "stubborn: drained", drained, 3.0, 0.5);
        } else {
            if kill.is_some() {
                a.fail("a worker that died of SIGTERM got a SIGKILL line too");
            }
            at(&a, "soft: drained", drained, 1.0, 0.5);
        }
    }
    for r in [s.join().unwrap(), k.join().unwrap()] {
        if r.is_ok() {
            a.fail(&format!("a straggler's request completed: {r:?}"));
        }
    }
    a.wait_for_group("soft", Duration::from_secs(5));
    a.wait_for_group("stubborn", Duration::from_secs(5));
    a.stop();
}

#[test]
fn a_worker_that_never_gets_ready_is_killed_at_startup_timeout() {
    ensure_user("procd-test-a");
    let mut a = Apache::new("escalate-startup", Mpm::Event, &group("hung", "startup-timeout=1 env=WORKER_MODE=hang"));
    a.start();
    let manager = a.manager();
    // Two attempts: each hung worker is gone when its generation is
    // discarded, and never two at once.
    let mut most = 0;
    let watched = Instant::now();
    while a.log_count("PD0205: group hung") < 2 && watched.elapsed() < Duration::from_secs(8) {
        most = most.max(children(manager).len());
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = a.error_log();
    let started: Vec<i32> = log
        .lines()
        .filter(|l| l.contains("PD0201: group hung"))
        .filter_map(|l| l.split("started worker pid ").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    let failed = timed_lines(&log, "PD0205: group hung");
    if failed.len() < 2 || started.len() < 2 {
        a.fail(&format!("expected two start-up timeouts: {} PD0205, workers {started:?}", failed.len()));
    }
    if !failed[0].1.contains("not every worker became ready within startup-timeout (1 s)") {
        a.fail(&format!("PD0205 does not name the start-up timeout: {}", failed[0].1));
    }
    let first_start = time_of(&a, "PD0201: group hung", Duration::from_secs(1));
    at(&a, "start-up timeout", failed[0].0 - first_start, 1.0, 0.5);
    if !wait_until(Duration::from_secs(1), || !pid_alive(started[0])) {
        a.fail(&format!("the hung worker {} is still alive after its generation was discarded", started[0]));
    }
    if most > 1 {
        a.fail(&format!("{most} hung workers at once: the discarded ones were not killed"));
    }
    if !zombies_reaped(manager) {
        a.fail("zombies under the manager");
    }
    a.stop();
}

#[test]
fn back_off_starts_at_half_a_second_and_doubles() {
    ensure_user("procd-test-a");
    let mut a = Apache::new("escalate-backoff", Mpm::Event, &group("bad", "env=WORKER_MODE=fail"));
    a.start();
    // 0.5 + 1 + 2 + 4 s of waiting, then the fifth failure.
    if !wait_until(Duration::from_secs(15), || a.log_count("PD0203: group bad") >= 5) {
        a.fail(&format!("{} PD0203 lines after 15 s, expected 5", a.log_count("PD0203: group bad")));
    }
    let log = a.error_log();
    let backoffs = timed_lines(&log, "PD0203: group bad");
    let starts = timed_lines(&log, "PD0201: group bad");
    let mut delays = Vec::new();
    for (i, (t, line)) in backoffs.iter().take(5).enumerate() {
        let n = i + 1;
        let ms: u64 = line
            .split("next attempt in ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| a.fail(&format!("no \"next attempt in N ms\" in {line}")));
        delays.push(ms);
        if !line.contains(&format!("({n} time(s) in a row")) {
            a.fail(&format!("PD0203 line {n} does not count {n} failures: {line}"));
        }
        if ms != 500 << i {
            a.fail(&format!("back-off {n}: next attempt in {ms} ms, expected {}", 500 << i));
        }
        // The next start comes after that delay (the manager ticks every 100 ms).
        if n < 5 {
            let next = starts.iter().map(|(s, _)| *s).find(|s| s > t).unwrap_or_else(|| a.fail("no next start"));
            at(&a, &format!("start after back-off {n}"), next - t, ms as f64 / 1000.0, 0.3);
        }
    }
    eprintln!("back-off delays: {delays:?}");
    a.stop();
}
