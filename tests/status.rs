//! procd-status through a real Apache: exact request counters (also across
//! a graceful restart), a slow request's URI while it runs, a recycle and a
//! graceful restart with their reasons, a crash-looping group's back-off,
//! failures by cause, ProcdStatus vhost, the Prometheus text parsed by
//! prometheus_client, the JSON validated against src/status/schema.json,
//! and an env= secret in no format. With PROCD_STATUS_SCREENSHOT=FILE, the
//! HTML page is also rendered by headless Chromium into FILE
//! (tests/status-screenshot.sh).

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const USER: &str = "procd-test-a";
const SECRET: &str = "s3cr3t-token-7f1e9";

fn conf(port: u16) -> String {
    format!(
        r#"
LanguageGroup shop language=python user={USER} app=@DIR@/pool_app.py processes=1 threads=4 maximum-requests=7 "env=API_TOKEN={SECRET}"
LanguageMount /app shop
LanguageGroup bad language=python user={USER} "command=/usr/bin/python3 @DIR@/echo_worker.py" app=@DIR@/pool_app.py processes=1 queue-timeout=1 env=WORKER_MODE=fail
LanguageMount /bad bad
<Location /procd-status>
    SetHandler procd-status
    Require all granted
</Location>
<Location /mine>
    SetHandler procd-status
    ProcdStatus vhost
</Location>
<VirtualHost 127.0.0.1:{port}>
    ServerName 127.0.0.1
</VirtualHost>
<VirtualHost 127.0.0.1:{port}>
    ServerName other.test
    LanguageGroup other language=python user={USER} "command=/usr/bin/python3 @DIR@/echo_worker.py" processes=1
    <Location /vstatus>
        SetHandler procd-status
        ProcdStatus vhost
    </Location>
</VirtualHost>
"#
    )
}

fn json(a: &Apache, path: &str, host: &str) -> serde_json::Value {
    let r = a.request(&format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"));
    if r.status != 200 {
        a.fail(&format!("{path}: status {}: {}", r.status, r.text()));
    }
    serde_json::from_slice(&r.body).unwrap_or_else(|e| a.fail(&format!("{path}: not JSON ({e}): {}", r.text())))
}

fn group<'v>(doc: &'v serde_json::Value, name: &str) -> Option<&'v serde_json::Value> {
    doc["groups"].as_array()?.iter().find(|g| g["name"] == name)
}

fn status(a: &Apache) -> serde_json::Value {
    json(a, "/procd-status?json", "127.0.0.1")
}

fn shop_count(a: &Apache, class: &str) -> u64 {
    group(&status(a), "shop").and_then(|g| g["requests"]["by_class"][class].as_u64()).unwrap_or(0)
}

fn get_ok(a: &Apache, path: &str) {
    let r = a.get(path);
    if r.status != 200 {
        a.fail(&format!("{path}: status {}: {}", r.status, r.text()));
    }
}

