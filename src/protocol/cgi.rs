//! The head of a CGI response (RFC 3875 section 6), as FastCGI workers
//! (php-cgi) and CGI scripts write it on their output: header lines, then
//! an empty line, then the body. Sans-IO and bounded like the worker
//! protocol: at most [`MAX_HEADERS`] lines and [`MAX_HEADERS_SIZE`] bytes,
//! token names, values without CR, LF or NUL, a `Status:` of 200..=599.
//!
//! What the head means (RFC 3875 6.2, as Apache's mod_cgi applies it):
//! a `Status:` sets the status; a `Location:` that is a local path (starts
//! with `/`) with status 200 is a *local redirect* (Apache serves that
//! path instead, as GET); any other `Location:` without a `Status:` is a
//! `302 Found`.

#![forbid(unsafe_code)]

use super::{MAX_HEADERS, MAX_HEADERS_SIZE, STATUSES, escape_log};

/// What the head asks Apache to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgiHead {
    /// A response: status and headers (`Status:` removed, `Location:` kept).
    Response { status: u16, headers: Vec<(String, String)> },
    /// `Location: /path` with status 200: serve `/path` instead.
    LocalRedirect { location: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgiError {
    TooLarge,
    TooMany(usize),
    BadLine(String),
    BadStatus(String),
}

impl std::fmt::Display for CgiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CgiError::TooLarge => write!(f, "response headers over {MAX_HEADERS_SIZE} bytes"),
            CgiError::TooMany(n) => write!(f, "{n} response headers (the limit is {MAX_HEADERS})"),
            CgiError::BadLine(l) => write!(f, "invalid response header line \"{}\"", escape_log(l)),
            CgiError::BadStatus(s) => {
                write!(f, "invalid Status \"{}\" (a final status is 200..=599; 1xx are refused)", escape_log(s))
            }
        }
    }
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|b| *b as char).collect()
}

