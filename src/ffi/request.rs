//! Request hooks: `LanguageMount` (translate_name, map_to_storage),
//! `LanguageHandler` (fixups) and the handler that sends a request to its
//! group through `crate::handler`.

use super::apache::{
    about_request, append_bad_gateway, apr_error, bytes_from, guard, latin1_bytes, pool_bytes, pool_string, string_from,
};
use super::module::server_config_of;
use super::sys;
use crate::config::languages::Protocol;
use crate::config::scope::{DirConfig, KeepAliveThread};
use crate::handler::{BodyLength, Client, HttpRequest, Outcome, Target, TunnelRead, serve};
use crate::logid::{self, pd_log};
use std::ffi::{c_char, c_int};
use std::path::PathBuf;

const NOTE_GROUP: &std::ffi::CStr = c"procd-group";
const NOTE_KIND: &std::ffi::CStr = c"procd-kind";
/// Set on a request whose response went out whole on a kept-alive
/// connection: how many milliseconds its thread waits for the next request
/// (`ProcdKeepAliveThread DURATION`), in `log_transaction`.
const NOTE_WAIT_MS: &std::ffi::CStr = c"procd-keepalive-wait-ms";

/// log_transaction, after every logger: the wait of `ProcdKeepAliveThread
/// DURATION`. The request is logged (its time does not include the wait)
/// and its response is on the wire; if the connection's next request
/// arrives within the wait, http_core finds it at once and this thread
/// serves it, without the trip through the event MPM's listener (two
/// epoll_ctl calls and the hand-over to another thread); if not, the
/// connection goes back to the listener as it would have.
///
/// Apache runs this hook as the request's EOR bucket is destroyed, that is
/// from inside the connection's output filters once they have written the
/// response: the pipeline check below reads through the input filters from
/// there. Under TLS that re-enters mod_ssl's input side while its output
/// side is idle (nothing is left to write, checked first), which is the
/// same order http_core's own check takes after the request.
pub unsafe extern "C" fn log_transaction(r: *mut sys::request_rec) -> c_int {
    guard(sys::DECLINED, || {
        // The hook gets the first request of an internal redirect chain;
        // the handler that set the note ran in the last one.
        // SAFETY: r and its `next` chain are live for the hook's call.
        let last = unsafe {
            let mut last = r;
            while !(*last).next.is_null() {
                last = (*last).next;
            }
            last
        };
        let req = Request(last);
        let Some(ms) = req.note(NOTE_WAIT_MS).and_then(|v| v.parse::<c_int>().ok()) else {
            return sys::DECLINED;
        };
        // SAFETY: the live request's connection, its scoreboard handle and
        // its socket; the brigade is the request pool's, destroyed here;
        // poll writes only the pollfd's revents.
        unsafe {
            let c = req.r().connection;
            // Output still held (a slow reader), or the connection ending:
            // the MPM has work to do with it, the wait would delay that.
            if (*c).aborted != 0
                || (*c).data_in_output_filters != 0
                || (*c).keepalive != sys::ap_conn_keepalive_e_AP_CONN_KEEPALIVE
            {
                return sys::DECLINED;
            }
            let mut mpm_state: c_int = 0;
            sys::ap_mpm_query(sys::AP_MPMQ_MPM_STATE as c_int, &mut mpm_state);
            if mpm_state == sys::AP_MPMQ_STOPPING as c_int {
                return sys::DECLINED; // the child is ending: no next request here
            }
            let s = sys::ap_get_conn_socket(c);
            let mut fd: sys::apr_os_sock_t = -1;
            if s.is_null() || sys::apr_os_sock_get(&mut fd, s) != sys::APR_SUCCESS as sys::apr_status_t || fd < 0 {
                return sys::DECLINED;
            }
            // A pipelined request read already sits in Apache's input
            // filters, not in the socket: Apache's own look (the same
            // non-blocking call, next) finds it, and waiting would only
            // delay it.
            let bb = sys::apr_brigade_create(req.pool(), (*c).bucket_alloc);
            let pending = sys::ap_check_pipeline(c, bb, sys::DEFAULT_LIMIT_BLANK_LINES as std::ffi::c_uint);
            sys::apr_brigade_destroy(bb);
            if sys::procd_status_is_eagain(pending) == 0 {
                return sys::DECLINED; // a request is there, or the connection ended
            }
            // That read may have written: under TLS, OpenSSL can send a
            // record while reading, which re-enters mod_ssl's output side
            // and the core output filter while their pass with the EOR is
            // still on the stack (the core filter sets the record aside).
            // Or it found the connection gone. Either way the MPM has work
            // with the connection: no wait.
            if (*c).aborted != 0 || (*c).data_in_output_filters != 0 {
                return sys::DECLINED;
            }
            // Never longer than Apache itself waits for a kept-alive
            // connection's next request (http_core's choice of server: the
            // request's, or the connection's base server when the request's
            // sets no KeepAliveTimeout).
            let server =
                if (*req.r().server).keep_alive_timeout_set() != 0 { req.r().server } else { (*c).base_server };
            let keepalive_ms = (*server).keep_alive_timeout / 1000;
            let ms = ms.min(c_int::try_from(keepalive_ms).unwrap_or(c_int::MAX));
            // server-status shows the thread as it is: waiting on a
            // kept-alive connection ("K").
            sys::ap_update_child_status((*c).sbh.cast(), sys::SERVER_BUSY_KEEPALIVE as c_int, std::ptr::null_mut());
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // Readable, timed out or interrupted: Apache's check for the
            // next request follows in every case.
            libc::poll(&mut p, 1, ms);
        }
        sys::DECLINED
    })
}

