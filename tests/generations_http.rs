//! Graceful generations seen by HTTP clients, under every MPM: a stream of
//! concurrent requests through Apache's port to a Python WSGI group goes on
//! across five `apache2 -k graceful`, a `restart-file=` touch, a removed
//! group and an added group, and not one request fails; every old
//! generation drains by itself (PD0206, its workers gone), and nothing is
//! left after stop (README: "Graceful restarts").

mod common;
use common::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PY: &str = "LanguageGroup py language=python processes=2 threads=4 user=procd-test-a \
    app=@DIR@/wsgi_app.py restart-file=@DIR@/restart/py graceful-timeout=10\nLanguageMount /app py\n";
const GONE: &str = "LanguageGroup gone language=python processes=1 threads=2 user=procd-test-a \
    app=@DIR@/wsgi_app.py graceful-timeout=10\nLanguageMount /gone gone\n";
const ADDED: &str = "LanguageGroup added language=python processes=1 threads=2 user=procd-test-a \
    app=@DIR@/wsgi_app.py\nLanguageMount /added added\n";

/// What the client threads saw.
#[derive(Default)]
struct Seen {
    /// (group path, generation, worker pid) of every answer.
    answers: BTreeSet<(String, String, i32)>,
    failures: Vec<String>,
}

/// A client thread: GETs `path` until `stop`; a 404 is accepted once
/// `may_404` is set (the group was removed from the configuration).
fn client(
    port: u16,
    path: &'static str,
    stop: Arc<AtomicBool>,
    may_404: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    seen: Arc<Mutex<Seen>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            let removed = may_404.load(Ordering::SeqCst);
            match http_get(port, path) {
                Ok(r) if r.status == 200 => {
                    let text = r.text();
                    let pid = field(&text, "pid").parse().unwrap_or(0);
                    let gen_ = field(&text, "gen").to_string();
                    ok.fetch_add(1, Ordering::SeqCst);
                    seen.lock().unwrap().answers.insert((path.to_string(), gen_, pid));
                }
                Ok(r) if r.status == 404 && removed => std::thread::sleep(Duration::from_millis(50)),
                Ok(r) => seen.lock().unwrap().failures.push(format!("{path}: {} {:?}", r.status, r.text())),
                Err(e) => seen.lock().unwrap().failures.push(e),
            }
        }
    })
}

fn serving(a: &Apache, group: &str) -> usize {
    a.log_count(&format!("PD0204: group {group}: generation"))
}

/// Waits for one more PD0204 line of `group` than `before`.
fn wait_serving(a: &Apache, group: &str, before: usize, what: &str) {
    if !wait_until(Duration::from_secs(15), || serving(a, group) > before) {
        a.fail(&format!("{what}: no new generation of group {group} serves"));
    }
}

