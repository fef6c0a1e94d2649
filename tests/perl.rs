//! Perl PSGI through Apache (`language=perl`, the shipped procd_psgi.pl):
//! the environment and the app's notion of its own URL under a mount,
//! forms, cookies, redirects, HEAD, 404, binary uploads, delayed and
//! streamed responses (the writer and body handles), end-to-end
//! 100-continue, exceptions and output in the group's log,
//! Plack::Middleware::Lint on every request of the test app,
//! psgix.harakiri, recycling after maximum-requests, request-timeout,
//! threads refused by configtest, Mojolicious and Dancer2 apps unchanged,
//! and five graceful restarts under a stream of requests.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const APPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/perl");

fn has_module(module: &str) -> bool {
    std::process::Command::new("perl").args([&format!("-M{module}"), "-e1"]).status().is_ok_and(|s| s.success())
}

/// An Apache with the test apps under DIR/perl and `conf`.
fn start(name: &str, conf: &str) -> Apache {
    assert!(has_module("Plack::Request"), "the test apps need Plack: apt-get install libplack-perl");
    ensure_user("procd-test-a");
    let mut a = Apache::new(name, Mpm::Event, conf);
    let status = std::process::Command::new("cp").arg("-r").arg(APPS).arg(a.dir.join("perl")).status();
    assert!(status.is_ok_and(|s| s.success()), "copy the perl test apps");
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    a
}

const PL: &str = "LanguageGroup pl language=perl processes=3 user=procd-test-a app=@DIR@/perl/app.psgi\n\
                  LanguageMount /pl pl\n";

fn start_pl(name: &str) -> Apache {
    let a = start(name, PL);
    if !wait_until(Duration::from_secs(15), || a.get("/pl/env").status == 200) {
        a.fail("the perl group does not answer");
    }
    a
}

