//! A streaming HTML scanner that finds the attributes LinkRewrite changes,
//! driven by memchr: data between tags is copied without being looked at.
//!
//! It follows the HTML tokenizer where it matters for links: tags and
//! attribute values in every quoting style, comments (`<!-- -->`), bogus
//! comments and declarations (`<!...>`, `<?...>`), CDATA sections, and the
//! raw-text (`script`, `style`, `xmp`, `iframe`, `noembed`, `noframes`,
//! `noscript`) and RCDATA (`textarea`, `title`) elements, whose content is
//! never parsed for tags. `plaintext` ends parsing. Only an unfinished
//! construct is kept between chunks (at most `MAX_PENDING` bytes; beyond
//! that it is passed on as it is).

use super::Maps;
use memchr::memmem;

const MAX_PENDING: usize = 1 << 20;
const RAW_TEXT: &[&[u8]] =
    &[b"script", b"style", b"xmp", b"iframe", b"noembed", b"noframes", b"noscript", b"textarea", b"title"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    /// Inside a raw-text or RCDATA element: look for `</name`.
    RawText(&'static [u8]),
    /// After `<plaintext>`: everything is text.
    PlainText,
}

/// The scanner; `write` returns what can be sent now.
pub struct Scanner {
    maps: Maps,
    state: State,
    pending: Vec<u8>,
    /// Reused for every tag.
    attrs: Vec<Attr>,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

/// One attribute of a start tag, as byte ranges into the tag.
struct Attr {
    name: (usize, usize),
    value: Option<(usize, usize)>,
}

/// Parses a complete start or end tag `tag` (from `<` to `>`), returning
/// its name range and attributes; `None` if the tag is not complete yet.
fn scan_tag(tag: &[u8], attrs: &mut Vec<Attr>) -> Option<(usize, (usize, usize))> {
    attrs.clear();
    let mut i = 1;
    if tag.get(i) == Some(&b'/') {
        i += 1;
    }
    let name_start = i;
    while i < tag.len() && !is_space(tag[i]) && tag[i] != b'/' && tag[i] != b'>' {
        i += 1;
    }
    let name = (name_start, i);
    loop {
        while i < tag.len() && (is_space(tag[i]) || tag[i] == b'/') {
            i += 1;
        }
        match tag.get(i) {
            None => return None,
            Some(b'>') => return Some((i + 1, name)),
            _ => {}
        }
        let n0 = i;
        i += 1; // the first character may be '=' (spec: part of the name)
        while i < tag.len() && !is_space(tag[i]) && !matches!(tag[i], b'/' | b'>' | b'=') {
            i += 1;
        }
        let name = (n0, i);
        let mut j = i;
        while j < tag.len() && is_space(tag[j]) {
            j += 1;
        }
        if j >= tag.len() {
            return None;
        }
        if tag[j] != b'=' {
            attrs.push(Attr { name, value: None });
            continue;
        }
        j += 1;
        while j < tag.len() && is_space(tag[j]) {
            j += 1;
        }
        match tag.get(j) {
            None => return None,
            Some(&q @ (b'"' | b'\'')) => {
                let end = memchr::memchr(q, &tag[j + 1..])? + j + 1;
                attrs.push(Attr { name, value: Some((j + 1, end)) });
                i = end + 1;
            }
            Some(b'>') => {
                attrs.push(Attr { name, value: Some((j, j)) });
                i = j;
            }
            Some(_) => {
                let mut end = j;
                while end < tag.len() && !is_space(tag[end]) && tag[end] != b'>' {
                    end += 1;
                }
                if end >= tag.len() {
                    return None;
                }
                attrs.push(Attr { name, value: Some((j, end)) });
                i = end;
            }
        }
    }
}

/// Whether an attribute name is one whose value is a single URL.
fn is_url_attribute(name: &[u8]) -> bool {
    const NAMES: &[&[u8]] = &[
        b"href",
        b"src",
        b"action",
        b"formaction",
        b"cite",
        b"background",
        b"poster",
        b"data",
        b"codebase",
        b"longdesc",
        b"usemap",
        b"manifest",
        b"icon",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

impl Scanner {
    pub fn new(maps: Maps) -> Scanner {
        Scanner { maps, state: State::Data, pending: Vec::new(), attrs: Vec::with_capacity(16) }
    }

    /// Rewrites the URL attributes of a complete start tag (parsed into
    /// `self.attrs`, name at `name`) into `out`.
    fn emit_start_tag(&mut self, tag: &[u8], name: (usize, usize), out: &mut Vec<u8>) {
        let tag_name = &tag[name.0..name.1];
        let attrs = std::mem::take(&mut self.attrs);
        let is_refresh = tag_name.eq_ignore_ascii_case(b"meta")
            && attrs.iter().any(|a| {
                tag[a.name.0..a.name.1].eq_ignore_ascii_case(b"http-equiv")
                    && a.value.is_some_and(|v| tag[v.0..v.1].trim_ascii().eq_ignore_ascii_case(b"refresh"))
            });
        let mut copied = 0;
        for a in &attrs {
            let Some(v) = a.value else { continue };
            let attr = &tag[a.name.0..a.name.1];
            let value = &tag[v.0..v.1];
            let new: Option<Vec<u8>> = if is_url_attribute(attr) {
                self.maps.rewrite_url_bytes(value)
            } else if attr.eq_ignore_ascii_case(b"srcset") || attr.eq_ignore_ascii_case(b"imagesrcset") {
                self.maps.rewrite_srcset(&String::from_utf8_lossy(value)).map(String::into_bytes)
            } else if is_refresh && attr.eq_ignore_ascii_case(b"content") {
                self.maps.rewrite_refresh(&String::from_utf8_lossy(value)).map(String::into_bytes)
            } else {
                None
            };
            if let Some(new) = new {
                out.extend_from_slice(&tag[copied..v.0]);
                out.extend_from_slice(&new);
                copied = v.1;
            }
        }
        self.attrs = attrs;
        out.extend_from_slice(&tag[copied..]);
        if let Some(raw) = RAW_TEXT.iter().find(|r| r.eq_ignore_ascii_case(tag_name)) {
            self.state = State::RawText(raw);
        } else if tag_name.eq_ignore_ascii_case(b"plaintext") {
            self.state = State::PlainText;
        }
    }

    /// Processes `buf` as far as possible; returns how many bytes were used
    /// (the rest is an unfinished construct).
    fn process(&mut self, buf: &[u8], out: &mut Vec<u8>, at_end: bool) -> usize {
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                State::PlainText => {
                    out.extend_from_slice(&buf[i..]);
                    return buf.len();
                }
                State::RawText(name) => {
                    // Find `</name` followed by space, '/' or '>'.
                    let mut k = i;
                    let found = loop {
                        match memchr::memchr(b'<', &buf[k..]) {
                            None => break None,
                            Some(p) => {
                                let at = k + p;
                                let need = at + 2 + name.len() + 1;
                                if need > buf.len() {
                                    break Some(None); // maybe split: wait
                                }
                                if buf[at + 1] == b'/'
                                    && buf[at + 2..at + 2 + name.len()].eq_ignore_ascii_case(name)
                                    && matches!(
                                        buf[at + 2 + name.len()],
                                        b'>' | b'/' | b' ' | b'\t' | b'\n' | b'\r' | b'\x0c'
                                    )
                                {
                                    break Some(Some(at));
                                }
                                k = at + 1;
                            }
                        }
                    };
                    match found {
                        None => {
                            out.extend_from_slice(&buf[i..]);
                            return buf.len();
                        }
                        Some(None) if !at_end => {
                            let at = i + memchr::memrchr(b'<', &buf[i..]).unwrap_or(0);
                            out.extend_from_slice(&buf[i..at]);
                            return at;
                        }
                        Some(None) => {
                            out.extend_from_slice(&buf[i..]);
                            return buf.len();
                        }
                        Some(Some(at)) => {
                            out.extend_from_slice(&buf[i..at]);
                            self.state = State::Data;
                            i = at;
                        }
                    }
                }
                State::Data => {
                    let Some(p) = memchr::memchr(b'<', &buf[i..]) else {
                        out.extend_from_slice(&buf[i..]);
                        return buf.len();
                    };
                    out.extend_from_slice(&buf[i..i + p]);
                    i += p;
                    let rest = &buf[i..];
                    let Some(&next) = rest.get(1) else {
                        if at_end {
                            out.push(b'<');
                            return buf.len();
                        }
                        return i;
                    };
                    let end = if next.is_ascii_alphabetic()
                        || next == b'/' && rest.get(2).is_some_and(u8::is_ascii_alphabetic)
                    {
                        let mut attrs = std::mem::take(&mut self.attrs);
                        let scanned = scan_tag(rest, &mut attrs);
                        self.attrs = attrs;
                        match scanned {
                            Some((e, name)) => {
                                if next == b'/' {
                                    out.extend_from_slice(&rest[..e]);
                                } else {
                                    self.emit_start_tag(&rest[..e], name, out);
                                }
                                e
                            }
                            None => return self.incomplete(buf, i, out, at_end),
                        }
                    } else if next == b'/' && rest.len() < 3 && !at_end {
                        return i;
                    } else if rest.starts_with(b"<!--") {
                        // "<!-->" and "<!--->" end at once; else at "-->".
                        let body = &rest[4..];
                        let close = if body.starts_with(b">") {
                            Some(5)
                        } else if body.starts_with(b"->") {
                            Some(6)
                        } else {
                            memmem::find(body, b"-->").map(|e| 4 + e + 3)
                        };
                        match close {
                            Some(e) => {
                                out.extend_from_slice(&rest[..e]);
                                e
                            }
                            None => return self.incomplete(buf, i, out, at_end),
                        }
                    } else if rest.starts_with(b"<![CDATA[") {
                        match memmem::find(&rest[9..], b"]]>") {
                            Some(e) => {
                                out.extend_from_slice(&rest[..9 + e + 3]);
                                9 + e + 3
                            }
                            None => return self.incomplete(buf, i, out, at_end),
                        }
                    } else if (next == b'!' || next == b'?' || next == b'/')
                        && !(rest.len() < 9 && b"<![CDATA[".starts_with(rest)
                            || rest.len() < 4 && b"<!--".starts_with(rest))
                    {
                        match memchr::memchr(b'>', rest) {
                            Some(e) => {
                                out.extend_from_slice(&rest[..=e]);
                                e + 1
                            }
                            None => return self.incomplete(buf, i, out, at_end),
                        }
                    } else if next == b'!' {
                        return self.incomplete(buf, i, out, at_end); // "<!-" or "<![CDA" so far
                    } else {
                        out.push(b'<');
                        1
                    };
                    i += end;
                }
            }
        }
        buf.len()
    }

    /// An unfinished construct at `buf[i..]`: keep it for the next chunk,
    /// unless it is the end of the document or it grew too large.
    fn incomplete(&mut self, buf: &[u8], i: usize, out: &mut Vec<u8>, at_end: bool) -> usize {
        if at_end || buf.len() - i > MAX_PENDING {
            out.extend_from_slice(&buf[i..]);
            return buf.len();
        }
        i
    }

    pub fn write(&mut self, chunk: &[u8], at_end: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + 64);
        if self.pending.is_empty() {
            let used = self.process(chunk, &mut out, at_end);
            self.pending.extend_from_slice(&chunk[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.pending);
            buf.extend_from_slice(chunk);
            let used = self.process(&buf, &mut out, at_end);
            buf.drain(..used);
            self.pending = buf;
        }
        out
    }
}
