//! HTTP/1.1 between Apache and a program of the `http` protocol: the
//! response head parser, the chunked body decoder, which headers are
//! hop-by-hop, and the request head Apache sends. Sans-IO and bounded:
//! everything a program sends is hostile input (see PROTOCOL.md, "The http
//! protocol").

#![forbid(unsafe_code)]

use super::{MAX_HEADERS, MAX_HEADERS_SIZE};

/// A chunk-size line (with extensions) longer than this is refused.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Trailer section of a chunked body: at most this many bytes (dropped).
pub const MAX_TRAILERS: usize = 64 << 10;

/// Why a program's answer is not acceptable HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    HeadTooLarge,
    TooManyHeaders,
    BadStatusLine,
    BadHeader,
    /// A continuation line (obs-fold), refused as RFC 9112 §5.2 allows.
    Folded,
    BadContentLength,
    ConflictingContentLength,
    /// Both Transfer-Encoding and Content-Length (request smuggling shape).
    LengthAndEncoding,
    /// A Transfer-Encoding other than `chunked`.
    BadTransferEncoding,
    BadChunk,
    TrailersTooLarge,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HttpError::HeadTooLarge => "response head larger than 64 KiB",
            HttpError::TooManyHeaders => "more than 100 response headers",
            HttpError::BadStatusLine => "malformed status line",
            HttpError::BadHeader => "malformed header line (name not a token, or CR, LF or NUL in a value)",
            HttpError::Folded => "folded header line (obs-fold)",
            HttpError::BadContentLength => "invalid Content-Length",
            HttpError::ConflictingContentLength => "conflicting Content-Length headers",
            HttpError::LengthAndEncoding => "both Transfer-Encoding and Content-Length",
            HttpError::BadTransferEncoding => "a Transfer-Encoding other than chunked",
            HttpError::BadChunk => "malformed chunked body",
            HttpError::TrailersTooLarge => "chunked trailers larger than 64 KiB",
        })
    }
}

/// A parsed response head. Header names and values are Latin-1 strings
/// (each byte one char), as the rest of the handler carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// Every value of `name` (case-insensitive).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether the program keeps the connection open after this response
    /// (HTTP/1.1 without `Connection: close`).
    pub fn keeps_alive(&self) -> bool {
        self.minor == 1 && !has_token(self.values("connection"), "close")
    }
}

pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn latin1(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        // ASCII (nearly every header): the same text, copied at once.
        Ok(text) if text.is_ascii() => text.to_owned(),
        _ => bytes.iter().map(|b| char::from(*b)).collect(),
    }
}

/// The lines of a head whose blank line is cut off: each but the last
/// ends with CRLF (taken off), and a bare LF is refused. (Two `memmem`
/// searches for CRLF, built for each response, cost more than the parse.)
fn head_lines(head: &[u8]) -> impl Iterator<Item = Result<&[u8], HttpError>> {
    let mut rest = Some(head);
    std::iter::from_fn(move || {
        let text = rest?;
        match memchr::memchr(b'\n', text) {
            Some(at) => {
                rest = Some(&text[at + 1..]);
                Some(text[..at].strip_suffix(b"\r").ok_or(HttpError::BadHeader))
            }
            None => {
                rest = None;
                Some(Ok(text))
            }
        }
    })
}

/// Whether a comma-separated header (over all its `values`) lists `token`.
pub fn has_token<'a>(values: impl Iterator<Item = &'a str>, token: &str) -> bool {
    values.flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Parses a response head at the start of `buf`: `Ok(None)` until the
/// empty line has arrived; then the head and the bytes it used. Only
/// CRLF line ends; at most `MAX_HEADERS` headers in `MAX_HEADERS_SIZE` bytes.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let window = &buf[..buf.len().min(MAX_HEADERS_SIZE)];
    let Some(end) = memchr::memmem::find(window, b"\r\n\r\n") else {
        return if buf.len() >= MAX_HEADERS_SIZE { Err(HttpError::HeadTooLarge) } else { Ok(None) };
    };
    parse_head_ending_at(buf, end).map(Some)
}

