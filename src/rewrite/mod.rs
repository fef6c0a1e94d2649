//! LinkRewrite: maps URL prefixes in HTML and in response headers, as a
//! stream. Safe Rust; the Apache output filter (src/ffi/filter.rs) feeds it
//! bucket data and passes on what it returns.
//!
//! The HTML side is a hand-written scanner (scan.rs) that follows the HTML
//! tokenizer where it matters for links (comments, `<script>`/`<style>` raw
//! text, `<textarea>`/`<title>` RCDATA, CDATA are never touched), carries
//! its state across chunk boundaries and holds back only the construct in
//! progress. It reports edits (a FROM prefix becomes its TO); `Html` turns
//! them into output pieces: stretches of the input, the construct kept from
//! before, and new bytes. A value that matches no map is left
//! byte-identical, and a chunk with no edit can be passed on as it came.
//! (lol_html was the first choice; it measured 26 MB/s on one core on a
//! link-dense page, this scanner 750-850 MB/s: see README.)

#![forbid(unsafe_code)]

use crate::config::scope::LinkMap;
use std::io::Write;

mod scan;

pub use scan::Body;

/// The maps in force for one response, longest FROM first.
#[derive(Debug, Clone)]
pub struct Maps(Vec<LinkMap>);

/// How `Maps::rewrite_value` changes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueChange {
    None,
    /// Bytes `start..end` (a FROM) become map `map`'s TO.
    Prefix {
        start: usize,
        end: usize,
        map: usize,
    },
    /// The whole value becomes the bytes appended to `out`.
    Whole,
}

/// The character reference at the start of `raw` (at its '&'), if it is
/// one that may hide URL punctuation: a named one for it, or a numeric one,
/// with its ';'. Its char and length. It reads no further than the
/// reference itself (numeric: its digits, as many as there are, as the
/// HTML tokenizer does), so decoding a value is linear.
fn char_ref(raw: &[u8]) -> Option<(char, usize)> {
    const NAMED: [(&[u8], char); 11] = [
        (b"amp;", '&'),
        (b"quot;", '"'),
        (b"apos;", '\''),
        (b"lt;", '<'),
        (b"gt;", '>'),
        (b"sol;", '/'),
        (b"colon;", ':'),
        (b"period;", '.'),
        (b"quest;", '?'),
        (b"equals;", '='),
        (b"num;", '#'),
    ];
    let name = raw.get(1..)?;
    let Some(number) = name.strip_prefix(b"#") else {
        return NAMED.iter().find(|(n, _)| name.starts_with(n)).map(|(n, c)| (*c, 1 + n.len()));
    };
    let (radix, digits) = match number {
        [b'x' | b'X', rest @ ..] => (16, rest),
        _ => (10, number),
    };
    let count = digits.iter().take_while(|&&b| char::from(b).is_digit(radix)).count();
    if count == 0 || digits.get(count) != Some(&b';') {
        return None;
    }
    let value = digits[..count]
        .iter()
        .fold(0u32, |v, &b| v.saturating_mul(radix).saturating_add(char::from(b).to_digit(radix).unwrap_or(0)));
    Some((numeric_char(value), raw.len() - digits.len() + count + 1))
}

/// The char a numeric character reference stands for, as the HTML
/// tokenizer maps it: NUL, surrogates and values past U+10FFFF are U+FFFD,
/// 0x80-0x9F are the windows-1252 characters there.
fn numeric_char(value: u32) -> char {
    const C1: [char; 32] = [
        '\u{20AC}', '\u{81}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{02C6}',
        '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{8D}', '\u{017D}', '\u{8F}', '\u{90}', '\u{2018}',
        '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}', '\u{02DC}', '\u{2122}', '\u{0161}',
        '\u{203A}', '\u{0153}', '\u{9D}', '\u{017E}', '\u{0178}',
    ];
    match value {
        0 => '\u{fffd}',
        0x80..=0x9f => C1[(value - 0x80) as usize],
        _ => char::from_u32(value).unwrap_or('\u{fffd}'),
    }
}

