//! FastCGI records (the FastCGI 1.0 specification, responder role): what
//! Apache sends a FastCGI worker (BEGIN_REQUEST, PARAMS, STDIN) and what
//! it reads back (STDOUT, STDERR, END_REQUEST). Sans-IO: bytes in, bytes
//! out.
//!
//! The worker runs tenant code, so decoding is bounded: a record's content
//! is at most 65,535 bytes plus 255 of padding (the header's own widths),
//! only version 1, only the request id Apache used, only the record types
//! a responder may send Apache (no management records: Apache never asks
//! for them), and END_REQUEST exactly 8 bytes. Decoding never allocates:
//! a record borrows its content from the input.

#![forbid(unsafe_code)]

pub const VERSION: u8 = 1;
/// The largest content one record carries.
pub const MAX_CONTENT: usize = 65_535;
pub const HEADER_LEN: usize = 8;
/// The one request id Apache uses on a connection (one request per connection).
pub const REQUEST_ID: u16 = 1;
pub const ROLE_RESPONDER: u16 = 1;
pub const FLAG_KEEP_CONN: u8 = 1;
/// Name and value lengths in PARAMS are at most 2^31 - 1 (4-byte form).
pub const MAX_PAIR_LEN: usize = 0x7fff_ffff;

/// Record types (all of the specification's, for reference and tests).
#[allow(dead_code)]
pub mod kind {
    pub const BEGIN_REQUEST: u8 = 1;
    pub const ABORT_REQUEST: u8 = 2;
    pub const END_REQUEST: u8 = 3;
    pub const PARAMS: u8 = 4;
    pub const STDIN: u8 = 5;
    pub const STDOUT: u8 = 6;
    pub const STDERR: u8 = 7;
    pub const DATA: u8 = 8;
    pub const GET_VALUES: u8 = 9;
    pub const GET_VALUES_RESULT: u8 = 10;
    pub const UNKNOWN_TYPE: u8 = 11;
}

/// protocolStatus of END_REQUEST.
#[allow(dead_code)]
pub mod status {
    pub const REQUEST_COMPLETE: u8 = 0;
    pub const CANT_MPX_CONN: u8 = 1;
    pub const OVERLOADED: u8 = 2;
    pub const UNKNOWN_ROLE: u8 = 3;
}

/// One record a worker sent Apache, its content borrowed from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// Response bytes; empty = the end of the stream.
    Stdout(&'a [u8]),
    /// Error text for the log; empty = the end of the stream.
    Stderr(&'a [u8]),
    EndRequest {
        app_status: u32,
        protocol_status: u8,
    },
}

/// Why bytes from a worker are not a FastCGI response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FcgiError {
    BadVersion(u8),
    /// A record for a request id Apache did not send.
    WrongRequest(u16),
    /// A record type a responder may not send Apache.
    UnexpectedType(u8),
    /// END_REQUEST whose content is not 8 bytes.
    BadEndRequest(usize),
}

impl std::fmt::Display for FcgiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FcgiError::BadVersion(v) => write!(f, "a FastCGI record of version {v} (only version 1 exists)"),
            FcgiError::WrongRequest(id) => {
                write!(f, "a FastCGI record for request id {id} (Apache sent request id {REQUEST_ID})")
            }
            FcgiError::UnexpectedType(t) => {
                write!(
                    f,
                    "a FastCGI record of type {t}, which a responder may not send (only STDOUT, STDERR, END_REQUEST)"
                )
            }
            FcgiError::BadEndRequest(n) => write!(f, "an FCGI_END_REQUEST record of {n} bytes (it has 8)"),
        }
    }
}

/// Decodes one record from the front of `buf`: `Ok(None)` if more bytes
/// are needed, else the record and how many bytes it used (padding
/// included).
pub fn decode(buf: &[u8]) -> Result<Option<(Record<'_>, usize)>, FcgiError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let version = buf[0];
    let ty = buf[1];
    let id = u16::from_be_bytes([buf[2], buf[3]]);
    let len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    let padding = usize::from(buf[6]);
    if version != VERSION {
        return Err(FcgiError::BadVersion(version));
    }
    if !matches!(ty, kind::STDOUT | kind::STDERR | kind::END_REQUEST) {
        return Err(FcgiError::UnexpectedType(ty));
    }
    if id != REQUEST_ID {
        return Err(FcgiError::WrongRequest(id));
    }
    if ty == kind::END_REQUEST && len != 8 {
        return Err(FcgiError::BadEndRequest(len));
    }
    let total = HEADER_LEN + len + padding;
    if buf.len() < total {
        return Ok(None);
    }
    let content = &buf[HEADER_LEN..HEADER_LEN + len];
    let record = match ty {
        kind::STDOUT => Record::Stdout(content),
        kind::STDERR => Record::Stderr(content),
        _ => Record::EndRequest {
            app_status: u32::from_be_bytes([content[0], content[1], content[2], content[3]]),
            protocol_status: content[4],
        },
    };
    Ok(Some((record, total)))
}

