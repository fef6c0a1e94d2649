//! A streaming HTML scanner that finds the attributes LinkRewrite changes,
//! driven by memchr: data between tags is skipped without being looked at,
//! and nothing is copied. It reports *edits* (replace bytes `start..end`
//! of the input with these) and how far the input is complete; the caller
//! (`mod.rs`) passes the untouched stretches on as they are.
//!
//! It follows the HTML tokenizer where it matters for links: tags and
//! attribute values in every quoting style, comments (`<!-- -->`), bogus
//! comments and declarations (`<!...>`, `<?...>`), CDATA sections, and the
//! raw-text (`script`, `style`, `xmp`, `iframe`, `noembed`, `noframes`)
//! and RCDATA (`textarea`, `title`) elements, whose content is never parsed
//! for tags. `plaintext` ends parsing. `noscript` content is markup, as a
//! browser without scripting (and libxml2, so mod_proxy_html) parses it:
//! its fallback `<img>`, `<link>` and `<a>` are what such a browser shows.
//! With CSS rewriting on (`LinkRewriteCSS On`), `<style>` content and
//! `style` attributes (or a whole text/css body) are scanned for `url()`
//! and `@import` strings, skipping CSS comments and other strings.
//!
//! Only an unfinished construct is kept between chunks (at most
//! `MAX_PENDING` bytes; beyond that it is passed on as it is).

use super::{Maps, ValueChange};
use memchr::memmem;

const MAX_PENDING: usize = 1 << 20;

/// Character classes of the tag tokenizer, one table lookup per byte.
const SPACE: u8 = 1; // \t \n \x0c \r and space
const TAG_NAME_END: u8 = 2; // space, '/', '>'
const ATTR_NAME_END: u8 = 4; // space, '/', '>', '='
const UNQUOTED_END: u8 = 8; // space, '>'
const ATTR_SEP: u8 = 16; // space, '/'

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let spaces = [b'\t', b'\n', b'\x0c', b'\r', b' '];
    let mut k = 0;
    while k < spaces.len() {
        t[spaces[k] as usize] = SPACE | TAG_NAME_END | ATTR_NAME_END | UNQUOTED_END | ATTR_SEP;
        k += 1;
    }
    t[b'/' as usize] = TAG_NAME_END | ATTR_NAME_END | ATTR_SEP;
    t[b'>' as usize] = TAG_NAME_END | ATTR_NAME_END | UNQUOTED_END;
    t[b'=' as usize] = ATTR_NAME_END;
    t
};

/// `memchr`, but the first 64 bytes are searched 8 at a time in plain
/// code: in markup the next `<` or quote is usually that near, where
/// memchr's dispatch and set-up cost more than the search.
#[inline(always)]
pub(super) fn find(needle: u8, hay: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let near = &hay[..hay.len().min(64)];
    let mut words = near.chunks_exact(8);
    for (k, word) in words.by_ref().enumerate() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        // A zero byte of x is a match; the lowest flagged byte is exact.
        let x = u64::from_le_bytes(bytes) ^ (ONES * u64::from(needle));
        let zero = x.wrapping_sub(ONES) & !x & HIGHS;
        if zero != 0 {
            return Some(k * 8 + zero.trailing_zeros() as usize / 8);
        }
    }
    let done = near.len() - words.remainder().len();
    memchr::memchr(needle, &hay[done..]).map(|p| done + p)
}

/// The first position from `i` whose byte is (`in_class` false) or is
/// not (`in_class` true) in `class`; `bytes.len()` if none.
#[inline(always)]
fn skip(bytes: &[u8], i: usize, class: u8, in_class: bool) -> usize {
    match bytes.get(i..) {
        Some(rest) => i + rest.iter().position(|&b| has(b, class) != in_class).unwrap_or(rest.len()),
        None => bytes.len(),
    }
}

