//! The LINKREWRITE output filter: brigades in, rewritten brigades out.
//! Inserted automatically where `LinkRewrite` maps are in scope (any
//! handler: mod_proxy, groups, static files, CGI), and usable by hand with
//! `SetOutputFilter LINKREWRITE` or `AddOutputFilterByType`.

use super::apache::{
    about_request, append_bad_gateway, apr_error, bytes_from, guard, latin1_bytes, pool_box, pool_bytes,
};
use super::sys;
use crate::config::scope::{DirConfig, LinkMap};
use crate::logid::{self, pd_log};
use crate::rewrite::{Body, BodyEncoding, Maps, Output, StreamRewriter};
use std::ffi::{CStr, c_char};
use std::ptr::null_mut;

pub const FILTER_NAME: &CStr = c"LINKREWRITE";
/// Request note set by the instance of the filter that rewrites.
const NOTE_ACTIVE: &CStr = c"procd-linkrewrite";

/// Output passed down the chain once this much has been rewritten in one
/// call: a brigade holding a whole large file (a static page arrives as one
/// FILE bucket) is then never turned into memory all at once.
const PASS_ON_BYTES: usize = 256 << 10;

/// How much of a compressed body is decoded at a time.
const COMPRESSED_SLICE: usize = 1 << 10;

/// Per-response state, owned by the request pool.
struct State {
    rewriter: Option<StreamRewriter>,
    /// Holds the rest of a brigade while its head is passed on.
    rest: *mut sys::apr_bucket_brigade,
    /// The body could not be decoded: the client got 502, or a cut response.
    failed: bool,
    /// Something was passed down the chain, so the headers are out.
    /// (`r->sent_bodyct` cannot tell: mod_proxy sets it before the body.)
    passed: bool,
}

fn dir_config<'a>(r: *mut sys::request_rec) -> &'a DirConfig {
    // SAFETY: filters and insert_filter get a live request.
    unsafe { super::module::dir_config_of(r) }
}

/// insert_filter hook: add the filter where maps apply.
pub unsafe extern "C" fn insert_filter(r: *mut sys::request_rec) {
    guard((), || {
        if !dir_config(r).link_maps.is_empty() {
            // SAFETY: adding a registered filter to the live request.
            unsafe { sys::ap_add_output_filter(FILTER_NAME.as_ptr(), null_mut(), r, (*r).connection) };
        }
    })
}

/// Rewrites URL-carrying headers of one table in place.
fn rewrite_headers(r: *mut sys::request_rec, table: *mut sys::apr_table_t, maps: &Maps) {
    // SAFETY: apr_table_elts is a cast to the array header; entries are
    // `nelts` apr_table_entry_t; replacing `val` with a pool string keeps
    // the table valid (only keys are indexed).
    unsafe {
        let arr = table as *const sys::apr_array_header_t;
        let entries = (*arr).elts as *mut sys::apr_table_entry_t;
        for i in 0..(*arr).nelts as usize {
            let e = &mut *entries.add(i);
            if e.key.is_null() || e.val.is_null() {
                continue;
            }
            let name = String::from_utf8_lossy(&bytes_from(e.key)).into_owned();
            let value: String = bytes_from(e.val).iter().map(|b| char::from(*b)).collect();
            if let Some(new) = maps.rewrite_header(&name, &value) {
                e.val = pool_bytes((*r).pool, &latin1_bytes(&new)) as *mut c_char;
            }
        }
    }
}

fn header(r: *mut sys::request_rec, name: &CStr) -> Option<String> {
    // SAFETY: a lookup in the live request's output headers.
    let v = unsafe { sys::apr_table_get((*r).headers_out, name.as_ptr()) };
    // SAFETY: a C string or NULL.
    (!v.is_null()).then(|| String::from_utf8_lossy(&unsafe { bytes_from(v) }).into_owned())
}

/// A subrequest (an SSI include) whose output flows on through the main
/// request's own LINKREWRITE, with the same maps: rewriting it here as well
/// would apply them twice (a TO that starts with its FROM would show).
fn main_rewrites_too(r: *mut sys::request_rec, maps: &[LinkMap]) -> bool {
    // SAFETY: a live request; `main` is NULL or its live main request,
    // whose filter list is a NULL-terminated chain of live filters.
    unsafe {
        let main = (*r).main;
        if main.is_null() || dir_config(main).link_maps != maps {
            return false;
        }
        let mut f = (*main).output_filters;
        while !f.is_null() {
            // Apache keeps filter names in lower case.
            if CStr::from_ptr((*(*f).frec).name).to_bytes() == b"linkrewrite" {
                return true;
            }
            f = (*f).next;
        }
        false
    }
}

