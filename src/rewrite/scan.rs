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
//! The scanner goes on where it stopped when more input comes, so its work
//! is linear in the input however it is cut. Comments, CDATA and bogus
//! comments are followed as they stream; only an unfinished tag, or CSS
//! `url(...)` or `@import "..."`, is kept between chunks (and a few bytes
//! that may start a `-->`, `</style` or the like).

use super::{Maps, ValueChange};
use memchr::memmem;

/// The most a tag, or a CSS `url(...)` or `@import "..."`, may take for
/// its URLs to be rewritten: one that is not complete within its first
/// `MAX_PENDING` bytes is passed on as it is, however the input is cut
/// (the scanner follows it to its end without keeping it). This bounds
/// what is kept between chunks.
pub(super) const MAX_PENDING: usize = 1 << 20;

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
    /// In a start or end tag (`Scanner::tag` says where).
    Tag,
    /// In a comment, up to `-->`.
    Comment,
    /// In a CDATA section, up to `]]>`.
    Cdata,
    /// In a bogus comment or a declaration (`<!x`, `<?x`, `</ x`), up to `>`.
    Bogus,
    /// Inside a raw-text or RCDATA element: look for `</name`.
    RawText(&'static [u8]),
    /// After `<plaintext>`: everything is text.
    PlainText,
    /// CSS, when CSS rewriting is on: inside `<style>` (up to `</style`),
    /// or a whole text/css body.
    Css {
        in_style: bool,
        css: CssState,
    },
}

/// Where the tag parser is in a tag (as the HTML tokenizer's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Name,
    BeforeAttr,
    AttrName,
    AfterAttrName,
    BeforeValue,
    Quoted(u8),
    Unquoted,
}

/// A tag being parsed; positions are relative to its '<'.
#[derive(Clone, Copy)]
struct TagState {
    is_end: bool,
    /// Not complete within its first `max_pending` bytes: followed to its
    /// end without being kept or rewritten; positions are relative to the
    /// buffer's start.
    overlong: bool,
    /// Kept from an earlier buffer (its edits so far in `Scanner::tag_edits`).
    held: bool,
    phase: Phase,
    /// Where parsing goes on.
    i: usize,
    kind: TagKind,
    refresh: bool,
    content: Option<(usize, usize)>,
    name_start: usize,
    name_end: usize,
    value_start: usize,
}

impl TagState {
    fn new(is_end: bool) -> TagState {
        let i = if is_end { 2 } else { 1 };
        TagState {
            is_end,
            overlong: false,
            held: false,
            phase: Phase::Name,
            i,
            kind: TagKind::Other,
            refresh: false,
            content: None,
            name_start: i,
            name_end: i,
            value_start: i,
        }
    }
}

/// What the CSS scanner carries from one buffer to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct CssState {
    in_comment: bool,
    /// In a string (other than a `url(` or `@import` one) with this quote.
    in_string: Option<u8>,
    /// The byte before the buffer may be part of an identifier (so a `url(`
    /// at its start is no url(): `myurl(`).
    after_ident: bool,
    /// A `url(` or `@import` whose value is unfinished.
    value: Option<CssValue>,
}

/// A `url(...)` or `@import "..."` being parsed; positions are relative to
/// its `u` or `@`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CssValue {
    /// `url(` (else `@import`).
    url: bool,
    phase: CssPhase,
    /// Where parsing goes on.
    pos: usize,
    value_start: usize,
    /// Not complete within its first `max_pending` bytes: followed to its
    /// end without being kept or rewritten; `pos` is relative to the
    /// buffer's start.
    overlong: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CssPhase {
    /// After the keyword.
    Spaces,
    Quoted(u8),
    Unquoted,
}