#[inline(always)]
fn has(b: u8, class: u8) -> bool {
    CLASS[usize::from(b)] & class != 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    /// Inside a raw-text or RCDATA element: look for `</name`.
    RawText(&'static [u8]),
    /// After `<plaintext>`: everything is text.
    PlainText,
    /// CSS, when CSS rewriting is on: inside `<style>` (up to `</style`),
    /// or a whole text/css body.
    Css {
        in_style: bool,
        in_comment: bool,
    },
}

/// What a start tag's name means to the scanner.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TagKind {
    Other,
    Meta,
    RawText(&'static [u8]),
    PlainText,
}

/// `name` equals the lowercase `lit` in any letter case. `| 0x20` lowers
/// ASCII letters; the only other bytes it maps onto a '-' or ':' of `lit`
/// are '\r' (never in a name) and the control byte 0x1a (in no real one).
#[inline(always)]
fn is(name: &[u8], lit: &[u8]) -> bool {
    name.len() == lit.len() && name.iter().zip(lit).all(|(a, b)| a | 0x20 == *b)
}

fn tag_kind(name: &[u8]) -> TagKind {
    let Some(&first) = name.first() else { return TagKind::Other };
    // Length and first letter pick the one candidate to compare.
    let candidate: &'static [u8] = match (name.len(), first | 0x20) {
        (4, b'm') => b"meta",
        (6, b's') => b"script",
        (5, b's') => b"style",
        (3, b'x') => b"xmp",
        (6, b'i') => b"iframe",
        (7, b'n') => b"noembed",
        (8, b'n') => b"noframes",
        (8, b't') => b"textarea",
        (5, b't') => b"title",
        (9, b'p') => b"plaintext",
        _ => return TagKind::Other,
    };
    match candidate {
        _ if !is(name, candidate) => TagKind::Other,
        b"meta" => TagKind::Meta,
        b"plaintext" => TagKind::PlainText,
        raw => TagKind::RawText(raw),
    }
}

/// What an attribute's value holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AttrKind {
    Other,
    /// A single URL.
    Url,
    /// `srcset`, `imagesrcset`: a list of "URL descriptor".
    SrcSet,
    /// `content` (a URL only in `<meta http-equiv=refresh>`).
    Content,
    HttpEquiv,
    /// `style`: CSS, whose `url()`s are rewritten when CSS rewriting is on.
    Style,
}

fn attr_kind(name: &[u8]) -> AttrKind {
    let Some(&first) = name.first() else { return AttrKind::Other };
    // Length and first letter pick the one candidate to compare.
    let (candidate, kind): (&[u8], AttrKind) = match (name.len(), first | 0x20) {
        (3, b's') => (b"src", AttrKind::Url),
        (4, b'h') => (b"href", AttrKind::Url),
        (4, b'c') => (b"cite", AttrKind::Url),
        (4, b'd') => (b"data", AttrKind::Url),
        (4, b'i') => (b"icon", AttrKind::Url),
        (5, b's') => (b"style", AttrKind::Style),
        (6, b'a') => (b"action", AttrKind::Url),
        (6, b'p') => (b"poster", AttrKind::Url),
        (6, b'u') => (b"usemap", AttrKind::Url),
        (6, b's') => (b"srcset", AttrKind::SrcSet),
        (7, b'c') => (b"content", AttrKind::Content),
        (8, b'c') => (b"codebase", AttrKind::Url),
        (8, b'l') => (b"longdesc", AttrKind::Url),
        (8, b'm') => (b"manifest", AttrKind::Url),
        (10, b'f') => (b"formaction", AttrKind::Url),
        (10, b'b') => (b"background", AttrKind::Url),
        (10, b'h') => (b"http-equiv", AttrKind::HttpEquiv),
        (10, b'x') => (b"xlink:href", AttrKind::Url), // SVG <use>, <image>, <a>
        (11, b'i') => (b"imagesrcset", AttrKind::SrcSet),
        _ => return AttrKind::Other,
    };
    if is(name, candidate) { kind } else { AttrKind::Other }
}

/// What replaces an edited stretch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum With {
    /// `Edits::text[from..to]`.
    Text(usize, usize),
    /// A map's TO.
    To(usize),
}

/// One replacement: input bytes `start..end` become `with`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Edit {
    pub start: usize,
    pub end: usize,
    pub with: With,
}

