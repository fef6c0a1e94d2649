//! The framed protocol between Apache and language workers (see
//! PROTOCOL.md next to this file): sans-IO encode and decode.
//!
//! Decoding never panics and never allocates more than the frame it has in
//! hand: lengths are checked against the limits before anything is read.

#![forbid(unsafe_code)]

pub mod cgi;
pub mod control;
pub mod fastcgi;
pub mod http;
pub mod launch;

pub const VERSION: u8 = 1;
pub const MAX_FRAME: usize = 1 << 20;
pub const MAX_HEADERS: usize = 100;
pub const MAX_HEADERS_SIZE: usize = 64 << 10;
const HEADER_LEN: usize = 5;
/// The statuses a worker may answer with: final ones. An interim 1xx (101
/// Switching Protocols above all) would hand the client connection to the
/// worker's bytes.
pub const STATUSES: std::ops::RangeInclusive<u16> = 200..=599;
/// At most this much of a worker's text (an ERROR frame) is quoted in a log line.
pub const MAX_LOGGED_TEXT: usize = 2048;

pub mod kind {
    pub const REQUEST: u8 = 0x01;
    pub const BODY: u8 = 0x02;
    pub const HELLO: u8 = 0x10;
    pub const PULL: u8 = 0x11;
    pub const HEADERS: u8 = 0x12;
    pub const DATA: u8 = 0x13;
    pub const FLUSH: u8 = 0x14;
    pub const END: u8 = 0x15;
    pub const ERROR: u8 = 0x16;
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The environment as `name\0value\0` pairs (C strings cannot hold NUL).
    Request {
        env: Vec<u8>,
    },
    Body(Vec<u8>),
    Hello {
        pid: u32,
    },
    Pull {
        max: u32,
    },
    Headers {
        status: u16,
        headers: Vec<(String, String)>,
    },
    Data(Vec<u8>),
    Flush,
    End,
    Error(String),
}

/// Why a byte stream is not a valid exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    FrameTooLarge(usize),
    UnknownType(u8),
    BadVersion(u8),
    Malformed(&'static str),
    TooManyHeaders(usize),
    HeadersTooLarge(usize),
    BadHeader(String),
    BadStatus(u16),
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolError::FrameTooLarge(n) => {
                write!(f, "a frame of {n} bytes (the limit is {MAX_FRAME})")
            }
            ProtocolError::UnknownType(t) => write!(f, "unknown frame type 0x{t:02x}"),
            ProtocolError::BadVersion(v) => {
                write!(f, "protocol version {v} (this module speaks {VERSION})")
            }
            ProtocolError::Malformed(what) => write!(f, "malformed {what} frame"),
            ProtocolError::TooManyHeaders(n) => {
                write!(f, "{n} response headers (the limit is {MAX_HEADERS})")
            }
            ProtocolError::HeadersTooLarge(n) => {
                write!(f, "response headers of {n} bytes (the limit is {MAX_HEADERS_SIZE})")
            }
            ProtocolError::BadHeader(h) => write!(f, "invalid response header \"{}\"", escape_log(h)),
            ProtocolError::BadStatus(s) => {
                write!(f, "invalid status {s} (a final status is 200..=599; 1xx are refused)")
            }
        }
    }
}

impl Frame {
    /// The frame's type name, for log lines (never its payload: that is the
    /// worker's, and may be 1 MiB).
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Request { .. } => "REQUEST",
            Frame::Body(_) => "BODY",
            Frame::Hello { .. } => "HELLO",
            Frame::Pull { .. } => "PULL",
            Frame::Headers { .. } => "HEADERS",
            Frame::Data(_) => "DATA",
            Frame::Flush => "FLUSH",
            Frame::End => "END",
            Frame::Error(_) => "ERROR",
        }
    }
}

