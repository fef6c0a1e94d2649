//! CGI scripts as the group's user (`language=cgi`), through a real Apache:
//! the RFC 3875 environment, request bodies (also chunked), Status and
//! Location (external and local redirects), stderr to the group's log, a
//! runaway script killed at request-timeout with its children, refusals
//! (not executable, ExecCGI off), in sh and in Perl.

mod common;
use common::*;
use std::time::{Duration, Instant};

const USER: &str = "procd-test-b";

const ENV_SH: &str =
    "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nprintf 'user=%s\\n' \"$(id -un)\"\nenv | sort\n";

const BODY_PL: &str = r#"#!/usr/bin/perl
use strict; use warnings; use Digest::SHA qw(sha256_hex);
my $len = $ENV{CONTENT_LENGTH} // 0;
my $got = '';
while (length $got < $len) { my $n = read(STDIN, $got, $len - length $got, length $got); last unless $n; }
print "Content-Type: text/plain\r\n\r\n";
print "length=", length($got), " declared=$len sha256=", sha256_hex($got), "\n";
"#;

const HEADERS_SH: &str = "#!/bin/sh\ncase \"$QUERY_STRING\" in\n  missing) printf 'Status: 404 Nothing Here\\r\\nContent-Type: text/plain\\r\\n\\r\\nno\\n' ;;\n  away) printf 'Location: http://example.invalid/elsewhere\\r\\n\\r\\n' ;;\n  local) printf 'Location: /hello.txt\\r\\n\\r\\n' ;;\n  cookies) printf 'Set-Cookie: a=1\\r\\nSet-Cookie: b=2\\r\\nContent-Type: text/plain\\r\\n\\r\\nok\\n' ;;\n  dribble) for c in X - D r i b b l e : ' ' y e s '\\r' '\\n' '\\r' '\\n'; do printf %b \"$c\"; sleep 0.01; done; echo dribbled ;;\n  *) printf 'Content-Type: text/plain\\r\\n\\r\\nplain\\n' ;;\nesac\necho \"to the log from $QUERY_STRING\" >&2\n";

const RUNAWAY_SH: &str = "#!/bin/sh\nsleep 300 &\necho \"child $!\" >&2\nwhile :; do sleep 1; done\n";

const STREAM_SH: &str = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho first\nsleep 1\necho last\n";

fn start(name: &str) -> Apache {
    start_with(name, "", |_| {})
}

/// `start` with more configuration, and `before` run on the Apache before
/// it starts.
fn start_with(name: &str, extra: &str, before: impl FnOnce(&Apache)) -> Apache {
    start_group(name, "", extra, before)
}

/// `start_with`, with more options on the group's line.
fn start_group(name: &str, options: &str, extra: &str, before: impl FnOnce(&Apache)) -> Apache {
    ensure_user(USER);
    let conf = format!(
        "LanguageGroup scripts language=cgi user={USER} request-timeout=2s {options}\n\
         LanguageHandler scripts .cgi .pl\n\
         <Directory @DIR@/htdocs/cgi>\n  Options +ExecCGI\n</Directory>\n\
         DirectoryIndex index.html\n{extra}"
    );
    let mut a = Apache::new(name, Mpm::Event, &conf);
    let dir = a.dir.join("htdocs/cgi");
    std::fs::create_dir_all(&dir).expect("cgi dir");
    for (file, text, mode) in [
        ("env.cgi", ENV_SH, "755"),
        ("body.pl", BODY_PL, "755"),
        ("headers.cgi", HEADERS_SH, "755"),
        ("runaway.cgi", RUNAWAY_SH, "755"),
        ("stream.cgi", STREAM_SH, "755"),
        ("noexec.cgi", ENV_SH, "644"),
    ] {
        std::fs::write(dir.join(file), text).expect("write script");
        let _ = std::process::Command::new("chmod").arg(mode).arg(dir.join(file)).status();
    }
    std::fs::create_dir_all(a.dir.join("htdocs/plain")).expect("dir");
    std::fs::write(a.dir.join("htdocs/plain/env.cgi"), ENV_SH).expect("write");
    let _ = std::process::Command::new("chmod").arg("755").arg(a.dir.join("htdocs/plain/env.cgi")).status();
    let _ = std::process::Command::new("chmod").arg("a+rX").arg(&a.dir).arg(a.dir.join("htdocs")).status();
    before(&a);
    a.start();
    if !wait_until(Duration::from_secs(10), || a.get("/cgi/env.cgi").status == 200) {
        a.fail("the cgi group does not answer");
    }
    a
}

