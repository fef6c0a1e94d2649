//! Entry points of the coverage-guided fuzz targets (`fuzz/`, cargo-fuzz):
//! one plain function per target, taking the fuzzer's bytes. Each returns
//! normally on any input and asserts its oracle; a panic is a finding.
//!
//! Built for tests and with `--features fuzzing` only (the fuzz crate links
//! the rlib without Apache). The unit test at the end replays the committed
//! corpora (`fuzz/corpus/<target>/`) and a few thousand mutations of them,
//! so that `cargo test` runs every target briefly.

#![forbid(unsafe_code)]

use crate::config::languages::{LanguageOverrides, check_extension, parse_language_file, valid_name};
use crate::config::plan::Plan;
use crate::config::scope::{DirConfig, LinkMap, ServerConfig};
use crate::config::{DirectiveContext, Origin};
use crate::protocol::{self, Frame};
use crate::rewrite::{Body, BodyEncoding, Maps, StreamRewriter};
use std::io::Write;

/// A target's entry point.
pub type Target = fn(&[u8]);

/// The targets, by the name of their `fuzz/fuzz_targets/*.rs` file.
pub const TARGETS: &[(&str, Target)] = &[
    ("protocol_decode", protocol_decode),
    ("plan_from_text", plan_from_text),
    ("directives", directives),
    ("language_file", language_file),
    ("rewrite_scanner", rewrite_scanner),
    ("rewrite_headers", rewrite_headers),
    ("fastcgi_response", fastcgi_response),
    ("http_response", http_response),
    ("control_decode", control_decode),
    ("cgi_frame", cgi_frame),
];

/// The worker protocol decoder, on a stream of frames as the reader loop
/// sees it. A decoded frame used at least its header and at most the input,
/// re-encodes to exactly the bytes it came from, decodes the same from
/// those bytes alone, and any shorter prefix asks for more. What it accepts
/// obeys the protocol's rules (header names are tokens, values carry no
/// CR, LF or NUL; statuses are 100-999).
pub fn protocol_decode(data: &[u8]) {
    let mut rest = data;
    loop {
        let (frame, used) = match protocol::decode(rest) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => {
                assert!(
                    rest.len() < 5
                        || u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize + 5 > rest.len()
                );
                return;
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                return;
            }
        };
        assert!((5..=rest.len()).contains(&used), "used {used} of {}", rest.len());
        let mut again = Vec::new();
        protocol::encode(&frame, &mut again);
        assert_eq!(again, &rest[..used], "re-encoding {frame:?}");
        assert_eq!(protocol::decode(&rest[..used]), Ok(Some((frame.clone(), used))));
        for cut in [0, 4, 5, used / 2, used - 1] {
            if cut < used {
                assert_eq!(protocol::decode(&rest[..cut]), Ok(None), "a cut at {cut} of {used}");
            }
        }
        match &frame {
            Frame::Headers { status, headers } => {
                assert!((100..=999).contains(status));
                assert!(headers.len() <= protocol::MAX_HEADERS);
                for (name, value) in headers {
                    assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':'), "{name:?}");
                    assert!(!value.contains(['\r', '\n', '\0']), "{value:?}");
                }
            }
            Frame::Request { env } => {
                assert!(env.is_empty() || env.last() == Some(&0));
                assert_eq!(env.iter().filter(|b| **b == 0).count() % 2, 0);
            }
            Frame::Pull { max } => assert!(*max >= 1 && *max as usize <= protocol::MAX_FRAME),
            _ => {}
        }
        rest = &rest[used..];
    }
}

