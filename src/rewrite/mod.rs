//! LinkRewrite: maps URL prefixes in HTML and in response headers, as a
//! stream. Safe Rust; the Apache output filter (src/ffi/filter.rs) feeds it
//! bucket data and passes on what it returns.
//!
//! The HTML side is a memchr-driven scanner (scan.rs) that follows the HTML
//! tokenizer where it matters for links (comments, `<script>`/`<style>` raw
//! text, `<textarea>`/`<title>` RCDATA, CDATA are never touched), carries
//! its state across chunk boundaries and buffers only the construct in
//! progress. Attribute values are matched and replaced in place, bytes
//! kept, so a value that matches no map is left byte-identical, and so is a
//! page with none. (lol_html was the first choice; it measured 26 MB/s on
//! one core on a link-dense page, this scanner several hundred: see README.)

#![forbid(unsafe_code)]

use crate::config::scope::LinkMap;
use std::io::Write;

mod scan;

/// The maps in force for one response, longest FROM first.
#[derive(Debug, Clone)]
pub struct Maps(Vec<LinkMap>);

/// Decodes the HTML character references that may hide inside a URL
/// prefix, giving each decoded char with the raw offset just after it.
fn decode_with_offsets(raw: &str) -> Vec<(char, usize)> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    let bytes = raw.as_bytes();
    while i < raw.len() {
        if bytes[i] == b'&' {
            if let Some(end) = raw[i..].find(';').map(|e| i + e) {
                let entity = &raw[i + 1..end];
                let decoded = match entity {
                    "amp" => Some('&'),
                    "quot" => Some('"'),
                    "apos" => Some('\''),
                    "lt" => Some('<'),
                    "gt" => Some('>'),
                    "sol" => Some('/'),
                    "colon" => Some(':'),
                    "period" => Some('.'),
                    "quest" => Some('?'),
                    "equals" => Some('='),
                    "num" => Some('#'),
                    _ => entity
                        .strip_prefix("#x")
                        .or_else(|| entity.strip_prefix("#X"))
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                        .and_then(char::from_u32),
                };
                if let Some(c) = decoded {
                    out.push((c, end + 1));
                    i = end + 1;
                    continue;
                }
            }
        }
        let c = raw[i..].chars().next().unwrap_or('\u{fffd}');
        i += c.len_utf8().max(1);
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
        let decoded = decode_with_offsets(trimmed);
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

    /// `rewrite_url` on raw bytes (pages in any ASCII-compatible charset):
    /// the prefix is compared byte for byte, the rest kept as it is.
    pub fn rewrite_url_bytes(&self, raw: &[u8]) -> Option<Vec<u8>> {
        let start = raw.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(raw.len());
        let (lead, value) = raw.split_at(start);
        if let Some(m) = self.0.iter().find(|m| value.starts_with(m.from.as_bytes())) {
            if m.from == m.to {
                return None;
            }
            let mut out = Vec::with_capacity(raw.len() + m.to.len());
            out.extend_from_slice(lead);
            out.extend_from_slice(m.to.as_bytes());
            out.extend_from_slice(&value[m.from.len()..]);
            return Some(out);
        }
        if value.contains(&b'&') {
            if let Ok(text) = std::str::from_utf8(raw) {
                return self.rewrite_url(text).map(String::into_bytes);
            }
        }
        None
    }

    /// `srcset`: "url 1x, url 2x" (URLs may contain commas only if quoted
    /// by the author; split on ", " and "," followed by a URL start).
    pub fn rewrite_srcset(&self, raw: &str) -> Option<String> {
        let mut changed = false;
        let parts: Vec<String> = raw
            .split(',')
            .map(|candidate| {
                let start = candidate.len() - candidate.trim_start().len();
                let body = &candidate[start..];
                let url_end = body.find(char::is_whitespace).unwrap_or(body.len());
                match self.rewrite_url(&body[..url_end]) {
                    Some(new) => {
                        changed = true;
                        format!("{}{new}{}", &candidate[..start], &body[url_end..])
                    }
                    None => candidate.to_string(),
                }
            })
            .collect();
        changed.then(|| parts.join(","))
    }

    /// `<meta http-equiv=refresh content="5; url=...">` and the Refresh header.
    pub fn rewrite_refresh(&self, raw: &str) -> Option<String> {
        let lower = raw.to_ascii_lowercase();
        let at = lower.find("url")?;
        let after = &raw[at + 3..];
        let eq = after.find('=')?;
        if !after[..eq].trim().is_empty() {
            return None;
        }
        let value = &after[eq + 1..];
        let start = value.len() - value.trim_start().len();
        let (quote, inner) = match value[start..].chars().next() {
            Some(q @ ('\'' | '"')) => (Some(q), &value[start + 1..]),
            _ => (None, &value[start..]),
        };
        let new = self.rewrite_url(inner)?;
        let prefix_len = raw.len() - value.len() + start + usize::from(quote.is_some());
        Some(format!("{}{new}", &raw[..prefix_len]))
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

/// One response's rewriter: `write` each chunk, then `end`.
pub struct StreamRewriter {
    html: scan::Scanner,
    decoder: Decoder,
}

impl StreamRewriter {
    /// `charset` from Content-Type (default UTF-8); a charset that is not
    /// ASCII-compatible (UTF-16) is an error: pass the body on unchanged.
    pub fn new(maps: Maps, charset: Option<&str>, encoding: BodyEncoding) -> Result<StreamRewriter, String> {
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
        Ok(StreamRewriter { html: scan::Scanner::new(maps), decoder })
    }

    /// Rewrites one chunk; returns what can be sent now.
    pub fn write(&mut self, chunk: &[u8]) -> Result<Vec<u8>, String> {
        Ok(match &mut self.decoder {
            Decoder::None => self.html.write(chunk, false),
            Decoder::Gzip(d) => {
                d.write_all(chunk).map_err(|e| format!("gzip body: {e}"))?;
                let plain = std::mem::take(d.get_mut());
                self.html.write(&plain, false)
            }
            Decoder::Zlib(d) => {
                d.write_all(chunk).map_err(|e| format!("deflate body: {e}"))?;
                let plain = std::mem::take(d.get_mut());
                self.html.write(&plain, false)
            }
        })
    }

    /// Ends the document; returns the rest.
    pub fn end(mut self) -> Result<Vec<u8>, String> {
        let rest = match std::mem::replace(&mut self.decoder, Decoder::None) {
            Decoder::None => Vec::new(),
            Decoder::Gzip(d) => d.finish().map_err(|e| format!("gzip body: {e}"))?,
            Decoder::Zlib(d) => d.finish().map_err(|e| format!("deflate body: {e}"))?,
        };
        Ok(self.html.write(&rest, true))
    }
}

/// Rewrites a whole document (tests and the single-core benchmark).
#[cfg(test)]
pub fn rewrite_all(maps: &Maps, input: &[u8], chunk: usize) -> Result<Vec<u8>, String> {
    let mut r = StreamRewriter::new(maps.clone(), None, BodyEncoding::Identity)?;
    let mut out = Vec::with_capacity(input.len());
    for piece in input.chunks(chunk.max(1)) {
        out.extend(r.write(piece)?);
    }
    out.extend(r.end()?);
    Ok(out)
}

#[cfg(test)]
mod tests;
