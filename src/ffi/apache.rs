//! The thin safe layer over Apache and APR: pools that own Rust values,
//! C strings, logging, and the panic guard every entry point goes through.

use super::sys;
use crate::logid::{Level, Record};
use std::ffi::{CStr, CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Log ids: the one catalogue (`crate::logid`).
pub(crate) use crate::logid as msg;

/// Runs `f`, turning a panic into `fallback`: a Rust panic must never unwind
/// into Apache. The panic hook (see `install_panic_hook`) has logged it.
pub fn guard<R>(fallback: R, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// Logs panics through Apache's error log instead of stderr, without
/// touching thread-locals with destructors (which would pin the .so in the
/// httpd parent across restarts).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        // Written directly, not as an event: the hook must work even when
        // the panic is in the subscriber.
        log_server(
            sys::APLOG_CRIT,
            &format!(
                "{}: internal error (Rust panic{location}): {payload}; the request or directive gets an error, the process continues. Please report this.",
                msg::PANIC
            ),
        );
    }));
}

fn module_index() -> i32 {
    // SAFETY: Apache sets module_index once, while loading the module,
    // before any hook or directive of ours can run; reading an int is atomic
    // enough for a value that no longer changes.
    unsafe { super::module::procd_module.module_index }
}

/// Writes one line to the main server's error log.
fn log_server(level: i32, text: &str) {
    let text = c_string(text);
    // SAFETY: "%s" with one NUL-terminated string matches the format; a
    // NULL server means the main server, as ap_log_error documents.
    unsafe {
        sys::ap_log_error_(
            c"mod_procd".as_ptr(),
            line!() as i32,
            module_index(),
            level,
            0,
            std::ptr::null_mut(),
            c"%s".as_ptr(),
            text.as_ptr(),
        );
    }
}

/// Apache's level for a runtime (non-startup) line.
fn apache_level(level: Level) -> i32 {
    match level {
        Level::Crit => sys::APLOG_CRIT,
        Level::Error => sys::APLOG_ERR,
        Level::Warn => sys::APLOG_WARNING,
        Level::Notice => sys::APLOG_NOTICE,
        Level::Info => sys::APLOG_INFO,
    }
}

/// What the events of the current thread are about, for the subscriber:
/// set by the glue around the code that logs for a request
/// (`about_request`); other events go to the main server's log. A `Cell` of plain pointers, so no destructor is
/// registered for this thread-local (one would pin the .so in the httpd
/// parent across restarts).
#[derive(Clone, Copy)]
enum About {
    MainServer,
    Request(*mut sys::request_rec),
}

thread_local! {
    static ABOUT: std::cell::Cell<About> = const { std::cell::Cell::new(About::MainServer) };
}

fn about<R>(what: About, f: impl FnOnce() -> R) -> R {
    struct Restore(About);
    impl Drop for Restore {
        fn drop(&mut self) {
            ABOUT.with(|a| a.set(self.0));
        }
    }
    let _restore = Restore(ABOUT.with(|a| a.replace(what)));
    f()
}

/// Runs `f` with its events logged about request `r` (`ap_log_rerror`:
/// with the client and the request's server).
pub fn about_request<R>(r: *mut sys::request_rec, f: impl FnOnce() -> R) -> R {
    about(About::Request(r), f)
}

/// Writes one event to Apache's error log, about what the thread is
/// about (see `About`). Configuration-time events (`startup`) are printed
/// plainly, also by `apachectl configtest`.
fn write_event(rec: Record) {
    let text = rec.text();
    let level = if rec.startup {
        sys::APLOG_STARTUP
            | if matches!(rec.level, Level::Crit | Level::Error) { sys::APLOG_EMERG } else { sys::APLOG_WARNING }
    } else {
        apache_level(rec.level)
    };
    match ABOUT.with(std::cell::Cell::get) {
        About::Request(r) if !rec.startup => log_request(r, level, &text),
        _ => log_server(level, &text),
    }
}

/// Makes Apache's error log the subscriber of every `pd_log!` event in this
/// process (httpd parent and children; the manager sets its own after the
/// fork). Only the global dispatcher is used: `tracing` then reads no
/// thread-local on the event path.
pub fn install_log_subscriber() {
    // An error means it is installed already (the .so stayed loaded).
    let _ = tracing::subscriber::set_global_default(crate::logid::Subscriber { write: write_event });
}

/// Text as a C string (a NUL inside is shown as `\0`).
fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "\\0")).unwrap_or_default()
}