/// The manager's end of the control channel, on a byte stream as the
/// socket delivers it. The first byte sets the size of the pieces the rest
/// is pushed in: the plans that come out are the same however the stream
/// is cut, each re-encodes to exactly the bytes it was read from, and the
/// decoder refuses a length above `MAX_PLAN` instead of waiting for it.
pub fn control_decode(data: &[u8]) {
    use crate::protocol::control::{Decoder, MAX_PLAN, encode};
    let Some((&piece, stream)) = data.split_first() else { return };
    let decode = |piece: usize| {
        let mut decoder = Decoder::default();
        let mut plans = Vec::new();
        for bytes in stream.chunks(piece.max(1)) {
            if decoder.push(bytes).is_err() {
                return (plans, true);
            }
            loop {
                match decoder.next_plan() {
                    Ok(Some(plan)) => plans.push(plan),
                    Ok(None) => break,
                    Err(e) => {
                        assert!(!e.to_string().is_empty());
                        return (plans, true);
                    }
                }
            }
        }
        (plans, false)
    };
    let (whole, refused) = decode(stream.len());
    let (cut, cut_refused) = decode(piece as usize);
    assert_eq!(whole, cut, "pieces of {piece}");
    assert_eq!(refused, cut_refused, "pieces of {piece}");
    let mut again = Vec::new();
    for plan in &whole {
        assert!(plan.len() <= MAX_PLAN);
        again.extend(encode(plan).expect("a decoded plan re-encodes"));
    }
    assert_eq!(again, stream[..again.len()], "re-encoding");
    let rest = &stream[again.len()..];
    if refused {
        let len = u32::from_be_bytes(rest[..4].try_into().expect("a refused length has its 4 bytes")) as usize;
        assert!(len > MAX_PLAN, "refused a length of {len}");
    } else {
        assert!(rest.len() < 4 || u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize + 4 > rest.len());
    }
}

/// What a FastCGI worker sends Apache: a stream of records, decoded as the
/// backend does, its FCGI_STDOUT bytes parsed as a CGI head. A record uses
/// its header and at most the input, carries at most 65,535 bytes; every
/// shorter cut of it asks for more; an accepted head has token names,
/// values without CR/LF/NUL, a status in 200..=599, a local redirect
/// only to a path. The input read as PARAMS name-value pairs: what decodes
/// re-encodes and decodes to the same pairs.
pub fn fastcgi_response(data: &[u8]) {
    use crate::protocol::cgi::{CgiHead, parse_head};
    use crate::protocol::fastcgi::{self, Record};
    let mut rest = data;
    let mut stdout = Vec::new();
    while let Ok(Some((record, used))) = fastcgi::decode(rest) {
        assert!((fastcgi::HEADER_LEN..=rest.len()).contains(&used), "used {used} of {}", rest.len());
        for cut in [0, 7, 8, used - 1] {
            if cut < used {
                assert_eq!(fastcgi::decode(&rest[..cut]), Ok(None), "a cut at {cut} of {used}");
            }
        }
        match record {
            Record::Stdout(b) | Record::Stderr(b) => {
                assert!(b.len() <= fastcgi::MAX_CONTENT);
                if matches!(record, Record::Stdout(_)) {
                    stdout.extend_from_slice(b);
                }
            }
            Record::EndRequest { .. } => assert_eq!(used - usize::from(rest[6]), 16),
        }
        rest = &rest[used..];
    }
    for input in [&stdout[..], data] {
        match parse_head(input) {
            Ok(Some((CgiHead::Response { status, headers }, used))) => {
                assert!(used <= input.len() && (200..=599).contains(&status));
                assert!(headers.len() <= protocol::MAX_HEADERS);
                for (name, value) in headers {
                    assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':'), "{name:?}");
                    assert!(!value.contains(['\r', '\n', '\0']), "{value:?}");
                }
            }
            Ok(Some((CgiHead::LocalRedirect { location }, _))) => {
                assert!(location.starts_with('/') && !location.contains(['\r', '\n', '\0']));
            }
            Ok(None) => assert!(input.len() <= protocol::MAX_HEADERS_SIZE),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    cgi_gate_agrees(&data[..data.len().min(4096)], pieces_of(data));
    if let Ok(pairs) = fastcgi::decode_pairs(data, 1000) {
        let mut again = Vec::new();
        for (n, v) in &pairs {
            assert!(fastcgi::encode_pair(&mut again, n, v));
        }
        assert_eq!(fastcgi::decode_pairs(&again, 1000).as_ref(), Ok(&pairs));
    }
}