/// Whether this child's MPM hands kept-alive connections to a listener
/// between requests (event); under worker and prefork the thread reads the
/// next request itself, so there is nothing to wait for.
fn mpm_is_async() -> bool {
    static ASYNC: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ASYNC.get_or_init(|| {
        let mut v: c_int = 0;
        // SAFETY: ap_mpm_query writes one int.
        let rv = unsafe { sys::ap_mpm_query(sys::AP_MPMQ_IS_ASYNC as c_int, &mut v) };
        rv == sys::APR_SUCCESS as sys::apr_status_t && v != 0
    })
}
/// The `LanguageMount` prefix a request came through.
const NOTE_PREFIX: &std::ffi::CStr = c"procd-prefix";
const HANDLER_MOUNT: &str = "procd-mount";
const HANDLER_SCRIPT: &str = "procd-script";

/// A request Apache is processing, valid for one hook call.
struct Request(*mut sys::request_rec);

impl Request {
    fn r(&self) -> &sys::request_rec {
        // SAFETY: Apache passes a live request_rec to every request hook and
        // it outlives the call; `Request` never escapes the call.
        unsafe { &*self.0 }
    }

    fn pool(&self) -> *mut sys::apr_pool_t {
        self.r().pool
    }

    fn note(&self, key: &std::ffi::CStr) -> Option<String> {
        // SAFETY: notes is the request's live table.
        let v = unsafe { sys::apr_table_get(self.r().notes, key.as_ptr()) };
        // SAFETY: a table value is a NUL-terminated string or NULL.
        (!v.is_null()).then(|| unsafe { string_from(v) })
    }

    /// Sets a table entry; `value` is latin-1 (WSGI's header strings).
    fn set_table(&self, table: *mut sys::apr_table_t, key: &str, value: &str, add: bool) {
        let pool = self.pool();
        // SAFETY: pool strings live as long as the request; the table is live.
        unsafe {
            let (k, v) = (pool_bytes(pool, &latin1_bytes(key)), pool_bytes(pool, &latin1_bytes(value)));
            if add {
                sys::apr_table_addn(table, k, v);
            } else {
                sys::apr_table_setn(table, k, v);
            }
        }
    }

    /// Sends the response's end (EOS: a chunked body's last chunk, a
    /// compressor's tail) and writes what the connection's filters hold to
    /// the socket without blocking, as the event MPM's write completion
    /// does: a slow reader's rest stays buffered for the MPM, which writes
    /// it out without holding this thread. True when the response went
    /// out whole and the connection is kept alive.
    fn finish_response(&self) -> bool {
        // SAFETY: the live request and its connection, used by this thread
        // only; ap_finalize_request_protocol sends EOS once (Apache's own
        // later call sees eos_sent); the last output filter (the core's)
        // takes a NULL brigade as "write what you hold, without blocking".
        unsafe {
            let c = self.r().connection;
            // Closing already (an ended tunnel among others): nothing to wait
            // for, and no end to send after a tunnel.
            if (*c).aborted != 0 || (*c).keepalive == sys::ap_conn_keepalive_e_AP_CONN_CLOSE {
                return false;
            }
            sys::ap_finalize_request_protocol(self.0);
            let mut last = (*c).output_filters;
            while !last.is_null() && !(*last).next.is_null() {
                last = (*last).next;
            }
            // Only the core's own filter (as the event MPM assumes) takes
            // NULL as "write without blocking"; a connection that ends in
            // another one is left as Apache has it.
            if last.is_null() || (*last).frec != sys::ap_core_output_filter_handle {
                // The name is read only for the one line a child logs.
                log_keepalive_thread_idle(|| {
                    if last.is_null() { "none".to_string() } else { string_from((*(*last).frec).name) }
                });
                return false;
            }
            let Some(write) = (*(*last).frec).filter_func.out_func else { return false };
            let rv = write(last, std::ptr::null_mut());
            // Kept alive is decided as the response head goes out (by EOS
            // at the latest). mod_ssl marks a write that must first read
            // (a renegotiation) with CONN_SENSE_WANT_READ, which the event
            // MPM counts as output still pending.
            let ssl_wants_read = !(*c).cs.is_null() && (*(*c).cs).sense == sys::conn_sense_e_CONN_SENSE_WANT_READ;
            rv == sys::APR_SUCCESS as sys::apr_status_t
                && (*c).aborted == 0
                && (*c).data_in_output_filters == 0
                && !ssl_wants_read
                && (*c).keepalive == sys::ap_conn_keepalive_e_AP_CONN_KEEPALIVE
        }
    }

