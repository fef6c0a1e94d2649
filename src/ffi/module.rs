//! The module record, the directive table and the functions Apache calls.
//!
//! The record and table are Rust statics (a `module` defined in C is not
//! exported from a Rust cdylib). Every `extern "C"` function here catches
//! panics and hands plain Rust values to `crate::config`.

use super::apache::{guard, install_log_subscriber, install_panic_hook, msg, pool_box, pool_string, string_from};
use super::sys;
use crate::config::check::{ServerView, check_configuration};
use crate::config::plan::build_plan;
use crate::config::scope::{DirConfig, ServerConfig};
use crate::config::{DirectiveContext, Origin, access::Identity};
use crate::logid::pd_log;
use std::ffi::{c_char, c_int, c_void};
use std::path::Path;
use std::ptr::{null, null_mut};

const fn raw_directive(
    name: &'static std::ffi::CStr,
    where_: c_int,
    help: &'static std::ffi::CStr,
) -> sys::command_rec {
    sys::command_rec {
        name: name.as_ptr(),
        func: sys::cmd_func { raw_args: Some(directive) },
        cmd_data: null_mut(),
        req_override: where_,
        args_how: sys::cmd_how_RAW_ARGS,
        errmsg: help.as_ptr(),
    }
}

const SERVER: c_int = sys::RSRC_CONF;
const SERVER_AND_DIR: c_int = sys::RSRC_CONF | sys::ACCESS_CONF;

/// The directive table. Apache reads it; it must outlive the module.
static mut COMMANDS: [sys::command_rec; 10] = [
    raw_directive(c"LanguageGroup", SERVER, c"NAME language=LANG [key=value ...]: declare a process group"),
    raw_directive(
        c"LanguageHandler",
        SERVER_AND_DIR,
        c"GROUP .ext [.ext ...]: files with these extensions run in GROUP",
    ),
    raw_directive(c"LanguageMount", SERVER, c"/prefix GROUP: the URL space under /prefix goes to GROUP's app="),
    raw_directive(c"LinkRewrite", SERVER_AND_DIR, c"FROM TO: rewrite URL prefix FROM to TO in HTML and headers"),
    raw_directive(
        c"LinkRewriteCSS",
        SERVER_AND_DIR,
        c"On|Off: also rewrite url() and @import in <style>, style attributes and text/css",
    ),
    raw_directive(c"ProcdRuntimeDir", SERVER, c"DIR: where group sockets and state live"),
    raw_directive(c"ProcdLanguages", SERVER, c"FILE.toml: add or override language definitions"),
    raw_directive(
        c"ProcdKeepAliveThread",
        SERVER,
        c"On|Off: a client connection a group served keeps its Apache thread between requests",
    ),
    raw_directive(
        c"ProcdStatus",
        SERVER_AND_DIR,
        c"vhost|server: procd-status shows the groups of this virtual host only, or of the whole server",
    ),
    // SAFETY of the all-zero terminator: Apache stops at a NULL name.
    sys::command_rec {
        name: null(),
        func: sys::cmd_func { raw_args: None },
        cmd_data: null_mut(),
        req_override: 0,
        args_how: sys::cmd_how_RAW_ARGS,
        errmsg: null(),
    },
];

/// The module record (`LoadModule procd_module ...`). `static mut` because
/// Apache writes `module_index`, `next` and `dynamic_load_handle` into it.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static mut procd_module: sys::module = sys::module {
    version: sys::MODULE_MAGIC_NUMBER_MAJOR,
    minor_version: sys::MODULE_MAGIC_NUMBER_MINOR,
    module_index: -1,
    name: c"mod_procd.c".as_ptr(),
    dynamic_load_handle: null_mut(),
    next: null_mut(),
    magic: sys::MODULE_MAGIC_COOKIE as std::ffi::c_ulong,
    rewrite_args: None,
    create_dir_config: Some(create_dir_config),
    merge_dir_config: Some(merge_dir_config),
    create_server_config: Some(create_server_config),
    merge_server_config: Some(merge_server_config),
    // SAFETY: COMMANDS is a static that Apache only reads.
    cmds: &raw const COMMANDS as *const sys::command_rec,
    register_hooks: Some(register_hooks),
    flags: 0,
};

