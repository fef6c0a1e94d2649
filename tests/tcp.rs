//! `listen=tcp` for `language=http` groups (README, "Programs that listen
//! on TCP"): a Node program on the loopback port the manager passes in
//! PORT, with requests, bodies, streaming, 100-continue, a WebSocket, 504
//! and 502 (and the crashed program's replacement on the same port),
//! five graceful restarts under a stream of requests (a new port each
//! time, old programs gone after their drain, no failed request; also
//! under the worker and prefork MPMs), a
//! program that never listens (startup-timeout), a port another user
//! squats (refused, PD0218: no request reaches the squatter), a program
//! that stops listening but runs (PD0219, a prompt 503; another user who
//! then listens there gets nothing), and Debian's
//! Tomcat 10 serving a JSP page under /jsp (skipped, with a message, where
//! Java or tomcat10-common is not installed).

mod common;
use common::*;
use std::collections::BTreeSet;
use std::io::{BufRead, Read};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

const NODE: &str = "/usr/bin/node";
const APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/node/app.js");

fn start(name: &str, conf: &str) -> Apache {
    ensure_user("procd-test-a");
    let mut a = Apache::new(name, Mpm::Event, conf);
    std::fs::copy(APP, a.dir.join("app.js")).unwrap();
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    a
}

fn wait_ok(a: &Apache, path: &str, limit: Duration) {
    if !wait_until(limit, || a.get(path).status == 200) {
        a.fail(&format!("{path} does not answer 200"));
    }
}

/// The ports of `group`'s workers, from their PD0201 lines, in order.
fn ports(a: &Apache, group: &str) -> Vec<u16> {
    a.error_log()
        .lines()
        .filter(|l| l.contains(&format!("PD0201: group {group}:")))
        .filter_map(|l| l.split("PORT=").nth(1)?.trim_end_matches(')').parse().ok())
        .collect()
}

/// The uid of the listener on 127.0.0.1:`port`, from the kernel's table.
fn listener_uid(port: u16) -> Option<u32> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1)? == &format!("0100007F:{port:04X}").as_str() && f.get(3)? == &"0A").then(|| f.get(7)?.parse().ok())?
    })
}