/// Plack::Middleware::Lint wraps the test app: a violation would be a 500
/// with Lint's message (from Plack/Middleware/Lint.pm) in the group's log.
fn assert_lint_clean(a: &Apache) {
    // Lint's own die messages end "at .../Plack/Middleware/Lint.pm line N."
    // (stacks of other errors only pass through it: "called at").
    if a.error_log().lines().any(|l| l.contains("Middleware/Lint.pm line") && !l.contains("called at")) {
        a.fail("Plack::Middleware::Lint found a problem");
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

#[test]
fn psgi_requests_under_a_mount() {
    let a = start_pl("psgi-env");
    // POST with a query and a body, under the mount.
    let r = a.request(&format!(
        "POST /pl/env/a%20b/%C3%A9?x=1&y=2 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Custom-Thing: hello\r\nContent-Type: text/x-test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde",
        a.port
    ));
    let body = r.text();
    let get = |k: &str| json_field(&body, k).unwrap_or_else(|| a.fail(&format!("no {k} in {body}")));
    let expect = [
        ("SCRIPT_NAME", "/pl".to_string()),
        // PSGI's PATH_INFO is decoded (bytes: here the two of é)
        ("PATH_INFO", "/env/a b/\u{c3}\u{a9}".to_string()),
        ("QUERY_STRING", "x=1&y=2".into()),
        ("REQUEST_METHOD", "POST".into()),
        ("REQUEST_URI", "/pl/env/a%20b/%C3%A9?x=1&y=2".into()),
        ("CONTENT_TYPE", "text/x-test".into()),
        ("CONTENT_LENGTH", "5".into()),
        ("HTTP_X_CUSTOM_THING", "hello".into()),
        ("SERVER_NAME", "127.0.0.1".into()),
        ("SERVER_PORT", a.port.to_string()),
        ("psgi.url_scheme", "http".into()),
        ("uri", format!("http://127.0.0.1:{}/pl/env/a%20b/%C3%A9?x=1&y=2", a.port)),
        ("base", format!("http://127.0.0.1:{}/pl", a.port)),
        ("body", "abcde".into()),
        ("multithread", "false".into()),
        ("streaming", "true".into()),
        ("harakiri", "true".into()),
    ];
    for (k, v) in expect {
        if get(k) != v {
            a.fail(&format!("{k} = {:?}, expected {v:?}", get(k)));
        }
    }
    if body.contains("PROCD_QUEUED_AT_MS") || body.contains("HTTP_CONTENT_TYPE") {
        a.fail(&format!("loader-only or duplicate variables reached the app: {body}"));
    }
    if header(&r, "Set-Cookie") != ["a=1; Path=/", "b=2; Path=/"] {
        a.fail(&format!("the two Set-Cookie headers were merged or lost: {}", r.head));
    }
    let r = a.get("/pl");
    if json_field(&r.text(), "SCRIPT_NAME").as_deref() != Some("/pl")
        || json_field(&r.text(), "PATH_INFO").as_deref() != Some("")
    {
        a.fail(&format!("/pl: {}", r.text()));
    }
    // POST form, through Plack::Request.
    let form = "name=abc&other=d%20e";
    let r = a.request(&format!("POST /pl/form HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}", form.len()));
    if r.status != 200 || r.text() != "name=abc&other=d e" {
        a.fail(&format!("form: {} {}", r.status, r.text()));
    }
    // A chunked body read line by line.
    let r = a.request("POST /pl/lines HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nab\nc\r\n5\r\nd\nefg\r\n0\r\n\r\n");
    if r.text() != "3 lines" {
        a.fail(&format!("lines: {} {}", r.status, r.text()));
    }
    // Redirect to the app's own URL (Host without a port names the site).
    let r = a.get("/pl/redirect");
    if r.status != 302 || header(&r, "Location") != ["http://127.0.0.1/pl/env"] {
        a.fail(&format!("redirect: {} {}", r.status, r.head));
    }
    let r = a.request("GET /pl/cookies HTTP/1.1\r\nHost: x\r\nCookie: b=2; a=1\r\nConnection: close\r\n\r\n");
    let cookies = header(&r, "Set-Cookie");
    if r.text() != "cookies: a=1;b=2"
        || cookies.len() != 2
        || !cookies.iter().any(|c| c.starts_with("one=1; path=/pl/"))
        || !cookies.iter().any(|c| c.starts_with("two=2") && c.to_ascii_lowercase().contains("httponly"))
    {
        a.fail(&format!("cookies: {} {:?}", r.text(), cookies));
    }
    let r = a.request("HEAD /pl/env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if r.status != 200 || !r.body.is_empty() || header(&r, "Content-Type") != ["application/json"] {
        a.fail(&format!("HEAD: {} {:?} {}", r.status, r.text(), r.head));
    }
    let r = a.get("/pl/nothing-here");
    if r.status != 404 || r.text() != "no such test\n" {
        a.fail(&format!("404: {} {}", r.status, r.text()));
    }
    let r = a.get("/pl/delayed");
    if r.status != 200 || r.text() != "delayed body\n" {
        a.fail(&format!("delayed response: {} {}", r.status, r.text()));
    }
    assert_lint_clean(&a);
}

#[test]
fn psgi_bodies_stream_both_ways() {
    let a = start_pl("psgi-bodies");
    big_bodies_both_ways(&a, "/pl");
    // The writer of a delayed response, and a body handle: the first part
    // reaches the client before the last is made.
    for path in ["/pl/stream", "/pl/stream-handle"] {
        first_part_before_the_last(&a, path, "second");
    }
    expect_100_continue_end_to_end(&a, "/pl");
    assert_lint_clean(&a);
}

#[test]
fn psgi_failures_and_output_go_to_the_log() {
    let a = start_pl("psgi-fail");
    let r = a.get("/pl/raise");
    if r.status != 500 || r.text().contains("secret detail") || r.text().contains("app.psgi") {
        a.fail(&format!("/raise: {} {}", r.status, r.text()));
    }
    let stack = || {
        let log = a.error_log();
        log.contains("boom: secret detail") && log.contains("stack:") && log.contains("app.psgi line")
    };
    if !wait_until(Duration::from_secs(3), stack) {
        a.fail("the error and its stack are not in the group's error log");
    }
    if a.get("/pl/stderr").text() != "logged\n" {
        a.fail("/stderr did not answer");
    }
    for line in [
        "stderr line from the perl app",
        "stdout line from the perl app",
        "psgi.errors line from the perl app",
        "warn line from the perl app",
    ] {
        if !wait_until(Duration::from_secs(3), || {
            a.error_log().lines().any(|l| l.contains("[group pl]") && l.contains(line))
        }) {
            a.fail(&format!("{line:?} is not in the group's log"));
        }
    }
    for (path, log) in
        [("/pl/die", "exited with status 7 while handling this request"), ("/pl/bad-header", "invalid response header")]
    {
        let r = a.get(path);
        if r.status != 502 || !wait_until(Duration::from_secs(3), || a.error_log().contains(log)) {
            a.fail(&format!("{path}: {} and no log line {log:?}", r.status));
        }
    }
    {
        let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
        s.write_all(b"GET /pl/forever HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        s.read_exact(&mut buf).unwrap();
    }
    if !wait_until(Duration::from_secs(5), || a.error_log().contains("forever: closed after")) {
        a.fail("the body's close was not called after the client left");
    }
    if !wait_until(Duration::from_secs(10), || a.get("/pl/env").status == 200) {
        a.fail("the group does not serve after the failures");
    }
    assert_lint_clean(&a);
}

#[test]
fn psgi_harakiri_maximum_requests_and_request_timeout() {
    let conf = "LanguageGroup pl language=perl processes=1 maximum-requests=4 request-timeout=2 user=procd-test-a app=@DIR@/perl/app.psgi\n\
                LanguageMount /pl pl\n";
    let a = start("psgi-recycle", conf);
    let pid_of = |r: &Response| r.text().split("pid=").nth(1).unwrap_or("").trim().to_string();
    if !wait_until(Duration::from_secs(15), || a.get("/pl/whoami").status == 200) {
        a.fail("the perl group does not answer");
    }
    // psgix.harakiri.commit: this worker exits after the answer; another serves.
    let r = a.get("/pl/harakiri");
    let doomed = pid_of(&r);
    if r.status != 200 || doomed.is_empty() {
        a.fail(&format!("/harakiri: {} {}", r.status, r.text()));
    }
    if !wait_until(Duration::from_secs(10), || a.get("/pl/whoami").status == 200) {
        a.fail("no worker after harakiri");
    }
    let r = a.get("/pl/whoami");
    if pid_of(&r) == doomed || !a.error_log().contains("psgix.harakiri.commit") {
        a.fail(&format!("the worker that committed harakiri still answers: {}", r.text()));
    }
    // maximum-requests=4: a new worker every four requests.
    let mut pids = std::collections::BTreeSet::new();
    // Until a third worker answers, at most 40 requests (10 s): under load a
    // replacement takes longer to start, and its predecessor serves on.
    for i in 0..40 {
        if pids.len() >= 3 {
            break;
        }
        let r = a.get("/pl/whoami");
        if r.status != 200 {
            a.fail(&format!("request {i}: {} {}", r.status, r.text()));
        }
        pids.insert(pid_of(&r));
        // A human pace: the worker serves on while its replacement starts.
        std::thread::sleep(Duration::from_millis(250));
    }
    if pids.len() < 3 || !a.error_log().contains("(maximum-requests, as the worker reported): replacement pid") {
        a.fail(&format!("workers seen: {pids:?}"));
    }
    let t0 = Instant::now();
    let r = a.get("/pl/sleep?s=30");
    if r.status != 504 || t0.elapsed() > Duration::from_secs(6) {
        a.fail(&format!("request-timeout: {} after {:?}", r.status, t0.elapsed()));
    }
    if !wait_until(Duration::from_secs(5), || a.error_log().contains("request-timeout (2 s) exceeded")) {
        a.fail("no stack dump after request-timeout");
    }
    if !wait_until(Duration::from_secs(10), || a.get("/pl/whoami").status == 200) {
        a.fail("no worker after the timed-out one");
    }
    assert_lint_clean(&a);
}

/// `exit` in a request ends the request, not the process under it: a 500
/// (not Apache's 502 for a vanished worker), a log line, and the worker is
/// recycled as it asked (its replacement started first), with every
/// request of a client that keeps coming answered. An exit the
/// application catches in its own eval still recycles.
#[test]
fn exit_in_a_request_recycles_the_worker_without_a_failed_request() {
    let conf = "LanguageGroup pl language=perl processes=1 user=procd-test-a app=@DIR@/perl/app.psgi\n\
                LanguageMount /pl pl\n";
    let a = start("psgi-exit", conf);
    let pid_of = |r: &Response| r.text().split("pid=").nth(1).unwrap_or("").trim().to_string();
    if !wait_until(Duration::from_secs(15), || a.get("/pl/whoami").status == 200) {
        a.fail("the perl group does not answer");
    }
    for (path, status) in [("/pl/exit", 500), ("/pl/exit-caught", 200)] {
        let before = pid_of(&a.get("/pl/whoami"));
        let r = a.get(path);
        if r.status != status || r.text().contains("exit(") {
            a.fail(&format!("{path}: {} {:?}", r.status, r.text()));
        }
        // A client that keeps coming: every request answered, by the new
        // worker within 10 s.
        let mut replaced = false;
        for i in 0..100 {
            let r = a.get("/pl/whoami");
            if r.status != 200 {
                a.fail(&format!("{path}, request {i} after it: {} {}", r.status, r.text()));
            }
            if pid_of(&r) != before {
                replaced = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !replaced {
            a.fail(&format!("pid {before} still answers 10 s after {path}"));
        }
        if !a.error_log().contains(&format!("recycling worker pid {before} (application-exit")) {
            a.fail(&format!("no recycling line for pid {before} after {path}"));
        }
    }
    let log = a.error_log();
    if !log.contains("the application called exit(3) (this worker is recycled) in GET /pl/exit")
        || !log.contains("the application called exit(0) in GET /pl/exit-caught and caught it in an eval")
    {
        a.fail("no log lines for the exits");
    }
    assert_lint_clean(&a);
}

#[test]
fn configtest_refuses_threads_for_perl() {
    ensure_user("procd-test-a");
    let a = Apache::new(
        "psgi-threads",
        Mpm::Event,
        "LanguageGroup pl language=perl processes=2 threads=8 user=procd-test-a\nLanguageHandler pl .psgi\n",
    );
    let (ok, text) = a.configtest();
    if ok
        || !text.contains("LanguageGroup pl (at ")
        || !text.contains("threads=8 is not possible for language=perl")
        || !text.contains("threads=1 is allowed")
    {
        a.fail(&format!("configtest accepted threads=8 for perl or said it unclearly: {text}"));
    }
}

#[test]
fn mojolicious_and_dancer2_run_unchanged() {
    let mut conf = String::new();
    let mut prefixes = Vec::new();
    for (module, group, file, prefix) in
        [("Mojolicious::Lite", "mojo", "mojo.psgi", "/mojo"), ("Dancer2", "dancer", "dancer.psgi", "/dancer")]
    {
        if has_module(module) {
            conf.push_str(&format!(
                "LanguageGroup {group} language=perl processes=1 user=procd-test-a app=@DIR@/perl/{file}\nLanguageMount {prefix} {group}\n"
            ));
            prefixes.push((prefix, group));
        } else {
            eprintln!("SKIPPED {prefix}: {module} is not installed (Debian: libmojolicious-perl, libdancer2-perl)");
        }
    }
    if prefixes.is_empty() {
        return;
    }
    let a = start("psgi-frameworks", &conf);
    for (prefix, name) in prefixes {
        let framework = if name == "mojo" { "mojolicious" } else { "dancer2" };
        if !wait_until(Duration::from_secs(20), || a.get(&format!("{prefix}/")).status == 200) {
            a.fail(&format!("{prefix}/ does not answer"));
        }
        let r = a.get(&format!("{prefix}/"));
        if r.text() != format!("index; hello is at {prefix}/hello") {
            a.fail(&format!("{prefix}/: {}", r.text()));
        }
        let r = a.get(&format!("{prefix}/hello"));
        let expected = if name == "mojo" {
            format!("hello from {framework}; base={prefix}/")
        } else {
            format!("hello from {framework}; script_name={prefix}")
        };
        if r.text() != expected {
            a.fail(&format!("{prefix}/hello: {} (expected {expected})", r.text()));
        }
        let r = a.get(&format!("{prefix}/go"));
        let location = header(&r, "Location").join(",");
        if r.status != 302 || !location.ends_with(&format!("{prefix}/hello")) {
            a.fail(&format!("{prefix}/go: {} {location}", r.status));
        }
        let r = a.request(&format!("POST {prefix}/form HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\nConnection: close\r\n\r\nname=abc"));
        if r.text() != "name=abc" {
            a.fail(&format!("{prefix}/form: {} {}", r.status, r.text()));
        }
    }
}

#[test]
fn psgi_survives_five_gracefuls_under_load() {
    let conf = "LanguageGroup pl language=perl processes=4 user=procd-test-a app=@DIR@/perl/app.psgi graceful-timeout=10\n\
                LanguageMount /pl pl\n";
    let mut a = start("psgi-graceful", conf);
    if !wait_until(Duration::from_secs(15), || a.get("/pl/whoami").status == 200) {
        a.fail("the perl group does not answer");
    }
    five_gracefuls_under_load(&mut a, "pl", "/pl");
    assert_lint_clean(&a);
    a.stop();
}

#[test]
fn psgi_files_run_per_file() {
    let conf = "LanguageGroup plfiles language=perl processes=1 user=procd-test-a\n\
                LanguageHandler plfiles .psgi\n\
                <Directory @DIR@/htdocs/cgi>\n  Options +ExecCGI\n</Directory>\n";
    let mut a = Apache::new("psgi-files", Mpm::Event, conf);
    ensure_user("procd-test-a");
    std::fs::create_dir_all(a.dir.join("htdocs/cgi")).unwrap();
    std::fs::write(
        a.dir.join("htdocs/cgi/hello.psgi"),
        "my $app = sub { my $env = shift; [200, ['Content-Type' => 'text/plain'], [\"script $env->{SCRIPT_NAME} $env->{PATH_INFO}\"]] };\n",
    )
    .unwrap();
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    if !wait_until(Duration::from_secs(15), || a.get("/cgi/hello.psgi/more").status == 200) {
        a.fail("the per-file .psgi does not answer");
    }
    let r = a.get("/cgi/hello.psgi/more");
    if r.text() != "script /cgi/hello.psgi /more" {
        a.fail(&format!("per-file .psgi: {}", r.text()));
    }
    if a.get("/cgi/missing.psgi").status != 404 {
        a.fail("a missing .psgi file is not a 404");
    }
    a.stop();
}