    /// Whether this is a subrequest (an include, a lookup), whose output
    /// is part of its main request's response.
    fn is_subrequest(&self) -> bool {
        !self.r().main.is_null()
    }

    /// Whether the request has its client connection to itself (not a
    /// stream of an HTTP/2 connection).
    fn is_own_connection(&self) -> bool {
        // SAFETY: the live request's connection.
        unsafe { (*self.r().connection).master.is_null() }
    }

    /// `ProcdKeepAliveThread On`, after a response sent whole: from the
    /// connection's next request on, Apache serves it in one thread,
    /// reading each request as the worker MPM does, instead of handing the
    /// idle connection to the event MPM's listener between requests. The
    /// flag is the one filters that cannot be polled set ("clogging" input
    /// filters), and it stays set: this request's connection still goes
    /// back to the listener once (the event MPM checks the flag as it
    /// takes a connection), and the thread that takes the next request
    /// runs the connection's remaining requests in http_core's synchronous
    /// loop, waiting up to KeepAliveTimeout for each (a thread per idle
    /// kept-alive connection, the cost the README states).
    ///
    /// The event MPM, seeing that flag, goes back to reading without
    /// writing what its write-completion state still held, so the flag is
    /// set only when `finish_response` found nothing left to write; a slow
    /// reader's connection stays as Apache has it.
    fn finish_and_keep_thread(&self) {
        if self.finish_response() {
            // SAFETY: the live connection, used by this thread only.
            unsafe { (*self.r().connection).set_clogging_input_filters(1) };
        }
    }

    fn set_note(&self, key: &std::ffi::CStr, value: &str) {
        // SAFETY: notes is the request's live table; the value is copied.
        unsafe {
            let v = pool_string(self.pool(), value);
            sys::apr_table_setn(self.r().notes, key.as_ptr(), v);
        }
    }

    fn set_string_field(&self, value: &[u8], field: impl FnOnce(*mut sys::request_rec, *mut c_char)) {
        // SAFETY: a pool copy, alive as long as the request.
        let v = unsafe { pool_bytes(self.pool(), value) } as *mut c_char;
        field(self.0, v);
    }

    /// The decoded URL path, byte for byte.
    fn uri(&self) -> Vec<u8> {
        // SAFETY: r->uri is a NUL-terminated string or NULL.
        unsafe { bytes_from(self.r().uri) }
    }

    fn handler(&self) -> String {
        // SAFETY: as above.
        unsafe { string_from(self.r().handler) }
    }

    fn filename(&self) -> String {
        // SAFETY: as above.
        unsafe { string_from(self.r().filename) }
    }

    fn dir_config(&self) -> &DirConfig {
        // SAFETY: a live request of the calling hook.
        unsafe { super::module::dir_config_of(self.0) }
    }

    /// Calls `f` with the bytes of each (name, value) of an APR table.
    fn for_each_entry(&self, table: *mut sys::apr_table_t, mut f: impl FnMut(&std::ffi::CStr, &std::ffi::CStr)) {
        // SAFETY: apr_table_elts is a cast of the table to its array header;
        // entries are `nelts` apr_table_entry_t with string key/val (or NULL).
        unsafe {
            let arr = table as *const sys::apr_array_header_t;
            let entries = (*arr).elts as *const sys::apr_table_entry_t;
            for i in 0..(*arr).nelts as usize {
                let e = &*entries.add(i);
                if e.key.is_null() {
                    continue;
                }
                let value = if e.val.is_null() { c"" } else { std::ffi::CStr::from_ptr(e.val) };
                f(std::ffi::CStr::from_ptr(e.key), value);
            }
        }
    }

    fn table_get(&self, table: *mut sys::apr_table_t, key: &std::ffi::CStr) -> Option<Vec<u8>> {
        // SAFETY: a lookup in a live table; the value is a C string or NULL.
        unsafe {
            let v = sys::apr_table_get(table, key.as_ptr());
            (!v.is_null()).then(|| bytes_from(v))
        }
    }
}

