//! Python WSGI through Apache: the environment, bodies both ways without
//! buffering, streaming, end-to-end 100-continue, every failure's status and
//! log line, PEP 3333 validation.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn wsgi_conf(extra_group_opts: &str) -> String {
    format!(
        "LanguageGroup py language=python processes=2 threads=4 user=procd-test-a app=@DIR@/wsgi_app.py {extra_group_opts}\n\
         LanguageMount /app py\n\
         LanguageGroup scripts language=python processes=1 threads=2 user=procd-test-a\n\
         LanguageHandler scripts .py\n\
         <Directory @DIR@/htdocs/cgi>\n  Options +ExecCGI\n</Directory>\n\
         <Directory @DIR@/htdocs/denied>\n  Options +ExecCGI\n  Require all denied\n</Directory>\n\
         LoadModule deflate_module {MODULES}/mod_deflate.so\n\
         LoadModule filter_module {MODULES}/mod_filter.so\n\
         AddOutputFilterByType DEFLATE application/json\n"
    )
}

fn start(name: &str, extra: &str) -> Apache {
    start_with(name, extra, "")
}

/// `start` with more configuration after the groups.
fn start_with(name: &str, extra: &str, more_conf: &str) -> Apache {
    ensure_user("procd-test-a");
    let mut a = Apache::new(name, Mpm::Event, &format!("{}{more_conf}", wsgi_conf(extra)));
    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/wsgi_app.py");
    std::fs::copy(app, a.dir.join("wsgi_app.py")).unwrap();
    for sub in ["htdocs/cgi", "htdocs/noexec", "htdocs/denied"] {
        std::fs::create_dir_all(a.dir.join(sub)).unwrap();
        std::fs::copy(app, a.dir.join(sub).join("script.py")).unwrap();
    }
    let _ = std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    wait_until(Duration::from_secs(10), || a.get("/app/env").status == 200);
    a
}

