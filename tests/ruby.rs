//! Ruby Rack through Apache (`language=ruby`, the shipped procd_rack.rb):
//! the environment and the app's notion of its own URL under a mount,
//! forms, cookies, redirects, HEAD, 404, binary uploads, streaming both
//! kinds of bodies, end-to-end 100-continue, exceptions and output in the
//! group's log, Rack::Lint on every request of the test app, recycling
//! after maximum-requests, request-timeout, Sinatra (plain and under
//! `bundle exec`), and five graceful restarts under a stream of requests.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const APPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/ruby");

fn ruby_installed() -> bool {
    std::process::Command::new("ruby").args(["-e", "require 'rack'"]).status().is_ok_and(|s| s.success())
}

/// An Apache with the test apps under DIR/ruby and `conf`.
fn start(name: &str, conf: &str) -> Apache {
    assert!(ruby_installed(), "ruby and rack are needed: apt-get install ruby ruby-rack ruby-sinatra");
    ensure_user("procd-test-a");
    let mut a = Apache::new(name, Mpm::Event, conf);
    let status = std::process::Command::new("cp").arg("-r").arg(APPS).arg(a.dir.join("ruby")).status();
    assert!(status.is_ok_and(|s| s.success()), "copy the ruby test apps");
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    a
}

const RB: &str = "LanguageGroup rb language=ruby processes=2 threads=4 user=procd-test-a app=@DIR@/ruby/config.ru\n\
                  LanguageMount /rb rb\n";

fn start_rb(name: &str) -> Apache {
    let a = start(name, RB);
    if !wait_until(Duration::from_secs(15), || a.get("/rb/env").status == 200) {
        a.fail("the ruby group does not answer");
    }
    a
}

