//! Pool policies through a real Apache: recycling by maximum-requests,
//! memory and lifetime without a failed request; scaling up under load and
//! back down after idle; processes=0-N cold starts; requests sent while a
//! group starts are answered, not refused.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const USER: &str = "procd-test-a";

fn start(name: &str, group_opts: &str) -> Apache {
    ensure_user(USER);
    let conf = format!(
        "LanguageGroup pool language=python user={USER} app=@DIR@/pool_app.py {group_opts}\nLanguageMount /app pool\n"
    );
    let mut a = Apache::new(name, Mpm::Event, &conf);
    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/pool_app.py");
    std::fs::copy(app, a.dir.join("pool_app.py")).expect("copy the app");
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    a
}

/// GET `path` on a fresh connection: the worker pid it answered from.
fn pid_of(port: u16, path: &str) -> Result<i32, String> {
    let r = http_get(port, path)?;
    if r.status != 200 {
        return Err(format!("{path}: status {}", r.status));
    }
    r.text().trim().parse().map_err(|_| format!("{path}: body {:?}", r.text()))
}

/// What a client saw: the pids that answered, the failures, the answers.
type Seen = (BTreeSet<i32>, Vec<String>, usize);

/// Clients requesting `path` until stopped (bounded: 60 s).
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Seen>>,
}

impl Load {
    fn start(port: u16, clients: usize, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let (mut pids, mut failed, mut n) = (BTreeSet::new(), Vec::new(), 0);
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        match pid_of(port, path) {
                            Ok(p) => {
                                pids.insert(p);
                                n += 1;
                            }
                            Err(e) => failed.push(e),
                        }
                    }
                    (pids, failed, n)
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let (mut pids, mut failed, mut n) = (BTreeSet::new(), Vec::new(), 0);
        for t in self.threads {
            let (p, f, k) = t.join().expect("client thread");
            pids.extend(p);
            failed.extend(f);
            n += k;
        }
        (pids, failed, n)
    }
}

/// The group's worker pids now (processes of the test user under Apache).
fn workers(a: &Apache) -> BTreeSet<i32> {
    let Some(master) = a.master else { return BTreeSet::new() };
    let uid = uid_of(USER);
    descendants(master).into_iter().filter(|p| uid_gid(*p).0 == uid && comm(*p).starts_with("python")).collect()
}

/// Waits (10 s at most) until worker `before` is gone and another answers,
/// then stops `load`: fails the test if that did not happen or a request
/// of the load failed.
fn replaced_under_load(a: &Apache, before: i32, load: Load, which: &str) {
    let replaced = wait_until(Duration::from_secs(10), || {
        pid_of(a.port, "/app/pid").is_ok_and(|p| p != before) && !workers(a).contains(&before)
    });
    let (_, failed, n) = load.finish();
    if !replaced {
        a.fail(&format!("{which} (pid {before}) was not replaced within 10 s"));
    }
    if !failed.is_empty() {
        a.fail(&format!("{} of {n} requests failed, e.g. {:?}", failed.len(), &failed[..failed.len().min(3)]));
    }
}

#[test]
fn maximum_requests_recycles_without_a_failed_request() {
    let mut a = start("pool-maxreq", "processes=1 threads=2 maximum-requests=5");
    let load = Load::start(a.port, 2, "/app/pid");
    std::thread::sleep(Duration::from_secs(3));
    let (pids, failed, n) = load.finish();
    println!("maximum-requests=5: {n} requests, {} worker pids, {} failed", pids.len(), failed.len());
    if !failed.is_empty() {
        a.fail(&format!("{} failed requests, e.g. {:?}", failed.len(), &failed[..failed.len().min(3)]));
    }
    // The only worker serves on while its replacement starts (the group
    // never lacks a ready worker), so at full speed a worker answers more
    // than 5; the recycling itself goes on all the time.
    if pids.len() < 4 {
        a.fail(&format!("{n} requests with maximum-requests=5 were answered by only {} workers", pids.len()));
    }
    // At a human pace, every worker answers about 5.
    let mut paced = BTreeSet::new();
    for _ in 0..12 {
        paced.insert(pid_of(a.port, "/app/pid").unwrap_or_else(|e| a.fail(&e)));
        std::thread::sleep(Duration::from_millis(250));
    }
    if paced.len() < 3 {
        a.fail(&format!("12 paced requests with maximum-requests=5: {} workers answered", paced.len()));
    }
    if !wait_until(Duration::from_secs(5), || a.error_log().contains("PD0216: group pool: recycling worker pid")) {
        a.fail("no PD0216 line for the recycling");
    }
    a.stop();
}

