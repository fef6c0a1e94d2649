//! Any HTTP program through Apache (`language=http`, here Node.js on fd 3):
//! requests and bodies both ways, streaming, end-to-end 100-continue,
//! X-Forwarded-*, hop-by-hop headers, keep-alive to the program, hostile
//! programs, timeouts and crashes, five graceful restarts under a stream of
//! requests, and WebSockets: 10,000 messages across a graceful restart, a
//! slow WebSocket client beside other requests, every MPM.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODE: &str = "/usr/bin/node";
const APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/node/app.js");
const HOSTILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workers/http_hostile.py");

fn node_conf(opts: &str) -> String {
    format!(
        "LanguageGroup node language=http command=\"{NODE} @DIR@/app.js\" processes=2 user=procd-test-a {opts}\n\
         LanguageMount /node node\n"
    )
}

fn start(name: &str, mpm: Mpm, conf: &str) -> Apache {
    assert!(std::path::Path::new(NODE).exists(), "node is needed: apt-get install nodejs");
    ensure_user("procd-test-a");
    let mut a = Apache::new(name, mpm, conf);
    std::fs::copy(APP, a.dir.join("app.js")).unwrap();
    std::fs::copy(HOSTILE, a.dir.join("http_hostile.py")).unwrap();
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    a
}

fn wait_ok(a: &Apache, path: &str) {
    if !wait_until(Duration::from_secs(15), || a.get(path).status == 200) {
        a.fail(&format!("{path} does not answer 200"));
    }
}

fn header<'a>(r: &'a Response, name: &str) -> Vec<&'a str> {
    r.head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

fn raw(a: &Apache, bytes: &[u8]) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| a.fail("no HTTP head"));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut body = buf[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body).unwrap_or_else(|| a.fail("cut chunked body"));
    }
    Response { status, head, body }
}