/// `LanguageMount`: claims URLs under a mounted prefix.
pub unsafe extern "C" fn translate_name(r: *mut sys::request_rec) -> c_int {
    guard(sys::DECLINED, || {
        let req = Request(r);
        let uri = req.uri();
        // SAFETY: r->server is the live server of this request.
        let config = unsafe { server_config_of(req.r().server) };
        let Some(m) = config.mounts.iter().find(|m| {
            let prefix = m.prefix.as_bytes();
            prefix == b"/" || uri == prefix || uri.strip_prefix(prefix).is_some_and(|rest| rest.starts_with(b"/"))
        }) else {
            return sys::DECLINED;
        };
        let path_info = if m.prefix == "/" { uri.clone() } else { uri[m.prefix.len()..].to_vec() };
        req.set_note(NOTE_GROUP, &m.group);
        req.set_note(NOTE_KIND, HANDLER_MOUNT);
        req.set_note(NOTE_PREFIX, if m.prefix == "/" { "" } else { &m.prefix });
        // SAFETY: writing pool strings into this request's fields.
        req.set_string_field(format!("procd:{}", m.group).as_bytes(), |r, v| unsafe { (*r).filename = v });
        req.set_string_field(&path_info, |r, v| unsafe { (*r).path_info = v });
        sys::OK
    })
}

/// Mounted URLs are not files: skip the directory walk, as mod_proxy does
/// (`<Location>` still applies).
pub unsafe extern "C" fn map_to_storage(r: *mut sys::request_rec) -> c_int {
    guard(sys::DECLINED, || {
        let req = Request(r);
        if req.note(NOTE_KIND).as_deref() == Some(HANDLER_MOUNT) { sys::OK } else { sys::DECLINED }
    })
}

/// Sets our handler for mounts and for files whose extension a
/// `LanguageHandler` maps.
pub unsafe extern "C" fn fixups(r: *mut sys::request_rec) -> c_int {
    guard(sys::DECLINED, || {
        let req = Request(r);
        if req.note(NOTE_KIND).as_deref() == Some(HANDLER_MOUNT) {
            // SAFETY: a pool copy into this request's handler field.
            req.set_string_field(HANDLER_MOUNT.as_bytes(), |r, v| unsafe { (*r).handler = v });
            return sys::DECLINED;
        }
        if req.r().finfo.filetype == sys::apr_filetype_e_APR_DIR {
            return sys::DECLINED;
        }
        let file = req.filename();
        let name = file.rsplit('/').next().unwrap_or("");
        if let Some(group) = req.dir_config().group_for_file(name).map(str::to_string) {
            req.set_note(NOTE_GROUP, &group);
            req.set_note(NOTE_KIND, HANDLER_SCRIPT);
            // SAFETY: a pool copy into this request's handler field.
            req.set_string_field(HANDLER_SCRIPT.as_bytes(), |r, v| unsafe { (*r).handler = v });
        }
        sys::DECLINED
    })
}

/// Apache's side of the conversation, over `request_rec`.
struct ApacheClient {
    r: *mut sys::request_rec,
    body_started: bool,
    has_body: bool,
    /// procd-status's count of this request.
    counted: super::shm::Request,
    /// Once the connection is a tunnel: the brigades for each direction,
    /// and whether the client has sent its last byte.
    tunnel: Option<Tunnel>,
}

struct Tunnel {
    bb_in: *mut sys::apr_bucket_brigade,
    bb_out: *mut sys::apr_bucket_brigade,
    client_done: bool,
}

impl ApacheClient {
    fn conn(&self) -> *mut sys::conn_rec {
        // SAFETY: the live request's connection.
        unsafe { (*self.r).connection }
    }
}

impl Client for ApacheClient {
    fn read_body(&mut self, max: usize) -> Result<Vec<u8>, String> {
        // SAFETY: the request is live for the handler call; these are
        // Apache's documented body-reading calls, in their order.
        unsafe {
            if !self.body_started {
                self.body_started = true;
                let rc = sys::ap_setup_client_block(self.r, sys::REQUEST_CHUNKED_DECHUNK);
                if rc != sys::OK {
                    return Err(format!("the request body cannot be read (status {rc})"));
                }
                // Sends 100 Continue if the client waits for it.
                self.has_body = sys::ap_should_client_block(self.r) != 0;
            }
            if !self.has_body {
                return Ok(Vec::new());
            }
            let mut buf = vec![0u8; max.max(1)];
            let n = sys::ap_get_client_block(self.r, buf.as_mut_ptr().cast(), buf.len() as _);
            if n < 0 {
                return Err("the client stopped sending the body (timeout or disconnect)".into());
            }
            buf.truncate(n as usize);
            Ok(buf)
        }
    }

    fn start_response(&mut self, status: u16, headers: &[(String, String)]) {
        let req = Request(self.r);
        // SAFETY: setting fields of the live request before any output.
        unsafe { (*self.r).status = c_int::from(status) };
        for (name, value) in headers {
            match name.to_ascii_lowercase().as_str() {
                "content-type" => {
                    // SAFETY: a pool copy, alive as long as the request.
                    unsafe { sys::ap_set_content_type(self.r, pool_bytes(req.pool(), &latin1_bytes(value))) };
                }
                "connection" | "keep-alive" | "transfer-encoding" | "proxy-connection" | "upgrade" | "te"
                | "trailer" => {}
                _ => req.set_table(req.r().headers_out, name, value, true),
            }
        }
    }

