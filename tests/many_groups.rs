//! Many groups actually serving (issue 17: "many groups"): 50 WSGI groups,
//! one single-threaded worker each, every one answering an HTTP request
//! through Apache, before and after a graceful restart; every old
//! generation drains, and the manager's descriptors and memory are the
//! same afterwards (README, "The process manager" and "Supervision").

mod common;
use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const GROUPS: usize = 50;

fn conf() -> String {
    (0..GROUPS)
        .map(|i| {
            format!(
                "LanguageGroup g{i} language=python processes=1 threads=1 user=procd-test-a \
                 app=@DIR@/wsgi_app.py\nLanguageMount /g{i} g{i}\n"
            )
        })
        .collect()
}

fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Every group answers /gN/whoami with 200 within `limit`: the generation
/// each answered from.
fn all_answer(a: &Apache, limit: Duration, what: &str) -> BTreeMap<usize, String> {
    let deadline = Instant::now() + limit;
    let mut gens = BTreeMap::new();
    for i in 0..GROUPS {
        loop {
            let last = match http_get(a.port, &format!("/g{i}/whoami")) {
                Ok(r) if r.status == 200 => {
                    gens.insert(i, field(&r.text(), "gen").to_string());
                    break;
                }
                Ok(r) => format!("{} {}", r.status, r.text()),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                a.fail(&format!("{what}: group g{i} does not answer: {last}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    gens
}

#[test]
fn fifty_groups_serve_through_apache_across_a_graceful() {
    ensure_user("procd-test-a");
    let mut a = Apache::new("many-groups", Mpm::Event, &conf());
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/wsgi_app.py"), a.dir.join("wsgi_app.py")).unwrap();
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    let t = Instant::now();
    a.start();
    let first = all_answer(&a, Duration::from_secs(90), "at start");
    eprintln!("{GROUPS} groups answering {} ms after start", t.elapsed().as_millis());
    let manager = a.manager();
    if !wait_until(Duration::from_secs(10), || children(manager).len() == GROUPS) {
        a.fail(&format!("expected {GROUPS} workers, found {}", children(manager).len()));
    }
    let (fds_before, rss_before) = (fd_count(manager), rss_kb(manager));
    let old_workers = children(manager);

    let t = Instant::now();
    a.graceful();
    if !wait_until(Duration::from_secs(90), || a.log_count("PD0204: group g") >= 2 * GROUPS) {
        a.fail(&format!("{} of {GROUPS} groups serve a new generation", a.log_count("PD0204: group g") - GROUPS));
    }
    let second = all_answer(&a, Duration::from_secs(30), "after the graceful");
    eprintln!("{GROUPS} new generations answering {} ms after the graceful", t.elapsed().as_millis());
    if let Some(i) = (0..GROUPS).find(|i| first[i] == second[i]) {
        a.fail(&format!("group g{i} still answers from generation {} after the graceful", first[&i]));
    }
    if !wait_until(Duration::from_secs(20), || a.log_count("PD0206: group g") >= GROUPS) {
        a.fail(&format!("{} of {GROUPS} old generations drained", a.log_count("PD0206: group g")));
    }
    if !wait_until(Duration::from_secs(10), || old_workers.iter().all(|p| !pid_alive(*p))) {
        a.fail("workers of the old generations are still alive");
    }
    if children(manager).len() != GROUPS || !zombie_children(manager).is_empty() {
        a.fail(&format!(
            "after the graceful: {} workers, zombies {:?}",
            children(manager).len(),
            zombie_children(manager)
        ));
    }
    let mut fds_after = 0;
    let settled = wait_until(Duration::from_secs(5), || {
        fds_after = fd_count(manager);
        fds_after <= fds_before
    });
    let rss_after = rss_kb(manager);
    eprintln!("manager: {fds_before} -> {fds_after} descriptors, {rss_before} -> {rss_after} kB RSS");
    // A handful of descriptors per group (its listener, each worker's
    // output pipe and status channel), none left from the old generations.
    if fds_before > 10 + 4 * GROUPS || !settled {
        a.fail(&format!("manager descriptors: {fds_before} before the graceful, {fds_after} after"));
    }
    if rss_after > rss_before + 2048 || rss_before > 32 * 1024 {
        a.fail(&format!("manager RSS: {rss_before} kB before the graceful, {rss_after} kB after"));
    }
    a.stop();
}
