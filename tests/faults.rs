//! Faults while requests are in flight, as the HTTP client sees them
//! (README: the failures table, "Supervision", "The process manager"):
//! a worker SIGKILLed before its headers (502) and after them (a cut
//! response, PD0305), the manager SIGKILLed (its workers die with it, the
//! requests they held fail at once, and the group serves again), and a
//! client that goes away in the middle of an upload or a download (the
//! application sees it; no process or descriptor is left over).
//! The worker and manager kills run under every MPM (the Apache child that
//! holds the request differs); the client's disconnects under event.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// An Apache (event MPM) with WSGI group `one` (tests/apps/wsgi_app.py) at /one.
fn start(name: &str, opts: &str) -> Apache {
    start_mpm(name, Mpm::Event, opts)
}

/// `start` under `mpm`.
fn start_mpm(name: &str, mpm: Mpm, opts: &str) -> Apache {
    ensure_user("procd-test-a");
    let conf = format!(
        "LanguageGroup one language=python user=procd-test-a app=@DIR@/wsgi_app.py {opts}\nLanguageMount /one one\n"
    );
    let mut a = Apache::new(name, mpm, &conf);
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/wsgi_app.py"), a.dir.join("wsgi_app.py")).unwrap();
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    if !wait_until(Duration::from_secs(10), || a.get("/one/whoami").status == 200) {
        a.fail("group one does not answer");
    }
    a
}

fn kill9(pid: i32) {
    std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
}

/// The pid of the worker that answers /one/whoami (processes=1: the only one).
fn worker_pid(a: &Apache) -> i32 {
    let r = a.get("/one/whoami");
    field(&r.text(), "pid").parse().unwrap_or_else(|_| a.fail(&format!("whoami: {} {:?}", r.status, r.text())))
}

fn open_request(port: u16, raw: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    s
}

/// Reads until EOF (or an error): the bytes, and when the read ended.
fn read_all(s: &mut TcpStream) -> (Vec<u8>, Instant) {
    let (mut got, mut buf) = (Vec::new(), [0u8; 65536]);
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (got, Instant::now())
}

#[test]
fn a_worker_killed_before_its_headers_is_a_502_event() {
    a_worker_killed_before_its_headers_is_a_502_under(Mpm::Event);
}

#[test]
fn a_worker_killed_before_its_headers_is_a_502_worker() {
    a_worker_killed_before_its_headers_is_a_502_under(Mpm::Worker);
}

#[test]
fn a_worker_killed_before_its_headers_is_a_502_prefork() {
    a_worker_killed_before_its_headers_is_a_502_under(Mpm::Prefork);
}