#[test]
fn node_on_a_port_serves_and_switches_ports_at_each_graceful() {
    assert!(std::path::Path::new(NODE).exists(), "node is needed: apt-get install nodejs");
    let mut a = start(
        "tcp-node",
        &format!(
            "LanguageGroup tnode language=http listen=tcp command=\"{NODE} @DIR@/app.js\" user=procd-test-a graceful-timeout=10 \
             request-timeout=3\n\
             LanguageMount /tcp tnode\n\
             <Location /procd-status>\nSetHandler procd-status\nRequire all granted\n</Location>\n"
        ),
    );
    wait_ok(&a, "/tcp/hello", Duration::from_secs(15));

    // The launch contract: PORT, no listening descriptor.
    let r = a.get("/tcp/env");
    let env = r.text();
    let port: u16 = json_field(&env, "PORT").and_then(|p| p.parse().ok()).unwrap_or_else(|| a.fail(&env));
    if json_field(&env, "PROCD_PORT").as_deref() != Some(port.to_string().as_str())
        || env.contains("LISTEN_FDS")
        || env.contains("PROCD_SOCKET")
        || !env.contains("\"x-forwarded-prefix\":\"/tcp\"")
        || !env.contains("\"url\":\"/tcp/env\"")
    {
        a.fail(&format!("the program's view: {env}"));
    }
    if ports(&a, "tnode") != [port] {
        a.fail(&format!("PD0201 says ports {:?}, the program {port}", ports(&a, "tnode")));
    }
    let published = std::fs::read_to_string(a.socket("tnode").with_extension("port")).unwrap_or_default();
    if published.trim() != port.to_string() || listener_uid(port) != Some(uid_of("procd-test-a")) {
        a.fail(&format!("published {published:?}, listener uid {:?}", listener_uid(port)));
    }

    // The status page shows the serving generation's port.
    let status = a.get("/procd-status?json").text();
    if !status.contains(&format!("\"port\": {port}")) {
        a.fail(&format!("procd-status does not show port {port}: {status}"));
    }

    // Bodies both ways: a 2 MB upload (known length), a chunked one, a
    // big streamed answer; streaming; 100-continue end to end.
    let payload: Vec<u8> = (0..2 << 20).map(|i: u32| (i.wrapping_mul(31) >> 5) as u8).collect();
    let r = a.request_bytes(
        &[
            format!(
                "POST /tcp/sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                payload.len()
            )
            .as_bytes(),
            &payload,
        ]
        .concat(),
    );
    if r.text() != format!("{} {}\n", sha256_hex(&payload), payload.len()) {
        a.fail(&format!("upload: {} {}", r.status, r.text()));
    }
    let r = a.request(
        "POST /tcp/sha256 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    if r.text() != format!("{} 11\n", sha256_hex(b"hello world")) {
        a.fail(&format!("chunked upload: {} {}", r.status, r.text()));
    }
    let r = a.get("/tcp/big?n=20000");
    if r.status != 200 || r.body.len() != 20000 * 1024 {
        a.fail(&format!("20 MB answer: {} {} bytes", r.status, r.body.len()));
    }
    first_part_before_the_last(&a, "/tcp/stream?gap=1000", "last");
    refused_without_100_continue(&a, "/tcp/sha256?refuse=1");

    // A WebSocket tunnel over the program's TCP connection.
    let mut ws = Ws::connect(a.port, "/tcp/ws").unwrap_or_else(|e| a.fail(&e));
    for i in 0..200 {
        ws_echo(&a, &mut ws, i);
    }
    ws.close().unwrap_or_else(|e| a.fail(&e));
    // request-timeout: 504. The program dies mid-request: 502, and its
    // replacement serves on the same port, published again once it
    // listens there as the group's user.
    let t = Instant::now();
    let r = a.get("/tcp/slow?ms=8000");
    if r.status != 504 || t.elapsed() > Duration::from_secs(6) {
        a.fail(&format!("slow program: {} after {:?}", r.status, t.elapsed()));
    }
    let r = a.get("/tcp/crash");
    if r.status != 502 {
        a.fail(&format!("crash: {} {}", r.status, r.text()));
    }
    wait_ok(&a, "/tcp/hello", Duration::from_secs(15));
    // (A GET that broke before any answer is tried once more: that try
    // crashes the replacement too, and a third program starts.)
    let replaced = ports(&a, "tnode");
    if replaced.len() < 2 || replaced.iter().any(|p| *p != port) {
        a.fail(&format!("the replacements' ports: {replaced:?}, expected {port} each"));
    }

    // Five gracefuls under a stream of requests: no failure, a new port
    // and a new program each time, the old ones gone after their drain.
    let manager = a.manager();
    let pids: BTreeSet<i32> = five_gracefuls_under_load(&mut a, "tnode", "/tcp")
        .iter()
        .filter_map(|w| w.strip_prefix("pid=")?.parse().ok())
        .collect();
    let all_ports = ports(&a, "tnode");
    eprintln!("answers from {} programs on ports {all_ports:?}", pids.len());
    let distinct: BTreeSet<u16> = all_ports.iter().copied().collect();
    if all_ports.len() != replaced.len() + 5 || distinct.len() != 6 || pids.len() < 5 {
        a.fail(&format!("answers from pids {pids:?}; ports {all_ports:?}: expected 6 distinct"));
    }
    let newest = *all_ports.last().unwrap_or(&0);
    let published = std::fs::read_to_string(a.socket("tnode").with_extension("port")).unwrap_or_default();
    if published.trim() != newest.to_string() {
        a.fail(&format!("the port file says {published:?}, the newest generation listens on {newest}"));
    }
    if !wait_until(Duration::from_secs(15), || a.log_count("PD0206: group tnode: generation") == 5) {
        a.fail("the five old generations did not all drain");
    }
    if !wait_until(Duration::from_secs(5), || children(manager).len() == 1) {
        a.fail(&format!("expected one program, found {:?}", children(manager)));
    }
    let current = children(manager);
    let lingering: Vec<i32> = pids.iter().copied().filter(|p| !current.contains(p) && pid_alive(*p)).collect();
    if !lingering.is_empty() {
        a.fail(&format!("programs of old generations still alive: {lingering:?}"));
    }
    for old in distinct.iter().filter(|p| **p != newest) {
        if listener_uid(*old).is_some() {
            a.fail(&format!("old port {old} is still listened on"));
        }
    }
    if a.log_count("PD0207") > 0 || a.log_count("PD0205") > 0 || a.log_count("PD0218") > 0 {
        a.fail("a generation was signalled (PD0207), failed (PD0205) or refused (PD0218)");
    }
    a.stop();
    if a.socket("tnode").with_extension("port").exists() {
        panic!("the port file outlived the manager");
    }
}