/// The edits of one scan, in input order, and the bytes they insert.
#[derive(Default)]
pub(super) struct Edits {
    pub list: Vec<Edit>,
    pub text: Vec<u8>,
}

impl Edits {
    fn mark(&self) -> (usize, usize) {
        (self.list.len(), self.text.len())
    }

    fn reset(&mut self, mark: (usize, usize)) {
        self.list.truncate(mark.0);
        self.text.truncate(mark.1);
    }

    /// Records that `start..end` becomes what was appended to `text` since `text_start`.
    #[inline]
    fn push_text(&mut self, start: usize, end: usize, text_start: usize) {
        self.list.push(Edit { start, end, with: With::Text(text_start, self.text.len()) });
    }
}

/// What the scanner reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// HTML; `css`: also rewrite `url()` and `@import` in `<style>` and
    /// `style` attributes (`LinkRewriteCSS On`).
    Html { css: bool },
    /// A stylesheet (text/css, with `LinkRewriteCSS On`).
    Css,
}

/// The scanner: `scan` each stretch of the document in order.
pub struct Scanner {
    maps: Maps,
    state: State,
    css: bool,
}

impl Scanner {
    pub fn new(maps: Maps, body: Body) -> Scanner {
        match body {
            Body::Html { css } => Scanner { maps, state: State::Data, css },
            Body::Css => Scanner { maps, state: State::Css { in_style: false, in_comment: false }, css: true },
        }
    }

    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// Scans `buf`, adding its edits (positions relative to `buf`) to
    /// `edits`; returns how many bytes are done. The rest is an unfinished
    /// construct: scan it again with more input after it (`at_end` says
    /// there is none).
    pub(super) fn scan(&mut self, buf: &[u8], at_end: bool, edits: &mut Edits) -> usize {
        let mut i = 0;
        while i < buf.len() {
            match self.state {
                State::PlainText => return buf.len(),
                State::Css { in_style, mut in_comment } => {
                    // Where the CSS ends in this buffer, and what follows.
                    let (end, after) = if !in_style {
                        (buf.len(), None)
                    } else {
                        match raw_text_end(buf, i, b"style") {
                            RawEnd::At(at) => (at, Some(at)),
                            RawEnd::MaybeSplit(at) if !at_end => (at, None),
                            RawEnd::NotHere | RawEnd::MaybeSplit(_) => (buf.len(), None),
                        }
                    };
                    let css = Css { hay: buf, base: 0, end, complete: at_end || after.is_some(), in_attribute: false };
                    let done = self.css(&css, i, &mut in_comment, edits);
                    self.state = State::Css { in_style, in_comment };
                    match after {
                        Some(at) if done == end => {
                            self.state = State::Data;
                            i = at;
                        }
                        _ => return done,
                    }
                }
                State::RawText(name) => match raw_text_end(buf, i, name) {
                    RawEnd::NotHere => return buf.len(),
                    RawEnd::MaybeSplit(at) if !at_end => return at,
                    RawEnd::MaybeSplit(_) => return buf.len(),
                    RawEnd::At(at) => {
                        self.state = State::Data;
                        i = at;
                    }
                },
                State::Data => {
                    let Some(p) = find(b'<', &buf[i..]) else { return buf.len() };
                    let at = i + p;
                    match self.markup(&buf[at..], at, at_end, edits) {
                        Some(len) => i = at + len,
                        None if at_end || buf.len() - at > MAX_PENDING => return buf.len(),
                        None => return at,
                    }
                }
            }
        }
        buf.len()
    }