#[test]
fn scripts_run_as_the_group_user_with_the_cgi_environment() {
    let mut a = start("cgi-env");
    let r = a.get("/cgi/env.cgi/extra/path?x=1&y=%20");
    let text = r.text();
    for want in [
        format!("user={USER}"),
        "GATEWAY_INTERFACE=CGI/1.1".to_string(),
        "REQUEST_METHOD=GET".to_string(),
        "QUERY_STRING=x=1&y=%20".to_string(),
        "SCRIPT_NAME=/cgi/env.cgi".to_string(),
        "PATH_INFO=/extra/path".to_string(),
        format!("SCRIPT_FILENAME={}/htdocs/cgi/env.cgi", a.dir.display()),
        "SERVER_PROTOCOL=HTTP/1.1".to_string(),
        "REMOTE_ADDR=127.0.0.1".to_string(),
    ] {
        if !text.lines().any(|l| l == want) {
            a.fail(&format!("{want} missing from the script's environment:\n{text}"));
        }
    }
    if text.contains("PROCD_") || text.contains("LISTEN_FDS") {
        a.fail(&format!("the launcher's own variables leak into the script:\n{text}"));
    }
    // Proxy: is never HTTP_PROXY (httpoxy).
    let r =
        a.request("GET /cgi/env.cgi HTTP/1.1\r\nHost: x\r\nProxy: http://evil.invalid/\r\nConnection: close\r\n\r\n");
    if r.text().contains("HTTP_PROXY") {
        a.fail("a Proxy: header became HTTP_PROXY");
    }
    a.stop();
}