unsafe extern "C" fn register_hooks(_pool: *mut sys::apr_pool_t) {
    guard((), || {
        install_panic_hook();
        install_log_subscriber();
        // SAFETY: hook registration during register_hooks, as Apache expects.
        unsafe {
            sys::ap_hook_check_config(Some(check_config), null(), null(), sys::APR_HOOK_MIDDLE);
            sys::ap_hook_post_config(Some(post_config), null(), null(), sys::APR_HOOK_MIDDLE);
            // Last of all: every other module's post_config (and what it
            // forks) has run with SIGCHLD as it was.
            sys::ap_hook_post_config(Some(post_config_last), null(), null(), sys::APR_HOOK_REALLY_LAST);
            // First of all child_init hooks: no code of any module runs in a
            // child while it still holds the channel to the root manager.
            sys::ap_hook_child_init(Some(child_init), null(), null(), sys::APR_HOOK_REALLY_FIRST);
            sys::ap_hook_translate_name(Some(super::request::translate_name), null(), null(), sys::APR_HOOK_MIDDLE);
            sys::ap_hook_map_to_storage(Some(super::request::map_to_storage), null(), null(), sys::APR_HOOK_FIRST);
            sys::ap_hook_fixups(Some(super::request::fixups), null(), null(), sys::APR_HOOK_LAST);
            sys::ap_hook_handler(Some(super::request::handler), null(), null(), sys::APR_HOOK_MIDDLE);
            sys::ap_hook_handler(Some(super::status::handler), null(), null(), sys::APR_HOOK_MIDDLE);
            sys::ap_hook_log_transaction(
                Some(super::request::log_transaction),
                null(),
                null(),
                sys::APR_HOOK_REALLY_LAST,
            );
            // mod_status's optional hook (a line per group on server-status);
            // nothing happens when mod_status is not loaded.
            // SAFETY: mod_status calls the functions of its status_hook as
            // `int (*)(request_rec *, int)`; APR stores them type-erased.
            let status_hook = std::mem::transmute::<
                unsafe extern "C" fn(*mut sys::request_rec, c_int) -> c_int,
                unsafe extern "C" fn(),
            >(super::status::mod_status_hook);
            sys::apr_optional_hook_add(
                c"status_hook".as_ptr(),
                Some(status_hook),
                null(),
                null(),
                sys::APR_HOOK_MIDDLE,
            );
            sys::ap_hook_insert_filter(Some(super::filter::insert_filter), null(), null(), sys::APR_HOOK_MIDDLE);
            // After every RESOURCE filter (INCLUDES, SUBSTITUTE: what they
            // produce is rewritten too), before CONTENT_SET ones (DEFLATE
            // compresses what was rewritten).
            sys::ap_register_output_filter(
                super::filter::FILTER_NAME.as_ptr(),
                Some(super::filter::link_filter),
                None,
                sys::ap_filter_type_AP_FTYPE_CONTENT_SET - 1,
            );
        }
    })
}

unsafe extern "C" fn create_server_config(pool: *mut sys::apr_pool_t, _s: *mut sys::server_rec) -> *mut c_void {
    // SAFETY: `pool` is the configuration pool Apache passes here.
    guard(null_mut(), || unsafe { pool_box(pool, ServerConfig::default()) }.cast())
}

unsafe extern "C" fn merge_server_config(
    pool: *mut sys::apr_pool_t,
    base: *mut c_void,
    add: *mut c_void,
) -> *mut c_void {
    guard(null_mut(), || {
        // SAFETY: both came from create/merge_server_config of this module
        // and live in the configuration pool for this call.
        let (base, add) = unsafe { (&*base.cast::<ServerConfig>(), &*add.cast::<ServerConfig>()) };
        // SAFETY: `pool` is the configuration pool.
        unsafe { pool_box(pool, ServerConfig::merge(base, add)) }.cast()
    })
}

