//! A real Flask app in a virtualenv the test makes (pip, from PyPI), run by
//! the virtualenv's python via command=, mounted under a prefix.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const VENV: &str = "/tmp/procd-test-venv-flask";

/// Creates (once) a virtualenv with Flask; reused by later runs.
fn flask_venv() -> String {
    let python = format!("{VENV}/bin/python3");
    let has_flask = || Command::new(&python).args(["-c", "import flask"]).status().is_ok_and(|s| s.success());
    if !Path::new(&python).exists() || !has_flask() {
        let _ = std::fs::remove_dir_all(VENV);
        let ok = Command::new("/usr/bin/python3").args(["-m", "venv", VENV]).status().is_ok_and(|s| s.success());
        assert!(ok, "python3 -m venv failed (install python3-venv)");
        let out = Command::new(format!("{VENV}/bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "flask"])
            .output()
            .expect("pip");
        assert!(out.status.success(), "pip install flask failed: {}", String::from_utf8_lossy(&out.stderr));
        let _ = Command::new("chmod").args(["-R", "a+rX", VENV]).status();
    }
    assert!(has_flask(), "flask is not importable from {VENV}");
    python
}

#[test]
fn flask_in_a_virtualenv_works_under_a_prefix() {
    ensure_user("procd-test-a");
    let python = flask_venv();
    let conf = format!(
        "LanguageGroup flask language=python processes=1 threads=4 user=procd-test-a command={python} app=@DIR@/flask_app.py\nLanguageMount /flask flask\n"
    );
    let mut a = Apache::new("flask", Mpm::Event, &conf);
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/flask_app.py"), a.dir.join("flask_app.py")).unwrap();
    a.start();
    wait_until(Duration::from_secs(15), || a.get("/flask/").status == 200);
    let r = a.get("/flask/");
    if r.status != 200 || r.text() != "index; hello is at /flask/hello" {
        a.fail(&format!("/flask/: {} {}", r.status, r.text()));
    }
    let r = a.get("/flask/hello");
    if r.text() != "hello from flask; script_root=/flask" {
        a.fail(&format!("/flask/hello: {}", r.text()));
    }
    let r = a.get("/flask/go");
    let location =
        r.head.lines().find(|l| l.to_ascii_lowercase().starts_with("location:")).unwrap_or_default().to_string();
    if r.status != 302 || !location.trim_end().ends_with("/flask/hello") {
        a.fail(&format!("redirect: {} {location}", r.status));
    }
    let r = a.request("POST /flask/form HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 9\r\nConnection: close\r\n\r\nname=abc&");
    if r.text() != "name=abc" {
        a.fail(&format!("form: {} {}", r.status, r.text()));
    }
    // The worker really runs the virtualenv's python.
    let manager = a.manager();
    let worker = *children(manager).iter().next().unwrap();
    let exe = std::fs::read_to_string(format!("/proc/{worker}/cmdline")).unwrap_or_default();
    if !exe.starts_with(&python) {
        a.fail(&format!("the worker runs {exe:?}, not {python}"));
    }
    a.stop();
}
