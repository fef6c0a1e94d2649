//! The Debian package, on this machine's real Apache layout: built by
//! docker/build-deb.sh, installed with dpkg, enabled with a2enmod, checked
//! by apache2ctl configtest, serving through a group from an Apache started
//! with the test's own config that includes the installed mods-enabled
//! files (the distribution's apache2 service is never started), upgraded
//! under a stream of requests with zero failures, removed and purged with
//! nothing left. lintian's findings are the two explained ones.
//!
//! It packages the debug build for speed; `docker/build-deb.sh` alone
//! packages a release build.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const PACKAGE: &str = "libapache2-mod-procd";

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd).args(args).env("LANG", "C").output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn must(cmd: &str, args: &[&str]) -> String {
    let (ok, text) = run(cmd, args);
    assert!(ok, "{cmd} {args:?} failed:\n{text}");
    text
}

fn build(version: &str, out: &Path) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/build-deb.sh");
    let so = module_path().display().to_string();
    let o = out.display().to_string();
    let res =
        Command::new("bash").args([script, "--so", &so, "--version", version, "--out", &o]).output().expect("bash");
    assert!(res.status.success(), "build-deb.sh failed:\n{}", String::from_utf8_lossy(&res.stderr));
    String::from_utf8_lossy(&res.stdout).lines().last().expect("the .deb path").trim().to_string()
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "-f", "${Status}", PACKAGE]).1.contains("install ok installed")
}

/// Every trace of the package and of its enabling.
fn traces() -> Vec<String> {
    [
        "/usr/lib/apache2/modules/mod_procd.so",
        "/etc/apache2/mods-available/procd.load",
        "/etc/apache2/mods-available/procd.conf",
        "/etc/apache2/mods-enabled/procd.load",
        "/etc/apache2/mods-enabled/procd.conf",
        "/etc/apache2/conf-available/procd-example.conf",
        "/usr/share/doc/libapache2-mod-procd",
        "/var/lib/apache2/module/enabled_by_admin/procd",
        "/var/lib/apache2/module/enabled_by_maint/procd",
        "/var/lib/apache2/module/disabled_by_admin/procd",
        "/var/lib/apache2/module/disabled_by_maint/procd",
    ]
    .iter()
    .filter(|p| Path::new(p).symlink_metadata().is_ok())
    .map(|p| p.to_string())
    .collect()
}

#[test]
fn the_deb_installs_enables_serves_upgrades_and_purges_cleanly() {
    if installed() {
        // A previous run that failed half-way: start clean.
        let _ = run("dpkg", &["--purge", PACKAGE]);
    }
    assert!(traces().is_empty(), "traces of {PACKAGE} before the test: {:?}", traces());
    let out = std::env::temp_dir().join(format!("procd-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let v1 = build("0.1.0+test1", &out);
    let v2 = build("0.1.0+test2", &out);

    // lintian: only the two warnings build-deb.sh explains.
    if Path::new("/usr/bin/lintian").exists() {
        let (_, text) = run("lintian", &["--tag-display-limit", "0", &v1]);
        let tags: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ") || l.starts_with("W: ")).collect();
        for t in &tags {
            assert!(
                t.contains("non-standard-apache2-configuration-name")
                    || t.contains("web-application-works-only-with-apache"),
                "an unexplained lintian tag: {t}"
            );
        }
        println!("lintian: {} tag(s), all explained", tags.len());
    }

    // Install: not enabled until the administrator asks.
    must("dpkg", &["-i", &v1]);
    assert!(installed());
    assert!(!Path::new("/etc/apache2/mods-enabled/procd.load").exists(), "a fresh install enabled the module");
    must("a2enmod", &["procd"]);
    let (ok, text) = run("apache2ctl", &["configtest"]);
    assert!(ok && text.contains("Syntax OK"), "apache2ctl configtest with the module enabled:\n{text}");

    // Serve through a group from an Apache of our own that loads the
    // installed module through the enabled files.
    ensure_user("procd-test-a");
    let conf = "LanguageGroup pool language=python user=procd-test-a processes=2 threads=2 app=@DIR@/pool_app.py\nLanguageMount /app pool\n";
    let mut a = Apache::new("deb", Mpm::Event, conf);
    a.set_module_conf(
        "Include /etc/apache2/mods-enabled/procd.load\nInclude /etc/apache2/mods-enabled/procd.conf\nProcdRuntimeDir @DIR@/run/procd",
    );
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/pool_app.py"), a.dir.join("pool_app.py"))
        .expect("copy the app");
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    if !wait_until(Duration::from_secs(10), || a.get("/app/pid").status == 200) {
        a.fail("the installed module does not serve the group");
    }
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", a.master.unwrap_or(0))).unwrap_or_default();
    if !maps.contains("/usr/lib/apache2/modules/mod_procd.so") {
        a.fail("the test Apache did not load the installed module");
    }

    // Upgrade under a bounded stream of requests, then a graceful restart
    // (what the package's postinst asks of the system service).
    let stop = Arc::new(AtomicBool::new(false));
    let port = a.port;
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0usize, Vec::new());
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match http_get(port, "/app/pid") {
                        Ok(r) if r.status == 200 => ok += 1,
                        Ok(r) => failed.push(format!("status {}", r.status)),
                        Err(e) => failed.push(e),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let upgrade = must("dpkg", &["-i", &v2]);
    a.graceful();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let (mut answered, mut failed) = (0, Vec::new());
    for c in clients {
        let (ok, f) = c.join().expect("client");
        answered += ok;
        failed.extend(f);
    }
    println!("upgrade under load: {answered} answers, {} failed", failed.len());
    if !failed.is_empty() {
        a.fail(&format!("{} failed requests during the upgrade, e.g. {:?}\n{upgrade}", failed.len(), &failed[..1]));
    }
    if !run("dpkg-query", &["-W", "-f", "${Version}", PACKAGE]).1.contains("0.1.0+test2") {
        a.fail("the upgrade did not install the new version");
    }
    if a.get("/app/pid").status != 200 {
        a.fail("no answer after the upgrade's graceful restart");
    }
    a.stop();

    // Remove: disabled, the conffiles stay; purge: nothing left.
    must("dpkg", &["-r", PACKAGE]);
    assert!(!Path::new("/etc/apache2/mods-enabled/procd.load").exists(), "remove left the module enabled");
    assert!(!Path::new("/usr/lib/apache2/modules/mod_procd.so").exists(), "remove left the .so");
    must("dpkg", &["--purge", PACKAGE]);
    assert!(traces().is_empty(), "left after purge: {:?}", traces());
    let (ok, text) = run("apache2ctl", &["configtest"]);
    assert!(ok, "the system configuration after purge:\n{text}");
    let _ = std::fs::remove_dir_all(&out);
}