/// Appends one record of `ty` with `content` (at most [`MAX_CONTENT`]
/// bytes), padded to a multiple of 8 as the specification recommends.
pub fn encode_record(out: &mut Vec<u8>, ty: u8, content: &[u8]) {
    debug_assert!(content.len() <= MAX_CONTENT);
    let len = content.len().min(MAX_CONTENT);
    let padding = (8 - len % 8) % 8;
    out.extend_from_slice(&[VERSION, ty]);
    out.extend_from_slice(&REQUEST_ID.to_be_bytes());
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&[padding as u8, 0]);
    out.extend_from_slice(&content[..len]);
    out.extend_from_slice(&[0; 7][..padding]);
}

/// Appends `data` as records of `ty`, each at most [`MAX_CONTENT`] bytes
/// (nothing for empty `data`: the empty record that ends a stream is
/// [`encode_end`]).
pub fn encode_stream(out: &mut Vec<u8>, ty: u8, data: &[u8]) {
    // Multiples of 8 need no padding.
    for chunk in data.chunks(MAX_CONTENT - MAX_CONTENT % 8) {
        encode_record(out, ty, chunk);
    }
}

/// The empty record that ends the stream of `ty` (PARAMS or STDIN).
pub fn encode_end(out: &mut Vec<u8>, ty: u8) {
    encode_record(out, ty, &[]);
}

/// FCGI_BEGIN_REQUEST for the responder role.
pub fn encode_begin(out: &mut Vec<u8>, keep_conn: bool) {
    let mut body = [0u8; 8];
    body[..2].copy_from_slice(&ROLE_RESPONDER.to_be_bytes());
    body[2] = if keep_conn { FLAG_KEEP_CONN } else { 0 };
    encode_record(out, kind::BEGIN_REQUEST, &body);
}

/// One name-value pair, lengths in the 1-byte form below 128 and the
/// 4-byte form (high bit set) from 128 on. `false` (nothing appended) for
/// a name or value longer than [`MAX_PAIR_LEN`].
pub fn encode_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) -> bool {
    if name.len() > MAX_PAIR_LEN || value.len() > MAX_PAIR_LEN {
        return false;
    }
    for n in [name.len(), value.len()] {
        if n < 128 {
            out.push(n as u8);
        } else {
            out.extend_from_slice(&(n as u32 | 0x8000_0000).to_be_bytes());
        }
    }
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    true
}

/// Name-value pairs as PARAMS records (without the empty record that ends
/// them: see [`encode_end`]).
pub fn encode_params(out: &mut Vec<u8>, pairs: &[u8]) {
    encode_stream(out, kind::PARAMS, pairs);
}