fn a_worker_killed_before_its_headers_is_a_502_under(mpm: Mpm) {
    let a = start_mpm(&format!("fault-before-{mpm:?}"), mpm, "processes=1 threads=1");
    let pid = worker_pid(&a);
    let mut s = open_request(a.port, "GET /one/sleep?s=5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    kill9(pid);
    let (got, ended) = read_all(&mut s);
    let text = String::from_utf8_lossy(&got);
    let took = ended - killed;
    eprintln!("502 {} ms after the kill", took.as_millis());
    if !text.starts_with("HTTP/1.1 502") || took > Duration::from_secs(2) {
        a.fail(&format!("after the worker was killed, {took:?}: {text:?}"));
    }
    let line = format!("worker pid {pid} was killed by signal SIGKILL");
    if !wait_until(Duration::from_secs(3), || a.error_log().lines().any(|l| l.contains("PD0304") && l.contains(&line)))
    {
        a.fail(&format!("no PD0304 line saying {line:?}"));
    }
    if !wait_until(Duration::from_secs(5), || worker_pid(&a) != pid) {
        a.fail("the killed worker was not replaced");
    }
}

#[test]
fn a_worker_killed_after_its_headers_cuts_the_response_event() {
    a_worker_killed_after_its_headers_cuts_the_response_under(Mpm::Event);
}

#[test]
fn a_worker_killed_after_its_headers_cuts_the_response_worker() {
    a_worker_killed_after_its_headers_cuts_the_response_under(Mpm::Worker);
}

#[test]
fn a_worker_killed_after_its_headers_cuts_the_response_prefork() {
    a_worker_killed_after_its_headers_cuts_the_response_under(Mpm::Prefork);
}

fn a_worker_killed_after_its_headers_cuts_the_response_under(mpm: Mpm) {
    let a = start_mpm(&format!("fault-after-{mpm:?}"), mpm, "processes=1 threads=1");
    let pid = worker_pid(&a);
    // An endless stream of 64 KiB blocks: the headers and some body are out.
    let mut s = open_request(a.port, "GET /one/forever HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut head = vec![0u8; 128 * 1024];
    s.read_exact(&mut head).unwrap();
    let killed = Instant::now();
    kill9(pid);
    let (rest, ended) = read_all(&mut s);
    let took = ended - killed;
    let mut got = head;
    got.extend_from_slice(&rest);
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| a.fail("no HTTP head"));
    let head = String::from_utf8_lossy(&got[..split]).into_owned();
    eprintln!("cut {} ms after the kill, {} bytes in all", took.as_millis(), got.len());
    if !head.starts_with("HTTP/1.1 200") || !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        a.fail(&format!("expected a chunked 200: {head}"));
    }
    // The client can tell: the chunked body never ends properly.
    if dechunk(&got[split + 4..]).is_some() || took > Duration::from_secs(2) {
        a.fail(&format!("the response ended like a complete one, {took:?} after the kill"));
    }
    let line = format!("worker pid {pid} was killed by signal SIGKILL");
    if !wait_until(Duration::from_secs(3), || a.error_log().lines().any(|l| l.contains("PD0305") && l.contains(&line)))
    {
        a.fail(&format!("no PD0305 line saying {line:?}"));
    }
    if !wait_until(Duration::from_secs(5), || worker_pid(&a) != pid) {
        a.fail("the killed worker was not replaced");
    }
}

#[test]
fn a_killed_manager_fails_requests_in_flight_at_once_and_serving_resumes_event() {
    a_killed_manager_fails_requests_in_flight_at_once_and_serving_resumes_under(Mpm::Event);
}

#[test]
fn a_killed_manager_fails_requests_in_flight_at_once_and_serving_resumes_worker() {
    a_killed_manager_fails_requests_in_flight_at_once_and_serving_resumes_under(Mpm::Worker);
}

#[test]
fn a_killed_manager_fails_requests_in_flight_at_once_and_serving_resumes_prefork() {
    a_killed_manager_fails_requests_in_flight_at_once_and_serving_resumes_under(Mpm::Prefork);
}