/// The size of the pieces a head is fed in, chosen by the input's first byte (1 to 7).
fn pieces_of(data: &[u8]) -> usize {
    1 + usize::from(data.first().copied().unwrap_or(0) % 7)
}

/// `data` arriving `step` bytes per read: parsed only when
/// `head_may_have_changed` says a read may have changed the answer, a CGI
/// head gives at every read what `parse_head` gives.
pub fn cgi_gate_agrees(data: &[u8], step: usize) {
    use crate::protocol::cgi::{head_may_have_changed, parse_head};
    let (mut last, mut end) = (Ok(None), 0);
    for piece in data.chunks(step) {
        end += piece.len();
        if head_may_have_changed(end, piece) {
            last = parse_head(&data[..end]);
        }
        assert_eq!(last, parse_head(&data[..end]), "at {end} in pieces of {step}");
        if !matches!(last, Ok(None)) {
            break;
        }
    }
}

/// `data` arriving `step` bytes per read: `HeadSearch` gives at every read
/// what `parse_response_head` gives.
pub fn head_search_agrees(data: &[u8], step: usize) {
    use crate::protocol::http::{HeadSearch, parse_response_head};
    let (mut search, mut end) = (HeadSearch::default(), 0);
    for piece in data.chunks(step) {
        end += piece.len();
        let got = search.parse(&data[..end]);
        assert_eq!(got, parse_response_head(&data[..end]), "at {end} in pieces of {step}");
        if !matches!(got, Ok(None)) {
            break;
        }
    }
}

/// What an `http` program answers: the response head parser, the framing
/// rules and the chunked decoder on the bytes after the head. An accepted
/// head used at most the input and ends at its empty line; shorter cuts ask
/// for more; names are tokens, values carry no CR, LF or NUL, at most
/// `MAX_HEADERS`; the framing never accepts Content-Length with
/// Transfer-Encoding; the chunked decoder gives the same body and the same
/// end whether fed whole or a byte at a time, and never uses more than it
/// was given.
pub fn http_response(data: &[u8]) {
    use crate::protocol::http::{ChunkedDecoder, Framing, is_token_byte, parse_response_head, response_framing};
    head_search_agrees(&data[..data.len().min(4096)], pieces_of(data));
    let (head, used) = match parse_response_head(data) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            assert!(data.len() < protocol::MAX_HEADERS_SIZE);
            return;
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(used <= data.len() && data[..used].ends_with(b"\r\n\r\n"), "used {used}");
    for cut in [0, used / 2, used - 1] {
        assert_eq!(parse_response_head(&data[..cut]), Ok(None), "a cut at {cut} of {used}");
    }
    assert!((100..=999).contains(&head.status));
    assert!(head.headers.len() <= protocol::MAX_HEADERS);
    for (name, value) in &head.headers {
        assert!(!name.is_empty() && name.chars().all(|c| u8::try_from(c).is_ok_and(is_token_byte)), "{name:?}");
        assert!(!value.contains(['\r', '\n', '\0']), "{value:?}");
    }
    let framing = response_framing(&head, false);
    let has = |n: &str| head.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if has("content-length") && has("transfer-encoding") {
        assert!(framing.is_err(), "CL and TE accepted: {framing:?}");
    }
    if framing == Ok(Framing::Chunked) {
        let body = &data[used..];
        let mut whole = ChunkedDecoder::default();
        let mut out_whole = Vec::new();
        let whole_result = whole.decode(body, &mut out_whole);
        let mut bytewise = ChunkedDecoder::default();
        let mut out_bytes = Vec::new();
        let mut used_bytes = 0;
        let mut bytes_result = Ok(0);
        for b in body {
            if bytewise.is_done() {
                break;
            }
            match bytewise.decode(std::slice::from_ref(b), &mut out_bytes) {
                Ok(n) => used_bytes += n,
                Err(e) => {
                    bytes_result = Err(e);
                    break;
                }
            }
        }
        match whole_result {
            Ok(n) => {
                assert!(n <= body.len());
                assert_eq!(bytes_result.map(|_| used_bytes), Ok(n));
                assert_eq!(out_whole, out_bytes);
                assert_eq!(whole.is_done(), bytewise.is_done());
            }
            Err(e) => assert_eq!(bytes_result, Err(e)),
        }
    }
}