/// A name and its value.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// Decodes name-value pairs (the PARAMS stream or GET_VALUES_RESULT):
/// every length checked against what is left, at most `max_pairs`.
/// (Apache only encodes pairs; the fuzz target and tests decode them.)
#[cfg_attr(not(any(test, feature = "fuzzing")), allow(dead_code))]
pub fn decode_pairs(mut buf: &[u8], max_pairs: usize) -> Result<Vec<Pair<'_>>, &'static str> {
    fn length(buf: &mut &[u8]) -> Result<usize, &'static str> {
        let first = *buf.first().ok_or("a pair cut short")?;
        if first < 0x80 {
            *buf = &buf[1..];
            return Ok(usize::from(first));
        }
        let b = buf.get(..4).ok_or("a pair length cut short")?;
        let n = u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]) as usize;
        *buf = &buf[4..];
        Ok(n)
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        if out.len() == max_pairs {
            return Err("too many pairs");
        }
        let n = length(&mut buf)?;
        let v = length(&mut buf)?;
        if n.checked_add(v).is_none_or(|total| total > buf.len()) {
            return Err("a pair longer than its record");
        }
        let (name, rest) = buf.split_at(n);
        let (value, rest) = rest.split_at(v);
        out.push((name, value));
        buf = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Golden bytes, checked by hand against the specification's layout.
    #[test]
    fn golden_bytes_of_a_request() {
        let mut out = Vec::new();
        encode_begin(&mut out, false);
        assert_eq!(out, b"\x01\x01\x00\x01\x00\x08\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00");
        let mut out = Vec::new();
        encode_begin(&mut out, true);
        assert_eq!(&out[8..11], b"\x00\x01\x01");

        let mut pairs = Vec::new();
        assert!(encode_pair(&mut pairs, b"A", b"bc"));
        assert_eq!(pairs, b"\x01\x02Abc");
        let mut out = Vec::new();
        encode_params(&mut out, &pairs);
        encode_end(&mut out, kind::PARAMS);
        // 5 bytes of content, 3 of padding; then the empty PARAMS.
        assert_eq!(out, b"\x01\x04\x00\x01\x00\x05\x03\x00\x01\x02Abc\x00\x00\x00\x01\x04\x00\x01\x00\x00\x00\x00");

        // A 200-byte value takes the 4-byte length form.
        let mut pairs = Vec::new();
        encode_pair(&mut pairs, b"X", &[b'v'; 200]);
        assert_eq!(&pairs[..6], b"\x01\x80\x00\x00\xc8X");
        let mut pairs = Vec::new();
        encode_pair(&mut pairs, &[b'n'; 128], b"");
        assert_eq!(&pairs[..5], b"\x80\x00\x00\x80\x00");
        assert_eq!(decode_pairs(&pairs, 10).unwrap(), vec![(&[b'n'; 128][..], &b""[..])]);

        let mut out = Vec::new();
        encode_stream(&mut out, kind::STDIN, b"12345678");
        assert_eq!(out, b"\x01\x05\x00\x01\x00\x08\x00\x0012345678");
        let mut out = Vec::new();
        encode_end(&mut out, kind::STDIN);
        assert_eq!(out, b"\x01\x05\x00\x01\x00\x00\x00\x00");
    }

    #[test]
    fn long_streams_are_split_into_records() {
        let data = vec![7u8; 200_000];
        let mut out = Vec::new();
        encode_stream(&mut out, kind::STDIN, &data);
        let mut at = 0;
        let mut back = Vec::new();
        while at < out.len() {
            let len = usize::from(u16::from_be_bytes([out[at + 4], out[at + 5]]));
            let pad = usize::from(out[at + 6]);
            assert!(len <= MAX_CONTENT && (len + pad) % 8 == 0);
            back.extend_from_slice(&out[at + 8..at + 8 + len]);
            at += 8 + len + pad;
        }
        assert_eq!(back, data);
    }

    #[test]
    fn golden_bytes_of_a_response() {
        let stdout = b"\x01\x06\x00\x01\x00\x05\x03\x00hello\x00\x00\x00";
        assert_eq!(decode(stdout), Ok(Some((Record::Stdout(b"hello"), 16))));
        for cut in 0..stdout.len() {
            assert_eq!(decode(&stdout[..cut]), Ok(None), "a cut at {cut} asks for more");
        }
        let stderr = b"\x01\x07\x00\x01\x00\x02\x00\x00oops";
        assert_eq!(decode(stderr), Ok(Some((Record::Stderr(b"oo"), 10))));
        let end = b"\x01\x03\x00\x01\x00\x08\x00\x00\x00\x00\x00\x07\x00\x00\x00\x00";
        assert_eq!(decode(end), Ok(Some((Record::EndRequest { app_status: 7, protocol_status: 0 }, 16))));
        assert_eq!(decode(b"\x01\x06\x00\x01\x00\x00\x00\x00"), Ok(Some((Record::Stdout(b""), 8))));
    }

    #[test]
    fn hostile_records_are_refused() {
        assert_eq!(decode(b"\x02\x06\x00\x01\x00\x00\x00\x00"), Err(FcgiError::BadVersion(2)));
        assert_eq!(decode(b"\x01\x06\x00\x02\x00\x00\x00\x00"), Err(FcgiError::WrongRequest(2)));
        assert_eq!(decode(b"\x01\x06\x00\x00\x00\x00\x00\x00"), Err(FcgiError::WrongRequest(0)));
        for ty in [0u8, 1, 2, 4, 5, 8, 9, 10, 11, 12, 255] {
            assert_eq!(decode(&[1, ty, 0, 1, 0, 0, 0, 0]), Err(FcgiError::UnexpectedType(ty)));
        }
        assert_eq!(decode(b"\x01\x03\x00\x01\x00\x04\x00\x00\x00\x00\x00\x00"), Err(FcgiError::BadEndRequest(4)));
        // The largest record a header can describe is only waited for.
        assert_eq!(decode(b"\x01\x06\x00\x01\xff\xff\xff\x00"), Ok(None));
        assert_eq!(decode_pairs(b"\x05\x01ab", 10), Err("a pair longer than its record"));
        assert_eq!(decode_pairs(b"\x80\x00", 10), Err("a pair length cut short"));
        assert_eq!(decode_pairs(b"\xff\xff\xff\xff\xff\xff\xff\xff", 10), Err("a pair longer than its record"));
        assert_eq!(decode_pairs(b"\x00\x00\x00\x00", 1), Err("too many pairs"));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

        #[test]
        fn decode_never_panics_and_accounts_exactly(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some((_, used))) = decode(&bytes) {
                prop_assert!((HEADER_LEN..=bytes.len()).contains(&used));
            }
            let _ = decode_pairs(&bytes, 100);
        }

        #[test]
        fn pairs_round_trip(pairs in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..300), proptest::collection::vec(any::<u8>(), 0..300)), 0..8)) {
            let mut buf = Vec::new();
            for (n, v) in &pairs {
                prop_assert!(encode_pair(&mut buf, n, v));
            }
            let back = decode_pairs(&buf, 100).unwrap();
            prop_assert_eq!(back.len(), pairs.len());
            for ((n, v), (bn, bv)) in pairs.iter().zip(back) {
                prop_assert_eq!(&n[..], bn);
                prop_assert_eq!(&v[..], bv);
            }
        }
    }
}