    fn write(&mut self, data: &[u8]) -> bool {
        // SAFETY: ap_rwrite copies `data` into the request's output brigade.
        unsafe { sys::ap_rwrite(data.as_ptr().cast(), data.len() as c_int, self.r) >= 0 }
    }

    fn flush(&mut self) -> bool {
        // SAFETY: ap_rflush passes a FLUSH down the live request's filters.
        unsafe { sys::ap_rflush(self.r) >= 0 }
    }

    fn body_not_read(&mut self) {
        let req = Request(self.r);
        let headers = req.r().headers_in;
        let has_body = req.table_get(headers, c"Transfer-Encoding").is_some()
            || req.table_get(headers, c"Content-Length").is_some_and(|v| v.iter().any(|b| *b != b'0'));
        if !has_body {
            return; // nothing unread: keep-alive stays as it is
        }
        // SAFETY: fields of the live request and its connection.
        unsafe {
            // End-to-end 100-continue: the application did not read the
            // body, so the client never gets 100 Continue...
            (*self.r).expecting_100 = 0;
            // ...and the unread body is not read afterwards either.
            (*(*self.r).connection).keepalive = sys::ap_conn_keepalive_e_AP_CONN_CLOSE;
        }
    }

    fn head_only(&self) -> bool {
        // SAFETY: a field of the live request.
        unsafe { (*self.r).header_only != 0 }
    }