/// What a start tag's name means to the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl Edit {
    /// The same edit `pos` bytes earlier in the input, its text `text` bytes earlier in `Edits::text`.
    fn back(&self, pos: usize, text: usize) -> Edit {
        let with = match self.with {
            With::Text(from, to) => With::Text(from - text, to - text),
            with => with,
        };
        Edit { start: self.start - pos, end: self.end - pos, with }
    }

    /// The same edit, its text `text` bytes further on in `Edits::text`.
    fn text_on(&self, text: usize) -> Edit {
        let with = match self.with {
            With::Text(from, to) => With::Text(from + text, to + text),
            with => with,
        };
        Edit { with, ..*self }
    }
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
    /// The tag in progress (`State::Tag`).
    tag: TagState,
    /// The edits of a tag kept from an earlier buffer, relative to its '<'.
    tag_edits: Edits,
    /// `MAX_PENDING` (less in tests).
    max_pending: usize,
}

/// What `Scanner::tag` did.
enum Step {
    /// The tag is done: scanning goes on here.
    Next(usize),
    /// The buffer is done up to here (the rest is the tag, kept).
    Stop(usize),
}

impl Scanner {
    pub fn new(maps: Maps, body: Body) -> Scanner {
        let (state, css) = match body {
            Body::Html { css } => (State::Data, css),
            Body::Css => (State::Css { in_style: false, css: CssState::default() }, true),
        };
        Scanner { maps, state, css, tag: TagState::new(false), tag_edits: Edits::default(), max_pending: MAX_PENDING }
    }

    /// A smaller `MAX_PENDING`, to test what happens past it.
    #[cfg(test)]
    pub(super) fn set_max_pending(&mut self, max: usize) {
        self.max_pending = max.max(16);
    }

    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// Scans `buf`, adding its edits (positions relative to `buf`) to
    /// `edits`; returns how many bytes are done. The rest is an unfinished
    /// construct: give it again, with more input after it (`at_end` says
    /// there is none). The scanner goes on where it stopped in it, so that
    /// the work is linear however the input is cut.
    pub(super) fn scan(&mut self, buf: &[u8], at_end: bool, edits: &mut Edits) -> usize {
        let mut i = 0;
        // Where the tag in progress starts (a tag kept from before: at 0).
        let mut tag_at = 0;
        while i < buf.len() {
            match self.state {
                State::PlainText => return buf.len(),
                State::Css { in_style, mut css } => {
                    // Where the CSS ends in this buffer, and what follows.
                    // A value kept from before has no end tag before where
                    // its parsing goes on.
                    let from = match css.value {
                        Some(v) if !v.overlong => v.pos,
                        _ => i,
                    };
                    let (end, after) = if !in_style {
                        (buf.len(), None)
                    } else {
                        match raw_text_end(buf, from, b"style") {
                            RawEnd::At(at) => (at, Some(at)),
                            RawEnd::MaybeSplit(at) if !at_end => (at, None),
                            RawEnd::NotHere | RawEnd::MaybeSplit(_) => (buf.len(), None),
                        }
                    };
                    let sheet =
                        Css { hay: buf, base: 0, end, complete: at_end || after.is_some(), in_attribute: false };
                    let done = self.css(&sheet, i, &mut css, edits);
                    if done > 0 {
                        css.after_ident = css_ident(buf[done - 1]);
                    }
                    self.state = State::Css { in_style, css };
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
                    let rest = &buf[at..];
                    let is_tag = |c: Option<&u8>| c.is_some_and(u8::is_ascii_alphabetic);
                    let is_end = match rest.get(1) {
                        Some(b'/') if is_tag(rest.get(2)) => true,
                        c if is_tag(c) => false,
                        _ => {
                            match self.markup(rest, at_end) {
                                Some(len) => i = at + len,
                                None if at_end => return buf.len(),
                                None => return at,
                            }
                            continue;
                        }
                    };
                    // A tag: parsed at once if it is all here (the common
                    // case), else by `tag`, which can stop and go on.
                    let mark = edits.mark();
                    if let Some((len, kind)) =
                        self.tag_whole(&rest[..rest.len().min(self.max_pending)], at, is_end, edits)
                    {
                        self.after_tag(kind);
                        i = at + len;
                        continue;
                    }
                    edits.reset(mark);
                    self.tag = TagState::new(is_end);
                    self.state = State::Tag;
                    (i, tag_at) = (at, at);
                }
                State::Tag => match self.tag(buf, tag_at, at_end, edits) {
                    Step::Next(next) => i = next,
                    Step::Stop(done) => return done,
                },
                State::Comment => match memmem::find(&buf[i..], b"-->") {
                    Some(p) => {
                        self.state = State::Data;
                        i += p + 3;
                    }
                    None => return keep_tail(buf, i, b'-', at_end),
                },
                State::Cdata => match memmem::find(&buf[i..], b"]]>") {
                    Some(p) => {
                        self.state = State::Data;
                        i += p + 3;
                    }
                    None => return keep_tail(buf, i, b']', at_end),
                },
                State::Bogus => match memchr::memchr(b'>', &buf[i..]) {
                    Some(p) => {
                        self.state = State::Data;
                        i += p + 1;
                    }
                    None => return buf.len(),
                },
            }
        }
        buf.len()
    }