#[test]
fn memory_limit_recycles_a_growing_worker() {
    let mut a = start("pool-memory", "processes=1 threads=2 memory-limit=80M");
    let before = pid_of(a.port, "/app/pid").unwrap_or_else(|e| a.fail(&e));
    let load = Load::start(a.port, 2, "/app/pid");
    // 3 x 40 MiB: past the limit; the manager looks once a second.
    for _ in 0..3 {
        if let Err(e) = pid_of(a.port, "/app/grow?40") {
            a.fail(&e);
        }
    }
    replaced_under_load(&a, before, load, "the worker past memory-limit");
    let log = a.error_log();
    if !log.contains(&format!("recycling worker pid {before} (memory-limit: resident set")) {
        a.fail("no PD0216 line naming the resident set");
    }
    a.stop();
}

#[test]
fn lifetime_recycles_workers_in_turn() {
    let mut a = start("pool-lifetime", "processes=2 threads=2 lifetime=2s");
    let load = Load::start(a.port, 2, "/app/pid");
    std::thread::sleep(Duration::from_secs(7));
    let (pids, failed, n) = load.finish();
    println!("lifetime=2s over 7 s: {n} requests, {} worker pids", pids.len());
    if !failed.is_empty() {
        a.fail(&format!("{} of {n} requests failed, e.g. {:?}", failed.len(), &failed[..failed.len().min(3)]));
    }
    if pids.len() < 4 {
        a.fail(&format!("lifetime=2s over 7 s: only {} distinct workers answered", pids.len()));
    }
    if !wait_until(Duration::from_secs(5), || a.error_log().contains("(lifetime: ")) {
        a.fail("no PD0216 line naming the lifetime");
    }
    a.stop();
}

/// `sys.exit()` in a request: that request gets a 500, its thread lives on,
/// and the worker is recycled as it asked, without failing a neighbour.
#[test]
fn sys_exit_in_a_request_recycles_the_worker_without_a_failed_request() {
    let mut a = start("pool-exit", "processes=1 threads=2");
    let before = pid_of(a.port, "/app/pid").unwrap_or_else(|e| a.fail(&e));
    let load = Load::start(a.port, 2, "/app/pid");
    let r = http_get(a.port, "/app/exit").unwrap_or_else(|e| a.fail(&e));
    if r.status != 500 {
        a.fail(&format!("/app/exit: {} {:?}", r.status, r.text()));
    }
    replaced_under_load(&a, before, load, "the worker whose request called sys.exit()");
    let log = a.error_log();
    if !log.contains("the application called sys.exit() (this worker is recycled) in GET /app/exit")
        || !log.contains(&format!("recycling worker pid {before} (application-exit"))
    {
        a.fail("no log lines for the sys.exit() and the recycling it asked for");
    }
    a.stop();
}

#[test]
fn scales_up_under_load_and_down_after_idle() {
    let mut a = start("pool-scale", "processes=1-3 threads=1 inactivity-timeout=2s");
    wait_until(Duration::from_secs(10), || pid_of(a.port, "/app/pid").is_ok());
    if workers(&a).len() != 1 {
        a.fail(&format!("processes=1-3 at rest should run 1 worker, not {:?}", workers(&a)));
    }
    let load = Load::start(a.port, 6, "/app/sleep?200");
    let scaled = wait_until(Duration::from_secs(10), || workers(&a).len() == 3);
    let (pids, failed, n) = load.finish();
    println!("processes=1-3 under 6 clients: {n} requests from {} workers", pids.len());
    if !scaled || pids.len() < 3 {
        a.fail(&format!("under load: {} workers running, {} answered", workers(&a).len(), pids.len()));
    }
    if !failed.is_empty() {
        a.fail(&format!("{} of {n} requests failed, e.g. {:?}", failed.len(), &failed[..failed.len().min(3)]));
    }
    // Idle: back to MIN after inactivity-timeout (2 s), one at a time.
    // README: back to 1 worker 2.9 s after the load stopped (measured);
    // tested under 5 s (a 2x slower retirement would take 5.8 s).
    let t = Instant::now();
    if !wait_until(Duration::from_secs(5), || workers(&a).len() == 1) {
        a.fail(&format!("still {} workers 5 s after the load stopped", workers(&a).len()));
    }
    println!("back to 1 worker {} ms after the load stopped", t.elapsed().as_millis());
    let log = a.error_log();
    if !log.contains("PD0215: group pool: scaling up to 3 of 3") || !log.contains("scaling down to 1 worker(s)") {
        a.fail("no PD0215 lines for scaling up to 3 and down to 1");
    }
    a.stop();
}