    /// The construct starting with the `<` at `rest[0]` (at `base` in the
    /// scanned buffer): its length, or `None` if it is unfinished.
    fn markup(&mut self, rest: &[u8], base: usize, at_end: bool, edits: &mut Edits) -> Option<usize> {
        let Some(&next) = rest.get(1) else { return at_end.then_some(1) };
        if next.is_ascii_alphabetic() {
            return self.tag(rest, base, false, edits);
        }
        if next == b'/' {
            return match rest.get(2) {
                Some(c) if c.is_ascii_alphabetic() => self.tag(rest, base, true, edits),
                // `</>` and `</ x>` are bogus comments, up to '>'.
                Some(_) => memchr::memchr(b'>', rest).map(|e| e + 1),
                None => at_end.then_some(2),
            };
        }
        if rest.starts_with(b"<!--") {
            // "<!-->" and "<!--->" end at once; else at "-->".
            let body = &rest[4..];
            return if body.starts_with(b">") {
                Some(5)
            } else if body.starts_with(b"->") {
                Some(6)
            } else {
                memmem::find(body, b"-->").map(|e| 4 + e + 3)
            };
        }
        if rest.starts_with(b"<![CDATA[") {
            return memmem::find(&rest[9..], b"]]>").map(|e| 9 + e + 3);
        }
        if next == b'!'
            && (rest.len() < 9 && b"<![CDATA[".starts_with(rest) || rest.len() < 4 && b"<!--".starts_with(rest))
        {
            return None; // "<!-" or "<![CDA" so far
        }
        if next == b'!' || next == b'?' {
            return memchr::memchr(b'>', rest).map(|e| e + 1);
        }
        Some(1) // a '<' that starts nothing
    }

    /// A start or end tag at `rest` (from '<'): parses it like the HTML
    /// tokenizer, records the edits of its URL attributes (start tags), and
    /// returns its length, or `None` if it is unfinished (its edits undone).
    fn tag(&mut self, rest: &[u8], base: usize, is_end: bool, edits: &mut Edits) -> Option<usize> {
        let mark = edits.mark();
        let found = self.tag_inner(rest, base, is_end, edits);
        if found.is_none() {
            edits.reset(mark);
        }
        found
    }

    fn tag_inner(&mut self, rest: &[u8], base: usize, is_end: bool, edits: &mut Edits) -> Option<usize> {
        let n = rest.len();
        let mut i = if is_end { 2 } else { 1 };
        let name_start = i;
        i = skip(rest, i, TAG_NAME_END, false);
        if i >= n {
            return None;
        }
        let kind = if is_end { TagKind::Other } else { tag_kind(&rest[name_start..i]) };
        let first_edit = edits.list.len();
        let mut refresh = false;
        let mut content = None;
        loop {
            i = skip(rest, i, ATTR_SEP, true);
            match rest.get(i) {
                None => return None,
                Some(b'>') => break,
                _ => {}
            }
            let name_start = i;
            i += 1; // the first character may be '=' (spec: part of the name)
            i = skip(rest, i, ATTR_NAME_END, false);
            let name_end = i;
            i = skip(rest, i, SPACE, true);
            if *rest.get(i)? != b'=' {
                continue;
            }
            i += 1;
            i = skip(rest, i, SPACE, true);
            let (start, end) = match *rest.get(i)? {
                q @ (b'"' | b'\'') => {
                    let end = i + 1 + find(q, &rest[i + 1..])?;
                    let start = i + 1;
                    i = end + 1;
                    (start, end)
                }
                b'>' => (i, i),
                _ => {
                    let start = i;
                    i = skip(rest, i, UNQUOTED_END, false);
                    if i >= n {
                        return None;
                    }
                    (start, i)
                }
            };
            if is_end || start == end {
                continue;
            }
            let value = &rest[start..end];
            let text_start = edits.text.len();
            let changed = match attr_kind(&rest[name_start..name_end]) {
                AttrKind::Other => false,
                AttrKind::Url => {
                    self.url_edit(base + start, value, true, edits);
                    false
                }
                AttrKind::Style if self.css => {
                    let css = Css { hay: rest, base, end, complete: true, in_attribute: true };
                    self.css(&css, start, &mut false, edits);
                    false
                }
                AttrKind::Style => false,
                AttrKind::SrcSet => self.maps.rewrite_srcset_into(value, &mut edits.text),
                AttrKind::HttpEquiv => {
                    refresh |= value.trim_ascii().eq_ignore_ascii_case(b"refresh");
                    false
                }
                AttrKind::Content => {
                    content = content.or(Some((start, end)));
                    false
                }
            };
            if changed {
                edits.push_text(base + start, base + end, text_start);
            }
        }
        if let (true, TagKind::Meta, Some((start, end))) = (refresh, kind, content) {
            let text_start = edits.text.len();
            if self.maps.rewrite_refresh_into(&rest[start..end], &mut edits.text) {
                // `content` may come before other rewritten attributes: keep the list in order.
                let at = first_edit + edits.list[first_edit..].partition_point(|e| e.start < base + start);
                let edit =
                    Edit { start: base + start, end: base + end, with: With::Text(text_start, edits.text.len()) };
                edits.list.insert(at, edit);
            }
        }
        match kind {
            TagKind::RawText(b"style") if self.css => self.state = State::Css { in_style: true, in_comment: false },
            TagKind::RawText(name) => self.state = State::RawText(name),
            TagKind::PlainText => self.state = State::PlainText,
            TagKind::Other | TagKind::Meta => {}
        }
        Some(i + 1)
    }
}