    /// The construct (not a tag) starting with the `<` at `rest[0]`: how many of its
    /// bytes are done (having entered the state that goes on with it), or
    /// `None` if a few more bytes are needed to tell what it is.
    fn markup(&mut self, rest: &[u8], at_end: bool) -> Option<usize> {
        let Some(&next) = rest.get(1) else { return at_end.then_some(1) };
        if next == b'/' {
            return match rest.get(2) {
                // `</>` and `</ x>` are bogus comments, up to '>'.
                Some(_) => Some(self.enter(State::Bogus, 2)),
                None => at_end.then_some(2),
            };
        }
        if let Some(body) = rest.strip_prefix(b"<!--") {
            // "<!-->" and "<!--->" end at once; else at "-->".
            return match body {
                [b'>', ..] => Some(5),
                [b'-', b'>', ..] => Some(6),
                [] | [b'-'] if !at_end => None,
                _ => Some(self.enter(State::Comment, 4)),
            };
        }
        if rest.starts_with(b"<![CDATA[") {
            return Some(self.enter(State::Cdata, 9));
        }
        if next == b'!'
            && (rest.len() < 9 && b"<![CDATA[".starts_with(rest) || rest.len() < 4 && b"<!--".starts_with(rest))
        {
            return None; // "<!-" or "<![CDA" so far
        }
        if next == b'!' || next == b'?' {
            return Some(self.enter(State::Bogus, 2));
        }
        Some(1) // a '<' that starts nothing
    }

    fn enter(&mut self, state: State, len: usize) -> usize {
        self.state = state;
        len
    }

