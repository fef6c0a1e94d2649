//! The module record, the directive table and the functions Apache calls.
//!
//! The record and table are Rust statics (a `module` defined in C is not
//! exported from a Rust cdylib). Every `extern "C"` function here catches
//! panics and hands plain Rust values to `crate::config`.

use super::apache::{
    Level, Server, guard, install_panic_hook, log_server, msg, pool_box, pool_string, string_from,
};
use super::sys;
use crate::config::check::{ServerView, check_configuration};
use crate::config::scope::{DirConfig, ServerConfig};
use crate::config::{DirectiveContext, Origin, access::Identity};
use std::ffi::{c_char, c_int, c_void};
use std::ptr::{null, null_mut};

const fn raw_directive(
    name: &'static std::ffi::CStr,
    where_: c_int,
    help: &'static std::ffi::CStr,
) -> sys::command_rec {
    sys::command_rec {
        name: name.as_ptr(),
        func: sys::cmd_func {
            raw_args: Some(directive),
        },
        cmd_data: null_mut(),
        req_override: where_,
        args_how: sys::cmd_how_RAW_ARGS,
        errmsg: help.as_ptr(),
    }
}

const SERVER: c_int = sys::RSRC_CONF;
const SERVER_AND_DIR: c_int = sys::RSRC_CONF | sys::ACCESS_CONF;

/// The directive table. Apache reads it; it must outlive the module.
static mut COMMANDS: [sys::command_rec; 7] = [
    raw_directive(
        c"LanguageGroup",
        SERVER,
        c"NAME language=LANG [key=value ...]: declare a process group",
    ),
    raw_directive(
        c"LanguageHandler",
        SERVER_AND_DIR,
        c"GROUP .ext [.ext ...]: files with these extensions run in GROUP",
    ),
    raw_directive(
        c"LanguageMount",
        SERVER,
        c"/prefix GROUP: the URL space under /prefix goes to GROUP's app=",
    ),
    raw_directive(
        c"LinkRewrite",
        SERVER_AND_DIR,
        c"FROM TO: rewrite URL prefix FROM to TO in HTML and headers",
    ),
    raw_directive(
        c"ProcdRuntimeDir",
        SERVER,
        c"DIR: where group sockets and state live",
    ),
    raw_directive(
        c"ProcdLanguages",
        SERVER,
        c"FILE.toml: add or override language definitions",
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
        // SAFETY: hook registration during register_hooks, as Apache expects.
        unsafe {
            sys::ap_hook_check_config(Some(check_config), null(), null(), sys::APR_HOOK_MIDDLE);
            sys::ap_hook_post_config(Some(post_config), null(), null(), sys::APR_HOOK_MIDDLE);
        }
    })
}

unsafe extern "C" fn create_server_config(
    pool: *mut sys::apr_pool_t,
    _s: *mut sys::server_rec,
) -> *mut c_void {
    // SAFETY: `pool` is the configuration pool Apache passes here.
    guard(null_mut(), || {
        unsafe { pool_box(pool, ServerConfig::default()) }.cast()
    })
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

unsafe extern "C" fn create_dir_config(
    pool: *mut sys::apr_pool_t,
    _dir: *mut c_char,
) -> *mut c_void {
    // SAFETY: `pool` is the configuration pool Apache passes here.
    guard(null_mut(), || {
        unsafe { pool_box(pool, DirConfig::default()) }.cast()
    })
}

unsafe extern "C" fn merge_dir_config(
    pool: *mut sys::apr_pool_t,
    base: *mut c_void,
    add: *mut c_void,
) -> *mut c_void {
    guard(null_mut(), || {
        // SAFETY: both came from create/merge_dir_config of this module.
        let (base, add) = unsafe { (&*base.cast::<DirConfig>(), &*add.cast::<DirConfig>()) };
        // SAFETY: `pool` is the configuration or the request pool; both are
        // cleared before the module can be unloaded.
        unsafe { pool_box(pool, DirConfig::merge(base, add)) }.cast()
    })
}

/// This module's configuration for a server.
///
/// # Safety
/// `s` is a live server_rec whose module_config Apache built with our
/// create/merge_server_config; the result must not outlive the config pool.
unsafe fn server_config<'a>(s: *mut sys::server_rec) -> &'a mut ServerConfig {
    // SAFETY: per the contract; Apache stores our pointer at our index.
    unsafe {
        &mut *sys::procd_get_module_config((*s).module_config, &raw const procd_module)
            .cast::<ServerConfig>()
    }
}

/// The one handler for all directives (RAW_ARGS): works out the context and
/// hands name and arguments to `crate::config`.
unsafe extern "C" fn directive(
    cmd: *mut sys::cmd_parms,
    mconfig: *mut c_void,
    args: *const c_char,
) -> *const c_char {
    // SAFETY: Apache passes a live cmd_parms for the directive being read.
    let pool = unsafe { (*cmd).pool };
    let outcome = guard(
        Err(
            "mod_procd: internal error while reading this directive (see the error log)"
                .to_string(),
        ),
        || {
            // SAFETY: during configuration reading, cmd and everything it points
            // to are valid and only this thread touches the configuration.
            unsafe {
                let name = string_from((*(*cmd).cmd).name);
                let args = string_from(args);
                let d = (*cmd).directive;
                let origin = if d.is_null() {
                    Origin::default()
                } else {
                    Origin {
                        file: string_from((*d).filename),
                        line: (*d).line_num as u32,
                    }
                };
                let ctx = DirectiveContext {
                    origin,
                    in_vhost: (*(*cmd).server).is_virtual != 0,
                    in_section: !(*cmd).path.is_null(),
                    server_root: string_from(sys::ap_server_root).into(),
                };
                let server = server_config((*cmd).server);
                match name.as_str() {
                    "LanguageHandler" | "LinkRewrite" => {
                        let dir = &mut *mconfig.cast::<DirConfig>();
                        let refs = dir.apply(&name, &args, &ctx)?;
                        server.group_refs.extend(refs);
                        Ok(())
                    }
                    _ => server.apply(&name, &args, &ctx),
                }
            }
        },
    );
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
        (
            string_from(sys::ap_unixd_config.user_name),
            sys::ap_unixd_config.user_id,
            sys::ap_unixd_config.group_id,
        )
    };
    Identity::new(&name, uid, gid)
}

