//! LinkRewrite against a real Apache: a backend vhost on a second loopback
//! port, proxied under /legacy/, whose pages and headers point at the
//! backend's own host:port.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

struct Setup {
    a: Apache,
    backend: String,
}

fn setup(name: &str) -> Setup {
    let bport = free_port();
    let backend = format!("http://127.0.0.1:{bport}/");
    let conf = format!(
        r#"
LoadModule proxy_module {MODULES}/mod_proxy.so
LoadModule proxy_http_module {MODULES}/mod_proxy_http.so
LoadModule headers_module {MODULES}/mod_headers.so
LoadModule alias_module {MODULES}/mod_alias.so
LoadModule filter_module {MODULES}/mod_filter.so
LoadModule deflate_module {MODULES}/mod_deflate.so
LoadModule brotli_module {MODULES}/mod_brotli.so
LoadModule cgid_module {MODULES}/mod_cgid.so
ScriptSock "@DIR@/run/cgid.sock"
ScriptAlias /cgi/ "@DIR@/cgi/"
<Directory "@DIR@/cgi">
    Require all granted
</Directory>
<Location /cgi/>
    LinkRewrite {backend} /from-cgi/
</Location>
<Location /cgi/too-slow>
    CGIDScriptTimeout 1
</Location>
Listen 127.0.0.1:{bport}
<VirtualHost 127.0.0.1:{bport}>
    ServerName backend
    DocumentRoot "@DIR@/backend"
    <Directory "@DIR@/backend">
        Require all granted
    </Directory>
    Redirect /old {backend}new
    <Location /cookie>
        Header always set Set-Cookie "sid=1; Path=/; Domain=127.0.0.1; HttpOnly"
        Header always set Link "<{backend}s.css>; rel=preload"
    </Location>
    <Location /gz/>
        SetOutputFilter DEFLATE
    </Location>
    <Location /br/>
        SetOutputFilter BROTLI_COMPRESS
    </Location>
    # Says gzip, and is not (or only half of it is).
    <Location /badgz/>
        Header set Content-Encoding gzip
    </Location>
    Alias /manual /usr/share/doc/apache2-doc/manual
    <Directory /usr/share/doc/apache2-doc/manual>
        Require all granted
    </Directory>
</VirtualHost>
<Location /legacy/>
    ProxyPass {backend}
    LinkRewrite {backend} /legacy/
</Location>
# The backend gzips; the front decodes, rewrites, and its own DEFLATE compresses again.
<Location /again/>
    ProxyPass {backend}gz/
    LinkRewrite {backend} /again/
    SetOutputFilter DEFLATE
</Location>
# By hand too, with a TO that still starts with FROM: rewriting twice would show.
<Location /byhand/>
    ProxyPass {backend}
    LinkRewrite {backend} {backend}x/
    SetOutputFilter LINKREWRITE
</Location>
<Location /bytype/>
    ProxyPass {backend}
    LinkRewrite {backend} {backend}y/
    AddOutputFilterByType LINKREWRITE text/html
</Location>
# CSS too: <style>, style attributes and text/css.
<Location /css/>
    ProxyPass {backend}
    LinkRewrite {backend} /css/
    LinkRewriteCSS On
</Location>
<Location /legacy/manual/>
    LinkRewrite http://httpd.apache.org/ /apache-site/
</Location>
<Directory "@DIR@/htdocs/static">
    LinkRewrite {backend} /from-static/
</Directory>
# SSI: the included part is rewritten once, with the page (TO starts with FROM).
LoadModule include_module {MODULES}/mod_include.so
<Directory "@DIR@/htdocs/ssi">
    Options +Includes
    AddOutputFilter INCLUDES .shtml
    LinkRewrite {backend} {backend}z/
</Directory>
<Directory "@DIR@/htdocs/ssi-plain">
    Options +Includes
    AddOutputFilter INCLUDES .shtml
</Directory>
<Directory "@DIR@/htdocs/static/nommap">
    EnableMMAP Off
</Directory>
"#
    );
    let mut a = Apache::new(name, Mpm::Event, &conf);
    for sub in
        ["backend/gz", "backend/br", "backend/badgz", "htdocs/static/nommap", "htdocs/ssi", "htdocs/ssi-plain", "cgi"]
    {
        std::fs::create_dir_all(a.dir.join(sub)).unwrap();
    }
    a.start();
    Setup { a, backend }
}