    /// Goes on with the tag at `at` in `buf` (at 0 if kept from before, or
    /// overlong): records the edits of its URL attributes (start tags)
    /// once it is complete, and sets the state that follows it.
    fn tag(&mut self, buf: &[u8], at: usize, at_end: bool, edits: &mut Edits) -> Step {
        let mut st = self.tag;
        if !st.overlong {
            // Only its first `max_pending` bytes are looked at (and kept).
            let rest = &buf[at..buf.len().min(at + self.max_pending)];
            let found = if st.held {
                debug_assert_eq!(at, 0);
                let mut kept = std::mem::take(&mut self.tag_edits);
                let found = self.tag_parse(&mut st, rest, 0, &mut kept, 0);
                if found.is_some() {
                    let shift = edits.text.len();
                    edits.text.extend_from_slice(&kept.text);
                    edits.list.extend(kept.list.iter().map(|e| e.text_on(shift)));
                }
                if found.is_some() || at_end || rest.len() == self.max_pending {
                    kept.list.clear();
                    kept.text.clear();
                }
                self.tag_edits = kept;
                found
            } else {
                let mark = edits.mark();
                let found = self.tag_parse(&mut st, rest, at, edits, mark.0);
                if found.is_none() {
                    if !at_end && rest.len() < self.max_pending {
                        // Kept: its edits so far go with it.
                        let kept = &mut self.tag_edits;
                        kept.text.extend_from_slice(&edits.text[mark.1..]);
                        kept.list.extend(edits.list[mark.0..].iter().map(|e| e.back(at, mark.1)));
                    }
                    edits.reset(mark);
                }
                found
            };
            match found {
                Some(end) => return self.tag_done(st, at + end),
                None if rest.len() == self.max_pending => st.overlong = true,
                // Unfinished at the end of the document: passed on as it is.
                None if at_end => {
                    self.state = State::Data;
                    return Step::Stop(buf.len());
                }
                None => {
                    st.held = true;
                    self.tag = st;
                    return Step::Stop(at);
                }
            }
        }
        // Overlong: followed to its end, neither kept nor rewritten.
        st.held = false;
        let mut none = Edits::default();
        match self.tag_parse(&mut st, &buf[at..], at, &mut none, 0) {
            Some(end) => self.tag_done(st, at + end),
            None => {
                st.i = 0;
                self.tag = st;
                Step::Stop(buf.len())
            }
        }
    }

    /// A tag has ended just before `next`: the state that follows it.
    fn tag_done(&mut self, st: TagState, next: usize) -> Step {
        self.after_tag(st.kind);
        Step::Next(next)
    }

    /// The state after a tag of this kind.
    #[inline(always)]
    fn after_tag(&mut self, kind: TagKind) {
        self.state = match kind {
            TagKind::RawText(b"style") if self.css => State::Css { in_style: true, css: CssState::default() },
            TagKind::RawText(name) => State::RawText(name),
            TagKind::PlainText => State::PlainText,
            TagKind::Other | TagKind::Meta => State::Data,
        };
    }

    /// Parses the tag in `rest` (from its '<'; an overlong one from
    /// anywhere) like the HTML tokenizer, from where `st` says: `Some` of
    /// where it ends (after its '>'), or `None` if `rest` ends first (`st`
    /// says where). The edits of its URL attributes go to `edits`, `base`
    /// further on (`first_edit`: its first one there), unless it is overlong.
    fn tag_parse(
        &self,
        st: &mut TagState,
        rest: &[u8],
        base: usize,
        edits: &mut Edits,
        first_edit: usize,
    ) -> Option<usize> {
        let n = rest.len();
        let mut i = st.i;
        let found = loop {
            match st.phase {
                Phase::Name => {
                    i = skip(rest, i, TAG_NAME_END, false);
                    if i >= n {
                        break None;
                    }
                    // An overlong name is no name the scanner knows.
                    if !st.is_end && !st.overlong {
                        st.kind = tag_kind(&rest[st.name_start..i]);
                    }
                    st.phase = Phase::BeforeAttr;
                }
                Phase::BeforeAttr => {
                    i = skip(rest, i, ATTR_SEP, true);
                    match rest.get(i) {
                        None => break None,
                        Some(b'>') => break Some(i + 1),
                        Some(_) => {
                            st.name_start = i;
                            i += 1; // the first character may be '=' (spec: part of the name)
                            st.phase = Phase::AttrName;
                        }
                    }
                }
                Phase::AttrName => {
                    i = skip(rest, i, ATTR_NAME_END, false);
                    if i >= n {
                        break None;
                    }
                    st.name_end = i;
                    st.phase = Phase::AfterAttrName;
                }
                Phase::AfterAttrName => {
                    i = skip(rest, i, SPACE, true);
                    match rest.get(i) {
                        None => break None,
                        Some(b'=') => {
                            i += 1;
                            st.phase = Phase::BeforeValue;
                        }
                        Some(_) => st.phase = Phase::BeforeAttr,
                    }
                }
                Phase::BeforeValue => {
                    i = skip(rest, i, SPACE, true);
                    match rest.get(i) {
                        None => break None,
                        Some(&q @ (b'"' | b'\'')) => {
                            i += 1;
                            st.value_start = i;
                            st.phase = Phase::Quoted(q);
                        }
                        // An empty value.
                        Some(b'>') => st.phase = Phase::BeforeAttr,
                        Some(_) => {
                            st.value_start = i;
                            st.phase = Phase::Unquoted;
                        }
                    }
                }
                Phase::Quoted(q) => {
                    let Some(p) = find(q, &rest[i..]) else {
                        i = n;
                        break None;
                    };
                    self.value_done(st, rest, i + p, base, edits);
                    i += p + 1;
                    st.phase = Phase::BeforeAttr;
                }
                Phase::Unquoted => {
                    i = skip(rest, i, UNQUOTED_END, false);
                    if i >= n {
                        break None;
                    }
                    self.value_done(st, rest, i, base, edits);
                    st.phase = Phase::BeforeAttr;
                }
            }
        };
        st.i = i;
        if let (Some(_), false, true, TagKind::Meta, Some(value)) =
            (found, st.overlong, st.refresh, st.kind, st.content)
        {
            self.refresh_edit(rest, base, first_edit, value, edits);
        }
        found
    }