#[test]
fn requests_bodies_and_headers() {
    let a = start("http-basics", Mpm::Event, &node_conf(""));
    wait_ok(&a, "/node/hello");

    // The URL as the client sent it, X-Forwarded-*, the launch contract.
    let r = a.request(&format!(
        "GET /node/env?x=1&y=a%20b HTTP/1.1\r\nHost: shop.example:{}\r\nX-Forwarded-For: 10.9.9.9\r\n\
         Connection: close, X-Hop\r\nX-Hop: secret\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\n\r\n",
        a.port
    ));
    let body = r.text();
    if r.status != 200 {
        a.fail(&format!("env: {} {body}", r.status));
    }
    let expect = [
        ("url", "/node/env?x=1&y=a%20b".to_string()),
        ("method", "GET".into()),
        ("x-forwarded-for", "10.9.9.9, 127.0.0.1".into()),
        ("x-forwarded-host", format!("shop.example:{}", a.port)),
        ("x-forwarded-proto", "http".into()),
        ("x-forwarded-prefix", "/node".into()),
        ("forwarded", format!("for=127.0.0.1;host=\"shop.example:{}\";proto=http", a.port)),
        ("host", format!("shop.example:{}", a.port)),
        ("PROCD_PROTOCOL", "http".into()),
        ("LISTEN_FDS", "1".into()),
        ("USER", "procd-test-a".into()),
    ];
    for (k, v) in expect {
        if json_field(&body, k).unwrap_or_default() != v {
            a.fail(&format!("{k} = {:?}, expected {v:?} in {body}", json_field(&body, k).unwrap_or_default()));
        }
    }
    for hop in ["x-hop", "te", "proxy-authorization", "connection\":\"close"] {
        if body.contains(&format!("\"{hop}")) {
            a.fail(&format!("hop-by-hop {hop} reached the program: {body}"));
        }
    }
    if !json_field(&body, "PROCD_SOCKET").unwrap_or_default().contains("/generations/node.") {
        a.fail(&format!("PROCD_SOCKET: {body}"));
    }

    // POST form.
    let r = a.request(
        "POST /node/env HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\nConnection: close\r\n\r\na=1&b=2",
    );
    if json_field(&r.text(), "body").unwrap_or_default() != "a=1&b=2"
        || json_field(&r.text(), "content-length").unwrap_or_default() != "7"
    {
        a.fail(&format!("form: {}", r.text()));
    }

    // Binary upload, 1 MiB, sha256 echoed.
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut req = format!(
        "POST /node/sha256 HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        data.len()
    )
    .into_bytes();
    req.extend_from_slice(&data);
    let r = raw(&a, &req);
    if r.text().trim() != format!("{} {}", sha256_hex(&data), data.len()) {
        a.fail(&format!("upload: {} {}", r.status, r.text()));
    }

    // Chunked request body: re-chunked to the program.
    let r = a.request(
        "POST /node/env HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
    );
    if json_field(&r.text(), "body").unwrap_or_default() != "abcdefg"
        || json_field(&r.text(), "transfer-encoding").unwrap_or_default() != "chunked"
    {
        a.fail(&format!("chunked body: {}", r.text()));
    }

    // Streaming: the first chunk long before the last.
    let mut c = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    let started = Instant::now();
    c.write_all(b"GET /node/stream?gap=1500 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let (all, first) = read_until_closed(&mut c, started, "first");
    let total = started.elapsed();
    if !all.contains("last")
        || first.is_none_or(|t| t > Duration::from_millis(1000))
        || total < Duration::from_millis(1400)
    {
        a.fail(&format!("streaming: first after {first:?}, all after {total:?}: {all}"));
    }

    // Redirect under the mount, cookies kept apart, HEAD, 404.
    let r = a.get("/node/redirect");
    if r.status != 302 || header(&r, "Location") != ["/node/hello"] {
        a.fail(&format!("redirect: {}", r.head));
    }
    let r = a.get("/node/cookies");
    if header(&r, "Set-Cookie") != ["a=1; Path=/", "b=2, with comma; Path=/; HttpOnly"] {
        a.fail(&format!("cookies: {}", r.head));
    }
    let r = a.request("HEAD /node/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if r.status != 200 || !r.body.is_empty() || header(&r, "Content-Length") != ["14"] {
        a.fail(&format!("HEAD: {} {:?}", r.head, r.text()));
    }
    let r = a.get("/node/nope");
    if r.status != 404 || !r.text().contains("no route for /nope") {
        a.fail(&format!("404: {} {}", r.status, r.text()));
    }

    // The app's own 500, its stack in the log; stderr in the log.
    let r = a.get("/node/throw");
    if r.status != 500 || !r.text().contains("the app caught an exception") || r.text().contains("deliberate") {
        a.fail(&format!("exception: {} {}", r.status, r.text()));
    }
    a.get("/node/stderr?m=xyzzy");
    if !wait_until(Duration::from_secs(5), || {
        let log = a.error_log();
        log.contains("stderr-marker-xyzzy") && log.contains("deliberate failure for the test")
    }) {
        a.fail("the program's stderr is not in the group's log");
    }

    // Hop-by-hop headers of the answer are dropped.
    let r = a.get("/node/hop");
    for hop in ["X-Secret", "Keep-Alive", "Proxy-Authenticate", "Upgrade"] {
        if !header(&r, hop).is_empty() {
            a.fail(&format!("{hop} reached the client: {}", r.head));
        }
    }
    if header(&r, "X-Kept") != ["yes"] {
        a.fail(&format!("X-Kept lost: {}", r.head));
    }

    // Keep-alive to the program: sequential requests share connections.
    let mut conns = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let r = a.get("/node/whoami");
        let text = r.text();
        let conn = text.split_whitespace().find_map(|w| w.strip_prefix("conn=")).unwrap_or("").to_string();
        let pid = text.split_whitespace().find_map(|w| w.strip_prefix("pid=")).unwrap_or("").to_string();
        conns.insert(format!("{pid}/{conn}"));
    }
    if conns.len() > 4 {
        a.fail(&format!("20 sequential requests used {} connections: {conns:?}", conns.len()));
    }
}

#[test]
fn continue_is_end_to_end() {
    let a = start("http-continue", Mpm::Event, &node_conf(""));
    wait_ok(&a, "/node/hello");
    // The program reads: Apache says 100 Continue, then the answer.
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /node/sha256 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).to_string();
    if !first.starts_with("HTTP/1.1 100 Continue") {
        a.fail(&format!("no 100 Continue before the body: {first:?}"));
    }
    s.write_all(b"hello").unwrap();
    let (rest, _) = read_until_closed(&mut s, Instant::now(), "x");
    if !rest.contains(&sha256_hex(b"hello")) {
        a.fail(&format!("after 100 Continue: {rest}"));
    }
    // The program refuses without reading: no 100 Continue at all.
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /node/sha256?refuse=1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let (all, _) = read_until_closed(&mut s, Instant::now(), "x");
    if all.contains("100 Continue") || !all.starts_with("HTTP/1.1 413") {
        a.fail(&format!("refused upload: {all}"));
    }
}