/// The control plan the httpd parent sends the manager: decoding never
/// panics, and a plan it accepts encodes, and decodes back to itself.
pub fn plan_from_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(plan) = Plan::from_text(&text) {
        let again = plan.to_text().expect("an accepted plan encodes");
        assert_eq!(Plan::from_text(&again).as_ref(), Ok(&plan), "round trip through {again:?}");
    }
}

/// The directive parser, on a configuration-like text: one directive per
/// line (`Name raw argument line`), `<VirtualHost ...>` and
/// `<Directory ...>`/`<Location ...>` lines switch the scope. Every error
/// names its directive; what is accepted, and the merged configurations,
/// keep the invariants the rest of the module relies on.
pub fn directives(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut main = ServerConfig::default();
    let mut vhost = ServerConfig::default();
    let mut outer = DirConfig::default();
    let mut inner = DirConfig::default();
    let mut ctx = DirectiveContext {
        directory: None,
        origin: Origin { file: "fuzz.conf".into(), line: 0 },
        in_vhost: false,
        in_section: false,
        server_root: "/etc/apache2".into(),
    };
    for (n, line) in text.lines().enumerate() {
        ctx.origin.line = n as u32 + 1;
        let line = line.trim_start();
        let (directive, args) = line.split_once(|c: char| c.is_ascii_whitespace()).unwrap_or((line, ""));
        match directive.to_ascii_lowercase().as_str() {
            "" => continue,
            d if d.starts_with('#') => continue,
            "<virtualhost" => ctx.in_vhost = true,
            "</virtualhost>" => ctx.in_vhost = false,
            "<directory" | "<location" | "<files" => ctx.in_section = true,
            "</directory>" | "</location>" | "</files>" => ctx.in_section = false,
            // Reads the named file: its parser is the language_file target.
            "procdlanguages" => {}
            _ => {
                let server = if ctx.in_vhost { &mut vhost } else { &mut main };
                let dir = if ctx.in_section { &mut inner } else { &mut outer };
                let result = match directive {
                    "LanguageGroup" | "LanguageMount" | "ProcdRuntimeDir" => server.apply(directive, args, &ctx),
                    "LanguageHandler" | "LinkRewrite" | "LinkRewriteCSS" => {
                        dir.apply(directive, args, &ctx).map(|refs| {
                            for r in &refs {
                                assert!(valid_name(&r.group), "{r:?}");
                            }
                        })
                    }
                    _ => {
                        let e = server.apply(directive, args, &ctx).expect_err("not a server directive");
                        assert!(e.contains(directive), "{e}");
                        dir.apply(directive, args, &ctx).map(|_| panic!("{directive} is not a per-directory directive"))
                    }
                };
                if let Err(e) = result {
                    assert!(e.contains(directive), "the error does not name {directive}: {e}");
                }
            }
        }
    }
    for server in [&main, &vhost, &ServerConfig::merge(&main, &vhost)] {
        let mut names: Vec<&str> = server.groups.iter().map(|g| g.name.as_str()).collect();
        assert!(names.iter().all(|n| valid_name(n)));
        names.sort_unstable();
        assert!(names.windows(2).all(|w| w[0] != w[1]), "duplicate groups {names:?}");
        for g in &server.groups {
            assert!(valid_name(&g.language));
            assert!(g.processes.min <= g.processes.max && (1..=1024).contains(&g.threads), "{g:?}");
        }
        assert!(server.mounts.windows(2).all(|w| w[0].prefix.len() >= w[1].prefix.len()));
        for (i, m) in server.mounts.iter().enumerate() {
            assert!(m.prefix.starts_with('/') && (m.prefix == "/" || !m.prefix.ends_with('/')), "{m:?}");
            assert!(server.mounts[i + 1..].iter().all(|o| o.prefix != m.prefix), "duplicate mount {m:?}");
        }
    }
    for dir in [&outer, &inner, &DirConfig::merge(&outer, &inner)] {
        assert!(dir.link_maps.windows(2).all(|w| w[0].from.len() >= w[1].from.len()));
        for (i, m) in dir.link_maps.iter().enumerate() {
            assert!(link_url_ok(&m.from) && link_url_ok(&m.to), "{m:?}");
            assert!(dir.link_maps[i + 1..].iter().all(|o| o.from != m.from), "duplicate map {m:?}");
        }
        for (i, h) in dir.handlers.iter().enumerate() {
            assert!(check_extension(&h.extension).is_ok() && h.extension == h.extension.to_ascii_lowercase());
            assert!(valid_name(&h.group));
            assert!(dir.handlers[i + 1..].iter().all(|o| o.extension != h.extension), "duplicate handler {h:?}");
            assert!(dir.group_for_file(&format!("x{}", h.extension.to_ascii_uppercase())).is_some());
        }
    }
}