    /// `tag_parse` is at the end of a value.
    #[inline(always)]
    fn value_done(&self, st: &mut TagState, rest: &[u8], end: usize, base: usize, edits: &mut Edits) {
        if !st.is_end && !st.overlong && st.value_start != end {
            let (name, value) = ((st.name_start, st.name_end), (st.value_start, end));
            self.attribute(rest, name, value, base, &mut st.refresh, &mut st.content, edits);
        }
    }

    /// An attribute of the tag in `rest` (`name` and `value`: where they
    /// are): records its edit (at `base` further on), or what it says
    /// about the tag.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn attribute(
        &self,
        rest: &[u8],
        (name_start, name_end): (usize, usize),
        (start, end): (usize, usize),
        base: usize,
        refresh: &mut bool,
        content: &mut Option<(usize, usize)>,
        edits: &mut Edits,
    ) {
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
                self.css(&css, start, &mut CssState::default(), edits);
                false
            }
            AttrKind::Style => false,
            AttrKind::SrcSet => self.maps.rewrite_srcset_into(value, &mut edits.text),
            AttrKind::HttpEquiv => {
                *refresh |= value.trim_ascii().eq_ignore_ascii_case(b"refresh");
                false
            }
            AttrKind::Content => {
                *content = content.or(Some((start, end)));
                false
            }
        };
        if changed {
            edits.push_text(base + start, base + end, text_start);
        }
    }

    /// `<meta http-equiv=refresh content="...">`: the edit of the `content`
    /// value at `start..end` in `rest`, put in order among the tag's edits
    /// (from `first_edit`), which may come after it.
    fn refresh_edit(
        &self,
        rest: &[u8],
        base: usize,
        first_edit: usize,
        (start, end): (usize, usize),
        edits: &mut Edits,
    ) {
        let text_start = edits.text.len();
        if self.maps.rewrite_refresh_into(&rest[start..end], &mut edits.text) {
            let at = first_edit + edits.list[first_edit..].partition_point(|e| e.start < base + start);
            let edit = Edit { start: base + start, end: base + end, with: With::Text(text_start, edits.text.len()) };
            edits.list.insert(at, edit);
        }
    }

    /// A tag at `rest` (from its '<') that is all there, parsed at once
    /// like `tag_parse` (which takes over when it is not): its length and
    /// kind, or `None` if it is unfinished (with some of its edits recorded).
    #[inline(always)]
    fn tag_whole(&self, rest: &[u8], base: usize, is_end: bool, edits: &mut Edits) -> Option<(usize, TagKind)> {
        let n = rest.len();
        let mut i = if is_end { 2 } else { 1 };
        let name_start = i;
        i = skip(rest, i, TAG_NAME_END, false);
        if i >= n {
            return None;
        }
        let kind = if is_end { TagKind::Other } else { tag_kind(&rest[name_start..i]) };
        let first_edit = edits.list.len();
        let (mut refresh, mut content) = (false, None);
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
            self.attribute(rest, (name_start, name_end), (start, end), base, &mut refresh, &mut content, edits);
        }
        if let (true, TagKind::Meta, Some(value)) = (refresh, kind, content) {
            self.refresh_edit(rest, base, first_edit, value, edits);
        }
        Some((i + 1, kind))
    }
}