#[test]
fn failures_get_proper_statuses() {
    let conf = format!(
        "{}LanguageGroup bad language=http command=\"/usr/bin/python3 @DIR@/http_hostile.py\" processes=1 user=procd-test-a request-timeout=2\n\
         LanguageMount /bad bad\n\
         LanguageGroup stuck language=http command=\"/bin/sleep 1000\" processes=1 user=procd-test-a queue-timeout=1\n\
         LanguageMount /stuck stuck\n",
        node_conf("request-timeout=2")
    );
    let a = start("http-failures", Mpm::Event, &conf);
    wait_ok(&a, "/node/hello");
    if !wait_until(Duration::from_secs(10), || a.get("/bad/nothing-here").status == 404) {
        a.fail("the hostile program does not answer");
    }
    for path in ["cl-te", "two-cl", "bad-te", "101", "bighead", "cr", "badstatus", "nothing"] {
        let r = a.get(&format!("/bad/{path}"));
        if r.status != 502 {
            a.fail(&format!("/bad/{path}: {} (expected 502) {}", r.status, r.text()));
        }
    }
    // A body shorter than its Content-Length, or badly chunked: cut.
    for path in ["short", "badchunk"] {
        let r = http_get(a.port, &format!("/bad/{path}"));
        if r.as_ref().is_ok_and(|r| r.status == 200 && !r.text().is_empty() && !r.text().contains("only this")) {
            a.fail(&format!("/bad/{path} was not cut: {r:?}"));
        }
    }
    let r = a.get("/bad/dribble");
    if r.status != 200 || header(&r, "X-Dribble") != ["yes"] || r.text() != "dribbled\n" {
        a.fail(&format!("a head sent a byte at a time: {} {} {:?}", r.status, r.head, r.text()));
    }
    let r = a.get("/bad/close");
    if r.status != 200 || r.text() != "until close\n" {
        a.fail(&format!("close-delimited: {} {:?}", r.status, r.text()));
    }
    // request-timeout: 504; a program that never accepts: 503 + Retry-After.
    let t = Instant::now();
    let r = a.get("/bad/silent");
    if r.status != 504 || t.elapsed() > Duration::from_secs(8) {
        a.fail(&format!("silent program: {} after {:?}", r.status, t.elapsed()));
    }
    let r = a.get("/node/slow?ms=5000");
    if r.status != 504 {
        a.fail(&format!("slow node: {}", r.status));
    }
    let r = a.get("/stuck/x");
    if r.status != 503 || header(&r, "Retry-After").is_empty() {
        a.fail(&format!("a program that never accepts: {} {}", r.status, r.head));
    }
    // The program dies mid-request: 502, or a cut response after the head.
    let r = a.get("/node/crash");
    if r.status != 502 {
        a.fail(&format!("crash: {}", r.status));
    }
    wait_ok(&a, "/node/hello");
    let r = http_get(a.port, "/node/crash?after=head");
    if r.as_ref().is_ok_and(|r| r.status == 200 && r.text() == "partial\n") && r.is_ok() {
        // A cut chunked body reads as an error in http_get; a clean one is wrong.
        a.fail(&format!("a crash after the head was not cut: {r:?}"));
    }
    let log = a.error_log();
    for needle in ["PD0304", "both Transfer-Encoding and Content-Length", "request-timeout", "queue-timeout"] {
        if !log.contains(needle) {
            a.fail(&format!("no {needle:?} in the error log"));
        }
    }
}

#[test]
fn five_gracefuls_under_a_stream_of_requests() {
    let mut a = start("http-graceful", Mpm::Event, &node_conf("graceful-timeout=10"));
    wait_ok(&a, "/node/whoami");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let gens = Arc::new(Mutex::new(std::collections::BTreeSet::<String>::new()));
    let port = a.port;
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (stop, ok, failures, gens) = (stop.clone(), ok.clone(), failures.clone(), gens.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && n < 100_000 {
                    n += 1;
                    let path = if i % 2 == 0 { "/node/whoami" } else { "/node/stream?gap=20" };
                    match http_get(port, path) {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                            let t = r.text();
                            if let Some(g) = t.split_whitespace().find_map(|w| w.strip_prefix("gen=")) {
                                gens.lock().unwrap().insert(g.to_string());
                            }
                        }
                        Ok(r) => failures.lock().unwrap().push(format!("{path}: {} {}", r.status, r.text())),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                }
            })
        })
        .collect();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(600));
        let before = a.log_count("PD0204: group node");
        a.graceful();
        if !wait_until(Duration::from_secs(15), || a.log_count("PD0204: group node") > before) {
            a.fail("no new generation of node after graceful");
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    if !failures.is_empty() {
        a.fail(&format!(
            "{} of {} requests failed: {:?}",
            failures.len(),
            ok.load(Ordering::SeqCst),
            &failures[..failures.len().min(10)]
        ));
    }
    if gens.lock().unwrap().len() < 4 {
        a.fail(&format!("answers came from generations {:?} only", gens.lock().unwrap()));
    }
}