fn is_token(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

/// Whether [`parse_head`] of a buffer now `len` bytes long can answer
/// differently than before `added` was appended to it: only a new line end,
/// or going over the size limit, changes its answer. A head that dribbles
/// in without line ends is then parsed once per line, not once per read.
pub fn head_may_have_changed(len: usize, added: &[u8]) -> bool {
    len > MAX_HEADERS_SIZE || memchr::memchr(b'\n', added).is_some()
}

/// Parses the head at the front of `buf`: `Ok(None)` if it is not complete
/// yet (and still within the limits), else what it asks for and the bytes
/// it used (the body starts there).
pub fn parse_head(buf: &[u8]) -> Result<Option<(CgiHead, usize)>, CgiError> {
    let mut at = 0;
    let mut lines: Vec<(&[u8], &[u8])> = Vec::new();
    loop {
        let Some(nl) = memchr::memchr(b'\n', &buf[at..]) else {
            return if buf.len() > MAX_HEADERS_SIZE { Err(CgiError::TooLarge) } else { Ok(None) };
        };
        let end = at + nl + 1;
        if end > MAX_HEADERS_SIZE {
            return Err(CgiError::TooLarge);
        }
        let line = &buf[at..at + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at = end;
        if line.is_empty() {
            break;
        }
        if lines.len() == MAX_HEADERS {
            return Err(CgiError::TooMany(MAX_HEADERS + 1));
        }
        let colon = memchr::memchr(b':', line).ok_or_else(|| CgiError::BadLine(latin1(line)))?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.trim_ascii();
        if !is_token(name) || value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(CgiError::BadLine(latin1(line)));
        }
        lines.push((name, value));
    }
    let mut status: Option<u16> = None;
    let mut location: Option<String> = None;
    let mut headers = Vec::with_capacity(lines.len());
    for (name, value) in lines {
        if name.eq_ignore_ascii_case(b"status") {
            let code = value
                .get(..3)
                .filter(|d| d.iter().all(u8::is_ascii_digit) && value.get(3).is_none_or(|b| *b == b' '))
                .and_then(|d| std::str::from_utf8(d).ok()?.parse::<u16>().ok())
                .filter(|c| STATUSES.contains(c));
            match (code, status) {
                (Some(c), None) => status = Some(c),
                _ => return Err(CgiError::BadStatus(latin1(value))),
            }
            continue;
        }
        if name.eq_ignore_ascii_case(b"location") {
            location = Some(latin1(value));
        }
        headers.push((latin1(name), latin1(value)));
    }
    let head = match (status, location) {
        (None | Some(200), Some(l)) if l.starts_with('/') => CgiHead::LocalRedirect { location: l },
        (None, Some(_)) => CgiHead::Response { status: 302, headers },
        (s, _) => CgiHead::Response { status: s.unwrap_or(200), headers },
    };
    Ok(Some((head, at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)]) -> CgiHead {
        CgiHead::Response { status, headers: headers.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect() }
    }

    #[test]
    fn a_head_parsed_only_when_it_may_have_changed_gives_what_the_parser_gives() {
        let long = format!("X: {}\n\n", "v".repeat(MAX_HEADERS_SIZE));
        let heads: [&[u8]; 6] = [
            b"Content-type: text/html\r\n\r\nbody",
            b"Status: 404 Not here\nX: y\n\n",
            b"Location: /else\n\n",
            b"no colon here\nX: y\n\n",
            b"X: a\rb\n\n",
            long.as_bytes(),
        ];
        for raw in heads {
            let steps: &[usize] = if raw.len() > 1000 { &[1000, 4096] } else { &[1, 2, 3, 7, 4096] };
            for &step in steps {
                crate::fuzz_api::cgi_gate_agrees(raw, step);
            }
        }
    }

    #[test]
    fn heads_as_cgi_defines_them() {
        let (head, used) = parse_head(b"Content-type: text/html\r\n\r\nbody").unwrap().unwrap();
        assert_eq!((head, used), (resp(200, &[("Content-type", "text/html")]), 27));
        let (head, _) = parse_head(b"Status: 404 Not Found\nX-A:  b \n\n").unwrap().unwrap();
        assert_eq!(head, resp(404, &[("X-A", "b")]));
        let (head, _) = parse_head(b"Location: https://example.org/x\r\n\r\n").unwrap().unwrap();
        assert_eq!(head, resp(302, &[("Location", "https://example.org/x")]));
        let (head, _) = parse_head(b"Status: 301\r\nLocation: /moved\r\n\r\n").unwrap().unwrap();
        assert_eq!(head, resp(301, &[("Location", "/moved")]));
        let (head, _) = parse_head(b"Location: /other?a=1\r\n\r\n").unwrap().unwrap();
        assert_eq!(head, CgiHead::LocalRedirect { location: "/other?a=1".into() });
        let (head, _) = parse_head(b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n").unwrap().unwrap();
        assert_eq!(head, resp(200, &[("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]));
        assert_eq!(parse_head(b"\r\n").unwrap().unwrap(), (resp(200, &[]), 2));
    }

    #[test]
    fn incomplete_heads_ask_for_more() {
        let full = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_head(&full[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn hostile_heads_are_refused() {
        for status in ["100", "101 Switching Protocols", "199", "600", "99", "2000", "abc", ""] {
            let text = format!("Status: {status}\r\n\r\n");
            assert!(matches!(parse_head(text.as_bytes()), Err(CgiError::BadStatus(_))), "{status}");
        }
        assert!(matches!(parse_head(b"Status: 200\r\nStatus: 500\r\n\r\n"), Err(CgiError::BadStatus(_))));
        assert!(matches!(parse_head(b"Bad Name: x\r\n\r\n"), Err(CgiError::BadLine(_))));
        assert!(matches!(parse_head(b"no colon\r\n\r\n"), Err(CgiError::BadLine(_))));
        assert!(matches!(parse_head(b"X: a\rb\r\n\r\n"), Err(CgiError::BadLine(_))));
        assert!(matches!(parse_head(b"X: a\0b\r\n\r\n"), Err(CgiError::BadLine(_))));
        assert!(matches!(parse_head(b" folded: x\r\n\r\n"), Err(CgiError::BadLine(_))));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("H{i}: v\r\n")).collect::<String>() + "\r\n";
        assert_eq!(parse_head(many.as_bytes()), Err(CgiError::TooMany(MAX_HEADERS + 1)));
        let big = vec![b'x'; MAX_HEADERS_SIZE + 1];
        assert_eq!(parse_head(&big), Err(CgiError::TooLarge));
        let long_line = format!("X: {}\r\n\r\n", "v".repeat(MAX_HEADERS_SIZE));
        assert_eq!(parse_head(long_line.as_bytes()), Err(CgiError::TooLarge));
        let err = parse_head(b"X-\x1b[31m: v\r\n\r\n").unwrap_err().to_string();
        assert_eq!(err, "invalid response header line \"X-\\x1b[31m: v\"");
    }
}