/// Decodes the HTML character references that may hide inside a URL
/// prefix, giving each decoded char with the raw offset just after it: the
/// first `max` chars at most (a prefix is all that is compared).
fn decode_with_offsets(raw: &str, max: usize) -> Vec<(char, usize)> {
    let mut out = Vec::with_capacity(raw.len().min(max));
    let mut i = 0;
    while i < raw.len() && out.len() < max {
        if raw.as_bytes()[i] == b'&' {
            if let Some((c, len)) = char_ref(&raw.as_bytes()[i..]) {
                i += len;
                out.push((c, i));
                continue;
            }
        }
        let c = raw[i..].chars().next().unwrap_or('\u{fffd}');
        i += c.len_utf8();
        out.push((c, i));
    }
    out
}

impl Maps {
    pub fn new(maps: &[LinkMap]) -> Maps {
        let mut v = maps.to_vec();
        v.sort_by_key(|m| std::cmp::Reverse(m.from.len()));
        Maps(v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The rewritten URL, or `None` if no map's FROM is a prefix of it.
    /// `raw` may contain character references: the prefix is matched on the
    /// decoded text and the rest of the value is kept as it was written.
    pub fn rewrite_url(&self, raw: &str) -> Option<String> {
        let trimmed = raw.trim_start();
        let lead = &raw[..raw.len() - trimmed.len()];
        for m in &self.0 {
            if let Some(rest) = trimmed.strip_prefix(m.from.as_str()) {
                return (m.from != m.to).then(|| format!("{lead}{}{rest}", m.to));
            }
        }
        if !trimmed.contains('&') {
            return None;
        }
        // Maps are longest FROM first: no FROM has more chars than it has bytes.
        let longest = self.0.first().map_or(0, |m| m.from.len());
        let decoded = decode_with_offsets(trimmed, longest);
        let text: String = decoded.iter().map(|(c, _)| *c).collect();
        for m in &self.0 {
            if text.starts_with(m.from.as_str()) {
                let n = m.from.chars().count();
                let raw_end = decoded.get(n.wrapping_sub(1)).map_or(0, |(_, end)| *end);
                return (m.from != m.to).then(|| format!("{lead}{}{}", m.to, &trimmed[raw_end..]));
            }
        }
        None
    }

    /// How the URL attribute value `raw` (raw bytes, any ASCII-compatible
    /// charset) changes. The prefix is compared byte for byte, the rest of
    /// the value stays as it is; a prefix hidden behind character
    /// references is decoded, and then the new value is appended to `out`.
    pub(crate) fn rewrite_value(&self, raw: &[u8], out: &mut Vec<u8>) -> ValueChange {
        match self.prefix_change(raw) {
            ValueChange::None if memchr::memchr(b'&', raw).is_some() => {
                match std::str::from_utf8(raw).ok().and_then(|text| self.rewrite_url(text)) {
                    Some(new) => {
                        out.extend_from_slice(new.as_bytes());
                        ValueChange::Whole
                    }
                    None => ValueChange::None,
                }
            }
            change => change,
        }
    }

    /// `rewrite_value` without character references: for a URL in raw
    /// text (CSS in `<style>`), where `&` is just a character.
    pub(crate) fn prefix_change(&self, raw: &[u8]) -> ValueChange {
        let lead = match raw.first() {
            Some(b) if b.is_ascii_whitespace() => {
                raw.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(raw.len())
            }
            _ => 0,
        };
        let value = &raw[lead..];
        match self.0.iter().enumerate().find(|(_, m)| value.starts_with(m.from.as_bytes())) {
            Some((i, m)) if m.from != m.to => ValueChange::Prefix { start: lead, end: lead + m.from.len(), map: i },
            _ => ValueChange::None,
        }
    }

    /// Map `i`'s TO.
    pub(crate) fn to(&self, i: usize) -> &[u8] {
        self.0.get(i).map_or(&[][..], |m| m.to.as_bytes())
    }

    /// `rewrite_value`, appending the whole new value to `out`; whether it changed.
    fn rewrite_value_into(&self, raw: &[u8], out: &mut Vec<u8>) -> bool {
        match self.rewrite_value(raw, out) {
            ValueChange::None => false,
            ValueChange::Whole => true,
            ValueChange::Prefix { start, end, map } => {
                out.extend_from_slice(&raw[..start]);
                out.extend_from_slice(self.to(map));
                out.extend_from_slice(&raw[end..]);
                true
            }
        }
    }

    /// `srcset`: "url 1x, url 2x" (raw bytes, any ASCII-compatible
    /// charset); appends the new list to `out` if it changed.
    pub(crate) fn rewrite_srcset_into(&self, raw: &[u8], out: &mut Vec<u8>) -> bool {
        let mark = out.len();
        let mut changed = false;
        for (k, candidate) in raw.split(|&b| b == b',').enumerate() {
            if k > 0 {
                out.push(b',');
            }
            let start = candidate.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(candidate.len());
            let url_end =
                candidate[start..].iter().position(|b| b.is_ascii_whitespace()).map_or(candidate.len(), |e| start + e);
            out.extend_from_slice(&candidate[..start]);
            if self.rewrite_value_into(&candidate[start..url_end], out) {
                changed = true;
            } else {
                out.extend_from_slice(&candidate[start..url_end]);
            }
            out.extend_from_slice(&candidate[url_end..]);
        }
        if !changed {
            out.truncate(mark);
        }
        changed
    }

    /// `<meta http-equiv=refresh content="5; url=...">` and the Refresh
    /// header (raw bytes); appends the new value to `out` if it changed.
    pub(crate) fn rewrite_refresh_into(&self, raw: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(at) = raw.windows(3).position(|w| w.eq_ignore_ascii_case(b"url")) else { return false };
        let after = &raw[at + 3..];
        let Some(eq) = after.iter().position(|&b| b == b'=') else { return false };
        if !after[..eq].trim_ascii().is_empty() {
            return false;
        }
        let mut url = at + 3 + eq + 1;
        while raw.get(url).is_some_and(u8::is_ascii_whitespace) {
            url += 1;
        }
        if matches!(raw.get(url), Some(b'\'' | b'"')) {
            url += 1;
        }
        let mark = out.len();
        out.extend_from_slice(&raw[..url]);
        if self.rewrite_value_into(&raw[url..], out) {
            return true;
        }
        out.truncate(mark);
        false
    }

    /// `rewrite_refresh_into` on a header value.
    pub fn rewrite_refresh(&self, raw: &str) -> Option<String> {
        let mut out = Vec::new();
        // Cuts fall on ASCII bytes and TO is UTF-8, so the result is UTF-8.
        self.rewrite_refresh_into(raw.as_bytes(), &mut out).then(|| String::from_utf8(out).ok()).flatten()
    }

    /// A response header, if it carries URLs: Location, Content-Location,
    /// URI, Refresh, Link, Set-Cookie (Path and Domain).
    pub fn rewrite_header(&self, name: &str, value: &str) -> Option<String> {
        match name.to_ascii_lowercase().as_str() {
            "location" | "content-location" | "uri" => self.rewrite_url(value),
            "refresh" => self.rewrite_refresh(value),
            "link" => {
                let mut changed = false;
                let mut out = String::with_capacity(value.len());
                let mut rest = value;
                while let Some(open) = rest.find('<') {
                    let Some(close) = rest[open..].find('>').map(|c| open + c) else { break };
                    out.push_str(&rest[..=open]);
                    let url = &rest[open + 1..close];
                    match self.rewrite_url(url) {
                        Some(new) => {
                            changed = true;
                            out.push_str(&new);
                        }
                        None => out.push_str(url),
                    }
                    rest = &rest[close..];
                }
                out.push_str(rest);
                changed.then_some(out)
            }
            "set-cookie" => self.rewrite_cookie(value),
            _ => None,
        }
    }

    /// Set-Cookie: `Path` maps like a URL path; `Domain` becomes TO's host,
    /// or is dropped when TO is a path on this server (a host-only cookie).
    fn rewrite_cookie(&self, value: &str) -> Option<String> {
        let mut changed = false;
        let mut parts: Vec<String> = Vec::new();
        for (i, part) in value.split(';').enumerate() {
            let trimmed = part.trim();
            let (key, val) = trimmed.split_once('=').unwrap_or((trimmed, ""));
            if i > 0 && key.eq_ignore_ascii_case("path") {
                // The longest FROM path that prefixes the cookie's path.
                let best = self
                    .0
                    .iter()
                    .filter(|m| val.starts_with(url_path(&m.from)))
                    .max_by_key(|m| url_path(&m.from).len());
                if let Some(m) = best {
                    let new = format!("{}{}", url_path(&m.to), &val[url_path(&m.from).len()..]);
                    let new = if new.len() > 1 && new.ends_with('/') && !val.ends_with('/') {
                        new.trim_end_matches('/').to_string()
                    } else {
                        new
                    };
                    if new != val {
                        changed = true;
                        parts.push(format!(" {key}={new}"));
                        continue;
                    }
                }
            } else if i > 0 && key.eq_ignore_ascii_case("domain") {
                let domain = val.trim_start_matches('.');
                if let Some(m) =
                    self.0.iter().find(|m| url_host(&m.from).is_some_and(|h| h.eq_ignore_ascii_case(domain)))
                {
                    changed = true;
                    if let Some(host) = url_host(&m.to) {
                        parts.push(format!(" {key}={host}"));
                    }
                    continue;
                }
            }
            parts.push(part.to_string());
        }
        changed.then(|| parts.join(";"))
    }
}

/// The host (without port) of an absolute or scheme-relative URL.
fn url_host(url: &str) -> Option<&str> {
    let rest =
        url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).or_else(|| url.strip_prefix("//"))?;
    let authority = rest.split('/').next()?;
    Some(
        authority.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(authority, |(h, _)| h),
    )
}

/// The path part of a URL prefix ("/" if none).
fn url_path(url: &str) -> &str {
    match url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).or_else(|| url.strip_prefix("//")) {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => url,
    }
}