/// What `LinkRewrite` promises of its FROM and TO.
fn link_url_ok(url: &str) -> bool {
    (url.starts_with('/') || url.starts_with("http://") || url.starts_with("https://"))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `ProcdLanguages` files: errors name the file; an accepted file resolves
/// to a table of valid names, with lower-case valid extensions and no
/// empty commands, or to the one error a file can still give then (a new
/// language without a protocol).
pub fn language_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let file = match parse_language_file("fuzz.toml", &text) {
        Ok(file) => file,
        Err(e) => {
            assert!(e.starts_with("fuzz.toml: "), "{e}");
            return;
        }
    };
    for (name, entry) in &file.entries {
        assert!(valid_name(name), "{name:?}");
        assert!(entry.extensions.iter().flatten().all(|e| check_extension(e).is_ok()));
    }
    // The same file twice: the second overrides the first field by field.
    let overrides = LanguageOverrides { files: vec![file.clone(), file] };
    match overrides.table() {
        Ok(table) => {
            for (name, lang) in &table {
                assert_eq!(&lang.name, name);
                assert!(valid_name(name));
                assert!(lang.command.as_ref().is_none_or(|c| !c.is_empty() && c.iter().all(|w| !w.is_empty())));
                for ext in &lang.extensions {
                    assert!(check_extension(ext).is_ok() && *ext == ext.to_ascii_lowercase(), "{ext:?}");
                }
            }
        }
        Err(e) => assert!(e.contains("needs protocol"), "{e}"),
    }
}

fn link_maps(pairs: &[(&str, &str)]) -> Vec<LinkMap> {
    pairs.iter().map(|(from, to)| LinkMap { from: from.to_string(), to: to.to_string() }).collect()
}

/// The same FROMs, each mapped to itself: a rewriter that must change nothing.
fn identity(maps: &[LinkMap]) -> Maps {
    Maps::new(&maps.iter().map(|m| LinkMap { from: m.from.clone(), to: m.from.clone() }).collect::<Vec<_>>())
}

/// The maps of the scanner target.
fn scanner_maps() -> Vec<LinkMap> {
    link_maps(&[("http://h/", "/p/"), ("https://h:8443/app/", "/b/"), ("//h/", "http://x.example/"), ("/", "/q/")])
}