/// Copies a C string from Apache (NULL → empty).
///
/// # Safety
/// `p` is NULL or a NUL-terminated string alive for the call.
pub unsafe fn string_from(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: per this function's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The bytes of a C string (NULL → empty).
///
/// # Safety
/// `p` is NULL or a NUL-terminated string alive for the call.
pub unsafe fn bytes_from(p: *const c_char) -> Vec<u8> {
    if p.is_null() {
        return Vec::new();
    }
    // SAFETY: per this function's contract.
    unsafe { CStr::from_ptr(p) }.to_bytes().to_vec()
}

/// A latin-1 string (WSGI's header strings) back to its bytes; characters
/// above U+00FF become '?'.
pub fn latin1_bytes(text: &str) -> std::borrow::Cow<'_, [u8]> {
    if text.is_ascii() {
        // Most header strings: the same bytes, with no copy.
        return std::borrow::Cow::Borrowed(text.as_bytes());
    }
    text.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')).collect()
}

/// A pool-owned copy of raw bytes as a C string (a NUL inside is cut there).
///
/// # Safety
/// `pool` is a live APR pool.
pub unsafe fn pool_bytes(pool: *mut sys::apr_pool_t, bytes: &[u8]) -> *const c_char {
    let end = memchr::memchr(0, bytes).unwrap_or(bytes.len());
    // SAFETY: apr_pstrmemdup copies `end` bytes and adds the NUL.
    unsafe { sys::apr_pstrmemdup(pool, bytes.as_ptr().cast(), end) }
}

/// A pool-owned copy of `text`, for returning error strings to Apache.
///
/// # Safety
/// `pool` is a live APR pool.
pub unsafe fn pool_string(pool: *mut sys::apr_pool_t, text: &str) -> *const c_char {
    if memchr::memchr(0, text.as_bytes()).is_none() {
        // SAFETY: apr_pstrmemdup copies the bytes and adds the NUL; there
        // is none inside (the usual case: no temporary CString).
        return unsafe { sys::apr_pstrmemdup(pool, text.as_ptr().cast(), text.len()) };
    }
    let c = c_string(text);
    // SAFETY: apr_pstrdup copies the NUL-terminated string into the pool.
    unsafe { sys::apr_pstrdup(pool, c.as_ptr()) }
}

unsafe extern "C" fn drop_boxed<T>(data: *mut c_void) -> sys::apr_status_t {
    guard((), || {
        // SAFETY: `data` came from Box::into_raw in `pool_box::<T>` and this
        // cleanup is its only owner: it runs once, when the pool is cleared.
        drop(unsafe { Box::from_raw(data.cast::<T>()) });
    });
    0
}

/// Moves `value` into memory owned by `pool`: it is dropped when the pool is
/// cleared or destroyed (config pools at restart, request pools at the end
/// of the request). Only for pools that die before the module is unloaded:
/// the configuration pool and those below it, never the process pool.
///
/// # Safety
/// `pool` is a live APR pool of that kind.
pub unsafe fn pool_box<T>(pool: *mut sys::apr_pool_t, value: T) -> *mut T {
    let raw = Box::into_raw(Box::new(value));
    // SAFETY: registering a cleanup on a live pool; drop_boxed::<T> matches
    // the pointer's type.
    unsafe {
        sys::apr_pool_cleanup_register(
            pool,
            raw as *const c_void,
            Some(drop_boxed::<T>),
            Some(sys::apr_pool_cleanup_null),
        );
    }
    raw
}

/// Appends mod_proxy's "backend broke" ending to `bb`: an error bucket
/// (a 502 if the headers are not out yet, else the response is cut), then
/// EOS; the connection is not kept alive.
///
/// # Safety
/// `r` is the live request and `bb` a brigade on its connection's allocator.
pub unsafe fn append_bad_gateway(r: *mut sys::request_rec, bb: *mut sys::apr_bucket_brigade) {
    // SAFETY: per the contract.
    unsafe {
        let c = (*r).connection;
        let e = sys::ap_bucket_error_create(sys::HTTP_BAD_GATEWAY, std::ptr::null(), (*r).pool, (*c).bucket_alloc);
        sys::procd_brigade_insert_tail(bb, e);
        sys::procd_brigade_insert_tail(bb, sys::apr_bucket_eos_create((*c).bucket_alloc));
        (*c).keepalive = sys::ap_conn_keepalive_e_AP_CONN_CLOSE;
    }
}

/// APR's text for a status code (`apr_strerror`).
pub fn apr_error(status: sys::apr_status_t) -> String {
    let mut buf = [0 as c_char; 256];
    // SAFETY: apr_strerror writes at most `buf.len()` bytes, NUL-terminated,
    // and returns `buf`.
    unsafe {
        sys::apr_strerror(status, buf.as_mut_ptr(), buf.len());
        string_from(buf.as_ptr())
    }
}

/// Writes one line to the error log about request `r` (with client and URL).
fn log_request(r: *mut sys::request_rec, level: i32, text: &str) {
    let text = c_string(text);
    // SAFETY: `r` is the live request of the calling hook (set by
    // `about_request` for its duration); "%s" matches.
    unsafe {
        sys::ap_log_rerror_(
            c"mod_procd".as_ptr(),
            line!() as i32,
            module_index(),
            level,
            0,
            r,
            c"%s".as_ptr(),
            text.as_ptr(),
        );
    }
}