/// The same under the worker and prefork MPMs: requests (kept-alive
/// connections in each child) and a graceful restart to a new port.
#[test]
fn node_on_a_port_under_worker_and_prefork() {
    for mpm in [Mpm::Worker, Mpm::Prefork] {
        ensure_user("procd-test-a");
        let mut a = Apache::new(
            &format!("tcp-{mpm:?}"),
            mpm,
            &format!(
                "LanguageGroup tnode language=http listen=tcp command=\"{NODE} @DIR@/app.js\" user=procd-test-a\n\
                 LanguageMount /tcp tnode\n"
            ),
        );
        std::fs::copy(APP, a.dir.join("app.js")).unwrap();
        let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
        a.start();
        wait_ok(&a, "/tcp/hello", Duration::from_secs(15));
        for _ in 0..50 {
            let r = a.get("/tcp/whoami");
            if r.status != 200 {
                a.fail(&format!("{mpm:?}: {} {}", r.status, r.text()));
            }
        }
        let first = a.get("/tcp/env").text();
        a.graceful();
        if !wait_until(Duration::from_secs(15), || a.log_count("PD0204: group tnode") == 2) {
            a.fail(&format!("{mpm:?}: no second generation"));
        }
        let second = a.get("/tcp/env").text();
        if json_field(&first, "PORT").is_none() || json_field(&first, "PORT") == json_field(&second, "PORT") {
            a.fail(&format!("{mpm:?}: the port did not change: {first} / {second}"));
        }
        a.stop();
    }
}

/// (It says READY on fd 4 first: on a port that counts for nothing, only
/// the port checks make a program ready.)
#[test]
fn a_program_that_never_listens_fails_at_startup_timeout() {
    let mut a = Apache::new(
        "tcp-never",
        Mpm::Event,
        "LanguageGroup never language=http listen=tcp command=\"/bin/sh @DIR@/never.sh\" user=procd-test-a \
         startup-timeout=2 queue-timeout=2\nLanguageMount /never never\n",
    );
    ensure_user("procd-test-a");
    std::fs::write(a.dir.join("never.sh"), "echo READY >&4\nexec sleep 1000\n").unwrap();
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    if !wait_until(Duration::from_secs(10), || a.log_count("PD0203: group never") >= 1) {
        a.fail("no back-off after startup-timeout");
    }
    let log = a.error_log();
    if !log.contains(
        "PD0205: group never: generation 1 failed to start: not every worker became ready within startup-timeout (2 s): nothing accepted connections on 127.0.0.1:",
    ) {
        a.fail("no PD0205 line naming startup-timeout");
    }
    let t0 = Instant::now();
    let r = a.get("/never/x");
    if r.status != 503 || t0.elapsed() > Duration::from_secs(3) {
        a.fail(&format!("expected a 503 within queue-timeout, got {} after {:?}", r.status, t0.elapsed()));
    }
    if !wait_until(Duration::from_secs(5), || {
        a.error_log().contains("group never is not running: its workers fail to start")
    }) {
        a.fail("the 503's log line does not say the group does not start");
    }
    a.stop();
}

#[test]
fn a_port_another_user_squats_is_refused() {
    ensure_user("procd-test-b");
    let mut a = Apache::new(
        "tcp-squat",
        Mpm::Event,
        "LanguageGroup squat language=http listen=tcp command=\"/bin/sh @DIR@/squat/tell.sh\" user=procd-test-a \
         startup-timeout=5 queue-timeout=2\nLanguageMount /squat squat\n",
    );
    ensure_user("procd-test-a");
    // The group's program binds nothing: it says which port it got and
    // waits, while a process of another user listens there.
    let dir = a.dir.join("squat");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("tell.sh"),
        format!("echo $PORT > {}/port.new\nmv {0}/port.new {0}/port\nexec sleep 1000\n", dir.display()),
    )
    .unwrap();
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    let _ = std::process::Command::new("chown").arg(format!("{}", uid_of("procd-test-a"))).arg(&dir).status();
    a.start();
    let port_file = dir.join("port");
    if !wait_until(Duration::from_secs(10), || port_file.exists()) {
        a.fail("the program did not say its port");
    }
    let port = std::fs::read_to_string(&port_file).unwrap().trim().to_string();
    // The squatter: a listener of procd-test-b that reports every
    // connection it is given.
    let (mut child, mut out) = squat(port.parse().unwrap());
    let refused = format!("PD0218: group squat: generation 1: 127.0.0.1:{port}");
    if !wait_until(Duration::from_secs(5), || a.log_count(&refused) == 1) {
        let _ = child.kill();
        let _ = child.wait();
        a.fail("no PD0218 line for the squatted port");
    }
    let r = a.get("/squat/x");
    let log = a.error_log();
    let _ = child.kill();
    let _ = child.wait();
    let mut seen = String::new();
    let _ = out.read_to_string(&mut seen);
    eprintln!("squatter saw: {seen:?}; request: {}", r.status);
    if !log.contains(&format!(
        "is listened on by procd-test-b (uid {}), not by the group's user procd-test-a",
        uid_of("procd-test-b")
    )) || !log.contains("PD0205: group squat: generation 1 failed to start")
    {
        a.fail("the refusal does not say whose the listener is, or the generation did not fail");
    }
    if r.status != 503 || seen.contains("GOT") {
        a.fail(&format!("a request reached the squatter ({seen:?}) or was not refused: {}", r.status));
    }
    a.stop();
}

