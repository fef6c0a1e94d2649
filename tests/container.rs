//! The container's entry point, run on this host (there is no container
//! engine here): docker/container-start.sh writes the demo (every
//! language, each under its own user, and JSP on Tomcat where installed), runs Apache in the foreground as
//! its child with logs on stdout/stderr, and turns SIGTERM (docker stop)
//! into a graceful stop, exiting 0 with nothing left running.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_image_entry_point_serves_the_demo_and_stops_gracefully() {
    let dir = std::env::temp_dir().join(format!("procd-test-container-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/container-start.sh");
    let stderr = std::fs::File::create(dir.join("stderr.log")).expect("stderr file");
    let stdout = std::fs::File::create(dir.join("stdout.log")).expect("stdout file");
    let mut child = Command::new("bash")
        .arg(script)
        .env("PROCD_DEMO_DIR", dir.join("demo"))
        .env("PROCD_DEMO_PORT", port.to_string())
        .env("PROCD_DEMO_LISTEN", "127.0.0.1")
        .env("PROCD_DEMO_SO", module_path())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("start the entry point");
    let pid = child.id() as i32;
    let log = || std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    let fail = |what: &str, child: &mut std::process::Child| -> ! {
        // Apache and its workers first (they would be reparented away
        // from the entry point once it is gone), then the entry point.
        let left: Vec<i32> = descendants(pid).into_iter().collect();
        let _ = child.kill();
        for p in &left {
            let _ = Command::new("kill").args(["-KILL", &p.to_string()]).status();
        }
        panic!("{what}\n--- stderr ---\n{}", log());
    };
    let pages = [
        ("/hello.txt", "Hello, World!"),
        ("/python/", ""),
        ("/php/", "Hello, world!"),
        ("/ruby/", "Hello from Sinatra"),
        ("/perl/", "Hello from PSGI"),
        ("/cgi/hello.cgi", "Hello from CGI"),
        ("/node/", "Hello from Node.js"),
        ("/legacy/", "href=\"/legacy/about.html\""),
    ];
    // Tomcat (listen=tcp) where it is installed; it takes seconds to start.
    let tomcat = std::path::Path::new("/usr/share/tomcat10/bin/catalina.sh").exists()
        && std::path::Path::new("/usr/bin/java").exists();
    if !tomcat {
        eprintln!("no /jsp page checked: tomcat10-common or Java is not installed");
    }
    let jsp = tomcat.then_some(("/jsp/", "6 * 7 = 42"));
    for (path, want) in pages.into_iter().chain(jsp) {
        let limit = if path == "/jsp/" { 90 } else { 30 };
        let ok = wait_until(Duration::from_secs(limit), || {
            http_get(port, path).is_ok_and(|r| r.status == 200 && r.text().contains(want))
        });
        if !ok {
            let got = http_get(port, path).map(|r| format!("{} {}", r.status, r.text()));
            fail(&format!("{path}: expected 200 with {want:?}, got {got:?}"), &mut child);
        }
    }
    // The demo's users: each application under its own.
    let php = http_get(port, "/php/").map(|r| r.text()).unwrap_or_default();
    let cgi = http_get(port, "/cgi/hello.cgi").map(|r| r.text()).unwrap_or_default();
    if !php.contains("user procd-demo-php") || !cgi.contains("user procd-demo-cgi") {
        fail(&format!("applications do not run as their own users:\n{php}\n{cgi}"), &mut child);
    }
    // Logs: the error log on stderr, the access log on stdout.
    if !log().contains("PD0001") {
        fail("no error log on stderr", &mut child);
    }
    if !std::fs::read_to_string(dir.join("stdout.log")).unwrap_or_default().contains("GET /hello.txt") {
        fail("no access log on stdout", &mut child);
    }
    // docker stop: SIGTERM to PID 1 is a graceful stop.
    let seen: Vec<i32> = descendants(pid).into_iter().collect();
    let t = Instant::now();
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(15) {
            fail("the entry point did not exit 15 s after SIGTERM", &mut child);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("stopped in {} ms, {status}", t.elapsed().as_millis());
    assert!(status.success(), "exit status after SIGTERM: {status}\n{}", log());
    if !log().contains("caught SIGWINCH, shutting down gracefully") {
        panic!("SIGTERM was not a graceful stop:\n{}", log());
    }
    let left = || seen.iter().copied().filter(|p| pid_alive(*p)).collect::<Vec<_>>();
    if !wait_until(Duration::from_secs(5), || left().is_empty()) {
        let l = left();
        for p in &l {
            let _ = Command::new("kill").args(["-KILL", &p.to_string()]).status();
        }
        panic!("left running after the stop: {l:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