/// How the body arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Identity,
    Gzip,
    /// `Content-Encoding: deflate` (zlib-wrapped, as HTTP means it).
    Deflate,
}

enum Decoder {
    None,
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>),
    Zlib(flate2::write::ZlibDecoder<Vec<u8>>),
}

/// Where a piece of output comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The bytes just written (decoded, if the body is compressed).
    Input,
    /// The unfinished construct kept from before, with the start of the input.
    Joined,
    /// New bytes (rewritten values).
    Text,
    /// A map's TO.
    To(usize),
}

#[derive(Debug, Clone, Copy)]
struct Piece {
    source: Source,
    start: usize,
    end: usize,
}

/// The HTML side of a stream: the scanner, the construct kept between
/// chunks, and the output of the latest chunk as pieces.
struct Html {
    scanner: scan::Scanner,
    /// `joined[held..]`: an unfinished construct at the end of the input so
    /// far (with the input added to it to finish it); `joined[..held]`: in
    /// the output of the latest chunk.
    joined: Vec<u8>,
    held: usize,
    edits: scan::Edits,
    pieces: Vec<Piece>,
}

impl Html {
    /// Scans `input` (after what is kept); fills `pieces` with the output.
    fn feed(&mut self, input: &[u8], at_end: bool) {
        self.pieces.clear();
        self.edits.text.clear();
        self.joined.drain(..self.held);
        self.held = 0;
        // Finish the construct kept from before with as little of the input
        // as needed (the scanner goes on where it stopped), so that the
        // rest of the input is passed on without a copy.
        let kept = self.joined.len();
        let (mut added, mut take) = (0, 256);
        while self.held < kept {
            let upto = input.len().min(added + take);
            self.joined.extend_from_slice(&input[added..upto]);
            added = upto;
            let last = added == input.len();
            self.edits.list.clear();
            let used = self.scanner.scan(&self.joined[self.held..], at_end && last, &mut self.edits);
            if used == 0 && !last {
                take = take.saturating_mul(4);
                continue;
            }
            self.add_pieces(Source::Joined, self.held, self.held + used);
            self.held += used;
            if last {
                // All the input is in `joined`: what is left of it is kept.
                return;
            }
        }
        // The rest of the input, as it is.
        let offset = self.held - kept;
        self.joined.truncate(self.held);
        self.edits.list.clear();
        let rest = &input[offset..];
        let used = self.scanner.scan(rest, at_end, &mut self.edits);
        self.add_pieces(Source::Input, offset, offset + used);
        self.joined.extend_from_slice(&rest[used..]);
    }