/// A worker's text made safe to quote in a log line, the way Apache's
/// `ap_escape_logitem` does it: `"` and `\` are backslashed, and every byte
/// that is not printable ASCII (controls, DEL, and everything from 0x80 on,
/// which C1 controls are among) is written `\xNN`. The text comes from
/// [`decode`], one char per byte (latin-1); a char beyond U+00FF is escaped
/// as its UTF-8 bytes.
pub fn escape_log(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut utf8 = [0u8; 4];
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ if u32::from(c) <= 0xff => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            _ => {
                for b in c.encode_utf8(&mut utf8).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
        }
    }
    out
}

/// [`escape_log`] of at most [`MAX_LOGGED_TEXT`] chars, marking the cut.
pub fn escape_log_bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_LOGGED_TEXT) {
        Some((at, _)) => {
            format!("{}... ({} more bytes)", escape_log(&text[..at]), text.chars().count() - MAX_LOGGED_TEXT)
        }
        None => escape_log(text),
    }
}

/// Control characters (C0, DEL, C1) in a log line written `\xNN`, the rest
/// untouched: the last guard before Apache's log, for text that is ours
/// except for parts already escaped with [`escape_log`].
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(|c| c.is_control()) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A reader over one payload that insists on exact lengths.
struct Cursor<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(ProtocolError::Malformed(self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ProtocolError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<String, ProtocolError> {
        let n = self.u32()? as usize;
        let bytes = self.take(n)?;
        // Latin-1 is how WSGI carries header bytes; map each byte to a char.
        Ok(bytes.iter().map(|b| *b as char).collect())
    }
    fn pairs(&mut self, max: usize) -> Result<Vec<(String, String)>, ProtocolError> {
        let count = self.u32()? as usize;
        if count > max {
            return Err(ProtocolError::TooManyHeaders(count));
        }
        // Each pair needs at least 8 bytes: reject counts the payload cannot hold.
        if count.saturating_mul(8) > self.buf.len() {
            return Err(ProtocolError::Malformed(self.what));
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push((self.string()?, self.string()?));
        }
        Ok(out)
    }
    fn done(&self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() { Ok(()) } else { Err(ProtocolError::Malformed(self.what)) }
    }
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn check_headers(headers: &[(String, String)], encoded: usize) -> Result<(), ProtocolError> {
    if encoded > MAX_HEADERS_SIZE {
        return Err(ProtocolError::HeadersTooLarge(encoded));
    }
    for (name, value) in headers {
        if name.is_empty() || !name.chars().all(is_token_char) || value.chars().any(|c| matches!(c, '\r' | '\n' | '\0'))
        {
            return Err(ProtocolError::BadHeader(format!("{name}: {value}")));
        }
    }
    Ok(())
}

/// Decodes one frame from the front of `buf`: `Ok(None)` if more bytes are
/// needed, else the frame and how many bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let ty = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_FRAME {
        return Err(ProtocolError::FrameTooLarge(len));
    }
    if !matches!(ty, kind::REQUEST | kind::BODY | kind::HELLO..=kind::ERROR) {
        return Err(ProtocolError::UnknownType(ty));
    }
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    let payload = &buf[HEADER_LEN..HEADER_LEN + len];
    let frame = match ty {
        kind::REQUEST => {
            let mut c = Cursor { buf: payload, what: "REQUEST" };
            let v = c.u8()?;
            if v != VERSION {
                return Err(ProtocolError::BadVersion(v));
            }
            let env = c.take(c.buf.len())?.to_vec();
            if env.last().is_some_and(|b| *b != 0) || env.iter().filter(|b| **b == 0).count() % 2 != 0 {
                return Err(ProtocolError::Malformed("REQUEST"));
            }
            Frame::Request { env }
        }
        kind::BODY => Frame::Body(payload.to_vec()),
        kind::HELLO => {
            let mut c = Cursor { buf: payload, what: "HELLO" };
            let v = c.u8()?;
            if v != VERSION {
                return Err(ProtocolError::BadVersion(v));
            }
            let pid = c.u32()?;
            c.done()?;
            Frame::Hello { pid }
        }
        kind::PULL => {
            let mut c = Cursor { buf: payload, what: "PULL" };
            let max = c.u32()?;
            c.done()?;
            if max == 0 || max as usize > MAX_FRAME {
                return Err(ProtocolError::Malformed("PULL"));
            }
            Frame::Pull { max }
        }
        kind::HEADERS => {
            let mut c = Cursor { buf: payload, what: "HEADERS" };
            let status = c.u16()?;
            if !STATUSES.contains(&status) {
                return Err(ProtocolError::BadStatus(status));
            }
            let headers = c.pairs(MAX_HEADERS)?;
            c.done()?;
            check_headers(&headers, len)?;
            Frame::Headers { status, headers }
        }
        kind::DATA => Frame::Data(payload.to_vec()),
        kind::FLUSH | kind::END if !payload.is_empty() => {
            return Err(ProtocolError::Malformed(if ty == kind::FLUSH { "FLUSH" } else { "END" }));
        }
        kind::FLUSH => Frame::Flush,
        kind::END => Frame::End,
        _ => {
            let mut c = Cursor { buf: payload, what: "ERROR" };
            let text = c.string()?;
            c.done()?;
            Frame::Error(text)
        }
    };
    Ok(Some((frame, HEADER_LEN + len)))
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend(s.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')));
    let len = (out.len() - len_at - 4) as u32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Builds the environment of a REQUEST frame.
#[derive(Default)]
pub struct EnvBuilder(Vec<u8>);

impl EnvBuilder {
    pub fn with_capacity(n: usize) -> EnvBuilder {
        EnvBuilder(Vec::with_capacity(n))
    }

    /// Goes on adding to an environment `finish` gave.
    pub fn continuing(env: Vec<u8>) -> EnvBuilder {
        EnvBuilder(env)
    }

    /// Adds one variable; NUL bytes (impossible in C strings) are dropped.
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        push_without_nul(&mut self.0, name);
        self.0.push(0);
        push_without_nul(&mut self.0, value);
        self.0.push(0);
    }

    /// Adds one variable from C strings (no NUL inside, and their own
    /// terminators end the name and the value): two copies, no scan. Apache's
    /// environment goes this way; a byte-at-a-time copy of it was a quarter
    /// of mod_procd's own instructions per request (callgrind, hello app).
    pub fn add_c(&mut self, name: &std::ffi::CStr, value: &std::ffi::CStr) {
        self.0.extend_from_slice(name.to_bytes_with_nul());
        self.0.extend_from_slice(value.to_bytes_with_nul());
    }

    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Appends `bytes` less any NUL in them (a byte-at-a-time copy only when
/// there is one).
fn push_without_nul(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.contains(&0) {
        out.extend(bytes.iter().filter(|b| **b != 0));
    } else {
        out.extend_from_slice(bytes);
    }
}

fn put_pairs(out: &mut Vec<u8>, pairs: &[(String, String)]) {
    out.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
    for (k, v) in pairs {
        put_string(out, k);
        put_string(out, v);
    }
}

/// Appends one encoded frame to `out` (the length is filled in after the body).
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    let ty = match frame {
        Frame::Request { .. } => kind::REQUEST,
        Frame::Body(_) => kind::BODY,
        Frame::Hello { .. } => kind::HELLO,
        Frame::Pull { .. } => kind::PULL,
        Frame::Headers { .. } => kind::HEADERS,
        Frame::Data(_) => kind::DATA,
        Frame::Flush => kind::FLUSH,
        Frame::End => kind::END,
        Frame::Error(_) => kind::ERROR,
    };
    out.push(ty);
    out.extend_from_slice(&[0, 0, 0, 0]);
    match frame {
        Frame::Request { env } => {
            out.push(VERSION);
            out.extend_from_slice(env);
        }
        Frame::Body(b) | Frame::Data(b) => out.extend_from_slice(b),
        Frame::Hello { pid } => {
            out.push(VERSION);
            out.extend_from_slice(&pid.to_be_bytes());
        }
        Frame::Pull { max } => out.extend_from_slice(&max.to_be_bytes()),
        Frame::Headers { status, headers } => {
            out.extend_from_slice(&status.to_be_bytes());
            put_pairs(out, headers);
        }
        Frame::Flush | Frame::End => {}
        Frame::Error(text) => put_string(out, text),
    }
    let len = (out.len() - start - HEADER_LEN) as u32;
    out[start + 1..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(f: Frame) {
        let mut buf = Vec::new();
        encode(&f, &mut buf);
        let (back, used) = decode(&buf).unwrap().unwrap();
        assert_eq!((back, used), (f, buf.len()));
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]).unwrap(), None, "a cut at {cut} must ask for more");
        }
    }

    #[test]
    fn environment_from_c_strings_and_from_bytes_is_the_same() {
        let mut from_bytes = EnvBuilder::default();
        from_bytes.add(b"HTTP_HOST", b"example.org");
        from_bytes.add(b"EMPTY", b"");
        from_bytes.add(b"WITH\0NUL", b"a\0b\0");
        let mut from_c = EnvBuilder::with_capacity(4);
        from_c.add_c(c"HTTP_HOST", c"example.org");
        from_c.add_c(c"EMPTY", c"");
        let mut from_c = EnvBuilder::continuing(from_c.finish());
        from_c.add(b"WITH\0NUL", b"a\0b\0");
        let env = from_c.finish();
        assert_eq!(env, from_bytes.finish());
        assert_eq!(env, b"HTTP_HOST\0example.org\0EMPTY\0\0WITHNUL\0ab\0");
    }

    #[test]
    fn every_frame_round_trips() {
        let mut env = EnvBuilder::default();
        env.add(b"REQUEST_METHOD", b"GET");
        env.add(b"PATH_INFO", b"/\xc3\xa9");
        round_trip(Frame::Request { env: env.finish() });
        round_trip(Frame::Request { env: Vec::new() });
        assert_eq!(decode(b"\x01\x00\x00\x00\x03\x01a\x00"), Err(ProtocolError::Malformed("REQUEST")));
        assert_eq!(decode(b"\x01\x00\x00\x00\x03\x01ab"), Err(ProtocolError::Malformed("REQUEST")));
        round_trip(Frame::Body(b"abc".to_vec()));
        round_trip(Frame::Body(Vec::new()));
        round_trip(Frame::Hello { pid: 4242 });
        round_trip(Frame::Pull { max: 65536 });
        round_trip(Frame::Headers {
            status: 200,
            headers: vec![("Set-Cookie".into(), "a=1".into()), ("Set-Cookie".into(), "b=2".into())],
        });
        round_trip(Frame::Data(vec![0; 1000]));
        round_trip(Frame::Flush);
        round_trip(Frame::End);
        round_trip(Frame::Error("boom".into()));
    }

    /// Golden bytes, shared with the Python loader's self-test.
    #[test]
    fn golden_bytes() {
        let mut buf = Vec::new();
        encode(&Frame::Headers { status: 201, headers: vec![("A".into(), "b".into())] }, &mut buf);
        assert_eq!(buf, b"\x12\x00\x00\x00\x10\x00\xc9\x00\x00\x00\x01\x00\x00\x00\x01A\x00\x00\x00\x01b");
        let mut buf = Vec::new();
        encode(&Frame::Hello { pid: 7 }, &mut buf);
        assert_eq!(buf, b"\x10\x00\x00\x00\x05\x01\x00\x00\x00\x07");
    }

    #[test]
    fn hostile_input_is_rejected() {
        assert_eq!(decode(b"\x13\x7f\xff\xff\xff"), Err(ProtocolError::FrameTooLarge(0x7fff_ffff)));
        assert_eq!(decode(b"\x99\x00\x00\x00\x00"), Err(ProtocolError::UnknownType(0x99)));
        assert_eq!(decode(b"\x10\x00\x00\x00\x05\x02\x00\x00\x00\x07"), Err(ProtocolError::BadVersion(2)));
        assert_eq!(decode(b"\x14\x00\x00\x00\x01x"), Err(ProtocolError::Malformed("FLUSH")));
        assert_eq!(decode(b"\x11\x00\x00\x00\x04\x00\x00\x00\x00"), Err(ProtocolError::Malformed("PULL")));
        // A header count that the payload cannot hold, without allocating it.
        assert_eq!(decode(b"\x12\x00\x00\x00\x06\x00\xc8\x00\x00\x00\x50"), Err(ProtocolError::Malformed("HEADERS")));
        assert_eq!(
            decode(b"\x12\x00\x00\x00\x06\x00\xc8\xff\xff\xff\xff"),
            Err(ProtocolError::TooManyHeaders(0xffff_ffff))
        );
        let mut buf = Vec::new();
        encode(&Frame::Headers { status: 200, headers: vec![("Bad Name".into(), "x".into())] }, &mut buf);
        assert!(matches!(decode(&buf), Err(ProtocolError::BadHeader(_))));
        let mut buf = Vec::new();
        encode(&Frame::Headers { status: 200, headers: vec![("X".into(), "a\r\nInjected: 1".into())] }, &mut buf);
        assert!(matches!(decode(&buf), Err(ProtocolError::BadHeader(_))));
        for status in [42, 100, 101, 103, 199, 600, 999] {
            let mut buf = Vec::new();
            encode(&Frame::Headers { status, headers: vec![] }, &mut buf);
            assert_eq!(decode(&buf), Err(ProtocolError::BadStatus(status)));
        }
        for status in [200, 304, 599] {
            let mut buf = Vec::new();
            encode(&Frame::Headers { status, headers: vec![] }, &mut buf);
            assert!(decode(&buf).is_ok(), "status {status}");
        }
        let mut buf = Vec::new();
        let many: Vec<(String, String)> = (0..101).map(|i| (format!("H{i}"), "v".into())).collect();
        encode(&Frame::Headers { status: 200, headers: many }, &mut buf);
        assert_eq!(decode(&buf), Err(ProtocolError::TooManyHeaders(101)));
        let mut buf = Vec::new();
        encode(&Frame::Headers { status: 200, headers: vec![("Big".into(), "x".repeat(70_000))] }, &mut buf);
        assert!(matches!(decode(&buf), Err(ProtocolError::HeadersTooLarge(_))));
    }

    #[test]
    fn worker_text_is_escaped_for_logs() {
        assert_eq!(escape_log("plain text: 1+1=2 ~"), "plain text: 1+1=2 ~");
        assert_eq!(escape_log("a\r\nb\x1b[2J\x07\x7f\u{9b}\u{e9}"), "a\\x0d\\x0ab\\x1b[2J\\x07\\x7f\\x9b\\xe9");
        assert_eq!(escape_log("say \"hi\" \\ bye"), "say \\\"hi\\\" \\\\ bye");
        assert_eq!(escape_log("\u{20ac}"), "\\xe2\\x82\\xac");
        let long = "x".repeat(MAX_LOGGED_TEXT + 10);
        assert!(escape_log_bounded(&long).ends_with("x... (10 more bytes)"));
        assert_eq!(escape_log_bounded("\n"), "\\x0a");
        assert_eq!(escape_controls("ok \\x0a é\r\u{9b}\t"), "ok \\x0a é\\x0d\\x9b\\x09");
        let mut buf = Vec::new();
        encode(&Frame::Headers { status: 200, headers: vec![("X-\u{1b}[31m".into(), "v".into())] }, &mut buf);
        let err = decode(&buf).unwrap_err().to_string();
        assert_eq!(err, "invalid response header \"X-\\x1b[31m: v\"");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        /// Arbitrary bytes: decode never panics, and what it accepts it
        /// accounts for exactly.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some((_, used))) = decode(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }

        /// Well-formed frame headers with random payloads.
        #[test]
        fn random_payloads_never_panic(ty in prop_oneof![Just(0x01u8), Just(0x02), 0x10u8..=0x16], payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut bytes = vec![ty];
            bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            bytes.extend_from_slice(&payload);
            let _ = decode(&bytes);
        }
    }
}
