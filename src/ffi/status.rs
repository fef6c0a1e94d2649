//! `SetHandler procd-status`: the live state of every group, as HTML,
//! `?json` or `?prometheus` (rendered by `crate::status`). It reads the
//! manager's snapshot file (bounded) and the shared counters (atomics): no
//! lock any request thread waits on, no call that blocks, no channel to the
//! manager. Access control is Apache's (`Require` in the `<Location>`).

use super::apache::{about_request, guard, pool_bytes, string_from};
use super::module::{dir_config_of, server_config_of};
use super::sys;
use crate::handler::Outcome;
use crate::logid::{self, pd_log};
use crate::status::{Format, Report, STATE_FILE, STATE_FILE_MAX, cause_of, format_of, parse_state};
use std::ffi::c_int;
use std::io::Read;
use std::path::{Path, PathBuf};

const HANDLER: &str = "procd-status";

/// Counts a finished request to a group (request.rs calls this once).
pub(super) fn count(counted: &mut super::shm::Request, apache_status: c_int, outcome: &Outcome) {
    let sent = u16::try_from(apache_status).unwrap_or(200);
    let (status, cause) = match outcome {
        Outcome::Done | Outcome::LocalRedirect { .. } => (sent, None),
        Outcome::Failed { status, log, .. } => (*status, Some(cause_of(*status, log, false))),
        Outcome::Cut { log } => (sent, Some(cause_of(sent, log, true))),
    };
    counted.finish(status, cause);
}

/// The manager's snapshot, read with a size cap.
fn read_state(runtime_dir: &Path) -> Result<crate::status::ManagerState, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = runtime_dir.join(STATE_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "the manager has not written its state ({}) yet: it is starting, or not running (see the error log)",
                path.display()
            ),
            _ => format!("cannot read the manager's state {}: {e}", path.display()),
        })?;
    let mut text = Vec::new();
    file.take(STATE_FILE_MAX + 1).read_to_end(&mut text).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > STATE_FILE_MAX {
        return Err(format!("the manager's state {} is larger than {STATE_FILE_MAX} bytes", path.display()));
    }
    parse_state(&text)
}

/// What the manager and the shared counters say now, for the groups in
/// `visible` (all when None).
fn report_for(r: *mut sys::request_rec, visible: Option<&[String]>) -> Report {
    // SAFETY: the live request's server configuration.
    let config = unsafe { server_config_of((*r).server) };
    let runtime_dir = config.runtime_dir.clone().unwrap_or_else(|| {
        // SAFETY: the request pool is live.
        PathBuf::from(unsafe { string_from(sys::ap_runtime_dir_relative((*r).pool, c"procd".as_ptr())) })
    });
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut report = Report::build(now_ms, read_state(&runtime_dir), super::shm::snapshot(), visible);
    report.version = env!("CARGO_PKG_VERSION").to_string();
    report.build = crate::config::plan::build_id();
    report
}

/// mod_status.h's AP_STATUS_SHORT: `server-status?auto`, machine-readable.
const AP_STATUS_SHORT: c_int = 0x1;

/// mod_status's `status_hook`: a line per group on `server-status`.
pub unsafe extern "C" fn mod_status_hook(r: *mut sys::request_rec, flags: c_int) -> c_int {
    guard(sys::OK, || {
        about_request(r, || {
            let report = report_for(r, None);
            if report.groups.is_empty() {
                return sys::OK;
            }
            let text = crate::status::render::mod_status_section(&report, flags & AP_STATUS_SHORT != 0);
            // SAFETY: mod_status calls this while writing its page to the
            // live request.
            unsafe { sys::ap_rwrite(text.as_ptr().cast(), text.len() as c_int, r) };
            sys::OK
        })
    })
}

pub unsafe extern "C" fn handler(r: *mut sys::request_rec) -> c_int {
    guard(sys::HTTP_INTERNAL_SERVER_ERROR, || about_request(r, || handle(r)))
}

fn handle(r: *mut sys::request_rec) -> c_int {
    // SAFETY: the live request's fields, NUL-terminated strings or NULL.
    let (handler, method, args) =
        unsafe { (string_from((*r).handler), string_from((*r).method), string_from((*r).args)) };
    if handler != HANDLER {
        return sys::DECLINED;
    }
    if method != "GET" && method != "HEAD" {
        return sys::HTTP_METHOD_NOT_ALLOWED;
    }
    let format = match format_of(&args) {
        Ok(f) => f,
        Err(e) => {
            pd_log!(logid::STATUS_FAILED, "procd-status: {e}");
            return sys::HTTP_BAD_REQUEST;
        }
    };
    // SAFETY: the live request and its server's configuration.
    let (dir, config) = unsafe { (dir_config_of(r), server_config_of((*r).server)) };
    let visible: Option<Vec<String>> =
        (dir.status_vhost_only == Some(true)).then(|| config.visible_groups().map(|g| g.name.clone()).collect());
    let report = report_for(r, visible.as_deref());
    let (body, content_type) = match format {
        Format::Html { refresh } => (crate::status::render::html(&report, refresh), "text/html; charset=utf-8"),
        Format::Json => (crate::status::render::json(&report), "application/json"),
        Format::Prometheus => (crate::status::render::prometheus(&report), "text/plain; version=0.0.4; charset=utf-8"),
    };
    // SAFETY: pool copies set on the live request before any output, then
    // the body through Apache's output filters.
    unsafe {
        let pool = (*r).pool;
        sys::ap_set_content_type(r, pool_bytes(pool, content_type.as_bytes()));
        sys::apr_table_setn((*r).headers_out, c"Cache-Control".as_ptr(), c"no-store".as_ptr());
        if (*r).header_only == 0 {
            let bytes = body.as_bytes();
            if sys::ap_rwrite(bytes.as_ptr().cast(), bytes.len() as c_int, r) < 0 {
                return sys::OK; // the client left
            }
        }
    }
    sys::OK
}