unsafe extern "C" fn create_dir_config(pool: *mut sys::apr_pool_t, _dir: *mut c_char) -> *mut c_void {
    // SAFETY: `pool` is the configuration pool Apache passes here.
    guard(null_mut(), || unsafe { pool_box(pool, DirConfig::default()) }.cast())
}

unsafe extern "C" fn merge_dir_config(pool: *mut sys::apr_pool_t, base: *mut c_void, add: *mut c_void) -> *mut c_void {
    guard(null_mut(), || {
        // SAFETY: both came from create/merge_dir_config of this module.
        let (base, add) = unsafe { (&*base.cast::<DirConfig>(), &*add.cast::<DirConfig>()) };
        // SAFETY: `pool` is the configuration or the request pool; both are
        // cleared before the module can be unloaded.
        unsafe { pool_box(pool, DirConfig::merge(base, add)) }.cast()
    })
}

/// This module's configuration for a server, for request hooks.
///
/// # Safety
/// As `server_config`; the result is only read.
pub(super) unsafe fn server_config_of<'a>(s: *mut sys::server_rec) -> &'a ServerConfig {
    // SAFETY: per the contract.
    unsafe { server_config(s) }
}

/// This module's per-directory configuration for a request.
///
/// # Safety
/// `r` is a live request; Apache built its per_dir_config with our
/// create/merge_dir_config, in a pool that outlives the request.
pub(super) unsafe fn dir_config_of<'a>(r: *mut sys::request_rec) -> &'a DirConfig {
    // SAFETY: per the contract; Apache stores our pointer at our index.
    unsafe { &*sys::procd_get_module_config((*r).per_dir_config, &raw const procd_module).cast::<DirConfig>() }
}

/// This module's configuration for a server.
///
/// # Safety
/// `s` is a live server_rec whose module_config Apache built with our
/// create/merge_server_config; the result must not outlive the config pool.
unsafe fn server_config<'a>(s: *mut sys::server_rec) -> &'a mut ServerConfig {
    // SAFETY: per the contract; Apache stores our pointer at our index.
    unsafe { &mut *sys::procd_get_module_config((*s).module_config, &raw const procd_module).cast::<ServerConfig>() }
}

/// The one handler for all directives (RAW_ARGS): works out the context and
/// hands name and arguments to `crate::config`.
unsafe extern "C" fn directive(cmd: *mut sys::cmd_parms, mconfig: *mut c_void, args: *const c_char) -> *const c_char {
    // SAFETY: Apache passes a live cmd_parms for the directive being read.
    let pool = unsafe { (*cmd).pool };
    let outcome =
        guard(Err("mod_procd: internal error while reading this directive (see the error log)".to_string()), || {
            // SAFETY: during configuration reading, cmd and everything it points
            // to are valid and only this thread touches the configuration.
            unsafe {
                let name = string_from((*(*cmd).cmd).name);
                let args = string_from(args);
                let d = (*cmd).directive;
                let origin = if d.is_null() {
                    Origin::default()
                } else {
                    Origin { file: string_from((*d).filename), line: (*d).line_num as u32 }
                };
                // `<Directory /path>` (not DirectoryMatch): cmd->path is its path.
                let parent = if d.is_null() { null_mut() } else { (*d).parent };
                let directory = (!(*cmd).path.is_null()
                    && !parent.is_null()
                    && string_from((*parent).directive).eq_ignore_ascii_case("<Directory"))
                .then(|| string_from((*cmd).path).into());
                let ctx = DirectiveContext {
                    directory,
                    origin,
                    in_vhost: (*(*cmd).server).is_virtual != 0,
                    in_section: !(*cmd).path.is_null(),
                    server_root: string_from(sys::ap_server_root).into(),
                };
                let server = server_config((*cmd).server);
                match name.as_str() {
                    "LanguageHandler" | "LinkRewrite" | "LinkRewriteCSS" | "ProcdStatus" => {
                        let dir = &mut *mconfig.cast::<DirConfig>();
                        let refs = dir.apply(&name, &args, &ctx)?;
                        server.group_refs.extend(refs);
                        Ok(())
                    }
                    _ => server.apply(&name, &args, &ctx),
                }
            }
        });
    match outcome {
        Ok(()) => null(),
        // SAFETY: cmd->pool is the live configuration pool.
        Err(message) => unsafe { pool_string(pool, &message) },
    }
}