/// Streams `chunks` through a rewriter the way the output filter does and
/// returns the whole output. Checks that `unchanged_prefix` (which lets
/// the filter pass a chunk on as it came) tells the truth.
fn stream(maps: &Maps, body: Body, encoding: BodyEncoding, chunks: &[&[u8]]) -> Vec<u8> {
    let mut r = StreamRewriter::new(maps.clone(), body, None, encoding).expect("no charset");
    let mut out = Vec::new();
    for chunk in chunks {
        let o = r.write(chunk).expect("a valid stream");
        let bytes = o.to_vec();
        assert_eq!(bytes.len(), o.len());
        if let Some(n) = o.unchanged_prefix() {
            assert_eq!(bytes, &chunk[..n], "unchanged_prefix({n}) is not the output");
        }
        out.extend_from_slice(&bytes);
    }
    out.extend(r.end().expect("a valid stream"));
    out
}

/// `data` cut at `cuts` (positions, any order, reduced modulo its length + 1).
fn cut<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    at.sort_unstable();
    let mut pieces = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for c in at {
        pieces.push(&data[start..c]);
        start = c;
    }
    pieces.push(&data[start..]);
    pieces
}

/// The HTML/CSS scanner with its chunk-invariance oracle. Input: a mode
/// byte (body kind, compression), a count byte, that many big-endian u16
/// cut points, then the document. Maps that change nothing give the
/// document back byte for byte, whole or cut; real maps give the same
/// output whole, cut at the fuzzer's points, and (compressed) with the
/// compressed stream cut at them.
pub fn rewrite_scanner(data: &[u8]) {
    let [mode, count, rest @ ..] = data else { return };
    let n = usize::from(*count % 16);
    if rest.len() < 2 * n {
        return;
    }
    let (cut_bytes, doc) = rest.split_at(2 * n);
    let cuts: Vec<usize> = cut_bytes.chunks_exact(2).map(|c| usize::from(u16::from_be_bytes([c[0], c[1]]))).collect();
    let body = match mode % 3 {
        0 => Body::Html { css: false },
        1 => Body::Html { css: true },
        _ => Body::Css,
    };
    let maps = scanner_maps();
    let same = identity(&maps);
    let real = Maps::new(&maps);
    let pieces = cut(doc, &cuts);
    assert_eq!(stream(&same, body, BodyEncoding::Identity, &[doc]), doc, "identity maps, whole");
    assert_eq!(stream(&same, body, BodyEncoding::Identity, &pieces), doc, "identity maps, cut at {cuts:?}");
    let whole = stream(&real, body, BodyEncoding::Identity, &[doc]);
    assert_eq!(stream(&real, body, BodyEncoding::Identity, &pieces), whole, "cut at {cuts:?}");
    if mode & 0x80 != 0 {
        let level = flate2::Compression::fast();
        let (encoding, packed) = if mode & 0x40 != 0 {
            let mut z = flate2::write::GzEncoder::new(Vec::new(), level);
            z.write_all(doc).expect("in memory");
            (BodyEncoding::Gzip, z.finish().expect("in memory"))
        } else {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), level);
            z.write_all(doc).expect("in memory");
            (BodyEncoding::Deflate, z.finish().expect("in memory"))
        };
        let packed_pieces = cut(&packed, &cuts);
        assert_eq!(stream(&real, body, encoding, &packed_pieces), whole, "{encoding:?}, cut at {cuts:?}");
    }
}

/// Header names the header target picks from (by the first byte).
const HEADER_NAMES: &[&str] =
    &["Location", "content-location", "URI", "Refresh", "Link", "Set-Cookie", "SET-COOKIE", "X-Other"];

