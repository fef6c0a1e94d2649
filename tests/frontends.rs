//! Groups behind Apache's other front ends (README, Serving Python: "the
//! body go[es] through Apache's output filters, so mod_deflate, mod_cache,
//! mod_ssl and mod_http2 apply"): HTTP/2 in clear text (h2c, prior
//! knowledge) with bodies both ways and streaming, and TLS with a
//! self-signed certificate the test makes (HTTPS=on reaches the app; h2
//! over TLS too). The client is curl, which must have HTTP/2 (nghttp2).

mod common;
use common::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GROUP: &str = "LanguageGroup py language=python processes=1 threads=4 user=procd-test-a app=@DIR@/wsgi_app.py\n\
                     LanguageMount /app py\n";

fn start(name: &str, extra: &str) -> Apache {
    ensure_user("procd-test-a");
    let h2 = format!("LoadModule http2_module {MODULES}/mod_http2.so\nProtocols h2c http/1.1\n");
    let a = Apache::new(name, Mpm::Event, &format!("{h2}{GROUP}{extra}"));
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/wsgi_app.py"), a.dir.join("wsgi_app.py")).unwrap();
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a
}

/// curl with `args`: (stdout, the `-w` line after the body).
fn curl(a: &Apache, args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code} %{http_version}"])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        a.fail(&format!("curl {args:?} failed: {}{text}", String::from_utf8_lossy(&out.stderr)));
    }
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", ""));
    (body.to_string(), status.to_string())
}

/// A field of the JSON object /app/env returns (flat, string values).
fn json_field(body: &str, key: &str) -> String {
    let needle = format!("\"{key}\": \"");
    body.find(&needle).map(|i| body[i + needle.len()..].split('"').next().unwrap_or("").to_string()).unwrap_or_default()
}

fn curl_has_http2() -> bool {
    let out = Command::new("curl").arg("--version").output().expect("curl --version");
    String::from_utf8_lossy(&out.stdout).contains("HTTP2")
}

#[test]
fn a_group_behind_mod_http2_h2c() {
    assert!(curl_has_http2(), "curl lacks HTTP/2 (Debian's curl has it: docker/install-deps.sh)");
    let mut a = start("front-h2c", "");
    a.start();
    let base = format!("http://127.0.0.1:{}", a.port);
    if !wait_until(Duration::from_secs(10), || a.get("/app/env").status == 200) {
        a.fail("the group does not answer");
    }
    // The environment, with a request body, over HTTP/2.
    let (body, status) = curl(
        &a,
        &["--http2-prior-knowledge", "--data-binary", "abcde", "-H", "X-Thing: h2", &format!("{base}/app/env/x?q=1")],
    );
    let expect = [
        ("SERVER_PROTOCOL", "HTTP/2.0"),
        ("REQUEST_METHOD", "POST"),
        ("PATH_INFO", "/env/x"),
        ("QUERY_STRING", "q=1"),
        ("HTTP_X_THING", "h2"),
        ("body", "abcde"),
        ("HTTPS", "off"),
    ];
    for (k, v) in expect {
        if json_field(&body, k) != v {
            a.fail(&format!("h2c: {k} = {:?}, expected {v:?} ({status}): {body}", json_field(&body, k)));
        }
    }
    if status != "200 2" {
        a.fail(&format!("h2c: expected 200 over HTTP/2, got {status:?}"));
    }
    // 5 MiB each way (HTTP/2 flow control on both sides).
    let upload = a.dir.join("upload.bin");
    std::fs::write(&upload, vec![b'u'; 5 << 20]).unwrap();
    let (body, status) = curl(
        &a,
        &["--http2-prior-knowledge", "--data-binary", &format!("@{}", upload.display()), &format!("{base}/app/upload")],
    );
    if status != "200 2" || !body.ends_with(&format!(" {}", 5 << 20)) {
        a.fail(&format!("h2c upload: {status} {body}"));
    }
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--http2-prior-knowledge", &format!("{base}/app/big?mb=5")])
        .output()
        .unwrap();
    if out.stdout.len() != 5 << 20 || out.stdout[..256] != (0..=255u8).collect::<Vec<_>>()[..] {
        a.fail(&format!("h2c download: {} bytes", out.stdout.len()));
    }
    // Streaming: the first part arrives before the application finishes.
    let mut child = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "20", "--http2-prior-knowledge", &format!("{base}/app/stream")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut stdout = child.stdout.take().unwrap();
    let (mut got, mut buf, mut first) = (Vec::new(), [0u8; 4096], None);
    loop {
        match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if first.is_none() && got.starts_with(b"first") {
            first = Some(t0.elapsed());
        }
    }
    let total = t0.elapsed();
    let _ = child.wait();
    eprintln!("h2c stream: first part after {first:?}, all after {total:?}");
    if got != b"first\nsecond\n"
        || first.is_none_or(|f| f > Duration::from_millis(700))
        || total < Duration::from_millis(900)
    {
        a.fail(&format!(
            "h2c streaming: {:?}, first part at {first:?}, end at {total:?}",
            String::from_utf8_lossy(&got)
        ));
    }
    a.stop();
}