    /// Adds `start..end` of `source` with the scanned edits (relative to `start`) applied.
    fn add_pieces(&mut self, source: Source, start: usize, end: usize) {
        let mut at = start;
        for e in &self.edits.list {
            push_piece(&mut self.pieces, Piece { source, start: at, end: start + e.start });
            let with = match e.with {
                scan::With::Text(from, to) => Piece { source: Source::Text, start: from, end: to },
                scan::With::To(map) => {
                    Piece { source: Source::To(map), start: 0, end: self.scanner.maps().to(map).len() }
                }
            };
            push_piece(&mut self.pieces, with);
            at = start + e.end;
        }
        push_piece(&mut self.pieces, Piece { source, start: at, end });
    }
}

fn push_piece(pieces: &mut Vec<Piece>, piece: Piece) {
    if piece.start == piece.end {
        return;
    }
    match pieces.last_mut() {
        Some(last) if last.source == piece.source && last.end == piece.start => last.end = piece.end,
        _ => pieces.push(piece),
    }
}

/// What one chunk of input gives: pieces of the input, of bytes kept from
/// before and of new bytes, to be sent in order.
pub struct Output<'a> {
    input: &'a [u8],
    /// Whether `input` is the caller's chunk (not decoded from it).
    input_is_chunk: bool,
    joined: &'a [u8],
    text: &'a [u8],
    maps: &'a Maps,
    pieces: &'a [Piece],
}