/// Runs python3 with `script` and `args`: its output, or a failure.
fn python(a: &Apache, script: &str, input: &[u8], args: &[&str]) -> String {
    use std::io::Write;
    let mut child = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| a.fail(&format!("python3: {e}")));
    child.stdin.take().expect("stdin").write_all(input).expect("write to python3");
    let out = child.wait_with_output().expect("python3 output");
    if !out.status.success() {
        a.fail(&format!(
            "python3 check failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const PARSE_PROMETHEUS: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
n = 0
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        n += 1
        if s.name == "procd_requests_total" and s.labels == {"group": "shop", "code_class": "2xx"}:
            print("shop2xx", int(s.value))
        if s.name == "procd_request_duration_seconds_count" and s.labels == {"group": "shop"}:
            print("shopcount", int(s.value))
print("samples", n)
"#;

const VALIDATE_JSON: &str = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
jsonschema.validate(json.load(sys.stdin), schema, cls=jsonschema.Draft202012Validator)
print("valid")
"#;

#[test]
fn counters_states_and_formats() {
    ensure_user(USER);
    let mut a = Apache::new("status", Mpm::Event, "");
    a.set_extra(&conf(a.port));
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/pool_app.py"), a.dir.join("pool_app.py"))
        .expect("copy the app");
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();

    // The manager's state appears: shop serving with a ready worker.
    let ready = wait_until(Duration::from_secs(15), || {
        group(&status(&a), "shop").is_some_and(|g| {
            g["manager"]["workers"].as_array().is_some_and(|w| w.iter().any(|w| w["state"] == "ready"))
        })
    });
    if !ready {
        a.fail(&format!("no ready shop worker in procd-status after 15 s: {}", status(&a)));
    }

    // Exact counts, whichever Apache child served them.
    for i in 0..20 {
        get_ok(&a, &format!("/app/pid?n={i}"));
    }
    let doc = status(&a);
    let shop = group(&doc, "shop").unwrap_or_else(|| a.fail("no group shop"));
    let req = &shop["requests"];
    if req["total"] != 20 || req["by_class"]["2xx"] != 20 || req["in_flight"] != 0 || req["histogram"]["count"] != 20 {
        a.fail(&format!("after 20 requests: {req}"));
    }
    if req["last_minute"]["requests"] != 20 || req["last_minute"]["p50_seconds"].as_f64().is_none() {
        a.fail(&format!("the last minute after 20 requests: {}", req["last_minute"]));
    }

    // A recycle (maximum-requests=7) appears with its reason.
    let recycled = wait_until(Duration::from_secs(10), || {
        group(&status(&a), "shop")
            .is_some_and(|g| g["manager"]["events"]["recycles"]["maximum-requests"].as_u64() >= Some(1))
    });
    if !recycled {
        a.fail(&format!("no maximum-requests recycle in procd-status: {}", status(&a)));
    }

    // A crash-looping group shows its back-off, and what it answers is
    // counted by cause.
    let backing_off = wait_until(Duration::from_secs(10), || {
        group(&status(&a), "bad").is_some_and(|g| {
            g["manager"]["events"]["backoffs"].as_u64() >= Some(1) && g["manager"]["failures"].as_u64() >= Some(1)
        })
    });
    if !backing_off {
        a.fail(&format!("the crash-looping group shows no back-off: {}", status(&a)));
    }
    let html = a.get("/procd-status").text();
    if !html.contains("back-off:") {
        a.fail(&format!("the HTML page does not say the group backs off:\n{html}"));
    }
    let r = a.get("/bad/x");
    if r.status != 503 {
        a.fail(&format!("/bad/x: expected 503, got {}", r.status));
    }
    let bad = status(&a);
    let bad = &group(&bad, "bad").unwrap_or_else(|| a.fail("no group bad"))["requests"];
    if bad["by_class"]["5xx"] != 1 || bad["failures"]["not-running"] != 1 {
        a.fail(&format!("the 503 of a group that does not run, counted: {bad}"));
    }

    // A graceful restart: counters go on, and it appears with its reason.
    a.graceful();
    for i in 0..10 {
        get_ok(&a, &format!("/app/pid?after={i}"));
    }
    if shop_count(&a, "2xx") != 30 {
        a.fail(&format!("30 requests across a graceful restart, counted: {}", status(&a)));
    }
    // (The manager's snapshot is at most a second or so old.)
    let counted = wait_until(Duration::from_secs(5), || {
        group(&status(&a), "shop").is_some_and(|g| g["manager"]["events"]["generations"]["graceful-restart"] == 1)
    });
    if !counted {
        a.fail(&format!("the graceful restart is not counted: {}", status(&a)));
    }

    // A slow request shows its method and path (not its query) while it runs.
    let port = a.port;
    let slow = std::thread::spawn(move || http_get(port, "/app/sleep?2500"));
    let seen = wait_until(Duration::from_secs(2), || {
        group(&status(&a), "shop").is_some_and(|g| {
            g["requests"]["in_progress"]
                .as_array()
                .is_some_and(|q| q.iter().any(|q| q["method"] == "GET" && q["uri"] == "/app/sleep?\u{2026}"))
        })
    });
    let page = a.get("/procd-status").text();
    let _ = slow.join();
    if !seen {
        a.fail(&format!("the slow request was not shown while it ran: {}", status(&a)));
    }
    if !page.contains("GET /app/sleep?\u{2026}") {
        a.fail(&format!("the HTML page does not show the slow request:\n{page}"));
    }
    if shop_count(&a, "2xx") != 31 {
        a.fail("the slow request was not counted once");
    }

    // ProcdStatus vhost: each virtual host sees its own groups (and the
    // main server's).
    let mine = json(&a, "/mine?json", "127.0.0.1");
    if group(&mine, "other").is_some() || group(&mine, "shop").is_none() || mine["vhost_only"] != true {
        a.fail(&format!("ProcdStatus vhost in the main server: {mine}"));
    }
    let theirs = json(&a, "/vstatus?json", "other.test");
    if group(&theirs, "other").is_none() {
        a.fail(&format!("ProcdStatus vhost in other.test: {theirs}"));
    }

    // The formats: Prometheus parses, JSON validates, no secret anywhere.
    let prom = a.get("/procd-status?prometheus");
    if !prom.head.contains("text/plain; version=0.0.4") {
        a.fail(&format!("Prometheus content type: {}", prom.head));
    }
    let parsed = python(&a, PARSE_PROMETHEUS, &prom.body, &[]);
    if !parsed.contains("shop2xx 31") || !parsed.contains("shopcount 31") {
        a.fail(&format!("prometheus_client read:\n{parsed}\nfrom:\n{}", prom.text()));
    }
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/src/status/schema.json");
    let body = a.get("/procd-status?json").body;
    python(&a, VALIDATE_JSON, &body, &[schema]);
    for path in ["/procd-status", "/procd-status?json", "/procd-status?prometheus", "/procd-status?refresh=5"] {
        if a.get(path).text().contains(SECRET) {
            a.fail(&format!("{path} shows the env= secret"));
        }
    }
    if a.get("/procd-status?refresh=0").status != 400 {
        a.fail("refresh=0 is not refused");
    }

    if let Ok(out) = std::env::var("PROCD_STATUS_SCREENSHOT") {
        screenshot(&a, &out);
    }
    a.stop();
}

/// Renders the HTML page in headless Chromium into `out` (a PNG), with a
/// slow request running so that a busy row shows.
fn screenshot(a: &Apache, out: &str) {
    for i in 0..40 {
        get_ok(a, &format!("/app/pid?shot={i}"));
    }
    let port = a.port;
    let slow = std::thread::spawn(move || http_get(port, "/app/sleep?4000"));
    std::thread::sleep(Duration::from_millis(1500));
    let profile = a.dir.join("chromium-profile");
    let result = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--screenshot={out}"),
            "--window-size=1200,1700",
        ])
        .arg(format!("http://127.0.0.1:{}/procd-status", a.port))
        .output();
    let _ = slow.join();
    match result {
        Ok(o) if o.status.success() => eprintln!("screenshot written to {out}"),
        Ok(o) => a.fail(&format!("chromium failed: {}", String::from_utf8_lossy(&o.stderr))),
        Err(e) => a.fail(&format!("chromium: {e}")),
    }
}

/// Under prefork every request may be served by another child process:
/// the counters are still exact (shared memory, atomics).
#[test]
fn counters_are_exact_under_prefork() {
    ensure_user(USER);
    let conf = format!(
        "LanguageGroup shop language=python user={USER} app=@DIR@/pool_app.py processes=2\nLanguageMount /app shop\n<Location /procd-status>\n    SetHandler procd-status\n</Location>\n"
    );
    let mut a = Apache::new("status-prefork", Mpm::Prefork, &conf);
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/pool_app.py"), a.dir.join("pool_app.py"))
        .expect("copy the app");
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    let port = a.port;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                (0..10).filter(|_| http_get(port, "/app/pid").is_ok_and(|r| r.status == 200)).count()
            })
        })
        .collect();
    let ok: usize = clients.into_iter().map(|c| c.join().expect("client")).sum();
    if ok != 40 {
        a.fail(&format!("{ok} of 40 requests answered 200"));
    }
    let doc = status(&a);
    let req = &group(&doc, "shop").unwrap_or_else(|| a.fail("no group shop"))["requests"];
    if req["total"] != 40 || req["by_class"]["2xx"] != 40 || req["in_flight"] != 0 {
        a.fail(&format!("40 requests under prefork, counted: {req}"));
    }
    a.stop();
}