/// First call for a response: headers, then decide whether to rewrite the body.
fn start(f: *mut sys::ap_filter_t) -> Option<State> {
    // SAFETY: the live filter and its request.
    let r = unsafe { (*f).r };
    let config = dir_config(r);
    let maps = Maps::new(&config.link_maps);
    if maps.is_empty() {
        return None;
    }
    if main_rewrites_too(r, &config.link_maps) {
        return None;
    }
    // Added both automatically and by hand (SetOutputFilter,
    // AddOutputFilterByType): the first instance does the work.
    // SAFETY: the live request's notes; static key and value.
    unsafe {
        if !sys::apr_table_get((*r).notes, NOTE_ACTIVE.as_ptr()).is_null() {
            return None;
        }
        sys::apr_table_setn((*r).notes, NOTE_ACTIVE.as_ptr(), c"1".as_ptr());
    }
    // SAFETY: the live request's header tables.
    unsafe {
        rewrite_headers(r, (*r).headers_out, &maps);
        rewrite_headers(r, (*r).err_headers_out, &maps);
    }
    // SAFETY: a C string or NULL.
    let content_type = unsafe { String::from_utf8_lossy(&bytes_from((*r).content_type)).to_ascii_lowercase() };
    let mime = content_type.split(';').next().unwrap_or("").trim().to_string();
    let body = match mime.as_str() {
        "text/html" | "application/xhtml+xml" => Body::Html { css: config.rewrites_css() },
        "text/css" if config.rewrites_css() => Body::Css,
        _ => return None,
    };
    let charset = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("charset=").map(|c| c.trim_matches('"').to_string()));
    let encoding = match header(r, c"Content-Encoding").map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("identity") => BodyEncoding::Identity,
        Some("gzip") | Some("x-gzip") => BodyEncoding::Gzip,
        Some("deflate") => BodyEncoding::Deflate,
        Some(other) => {
            pd_log!(
                logid::UNDECODABLE,
                "LinkRewrite cannot decode Content-Encoding {other:?}: the page is passed on unrewritten (let the backend send gzip, deflate or no encoding)"
            );
            return None;
        }
    };
    let rewriter = match StreamRewriter::new(maps, body, charset.as_deref(), encoding) {
        Ok(rw) => rw,
        Err(e) => {
            pd_log!(logid::CHARSET, "LinkRewrite: {e}: the page is passed on unrewritten");
            return None;
        }
    };
    // SAFETY: unsetting headers of the live request; the body changes.
    unsafe {
        sys::apr_table_unset((*r).headers_out, c"Content-Length".as_ptr());
        if encoding != BodyEncoding::Identity {
            sys::apr_table_unset((*r).headers_out, c"Content-Encoding".as_ptr());
        }
        // HEAD: the headers are those of the GET; the body is not sent, so
        // it is not rewritten either.
        if (*r).header_only != 0 {
            return None;
        }
    }
    // SAFETY: a brigade in the live request's pool, on its connection's allocator.
    let rest = unsafe { sys::apr_brigade_create((*r).pool, (*(*r).connection).bucket_alloc) };
    Some(State { rewriter: Some(rewriter), rest, failed: false, passed: false })
}

/// Puts a heap bucket holding `len` bytes before bucket `at`, letting
/// `fill` write them straight into APR's memory (the one copy of output).
///
/// # Safety
/// `at` is a live bucket of a brigade using `alloc`; called from the filter only.
unsafe fn insert_bytes_before(
    at: *mut sys::apr_bucket,
    alloc: *mut sys::apr_bucket_alloc_t,
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) {
    if len == 0 {
        return;
    }
    // SAFETY: per the contract; apr_bucket_alloc returns `len` writable
    // bytes (it aborts through APR's abort function when out of memory),
    // which the heap bucket owns and frees with apr_bucket_free.
    unsafe {
        let buf = sys::apr_bucket_alloc(len, alloc).cast::<u8>();
        fill(std::slice::from_raw_parts_mut(buf, len));
        let b = sys::apr_bucket_heap_create(buf.cast(), len, Some(sys::apr_bucket_free), alloc);
        sys::procd_bucket_insert_before(at, b);
    }
}