    fn body_length(&self) -> BodyLength {
        let req = Request(self.r);
        let headers = req.r().headers_in;
        if req.table_get(headers, c"Transfer-Encoding").is_some() {
            return BodyLength::Chunked;
        }
        // Apache's HTTP input filter has checked the value already.
        match req.table_get(headers, c"Content-Length").and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok())
        {
            Some(0) | None => BodyLength::None,
            Some(n) => BodyLength::Known(n),
        }
    }

    fn http_request(&self) -> HttpRequest {
        let req = Request(self.r);
        let r = req.r();
        let mut headers = Vec::new();
        req.for_each_entry(r.headers_in, |k, v| headers.push((k.to_bytes().to_vec(), v.to_bytes().to_vec())));
        // SAFETY: NUL-terminated strings of the live request, or NULL;
        // ap_run_http_scheme runs a hook on the live request.
        let (method, path, query, client_ip, scheme) = unsafe {
            (
                bytes_from(r.method),
                bytes_from(r.parsed_uri.path),
                (!r.parsed_uri.query.is_null()).then(|| bytes_from(r.parsed_uri.query)),
                string_from(r.useragent_ip),
                string_from(sys::ap_run_http_scheme(self.r)),
            )
        };
        let mut target = if path.is_empty() { b"/".to_vec() } else { path };
        if let Some(q) = query {
            target.push(b'?');
            target.extend_from_slice(&q);
        }
        HttpRequest {
            method,
            target,
            headers,
            client_ip,
            https: scheme.eq_ignore_ascii_case("https"),
            prefix: req.note(NOTE_PREFIX).unwrap_or_default(),
        }
    }

    fn switch_protocols(&mut self, headers: &[(String, String)]) -> Result<(), String> {
        let req = Request(self.r);
        let c = self.conn();
        // SAFETY: fields and tables of the live request and its connection;
        // as mod_proxy_http does for a 101: the interim response with the
        // headers, then only connection filters, never kept alive.
        unsafe {
            let r = self.r;
            (*r).status = 101;
            (*r).status_line = pool_string(req.pool(), "101 Switching Protocols");
            sys::apr_table_clear((*r).headers_out);
            for (name, value) in headers {
                req.set_table((*r).headers_out, name, value, true);
            }
            sys::apr_table_setn((*r).headers_out, c"Connection".as_ptr(), c"Upgrade".as_ptr());
            sys::ap_send_interim_response(r, 1);
            sys::ap_remove_input_filter_byhandle((*c).input_filters, c"reqtimeout".as_ptr());
            (*r).input_filters = (*c).input_filters;
            (*r).proto_input_filters = (*c).input_filters;
            (*r).output_filters = (*c).output_filters;
            (*r).proto_output_filters = (*c).output_filters;
            (*c).keepalive = sys::ap_conn_keepalive_e_AP_CONN_CLOSE;
            if (*c).aborted != 0 {
                return Err("the client left before the switch".into());
            }
            self.tunnel = Some(Tunnel {
                bb_in: sys::apr_brigade_create((*r).pool, (*c).bucket_alloc),
                bb_out: sys::apr_brigade_create((*r).pool, (*c).bucket_alloc),
                client_done: false,
            });
        }
        Ok(())
    }

    fn tunnel_read(&mut self, max: usize) -> TunnelRead {
        let c = self.conn();
        let Some(t) = self.tunnel.as_mut() else {
            return TunnelRead::Failed("not a tunnel".into());
        };
        if t.client_done {
            return TunnelRead::Closed;
        }
        let mut data = Vec::new();
        // SAFETY: a brigade of the live request's pool; the connection's
        // input filters, read without blocking (proxy_transfer's way);
        // buckets read are part of that brigade.
        unsafe {
            let bb = t.bb_in;
            sys::apr_brigade_cleanup(bb.cast());
            let rv = sys::ap_get_brigade(
                (*c).input_filters,
                bb,
                sys::ap_input_mode_t_AP_MODE_READBYTES,
                sys::apr_read_type_e_APR_NONBLOCK_READ,
                max as sys::apr_off_t,
            );
            if rv == libc::EAGAIN {
                return TunnelRead::WouldBlock;
            }
            if rv == sys::APR_EOF as sys::apr_status_t {
                t.client_done = true;
                return TunnelRead::Closed;
            }
            if rv != sys::APR_SUCCESS as sys::apr_status_t {
                t.client_done = true;
                return TunnelRead::Failed(apr_error(rv));
            }
            let mut b = sys::procd_brigade_first(bb);
            while b != sys::procd_brigade_sentinel(bb) {
                if sys::procd_bucket_is_eos(b) != 0 {
                    t.client_done = true;
                } else if sys::procd_bucket_is_metadata(b) == 0 {
                    let (mut ptr, mut len) = (std::ptr::null(), 0);
                    if sys::procd_bucket_read(b, &mut ptr, &mut len, sys::apr_read_type_e_APR_BLOCK_READ) == 0
                        && !ptr.is_null()
                    {
                        data.extend_from_slice(std::slice::from_raw_parts(ptr.cast::<u8>(), len));
                    }
                }
                b = sys::procd_bucket_next(b);
            }
            sys::apr_brigade_cleanup(bb.cast());
        }
        match (data.is_empty(), t.client_done) {
            (false, _) => TunnelRead::Data(data),
            (true, true) => TunnelRead::Closed,
            (true, false) => TunnelRead::WouldBlock,
        }
    }

    fn tunnel_write(&mut self, data: &[u8]) -> bool {
        let c = self.conn();
        let Some(t) = self.tunnel.as_ref() else {
            return false;
        };
        // SAFETY: a transient bucket over `data`, which outlives the call:
        // the FLUSH makes the core output filter write it all (or fail)
        // before ap_pass_brigade returns; filters that keep buckets set
        // them aside (copy) first.
        unsafe {
            let bb = t.bb_out;
            let alloc = (*c).bucket_alloc;
            let b = sys::apr_bucket_transient_create(data.as_ptr().cast(), data.len(), alloc);
            sys::procd_brigade_insert_tail(bb, b);
            sys::procd_brigade_insert_tail(bb, sys::apr_bucket_flush_create(alloc));
            let rv = sys::ap_pass_brigade((*c).output_filters, bb);
            sys::apr_brigade_cleanup(bb.cast());
            rv == sys::APR_SUCCESS as sys::apr_status_t && (*c).aborted == 0
        }
    }

    fn tunnel_shutdown_write(&mut self) {
        let c = self.conn();
        // SAFETY: the live connection's socket (NULL-checked).
        unsafe {
            let s = sys::ap_get_conn_socket(c);
            if !s.is_null() {
                sys::apr_socket_shutdown(s, sys::apr_shutdown_how_e_APR_SHUTDOWN_WRITE);
            }
        }
    }

    fn tunnel_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        let c = self.conn();
        // SAFETY: the live request and connection; the descriptor belongs
        // to the connection's socket, open for as long as the request
        // (the borrow is tied to `self`, which lives within the handler call).
        unsafe {
            if (*self.r).proto_num < 1001 || !(*c).master.is_null() {
                return None; // HTTP/1.0, or a stream of an HTTP/2 connection
            }
            let s = sys::ap_get_conn_socket(c);
            if s.is_null() {
                return None;
            }
            let mut fd: sys::apr_os_sock_t = -1;
            if sys::apr_os_sock_get(&mut fd, s) != sys::APR_SUCCESS as sys::apr_status_t || fd < 0 {
                return None;
            }
            Some(std::os::fd::BorrowedFd::borrow_raw(fd))
        }
    }

    fn taken(&mut self, waited: std::time::Duration, pid: u32) {
        self.counted.taken(waited);
        self.counted.worker(pid);
        // For LogFormat's %{procd-queue-us}n and %{procd-worker}n: how long
        // the request waited for a worker, and which one took it.
        let req = Request(self.r);
        req.set_note(c"procd-queue-us", &waited.as_micros().to_string());
        req.set_note(c"procd-worker", &pid.to_string());
    }

    fn abort(&mut self) {
        // SAFETY: mod_proxy's way to cut a response whose headers are out:
        // an error bucket then EOS down the live request's filters.
        unsafe {
            sys::ap_rflush(self.r);
            let c = (*self.r).connection;
            let bb = sys::apr_brigade_create((*self.r).pool, (*c).bucket_alloc);
            append_bad_gateway(self.r, bb);
            sys::ap_pass_brigade((*self.r).output_filters, bb);
        }
    }
}