/// Apache's `User`, which groups without `user=` run as.
fn apache_identity() -> Identity {
    // SAFETY: mod_unixd filled ap_unixd_config while reading the
    // configuration; check_config runs after that, single-threaded.
    let (name, uid, gid) = unsafe {
        (string_from(sys::ap_unixd_config.user_name), sys::ap_unixd_config.user_id, sys::ap_unixd_config.group_id)
    };
    Identity::new(&name, uid, gid)
}

/// Whether this apache2 was started only to tell a running server to stop
/// (`-k stop` or `-k graceful-stop`; the MPM removes `-k` from Apache's own
/// argv, so the original command line is read).
fn only_signals_a_stop(args: &[String]) -> bool {
    args.windows(2).any(|w| w[0] == "-k" && (w[1] == "stop" || w[1] == "graceful-stop"))
        || args.iter().any(|a| a == "-kstop" || a == "-kgraceful-stop")
}

/// `ProcdRuntimeDir`, or `DefaultRuntimeDir/procd`.
fn runtime_dir(main: *mut sys::server_rec, pconf: *mut sys::apr_pool_t) -> String {
    // SAFETY: main's module config and pconf are Apache's for this
    // configuration; read single-threaded in the configuration hooks.
    let (config, default) =
        unsafe { (server_config(main), string_from(sys::ap_runtime_dir_relative(pconf, c"procd".as_ptr()))) };
    config.runtime_dir.as_ref().map_or(default, |d| d.display().to_string())
}

/// Cross-checks the whole configuration. Runs at every start and restart,
/// and in `apachectl configtest`, after all directives are read.
unsafe extern "C" fn check_config(
    pconf: *mut sys::apr_pool_t,
    _plog: *mut sys::apr_pool_t,
    _ptemp: *mut sys::apr_pool_t,
    main: *mut sys::server_rec,
) -> c_int {
    guard(sys::HTTP_INTERNAL_SERVER_ERROR, || {
        if only_signals_a_stop(&crate::os::command_line()) {
            // `apache2 -k stop` reads the configuration only to find the pid
            // file: what a tenant did to its files since must not keep the
            // server from stopping.
            return sys::OK;
        }
        let views = server_views(main, pconf);
        let mut errors = check_configuration(&views, &apache_identity());
        // SAFETY: ap_state_query may be called from any hook.
        if unsafe { sys::ap_state_query(sys::AP_SQ_RUN_MODE) } == sys::AP_SQ_RM_CONFIG_TEST {
            // Runs interpreters: configtest only, never in a (graceful) start.
            errors.extend(crate::config::check::library_errors(&views, &apache_identity()));
            // The file system as it is now: configtest only, since `apache2
            // -k stop` runs this hook too and must never be refused for it
            // (the manager checks again, and refuses, when it prepares the
            // directory).
            if views.iter().any(|v| !v.config.groups.is_empty()) {
                errors.extend(crate::config::check::runtime_dir_error(Path::new(&runtime_dir(main, pconf))));
            }
        }
        for w in crate::config::check::warnings(&views, &apache_identity()) {
            pd_log!(msg::CONFIG_WARNING, startup = true, "{w}");
        }
        for e in &errors {
            pd_log!(msg::CONFIG_CHECK, startup = true, "{e}");
        }
        if errors.is_empty() { sys::OK } else { sys::HTTP_INTERNAL_SERVER_ERROR }
    })
}

/// What survives graceful restarts in the httpd parent (Apache's retained
/// data): plain numbers only, never pointers into this .so.
#[repr(C)]
struct Retained {
    manager_pid: libc::pid_t,
    control_fd: c_int,
}