/// Rack::Lint wraps the whole test app: a violation would be a 500 with a
/// Rack::Lint::LintError in the group's log.
fn assert_lint_clean(a: &Apache) {
    if a.error_log().contains("LintError") {
        a.fail("Rack::Lint found a problem");
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
fn rack_requests_under_a_mount() {
    let a = start_rb("rack-env");
    // GET with a query, under the mount: SCRIPT_NAME, PATH_INFO and the URL the app sees.
    let r = a.request(&format!(
        "GET /rb/env/a%20b/%C3%A9?x=1&y=2 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        a.port
    ));
    let body = r.text();
    let get = |k: &str| json_field(&body, k).unwrap_or_else(|| a.fail(&format!("no {k} in {body}")));
    let url = format!("http://127.0.0.1:{}/rb/env/a%20b/%C3%A9?x=1&y=2", a.port);
    let expect = [
        ("SCRIPT_NAME", "/rb".to_string()),
        ("PATH_INFO", "/env/a%20b/%C3%A9".to_string()), // as the client wrote it, as Rack servers do
        ("QUERY_STRING", "x=1&y=2".into()),
        ("REQUEST_METHOD", "GET".into()),
        ("SERVER_NAME", "127.0.0.1".into()),
        ("SERVER_PORT", a.port.to_string()),
        ("rack.url_scheme", "http".into()),
        ("script_name", "/rb".into()),
        ("url", url),
        ("multithread", "true".into()),
        ("hijack", "false".into()),
        ("body", String::new()),
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
        a.fail(&format!("a Rack 2 multi-line Set-Cookie was not split into two headers: {}", r.head));
    }
    // The mount's root.
    let r = a.get("/rb");
    if json_field(&r.text(), "SCRIPT_NAME").as_deref() != Some("/rb")
        || json_field(&r.text(), "PATH_INFO").as_deref() != Some("")
    {
        a.fail(&format!("/rb: {}", r.text()));
    }
    // POST form.
    let r = a.request("POST /rb/form HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 20\r\nConnection: close\r\n\r\nname=abc&other=d%20e");
    if r.status != 200 || r.text() != "name=abc&other=d e" {
        a.fail(&format!("form: {} {}", r.status, r.text()));
    }
    // A chunked body, read whole, then again after rewind, then line by line.
    let r = a.request("POST /rb/rewind HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nab\nc\r\n5\r\nd\nefg\r\n0\r\n\r\n");
    if r.text() != "9 true 3 lines" {
        a.fail(&format!("rewind: {} {}", r.status, r.text()));
    }
    // Redirect to the app's own URL (the client's Host header, without a
    // port here, names the site).
    let r = a.get("/rb/redirect");
    if r.status != 302 || header(&r, "Location") != ["http://127.0.0.1/rb/env"] {
        a.fail(&format!("redirect: {} {}", r.status, r.head));
    }
    // Cookies both ways; the app scopes one to its mount.
    let r = a.request("GET /rb/cookies HTTP/1.1\r\nHost: x\r\nCookie: b=2; a=1\r\nConnection: close\r\n\r\n");
    let cookies = header(&r, "Set-Cookie");
    if r.text() != "cookies: a=1;b=2"
        || cookies.len() != 2
        || !cookies[0].starts_with("one=1; path=/rb/")
        || !cookies[1].to_ascii_lowercase().contains("httponly")
    {
        a.fail(&format!("cookies: {} {:?}", r.text(), cookies));
    }
    // HEAD: headers, no body.
    let r = a.request("HEAD /rb/env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if r.status != 200 || !r.body.is_empty() || header(&r, "Content-Type") != ["application/json"] {
        a.fail(&format!("HEAD: {} {:?} {}", r.status, r.text(), r.head));
    }
    // 404 from the app.
    let r = a.get("/rb/nothing-here");
    if r.status != 404 || r.text() != "no such test\n" {
        a.fail(&format!("404: {} {}", r.status, r.text()));
    }
    assert_lint_clean(&a);
}

#[test]
fn rack_bodies_stream_both_ways() {
    let a = start_rb("rack-bodies");
    // A 5 MB binary upload (read in 64 KiB reads, digest echoed), a 20 MB answer.
    big_bodies_both_ways(&a, "/rb");
    // Streaming: the first part reaches the client before the last is made,
    // for an each-body and for a Rack 3 call-body.
    for path in ["/rb/stream", "/rb/call-body"] {
        first_part_before_the_last(&a, path, "second");
    }
    // 100-continue end to end: none for an app that does not read, and
    // 100 Continue once the app reads rack.input.
    expect_100_continue_end_to_end(&a, "/rb");
    assert_lint_clean(&a);
}

#[test]
fn rack_failures_and_output_go_to_the_log() {
    let a = start_rb("rack-fail");
    // An exception: 500 without details; the backtrace in the group's log.
    let r = a.get("/rb/raise");
    if r.status != 500 || r.text().contains("secret detail") || r.text().contains("config.ru") {
        a.fail(&format!("/raise: {} {}", r.status, r.text()));
    }
    let backtrace = || {
        let log = a.error_log();
        log.contains("RuntimeError: boom: secret detail") && log.contains("from ") && log.contains("config.ru:")
    };
    if !wait_until(Duration::from_secs(3), backtrace) {
        a.fail("the backtrace is not in the group's error log");
    }
    // stderr, stdout and rack.errors, line by line, in the group's log.
    if a.get("/rb/stderr").text() != "logged\n" {
        a.fail("/stderr did not answer");
    }
    for line in ["stderr line from the ruby app", "stdout line from the ruby app", "rack.errors line from the ruby app"]
    {
        if !wait_until(Duration::from_secs(3), || {
            a.error_log().lines().any(|l| l.contains("[group rb]") && l.contains(line))
        }) {
            a.fail(&format!("{line:?} is not in the group's log"));
        }
    }
    // A worker that dies, a header that would inject one: 502 with a reason.
    for (path, log) in
        [("/rb/die", "exited with status 7 while handling this request"), ("/rb/bad-header", "invalid response header")]
    {
        let r = a.get(path);
        if r.status != 502 || !wait_until(Duration::from_secs(3), || a.error_log().contains(log)) {
            a.fail(&format!("{path}: {} and no log line {log:?}", r.status));
        }
    }
    // A client that goes away: the body's close is called.
    {
        let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
        s.write_all(b"GET /rb/forever HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        s.read_exact(&mut buf).unwrap();
    }
    if !wait_until(Duration::from_secs(5), || a.error_log().contains("forever: closed after")) {
        a.fail("the body's close was not called after the client left");
    }
    if !wait_until(Duration::from_secs(10), || a.get("/rb/env").status == 200) {
        a.fail("the group does not serve after the failures");
    }
    assert_lint_clean(&a);
}

#[test]
fn rack_maximum_requests_and_request_timeout() {
    let conf = "LanguageGroup rb language=ruby processes=1 threads=1 maximum-requests=4 request-timeout=2 user=procd-test-a app=@DIR@/ruby/config.ru\n\
                LanguageMount /rb rb\n";
    let a = start("rack-recycle", conf);
    if !wait_until(Duration::from_secs(15), || a.get("/rb/whoami").status == 200) {
        a.fail("the ruby group does not answer");
    }
    let mut pids = std::collections::BTreeSet::new();
    // Until a third worker answers, at most 40 requests (10 s): under load a
    // replacement takes longer to start, and its predecessor serves on.
    for i in 0..40 {
        if pids.len() >= 3 {
            break;
        }
        let r = a.get("/rb/whoami");
        if r.status != 200 {
            a.fail(&format!("request {i}: {} {}", r.status, r.text()));
        }
        pids.insert(r.text().split("pid=").nth(1).unwrap_or("").trim().to_string());
        // A human pace: the worker serves on while its replacement starts.
        std::thread::sleep(Duration::from_millis(250));
    }
    // 4 requests per worker: at least 3 workers answered.
    if pids.len() < 3 || !a.error_log().contains("(maximum-requests, as the worker reported): replacement pid") {
        a.fail(&format!("workers seen: {pids:?}"));
    }
    // request-timeout: 504, the stacks in the log, the worker replaced.
    let t0 = Instant::now();
    let r = a.get("/rb/sleep?s=30");
    if r.status != 504 || t0.elapsed() > Duration::from_secs(6) {
        a.fail(&format!("request-timeout: {} after {:?}", r.status, t0.elapsed()));
    }
    if !wait_until(Duration::from_secs(5), || a.error_log().contains("Stacks of all threads")) {
        a.fail("no stack dump after request-timeout");
    }
    if !wait_until(Duration::from_secs(10), || a.get("/rb/whoami").status == 200) {
        a.fail("no worker after the timed-out one");
    }
    // exit in a request: a 500, and the worker is recycled as it asked.
    // (maximum-requests=4 replaces workers too: the "(application-exit"
    // log line below is what shows this recycling came from the exit.)
    let before = a.get("/rb/whoami").text();
    let r = a.get("/rb/exit");
    if r.status != 500 {
        a.fail(&format!("/rb/exit: {} {}", r.status, r.text()));
    }
    if !wait_until(Duration::from_secs(10), || {
        let r = a.get("/rb/whoami");
        r.status == 200 && r.text() != before
    }) {
        a.fail("the worker whose request called exit was not replaced");
    }
    if !a.error_log().contains("the application called exit (this worker is recycled) in GET /rb/exit")
        || !a.error_log().contains("(application-exit")
    {
        a.fail("no log lines for the exit and the recycling it asked for");
    }
    assert_lint_clean(&a);
}

/// exit in a body's close (after the response went out): the answer
/// stands, the thread lives on, and the worker is recycled as it asked.
#[test]
fn exit_in_a_bodys_close_recycles_the_worker() {
    let conf = "LanguageGroup rb language=ruby processes=1 threads=2 user=procd-test-a app=@DIR@/ruby/config.ru\n\
                LanguageMount /rb rb\n";
    let mut a = start("rack-exit-close", conf);
    if !wait_until(Duration::from_secs(15), || a.get("/rb/whoami").status == 200) {
        a.fail("the ruby group does not answer");
    }
    let before = a.get("/rb/whoami").text();
    let r = a.get("/rb/exit-in-close");
    if r.status != 200 || r.text() != "closing\n" {
        a.fail(&format!("/rb/exit-in-close: {} {:?}", r.status, r.text()));
    }
    if !wait_until(Duration::from_secs(10), || {
        let r = a.get("/rb/whoami");
        r.status == 200 && r.text() != before
    }) {
        a.fail("the worker whose body's close called exit was not replaced");
    }
    if !a.error_log().contains("(application-exit") || a.error_log().contains("internal error in the loader") {
        a.fail("no application-exit recycling, or an internal error, after exit in close");
    }
    a.stop();
}

#[test]
fn sinatra_runs_unchanged_plain_and_under_bundler() {
    let conf = "LanguageGroup sin language=ruby processes=1 threads=4 user=procd-test-a app=@DIR@/ruby/sinatra/config.ru\n\
                LanguageMount /sin sin\n\
                LanguageGroup sinb language=ruby processes=1 threads=4 user=procd-test-a app=@DIR@/ruby/sinatra/config.ru \
                home=@DIR@/ruby/sinatra \"command=bundle exec ruby\" env=BUNDLE_GEMFILE=@DIR@/ruby/sinatra/Gemfile\n\
                LanguageMount /sinb sinb\n";
    let mut a = Apache::new("sinatra", Mpm::Event, conf);
    assert!(ruby_installed(), "ruby and rack are needed: apt-get install ruby ruby-rack ruby-sinatra");
    ensure_user("procd-test-a");
    let _ = std::process::Command::new("cp").arg("-r").arg(APPS).arg(a.dir.join("ruby")).status();
    // The bundle resolves from the gems Debian installed (no network).
    let lock = std::process::Command::new("bundle")
        .args(["lock", "--local"])
        .current_dir(a.dir.join("ruby/sinatra"))
        .output()
        .expect("run bundle");
    assert!(lock.status.success(), "bundle lock --local: {}", String::from_utf8_lossy(&lock.stderr));
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    for prefix in ["/sin", "/sinb"] {
        if !wait_until(Duration::from_secs(20), || a.get(&format!("{prefix}/")).status == 200) {
            a.fail(&format!("{prefix}/ does not answer"));
        }
        let r = a.get(&format!("{prefix}/"));
        if r.text() != format!("index; hello is at {prefix}/hello") {
            a.fail(&format!("{prefix}/: {}", r.text()));
        }
        let r = a.get(&format!("{prefix}/hello"));
        if r.text() != format!("hello from sinatra; script_name={prefix}") {
            a.fail(&format!("{prefix}/hello: {}", r.text()));
        }
        let r = a.get(&format!("{prefix}/go"));
        let location = header(&r, "Location").join(",");
        if r.status != 302 || location != format!("http://127.0.0.1{prefix}/hello") {
            a.fail(&format!("{prefix}/go: {} {location}", r.status));
        }
        let r = a.request(&format!("POST {prefix}/form HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\nConnection: close\r\n\r\nname=abc"));
        if r.text() != "name=abc" {
            a.fail(&format!("{prefix}/form: {} {}", r.status, r.text()));
        }
        let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
        let t0 = Instant::now();
        write!(s, "GET {prefix}/stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let (text, first_at) = read_until_closed(&mut s, t0, "first");
        if first_at.is_none_or(|f| f > Duration::from_millis(700)) || !text.contains("second") {
            a.fail(&format!("{prefix}/stream: first at {first_at:?}: {text:?}"));
        }
    }
    let plain = a.get("/sin/versions").text();
    let bundled = a.get("/sinb/versions").text();
    eprintln!("plain: {plain}; bundled: {bundled}");
    if !plain.ends_with("bundler none") || bundled.ends_with("bundler none") {
        a.fail(&format!("expected only /sinb to run under bundler: {plain} / {bundled}"));
    }
    a.stop();
}

#[test]
fn rack_survives_five_gracefuls_under_load() {
    let conf = "LanguageGroup rb language=ruby processes=2 threads=2 user=procd-test-a app=@DIR@/ruby/config.ru graceful-timeout=10\n\
                LanguageMount /rb rb\n";
    let mut a = start("rack-graceful", conf);
    if !wait_until(Duration::from_secs(15), || a.get("/rb/whoami").status == 200) {
        a.fail("the ruby group does not answer");
    }
    five_gracefuls_under_load(&mut a, "rb", "/rb");
    assert_lint_clean(&a);
    a.stop();
}

#[test]
fn configtest_names_the_package_when_rack_is_missing() {
    assert!(ruby_installed(), "ruby and rack are needed: apt-get install ruby ruby-rack ruby-sinatra");
    ensure_user("procd-test-a");
    // A ruby that cannot see the gems Debian installs stands for a machine
    // without ruby-rack.
    let conf = "ProcdLanguages @DIR@/no-gems.toml\n\
                LanguageGroup rb language=ruby processes=1 user=procd-test-a\n\
                LanguageHandler rb .ru\n";
    let a = Apache::new("rack-missing", Mpm::Event, conf);
    std::fs::write(a.dir.join("no-gems.toml"), "[language.ruby]\ncommand = \"/usr/bin/ruby --disable-gems\"\n")
        .unwrap();
    let (ok, text) = a.configtest();
    if ok
        || !text.contains("LanguageGroup rb (at ")
        || !text.contains("language=ruby needs the rack library")
        || !text.contains("apt-get install ruby-rack")
    {
        a.fail(&format!("configtest did not name ruby-rack: {text}"));
    }
    // With rack there, the same group passes.
    let a = Apache::new(
        "rack-present",
        Mpm::Event,
        "LanguageGroup rb language=ruby processes=1 user=procd-test-a\nLanguageHandler rb .ru\n",
    );
    let (ok, text) = a.configtest();
    if !ok || text.contains("rack library") {
        a.fail(&format!("configtest refused a ruby group that has rack: {text}"));
    }
}

#[test]
fn rackup_files_run_per_file() {
    let conf = "LanguageGroup rbfiles language=ruby processes=1 threads=2 user=procd-test-a\n\
                LanguageHandler rbfiles .ru\n\
                <Directory @DIR@/htdocs/cgi>\n  Options +ExecCGI\n</Directory>\n";
    let mut a = Apache::new("rack-files", Mpm::Event, conf);
    ensure_user("procd-test-a");
    std::fs::create_dir_all(a.dir.join("htdocs/cgi")).unwrap();
    std::fs::write(
        a.dir.join("htdocs/cgi/hello.ru"),
        "run lambda { |env| [200, { \"Content-Type\" => \"text/plain\" }, [\"script #{env['SCRIPT_NAME']} #{env['PATH_INFO']}\"]] }\n",
    )
    .unwrap();
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    if !wait_until(Duration::from_secs(15), || a.get("/cgi/hello.ru/more").status == 200) {
        a.fail("the per-file rackup does not answer");
    }
    let r = a.get("/cgi/hello.ru/more");
    if r.text() != "script /cgi/hello.ru /more" {
        a.fail(&format!("per-file rackup: {}", r.text()));
    }
    if a.get("/cgi/missing.ru").status != 404 {
        a.fail("a missing rackup file is not a 404");
    }
    a.stop();
}