/// The CGI/WSGI environment of the request, encoded for the REQUEST frame.
fn environment(req: &Request, kind: &str, app: Option<&str>, speaks: Protocol) -> Vec<u8> {
    let r = req.r();
    let env_table = r.subprocess_env;
    if matches!(speaks, Protocol::Fastcgi | Protocol::Cgi) {
        // SAFETY: fills r->subprocess_env with the CGI variables, among
        // them PATH_TRANSLATED (a sub-request lookup of PATH_INFO); the
        // ones set below override its SCRIPT_NAME and PATH_INFO.
        unsafe { sys::ap_add_cgi_vars(req.0) };
    }
    // SAFETY: ap_add_common_vars fills r->subprocess_env (HTTP_*, SERVER_*,
    // REMOTE_*, DOCUMENT_ROOT, SCRIPT_FILENAME, REQUEST_SCHEME, ...); the
    // raw fields below are NUL-terminated strings or NULL.
    let (method, protocol, args, unparsed, path_info, uri) = unsafe {
        sys::ap_add_common_vars(req.0);
        (
            bytes_from(r.method),
            bytes_from(r.protocol),
            bytes_from(r.args),
            bytes_from(r.unparsed_uri),
            bytes_from(r.path_info),
            req.uri(),
        )
    };
    let script_name = uri.strip_suffix(path_info.as_slice()).unwrap_or(&uri).to_vec();
    let pool = req.pool();
    let set = |k: &std::ffi::CStr, v: &[u8]| {
        // SAFETY: pool copies into the request's live table.
        unsafe { sys::apr_table_setn(env_table, k.as_ptr(), pool_bytes(pool, v)) };
    };
    set(c"GATEWAY_INTERFACE", b"CGI/1.1");
    set(c"SERVER_PROTOCOL", &protocol);
    set(c"REQUEST_METHOD", &method);
    set(c"QUERY_STRING", &args);
    set(c"REQUEST_URI", &unparsed);
    set(c"SCRIPT_NAME", &script_name);
    set(c"PATH_INFO", &path_info);
    if kind == HANDLER_MOUNT {
        set(c"SCRIPT_FILENAME", app.unwrap_or_default().as_bytes());
    }
    if req.table_get(env_table, c"HTTPS").is_none() {
        let https = req.table_get(env_table, c"REQUEST_SCHEME").is_some_and(|s| s == b"https");
        set(c"HTTPS", if https { b"on" } else { b"off" });
    }
    if speaks == Protocol::Fastcgi && req.table_get(env_table, c"REDIRECT_STATUS").is_none() {
        // php-cgi's cgi.force_redirect runs a script only with this set.
        set(c"REDIRECT_STATUS", b"200");
    }
    // SAFETY: unsetting keys of the live table. A client's `Proxy:` header
    // must never become HTTP_PROXY ("httpoxy").
    unsafe {
        sys::apr_table_unset(env_table, c"PATH".as_ptr());
        sys::apr_table_unset(env_table, c"HTTP_PROXY".as_ptr());
    }
    let mut env = crate::protocol::EnvBuilder::with_capacity(2048);
    req.for_each_entry(env_table, |k, v| env.add_c(k, v));
    env.finish()
}

/// The content handler for `procd-mount` and `procd-script`.
pub unsafe extern "C" fn handler(r: *mut sys::request_rec) -> c_int {
    guard(sys::HTTP_INTERNAL_SERVER_ERROR, || about_request(r, || handle(r)))
}