/// The parent's view of the manager for one configuration generation; owned
/// by the configuration pool, handed to the other-child callback.
struct ParentState {
    plan_text: String,
    proc_: *mut sys::apr_proc_t,
    pconf: *mut sys::apr_pool_t,
    retained: *mut Retained,
}

fn retained() -> *mut Retained {
    let key = c"mod_procd-retained";
    // SAFETY: retained data lives in the process pool for the life of httpd;
    // created zeroed (pid 0: no manager) on first use.
    unsafe {
        let mut r = sys::ap_retained_data_get(key.as_ptr());
        if r.is_null() {
            r = sys::ap_retained_data_create(key.as_ptr(), std::mem::size_of::<Retained>());
            (*r.cast::<Retained>()).control_fd = -1;
        }
        r.cast()
    }
}

/// The status counters' table, kept across graceful restarts (its own
/// retained key: the layout of `Retained` never changes with it).
#[repr(C)]
struct RetainedShm {
    addr: usize,
    len: usize,
}

/// In the parent at each configuration: the status counters' shared table
/// (created once, or anew if the retained one is another build's layout),
/// installed for this process and its future children, with a slot for
/// each group.
fn attach_status_table(groups: &[String]) {
    let key = c"mod_procd-status-shm";
    // SAFETY: retained data lives in the process pool for the life of
    // httpd; created zeroed on first use; the single-threaded parent is the
    // only writer.
    let r = unsafe {
        let mut r = sys::ap_retained_data_get(key.as_ptr());
        if r.is_null() {
            r = sys::ap_retained_data_create(key.as_ptr(), std::mem::size_of::<RetainedShm>());
        }
        &mut *r.cast::<RetainedShm>()
    };
    // SAFETY: addr/len are 0 or the mapping a previous generation made.
    let table = if unsafe { super::shm::usable(r.addr, r.len) } {
        r.addr as *mut super::shm::Table
    } else {
        if r.addr != 0 {
            // SAFETY: another layout's mapping, made by us; nothing in this
            // process refers to it (the previous .so is unloaded).
            unsafe { super::shm::discard(r.addr, r.len) };
            *r = RetainedShm { addr: 0, len: 0 };
        }
        let Some(t) = super::shm::create() else {
            pd_log!(
                msg::STATUS_SHM,
                "cannot create the shared memory for request counters; procd-status shows no request counters"
            );
            return;
        };
        *r = RetainedShm { addr: t as usize, len: super::shm::TABLE_BYTES };
        t
    };
    super::shm::install(table);
    let missing = super::shm::assign(groups);
    if !missing.is_empty() {
        // At most five named: a thousand-vhost server gets one short line.
        let more = missing.len().saturating_sub(5);
        let named = missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
        let rest = if more > 0 { format!(" and {more} more") } else { String::new() };
        pd_log!(
            msg::STATUS_SHM,
            "no request-counter slot for {} group(s): {named}{rest} ({} slots, names of at most 64 bytes); procd-status shows no request counters for them",
            missing.len(),
            super::shm::SLOTS
        );
    }
}

fn server_views(main: *mut sys::server_rec, pool: *mut sys::apr_pool_t) -> Vec<ServerView<'static>> {
    let mut views = Vec::new();
    let mut s = main;
    while !s.is_null() {
        // SAFETY: Apache's list of servers, complete and merged; the configs
        // live in the configuration pool, which outlives this hook call.
        unsafe {
            let label = if (*s).is_virtual != 0 {
                format!(
                    "the virtual host {} ({}:{})",
                    string_from((*s).server_hostname),
                    string_from((*s).defn_name),
                    (*s).defn_line_number
                )
            } else {
                "the main server".to_string()
            };
            let fname = string_from((*s).error_fname);
            let error_log = if fname.is_empty() {
                None
            } else if fname.starts_with('|') || fname.starts_with("syslog") || fname.starts_with('/') {
                Some(fname)
            } else {
                let c = std::ffi::CString::new(fname).unwrap_or_default();
                Some(string_from(sys::ap_server_root_relative(pool, c.as_ptr())))
            };
            let document_root = Some(string_from(sys::procd_document_root(s))).filter(|d| !d.is_empty());
            views.push(ServerView { label, config: server_config(s), error_log, document_root });
            s = (*s).next;
        }
    }
    views
}