/// An Apache with a TLS vhost (self-signed certificate, h2 and http/1.1)
/// that mounts the group, `vhost_extra` inside it; started and answering.
/// Returns it, the TLS port and the certificate's path.
fn start_tls(name: &str, vhost_extra: &str) -> (Apache, u16, String) {
    let sport = free_port();
    let tls = format!(
        "LoadModule ssl_module {MODULES}/mod_ssl.so\n\
         Listen 127.0.0.1:{sport}\n\
         <VirtualHost 127.0.0.1:{sport}>\n\
         \x20   ServerName 127.0.0.1\n\
         \x20   SSLEngine on\n\
         \x20   SSLCertificateFile @DIR@/tls/cert.pem\n\
         \x20   SSLCertificateKeyFile @DIR@/tls/key.pem\n\
         \x20   Protocols h2 http/1.1\n\
         \x20   LanguageMount /app py\n\
         {vhost_extra}\
         </VirtualHost>\n"
    );
    let mut a = start(name, &tls);
    let dir = a.dir.join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .expect("run openssl (Debian package openssl: docker/install-deps.sh)");
    assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    a.start();
    if !wait_until(Duration::from_secs(10), || a.get("/app/env").status == 200) {
        a.fail("the group does not answer");
    }
    let cert = dir.join("cert.pem").display().to_string();
    (a, sport, cert)
}

#[test]
fn a_group_behind_mod_ssl_sees_https() {
    let (mut a, sport, cert) = start_tls("front-tls", "");
    let url = format!("https://127.0.0.1:{sport}/app/env");
    for (proto, want) in [("--http1.1", "200 1.1"), ("--http2", "200 2")] {
        let (body, status) = curl(&a, &["--cacert", &cert, proto, &url]);
        if status != want {
            a.fail(&format!("TLS {proto}: {status:?}, expected {want:?}: {body}"));
        }
        for (k, v) in [("HTTPS", "on"), ("wsgi.url_scheme", "https"), ("SERVER_PORT", &sport.to_string())] {
            if json_field(&body, k) != v {
                a.fail(&format!("TLS {proto}: {k} = {:?}, expected {v:?}: {body}", json_field(&body, k)));
            }
        }
    }
    // The plain port still says off.
    let r = a.get("/app/env");
    if json_field(&r.text(), "HTTPS") != "off" || json_field(&r.text(), "wsgi.url_scheme") != "http" {
        a.fail(&format!("plain HTTP: {}", r.text()));
    }
    a.stop();
}