#[test]
fn environment_follows_the_cgi_and_wsgi_specs() {
    let a = start("wsgi-env", "");
    let cases = [
        ("/app", "/app", ""),
        ("/app/", "/app", "/"),
        ("/app/env/a%20b/%C3%A9?x=1&y=2", "/app", "/env/a b/\u{c3}\u{a9}"),
    ];
    for (url, script_name, path_info) in cases {
        let r = a.request(&format!(
            "POST {url} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Custom-Thing: hello\r\nContent-Type: text/x-test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde",
            a.port
        ));
        let body = r.text();
        if r.status != 200 {
            a.fail(&format!("{url}: {} {body}", r.status));
        }
        let get = |k: &str| json_field(&body, k).unwrap_or_else(|| a.fail(&format!("{url}: no {k} in {body}")));
        let expect = [
            ("SCRIPT_NAME", script_name.to_string()),
            ("PATH_INFO", path_info.to_string()),
            ("REQUEST_METHOD", "POST".into()),
            ("CONTENT_TYPE", "text/x-test".into()),
            ("CONTENT_LENGTH", "5".into()),
            ("HTTP_X_CUSTOM_THING", "hello".into()),
            ("SERVER_NAME", "127.0.0.1".into()),
            ("SERVER_PORT", a.port.to_string()),
            ("SERVER_PROTOCOL", "HTTP/1.1".into()),
            ("REMOTE_ADDR", "127.0.0.1".into()),
            ("HTTPS", "off".into()),
            ("wsgi.url_scheme", "http".into()),
            ("REQUEST_URI", url.to_string()),
            ("DOCUMENT_ROOT", a.dir.join("htdocs").display().to_string()),
            ("SCRIPT_FILENAME", a.dir.join("wsgi_app.py").display().to_string()),
            ("body", "abcde".into()),
            ("multithread", "True".into()),
        ];
        for (k, v) in expect {
            if get(k) != v {
                a.fail(&format!("{url}: {k} = {:?}, expected {v:?}", get(k)));
            }
        }
        if get("QUERY_STRING") != url.split_once('?').map_or("", |(_, q)| q)
            || get("REMOTE_PORT").parse::<u16>().is_err()
        {
            a.fail(&format!("{url}: QUERY_STRING or REMOTE_PORT wrong in {body}"));
        }
        if r.head.matches("Set-Cookie:").count() != 2 {
            a.fail(&format!("the two Set-Cookie headers were merged or lost: {}", r.head));
        }
    }
    // Chunked request body: no CONTENT_LENGTH, the body arrives whole.
    let r = a.request("POST /app/env HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
    if json_field(&r.text(), "body").as_deref() != Some("abcdefg") || json_field(&r.text(), "CONTENT_LENGTH").is_some()
    {
        a.fail(&format!("chunked body: {}", r.text()));
    }
    // HEAD: headers, no body.
    let r = a.request("HEAD /app/env HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if r.status != 200 || !r.body.is_empty() || !r.head.contains("Content-Type: application/json") {
        a.fail(&format!("HEAD: {} {:?} {}", r.status, r.text(), r.head));
    }
    // mod_deflate still applies to our responses.
    let r = a.request("GET /app/env HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n");
    if !r.head.contains("Content-Encoding: gzip") {
        a.fail(&format!("mod_deflate did not compress: {}", r.head));
    }
}

#[test]
fn script_files_respect_apache_rules() {
    let a = start("wsgi-scripts", "");
    let r = a.get("/cgi/script.py/env/more?z=1");
    let body = r.text();
    if r.status != 200
        || json_field(&body, "SCRIPT_NAME").as_deref() != Some("/cgi/script.py")
        || json_field(&body, "PATH_INFO").as_deref() != Some("/env/more")
    {
        a.fail(&format!("script mode: {} {body}", r.status));
    }
    if json_field(&body, "SCRIPT_FILENAME").as_deref() != Some(a.dir.join("htdocs/cgi/script.py").to_str().unwrap()) {
        a.fail(&format!("SCRIPT_FILENAME: {body}"));
    }
    let r = a.get("/cgi/missing.py");
    if r.status != 404 {
        a.fail(&format!("missing script: {}", r.status));
    }
    let r = a.get("/noexec/script.py");
    if r.status != 403 || !a.error_log().contains("PD0302: Options ExecCGI is off") {
        a.fail(&format!("without ExecCGI: {}", r.status));
    }
    let r = a.get("/denied/script.py");
    if r.status != 403 {
        a.fail(&format!("Require all denied: {}", r.status));
    }
}

fn vm_hwm_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn apache_children_peak(a: &Apache) -> u64 {
    let master = a.master.unwrap();
    let manager = a.manager();
    children(master).into_iter().filter(|p| *p != manager).map(vm_hwm_kb).max().unwrap_or(0)
}

#[test]
fn large_bodies_stream_both_ways() {
    let a = start("wsgi-large", "");
    let before = apache_children_peak(&a);
    // 5 MB multipart upload, read back as sha256.
    let boundary = "procdboundary";
    let payload: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
    body.extend_from_slice(&payload);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let expected = sha256_hex(&body);
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    write!(s, "POST /app/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    s.write_all(&body).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    if !out.contains(&format!("{expected} {}", body.len())) {
        a.fail(&format!("upload digest mismatch: expected {expected}, got {out}"));
    }
    // 20 MB response.
    let r = a.get("/app/big?mb=20");
    if r.status != 200 || r.body.len() != 20 << 20 || r.body[..256] != (0..=255u8).collect::<Vec<_>>()[..] {
        a.fail(&format!("20 MB response: {} {} bytes", r.status, r.body.len()));
    }
    let after = apache_children_peak(&a);
    eprintln!("Apache child peak RSS: {before} kB before, {after} kB after 5 MB up + 20 MB down");
    // Measured +0.4 MB (8,320 to 8,692 kB, 2026-12-02); buffering either
    // body whole would add 5 or 20 MB.
    if after > before + 2 * 1024 {
        a.fail(&format!("Apache children grew from {before} kB to {after} kB: bodies are being buffered"));
    }
}

#[test]
fn streamed_chunks_reach_the_client_before_the_app_finishes() {
    let a = start("wsgi-stream", "");
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    let t0 = Instant::now();
    s.write_all(b"GET /app/stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let (text, first_at) = read_until_closed(&mut s, t0, "first");
    let total = t0.elapsed();
    let first = first_at.unwrap_or_else(|| a.fail("no first chunk"));
    eprintln!("stream: first chunk after {} ms, all after {} ms", first.as_millis(), total.as_millis());
    if first > Duration::from_millis(700) || total < Duration::from_millis(900) || !text.contains("second") {
        a.fail(&format!("first chunk at {first:?}, end at {total:?}"));
    }
}

#[test]
fn expect_100_continue_is_end_to_end() {
    let a = start("wsgi-100", "");
    // The app answers 413 without reading: no 100 Continue, ever; the app
    // reads the body: 100 Continue first, then the answer.
    expect_100_continue_end_to_end(&a, "/app");
}

#[test]
fn every_failure_has_its_status_and_log_line() {
    let a = start("wsgi-fail", "");
    let check = |path: &str, status: u16, log: &str| {
        let r = a.get(path);
        if r.status != status {
            a.fail(&format!("{path}: status {} (expected {status}): {}", r.status, r.text()));
        }
        if !wait_until(Duration::from_secs(3), || a.error_log().contains(log)) {
            a.fail(&format!("{path}: no log line containing {log:?}"));
        }
        r
    };
    check("/app/die", 502, "exited with status 7 while handling this request");
    check("/app/kill", 502, "was killed by signal SIGKILL");
    check("/app/bad-header", 502, "invalid response header");
    check("/app/huge-header", 502, "response headers of");
    // Separate from the 64 KiB bound: 100 small headers pass, 101 are a
    // 502 with their own line (README: ">100 headers").
    let r = a.get("/app/many-headers?n=100");
    if r.status != 200 || !r.head.contains("X-H98: v") {
        a.fail(&format!("100 response headers: {} {}", r.status, r.head));
    }
    check("/app/many-headers?n=101", 502, "101 response headers (the limit is 100)");
    let r = check("/app/raise", 500, "the application failed in worker pid");
    if r.text().contains("secret detail") {
        a.fail("the traceback leaked to the client");
    }
    // The traceback travels through the manager's pipe: it may land in the
    // log just after Apache's own line.
    let has_traceback = || {
        let log = a.error_log();
        log.contains("RuntimeError: boom: secret detail") && log.contains("Traceback")
    };
    if !wait_until(Duration::from_secs(3), has_traceback) {
        a.fail("the traceback is not in the group's error log");
    }
    // The app handles its own error with exc_info.
    let r = a.get("/app/exc-info");
    if r.status != 500 || r.text() != "handled by the app" {
        a.fail(&format!("exc_info: {} {}", r.status, r.text()));
    }
    // write(), file_wrapper and wsgiref.validate.
    for (path, body) in
        [("/app/write", "written;returned"), ("/app/file", "from a file wrapper"), ("/app/validate", "ok:")]
    {
        let r = a.get(path);
        if r.status != 200 || r.text() != body {
            a.fail(&format!("{path}: {} {:?}", r.status, r.text()));
        }
    }
    let r = a.request("POST /app/validate HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxyz");
    if r.text() != "ok:xyz" || a.error_log().contains("WSGIWarning") || a.error_log().contains("AssertionError") {
        a.fail(&format!("wsgiref.validate found a problem: {}", r.text()));
    }
}

/// A group `one` (mounted at /one) of a single one-thread worker, with
/// `opts` on its LanguageGroup line and `more` after it; started and ready.
fn one_worker(name: &str, opts: &str, more: &str) -> Apache {
    ensure_user("procd-test-a");
    let conf = format!(
        "LanguageGroup one language=python processes=1 threads=1 {opts} user=procd-test-a app=@DIR@/wsgi_app.py\nLanguageMount /one one\n{more}"
    );
    let mut a = Apache::new(name, Mpm::Event, &conf);
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/wsgi_app.py"), a.dir.join("wsgi_app.py")).unwrap();
    a.start();
    wait_until(Duration::from_secs(10), || a.get("/one/env").status == 200);
    a
}

/// Keeps `one_worker`'s worker busy for `secs` seconds from a thread (its
/// answer is the thread's result); returns 0.3 s later.
fn keep_busy(a: &Apache, secs: u32) -> std::thread::JoinHandle<String> {
    let port = a.port;
    let busy = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(format!("GET /one/sleep?s={secs} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    std::thread::sleep(Duration::from_millis(300));
    busy
}

#[test]
fn queue_and_request_timeouts() {
    let mut a = one_worker("wsgi-timeouts", "queue-timeout=1 request-timeout=3", "");
    // The only worker is busy for 2 s: a second request waits 1 s, then 503.
    let busy = keep_busy(&a, 2);
    let t0 = Instant::now();
    let r = a.get("/one/env");
    let waited = t0.elapsed();
    if r.status != 503
        || !r.head.contains("Retry-After:")
        || waited < Duration::from_millis(900)
        || waited > Duration::from_secs(3)
    {
        a.fail(&format!("queue-timeout: {} after {waited:?}: {}", r.status, r.head));
    }
    if !wait_until(Duration::from_secs(5), || a.error_log().contains("no worker became free within queue-timeout")) {
        a.fail("no queue-timeout log line");
    }
    if !busy.join().unwrap().contains("slept") {
        a.fail("the busy request did not complete");
    }
    // request-timeout: 504 after about 3 s, and the worker is replaced.
    let manager = a.manager();
    let before = children(manager);
    let t0 = Instant::now();
    // The app renames its thread: the stack dump names it both ways.
    let r = a.get("/one/sleep?s=20&name=app-thread");
    let took = t0.elapsed();
    if r.status != 504 || took > Duration::from_secs(6) {
        a.fail(&format!("request-timeout: {} after {took:?}", r.status));
    }
    if !wait_until(Duration::from_secs(6), || !children(manager).is_empty() && children(manager).is_disjoint(&before)) {
        a.fail("the timed-out worker was not replaced");
    }
    if !wait_until(Duration::from_secs(5), || {
        let log = a.error_log();
        log.contains("request-timeout (3 s) exceeded in thread request-0")
            && log.contains("Stacks of all threads")
            && log.contains("thread request-0 (named 'app-thread' by the application):")
    }) {
        a.fail("no request-timeout log lines (Apache's and the worker's stack dump)");
    }
    wait_until(Duration::from_secs(10), || a.get("/one/env").status == 200);
    a.stop();
}

#[test]
fn client_disconnect_stops_the_application_promptly() {
    let a = start("wsgi-disconnect", "");
    {
        let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
        s.write_all(b"GET /app/forever HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        s.read_exact(&mut buf).unwrap();
    } // closed
    if !wait_until(Duration::from_secs(5), || a.error_log().contains("forever: closed after")) {
        a.fail("the application was not stopped after the client left");
    }
    if a.get("/app/env").status != 200 {
        a.fail("the group does not serve after a client disconnect");
    }
}

/// PEP 3333's `wsgi.input` beyond read(): readline(), readline(size),
/// iteration, readlines(hint) and readlines(), then EOF (README, "Serving
/// Python": "read, readline, readlines, iteration"), over a chunked body
/// cut in the middle of lines; and lines longer than a frame pull.
#[test]
fn wsgi_input_readline_readlines_and_iteration() {
    let a = start("wsgi-readline", "");
    let chunks: [&[u8]; 4] = [b"alpha\nbe", b"ta\ngam", b"ma\ndelta\nepsilon\n", b"zeta"];
    let mut raw =
        b"POST /app/readline HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for c in chunks {
        raw.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        raw.extend_from_slice(c);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = a.request_bytes(&raw);
    let body = r.text();
    let want = [
        ("readline", "\"alpha\\n\""),
        ("readline(2)", "\"be\""),
        ("readline-rest", "\"ta\\n\""),
        ("next", "\"gamma\\n\""),
        ("readlines(1)", "[\"delta\\n\"]"),
        ("readlines", "[\"epsilon\\n\", \"zeta\"]"),
        ("after-eof", "\"\""),
    ];
    for (key, value) in want {
        if r.status != 200 || !body.contains(&format!("\"{key}\": {value}")) {
            a.fail(&format!("wsgi.input {key}: expected {value}: {} {body}", r.status));
        }
    }
    // Lines of 200 KB and 1.5 MiB (longer than one 1 MiB frame) and a
    // short last one, with a Content-Length.
    let mut big = vec![b'x'; 200_000];
    big.push(b'\n');
    big.extend(std::iter::repeat_n(b'y', 1_572_864));
    big.push(b'\n');
    big.extend_from_slice(b"end");
    let mut raw = format!(
        "POST /app/readline?mode=sizes HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        big.len()
    )
    .into_bytes();
    raw.extend_from_slice(&big);
    let r = a.request_bytes(&raw);
    if r.status != 200 || r.text() != "[200001, 1572865, 3]" {
        a.fail(&format!("iterating long lines: {} {}", r.status, r.text()));
    }
}

/// README ("Serving Python", per-file handlers): a file's `application` is
/// loaded once per file and again when it changes. The same worker serves
/// the old code until the file changes, then the new code at the next
/// request, without a restart of the worker.
#[test]
fn a_per_file_script_is_reloaded_when_it_changes() {
    let a = start("wsgi-reload", "");
    let script = a.dir.join("htdocs/cgi/reload.py");
    let write = |version: &str| {
        let text = format!(
            "import os, time\nLOADED = '%d-%.6f' % (os.getpid(), time.time())\n\n\
             def application(environ, start_response):\n    \
             start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
             return [('{version} pid=%d loaded=%s' % (os.getpid(), LOADED)).encode()]\n"
        );
        std::fs::write(&script, text).unwrap();
    };
    let ask = |what: &str| {
        let r = a.get("/cgi/reload.py");
        if r.status != 200 {
            a.fail(&format!("{what}: {} {}", r.status, r.text()));
        }
        let text = r.text();
        let part = |k: &str| text.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap_or("").to_string();
        (text.split_whitespace().next().unwrap_or("").to_string(), part("pid="), part("loaded="))
    };
    write("v1");
    let (v, pid, loaded) = ask("first request");
    let (v2, pid2, loaded2) = ask("second request");
    if v != "v1" || v2 != "v1" || pid != pid2 || loaded != loaded2 {
        a.fail(&format!("loaded once per file: {v} {pid} {loaded} then {v2} {pid2} {loaded2}"));
    }
    // Change it (and make sure its mtime moves, whatever the clock's grain).
    let before = std::fs::metadata(&script).unwrap().modified().unwrap();
    write("v2");
    let f = std::fs::File::options().write(true).open(&script).unwrap();
    f.set_modified(before + Duration::from_secs(2)).unwrap();
    drop(f);
    let (v, pid3, loaded3) = ask("after the change");
    if v != "v2" || loaded3 == loaded {
        a.fail(&format!("the changed file was not reloaded: {v} loaded={loaded3} (before {loaded})"));
    }
    if pid3 != pid {
        a.fail(&format!("the worker was replaced ({pid} -> {pid3}): a change should only reload the file"));
    }
    let (v, _, loaded4) = ask("again");
    if v != "v2" || loaded4 != loaded3 {
        a.fail(&format!("reloaded again without a change: {v} loaded={loaded4} (was {loaded3})"));
    }
}

/// Request headers near the protocol's 1 MiB frame limit (README, "Serving
/// Python": "at most 1 MiB per frame"; the REQUEST frame carries every
/// header). Apache's LimitRequestFieldSize is raised so that Apache itself
/// lets them through: a 1,000,000-byte header reaches the application
/// whole; a 1,100,000-byte one gets a clean 431 and a PD0304 line naming
/// the limit, without being sent, and the group goes on serving.
#[test]
fn request_headers_near_the_frame_limit() {
    let a = start_with("wsgi-bighead", "", "LimitRequestFieldSize 2097152\n");
    let with_header = |n: usize| {
        let raw = format!(
            "GET /app/env HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
            "h".repeat(n)
        );
        a.request(&raw)
    };
    let r = with_header(1_000_000);
    let got = json_field(&r.text(), "HTTP_X_BIG").map(|v| v.len());
    if r.status != 200 || got != Some(1_000_000) {
        a.fail(&format!("a 1,000,000-byte header: status {}, the app saw {got:?} bytes", r.status));
    }
    let t = Instant::now();
    let r = with_header(1_100_000);
    eprintln!("a 1,100,000-byte header: {} after {} ms", r.status, t.elapsed().as_millis());
    if r.status != 431 {
        a.fail(&format!("a 1,100,000-byte header: status {} (expected 431): {}", r.status, r.text()));
    }
    if !wait_until(Duration::from_secs(3), || {
        a.error_log().lines().any(|l| l.contains("PD0304") && l.contains("1 MiB frame limit"))
    }) {
        a.fail("no PD0304 line naming the frame limit");
    }
    if a.get("/app/env").status != 200 {
        a.fail("the group does not serve after the oversized request");
    }
}

#[test]
fn access_log_can_show_the_queue_wait_and_the_worker() {
    let mut a =
        one_worker("wsgi-queue-note", "", "CustomLog \"@DIR@/queue.log\" \"%U %{procd-queue-us}n %{procd-worker}n\"\n");
    // The only worker is busy for 1 s: a request sent 0.3 s later waits
    // about 0.7 s for it.
    let busy = keep_busy(&a, 1);
    let r = a.get("/one/whoami");
    let _ = busy.join();
    let pid = r.text().trim().rsplit("pid=").next().unwrap_or("").to_string();
    let log = std::fs::read_to_string(a.dir.join("queue.log")).unwrap_or_default();
    let line = log.lines().find(|l| l.starts_with("/one/whoami ")).unwrap_or("").to_string();
    let fields: Vec<&str> = line.split(' ').collect();
    let waited_us: u64 = fields.get(1).and_then(|f| f.parse().ok()).unwrap_or(0);
    if r.status != 200 || fields.len() != 3 || fields[2] != pid || !(400_000..3_000_000).contains(&waited_us) {
        a.fail(&format!(
            "expected '/one/whoami <about 700000> {pid}' in the access log, got {line:?} (status {})",
            r.status
        ));
    }
    a.stop();
}

/// Reads one HTTP answer with a Content-Length from a kept-alive
/// connection: (status, body).
fn read_one(s: &mut TcpStream) -> Result<(u16, Vec<u8>), String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            other => {
                return Err(format!(
                    "the connection ended in the head ({other:?}): {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
        }
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if head.contains("transfer-encoding: chunked") {
        // Up to the last chunk (the tests' bodies never hold "0\r\n\r\n").
        let mut body = Vec::new();
        let mut chunk = vec![0u8; 65536];
        while !body.ends_with(b"0\r\n\r\n") {
            match s.read(&mut chunk) {
                Ok(n) if n > 0 => body.extend_from_slice(&chunk[..n]),
                other => return Err(format!("the chunked body ended after {} bytes ({other:?})", body.len())),
            }
        }
        return dechunk(&body).map(|b| (status, b)).ok_or_else(|| "a malformed chunked body".to_string());
    }
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).map_err(|e| format!("reading the body: {e}"))?;
    Ok((status, body))
}

#[test]
fn keepalive_thread_serves_a_connection_in_one_apache_thread() {
    // %{tid}P: the Apache thread that served the request; %{remote}p: the
    // client's port, which names the connection.
    let mut a = one_worker(
        "wsgi-keepalive-thread",
        "",
        "ProcdKeepAliveThread On\nCustomLog \"@DIR@/tid.log\" \"%U %{remote}p %{tid}P %>s\"\n",
    );
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let port = s.local_addr().unwrap().port();
    for i in 0..6 {
        let body = format!("body {i}");
        let req = if i % 2 == 0 {
            "GET /one/whoami HTTP/1.1\r\nHost: x\r\n\r\n".to_string()
        } else {
            format!("POST /one/env HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        };
        s.write_all(req.as_bytes()).unwrap();
        match read_one(&mut s) {
            Ok((200, got)) if i % 2 == 0 || String::from_utf8_lossy(&got).contains(&body) => {}
            other => a.fail(&format!("request {i} on the kept-alive connection: {other:?}")),
        }
        // Idle between requests, as a client is.
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(s);
    let tids = threads_of_connection(&a, port, 6);
    // The first request is read by the event MPM as usual; from the second
    // on, the connection stays with the thread that took it.
    if tids.len() != 6 || tids[1..].iter().any(|t| t != &tids[1]) {
        a.fail(&format!("expected requests 2-6 of the connection in one Apache thread, got threads {tids:?}"));
    }
    a.stop();
}

#[test]
fn keepalive_thread_takes_off_on_or_a_duration() {
    let mut a = Apache::new("wsgi-keepalive-thread-bad", Mpm::Event, "ProcdKeepAliveThread sometimes\n");
    for bad in ["sometimes", "2", "5s"] {
        a.set_extra(&format!("ProcdKeepAliveThread {bad}\n"));
        let (ok, out) = a.configtest();
        let said = format!("ProcdKeepAliveThread \"{bad}\": expected Off, On or a duration from 1ms to 1s");
        if ok || !out.contains(&said) {
            a.fail(&format!("configtest should refuse ProcdKeepAliveThread {bad}, said: {out}"));
        }
    }
    for good in ["off", "On", "2ms", "1s"] {
        a.set_extra(&format!("ProcdKeepAliveThread {good}\n"));
        let (ok, out) = a.configtest();
        if !ok {
            a.fail(&format!("configtest refused ProcdKeepAliveThread {good}: {out}"));
        }
    }
}

/// The Apache threads (%{tid}P) that served requests on the connection
/// from local port `port`, in order, once `n` are logged.
fn threads_of_connection(a: &Apache, port: u16, n: usize) -> Vec<String> {
    let mut tids = Vec::new();
    wait_until(Duration::from_secs(5), || {
        let log = std::fs::read_to_string(a.dir.join("tid.log")).unwrap_or_default();
        tids = log
            .lines()
            .filter(|l| l.split(' ').nth(1) == Some(&port.to_string()))
            .filter_map(|l| l.split(' ').nth(2).map(str::to_string))
            .collect();
        tids.len() == n
    });
    tids
}

#[test]
fn keepalive_wait_keeps_the_thread_for_quick_requests() {
    let mut a = one_worker(
        "wsgi-keepalive-wait",
        "",
        "ProcdKeepAliveThread 1s\nCustomLog \"@DIR@/tid.log\" \"%U %{remote}p %{tid}P %>s\"\n",
    );
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let port = s.local_addr().unwrap().port();
    // Four requests, each sent as soon as the previous answer is in, then
    // two after pauses longer than the wait (the connection goes back to
    // the event MPM's listener, which serves it on).
    for i in 0..6 {
        if i >= 4 {
            std::thread::sleep(Duration::from_millis(1300));
        }
        s.write_all(b"GET /one/whoami HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        match read_one(&mut s) {
            Ok((200, _)) => {}
            other => a.fail(&format!("request {i} on the kept-alive connection: {other:?}")),
        }
    }
    // Two requests in one write (pipelined): the second is in Apache's
    // buffer, not the socket, and must not wait for the 1 s.
    let t0 = Instant::now();
    s.write_all(b"GET /one/whoami HTTP/1.1\r\nHost: x\r\n\r\nGET /one/whoami HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    for i in 0..2 {
        match read_one(&mut s) {
            Ok((200, _)) => {}
            other => a.fail(&format!("pipelined request {i}: {other:?}")),
        }
    }
    let pipelined = t0.elapsed();
    drop(s);
    let tids = threads_of_connection(&a, port, 8);
    if tids.len() != 8 || tids[1..4].iter().any(|t| t != &tids[0]) {
        a.fail(&format!("expected requests 1-4 of the connection in one Apache thread, got threads {tids:?}"));
    }
    if pipelined > Duration::from_millis(500) {
        a.fail(&format!("two pipelined requests took {pipelined:?}: the second waited"));
    }
    a.stop();
}

#[test]
fn keepalive_wait_follows_an_internal_redirect() {
    // /missing is a static 404 whose ErrorDocument the group serves: the
    // handler runs in the redirect's request, while log_transaction (where
    // the wait is) gets the first request of the chain.
    let mut a = one_worker(
        "wsgi-keepalive-wait-redirect",
        "",
        "ProcdKeepAliveThread 1s\nErrorDocument 404 /one/whoami\n\
         CustomLog \"@DIR@/tid.log\" \"%U %{remote}p %{tid}P %>s\"\n",
    );
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let port = s.local_addr().unwrap().port();
    for i in 0..4 {
        s.write_all(b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        match read_one(&mut s) {
            // The status is the application's (200 here), as with mod_wsgi
            // and CGI, which see the original one in REDIRECT_STATUS.
            Ok((200, body)) if String::from_utf8_lossy(&body).contains("pid=") => {}
            other => a.fail(&format!("request {i}: expected the group's page, got {other:?}")),
        }
    }
    drop(s);
    let tids = threads_of_connection(&a, port, 4);
    if tids.len() != 4 || tids.iter().any(|t| t != &tids[0]) {
        a.fail(&format!("expected the 4 redirected requests in one Apache thread, got threads {tids:?}"));
    }
    a.stop();
}

#[test]
fn keepalive_settings_leave_an_included_response_whole() {
    // A server-side include is a subrequest: its response is part of the
    // page's, so neither setting may end the response or hand the
    // connection on there. The page goes on after the include, and the
    // connection serves a next request. (This checks that the page is
    // whole; it passes without the handler's subrequest guard too, whose
    // work the subrequest's own notes and filters already do.)
    for (name, setting) in [("wsgi-keepalive-include-on", "On"), ("wsgi-keepalive-include-wait", "1s")] {
        let mut a = one_worker(
            name,
            "",
            &format!(
                "ProcdKeepAliveThread {setting}\n\
                 LoadModule include_module {MODULES}/mod_include.so\n\
                 <Directory \"@DIR@/htdocs\">\n  Options +Includes\n</Directory>\n\
                 AddOutputFilter INCLUDES .shtml\n"
            ),
        );
        std::fs::write(a.dir.join("htdocs/page.shtml"), "before\n<!--#include virtual=\"/one/whoami\" -->after\n")
            .unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for i in 0..3 {
            s.write_all(b"GET /page.shtml HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let page = match read_one(&mut s) {
                Ok((200, body)) => String::from_utf8_lossy(&body).into_owned(),
                other => a.fail(&format!("ProcdKeepAliveThread {setting}, request {i}: {other:?}")),
            };
            if !(page.starts_with("before\n") && page.contains("pid=") && page.ends_with("after\n")) {
                a.fail(&format!("ProcdKeepAliveThread {setting}, request {i}: the page is not whole: {page:?}"));
            }
        }
        a.stop();
    }
}

/// A module that puts an output filter of its own after Apache's core
/// output filter (an ftype above AP_FTYPE_NETWORK), built with apxs. The
/// event MPM's write completion calls the last filter with NULL to flush
/// what the core holds, so this one hands that call to the core's. (The
/// core's pre_connection hook returns DONE, so the filter is added before
/// it and sorted behind it by its ftype.)
const LAST_FILTER_MODULE: &str = r#"
#include "httpd.h"
#include "http_config.h"
#include "http_connection.h"
#include "util_filter.h"
static ap_filter_rec_t *last_filter;
static apr_status_t last_out(ap_filter_t *f, apr_bucket_brigade *bb) {
    ap_filter_t *core = f->c->output_filters;
    if (bb) return ap_pass_brigade(f->next, bb);
    while (core->next != f) core = core->next;
    return core->frec->filter_func.out_func(core, NULL);
}
static int last_pre_connection(conn_rec *c, void *csd) {
    ap_add_output_filter_handle(last_filter, NULL, NULL, c);
    return OK;
}
static void last_hooks(apr_pool_t *p) {
    last_filter = ap_register_output_filter("PROBE_AFTER_CORE", last_out, NULL, AP_FTYPE_NETWORK + 5);
    ap_hook_pre_connection(last_pre_connection, NULL, NULL, APR_HOOK_MIDDLE);
}
module AP_MODULE_DECLARE_DATA after_core_module = { STANDARD20_MODULE_STUFF, NULL, NULL, NULL, NULL, NULL, last_hooks };
"#;

#[test]
fn keepalive_settings_say_when_the_core_filter_is_not_last() {
    // Only the core's own output filter can be asked to write without
    // blocking; behind another module's filter both settings stand aside,
    // the connection is served as with Off, and the error log says so once
    // per child.
    let build = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("after-core");
    std::fs::create_dir_all(&build).unwrap();
    std::fs::write(build.join("mod_after_core.c"), LAST_FILTER_MODULE).unwrap();
    let out =
        std::process::Command::new("apxs").arg("-c").arg("mod_after_core.c").current_dir(&build).output().unwrap();
    assert!(out.status.success(), "apxs -c failed: {}", String::from_utf8_lossy(&out.stderr));
    let so = build.join(".libs/mod_after_core.so");
    for (name, setting) in [("wsgi-keepalive-after-core-on", "On"), ("wsgi-keepalive-after-core-wait", "1s")] {
        let mut a = one_worker(
            name,
            "",
            &format!(
                "ProcdKeepAliveThread {setting}\nLoadModule after_core_module {}\nLogLevel notice procd:info\n",
                so.display()
            ),
        );
        let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for i in 0..3 {
            s.write_all(b"GET /one/whoami HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            match read_one(&mut s) {
                Ok((200, _)) => {}
                other => a.fail(&format!("ProcdKeepAliveThread {setting}, request {i}: {other:?}")),
            }
        }
        drop(s);
        let said = "PD0308: ProcdKeepAliveThread has no effect where a connection's last output filter is \
                    \"probe_after_core\"";
        wait_until(Duration::from_secs(5), || a.error_log().contains(said));
        // Once per child: each line from another Apache process.
        let log = a.error_log();
        let pids: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(said))
            .filter_map(|l| l.split("[pid ").nth(1)?.split(':').next())
            .collect();
        let distinct: std::collections::HashSet<_> = pids.iter().collect();
        if pids.is_empty() || distinct.len() != pids.len() {
            a.fail(&format!("ProcdKeepAliveThread {setting}: expected the PD0308 line once per child, from {pids:?}"));
        }
        a.stop();
    }
}

#[test]
fn keepalive_thread_finishes_a_big_response_to_a_slow_reader() {
    big_responses_to_a_slow_reader("wsgi-keepalive-thread-slow", "ProcdKeepAliveThread On\n");
}

#[test]
fn keepalive_wait_finishes_a_big_response_to_a_slow_reader() {
    big_responses_to_a_slow_reader("wsgi-keepalive-wait-slow", "ProcdKeepAliveThread 200ms\n");
}

#[test]
fn keepalive_wait_leaves_a_late_readers_rest_to_the_mpm() {
    late_reader_does_not_hold_the_thread("wsgi-keepalive-wait-late", "ProcdKeepAliveThread 200ms\n");
}

#[test]
fn keepalive_thread_leaves_a_late_readers_rest_to_the_mpm() {
    late_reader_does_not_hold_the_thread("wsgi-keepalive-thread-late", "ProcdKeepAliveThread On\n");
}

/// One Apache thread, a 4 KiB send buffer and a client with a small
/// receive buffer that does not read: a 48 KiB response (under the core
/// output filter's 64 KiB threshold, so writing the body never blocks the
/// handler) cannot all go out. Finishing it must not block either: the rest
/// is left to the event MPM's write completion and the thread is free, so a
/// second connection is served while the first client still has not read.
fn late_reader_does_not_hold_the_thread(name: &str, directive: &str) {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, setsockopt, socket, sockopt};
    let one_thread = "SendBufferSize 4096\nServerLimit 1\nThreadsPerChild 1\nMaxRequestWorkers 1\nMinSpareThreads 1\nMaxSpareThreads 2\n";
    let mut a = one_worker(name, "", &format!("{directive}{one_thread}"));
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::empty(), None).unwrap();
    setsockopt(&fd, sockopt::RcvBuf, &4096).unwrap();
    // The receive buffer is set before connect, so the window offered
    // from the first segment on is small.
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid sockaddr_in and its size, on the socket just made.
    let rc = unsafe {
        libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
    let mut late = TcpStream::from(fd);
    late.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = "a".repeat(48 << 10);
    let head = format!("POST /one/env HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len());
    late.write_all(head.as_bytes()).unwrap();
    late.write_all(body.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let mut other = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    other.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    other.write_all(b"GET /one/whoami HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let served = read_one(&mut other);
    let took = t0.elapsed();
    match served {
        Ok((200, _)) if took < Duration::from_secs(2) => {}
        other => a.fail(&format!(
            "a second connection, while the first client does not read its response: {other:?} after {took:?} (the only Apache thread was held)"
        )),
    }
    // The only thread may still be holding `other` (ProcdKeepAliveThread)
    // when the late reader's response is done and its connection waits for
    // the next request: the event MPM closes waiting connections while all
    // its threads are busy ("All workers are busy or dying, will shutdown 1
    // keep-alive connections" at mpm_event:trace1), which is its design and
    // not what this test is about. Closing `other` first frees the thread.
    drop(other);
    std::thread::sleep(Duration::from_millis(100));
    match read_one(&mut late) {
        Ok((200, got)) if got.len() > 48 << 10 => {}
        Ok((status, got)) => a.fail(&format!("the late reader got {status} with {} bytes", got.len())),
        Err(e) => a.fail(&format!("the late reader: {e}")),
    }
    late.write_all(b"GET /one/whoami HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    match read_one(&mut late) {
        Ok((200, _)) => {}
        other => a.fail(&format!("the next request on the late reader's connection: {other:?}")),
    }
    a.stop();
}

fn big_responses_to_a_slow_reader(name: &str, directive: &str) {
    // The connection is kept (On) or waited on (a duration) only once a
    // response has gone out whole: the event MPM skips its write completion
    // for kept connections, so a response left half-written would wait,
    // unsent, behind the read of the next request; a wait with output
    // still held would delay that output. A late reader's rest is left to
    // the MPM's write completion instead. This checks big responses to a
    // reader that starts late all arrive, and the connection serves on.
    let mut a = one_worker(name, "", directive);
    let mut s = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = Instant::now();
    let body = "a".repeat(4 << 20);
    for round in 0..3 {
        // /env echoes the body in one piece (with a Content-Length): 4 MiB
        // that Apache cannot write at once to a reader that starts late.
        let head = format!("POST /one/env HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len());
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        match read_one(&mut s) {
            Ok((200, got)) if got.len() > 4 << 20 => {}
            Ok((status, got)) => a.fail(&format!("round {round}: {status} with {} bytes", got.len())),
            Err(e) => a.fail(&format!("round {round}: {e} after {:?}", t0.elapsed())),
        }
        s.write_all(b"GET /one/whoami HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        match read_one(&mut s) {
            Ok((200, _)) => {}
            other => a.fail(&format!("round {round}: the next request on the connection: {other:?}")),
        }
    }
    if t0.elapsed() > Duration::from_secs(8) {
        a.fail(&format!("three big responses and three small ones took {:?}", t0.elapsed()));
    }
    a.stop();
}

/// Sends `per_client` GETs of `path` from each of `clients` threads at
/// once; the bodies, in no particular order.
fn bodies_from_clients(port: u16, path: &'static str, clients: usize, per_client: usize) -> Vec<String> {
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                (0..per_client)
                    .map(|_| http_get(port, path).map_or_else(|e| e, |r| format!("{} {}", r.status, r.text().trim())))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads.into_iter().flat_map(|t| t.join().unwrap_or_default()).collect()
}

/// Under the GIL a second request taken while the first computes only
/// shares the CPU with it: with `intake=gil`, while requests are quick a
/// process takes them one at a time (the rest wait for a free process, in
/// order); one that sleeps lets the process take requests on all its
/// threads. Without it (the default) every thread takes requests.
#[test]
fn intake_gil_takes_quick_requests_in_turn_and_sleeping_ones_side_by_side() {
    ensure_user("procd-test-a");
    let conf = "LanguageGroup gil language=python processes=1 threads=4 intake=gil user=procd-test-a app=@DIR@/wsgi_app.py\n\
                LanguageMount /gil gil\n\
                LanguageGroup all language=python processes=1 threads=4 intake=threads user=procd-test-a app=@DIR@/wsgi_app.py\n\
                LanguageMount /all all\n\
                LanguageGroup two language=python processes=2 threads=4 intake=gil user=procd-test-a app=@DIR@/wsgi_app.py\n\
                LanguageMount /two two\n";
    let mut a = Apache::new("wsgi-intake", Mpm::Event, conf);
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/wsgi_app.py"), a.dir.join("wsgi_app.py")).unwrap();
    a.start();
    wait_until(Duration::from_secs(10), || a.get("/gil/env").status == 200 && a.get("/all/env").status == 200);
    // /env reads the request body from Apache: a look that finds it waiting
    // there (a slow round trip on a loaded box) rightly lets the process
    // take requests side by side for SLOW_FOR (1 s). Let that pass first.
    std::thread::sleep(Duration::from_millis(1200));

    // Quick requests from 8 clients at once: with intake=gil each ran alone
    // in its process (a request the loaded box stalls may let one more in);
    // by default most ran beside another.
    let overlapped = |a: &Apache, path: &'static str| {
        let answers = bodies_from_clients(a.port, path, 8, 40);
        let failed: Vec<_> = answers.iter().filter(|b| !b.starts_with("200 ")).cloned().collect();
        if !failed.is_empty() {
            a.fail(&format!("{path}: failed requests: {failed:?}"));
        }
        answers.iter().filter(|b| b.as_str() == "200 overlap").count()
    };
    // /overlap lets go of the GIL for a moment (time.sleep(0), a system
    // call): a look that finds a thread there, preempted on a loaded box,
    // rightly lets its process take requests side by side for SLOW_FOR.
    // Up to 3 tries, each after SLOW_FOR.
    let mut tries = Vec::new();
    while tries.len() < 3 && tries.last().is_none_or(|&(gil, all)| gil * 10 > 320 || all * 4 < 320) {
        if !tries.is_empty() {
            std::thread::sleep(Duration::from_millis(1200));
        }
        tries.push((overlapped(&a, "/gil/overlap"), overlapped(&a, "/all/overlap")));
    }
    if tries.iter().all(|&(gil, all)| gil * 10 > 320 || all * 4 < 320) {
        a.fail(&format!(
            "quick requests that ran beside another, of 320 (with intake=gil, with intake=threads), in 3 tries: {tries:?}"
        ));
    }

    // Two computing requests at once: a process that computes leaves the
    // second to the other process, not to one of its own idle threads. A
    // request whose head Apache is slow to send (a loaded box) is rightly
    // seen asleep, and its process takes requests side by side for
    // SLOW_FOR: up to 3 tries of 5 pairs, each after SLOW_FOR.
    wait_until(Duration::from_secs(10), || a.get("/two/env").status == 200);
    let mut tries = Vec::new();
    while tries.len() < 3 && tries.last().is_none_or(|&apart| apart < 4) {
        std::thread::sleep(Duration::from_millis(1200));
        let apart = (0..5)
            .filter(|_| {
                let pids = bodies_from_clients(a.port, "/two/compute?ms=80", 2, 1);
                pids.len() == 2 && pids[0].starts_with("200 pid=") && pids[0] != pids[1]
            })
            .count();
        tries.push(apart);
    }
    if tries.iter().all(|&apart| apart < 4) {
        a.fail(&format!("of 5 pairs of computing requests, only {tries:?} went to the two processes, in 3 tries"));
    }

    // Computing without the GIL (hashlib lets go of it, as numpy does): the
    // process takes the others beside it; computing in Python: one at a
    // time. 4 requests of 60 ms at once, a round of each; the watcher may
    // wake too late to tell on a loaded box, so up to 3 rounds.
    let overlapping = |path: &'static str| {
        std::thread::sleep(Duration::from_millis(1200)); // past SLOW_FOR of anything before
        let answers = bodies_from_clients(a.port, path, 4, 1);
        if answers.iter().any(|b| !b.starts_with("200 ")) {
            a.fail(&format!("{path}: {answers:?}"));
        }
        answers.iter().filter(|b| b.as_str() == "200 overlap").count()
    };
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let nogil = overlapping("/gil/overlap?work=nogil&ms=60");
        let gil = overlapping("/gil/overlap?work=gil&ms=60");
        rounds.push((nogil, gil));
        if nogil >= 3 && gil <= 2 {
            break;
        }
    }
    if !rounds.iter().any(|&(nogil, gil)| nogil >= 3 && gil <= 2) {
        a.fail(&format!(
            "of 4 requests at once that ran beside another, (without the GIL, in Python) in each round: {rounds:?}; \
             expected 3 or 4 without the GIL and at most 2 in Python"
        ));
    }

    // Sleeping ones (0.6 s) on all 4 threads at once, not one by one.
    let t0 = Instant::now();
    let answers = bodies_from_clients(a.port, "/gil/sleep?s=0.6", 4, 1);
    let took = t0.elapsed();
    if answers.iter().any(|b| b != "200 slept") || took > Duration::from_millis(1500) {
        a.fail(&format!("4 requests asleep 0.6 s on 4 threads took {took:?}: {answers:?}"));
    }
    a.stop();
}