/// A stretch of CSS to scan: `hay[..end]`, whose positions are `base`
/// further on in the scanned buffer.
struct Css<'h> {
    hay: &'h [u8],
    base: usize,
    end: usize,
    /// Nothing follows `end` (else an unfinished construct there waits for more).
    complete: bool,
    /// In a `style` attribute, where character references are decoded.
    in_attribute: bool,
}

/// Whether `b` may be part of a CSS identifier (so `myurl(` is no `url(`).
fn css_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b >= 0x80
}

impl Scanner {
    /// Records the edit of one URL value at `at` in the buffer.
    /// `decode_refs`: character references mean characters (attribute
    /// values), or are just text (a `<style>` element).
    #[inline(always)]
    fn url_edit(&self, at: usize, value: &[u8], decode_refs: bool, edits: &mut Edits) {
        let text_start = edits.text.len();
        let change =
            if decode_refs { self.maps.rewrite_value(value, &mut edits.text) } else { self.maps.prefix_change(value) };
        match change {
            ValueChange::None => {}
            ValueChange::Whole => edits.push_text(at, at + value.len(), text_start),
            ValueChange::Prefix { start, end, map } => {
                edits.list.push(Edit { start: at + start, end: at + end, with: With::To(map) });
            }
        }
    }

    /// Scans CSS from `from`, recording the edits of `url(...)` and
    /// `@import "..."` values, skipping comments and other strings; returns
    /// how far it is done (less than `css.end` when a construct there is
    /// unfinished and more may follow).
    #[inline(never)] // kept out of `tag`, whose loop it would crowd
    fn css(&self, css: &Css, from: usize, in_comment: &mut bool, edits: &mut Edits) -> usize {
        let (hay, end) = (&css.hay[..css.end], css.end);
        let mut k = from;
        // An unfinished construct at `at`: wait for more input, unless there is none (or too much).
        let unfinished = |at: usize| if css.complete || end - at > MAX_PENDING { end } else { at };
        // All done, but for a word at the very end, which may go on (`my` +
        // `url(`) in the next input: it is scanned again with that.
        // `floor`: the end of the last escape, string, comment or url(),
        // which a word held back must not reach into.
        let settled = |floor: usize| {
            let word = hay.iter().rev().take_while(|&&b| css_ident(b)).count();
            if css.complete || word == 0 || word > 256 { end } else { (end - word).max(floor) }
        };
        let mut floor = from;
        while k < end {
            if *in_comment {
                match memmem::find(&hay[k..], b"*/") {
                    Some(p) => {
                        *in_comment = false;
                        k += p + 2;
                        floor = k;
                        continue;
                    }
                    // A '*' at the very end may start the "*/".
                    None if !css.complete && hay[end - 1] == b'*' => return end - 1,
                    None => return end,
                }
            }
            let Some(p) = hay[k..].iter().position(|&b| matches!(b, b'/' | b'"' | b'\'' | b'@' | b'u' | b'U' | b'\\'))
            else {
                return settled(floor);
            };
            let at = k + p;
            match hay[at] {
                // An escaped character.
                b'\\' if at + 1 == end => return unfinished(at),
                b'\\' => {
                    k = at + 2;
                    floor = k;
                }
                b'/' => match hay.get(at + 1) {
                    Some(b'*') => {
                        *in_comment = true;
                        k = at + 2;
                    }
                    Some(_) => k = at + 1,
                    None => return unfinished(at),
                },
                q @ (b'"' | b'\'') => match css_string_end(hay, at + 1, q) {
                    Some(e) => {
                        k = e + 1;
                        floor = k;
                    }
                    None => return unfinished(at),
                },
                b'@' => {
                    const IMPORT: &[u8] = b"@import";
                    let word = &hay[at..end.min(at + IMPORT.len())];
                    if !word.eq_ignore_ascii_case(&IMPORT[..word.len()]) {
                        k = at + 1;
                        continue;
                    }
                    if word.len() < IMPORT.len() {
                        return unfinished(at);
                    }
                    let s = skip(hay, at + IMPORT.len(), SPACE, true);
                    match hay.get(s) {
                        None => return unfinished(at),
                        Some(&q @ (b'"' | b'\'')) => match css_string_end(hay, s + 1, q) {
                            Some(e) => {
                                self.url_edit(css.base + s + 1, &hay[s + 1..e], css.in_attribute, edits);
                                k = e + 1;
                                floor = k;
                            }
                            None => return unfinished(at),
                        },
                        // `@import url(...)`: the url() is found next.
                        Some(_) => k = s,
                    }
                }
                _ => {
                    // 'u' or 'U': `url(` not inside an identifier.
                    if at > 0 && css_ident(hay[at - 1]) {
                        k = at + 1;
                        continue;
                    }
                    let word = &hay[at..end.min(at + 4)];
                    if !word.eq_ignore_ascii_case(&b"url("[..word.len()]) {
                        k = at + 1;
                        continue;
                    }
                    if word.len() < 4 {
                        return unfinished(at);
                    }
                    let s = skip(hay, at + 4, SPACE, true);
                    let (start, stop, next) = match hay.get(s) {
                        None => return unfinished(at),
                        Some(&q @ (b'"' | b'\'')) => match css_string_end(hay, s + 1, q) {
                            Some(e) => (s + 1, e, e + 1),
                            None => return unfinished(at),
                        },
                        Some(_) => match hay[s..].iter().position(|&b| b == b')' || has(b, SPACE)) {
                            Some(e) => (s, s + e, s + e + 1),
                            None => return unfinished(at),
                        },
                    };
                    self.url_edit(css.base + start, &hay[start..stop], css.in_attribute, edits);
                    k = next;
                    floor = k;
                }
            }
        }
        settled(floor)
    }
}