/// In a comment or CDATA section with no end in `buf[from..]`: all is
/// done but up to two `c` at the very end (the `--` of a `-->` to come).
fn keep_tail(buf: &[u8], from: usize, c: u8, at_end: bool) -> usize {
    if at_end {
        return buf.len();
    }
    buf.len() - buf[from..].iter().rev().take(2).take_while(|&&b| b == c).count()
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
    /// unfinished and more may follow: it starts the next buffer).
    #[inline(never)] // kept out of `tag`, whose loop it would crowd
    fn css(&self, css: &Css, from: usize, st: &mut CssState, edits: &mut Edits) -> usize {
        let (hay, end) = (&css.hay[..css.end], css.end);
        let mut k = from;
        // An unfinished construct (a few bytes) at `at`: wait for more
        // input, unless there is none.
        let unfinished = |at: usize| if css.complete { end } else { at };
        if let Some(v) = st.value.take() {
            match self.css_value(css, from, v, st, edits) {
                Ok(next) => k = next,
                Err(done) => return done,
            }
        }
        while k < end {
            if st.in_comment {
                match memmem::find(&hay[k..], b"*/") {
                    Some(p) => {
                        st.in_comment = false;
                        k += p + 2;
                        continue;
                    }
                    // A '*' at the very end may start the "*/".
                    None if !css.complete && hay[end - 1] == b'*' => return end - 1,
                    None => return end,
                }
            }
            if let Some(q) = st.in_string {
                match css_string_end(hay, k, q) {
                    Ok(e) => {
                        st.in_string = None;
                        k = e + 1;
                        continue;
                    }
                    Err(_) if css.complete => {
                        st.in_string = None;
                        return end;
                    }
                    // A '\' at the very end escapes what comes next.
                    Err(resume) => return resume,
                }
            }
            let Some(p) = hay[k..].iter().position(|&b| matches!(b, b'/' | b'"' | b'\'' | b'@' | b'u' | b'U' | b'\\'))
            else {
                return end;
            };
            let at = k + p;
            match hay[at] {
                // An escaped character.
                b'\\' if at + 1 == end => return unfinished(at),
                b'\\' => k = at + 2,
                b'/' => match hay.get(at + 1) {
                    Some(b'*') => {
                        st.in_comment = true;
                        k = at + 2;
                    }
                    Some(_) => k = at + 1,
                    None => return unfinished(at),
                },
                q @ (b'"' | b'\'') => {
                    st.in_string = Some(q);
                    k = at + 1;
                }
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
                    let v = CssValue {
                        url: false,
                        phase: CssPhase::Spaces,
                        pos: IMPORT.len(),
                        value_start: 0,
                        overlong: false,
                    };
                    match self.css_value(css, at, v, st, edits) {
                        Ok(next) => k = next,
                        Err(done) => return done,
                    }
                }
                _ => {
                    // 'u' or 'U': `url(` not inside an identifier.
                    if if at > 0 { css_ident(hay[at - 1]) } else { st.after_ident } {
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
                    let v = CssValue { url: true, phase: CssPhase::Spaces, pos: 4, value_start: 0, overlong: false };
                    match self.css_value(css, at, v, st, edits) {
                        Ok(next) => k = next,
                        Err(done) => return done,
                    }
                }
            }
        }
        end
    }

    /// Goes on with the `url(` or `@import` value `v` at `at` (overlong: at
    /// whose `pos` its parsing goes on): `Ok` of where the CSS goes on
    /// after it (its edit recorded), or `Err` of how far the stretch is
    /// done when it is unfinished (`st.value` keeps it if more may follow).
    fn css_value(
        &self,
        css: &Css,
        at: usize,
        mut v: CssValue,
        st: &mut CssState,
        edits: &mut Edits,
    ) -> Result<usize, usize> {
        let end = css.end;
        if !v.overlong {
            // Only its first `max_pending` bytes are looked at (and kept).
            let limit = end.min(at + self.max_pending);
            match css_value_parse(&css.hay[..limit], at, &mut v) {
                Some((value, next)) => {
                    if let Some((start, stop)) = value {
                        self.url_edit(css.base + start, &css.hay[start..stop], css.in_attribute, edits);
                    }
                    return Ok(next);
                }
                None if limit == at + self.max_pending => v.overlong = true,
                None if css.complete => return Err(end),
                None => {
                    st.value = Some(v);
                    return Err(at);
                }
            }
        }
        // Overlong: followed to its end, neither kept nor rewritten.
        match css_value_parse(&css.hay[..end], at, &mut v) {
            Some((_, next)) => Ok(next),
            None if css.complete => Err(end),
            None => {
                let done = at + v.pos;
                v.pos = 0;
                st.value = Some(v);
                Err(done)
            }
        }
    }
}