/// A page with one link to the backend in every place that must be
/// rewritten, and in every place that must not; returns (page, expected).
fn tricky_page(backend: &str, to: &str) -> (String, String) {
    let b = backend;
    let rewritten: Vec<String> = vec![
        format!("<a href=\"{b}double\">d</a>"),
        format!("<a href='{b}single'>s</a>"),
        format!("<a href={b}bare>b</a>"),
        format!("<A HREF=\"{b}UPPER\">u</A>"),
        format!("<img src=\"{b}i.png\" srcset=\"{b}a.png 1x, {b}b.png 2x\">"),
        format!("<form action=\"{b}post\"><button formaction=\"{b}alt\">x</button></form>"),
        format!("<meta http-equiv=\"refresh\" content=\"0; url={b}next\">"),
        format!("<base href=\"{b}\">"),
        format!("<a href=\"{b}q?a=1&amp;b=2\">entities</a>"),
        format!("<noscript><img src=\"{b}pixel.gif\"></noscript>"),
    ];
    let untouched: Vec<String> = vec![
        "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\" \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd\">".to_string(),
        format!("<!-- <a href=\"{b}comment\"> -->"),
        format!("<script>var s = '<a href=\"{b}script\">';</script>"),
        format!("<style>body {{ background: url({b}style.png) }}</style>"),
        format!("<textarea><a href=\"{b}textarea\"></textarea>"),
        format!("<p>plain text mentions {b}text</p>"),
        "<a href=\"http://elsewhere.example/x\">other</a>".to_string(),
    ];
    let mut page = String::new();
    let mut expected = String::new();
    page.push_str(&untouched[0]);
    expected.push_str(&untouched[0]);
    // Put a link across the 8 KiB boundary the proxy reads in.
    let pad = "x".repeat(8192 - untouched[0].len() - 10);
    page.push_str(&pad);
    expected.push_str(&pad);
    for (i, piece) in rewritten.iter().enumerate() {
        page.push_str(piece);
        let e = piece.replace(b, to);
        expected.push_str(&e);
        page.push_str(&untouched[1 + i % (untouched.len() - 1)]);
        expected.push_str(&untouched[1 + i % (untouched.len() - 1)]);
    }
    // A prefix written with character references is matched as decoded.
    let hidden = b.replacen("://", "&#x3a;&#47;&#47;", 1);
    page.push_str(&format!("<a href=\"{hidden}ent\">e</a>"));
    expected.push_str(&format!("<a href=\"{to}ent\">e</a>"));
    (page, expected)
}

#[test]
fn proxied_pages_are_rewritten_and_nothing_else_changes() {
    let s = setup("lr-proxy");
    let (page, expected) = tricky_page(&s.backend, "/legacy/");
    std::fs::write(s.a.dir.join("backend/tricky.html"), &page).unwrap();
    let r = s.a.get("/legacy/tricky.html");
    if r.status != 200 || r.text() != expected {
        let got = r.text();
        let at = got.bytes().zip(expected.bytes()).position(|(x, y)| x != y).unwrap_or(0);
        s.a.fail(&format!(
            "rewritten page differs at byte {at}:\n got      {:?}\n expected {:?}",
            &got[at.saturating_sub(40)..(at + 80).min(got.len())],
            &expected[at.saturating_sub(40)..(at + 80).min(expected.len())]
        ));
    }
    if r.head.contains("Content-Length: ") && !r.head.contains(&format!("Content-Length: {}", expected.len())) {
        s.a.fail(&format!("stale Content-Length: {}", r.head));
    }
    // A page without any backend link comes out byte-identical.
    let plain = "<!DOCTYPE html>\n<html><body><a href=\"/x\">x</a><!-- c --></body></html>\n";
    std::fs::write(s.a.dir.join("backend/plain.html"), plain).unwrap();
    if s.a.get("/legacy/plain.html").text() != plain {
        s.a.fail("a page with no match was changed");
    }
    // Other types are left alone, Content-Length included.
    std::fs::write(s.a.dir.join("backend/data.txt"), format!("{}file", s.backend)).unwrap();
    let r = s.a.get("/legacy/data.txt");
    if r.text() != format!("{}file", s.backend) {
        s.a.fail("text/plain was rewritten");
    }
}