#[test]
fn processes_zero_starts_on_the_first_request() {
    let mut a = start("pool-cold", "processes=0-2 threads=2");
    std::thread::sleep(Duration::from_millis(500));
    if !workers(&a).is_empty() {
        a.fail("processes=0-2 runs a worker before any request");
    }
    let t = Instant::now();
    let pid = pid_of(a.port, "/app/pid").unwrap_or_else(|e| a.fail(&format!("cold start: {e}")));
    let cold = t.elapsed();
    let t = Instant::now();
    let _ = std::process::Command::new("python3").args(["-c", "pass"]).status();
    let bare = t.elapsed();
    println!("cold start: first answer after {} ms (python3 -c pass: {} ms)", cold.as_millis(), bare.as_millis());
    if !workers(&a).contains(&pid) {
        a.fail("the cold-started worker is not running");
    }
    if !wait_until(Duration::from_secs(5), || {
        a.error_log().contains("PD0215: group pool: scaling up to 1 of 2 worker(s): cold start")
    }) {
        a.fail("no PD0215 cold-start line");
    }
    a.stop();
}

#[test]
fn requests_sent_while_the_group_starts_are_answered() {
    ensure_user(USER);
    let conf = format!(
        "LanguageGroup pool language=python user={USER} processes=2 threads=2 app=@DIR@/pool_app.py env=POOL_APP_IMPORT_DELAY=1.5\nLanguageMount /app pool\n"
    );
    let mut a = Apache::new("pool-startup", Mpm::Event, &conf);
    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/pool_app.py");
    std::fs::copy(app, a.dir.join("pool_app.py")).expect("copy the app");
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    // Apache answers; the group needs 1.5 s more to import its app.
    let port = a.port;
    let clients: Vec<_> = (0..6).map(|_| std::thread::spawn(move || pid_of(port, "/app/pid"))).collect();
    let results: Vec<Result<i32, String>> = clients.into_iter().map(|c| c.join().expect("client")).collect();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if !failed.is_empty() {
        a.fail(&format!("requests sent during start-up failed: {failed:?}"));
    }
    a.stop();
}

#[test]
fn a_stuck_request_does_not_fail_its_neighbours() {
    let mut a = start("pool-stuck", "processes=1 threads=4 request-timeout=2s");
    let old = pid_of(a.port, "/app/pid").unwrap_or_else(|e| a.fail(&e));
    let port = a.port;
    let stuck = std::thread::spawn(move || http_get(port, "/app/sleep?30000").map(|r| r.status));
    std::thread::sleep(Duration::from_millis(2500));
    // Neighbours in the same process, still running when the stuck one is
    // found (request-timeout + 1 s).
    let neighbours: Vec<_> =
        (0..2).map(|_| std::thread::spawn(move || http_get(port, "/app/sleep?1500").map(|r| r.status))).collect();
    let stuck_status = stuck.join().expect("client");
    let statuses: Vec<_> = neighbours.into_iter().map(|n| n.join().expect("client")).collect();
    if stuck_status != Ok(504) {
        a.fail(&format!("the stuck request: {stuck_status:?}, expected 504"));
    }
    if statuses.iter().any(|s| *s != Ok(200)) {
        a.fail(&format!("its neighbours in the same worker: {statuses:?}, expected 200 each"));
    }
    if !wait_until(Duration::from_secs(8), || !workers(&a).contains(&old)) {
        a.fail("the worker with the stuck request still runs");
    }
    let fresh = pid_of(a.port, "/app/pid").unwrap_or_else(|e| a.fail(&e));
    if fresh == old {
        a.fail("still answered by the stuck worker");
    }
    let log = a.error_log();
    if !log.contains("takes no new request") || !log.contains("request-timeout, as the worker reported") {
        a.fail("no log line for the stuck request's recycling");
    }
    a.stop();
}