/// mod_status's server-status carries a line per group (HTML and `?auto`),
/// with the same request count as procd-status.
#[test]
fn server_status_has_a_line_per_group() {
    ensure_user(USER);
    let mut a = Apache::new("modstatus", Mpm::Event, "");
    a.set_extra(&format!(
        "LoadModule status_module /usr/lib/apache2/modules/mod_status.so\n{}\n<Location /server-status>\n    SetHandler server-status\n    Require all granted\n</Location>\n",
        conf(a.port)
    ));
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/pool_app.py"), a.dir.join("pool_app.py"))
        .expect("copy the app");
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    for _ in 0..5 {
        get_ok(&a, "/app/");
    }
    let shop_line = |auto: &str| auto.lines().find(|l| l.starts_with("ProcdGroup.shop: ")).map(str::to_string);
    // The manager's snapshot says "serving" within its rewrite interval.
    let mut auto = String::new();
    wait_until(Duration::from_secs(10), || {
        auto = a.get("/server-status?auto").text();
        shop_line(&auto).is_some_and(|l| l.ends_with("state=serving"))
    });
    let ok = shop_count(&a, "2xx");
    if ok != 5 {
        a.fail(&format!("procd-status counts {ok} answers of shop, not 5"));
    }
    let line =
        shop_line(&auto).unwrap_or_else(|| a.fail(&format!("no ProcdGroup.shop line in server-status?auto:\n{auto}")));
    if !line.contains(&format!(" requests={ok} ")) || !line.contains("workers=1 ") || !line.ends_with("state=serving") {
        a.fail(&format!("server-status?auto says {line:?}; procd-status counted {ok} answers"));
    }
    if !auto.lines().any(|l| l.starts_with("ProcdGroup.bad: ")) {
        a.fail(&format!("no line for group bad:\n{auto}"));
    }
    let page = a.get("/server-status").text();
    if !page.contains("<h2>mod_procd process groups</h2>") || !page.contains("<td>shop</td><td>1</td>") {
        a.fail(&format!("server-status has no procd table:\n{page}"));
    }
    a.stop();
}