/// Cross-checks the whole configuration. Runs at every start and restart,
/// and in `apachectl configtest`, after all directives are read.
unsafe extern "C" fn check_config(
    _pconf: *mut sys::apr_pool_t,
    _plog: *mut sys::apr_pool_t,
    _ptemp: *mut sys::apr_pool_t,
    main: *mut sys::server_rec,
) -> c_int {
    guard(sys::HTTP_INTERNAL_SERVER_ERROR, || {
        let mut views = Vec::new();
        let mut s = main;
        while !s.is_null() {
            // SAFETY: Apache's list of servers, complete and merged by now.
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
                views.push(ServerView {
                    label,
                    config: server_config(s),
                });
                s = (*s).next;
            }
        }
        let errors = check_configuration(&views, &apache_identity());
        // SAFETY: `main` is the live main server.
        let server = unsafe { Server::from_raw(main) };
        for e in &errors {
            log_server(
                Some(server),
                Level::StartupError,
                &format!("{}: {e}", msg::CONFIG_CHECK),
            );
        }
        if errors.is_empty() {
            sys::OK
        } else {
            sys::HTTP_INTERNAL_SERVER_ERROR
        }
    })
}

unsafe extern "C" fn post_config(
    pconf: *mut sys::apr_pool_t,
    _plog: *mut sys::apr_pool_t,
    _ptemp: *mut sys::apr_pool_t,
    main: *mut sys::server_rec,
) -> c_int {
    guard(sys::OK, || {
        // SAFETY: ap_state_query may be called from any hook.
        if unsafe { sys::ap_state_query(sys::AP_SQ_MAIN_STATE) } == sys::AP_SQ_MS_CREATE_PRE_CONFIG
        {
            // The first, dry pass at start-up: nothing to do until the real one.
            return sys::OK;
        }
        let mut groups = 0usize;
        let mut servers = 0usize;
        let mut s = main;
        while !s.is_null() {
            // SAFETY: Apache's complete list of servers.
            unsafe {
                groups += server_config(s).groups.len();
                servers += 1;
                s = (*s).next;
            }
        }
        // SAFETY: `main` is live; pconf is the configuration pool.
        let (config, runtime_default) = unsafe {
            sys::ap_add_version_component(pconf, c"mod_procd/0.1.0".as_ptr());
            (
                server_config(main),
                string_from(sys::ap_runtime_dir_relative(pconf, c"procd".as_ptr())),
            )
        };
        let runtime_dir = config
            .runtime_dir
            .as_ref()
            .map_or(runtime_default, |d| d.display().to_string());
        // SAFETY: `main` is the live main server.
        let server = unsafe { Server::from_raw(main) };
        log_server(
            Some(server),
            Level::Notice,
            &format!(
                "{}: mod_procd {} configured: {groups} process group(s) in {servers} server(s), runtime dir {runtime_dir}",
                msg::STARTED,
                env!("CARGO_PKG_VERSION")
            ),
        );
        sys::OK
    })
}