/// The closing quote `q` of a CSS string whose text starts at `from`
/// (escapes skipped); a newline ends a bad string there.
fn css_string_end(hay: &[u8], from: usize, q: u8) -> Option<usize> {
    let mut k = from;
    while let Some(p) = hay[k..].iter().position(|&b| b == q || b == b'\\' || b == b'\n') {
        let at = k + p;
        if hay[at] == b'\\' {
            k = at + 2;
            if k >= hay.len() {
                return None;
            }
            continue;
        }
        return Some(at);
    }
    None
}

enum RawEnd {
    /// No end tag in the buffer.
    NotHere,
    /// A `<` near the end that may start the end tag.
    MaybeSplit(usize),
    /// The end tag starts here.
    At(usize),
}

/// Finds `</name` followed by space, '/' or '>' in `buf[from..]`.
fn raw_text_end(buf: &[u8], from: usize, name: &[u8]) -> RawEnd {
    let mut k = from;
    while let Some(p) = memchr::memchr(b'<', &buf[k..]) {
        let at = k + p;
        if at + 2 + name.len() + 1 > buf.len() {
            return RawEnd::MaybeSplit(at);
        }
        if buf[at + 1] == b'/'
            && buf[at + 2..at + 2 + name.len()].eq_ignore_ascii_case(name)
            && has(buf[at + 2 + name.len()], TAG_NAME_END)
        {
            return RawEnd::At(at);
        }
        k = at + 1;
    }
    RawEnd::NotHere
}