/// The head of `buf` whose first CRLFCRLF starts at `end`.
fn parse_head_ending_at(buf: &[u8], end: usize) -> Result<(ResponseHead, usize), HttpError> {
    let used = end + 4;
    let head = &buf[..end];
    let mut lines = head_lines(head);
    let status_line = lines.next().and_then(Result::ok).ok_or(HttpError::BadStatusLine)?;
    let (minor, status) = parse_status_line(status_line)?;
    let mut headers = Vec::with_capacity(16);
    for line in lines {
        let line = line?;
        // Only CRLF ends a line: a bare CR or LF inside is refused.
        if line.is_empty() || line.contains(&b'\r') || line.contains(&b'\n') {
            return Err(HttpError::BadHeader);
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(HttpError::Folded);
        }
        let colon = line.iter().position(|b| *b == b':').ok_or(HttpError::BadHeader)?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| is_token_byte(*b)) {
            return Err(HttpError::BadHeader);
        }
        let value = value.trim_ascii();
        if value.contains(&0) {
            return Err(HttpError::BadHeader);
        }
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::TooManyHeaders);
        }
        headers.push((latin1(name), latin1(value)));
    }
    Ok((ResponseHead { minor, status, headers }, used))
}

/// A response head that arrives a few bytes per read, searched once in
/// all for its end rather than once per read: a program that dribbles a
/// 64 KiB head a byte at a time would otherwise make Apache search up to
/// 64 KiB per byte. Use one per head being read, over a buffer that only
/// grows until the head is parsed.
#[derive(Debug, Default)]
pub struct HeadSearch {
    /// The buffer's length at the last call that found no end.
    searched: usize,
}

impl HeadSearch {
    /// [`parse_response_head`] of `buf`, with the same answer; the bytes
    /// searched before are not searched again (but for the 3 that can
    /// start an end split across reads).
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
        if buf.len() >= MAX_HEADERS_SIZE {
            self.searched = 0;
            return parse_response_head(buf);
        }
        // No end lies wholly in what was searched, so the first one
        // starts at or after `from`.
        let from = self.searched.min(buf.len()).saturating_sub(3);
        match memchr::memmem::find(&buf[from..], b"\r\n\r\n") {
            None => {
                self.searched = buf.len();
                Ok(None)
            }
            Some(at) => {
                // The caller drains what the head used before any next head.
                self.searched = 0;
                parse_head_ending_at(buf, from + at).map(Some)
            }
        }
    }
}

fn parse_status_line(line: &[u8]) -> Result<(u8, u16), HttpError> {
    let rest = line.strip_prefix(b"HTTP/1.").ok_or(HttpError::BadStatusLine)?;
    let minor = match rest.first() {
        Some(b'0') => 0,
        Some(b'1') => 1,
        _ => return Err(HttpError::BadStatusLine),
    };
    let rest = rest[1..].strip_prefix(b" ").ok_or(HttpError::BadStatusLine)?;
    let code = rest.get(..3).ok_or(HttpError::BadStatusLine)?;
    if !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
        return Err(HttpError::BadStatusLine);
    }
    let reason = &rest[3..];
    if !(reason.is_empty() || reason[0] == b' ') || reason.iter().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err(HttpError::BadStatusLine);
    }
    let status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    Ok((minor, status))
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until the program closes the connection.
    UntilClose,
}