#[test]
fn websocket_survives_a_graceful_restart_and_slow_clients_block_nothing() {
    let a = start("http-ws", Mpm::Event, &node_conf("graceful-timeout=60"));
    wait_ok(&a, "/node/hello");
    let mut ws = Ws::connect(a.port, "/node/ws").unwrap_or_else(|e| a.fail(&e));
    let old_pid = ws.head.lines().find_map(|l| l.strip_prefix("X-Pid: ")).unwrap_or("").to_string();
    // A large message (64-bit length) and a ping.
    let big = vec![0xa5u8; 200_000];
    ws.send(0x2, &big).unwrap();
    if ws.recv().map(|(o, p)| o == 2 && p == big) != Ok(true) {
        a.fail("the 200 kB message did not come back whole");
    }
    ws.send(0x9, b"ping").unwrap();
    if ws.recv() != Ok((0xA, b"ping".to_vec())) {
        a.fail("no pong");
    }
    // A slow client: connected, reads nothing, sends half a frame.
    let mut slow = Ws::connect(a.port, "/node/ws").unwrap_or_else(|e| a.fail(&e));
    slow.s.write_all(&[0x81, 0x85, 1, 2]).unwrap();
    let before = a.log_count("PD0204: group node");
    let apache_before = a.generations();
    let mut graceful: Option<std::thread::JoinHandle<bool>> = None;
    for i in 0..10_000 {
        if i == 1000 {
            // apache2 -k graceful beside the exchange (Apache::graceful
            // needs the harness mutably).
            let conf = a.conf.clone();
            graceful = Some(std::thread::spawn(move || {
                std::process::Command::new(APACHE)
                    .arg("-f")
                    .arg(&conf)
                    .args(["-k", "graceful"])
                    .env("LANG", "C")
                    .status()
                    .is_ok_and(|s| s.success())
            }));
        }
        if i == 3000 {
            // Past here, every message crosses the restarted Apache and
            // the new generation of the group.
            if !graceful.take().is_some_and(|g| g.join().unwrap_or(false)) {
                a.fail("apache2 -k graceful failed");
            }
            if !wait_until(Duration::from_secs(15), || {
                a.generations() > apache_before && a.log_count("PD0204: group node") > before
            }) {
                a.fail("no new Apache or node generation after graceful");
            }
        }
        ws_echo(&a, &mut ws, i);
    }
    // New requests reach the new generation at once, beside the slow client.
    let t = Instant::now();
    for _ in 0..20 {
        let r = a.get("/node/whoami");
        if r.status != 200 || r.text().contains(&format!("pid={old_pid} ")) {
            a.fail(&format!("after graceful: {} {}", r.status, r.text()));
        }
    }
    if t.elapsed() > Duration::from_secs(5) {
        a.fail(&format!("20 requests beside a slow WebSocket took {:?}", t.elapsed()));
    }
    let mut fresh = Ws::connect(a.port, "/node/ws").unwrap_or_else(|e| a.fail(&e));
    ws_echo(&a, &mut fresh, 1);
    if fresh.head.contains(&format!("X-Pid: {old_pid}\r")) {
        a.fail("a new WebSocket reached the old generation");
    }
    fresh.close().unwrap_or_else(|e| a.fail(&format!("close: {e}")));
    // The old generation drains once its tunnels close.
    ws.close().unwrap_or_else(|e| a.fail(&format!("close after graceful: {e}")));
    drop(slow);
    if !wait_until(Duration::from_secs(15), || a.error_log().contains("has drained and stopped")) {
        a.fail("the old generation did not drain after its WebSockets closed");
    }
}

#[test]
fn websockets_under_worker_and_prefork() {
    for mpm in [Mpm::Worker, Mpm::Prefork] {
        let a = start(&format!("http-ws-{mpm:?}"), mpm, &node_conf(""));
        wait_ok(&a, "/node/hello");
        let mut ws = Ws::connect(a.port, "/node/ws").unwrap_or_else(|e| a.fail(&e));
        for i in 0..500 {
            ws_echo(&a, &mut ws, i);
        }
        // Half-close: the client's close frame, the program's answer.
        ws.close().unwrap_or_else(|e| a.fail(&format!("{mpm:?}: close: {e}")));
        let r = a.get("/node/hello");
        if r.status != 200 {
            a.fail(&format!("{mpm:?}: after the tunnel: {}", r.status));
        }
    }
}