fn run(mpm: Mpm) {
    ensure_user("procd-test-a");
    let mut a = Apache::new(&format!("gen-http-{mpm:?}"), mpm, &format!("{PY}{GONE}"));
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/wsgi_app.py"), a.dir.join("wsgi_app.py")).unwrap();
    std::fs::create_dir_all(a.dir.join("restart")).unwrap();
    std::fs::write(a.dir.join("restart/py"), "").unwrap();
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    let started = Instant::now();
    a.start();
    for path in ["/app/whoami", "/gone/whoami"] {
        if !wait_until(Duration::from_secs(10), || a.get(path).status == 200) {
            a.fail(&format!("{path} does not answer"));
        }
    }
    let manager = a.manager();
    let stop = Arc::new(AtomicBool::new(false));
    let never = Arc::new(AtomicBool::new(false));
    let gone_removed = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut clients: Vec<_> = (0..4)
        .map(|_| client(a.port, "/app/whoami?s=0.05", stop.clone(), never.clone(), ok.clone(), seen.clone()))
        .collect();
    clients.push(client(a.port, "/gone/whoami?s=0.05", stop.clone(), gone_removed.clone(), ok.clone(), seen.clone()));
    std::thread::sleep(Duration::from_millis(300));

    // Five graceful restarts: each starts a new generation of both groups.
    for i in 1..=5 {
        let (py, gone) = (serving(&a, "py"), serving(&a, "gone"));
        a.graceful();
        wait_serving(&a, "py", py, &format!("graceful {i}"));
        wait_serving(&a, "gone", gone, &format!("graceful {i}"));
        std::thread::sleep(Duration::from_millis(300));
    }
    // restart-file=: only that group starts a new generation.
    let (py, gone) = (serving(&a, "py"), serving(&a, "gone"));
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(a.dir.join("restart/py"), "touched").unwrap();
    if !wait_until(Duration::from_secs(5), || a.log_count("PD0209: group py:") == 1) {
        a.fail("no PD0209 line after the restart file was touched");
    }
    wait_serving(&a, "py", py, "restart-file");
    std::thread::sleep(Duration::from_millis(300));
    if serving(&a, "gone") != gone {
        a.fail("touching py's restart file restarted group gone too");
    }
    // A group removed, a group added.
    let py = serving(&a, "py");
    a.set_extra(&format!("{PY}{ADDED}"));
    gone_removed.store(true, Ordering::SeqCst);
    a.graceful();
    wait_serving(&a, "py", py, "the graceful that removes gone");
    if !wait_until(Duration::from_secs(10), || a.get("/added/whoami").status == 200) {
        a.fail("the added group does not answer");
    }
    clients.push(client(a.port, "/added/whoami", stop.clone(), never.clone(), ok.clone(), seen.clone()));
    if !wait_until(Duration::from_secs(15), || a.log_count("PD0206: group gone: stopping") == 1) {
        a.fail("the removed group did not drain");
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let answered = ok.load(Ordering::SeqCst);
    let py_gens: BTreeSet<&String> =
        seen.answers.iter().filter(|(p, _, _)| p.starts_with("/app/")).map(|(_, g, _)| g).collect();
    eprintln!(
        "{mpm:?}: {answered} answers from {} generations of py, {} failures, {:?} in all",
        py_gens.len(),
        seen.failures.len(),
        started.elapsed()
    );
    if !seen.failures.is_empty() {
        a.fail(&format!(
            "{} of {} requests failed, e.g. {:?}",
            seen.failures.len(),
            answered + seen.failures.len(),
            &seen.failures[..seen.failures.len().min(5)]
        ));
    }
    // Served by (nearly) every generation: 1 + 5 gracefuls + restart file + 1.
    if py_gens.len() < 6 || answered < 100 {
        a.fail(&format!("{answered} answers from py's generations {py_gens:?}: expected most of 8"));
    }
    if !seen.answers.iter().any(|(p, _, _)| p == "/added/whoami") {
        a.fail("no answer from the added group");
    }

    // Old generations drain by themselves: py had 7 old ones, gone all 6.
    for (group, old) in [("py", 7), ("gone", 6)] {
        let drained = format!("PD0206: group {group}: generation");
        if !wait_until(Duration::from_secs(15), || a.log_count(&drained) == old) {
            a.fail(&format!("{} generations of group {group} drained, expected {old}", a.log_count(&drained)));
        }
    }
    if a.log_count("PD0207") > 0 || a.log_count("PD0205") > 0 {
        a.fail("a generation was signalled (PD0207) or failed to start (PD0205)");
    }
    if a.socket("gone").exists() {
        a.fail("the removed group's socket is still there");
    }
    // Every worker that answered and is not one of the 3 current ones is gone.
    if !wait_until(Duration::from_secs(5), || children(manager).len() == 3) {
        a.fail(&format!("expected 3 workers (py 2, added 1), found {:?}", children(manager)));
    }
    let current = children(manager);
    let lingering: Vec<i32> =
        seen.answers.iter().map(|(_, _, p)| *p).filter(|p| !current.contains(p) && pid_alive(*p)).collect();
    if !lingering.is_empty() {
        a.fail(&format!("workers of old generations still alive: {lingering:?}"));
    }
    if !zombies_reaped(manager) {
        a.fail("zombies under the manager");
    }
    a.stop();
    eprintln!("{mpm:?}: done in {:?}", started.elapsed());
}

#[test]
fn http_across_restarts_event() {
    run(Mpm::Event);
}

#[test]
fn http_across_restarts_worker() {
    run(Mpm::Worker);
}

#[test]
fn http_across_restarts_prefork() {
    run(Mpm::Prefork);
}