#[test]
fn bodies_reach_the_script_also_chunked() {
    let mut a = start("cgi-body");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha = sha256_hex(&body);
    let mut raw =
        format!("POST /cgi/body.pl HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
            .into_bytes();
    raw.extend_from_slice(&body);
    let r = a.request_bytes(&raw);
    if r.status != 200 || !r.text().contains(&format!("length=300000 declared=300000 sha256={sha}")) {
        a.fail(&format!("POST with Content-Length: {} {}", r.status, r.text()));
    }
    let mut raw =
        b"POST /cgi/body.pl HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for chunk in body.chunks(70_000) {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = a.request_bytes(&raw);
    if r.status != 200 || !r.text().contains(&format!("length=300000 declared=300000 sha256={sha}")) {
        a.fail(&format!("chunked POST: {} {}", r.status, r.text()));
    }
    a.stop();
}

#[test]
fn status_location_and_stderr_as_cgi_defines_them() {
    let mut a = start("cgi-headers");
    let r = a.get("/cgi/headers.cgi?missing");
    if r.status != 404 || r.text() != "no\n" {
        a.fail(&format!("Status: 404 gave {} {:?}", r.status, r.text()));
    }
    let r = a.get("/cgi/headers.cgi?away");
    if r.status != 302 || !r.head.contains("Location: http://example.invalid/elsewhere") {
        a.fail(&format!("an absolute Location gave {} {}", r.status, r.head));
    }
    let r = a.get("/cgi/headers.cgi?local");
    if r.status != 200 || r.text() != "Hello, World!\n" {
        a.fail(&format!("a local Location gave {} {:?}", r.status, r.text()));
    }
    let r = a.get("/cgi/headers.cgi?dribble");
    if r.status != 200 || !r.head.contains("X-Dribble: yes") || r.text() != "dribbled\n" {
        a.fail(&format!("a head written a byte at a time gave {} {} {:?}", r.status, r.head, r.text()));
    }
    let r = a.get("/cgi/headers.cgi?cookies");
    if !r.head.contains("Set-Cookie: a=1") || !r.head.contains("Set-Cookie: b=2") {
        a.fail(&format!("two Set-Cookie headers: {}", r.head));
    }
    if !wait_until(Duration::from_secs(3), || a.error_log().contains("to the log from cookies")) {
        a.fail("the script's stderr is not in the group's log");
    }
    a.stop();
}

#[test]
fn output_streams_as_the_script_writes_it() {
    let mut a = start("cgi-stream");
    use std::io::Write;
    let t = Instant::now();
    let mut c = std::net::TcpStream::connect(("127.0.0.1", a.port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10))).ok();
    c.write_all(b"GET /cgi/stream.cgi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
    let (text, first) = read_until_closed(&mut c, t, "first");
    if !text.contains("first") || !text.contains("last") {
        a.fail(&format!("streamed output: {text:?}"));
    }
    let first = first.unwrap_or(t.elapsed());
    if first > Duration::from_millis(900) {
        a.fail(&format!("the first line arrived after {} ms, with the script's end", first.as_millis()));
    }
    a.stop();
}

#[test]
fn refusals_and_a_runaway_script() {
    let mut a = start("cgi-refusals");
    let r = a.get("/cgi/noexec.cgi");
    if r.status != 403 || !wait_until(Duration::from_secs(3), || a.error_log().contains("is not executable by user")) {
        a.fail(&format!("a script without x bit: {}", r.status));
    }
    let r = a.get("/cgi/nothere.cgi");
    if r.status != 404 {
        a.fail(&format!("a missing script: {}", r.status));
    }
    let r = a.get("/plain/env.cgi");
    if r.status != 403 || !a.error_log().contains("PD0302") {
        a.fail(&format!("a script where ExecCGI is off: {}", r.status));
    }
    // request-timeout=2s: 504, and the script and its child are killed.
    let t = Instant::now();
    let r = a.get("/cgi/runaway.cgi");
    let answered = Instant::now();
    eprintln!("runaway: {} after {} ms (request-timeout 2 s)", r.status, t.elapsed().as_millis());
    if r.status != 504 || t.elapsed() > Duration::from_millis(3500) {
        a.fail(&format!("a runaway script: {} after {} ms", r.status, t.elapsed().as_millis()));
    }
    let child: Option<i32> = {
        let log = a.error_log();
        log.lines().filter_map(|l| l.split("child ").nth(1)).find_map(|p| p.trim().parse().ok())
    };
    let Some(child) = child else { a.fail("the runaway script's child pid is not in the log") };
    // README: the launcher kills the script's process group 1 s after
    // Apache's 504 (its timer is request-timeout + 1 s, checked every
    // 0.2 s): gone within 1.5 s of the 504.
    let gone = wait_until(Duration::from_millis(1500), || !pid_alive(child));
    eprintln!("runaway: its child gone {} ms after the 504", answered.elapsed().as_millis());
    if !gone {
        a.fail(&format!("the runaway script's child {child} still runs 1.5 s after the 504"));
    }
    if !wait_until(Duration::from_secs(5), || {
        a.error_log().contains("request-timeout (2 s): killing GET /cgi/runaway.cgi")
    }) {
        a.fail("no log line for the killed script");
    }
    a.stop();
}

/// The launcher runs from memory (a sealed memfd), so a runtime dir on a
/// file system mounted noexec (Debian mounts /run so) serves all the same;
/// and a request cannot set what would make the loader or an interpreter
/// run code of its sender's (Apache passes SetEnv variables, and code in an
/// Apache child may connect to the group's socket itself).
/// Unmounts (lazily) on drop, also when the test fails.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_noexec_runtime_dir_and_variables_that_would_run_code() {
    let mut mounted: Option<Mounted> = None;
    let mut a = start_with(
        "cgi-noexec",
        "LoadModule env_module /usr/lib/apache2/modules/mod_env.so\n\
         SetEnv LD_PRELOAD /nonexistent/evil.so\nSetEnv PERL5OPT -Mevil\nSetEnv APP_MODE demo\n",
        |a| {
            let dir = a.dir.join("run");
            std::fs::create_dir_all(&dir).expect("run dir");
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "noexec,nosuid,nodev,mode=0755", "procd-test"])
                .arg(&dir)
                .status();
            if !ok.is_ok_and(|s| s.success()) {
                a.fail("cannot mount a noexec tmpfs for the runtime dir");
            }
            mounted = Some(Mounted(dir));
        },
    );
    let r = a.get("/cgi/env.cgi");
    let text = r.text();
    if r.status != 200 || !text.lines().any(|l| l == "APP_MODE=demo") {
        a.fail(&format!("with the runtime dir noexec: {} {text}", r.status));
    }
    if text.contains("LD_PRELOAD") || text.contains("PERL5OPT") {
        a.fail(&format!("a request set LD_PRELOAD or PERL5OPT for the script:\n{text}"));
    }
    let _ = a.get("/cgi/env.cgi");
    let said = |name: &str| a.error_log().matches(&format!("may not set {name}")).count();
    if !wait_until(Duration::from_secs(3), || said("LD_PRELOAD") == 1 && said("PERL5OPT") == 1) {
        a.fail("the dropped variables are not logged once each");
    }
    a.stop();
    drop(mounted);
}