fn manager_alive(pid: libc::pid_t) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Forks a new manager. Returns in the parent only.
fn start_manager(state: &ParentState) -> Result<(), String> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    use std::os::fd::{AsFd, IntoRawFd};
    let (parent_end, manager_end) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| format!("socketpair: {e}"))?;
    // Before the first byte is sent: the kernel then tags everything the
    // manager reads with its sender's pid, and the manager accepts plans
    // from the httpd parent only (whoever else may hold a copy of our end).
    nix::sys::socket::setsockopt(&manager_end, nix::sys::socket::sockopt::PassCred, &true)
        .map_err(|e| format!("SO_PASSCRED: {e}"))?;
    match crate::os::fork_manager(manager_end.as_fd()).map_err(|e| format!("fork: {e}"))? {
        // The manager never returns into httpd's start-up code, not even by
        // a panic: `run_manager` exits the process.
        crate::os::Forked::Manager(control) => crate::manager::run_forked(control),
        crate::os::Forked::Parent(pid) => {
            drop(manager_end);
            // SAFETY: `retained` points into Apache's retained data (see
            // `retained()`); only the single-threaded parent writes it.
            unsafe {
                let r = &mut *state.retained;
                if r.control_fd >= 0 {
                    libc::close(r.control_fd);
                }
                r.manager_pid = pid.as_raw();
                // Kept open across restarts: not owned by any pool.
                r.control_fd = parent_end.into_raw_fd();
            }
            Ok(())
        }
    }
}

/// How long the httpd parent waits for the manager to take a plan.
const SEND_PLAN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Sends the plan as one frame: u32 big-endian length, then TOML text.
/// The frame goes whole or not at all: a frame cut short would corrupt
/// every later one, so on failure the manager is killed (the other-child
/// callback then starts a new one with this generation's plan).
fn send_plan(state: &ParentState) -> Result<(), String> {
    // SAFETY: see `start_manager`.
    let (fd, pid) = unsafe { ((*state.retained).control_fd, (*state.retained).manager_pid) };
    let frame = crate::protocol::control::encode(state.plan_text.as_bytes()).map_err(|e| e.to_string())?;
    if let Err(e) = crate::os::send_all(fd, &frame, SEND_PLAN_TIMEOUT) {
        // SIGTERM: the manager stops its groups (bounded, a few seconds)
        // and exits; its death starts a new one.
        if pid > 0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
        return Err(format!(
            "cannot send the configuration ({} bytes) to the manager (pid {pid}): {e}; the manager is restarted with it",
            frame.len()
        ));
    }
    Ok(())
}

/// Registers the manager with Apache's other-child machinery, so that the
/// MPM tells us when it dies and when httpd stops.
fn register_manager(state: *mut ParentState) {
    // SAFETY: `state` and its apr_proc_t live in pconf, as long as this
    // registration (which pconf's cleanup removes).
    unsafe {
        (*(*state).proc_).pid = (*(*state).retained).manager_pid;
        sys::apr_proc_other_child_register(
            (*state).proc_,
            Some(manager_event),
            state.cast(),
            null_mut(),
            (*state).pconf,
        );
    }
}

fn launch(state: *mut ParentState) {
    // SAFETY: `state` is the pconf-owned ParentState of this generation.
    let st = unsafe { &*state };
    if let Err(e) = start_manager(st) {
        pd_log!(msg::MANAGER_RESTARTED, "cannot start the process manager: {e}; process groups will not run");
        return;
    }
    if let Err(e) = send_plan(st) {
        pd_log!(msg::MANAGER_RESTARTED, "{e}");
    }
    // Registered whenever it was forked: its death (also one send_plan
    // caused) starts a new manager.
    register_manager(state);
}