/// Parses a `url(` or `@import` value in `hay`, from `at + v.pos`: `Some`
/// of its bytes' range (none for `@import url(...)`, whose url() is found
/// next) and where the CSS goes on, or `None` if `hay` ends first (`v` says
/// where).
fn css_value_parse(hay: &[u8], at: usize, v: &mut CssValue) -> Option<(Option<(usize, usize)>, usize)> {
    let mut k = at + v.pos;
    let found = loop {
        match v.phase {
            CssPhase::Spaces => {
                k = skip(hay, k, SPACE, true);
                match hay.get(k) {
                    None => break None,
                    Some(&q @ (b'"' | b'\'')) => {
                        k += 1;
                        v.value_start = k - at;
                        v.phase = CssPhase::Quoted(q);
                    }
                    Some(_) if v.url => {
                        v.value_start = k - at;
                        v.phase = CssPhase::Unquoted;
                    }
                    Some(_) => break Some((None, k)),
                }
            }
            CssPhase::Quoted(q) => match css_string_end(hay, k, q) {
                Ok(e) => break Some((Some((at + v.value_start, e)), e + 1)),
                Err(resume) => {
                    k = resume;
                    break None;
                }
            },
            CssPhase::Unquoted => match hay[k..].iter().position(|&b| b == b')' || has(b, SPACE)) {
                Some(e) => break Some((Some((at + v.value_start, k + e)), k + e + 1)),
                None => {
                    k = hay.len();
                    break None;
                }
            },
        }
    };
    v.pos = k - at;
    found
}

/// The closing quote `q` of a CSS string whose text goes on at `from`
/// (escapes skipped; a newline ends a bad string there), or `Err` of where
/// to go on when `hay` ends first (a '\' at the very end: there).
fn css_string_end(hay: &[u8], from: usize, q: u8) -> Result<usize, usize> {
    let mut k = from;
    while let Some(p) = hay[k..].iter().position(|&b| b == q || b == b'\\' || b == b'\n') {
        let at = k + p;
        if hay[at] != b'\\' {
            return Ok(at);
        }
        if at + 1 == hay.len() {
            return Err(at);
        }
        k = at + 2;
    }
    Err(hay.len())
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