#[test]
fn headers_and_cookies_are_rewritten() {
    let s = setup("lr-headers");
    let r = s.a.get("/legacy/old");
    if r.status != 302 || !r.head.contains("Location: /legacy/new") {
        s.a.fail(&format!("redirect: {}", r.head));
    }
    std::fs::write(s.a.dir.join("backend/cookie"), "c").unwrap();
    let r = s.a.get("/legacy/cookie");
    if !r.head.contains("Set-Cookie: sid=1; Path=/legacy/; HttpOnly")
        || !r.head.contains("Link: </legacy/s.css>; rel=preload")
    {
        s.a.fail(&format!("cookie/link headers: {}", r.head));
    }
}

fn raw_get(port: u16, path: &str, extra: &str) -> (String, Vec<u8>) {
    raw_request(port, "GET", path, extra)
}

fn raw_request(port: u16, method: &str, path: &str, extra: &str) -> (String, Vec<u8>) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(c, "{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut body = buf[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body).unwrap();
    }
    (head, body)
}

#[test]
fn compressed_bodies_are_decoded_or_passed_through() {
    let s = setup("lr-gzip");
    let page = format!("<html><body>{}<a href=\"{}deep\">d</a></body></html>", "<p>filler</p>".repeat(500), s.backend);
    std::fs::write(s.a.dir.join("backend/gz/page.html"), &page).unwrap();
    std::fs::write(s.a.dir.join("backend/br/page.html"), &page).unwrap();
    let (head, body) = raw_get(s.a.port, "/legacy/gz/page.html", "Accept-Encoding: gzip\r\n");
    let text = String::from_utf8_lossy(&body);
    if head.to_ascii_lowercase().contains("content-encoding") || !text.contains("href=\"/legacy/deep\"") {
        s.a.fail(&format!("gzip page not decoded and rewritten: {head}\n{}", &text[..text.len().min(200)]));
    }
    // HEAD has no compressed stream to decode (no error), and the headers
    // of the GET: no Content-Encoding, no stale Content-Length.
    let (head, body) = raw_request(s.a.port, "HEAD", "/legacy/gz/page.html", "Accept-Encoding: gzip\r\n");
    let lower = head.to_ascii_lowercase();
    if !head.starts_with("HTTP/1.1 200")
        || !body.is_empty()
        || lower.contains("content-encoding")
        || lower.contains("content-length")
        || s.a.error_log().contains("PD0403")
    {
        s.a.fail(&format!("HEAD of a gzip page: {head}"));
    }
    // Compressed again by the front's own DEFLATE, after the rewrite.
    let (head, body) = raw_get(s.a.port, "/again/page.html", "Accept-Encoding: gzip\r\n");
    let mut text = String::new();
    if !head.to_ascii_lowercase().contains("content-encoding: gzip")
        || flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut text).is_err()
        || !text.contains("href=\"/again/deep\"")
    {
        s.a.fail(&format!("front DEFLATE after the rewrite: {head}\n{}", &text[..text.len().min(200)]));
    }
    let (head, body) = raw_get(s.a.port, "/legacy/br/page.html", "Accept-Encoding: br\r\n");
    if !head.to_ascii_lowercase().contains("content-encoding: br") || body.windows(6).any(|w| w == b"legacy") {
        s.a.fail(&format!("brotli page should pass through untouched: {head}"));
    }
    if !s.a.error_log().contains("PD0401: LinkRewrite cannot decode Content-Encoding \"br\"") {
        s.a.fail("no log line for the undecodable encoding");
    }
}

#[test]
fn the_apache_manual_survives_a_token_level_comparison() {
    let s = setup("lr-manual");
    let tokens = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tokens.py");
    let (mut checked, mut rewritten) = (0, 0);
    for page in ["en/index.html", "en/mod/core.html", "en/rewrite/remapping.html", "en/howto/htaccess.html"] {
        let original = std::fs::read(format!("/usr/share/doc/apache2-doc/manual/{page}")).unwrap();
        let r = s.a.get(&format!("/legacy/manual/{page}"));
        if r.status != 200 {
            s.a.fail(&format!("{page}: {}", r.status));
        }
        let (o, w) = (s.a.dir.join("original.html"), s.a.dir.join("rewritten.html"));
        std::fs::write(&o, &original).unwrap();
        std::fs::write(&w, &r.body).unwrap();
        let out = Command::new("python3")
            .arg(tokens)
            .arg(&o)
            .arg(&w)
            .arg(format!("{}=/legacy/", s.backend))
            .arg("http://httpd.apache.org/=/apache-site/")
            .output()
            .unwrap();
        let msg = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            s.a.fail(&format!("{page}: {msg}"));
        }
        // The DOCTYPE and everything before <html> stay byte-identical.
        let head_len = original.windows(5).position(|w| w == b"<html").unwrap_or(0);
        if r.body[..head_len] != original[..head_len] {
            s.a.fail(&format!("{page}: the prologue changed"));
        }
        eprintln!("{page}: {msg}");
        checked += 1;
        rewritten += msg.split_whitespace().rev().nth(2).and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    }
    assert_eq!(checked, 4);
    if rewritten == 0 {
        s.a.fail("no URL of the manual was rewritten: the test proves nothing");
    }
}

