//! The module loads and serves under every MPM, survives graceful restarts
//! (Apache unloads and reloads the .so each time), and leaves no process
//! behind on stop.

mod common;
use common::{Apache, Mpm};
use std::time::Duration;

const GROUPS: &str = "LanguageGroup site language=cgi processes=2 app=/etc/hostname\nLanguageMount /app site\nLanguageHandler site .cgi\n<Location /legacy/>\n  LinkRewrite http://127.0.0.1:9/ /legacy/\n</Location>";

fn serves_static_file(a: &Apache) {
    let r = a.get("/hello.txt");
    if r.status != 200 || r.text() != "Hello, World!\n" {
        a.fail(&format!("GET /hello.txt gave {} {:?}", r.status, r.text()));
    }
}

#[test]
fn loads_and_serves_under_every_mpm() {
    for mpm in Mpm::ALL {
        let mut a = Apache::new(&format!("mpm-{mpm:?}"), mpm, GROUPS);
        a.start();
        serves_static_file(&a);
        // The parent writes "... configured -- resuming normal operations"
        // after it has started its children (prefork), so a child may
        // answer before that line is in the log.
        let logged = common::wait_until(Duration::from_secs(5), || {
            let log = a.error_log();
            log.contains("PD0001: mod_procd") && log.contains("mod_procd/0.1.0 configured")
        });
        if !logged {
            a.fail("no PD0001 start-up line");
        }
        a.stop();
    }
}

fn survive_graceful_restarts(mpm: Mpm) {
    let mut a = Apache::new(&format!("graceful-{mpm:?}"), mpm, GROUPS);
    a.start();
    serves_static_file(&a);
    for i in 1..=5 {
        // Change the configuration each time, as an administrator would.
        a.set_extra(&format!("{GROUPS}\nLanguageGroup extra{i} language=cgi"));
        a.graceful();
        serves_static_file(&a);
    }
    let log = a.error_log();
    if log.matches("PD0001: mod_procd").count() != 6 {
        a.fail("expected 6 PD0001 lines: one per configuration generation");
    }
    if !log.contains("PD0001: mod_procd 0.1.0 configured: 2 process group(s)") {
        a.fail("the last generation should see its new group");
    }
    for bad in ["Segmentation fault", "exit signal", "PD0002", "AH00052"] {
        if log.contains(bad) {
            a.fail(&format!("error log mentions {bad}"));
        }
    }
    a.stop();
}

#[test]
fn five_graceful_restarts_event() {
    survive_graceful_restarts(Mpm::Event);
}

#[test]
fn five_graceful_restarts_prefork() {
    survive_graceful_restarts(Mpm::Prefork);
}

#[test]
fn five_graceful_restarts_worker() {
    survive_graceful_restarts(Mpm::Worker);
}