impl Output<'_> {
    /// `Some(n)` when the output is exactly the first `n` bytes of the
    /// chunk as it was written (so the caller can pass those on as they are).
    pub fn unchanged_prefix(&self) -> Option<usize> {
        match self.pieces {
            [] if self.input_is_chunk => Some(0),
            [Piece { source: Source::Input, start: 0, end }] if self.input_is_chunk => Some(*end),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.pieces.iter().map(|p| p.end - p.start).sum()
    }

    /// Copies the output into `dst`, which is `len()` bytes long.
    #[inline]
    pub fn copy_to(&self, dst: &mut [u8]) {
        let mut at = 0;
        for p in self.pieces {
            let bytes = match p.source {
                Source::Input => &self.input[p.start..p.end],
                Source::Joined => &self.joined[p.start..p.end],
                Source::Text => &self.text[p.start..p.end],
                Source::To(map) => &self.maps.to(map)[p.start..p.end],
            };
            dst[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len()];
        self.copy_to(&mut v);
        v
    }
}

/// One response's rewriter: `write` each chunk, then `end`.
pub struct StreamRewriter {
    html: Html,
    decoder: Decoder,
    /// The latest decoded bytes of a compressed body.
    decoded: Vec<u8>,
    /// Whether any body bytes arrived: HEAD, 204 and 304 answers keep their
    /// Content-Encoding but have no compressed stream to finish.
    got_body: bool,
}

impl StreamRewriter {
    /// `charset` from Content-Type (default UTF-8); a charset that is not
    /// ASCII-compatible (UTF-16) is an error: pass the body on unchanged.
    pub fn new(
        maps: Maps,
        body: Body,
        charset: Option<&str>,
        encoding: BodyEncoding,
    ) -> Result<StreamRewriter, String> {
        if let Some(label) = charset {
            let enc = encoding_rs::Encoding::for_label(label.trim().as_bytes())
                .ok_or_else(|| format!("unknown charset {label:?}"))?;
            if !enc.is_ascii_compatible() {
                return Err(format!("charset {} is not ASCII-compatible", enc.name()));
            }
        }
        let decoder = match encoding {
            BodyEncoding::Identity => Decoder::None,
            BodyEncoding::Gzip => Decoder::Gzip(flate2::write::MultiGzDecoder::new(Vec::new())),
            BodyEncoding::Deflate => Decoder::Zlib(flate2::write::ZlibDecoder::new(Vec::new())),
        };
        let html = Html {
            scanner: scan::Scanner::new(maps, body),
            joined: Vec::new(),
            held: 0,
            edits: scan::Edits::default(),
            pieces: Vec::new(),
        };
        Ok(StreamRewriter { html, decoder, decoded: Vec::new(), got_body: false })
    }

    /// Whether the body is compressed (each chunk is decoded first).
    pub fn decodes(&self) -> bool {
        !matches!(self.decoder, Decoder::None)
    }

    /// Rewrites one chunk; returns what can be sent now.
    pub fn write<'a>(&'a mut self, chunk: &'a [u8]) -> Result<Output<'a>, String> {
        self.got_body |= !chunk.is_empty();
        let input: &[u8] = match &mut self.decoder {
            Decoder::None => chunk,
            Decoder::Gzip(d) => {
                d.write_all(chunk).map_err(|e| format!("gzip body: {e}"))?;
                self.decoded.clear();
                std::mem::swap(d.get_mut(), &mut self.decoded);
                &self.decoded
            }
            Decoder::Zlib(d) => {
                d.write_all(chunk).map_err(|e| format!("deflate body: {e}"))?;
                self.decoded.clear();
                std::mem::swap(d.get_mut(), &mut self.decoded);
                &self.decoded
            }
        };
        self.html.feed(input, false);
        Ok(self.html.output(input, matches!(self.decoder, Decoder::None)))
    }

    /// Ends the document; returns the rest.
    pub fn end(mut self) -> Result<Vec<u8>, String> {
        let rest = match std::mem::replace(&mut self.decoder, Decoder::None) {
            _ if !self.got_body => Vec::new(),
            Decoder::None => Vec::new(),
            Decoder::Gzip(d) => d.finish().map_err(|e| format!("gzip body: {e}"))?,
            Decoder::Zlib(d) => d.finish().map_err(|e| format!("deflate body: {e}"))?,
        };
        self.html.feed(&rest, true);
        Ok(self.html.output(&rest, false).to_vec())
    }
}

impl Html {
    fn output<'a>(&'a self, input: &'a [u8], input_is_chunk: bool) -> Output<'a> {
        Output {
            input,
            input_is_chunk,
            joined: &self.joined,
            text: &self.edits.text,
            maps: self.scanner.maps(),
            pieces: &self.pieces,
        }
    }
}

/// Rewrites a whole document (tests and the single-core benchmark).
#[cfg(test)]
pub fn rewrite_all(maps: &Maps, body: Body, input: &[u8], chunk: usize) -> Result<Vec<u8>, String> {
    rewrite_all_capped(maps, body, input, chunk, scan::MAX_PENDING)
}

/// `rewrite_all` with a smaller `MAX_PENDING`.
#[cfg(test)]
pub fn rewrite_all_capped(
    maps: &Maps,
    body: Body,
    input: &[u8],
    chunk: usize,
    max_pending: usize,
) -> Result<Vec<u8>, String> {
    let mut r = StreamRewriter::new(maps.clone(), body, None, BodyEncoding::Identity)?;
    r.html.scanner.set_max_pending(max_pending);
    let mut out = Vec::with_capacity(input.len());
    for piece in input.chunks(chunk.max(1)) {
        out.extend(r.write(piece)?.to_vec());
    }
    out.extend(r.end()?);
    Ok(out)
}

#[cfg(test)]
mod tests;