/// Replaces data bucket `b`, whose bytes were fed to the rewriter, with the
/// rewriter's output: the bucket itself (or its head) when nothing changed,
/// else one new heap bucket.
///
/// # Safety
/// `b` is a live data bucket of a brigade using `alloc`, already read; `out`
/// may point into its data, so `b` goes only after the copy.
unsafe fn replace_bucket(b: *mut sys::apr_bucket, alloc: *mut sys::apr_bucket_alloc_t, out: &Output, len: usize) {
    // SAFETY: per the contract.
    unsafe {
        match out.unchanged_prefix() {
            Some(n) if n == len => return,
            Some(0) => {}
            // The head stays as it is; the tail (kept by the rewriter) goes.
            Some(n) if sys::procd_bucket_split(b, n) == sys::APR_SUCCESS as sys::apr_status_t => {
                sys::procd_bucket_delete(sys::procd_bucket_next(b));
                return;
            }
            _ => insert_bytes_before(b, alloc, out.len(), |dst| out.copy_to(dst)),
        }
        sys::procd_bucket_delete(b);
    }
}

/// A body that cannot be decoded (corrupt gzip or deflate): the client gets
/// 502 if the headers are not out yet, else the response is cut
/// (mod_proxy's idiom: an error bucket, then EOS); the rest of the body is
/// refused, which stops mod_proxy reading it.
///
/// # Safety
/// Called from the filter with its live filter, brigade and request.
unsafe fn fail(
    f: *mut sys::ap_filter_t,
    bb: *mut sys::apr_bucket_brigade,
    state: &mut State,
    e: &str,
) -> sys::apr_status_t {
    // SAFETY: per the contract.
    unsafe {
        let r = (*f).r;
        let what =
            if state.passed { "the response is cut (its start was sent)" } else { "the client gets 502 Bad Gateway" };
        pd_log!(
            logid::CORRUPT_BODY,
            "LinkRewrite: {e}: {what}; the body is not the valid, complete stream its Content-Encoding says: fix the backend, or leave this URL out of LinkRewrite's scope"
        );
        state.rewriter = None;
        state.failed = true;
        sys::apr_brigade_cleanup(bb.cast());
        append_bad_gateway(r, bb);
        sys::ap_pass_brigade((*f).next, bb);
        sys::APR_EGENERAL
    }
}

#[derive(PartialEq)]
enum Flush {
    Yes,
    No,
}

/// Passes the buckets of `bb` before `at` down the chain (with a FLUSH
/// after them if asked), noting in `passed` that the headers are out; `bb`
/// then holds `at` and what follows it.
///
/// # Safety
/// Called from the filter with its live filter and brigade; `at` is a bucket of `bb`.
unsafe fn pass_before(
    f: *mut sys::ap_filter_t,
    bb: *mut sys::apr_bucket_brigade,
    at: *mut sys::apr_bucket,
    (rest, passed): (*mut sys::apr_bucket_brigade, &mut bool),
    flush: Flush,
) -> sys::apr_status_t {
    // SAFETY: per the contract; `rest` (State::rest) is an empty brigade of
    // the same request, and is empty again when this returns.
    unsafe {
        sys::apr_brigade_split_ex(bb, at, rest);
        if flush == Flush::Yes {
            sys::procd_brigade_insert_tail(bb, sys::apr_bucket_flush_create((*(*f).c).bucket_alloc));
        }
        *passed = true;
        let rv = sys::ap_pass_brigade((*f).next, bb);
        sys::apr_brigade_cleanup(bb.cast());
        sys::procd_brigade_concat(bb, rest);
        rv
    }
}

/// The filter function: rewrites the data buckets of `bb` in place and
/// passes it on.
pub unsafe extern "C" fn link_filter(f: *mut sys::ap_filter_t, bb: *mut sys::apr_bucket_brigade) -> sys::apr_status_t {
    guard(sys::APR_EGENERAL, || {
        // SAFETY: Apache calls output filters with a live filter.
        let r = unsafe { (*f).r };
        about_request(r, || filter(f, bb))
    })
}