/// The handler's work; its events are logged about `r`.
fn handle(r: *mut sys::request_rec) -> c_int {
    {
        let req = Request(r);
        let kind = req.handler();
        if kind != HANDLER_MOUNT && kind != HANDLER_SCRIPT {
            return sys::DECLINED;
        }
        let Some(group_name) = req.note(NOTE_GROUP) else {
            return sys::DECLINED;
        };
        // SAFETY: r->server is the live server of this request.
        let config = unsafe { server_config_of(req.r().server) };
        if kind == HANDLER_SCRIPT {
            if req.r().finfo.filetype == sys::apr_filetype_e_APR_NOFILE {
                pd_log!(
                    logid::SCRIPT_MISSING,
                    group = group_name,
                    "script not found or unable to stat: {}",
                    req.filename()
                );
                return sys::HTTP_NOT_FOUND;
            }
            // PHP runs where its handler maps it, as with mod_php or
            // php-fpm; scripts of the procd protocol need ExecCGI.
            let needs_exec = config
                .visible_groups()
                .find(|g| g.name == group_name)
                .is_none_or(|g| g.protocol != Some(Protocol::Fastcgi));
            // SAFETY: ap_allow_options reads the live request's options.
            if needs_exec && unsafe { sys::ap_allow_options(r) } & sys::OPT_EXECCGI == 0 {
                pd_log!(
                    logid::EXECCGI_OFF,
                    "Options ExecCGI is off in this directory: {} (add Options +ExecCGI to run it in group {group_name})",
                    req.filename()
                );
                return sys::HTTP_FORBIDDEN;
            }
        }
        let Some(group) = config.visible_groups().find(|g| g.name == group_name) else {
            pd_log!(logid::GROUP_NOT_HERE, group = group_name, "not declared for this virtual host");
            return sys::HTTP_INTERNAL_SERVER_ERROR;
        };
        let runtime_dir = config.runtime_dir.as_ref().map_or_else(
            // SAFETY: the request pool is live.
            || PathBuf::from(unsafe { string_from(sys::ap_runtime_dir_relative(req.pool(), c"procd".as_ptr())) }),
            |d| d.clone(),
        );
        let Some(protocol) = group.protocol else {
            pd_log!(logid::GROUP_NOT_HERE, group = group_name, "its language {} is not known", group.language);
            return sys::HTTP_INTERNAL_SERVER_ERROR;
        };
        let target = Target {
            group: group.name.clone(),
            protocol,
            listen: group.listen.unwrap_or_default(),
            socket: runtime_dir.join(format!("{}.sock", group.name)),
            exits: runtime_dir.join(crate::manager::EXITS),
            queue_timeout: group.queue_timeout,
            request_timeout: group.request_timeout,
        };
        // Borrowed when the path is UTF-8, as it nearly always is.
        let app = group.app.as_ref().map(|p| p.to_string_lossy());
        // The http backend forwards the request itself, not an environment.
        let env =
            if protocol == Protocol::Http { Vec::new() } else { environment(&req, &kind, app.as_deref(), protocol) };
        // SAFETY: the live request's method and URI (NUL-terminated or NULL).
        let (method, unparsed) = unsafe { (bytes_from(req.r().method), bytes_from(req.r().unparsed_uri)) };
        let counted = super::shm::Request::begin(&group.name, &method, &crate::status::shown_uri(&unparsed));
        let mut client = ApacheClient { r, body_started: false, has_body: false, tunnel: None, counted };
        // What the handler logs quotes a worker's text escaped already; no
        // control character reaches the log, whatever its origin.
        let escape = crate::protocol::escape_controls;
        let outcome = serve(&mut client, &target, env);
        super::status::count(&mut client.counted, req.r().status, &outcome);
        match outcome {
            Outcome::Done => {
                match config.keepalive_thread() {
                    KeepAliveThread::Off => {}
                    // A subrequest's response is part of its main request's.
                    _ if req.is_subrequest() => {}
                    // Under worker and prefork the thread keeps the
                    // connection anyway.
                    KeepAliveThread::On if mpm_is_async() && req.is_own_connection() => req.finish_and_keep_thread(),
                    KeepAliveThread::On => {}
                    KeepAliveThread::Wait(wait) => {
                        // Only on a connection of its own (not an HTTP/2
                        // stream) and whole: the wait is for the client's
                        // next request, after it has this response.
                        if mpm_is_async() && req.is_own_connection() && req.finish_response() {
                            req.set_note(NOTE_WAIT_MS, &wait.as_millis().to_string());
                        }
                    }
                }
                sys::OK
            }
            Outcome::Failed { status, retry_after, log } => {
                pd_log!(logid::REQUEST_FAILED, status, "{}", escape(&log));
                if let Some(secs) = retry_after {
                    req.set_table(req.r().err_headers_out, "Retry-After", &secs.to_string(), false);
                }
                c_int::from(status)
            }
            Outcome::LocalRedirect { location } => {
                // As mod_cgi does: the redirect is a GET, and the body (read
                // already, or left for Apache to discard) is not its own.
                // SAFETY: fields of the live request; pool copies; Apache
                // bounds redirect loops (LimitInternalRecursion).
                unsafe {
                    (*r).method = pool_string(req.pool(), "GET");
                    (*r).method_number = sys::M_GET as c_int;
                    sys::apr_table_unset(req.r().headers_in, c"Content-Length".as_ptr());
                    sys::ap_internal_redirect_handler(pool_bytes(req.pool(), &latin1_bytes(&location)), r);
                }
                sys::OK
            }
            Outcome::Cut { log } => {
                pd_log!(logid::RESPONSE_CUT, "{}; the response to the client was cut", escape(&log));
                sys::OK
            }
        }
    }
}

/// Says once per child that `ProcdKeepAliveThread` stands aside: a module
/// put the output filter `last()` names after Apache's core output filter, and only
/// the core's own filter can be asked to write without blocking.
fn log_keepalive_thread_idle(last: impl FnOnce() -> String) {
    static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        pd_log!(
            logid::KEEPALIVE_THREAD_IDLE,
            "ProcdKeepAliveThread has no effect where a connection's last output filter is \"{}\" and not Apache's \
             core output filter: such connections are served as with ProcdKeepAliveThread Off. Set it Off, or \
             leave out the module that adds that filter (logged once per child)",
            crate::protocol::escape_controls(&last())
        );
    }
}