/// Code in an Apache child (mod_php) can connect to the group's socket and
/// send nothing, or a frame a byte at a time: the launcher waits for such
/// frames beside the others (10 s each at most), never in front of them.
#[test]
fn a_connection_that_sends_no_frame_holds_up_no_request() {
    use std::io::Write;
    let mut a = start("cgi-idle-peer");
    let socket = a.dir.join("run/procd/scripts.sock");
    let mut idle = Vec::new();
    for piece in [&b""[..], &b"\x01\x00"[..], &b"\x01\x00\x00\x00\x10\x01A"[..]] {
        let mut s = std::os::unix::net::UnixStream::connect(&socket)
            .unwrap_or_else(|e| a.fail(&format!("connect to {}: {e}", socket.display())));
        s.write_all(piece).unwrap_or_else(|e| a.fail(&format!("write: {e}")));
        idle.push(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        let t0 = Instant::now();
        let r = a.get("/cgi/env.cgi");
        if r.status != 200 || t0.elapsed() > Duration::from_secs(2) {
            a.fail(&format!("with idle connections on the launcher: {} after {:?}", r.status, t0.elapsed()));
        }
    }
    drop(idle);
    a.stop();
}

/// The group's launcher processes now (their argv[0]).
fn launchers() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmd.starts_with(b"procd-cgi-launcher\0")
        })
        .collect()
}

/// A launcher that is retired while its generation serves (lifetime=,
/// here) exits once what it holds is done, however busy the group's
/// socket stays: the other launcher takes the new connections.
#[test]
fn a_retired_launcher_exits_under_steady_traffic() {
    let mut a = start_group("cgi-lifetime", "lifetime=2s", "", |_| {});
    let before: Vec<i32> = launchers();
    let port = a.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http_get(port, "/cgi/env.cgi") {
                    Ok(r) if r.status == 200 => ok += 1,
                    Ok(r) => failed.push(r.status.to_string()),
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        })
    };
    let mut seen: std::collections::BTreeSet<i32> = before.iter().copied().collect();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(7) {
        seen.extend(launchers());
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = client.join().expect("client");
    let now = launchers();
    println!("lifetime=2s over 7 s: {ok} answers, {} failed, launchers seen {seen:?}, now {now:?}", failed.len());
    if !failed.is_empty() {
        a.fail(&format!("{} failed requests under recycling, e.g. {:?}", failed.len(), &failed[..failed.len().min(3)]));
    }
    if seen.len() < 3 {
        a.fail(&format!("lifetime=2s over 7 s: only {} launchers", seen.len()));
    }
    if now.len() > 2 {
        a.fail(&format!("retired launchers still run under traffic: {now:?}"));
    }
    a.stop();
}