/// The framing of `head` as the answer to a request (`head_request`: a
/// HEAD). Refuses what could desync: Content-Length with
/// Transfer-Encoding, differing or malformed lengths, codings other than
/// `chunked`.
pub fn response_framing(head: &ResponseHead, head_request: bool) -> Result<Framing, HttpError> {
    let encodings: Vec<&str> = head.values("transfer-encoding").collect();
    let mut length: Option<u64> = None;
    for v in head.values("content-length") {
        let n = (!v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()))
            .then(|| v.parse::<u64>().ok())
            .flatten()
            .ok_or(HttpError::BadContentLength)?;
        if length.is_some_and(|m| m != n) {
            return Err(HttpError::ConflictingContentLength);
        }
        length = Some(n);
    }
    if !encodings.is_empty() {
        if length.is_some() {
            return Err(HttpError::LengthAndEncoding);
        }
        let codings: Vec<&str> = encodings.iter().flat_map(|v| v.split(',')).map(str::trim).collect();
        if codings.len() != 1 || !codings[0].eq_ignore_ascii_case("chunked") {
            return Err(HttpError::BadTransferEncoding);
        }
    }
    if head_request || head.status < 200 || head.status == 204 || head.status == 304 {
        return Ok(Framing::None);
    }
    Ok(match (length, encodings.is_empty()) {
        (_, false) => Framing::Chunked,
        (Some(n), true) => Framing::Length(n),
        (None, true) => Framing::UntilClose,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

/// Decodes a chunked body incrementally; bounded (chunk-size lines of
/// `MAX_CHUNK_LINE`, trailers of `MAX_TRAILERS`, which are dropped).
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    line: Vec<u8>,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder { state: ChunkState::Size, line: Vec::new(), trailer_bytes: 0 }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from `input`, appending body bytes to `out`; returns how many
    /// input bytes it used (all of them unless the body ended: the rest is
    /// not part of it).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HttpError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data(left) => {
                    let n = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    let left = left - n as u64;
                    self.state = if left == 0 { ChunkState::DataEnd } else { ChunkState::Data(left) };
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailers => {
                    let Some(nl) = memchr::memchr(b'\n', &input[i..]) else {
                        self.take_line_part(&input[i..])?;
                        i = input.len();
                        break;
                    };
                    self.take_line_part(&input[i..i + nl + 1])?;
                    i += nl + 1;
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r\n").ok_or(HttpError::BadChunk)?;
                    self.end_of_line(line)?;
                }
            }
        }
        Ok(i)
    }

    fn take_line_part(&mut self, part: &[u8]) -> Result<(), HttpError> {
        self.line.extend_from_slice(part);
        match self.state {
            ChunkState::Trailers => {
                self.trailer_bytes += part.len();
                if self.trailer_bytes > MAX_TRAILERS {
                    return Err(HttpError::TrailersTooLarge);
                }
                if self.line.len() > MAX_CHUNK_LINE * 16 {
                    return Err(HttpError::TrailersTooLarge);
                }
            }
            _ if self.line.len() > MAX_CHUNK_LINE => return Err(HttpError::BadChunk),
            _ => {}
        }
        Ok(())
    }

    fn end_of_line(&mut self, line: &[u8]) -> Result<(), HttpError> {
        match self.state {
            ChunkState::DataEnd if line.is_empty() => self.state = ChunkState::Size,
            ChunkState::Size => {
                let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                if digits == 0 || digits > 15 {
                    return Err(HttpError::BadChunk);
                }
                let ext = &line[digits..];
                let ext_ok = ext.is_empty() || ext.trim_ascii_start().first() == Some(&b';');
                if !ext_ok || ext.iter().any(|b| *b == 0 || *b == b'\r') {
                    return Err(HttpError::BadChunk);
                }
                let size = line[..digits].iter().fold(0u64, |n, d| n * 16 + u64::from(hex(*d)));
                self.state = if size == 0 { ChunkState::Trailers } else { ChunkState::Data(size) };
            }
            ChunkState::Trailers if line.is_empty() => self.state = ChunkState::Done,
            ChunkState::Trailers => {}
            _ => return Err(HttpError::BadChunk),
        }
        Ok(())
    }
}

fn hex(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), by name in any case: never
/// forwarded either way (`Upgrade` only for a tunnel).
pub fn is_hop_by_hop(name: &str) -> bool {
    is_hop_by_hop_bytes(name.as_bytes())
}

fn is_hop_by_hop_bytes(name: &[u8]) -> bool {
    ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        || name.get(..6).is_some_and(|p| p.eq_ignore_ascii_case(b"proxy-"))
}

/// Removes the hop-by-hop headers of `headers`: the fixed ones and those
/// its `Connection` headers name.
pub fn strip_hop_by_hop(headers: &mut Vec<(String, String)>) {
    // Nothing is allocated unless there is a Connection header.
    let mut listed = String::new();
    for (n, v) in headers.iter() {
        if n.eq_ignore_ascii_case("connection") {
            listed.push_str(v);
            listed.push(',');
        }
    }
    let named: Vec<&str> = listed.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
    headers.retain(|(n, _)| !is_hop_by_hop(n) && !named.iter().any(|t| n.eq_ignore_ascii_case(t)));
}

/// How the request body goes to the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    None,
    Length(u64),
    /// Re-chunked as it is read from the client.
    Chunked,
}

/// What Apache adds to a forwarded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding<'a> {
    /// The client's address (Apache's `useragent_ip`).
    pub client_ip: &'a str,
    /// `http` or `https`.
    pub proto: &'a str,
    /// The `LanguageMount` prefix (empty for `/`).
    pub prefix: &'a str,
    /// Forward `Upgrade` and `Connection: Upgrade` (a tunnel is asked for).
    pub upgrade: Option<&'a str>,
}