unsafe extern "C" fn manager_event(reason: c_int, data: *mut c_void, status: c_int) {
    guard((), || {
        let state = data.cast::<ParentState>();
        // SAFETY: `data` is the ParentState we registered, alive in pconf.
        let st = unsafe { &*state };
        // SAFETY: reading our retained numbers in the single-threaded parent.
        let r = unsafe { &mut *st.retained };
        match reason {
            sys::APR_OC_REASON_DEATH | sys::APR_OC_REASON_LOST => {
                // SAFETY: unregistering the registration this callback belongs to.
                unsafe { sys::apr_proc_other_child_unregister(data) };
                let dead = r.manager_pid;
                r.manager_pid = 0;
                if r.control_fd >= 0 {
                    // SAFETY: our own descriptor, closed once.
                    unsafe { libc::close(r.control_fd) };
                    r.control_fd = -1;
                }
                let mut mpm_state: c_int = 0;
                // SAFETY: ap_mpm_query writes one int.
                unsafe { sys::ap_mpm_query(sys::AP_MPMQ_MPM_STATE, &mut mpm_state) };
                if mpm_state == sys::AP_MPMQ_STOPPING {
                    return;
                }
                // APR passes the exit code, or the signal number for a
                // process killed by a signal (not a wait status).
                let how = match status {
                    crate::manager::EXIT_PANIC => "exited with status 70 (it panicked; see PD0210 above)".to_string(),
                    _ if reason == sys::APR_OC_REASON_LOST => "was lost".to_string(),
                    n => format!("ended with exit status or signal {n}"),
                };
                if status == crate::manager::EXIT_STARTUP_FAILURE {
                    pd_log!(
                        msg::MANAGER_RESTARTED,
                        pid = dead,
                        "the process manager (pid {dead}) could not start; not restarting it. Fix the cause logged above and restart Apache"
                    );
                    return;
                }
                pd_log!(
                    msg::MANAGER_RESTARTED,
                    pid = dead,
                    "the process manager (pid {dead}) {how}; starting a new one"
                );
                launch(state);
            }
            // SAFETY: ap_state_query may be called at any time.
            sys::APR_OC_REASON_UNREGISTER
                if unsafe { sys::ap_state_query(sys::AP_SQ_MAIN_STATE) } == sys::AP_SQ_MS_EXITING
                    && r.manager_pid > 0 =>
            {
                // httpd is stopping: the manager stops every group.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(r.manager_pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
                r.manager_pid = 0;
                if r.control_fd >= 0 {
                    // SAFETY: our own descriptor, closed once.
                    unsafe { libc::close(r.control_fd) };
                    r.control_fd = -1;
                }
            }
            _ => {}
        }
    })
}

/// In every Apache child, before any other module's child_init: the
/// parent's end of the control channel to the root manager is closed, so
/// code running in a child (mod_php, mod_lua, a module's bug) holds no way
/// to talk to a root process.
unsafe extern "C" fn child_init(_pchild: *mut sys::apr_pool_t, _s: *mut sys::server_rec) {
    guard((), || {
        // Children reap nothing of the parent's: SIGCHLD as it was.
        crate::os::stop_waking_on_child_exit();
        crate::os::note_own_pid();
        let r = retained();
        // SAFETY: this child's own copy of the retained data; the child is
        // single-threaded while child_init hooks run.
        unsafe {
            if (*r).control_fd >= 0 {
                libc::close((*r).control_fd);
                (*r).control_fd = -1;
            }
        }
    })
}