/// A listener of procd-test-b on 127.0.0.1:`port` that reports every
/// connection it is given ("GOT ..." on its stdout); returns once it listens.
fn squat(port: u16) -> (std::process::Child, std::io::BufReader<std::process::ChildStdout>) {
    let squatter = "import socket, sys\n\
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
        s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(16)\n\
        print('listening', flush=True)\n\
        while True:\n    c, _ = s.accept(); c.settimeout(1)\n    print('GOT', c.recv(100), flush=True); c.close()\n";
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", squatter, &port.to_string()])
        .uid(uid_of("procd-test-b"))
        .gid(uid_of("procd-test-b"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the squatter");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening", "the squatter could not listen on {port}");
    (child, out)
}

/// A program that serves, then closes its listener and keeps running (a
/// supervisor shell, a stopped Tomcat connector): the manager unpublishes
/// its port within a tick (PD0219), requests get a 503 at once that says
/// why (not a wait for queue-timeout), and a process of another user that
/// then listens on the port gets no connection from Apache: the manager
/// refuses it (PD0218) and starts a new generation on a new port.
#[test]
fn a_program_that_stops_listening_gets_a_prompt_503_and_its_port_no_requests() {
    ensure_user("procd-test-b");
    let program = "import http.server, os, time\n\
        served = 0\n\
        class H(http.server.BaseHTTPRequestHandler):\n\
        \x20   def do_GET(self):\n\
        \x20       global served\n\
        \x20       served += 1\n\
        \x20       body = b'served %d\\n' % served\n\
        \x20       self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n\
        \x20       self.wfile.write(body)\n\
        s = http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H)\n\
        while served < 3:\n\
        \x20   s.handle_request()\n\
        s.server_close()\n\
        print('closed the listener, still running', flush=True)\n\
        time.sleep(1000)\n";
    ensure_user("procd-test-a");
    let mut a = Apache::new(
        "tcp-deaf",
        Mpm::Event,
        "LanguageGroup deaf language=http listen=tcp command=\"/usr/bin/python3 @DIR@/deaf.py\" user=procd-test-a \
         queue-timeout=10 graceful-timeout=2\nLanguageMount /deaf deaf\n",
    );
    std::fs::write(a.dir.join("deaf.py"), program).unwrap();
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    wait_ok(&a, "/deaf/x", Duration::from_secs(15));
    let port = *ports(&a, "deaf").first().unwrap_or_else(|| a.fail("no PORT in PD0201"));
    for _ in 0..2 {
        let r = a.get("/deaf/x");
        if r.status != 200 {
            a.fail(&format!("the program's requests 2 and 3: {} {}", r.status, r.text()));
        }
    }
    // It has closed its listener and sleeps: unpublished, PD0219.
    if !wait_until(Duration::from_secs(5), || a.log_count("PD0219: group deaf: generation 1:") == 1) {
        a.fail("no PD0219 line for the program that stopped listening");
    }
    if a.socket("deaf").with_extension("port").exists() {
        a.fail("the port file is still there");
    }
    let t0 = Instant::now();
    let r = a.get("/deaf/x");
    let took = t0.elapsed();
    if r.status != 503 || took > Duration::from_secs(2) {
        a.fail(&format!("expected a prompt 503, got {} after {took:?}", r.status));
    }
    let log = a.error_log();
    if !log.contains(&format!("runs but nothing listens on 127.0.0.1:{port}, the port in its PORT, any more"))
        || !log.contains("group deaf is not running: its program (worker pid")
    {
        a.fail("the log does not say that the program stopped listening, or the 503's line does not");
    }
    // Another user listens on the port now: refused, and a new
    // generation on a new port serves; the squatter gets nothing.
    let (mut child, mut out) = squat(port);
    let refused = format!("PD0218: group deaf: generation 1: 127.0.0.1:{port}");
    if !wait_until(Duration::from_secs(5), || a.log_count(&refused) == 1) {
        let _ = child.kill();
        let _ = child.wait();
        a.fail("no PD0218 line for the port another user took");
    }
    let statuses: Vec<u16> = (0..3).map(|_| a.get("/deaf/x").status).collect();
    let _ = child.kill();
    let _ = child.wait();
    let mut seen = String::new();
    let _ = out.read_to_string(&mut seen);
    eprintln!("squatter saw: {seen:?}; requests: {statuses:?}");
    if seen.contains("GOT") {
        a.fail(&format!("a request reached the squatter: {seen:?}"));
    }
    let all = ports(&a, "deaf");
    if statuses.iter().any(|s| *s != 200) || all.len() != 2 || all[1] == port {
        a.fail(&format!("after the refusal: {statuses:?}, ports {all:?}"));
    }
    a.stop();
}

const CATALINA: &str = "/usr/share/tomcat10/bin/catalina.sh";
const JAVA: &str = "/usr/bin/java";

/// The demo's Tomcat: conf/server.xml (the connector on 127.0.0.1:$PORT),
/// conf/web.xml and the /jsp webapp, put together by its script.
const JSP_DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/demo-apps/jsp");

#[test]
fn tomcat_serves_a_jsp_page_under_jsp() {
    for (path, package) in [(JAVA, "openjdk-17-jre-headless"), (CATALINA, "tomcat10-common")] {
        if !std::path::Path::new(path).exists() {
            eprintln!(
                "SKIPPED tomcat_serves_a_jsp_page_under_jsp: {path} is not installed (apt-get install {package})"
            );
            return;
        }
    }
    ensure_user("procd-test-a");
    let mut a = Apache::new(
        "tcp-tomcat",
        Mpm::Event,
        &format!(
            "LanguageGroup jsp language=http listen=tcp command=\"{CATALINA} run\" user=procd-test-a \
             home=@DIR@/tomcat startup-timeout=60 graceful-timeout=10 \
             env=CATALINA_BASE=@DIR@/tomcat \
             env=CATALINA_OPTS=-Dorg.apache.tomcat.util.digester.PROPERTY_SOURCE=org.apache.tomcat.util.digester.EnvironmentPropertySource\n\
             LanguageMount /jsp jsp\n"
        ),
    );
    let made = std::process::Command::new("sh")
        .arg(format!("{JSP_DEMO}/make-base.sh"))
        .arg(a.dir.join("tomcat"))
        .arg("procd-test-a")
        .arg(format!("{JSP_DEMO}/webapp"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(made, "make-base.sh failed");
    let _ = std::process::Command::new("chmod").args(["a+rX"]).arg(&a.dir).status();
    let t0 = Instant::now();
    a.start();
    if !wait_until(Duration::from_secs(60), || a.log_count("PD0204: group jsp") == 1) {
        a.fail("Tomcat's generation did not start within 60 s");
    }
    eprintln!("Tomcat serving after {:?}", t0.elapsed());
    let r = a.get("/jsp/index.jsp");
    let text = r.text();
    if r.status != 200
        || !text.contains("6 * 7 = 42")
        || !text.contains("context /jsp, URI /jsp/index.jsp")
        || !text.contains("user procd-test-a")
    {
        a.fail(&format!("the JSP page: {} {text}", r.status));
    }
    // The welcome file through Tomcat's redirect of /jsp to /jsp/.
    let r = a.get("/jsp/");
    if r.status != 200 || !r.text().contains("6 * 7 = 42") {
        a.fail(&format!("/jsp/: {} {}", r.status, r.text()));
    }
    // A graceful restart: a new Tomcat on a new port, the old one drained.
    let manager = a.manager();
    let old = children(manager);
    a.graceful();
    if !wait_until(Duration::from_secs(60), || a.log_count("PD0204: group jsp") == 2) {
        a.fail("no new Tomcat generation after graceful");
    }
    let r = a.get("/jsp/index.jsp");
    if r.status != 200 || !r.text().contains("6 * 7 = 42") {
        a.fail(&format!("after graceful: {} {}", r.status, r.text()));
    }
    if !wait_until(Duration::from_secs(20), || old.iter().all(|p| !pid_alive(*p))) {
        a.fail(&format!("the old Tomcat {old:?} did not drain"));
    }
    let all_ports = ports(&a, "jsp");
    if all_ports.len() != 2 || all_ports[0] == all_ports[1] {
        a.fail(&format!("ports {all_ports:?}"));
    }
    a.stop();
}