/// LinkRewrite's header rewriting. Input: a selector byte (header name,
/// identity maps), then lines: all but the last are `FROM TO` argument
/// lines of `LinkRewrite` (those the directive accepts are the maps; none:
/// built-in maps), the last is the header value, Latin-1 as the filter
/// reads it. No rewrite adds CR, LF or NUL to a value; maps that change
/// nothing change no URL header; a rewritten URL header starts with a TO.
pub fn rewrite_headers(data: &[u8]) {
    let [selector, rest @ ..] = data else { return };
    let name = HEADER_NAMES[usize::from(*selector) % HEADER_NAMES.len()];
    let mut lines: Vec<&[u8]> = rest.split(|b| *b == b'\n').collect();
    let value: String = lines.pop().unwrap_or_default().iter().map(|b| char::from(*b)).collect();
    let ctx = DirectiveContext {
        directory: None,
        origin: Origin { file: "fuzz.conf".into(), line: 1 },
        in_vhost: false,
        in_section: false,
        server_root: "/etc/apache2".into(),
    };
    let mut dir = DirConfig::default();
    for line in lines.iter().take(8) {
        let _ = dir.apply("LinkRewrite", &String::from_utf8_lossy(line), &ctx);
    }
    let maps = if dir.link_maps.is_empty() {
        link_maps(&[
            ("http://h/", "/p/"),
            ("http://h:8080/app/", "https://o.example/x/"),
            ("//h/", "/s/"),
            ("/old/", "/new/"),
        ])
    } else {
        dir.link_maps
    };
    let identity_maps = selector & 0x80 != 0;
    let rewriter = if identity_maps { identity(&maps) } else { Maps::new(&maps) };
    let Some(new) = rewriter.rewrite_header(name, &value) else { return };
    if !value.contains(['\r', '\n', '\0']) {
        assert!(!new.contains(['\r', '\n', '\0']), "{name}: {value:?} became {new:?}");
    }
    let lower = name.to_ascii_lowercase();
    assert!(!identity_maps || lower == "set-cookie", "{name}: {value:?} became {new:?} with maps that change nothing");
    if matches!(lower.as_str(), "location" | "content-location" | "uri") {
        let lead = &value[..value.len() - value.trim_start().len()];
        let url = new.strip_prefix(lead).expect("leading space is kept");
        assert!(maps.iter().any(|m| url.starts_with(&m.to)), "{value:?} became {new:?}");
    }
    assert!(!matches!(lower.as_str(), "x-other"), "{name} is not a URL header");
}