/// The request head Apache sends a program: the client's method, target
/// and headers less hop-by-hop ones and its own framing; Apache's framing
/// for `body`; `X-Forwarded-For`, `X-Forwarded-Host` and `Forwarded`
/// appended to what the client sent (as mod_proxy does: the last element
/// is Apache's), `X-Forwarded-Proto` and `X-Forwarded-Prefix` set. Header
/// values with CR, LF or NUL (another module's doing) are left out.
pub fn encode_request_head(
    method: &[u8],
    target: &[u8],
    headers: &[(Vec<u8>, Vec<u8>)],
    body: RequestBody,
    fwd: &Forwarding<'_>,
    out: &mut Vec<u8>,
) {
    let clean = |v: &[u8]| !v.iter().any(|b| matches!(b, b'\r' | b'\n' | 0));
    let named: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v).split(',').map(|t| t.trim().to_ascii_lowercase()).collect::<Vec<_>>()
        })
        .collect();
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut xff: Option<Vec<u8>> = None;
    let mut xfh: Option<Vec<u8>> = None;
    let mut forwarded: Option<Vec<u8>> = None;
    let mut host: Option<&[u8]> = None;
    for (name, value) in headers {
        if !clean(value) || name.is_empty() || !name.iter().all(|b| is_token_byte(*b)) {
            continue;
        }
        // Compared without a lowercased copy of each name.
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        let join = |slot: &mut Option<Vec<u8>>| {
            let v = slot.get_or_insert_with(Vec::new);
            if !v.is_empty() {
                v.extend_from_slice(b", ");
            }
            v.extend_from_slice(value);
        };
        if is("x-forwarded-for") {
            join(&mut xff);
        } else if is("x-forwarded-host") {
            join(&mut xfh);
        } else if is("forwarded") {
            join(&mut forwarded);
        } else if is("content-length") || is("x-forwarded-proto") || is("x-forwarded-prefix") {
        } else if is("host") {
            // Folded into one Host header below.
            host = host.or(Some(value));
        } else if is_hop_by_hop_bytes(name) || named.iter().any(|t| is(t)) {
        } else {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    }
    let mut line = |name: &str, value: &[u8]| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    let host = host.unwrap_or(b"localhost");
    line("Host", host);
    let append = |old: Option<Vec<u8>>, new: &[u8]| {
        let mut v = old.unwrap_or_default();
        if !v.is_empty() {
            v.extend_from_slice(b", ");
        }
        v.extend_from_slice(new);
        v
    };
    line("X-Forwarded-For", &append(xff, fwd.client_ip.as_bytes()));
    line("X-Forwarded-Host", &append(xfh, host));
    line("X-Forwarded-Proto", fwd.proto.as_bytes());
    if !fwd.prefix.is_empty() {
        line("X-Forwarded-Prefix", fwd.prefix.as_bytes());
    }
    // RFC 7239: a quoted host, and an IPv6 address quoted in brackets.
    let for_ = if fwd.client_ip.contains(':') { format!("\"[{}]\"", fwd.client_ip) } else { fwd.client_ip.to_string() };
    let host_q: String = String::from_utf8_lossy(host).replace(['"', '\\'], "");
    let element = format!("for={for_};host=\"{host_q}\";proto={}", fwd.proto);
    line("Forwarded", &append(forwarded, element.as_bytes()));
    match body {
        RequestBody::None => {}
        RequestBody::Length(n) => line("Content-Length", n.to_string().as_bytes()),
        RequestBody::Chunked => line("Transfer-Encoding", b"chunked"),
    }
    if let Some(proto) = fwd.upgrade {
        line("Connection", b"Upgrade");
        line("Upgrade", proto.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// The client's `Upgrade` protocol if it asks for one properly (the
/// `Upgrade` header, listed in `Connection`), for a GET.
pub fn requested_upgrade(method: &[u8], headers: &[(Vec<u8>, Vec<u8>)]) -> Option<String> {
    if method != b"GET" {
        return None;
    }
    let values = |name: &[u8]| -> Vec<String> {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    };
    let connection = values(b"connection");
    if !has_token(connection.iter().map(String::as_str), "upgrade") {
        return None;
    }
    let upgrade = values(b"upgrade").join(", ");
    let valid = !upgrade.is_empty() && upgrade.bytes().all(|b| is_token_byte(b) || matches!(b, b'/' | b',' | b' '));
    valid.then_some(upgrade)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> ResponseHead {
        parse_response_head(text.as_bytes()).expect("valid").expect("complete").0
    }

    #[test]
    fn a_head_searched_as_it_grows_gives_what_the_parser_gives() {
        let heads: [&[u8]; 5] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhi",
            b"HTTP/1.1 200 OK\nBad: lf\n\n\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n folded\r\n\r\n",
            b"junk\r\n\r\n",
        ];
        for raw in heads {
            for step in [1, 2, 3, 5, 7] {
                crate::fuzz_api::head_search_agrees(raw, step);
            }
        }
        // Over the limit without an end: the same error, however it came.
        let mut search = HeadSearch::default();
        let mut buf = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        assert_eq!(search.parse(&buf), Ok(None));
        buf.resize(MAX_HEADERS_SIZE, b'v');
        assert_eq!(search.parse(&buf), Err(HttpError::HeadTooLarge));
    }

    #[test]
    fn a_response_head_parses_byte_for_byte() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty:\r\nX-Latin: caf\xe9 \r\n\r\nbody";
        let (h, used) = parse_response_head(raw).unwrap().unwrap();
        assert_eq!(used, raw.len() - 4);
        assert_eq!((h.minor, h.status), (1, 200));
        assert_eq!(
            h.headers,
            [
                ("Content-Type".into(), "text/plain".into()),
                ("Set-Cookie".into(), "a=1".into()),
                ("Set-Cookie".into(), "b=2".into()),
                ("X-Empty".into(), String::new()),
                ("X-Latin".into(), "caf\u{e9}".into()),
            ]
        );
        assert!(h.keeps_alive());
        // Every shorter prefix asks for more.
        for cut in 0..used {
            assert_eq!(parse_response_head(&raw[..cut]), Ok(None), "cut at {cut}");
        }
        let h10 = head("HTTP/1.0 404\r\n\r\n");
        assert_eq!((h10.minor, h10.status), (0, 404));
        assert!(!h10.keeps_alive());
        assert!(!head("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n\r\n").keeps_alive());
    }

    #[test]
    fn hostile_heads_are_refused() {
        let bad = |raw: &[u8], e: HttpError| assert_eq!(parse_response_head(raw), Err(e), "{raw:?}");
        bad(b"HTTP/2 200 OK\r\n\r\n", HttpError::BadStatusLine);
        bad(b"HTTP/1.1 20 OK\r\n\r\n", HttpError::BadStatusLine);
        bad(b"HTTP/1.1 200OK\r\n\r\n", HttpError::BadStatusLine);
        bad(b"HTTP/1.1 099 x\r\n\r\n", HttpError::BadStatusLine);
        bad(b"ICY 200 OK\r\n\r\n", HttpError::BadStatusLine);
        bad(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", HttpError::BadHeader);
        bad(b"HTTP/1.1 200 OK\r\nName : x\r\n\r\n", HttpError::BadHeader);
        bad(b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", HttpError::BadHeader);
        bad(b"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", HttpError::BadHeader);
        bad(b"HTTP/1.1 200 OK\r\nA: b\nC: d\r\n\r\n", HttpError::BadHeader);
        bad(b"HTTP/1.1 200 OK\r\nA: b\0\r\n\r\n", HttpError::BadHeader);
        bad(b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", HttpError::Folded);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("H{i}: v\r\n")).collect();
        bad(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes(), HttpError::TooManyHeaders);
        let huge = format!("HTTP/1.1 200 OK\r\nA: {}\r\n\r\n", "x".repeat(MAX_HEADERS_SIZE));
        bad(huge.as_bytes(), HttpError::HeadTooLarge);
        // Unterminated but over the limit: refused without waiting for more.
        bad(&huge.as_bytes()[..MAX_HEADERS_SIZE + 10], HttpError::HeadTooLarge);
    }

    #[test]
    fn framing_follows_rfc_9112_and_refuses_smuggling_shapes() {
        let f = |t: &str, head_req: bool| response_framing(&head(t), head_req);
        assert_eq!(f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false), Ok(Framing::Length(5)));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", false),
            Ok(Framing::Length(5))
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n", false), Ok(Framing::Chunked));
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n", false), Ok(Framing::UntilClose));
        assert_eq!(f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true), Ok(Framing::None));
        assert_eq!(f("HTTP/1.1 204 No Content\r\n\r\n", false), Ok(Framing::None));
        assert_eq!(f("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false), Ok(Framing::None));
        assert_eq!(f("HTTP/1.1 101 Switching\r\n\r\n", false), Ok(Framing::None));
        let e = |t: &str| f(t, false).unwrap_err();
        assert_eq!(
            e("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            HttpError::ConflictingContentLength
        );
        assert_eq!(e("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"), HttpError::BadContentLength);
        assert_eq!(e("HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n"), HttpError::BadContentLength);
        assert_eq!(e("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"), HttpError::BadContentLength);
        assert_eq!(
            e("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpError::LengthAndEncoding
        );
        assert_eq!(e("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), HttpError::BadTransferEncoding);
        assert_eq!(
            e("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpError::BadTransferEncoding
        );
        // Even with HEAD: a program that frames badly is not trusted.
        assert!(f("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", true).is_err());
    }

    fn dechunk_in_pieces(raw: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), HttpError> {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut used = 0;
        for piece in raw.chunks(step.max(1)) {
            used += d.decode(piece, &mut out)?;
            if d.is_done() {
                break;
            }
        }
        Ok((out, used, d.is_done()))
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        let raw = b"5\r\nhello\r\n1;ext=1\r\n \r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for step in 1..raw.len() {
            let (out, used, done) = dechunk_in_pieces(raw, step).unwrap();
            assert_eq!(out, b"hello 0123456789abcdef", "step {step}");
            assert!(done);
            assert_eq!(used, raw.len() - 4, "step {step}");
        }
        let bad = |raw: &[u8]| assert!(dechunk_in_pieces(raw, 7).is_err(), "{raw:?}");
        bad(b"x\r\n");
        bad(b"5\r\nhelloXX\r\n");
        bad(b"5 junk\r\n");
        bad(b"1234567890abcdef0\r\n");
        bad(b"5\nhello\r\n");
        bad(&[b'1'; MAX_CHUNK_LINE + 2]);
        let mut trailers = b"0\r\n".to_vec();
        trailers.extend(std::iter::repeat_n(b"T: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 2000).flatten());
        assert_eq!(dechunk_in_pieces(&trailers, 4096), Err(HttpError::TrailersTooLarge));
        // Incomplete: not done, everything used.
        assert_eq!(dechunk_in_pieces(b"5\r\nhel", 3), Ok((b"hel".to_vec(), 6, false)));
    }

    #[test]
    fn hop_by_hop_headers_go_both_ways() {
        let mut h: Vec<(String, String)> = [
            ("Connection", "close, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Proxy-Authenticate", "x"),
            ("Upgrade", "h2c"),
            ("Trailer", "x"),
            ("Content-Type", "text/plain"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, [("Content-Type".to_string(), "text/plain".to_string())]);
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        list.iter().map(|(a, b)| (a.as_bytes().to_vec(), b.as_bytes().to_vec())).collect()
    }

    #[test]
    fn the_request_head_is_golden() {
        let headers = pairs(&[
            ("Host", "shop.example"),
            ("User-Agent", "t"),
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "1"),
            ("TE", "trailers"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Length", "999"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-Proto", "gopher"),
            ("Proxy-Authorization", "secret"),
            ("Expect", "100-continue"),
            ("X-Bad", "a\r\nInjected: 1"),
        ]);
        let fwd = Forwarding { client_ip: "127.0.0.1", proto: "http", prefix: "/node", upgrade: None };
        let mut out = Vec::new();
        encode_request_head(b"POST", b"/node/a%20b?x=1", &headers, RequestBody::Chunked, &fwd, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /node/a%20b?x=1 HTTP/1.1\r\n\
             User-Agent: t\r\n\
             Expect: 100-continue\r\n\
             Host: shop.example\r\n\
             X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n\
             X-Forwarded-Host: shop.example\r\n\
             X-Forwarded-Proto: http\r\n\
             X-Forwarded-Prefix: /node\r\n\
             Forwarded: for=127.0.0.1;host=\"shop.example\";proto=http\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
        let ws =
            pairs(&[("Host", "h"), ("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Key", "k")]);
        assert_eq!(requested_upgrade(b"GET", &ws).as_deref(), Some("websocket"));
        assert_eq!(requested_upgrade(b"POST", &ws), None);
        assert_eq!(requested_upgrade(b"GET", &pairs(&[("Upgrade", "websocket")])), None);
        let fwd = Forwarding { client_ip: "::1", proto: "https", prefix: "", upgrade: Some("websocket") };
        let mut out = Vec::new();
        encode_request_head(b"GET", b"/ws", &ws, RequestBody::Length(0), &fwd, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /ws HTTP/1.1\r\nSec-WebSocket-Key: k\r\nHost: h\r\nX-Forwarded-For: ::1\r\nX-Forwarded-Host: h\r\n\
             X-Forwarded-Proto: https\r\nForwarded: for=\"[::1]\";host=\"h\";proto=https\r\nContent-Length: 0\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        );
    }
}