#[test]
fn large_pages_stream_with_flat_memory() {
    let s = setup("lr-large");
    let block = format!("<p><a href=\"{}x\">link</a> some text to pad the line out</p>\n", s.backend);
    let mut page = Vec::with_capacity((50 << 20) + block.len());
    while page.len() < 50 << 20 {
        page.extend_from_slice(block.as_bytes());
    }
    let blocks = page.len() / block.len();
    // The same page proxied from the backend, and as a static file in scope
    // (mmap'd in 4 MiB pieces, and read() in 8000-byte pieces).
    // And gzipped by the backend (DEFLATE), decoded by the front: 8 KiB of
    // it may inflate to megabytes.
    for path in ["backend/big.html", "backend/gz/big.html", "htdocs/static/big.html", "htdocs/static/nommap/big.html"] {
        std::fs::write(s.a.dir.join(path), &page).unwrap();
    }
    drop(page);
    let master = s.a.master.unwrap();
    let peak = || {
        children(master)
            .into_iter()
            .map(|p| {
                std::fs::read_to_string(format!("/proc/{p}/status"))
                    .unwrap_or_default()
                    .lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    };
    let before = peak();
    for (url, to, extra) in [
        ("/legacy/big.html", "/legacy/x", ""),
        ("/legacy/gz/big.html", "/legacy/x", "Accept-Encoding: gzip\r\n"),
        ("/static/big.html", "/from-static/x", ""),
        ("/static/nommap/big.html", "/from-static/x", ""),
    ] {
        let (_, body) = raw_get(s.a.port, url, extra);
        let after = peak();
        let links = memchr::memmem::find_iter(&body, to.as_bytes()).count();
        eprintln!(
            "{url}: 50 MB page, {} bytes out, {links} links rewritten, Apache child peak RSS {before} -> {after} kB",
            body.len()
        );
        if links != blocks {
            s.a.fail(&format!("{url}: {links} links rewritten, expected {blocks}"));
        }
        // README: "at most 14 MB"; twice that is a regression.
        if after > before + 16 * 1024 || after > 2 * 14 * 1024 {
            s.a.fail(&format!("{url}: Apache children grew from {before} kB to {after} kB on a 50 MB page"));
        }
    }
}

#[test]
fn a_corrupt_compressed_body_gets_502_or_is_cut() {
    let s = setup("lr-badgz");
    let page = format!("<a href=\"{}x\">x</a>", s.backend);
    std::fs::write(s.a.dir.join("backend/badgz/plain.html"), &page).unwrap();
    let r = s.a.get("/legacy/badgz/plain.html");
    if r.status != 502 || !s.a.error_log().contains("PD0403") || !s.a.error_log().contains("the client gets 502") {
        s.a.fail(&format!("a body that is not the gzip it claims: {}", r.head));
    }
    // Half of a real gzip stream of a 2 MB page that compresses badly: the
    // start goes out, then the cut.
    let mut big = String::new();
    let mut x: u64 = 1;
    while big.len() < 2 << 20 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        big += &format!("{page}<p>{:016x}</p>\n", x);
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(big.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    std::fs::write(s.a.dir.join("backend/badgz/half.html"), &gz[..gz.len() / 2]).unwrap();
    let mut c = TcpStream::connect(("127.0.0.1", s.a.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(c, "GET /legacy/badgz/half.html HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf); // the connection closes: no keep-alive after a cut
    let text = String::from_utf8_lossy(&buf);
    if !text.starts_with("HTTP/1.1 200") || !text.contains("/legacy/x") || text.ends_with("0\r\n\r\n") {
        s.a.fail(&format!("half a gzip stream: {} bytes, {:?}...", buf.len(), &text[..text.len().min(200)]));
    }
    if !wait_until(Duration::from_secs(5), || s.a.error_log().contains("the response is cut")) {
        s.a.fail("no PD0403 line for the cut response");
    }
}

#[test]
fn css_is_rewritten_where_asked() {
    let s = setup("lr-css");
    let b = &s.backend;
    let page = format!(
        "<style>@import '{b}a.css'; /* url({b}c) */ p {{ background: url({b}p.png) }}</style>\n<p style=\"background: url('{b}s.png')\"><a href=\"{b}a\">a</a></p>"
    );
    let sheet = format!("@import url(\"{b}b.css\");\nh1 {{ background: url({b}h.png) }} /* {b}c */\n");
    std::fs::write(s.a.dir.join("backend/page.html"), &page).unwrap();
    std::fs::write(s.a.dir.join("backend/sheet.css"), &sheet).unwrap();
    let want = format!(
        "<style>@import '/css/a.css'; /* url({b}c) */ p {{ background: url(/css/p.png) }}</style>\n<p style=\"background: url('/css/s.png')\"><a href=\"/css/a\">a</a></p>"
    );
    let got = s.a.get("/css/page.html").text();
    if got != want {
        s.a.fail(&format!("LinkRewriteCSS On, HTML:\n got  {got}\n want {want}"));
    }
    let r = s.a.get("/css/sheet.css");
    let want = format!("@import url(\"/css/b.css\");\nh1 {{ background: url(/css/h.png) }} /* {b}c */\n");
    if r.text() != want || !r.head.contains("Content-Type: text/css") {
        s.a.fail(&format!("LinkRewriteCSS On, text/css:\n{}\n got  {}\n want {want}", r.head, r.text()));
    }
    // Off (the default): only the href.
    if s.a.get("/legacy/page.html").text().matches("/legacy/").count() != 1
        || s.a.get("/legacy/sheet.css").text() != sheet
    {
        s.a.fail("CSS was rewritten without LinkRewriteCSS On");
    }
}

#[test]
fn static_files_in_scope_are_rewritten_too() {
    let s = setup("lr-static");
    std::fs::write(s.a.dir.join("htdocs/static/p.html"), format!("<a href=\"{}s\">s</a>", s.backend)).unwrap();
    let r = s.a.get("/static/p.html");
    if r.text() != "<a href=\"/from-static/s\">s</a>" {
        s.a.fail(&format!("static: {}", r.text()));
    }
    // A range is a range of the rewritten page (the byte-range filter runs after ours).
    let r = s.a.request("GET /static/p.html HTTP/1.1\r\nHost: x\r\nRange: bytes=9-20\r\nConnection: close\r\n\r\n");
    if r.status != 206 || r.text() != "<a href=\"/from-static/s\">s</a>"[9..=20] {
        s.a.fail(&format!("range of a rewritten page: {}\n{}", r.head, r.text()));
    }
    // Files larger than what one read gives (mmap: 4 MiB; read(): 8000
    // bytes) arrive as several buckets: the links in the last part too.
    let link = format!("<a href=\"{}s\">s</a>", s.backend);
    for (path, size) in [("static/big.html", 5 << 20), ("static/nommap/big.html", 100 << 10)] {
        let body = format!("{link}{}{link}", "<p>filler</p>\n".repeat(size / 14));
        std::fs::write(s.a.dir.join("htdocs").join(path), &body).unwrap();
        let text = s.a.get(&format!("/{path}")).text();
        let expected = body.replace(&format!("{}s", s.backend), "/from-static/s");
        if text != expected {
            s.a.fail(&format!(
                "{path}: {} bytes out, {} links rewritten",
                text.len(),
                text.matches("/from-static/").count()
            ));
        }
    }
    // A page that includes another (a subrequest): both parts rewritten once.
    std::fs::write(s.a.dir.join("htdocs/ssi/part.html"), format!("<a href=\"{}in\">i</a>", s.backend)).unwrap();
    let page = format!("<a href=\"{}out\">o</a><!--#include virtual=\"part.html\" -->", s.backend);
    std::fs::write(s.a.dir.join("htdocs/ssi/page.shtml"), page).unwrap();
    let got = s.a.get("/ssi/page.shtml").text();
    let b = &s.backend;
    if got != format!("<a href=\"{b}z/out\">o</a><a href=\"{b}z/in\">i</a>") {
        s.a.fail(&format!("SSI page: {got}"));
    }
    // A page outside every scope that includes one inside: the part is rewritten.
    std::fs::write(s.a.dir.join("htdocs/ssi-plain/page.shtml"), "<p><!--#include virtual=\"/ssi/part.html\" --></p>")
        .unwrap();
    let got = s.a.get("/ssi-plain/page.shtml").text();
    if got != format!("<p><a href=\"{b}z/in\">i</a></p>") {
        s.a.fail(&format!("SSI page outside the scope: {got}"));
    }
    // A hostile page (security issue, item 14): 2 MB with one href of 1 MiB
    // of `&` took 43 s before (quadratic); it now comes back, unchanged,
    // as fast as any page. The bound only catches a return of that.
    let hostile = format!("<a href=\"{}\">x</a>{}", "&".repeat(1 << 20), "<p>filler</p>\n".repeat(70_000));
    std::fs::write(s.a.dir.join("htdocs/static/hostile.html"), &hostile).unwrap();
    let started = std::time::Instant::now();
    let got = s.a.get("/static/hostile.html");
    let took = started.elapsed();
    if got.body != hostile.as_bytes() || took > Duration::from_secs(10) {
        s.a.fail(&format!("hostile page: {} bytes back in {took:?}", got.body.len()));
    }
    // Outside the scope: untouched.
    std::fs::write(s.a.dir.join("htdocs/p.html"), format!("<a href=\"{}s\">s</a>", s.backend)).unwrap();
    if !s.a.get("/p.html").text().contains(&s.backend) {
        s.a.fail("a page outside every LinkRewrite scope was rewritten");
    }
}

#[test]
fn added_by_hand_as_well_it_rewrites_once() {
    let s = setup("lr-byhand");
    std::fs::write(s.a.dir.join("backend/one.html"), format!("<a href=\"{}a\">a</a>", s.backend)).unwrap();
    for (path, to) in [("/byhand/one.html", "x/"), ("/bytype/one.html", "y/")] {
        let r = s.a.get(path);
        if r.text() != format!("<a href=\"{}{to}a\">a</a>", s.backend) {
            s.a.fail(&format!("{path}: {}", r.text()));
        }
    }
}

/// How soon the first part of a stalled response must reach the client
/// (README, LinkRewrite "Streaming": 12 ms proxied, 4 ms from CGI, measured).
const FIRST_PART: Duration = Duration::from_millis(150);

/// A backend that sends the first part of a page, stalls, then the rest:
/// the first part (and the FLUSH mod_proxy sends when the backend stalls)
/// must reach the client before the backend goes on.
#[test]
fn output_is_flushed_while_the_backend_stalls() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bport = listener.local_addr().unwrap().port();
    let backend = format!("http://127.0.0.1:{bport}/");
    let conf = format!(
        r#"
LoadModule proxy_module {MODULES}/mod_proxy.so
LoadModule proxy_http_module {MODULES}/mod_proxy_http.so
<Location /slow/>
    ProxyPass {backend}
    LinkRewrite {backend} /slow/
</Location>
"#
    );
    let mut a = Apache::new("lr-flush", Mpm::Event, &conf);
    a.start();
    let first = format!("<html><body><a href=\"{backend}first\">1</a>\n");
    let stall = Duration::from_secs(3);
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && c.read(&mut byte).unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let _ = write!(c, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n{first}");
        let _ = c.flush();
        std::thread::sleep(stall);
        let _ = writeln!(c, "<a href=\"{backend}second\">2</a></body></html>");
    });
    let started = std::time::Instant::now();
    let mut c = TcpStream::connect(("127.0.0.1", a.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(c, "GET /slow/page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let (text, first_seen) = read_until_closed(&mut c, started, "/slow/first\"");
    let _ = server.join();
    eprintln!("first part after {first_seen:?}, whole response after {:?}", started.elapsed());
    if !text.contains("href=\"/slow/second\"") {
        a.fail(&format!("second part not rewritten: {text}"));
    }
    match first_seen {
        // README: 12 ms measured (2026-12-02), tested under FIRST_PART;
        // held back until the backend goes on would be 3 s.
        Some(t) if t < FIRST_PART => {}
        _ => a.fail(&format!("the first part was held back until the backend finished ({first_seen:?}): {text}")),
    }
}

/// An executable CGI script `cgi/NAME`: an HTML header, then `body` (sh).
fn cgi_script(s: &Setup, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let script = s.a.dir.join("cgi").join(name);
    std::fs::write(&script, format!("#!/bin/sh\nprintf 'Content-Type: text/html\\r\\n\\r\\n'\n{body}\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn cgi_output_is_rewritten_to_the_end() {
    let s = setup("lr-cgi");
    // Output through a pipe arrives in many reads: links first and last.
    let link = format!("<a href=\"{}c\">c</a>", s.backend);
    cgi_script(&s, "page", &format!("echo '{link}'\nseq 1 20000 | sed 's|.*|<p>&</p>|'\necho '{link}'"));
    let r = s.a.get("/cgi/page");
    let text = r.text();
    if r.status != 200 || text.matches("<a href=\"/from-cgi/c\">").count() != 2 || text.contains(&s.backend) {
        s.a.fail(&format!(
            "CGI output: status {}, {} bytes, {} links rewritten",
            r.status,
            text.len(),
            text.matches("/from-cgi/").count()
        ));
    }
}

#[test]
fn cgi_output_streams_while_the_script_stalls() {
    let s = setup("lr-cgi-stall");
    let b = &s.backend;
    cgi_script(&s, "slow", &format!("echo '<a href=\"{b}first\">1</a>'\nsleep 3\necho '<a href=\"{b}second\">2</a>'"));
    let started = std::time::Instant::now();
    let mut c = TcpStream::connect(("127.0.0.1", s.a.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(c, "GET /cgi/slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let (text, first_seen) = read_until_closed(&mut c, started, "/from-cgi/first");
    eprintln!("CGI: first part after {first_seen:?}, whole response after {:?}", started.elapsed());
    if !text.contains("href=\"/from-cgi/second\"") {
        s.a.fail(&format!("second part not rewritten: {text}"));
    }
    match first_seen {
        // README: 4 ms measured (2026-12-02), tested under FIRST_PART;
        // held back until the script ends would be 3 s.
        Some(t) if t < FIRST_PART => {}
        _ => s.a.fail(&format!("the first part was held back until the script finished ({first_seen:?}): {text}")),
    }
    // Past CGIDScriptTimeout: the response is cut, and the log says so.
    cgi_script(&s, "too-slow", &format!("echo '<a href=\"{b}first\">1</a>'\nsleep 3"));
    let mut c = TcpStream::connect(("127.0.0.1", s.a.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(c, "GET /cgi/too-slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let (text, _) = read_until_closed(&mut c, started, "");
    if !text.contains("/from-cgi/first") || !wait_until(Duration::from_secs(5), || s.a.error_log().contains("PD0404")) {
        s.a.fail(&format!("a CGI script past its timeout: no first part, or no PD0404 line: {text}"));
    }
}

/// A mounted Python group whose app links and redirects to the internal
/// address it thinks it has: pages, Location and cookie paths all come out
/// under the mount, with no ProxyPassReverse.
#[test]
fn a_mounted_group_is_rewritten_like_a_proxy() {
    ensure_user("procd-test-a");
    let conf = "LanguageGroup shop language=python processes=1 threads=2 user=procd-test-a app=@DIR@/shop.py\n\
                LanguageMount /shop shop\n\
                <Location /shop>\n    LinkRewrite http://internal.example:8000/ /shop/\n</Location>\n";
    let mut a = Apache::new("lr-group", Mpm::Event, conf);
    std::fs::write(
        a.dir.join("shop.py"),
        r#"
def application(environ, start_response):
    base = "http://internal.example:8000/"
    if environ["PATH_INFO"] == "/buy":
        start_response("302 Found", [("Location", base + "done"), ("Set-Cookie", "cart=1; Path=/")])
        return [b""]
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [('<a href="%scart">cart</a><img src="%slogo.png">' % (base, base)).encode()]
"#,
    )
    .unwrap();
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&a.dir).status();
    a.start();
    wait_until(Duration::from_secs(10), || a.get("/shop/").status == 200);
    let page = a.get("/shop/");
    if page.text() != r#"<a href="/shop/cart">cart</a><img src="/shop/logo.png">"# {
        a.fail(&format!("group page: {}", page.text()));
    }
    let r = a.get("/shop/buy");
    if r.status != 302
        || !r.head.contains("Location: /shop/done")
        || !r.head.contains("Set-Cookie: cart=1; Path=/shop/")
    {
        a.fail(&format!("group redirect: {}", r.head));
    }
}