/// The CGI launcher's REQUEST reader (`src/launcher/procd_cgi.rs`), fed as
/// a non-blocking socket feeds it. Input: one byte for the size of the
/// pieces, then the stream. The outcome is the same whether the stream
/// comes whole or in pieces (with "nothing yet" between them); it never
/// reads past the frame it announces (what follows is the script's body);
/// what it accepts has unique, non-empty names without `=`, at most
/// `MAX_PAIRS` of them.
pub fn cgi_frame(data: &[u8]) {
    use crate::cgi_launcher::{FrameReader, MAX_FRAME, MAX_PAIRS};
    let Some((&size, stream)) = data.split_first() else { return };
    let piece = usize::from(size % 16) + 1;

    /// Gives `piece` bytes a call, with "would block" between pieces.
    struct Pieces<'a> {
        data: &'a [u8],
        at: usize,
        piece: usize,
        paused: bool,
        whole: bool,
    }
    impl std::io::Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.paused && !self.whole {
                self.paused = false;
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            self.paused = true;
            let n = buf.len().min(self.data.len() - self.at);
            let n = if self.whole { n } else { n.min(self.piece) };
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }
    let run = |whole: bool| {
        let mut src = Pieces { data: stream, at: 0, piece, paused: false, whole };
        let mut reader = FrameReader::new();
        loop {
            match reader.feed(&mut src) {
                Ok(None) => assert!(!whole, "a whole stream never waits"),
                outcome => return (outcome, src.at),
            }
        }
    };
    let (whole, used) = run(true);
    let (pieces, used_in_pieces) = run(false);
    assert_eq!(whole, pieces, "the same stream whole and in pieces of {piece}");
    if let Ok(Some(env)) = &whole {
        assert_eq!(used, used_in_pieces);
        let length = u32::from_be_bytes([stream[1], stream[2], stream[3], stream[4]]) as usize;
        assert!(length <= MAX_FRAME && used == 5 + length, "read {used} for a frame of {length}");
        assert!(env.len() <= MAX_PAIRS);
        let mut names = std::collections::HashSet::new();
        for (name, _) in env {
            let name = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
            assert!(!name.is_empty() && !name.contains(&b'=') && !name.contains(&0));
            assert!(names.insert(name.to_vec()), "a name twice");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A tiny xorshift: no dependency, the same mutations on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut v = input.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(v.len() + 1);
            match rng.below(6) {
                0 if at < v.len() => v[at] ^= 1 << rng.below(8),
                1 if at < v.len() => v[at] = rng.next() as u8,
                2 => {
                    let special = b"<>\"'=&;/:\n#x \0\xff";
                    v.insert(at, special[rng.below(special.len())]);
                }
                3 if at < v.len() => {
                    let end = (at + 1 + rng.below(8)).min(v.len());
                    v.drain(at..end);
                }
                4 if !other.is_empty() => {
                    // Splice in a stretch of another input.
                    let from = rng.below(other.len());
                    let end = (from + 1 + rng.below(32)).min(other.len());
                    v.splice(at..at, other[from..end].iter().copied());
                }
                _ => v.insert(at, rng.next() as u8),
            }
        }
        v
    }

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let mut files = Vec::new();
        for dir in ["corpus", "seeds"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir).join(target);
            let Ok(entries) = std::fs::read_dir(&path) else { continue };
            let mut names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            names.sort();
            files.extend(names.iter().filter_map(|p| std::fs::read(p).ok()));
        }
        files
    }

    /// Every target on its committed corpus, then on a few thousand
    /// mutations of it (at most ~2 s of mutations per target).
    #[test]
    fn fuzz_targets_smoke() {
        for (name, target) in TARGETS {
            let inputs = corpus(name);
            assert!(!inputs.is_empty(), "fuzz/corpus/{name} and fuzz/seeds/{name} are empty");
            for input in &inputs {
                target(input);
            }
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
            let start = Instant::now();
            let mut runs = 0;
            while runs < 4000 && start.elapsed() < Duration::from_secs(2) {
                let input = &inputs[rng.below(inputs.len())];
                let other = &inputs[rng.below(inputs.len())];
                target(&mutate(&mut rng, input, other));
                runs += 1;
            }
            assert!(runs > 0);
        }
    }

    /// `fuzz/Cargo.toml` parses (a duplicated key once broke every target's
    /// build) and names each target once, with its file.
    #[test]
    fn fuzz_manifest_names_every_target() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml");
        let text = std::fs::read_to_string(&path).expect("fuzz/Cargo.toml is readable");
        let manifest: toml::Table = toml::from_str(&text).expect("fuzz/Cargo.toml parses");
        let bins = manifest["bin"].as_array().expect("[[bin]] tables");
        let mut names: Vec<(&str, &str)> =
            bins.iter().map(|b| (b["name"].as_str().unwrap_or(""), b["path"].as_str().unwrap_or(""))).collect();
        names.sort();
        let mut expected: Vec<(&str, String)> =
            TARGETS.iter().map(|(name, _)| (*name, format!("fuzz_targets/{name}.rs"))).collect();
        expected.sort();
        let expected: Vec<(&str, &str)> = expected.iter().map(|(n, p)| (*n, p.as_str())).collect();
        assert_eq!(names, expected);
        for (_, file) in &names {
            assert!(path.with_file_name(file).is_file(), "fuzz/{file}");
        }
    }

    #[test]
    fn scanner_cuts() {
        assert_eq!(cut(b"abcdef", &[4, 2, 9]), [&b"ab"[..], b"", b"cd", b"ef"]);
        assert_eq!(cut(b"", &[3]), [&b""[..], b""]);
    }
}