/// The filter's work; its events are logged about the request.
fn filter(f: *mut sys::ap_filter_t, bb: *mut sys::apr_bucket_brigade) -> sys::apr_status_t {
    {
        // SAFETY: Apache calls output filters with a live filter and brigade.
        let (r, c) = unsafe { ((*f).r, (*f).c) };
        // SAFETY: reading our own context pointer.
        if unsafe { (*f).ctx }.is_null() {
            match start(f) {
                // SAFETY: the request pool outlives the response.
                Some(state) => unsafe { (*f).ctx = pool_box((*r).pool, state).cast() },
                None => {
                    // SAFETY: removing ourselves, then passing the data on.
                    unsafe {
                        sys::ap_remove_output_filter(f);
                        return sys::ap_pass_brigade((*f).next, bb);
                    }
                }
            }
        }
        // SAFETY: set above; owned by the request pool.
        let state = unsafe { &mut *(*f).ctx.cast::<State>() };
        if state.failed {
            // SAFETY: dropping what comes after the error bucket and EOS.
            unsafe { sys::apr_brigade_cleanup(bb.cast()) };
            return sys::APR_EGENERAL;
        }
        // SAFETY: the connection's bucket allocator.
        let alloc = unsafe { (*c).bucket_alloc };
        // SAFETY: walking the live brigade with APR's macros (shim); a
        // bucket is deleted only after `next` was taken and its data used.
        unsafe {
            let mut unpassed = 0;
            let mut b = sys::procd_brigade_first(bb);
            while b != sys::procd_brigade_sentinel(bb) {
                let mut next = sys::procd_bucket_next(b);
                if sys::procd_bucket_is_eos(b) != 0 {
                    if let Some(rw) = state.rewriter.take() {
                        match rw.end() {
                            Ok(rest) => insert_bytes_before(b, alloc, rest.len(), |dst| dst.copy_from_slice(&rest)),
                            Err(e) => return fail(f, bb, state, &e),
                        }
                    }
                    break;
                }
                // FLUSH and other metadata stay where they are, in order.
                if sys::procd_bucket_is_metadata(b) == 0 {
                    if let Some(rw) = state.rewriter.as_mut() {
                        let mut data: *const c_char = std::ptr::null();
                        let mut len: sys::apr_size_t = 0;
                        let mut rv =
                            sys::procd_bucket_read(b, &mut data, &mut len, sys::apr_read_type_e_APR_NONBLOCK_READ);
                        if rv == libc::EAGAIN {
                            // A pipe (CGI) or socket with nothing yet: what is
                            // done goes to the client now, then wait for more.
                            let passed = pass_before(f, bb, b, (state.rest, &mut state.passed), Flush::Yes);
                            if passed != sys::APR_SUCCESS as sys::apr_status_t {
                                return passed;
                            }
                            unpassed = 0;
                            rv = sys::procd_bucket_read(b, &mut data, &mut len, sys::apr_read_type_e_APR_BLOCK_READ);
                        }
                        if rv != 0 {
                            let why = apr_error(rv);
                            pd_log!(
                                logid::UNREADABLE_BODY,
                                "LinkRewrite: reading the response body failed ({why}); the response is cut (the line of the module that produced it, if any, says more)"
                            );
                            return rv;
                        }
                        // Reading a FILE bucket may split it (an 8000-byte
                        // heap bucket, or a 4 MiB mmap, then the rest of
                        // the file in a new bucket after it): go on from there.
                        next = sys::procd_bucket_next(b);
                        // A 4 MiB mmap piece is rewritten in slices, so that
                        // its rewritten copy is never more than one slice;
                        // compressed input in small ones, as 1 KiB of
                        // deflate may inflate to 1 MiB.
                        let most = if rw.decodes() { COMPRESSED_SLICE } else { PASS_ON_BYTES };
                        if len > most && sys::procd_bucket_split(b, most) == sys::APR_SUCCESS as sys::apr_status_t {
                            next = sys::procd_bucket_next(b);
                            len = most;
                        }
                        let slice = if len == 0 { &[][..] } else { std::slice::from_raw_parts(data.cast::<u8>(), len) };
                        match rw.write(slice) {
                            Ok(out) => {
                                // Decoded gzip may be far larger than its input.
                                unpassed += len.max(out.len());
                                replace_bucket(b, alloc, &out, len);
                            }
                            Err(e) => return fail(f, bb, state, &e),
                        }
                    }
                }
                if unpassed >= PASS_ON_BYTES && next != sys::procd_brigade_sentinel(bb) {
                    // Pass what is done, keep walking the rest.
                    let rv = pass_before(f, bb, next, (state.rest, &mut state.passed), Flush::No);
                    if rv != sys::APR_SUCCESS as sys::apr_status_t {
                        return rv;
                    }
                    unpassed = 0;
                }
                b = next;
            }
            state.passed = true;
            sys::ap_pass_brigade((*f).next, bb)
        }
    }
}
