//! The thin safe layer over Apache and APR: pools that own Rust values,
//! C strings, logging, and the panic guard every entry point goes through.

use super::sys;
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
        log_server(
            None,
            Level::Crit,
            &format!(
                "{}: internal error (Rust panic{location}): {payload}; the request or directive gets an error, the process continues. Please report this.",
                msg::PANIC
            ),
        );
    }));
}

/// Apache log levels mod_procd uses.
#[derive(Clone, Copy)]
pub enum Level {
    /// Startup errors: printed plainly, also by `apachectl configtest`.
    StartupError,
    /// Startup warnings: printed plainly, also by `apachectl configtest`.
    StartupWarning,
    Crit,
    Error,
    Notice,
}

/// The server a log line is about (`None`: the main server).
#[derive(Clone, Copy)]
pub struct Server(*mut sys::server_rec);

impl Server {
    /// # Safety
    /// `s` must be a server_rec Apache handed to a hook, alive for the call.
    pub unsafe fn from_raw(s: *mut sys::server_rec) -> Server {
        Server(s)
    }

    pub fn as_ptr(self) -> *mut sys::server_rec {
        self.0
    }
}

fn module_index() -> i32 {
    // SAFETY: Apache sets module_index once, while loading the module,
    // before any hook or directive of ours can run; reading an int is atomic
    // enough for a value that no longer changes.
    unsafe { super::module::procd_module.module_index }
}

/// Writes one line to the error log of `server`.
pub fn log_server(server: Option<Server>, level: Level, text: &str) {
    let lvl = match level {
        Level::StartupError => sys::APLOG_STARTUP | sys::APLOG_EMERG,
        Level::StartupWarning => sys::APLOG_STARTUP | sys::APLOG_WARNING,
        other => apache_level(other),
    };
    let text = c_string(text);
    let s = server.map_or(std::ptr::null_mut(), Server::as_ptr);
    // SAFETY: "%s" with one NUL-terminated string matches the format; a
    // NULL server means the main server, as ap_log_error documents.
    unsafe {
        sys::ap_log_error_(
            c"mod_procd".as_ptr(),
            line!() as i32,
            module_index(),
            lvl,
            0,
            s,
            c"%s".as_ptr(),
            text.as_ptr(),
        );
    }
}

/// Apache's level for a runtime (non-startup) message.
fn apache_level(level: Level) -> i32 {
    match level {
        Level::StartupError | Level::Crit => sys::APLOG_CRIT,
        Level::StartupWarning => sys::APLOG_WARNING,
        Level::Error => sys::APLOG_ERR,
        Level::Notice => sys::APLOG_NOTICE,
    }
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
pub fn latin1_bytes(text: &str) -> Vec<u8> {
    text.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')).collect()
}

/// A pool-owned copy of raw bytes as a C string (a NUL inside is cut there).
///
/// # Safety
/// `pool` is a live APR pool.
pub unsafe fn pool_bytes(pool: *mut sys::apr_pool_t, bytes: &[u8]) -> *const c_char {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    // SAFETY: apr_pstrmemdup copies `end` bytes and adds the NUL.
    unsafe { sys::apr_pstrmemdup(pool, bytes.as_ptr().cast(), end) }
}

/// A pool-owned copy of `text`, for returning error strings to Apache.
///
/// # Safety
/// `pool` is a live APR pool.
pub unsafe fn pool_string(pool: *mut sys::apr_pool_t, text: &str) -> *const c_char {
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
pub fn log_request(r: *mut sys::request_rec, level: Level, text: &str) {
    let text = c_string(text);
    // SAFETY: `r` is the live request of the calling hook; "%s" matches.
    unsafe {
        sys::ap_log_rerror_(
            c"mod_procd".as_ptr(),
            line!() as i32,
            module_index(),
            apache_level(level),
            0,
            r,
            c"%s".as_ptr(),
            text.as_ptr(),
        );
    }
}