#[test]
fn keepalive_settings_serve_tls_and_h2_connections() {
    // ProcdKeepAliveThread behind mod_ssl: the response's end goes through
    // mod_ssl to the core filter, and the wait reads (non-blocking) through
    // mod_ssl's input side. Five requests on one connection, each answered,
    // none waiting out the setting, and over HTTP/1.1 requests 2-5 served
    // by one Apache thread (%{tid}P): the setting took effect. Over h2 the
    // settings stand aside (a stream is not a connection).
    for setting in ["On", "1s"] {
        let (mut a, sport, cert) = start_tls(
            &format!("front-tls-keepalive-{}", setting.to_lowercase()),
            &format!("ProcdKeepAliveThread {setting}\nCustomLog \"@DIR@/tls-tid.log\" \"%H %{{tid}}P %>s\"\n"),
        );
        let url = format!("https://127.0.0.1:{sport}/app/whoami");
        for proto in ["--http1.1", "--http2"] {
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "20", "--cacert", &cert, proto])
                .args(["-w", "\nW %{http_code} %{http_version} %{num_connects} %{time_total}\n"])
                .args([&url, &url, &url, &url, &url])
                .output()
                .expect("run curl");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let lines: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("W ")).collect();
            let version = if proto == "--http2" { "2" } else { "1.1" };
            let want: Vec<String> = (0..5).map(|i| format!("200 {version} {}", if i == 0 { 1 } else { 0 })).collect();
            let got: Vec<String> =
                lines.iter().map(|l| l.rsplit_once(' ').map_or(*l, |(head, _)| head).to_string()).collect();
            if !out.status.success() || got != want {
                a.fail(&format!(
                    "ProcdKeepAliveThread {setting}, TLS {proto}: expected {want:?} (one connection), got {lines:?} {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            // Each of requests 2-5 (the first has the handshake): a wait
            // served out in full would take 1 s.
            let slowest = lines[1..]
                .iter()
                .filter_map(|l| l.rsplit_once(' ').and_then(|(_, t)| t.parse::<f64>().ok()))
                .fold(0.0, f64::max);
            if slowest > 0.6 {
                a.fail(&format!("ProcdKeepAliveThread {setting}, TLS {proto}: a request took {slowest} s: {lines:?}"));
            }
        }
        let mut tids = Vec::new();
        wait_until(Duration::from_secs(5), || {
            let log = std::fs::read_to_string(a.dir.join("tls-tid.log")).unwrap_or_default();
            tids = log.lines().filter_map(|l| l.strip_prefix("HTTP/1.1 ")).map(|l| l.to_string()).collect();
            tids.len() == 5
        });
        if tids.len() != 5 || tids[2..].iter().any(|t| t != &tids[1]) {
            a.fail(&format!(
                "ProcdKeepAliveThread {setting}: expected TLS requests 2-5 in one Apache thread, got {tids:?}"
            ));
        }
        a.stop();
    }
}

/// A group declared in the main server, with a `<VirtualHost>` that has no
/// mod_procd directive of its own: Apache then gives the vhost the main
/// server's config object itself, and the plan lists the group twice
/// ("2 process group(s) in 2 server(s)"); the manager refused the plan and
/// started nothing. Found while writing the TLS test above (which works
/// around it with a LanguageMount in the vhost); fixed in the plan builder.
#[test]
fn a_server_level_group_runs_beside_a_plain_vhost() {
    let vport = free_port();
    let vhost =
        format!("Listen 127.0.0.1:{vport}\n<VirtualHost 127.0.0.1:{vport}>\n    ServerName other\n</VirtualHost>\n");
    let mut a = start("front-vhost", &vhost);
    a.start();
    if !wait_until(Duration::from_secs(10), || a.get("/app/env").status == 200) {
        a.fail("a group declared in the main server does not start when a plain <VirtualHost> exists");
    }
    if !wait_until(Duration::from_secs(5), || a.error_log().contains("configured: 1 process group(s)")) {
        a.fail("the group is counted more than once");
    }
    a.stop();
}