fn a_killed_manager_fails_requests_in_flight_at_once_and_serving_resumes_under(mpm: Mpm) {
    let mut a = start_mpm(&format!("fault-manager-{mpm:?}"), mpm, "processes=2 threads=2");
    let master = a.master.unwrap();
    let manager = a.manager();
    let workers = children(manager);
    // Requests in flight on the workers (they die with the manager).
    let port = a.port;
    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = open_request(port, "GET /one/sleep?s=4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let (got, ended) = read_all(&mut s);
                (String::from_utf8_lossy(&got).into_owned(), ended)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let killed_epoch = now_epoch();
    let killed = Instant::now();
    sigkill(manager);
    let mut new_manager = None;
    if !wait_until(Duration::from_secs(3), || {
        new_manager = manager_of(master).filter(|m| *m != manager);
        new_manager.is_some()
    }) {
        a.fail("no new manager within 3 s");
    }
    // The httpd parent's PD0102 line has the time it started the new one.
    let restarted = first_line_after(&a.error_log(), "PD0102: the process manager", killed_epoch)
        .unwrap_or_else(|| a.fail("no PD0102 line about the manager's death"));
    let manager_after = Duration::from_secs_f64((restarted - killed_epoch).max(0.0));
    // Requests are served again (by the new manager's workers).
    let mut last = String::new();
    if !wait_until(Duration::from_secs(5), || {
        let r = a.get("/one/whoami");
        last = format!("{} {}", r.status, r.text());
        r.status == 200
    }) {
        a.fail(&format!("not served again 5 s after the manager was killed: {last}"));
    }
    let served_after = killed.elapsed();
    for t in in_flight {
        let (text, ended) = t.join().unwrap();
        let took = ended - killed;
        if !text.starts_with("HTTP/1.1 502") || took > Duration::from_secs(2) {
            a.fail(&format!("a request in flight on a worker of the killed manager: {took:?}: {text:?}"));
        }
    }
    eprintln!(
        "manager killed: a new one after {} ms, requests served again after {} ms",
        manager_after.as_millis(),
        served_after.as_millis()
    );
    if workers.iter().any(|w| pid_alive(*w)) {
        a.fail("workers of the killed manager are alive");
    }
    // README: a new manager 1-2 ms after kill -9 by httpd's PD0102 line
    // (measured), tested under 0.1 s; 0.9 s when the httpd parent looked
    // once a second.
    if manager_after > Duration::from_millis(100) {
        a.fail(&format!("the new manager took {manager_after:?} (bound 100 ms)"));
    }
    // README: the groups serving again within 3 s.
    if served_after > Duration::from_secs(3) {
        a.fail(&format!("served again only after {served_after:?}"));
    }
    a.stop();
}

/// Descriptor counts of the manager, its workers and Apache's children.
fn fds(a: &Apache) -> BTreeMap<i32, usize> {
    let master = a.master.unwrap();
    let manager = a.manager();
    let mut pids = children(master);
    pids.extend(children(manager));
    pids.into_iter().map(|p| (p, fd_count(p))).collect()
}

/// Every process of `before` is still there with no more descriptors, and
/// no process was added under the manager.
fn no_leaks(a: &Apache, before: &BTreeMap<i32, usize>, what: &str) {
    let manager = a.manager();
    let workers_before: Vec<i32> = before.keys().copied().filter(|p| children(manager).contains(p)).collect();
    let mut now = BTreeMap::new();
    let settled = wait_until(Duration::from_secs(5), || {
        now = fds(a);
        before.iter().all(|(p, n)| now.get(p).is_some_and(|m| m <= n))
    });
    if !settled {
        a.fail(&format!("{what}: descriptors or processes changed: before {before:?}, after {now:?}"));
    }
    if children(manager).len() != workers_before.len() {
        a.fail(&format!("{what}: workers before {workers_before:?}, now {:?}", children(manager)));
    }
}

#[test]
fn a_client_that_goes_away_mid_upload_or_mid_download_leaks_nothing() {
    let a = start("fault-client", "processes=1 threads=2");
    let worker = worker_pid(&a);
    std::thread::sleep(Duration::from_millis(300));
    let before = fds(&a);

    // Mid-upload: 1 MiB of a declared 10 MiB, then the client is gone.
    {
        let mut s = open_request(
            a.port,
            "POST /one/upload-watch HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\nConnection: close\r\n\r\n",
        );
        for _ in 0..16 {
            s.write_all(&[b'u'; 64 << 10]).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut line = String::new();
    if !wait_until(Duration::from_secs(5), || {
        line = a.error_log().lines().find(|l| l.contains("upload-watch:")).unwrap_or_default().to_string();
        !line.is_empty()
    }) {
        a.fail("the application never finished reading the upload the client abandoned");
    }
    let got: u64 = line
        .split("upload-watch: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    eprintln!("mid-upload: {line}");
    if line.contains("the end of the body") || got >= 10 << 20 || got > 1 << 20 {
        a.fail(&format!("the application did not see the client go: {line}"));
    }
    no_leaks(&a, &before, "after an abandoned upload");

    // Mid-download: 256 KiB of an endless body, then the client is gone.
    {
        let mut s = open_request(a.port, "GET /one/forever HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut buf = vec![0u8; 256 * 1024];
        s.read_exact(&mut buf).unwrap();
    }
    if !wait_until(Duration::from_secs(5), || a.error_log().contains("forever: closed after")) {
        a.fail("the application's close() did not run after the client left mid-download");
    }
    no_leaks(&a, &before, "after an abandoned download");
    if worker_pid(&a) != worker {
        a.fail("the worker was replaced: a client going away should cost nothing");
    }
}