/// After every module's post_config, in the parent that will run the MPM:
/// a child's exit wakes the parent at once (see `os::wake_on_child_exit`),
/// so a graceful restart has no second-long pause in intake. Undone before
/// this .so is unloaded (pconf's cleanups run before mod_so's, which was
/// registered first).
unsafe extern "C" fn post_config_last(
    pconf: *mut sys::apr_pool_t,
    _plog: *mut sys::apr_pool_t,
    _ptemp: *mut sys::apr_pool_t,
    _main: *mut sys::server_rec,
) -> c_int {
    guard(sys::OK, || {
        // SAFETY: ap_state_query may be called from any hook.
        let state = unsafe { sys::ap_state_query(sys::AP_SQ_MAIN_STATE) };
        if state == sys::AP_SQ_MS_CREATE_PRE_CONFIG {
            return sys::OK;
        }
        // SAFETY: registering a cleanup (a function of this .so, run before
        // mod_so unloads it) on the live configuration pool.
        unsafe {
            sys::apr_pool_cleanup_register(pconf, null(), Some(restore_sigchld), Some(sys::apr_pool_cleanup_null));
        }
        if !crate::os::wake_on_child_exit() {
            pd_log!(
                msg::SIGCHLD_TAKEN,
                "SIGCHLD is handled or ignored by another module: a graceful restart keeps Apache's one-second pause before new children start"
            );
        }
        sys::OK
    })
}

unsafe extern "C" fn restore_sigchld(_data: *mut c_void) -> sys::apr_status_t {
    guard((), crate::os::stop_waking_on_child_exit);
    sys::APR_SUCCESS as sys::apr_status_t
}

unsafe extern "C" fn post_config(
    pconf: *mut sys::apr_pool_t,
    _plog: *mut sys::apr_pool_t,
    _ptemp: *mut sys::apr_pool_t,
    main: *mut sys::server_rec,
) -> c_int {
    guard(sys::OK, || {
        // SAFETY: ap_state_query may be called from any hook.
        if unsafe { sys::ap_state_query(sys::AP_SQ_MAIN_STATE) } == sys::AP_SQ_MS_CREATE_PRE_CONFIG {
            // The first, dry pass at start-up: nothing to do until the real one.
            return sys::OK;
        }
        let mut s = main;
        while !s.is_null() {
            // SAFETY: Apache's list of servers, merged; single-threaded here,
            // and no view of these configs exists yet.
            unsafe {
                server_config(s).resolve_protocols();
                s = (*s).next;
            }
        }
        let views = server_views(main, pconf);
        // SAFETY: pconf is the configuration pool.
        unsafe { sys::ap_add_version_component(pconf, c"mod_procd/0.1.0".as_ptr()) };
        let runtime_dir = runtime_dir(main, pconf);
        let mut plan = build_plan(&views, &apache_identity(), &runtime_dir);
        // Nobody else's SIGCHLD handler: ours goes in at post_config_last.
        plan.wake_parent = crate::os::sigchld_is_ours_to_take();
        let groups = plan.groups.len();
        attach_status_table(&plan.groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>());
        let plan_text = match plan.to_text() {
            Ok(t) => t,
            Err(e) => {
                pd_log!(msg::MANAGER_RESTARTED, "{e}");
                return sys::OK;
            }
        };
        // SAFETY: apr_pcalloc from the live configuration pool.
        let proc_ =
            unsafe { sys::apr_pcalloc(pconf, std::mem::size_of::<sys::apr_proc_t>()) }.cast::<sys::apr_proc_t>();
        let state = ParentState { plan_text, proc_, pconf, retained: retained() };
        // SAFETY: pconf is the configuration pool, cleared before unload.
        let state = unsafe { pool_box(pconf, state) };
        // SAFETY: `state` was just created and is alive in pconf.
        let st = unsafe { &*state };
        // SAFETY: retained numbers, single-threaded parent.
        let pid = unsafe { (*st.retained).manager_pid };
        if manager_alive(pid) {
            if let Err(e) = send_plan(st) {
                pd_log!(msg::MANAGER_RESTARTED, "{e}");
            }
            register_manager(state);
        } else if groups > 0 {
            launch(state);
        }
        pd_log!(
            msg::STARTED,
            "mod_procd {} configured: {groups} process group(s) in {} server(s), runtime dir {runtime_dir}",
            env!("CARGO_PKG_VERSION"),
            views.len()
        );
        sys::OK
    })
}
