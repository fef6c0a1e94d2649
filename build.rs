//! Generates Rust bindings for the Apache 2.4 / APR headers and compiles the
//! small C shim (include/procd_shim.h, src/ffi/shim.c).
//!
//! Include paths come from the host's own tools, as `apxs` users expect:
//! `apxs -q INCLUDEDIR` and `apr-1-config --includes --cppflags`
//! (override with the APXS / APR_CONFIG environment variables).

use std::env;
use std::path::PathBuf;
use std::process::Command;

const MISSING: &str = "mod_procd: Apache/APR development headers not found; \
install them with: apt-get install apache2-dev libapr1-dev libaprutil1-dev libclang-dev";

fn tool_output(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => {
            // One line, naming what to install; no backtrace-shaped noise.
            eprintln!("{MISSING} (running `{tool} {}` failed)", args.join(" "));
            std::process::exit(1);
        }
    }
}

fn main() {
    let apxs = env::var("APXS").unwrap_or_else(|_| "apxs".into());
    let apr_config = env::var("APR_CONFIG").unwrap_or_else(|_| "apr-1-config".into());
    println!("cargo:rerun-if-env-changed=APXS");
    println!("cargo:rerun-if-env-changed=APR_CONFIG");
    println!("cargo:rerun-if-changed=include/procd_wrapper.h");
    println!("cargo:rerun-if-changed=include/procd_shim.h");
    println!("cargo:rerun-if-changed=src/ffi/shim.c");

    let httpd_include = tool_output(&apxs, &["-q", "INCLUDEDIR"]);
    let apr_flags = tool_output(&apr_config, &["--includes", "--cppflags"]);

    let mut clang_args: Vec<String> = vec![format!("-I{httpd_include}"), "-Iinclude".into()];
    clang_args.extend(apr_flags.split_whitespace().map(str::to_string));
    if !PathBuf::from(&httpd_include).join("httpd.h").exists() {
        eprintln!("{MISSING} ({httpd_include}/httpd.h is missing)");
        std::process::exit(1);
    }

    let mut shim = cc::Build::new();
    shim.file("src/ffi/shim.c").warnings(true);
    for arg in &clang_args {
        if let Some(dir) = arg.strip_prefix("-I") {
            shim.include(dir);
        } else if let Some(def) = arg.strip_prefix("-D") {
            let (k, v) = def.split_once('=').map_or((def, None), |(k, v)| (k, Some(v)));
            shim.define(k, v);
        }
    }
    shim.compile("procd_shim");

    let bindings = bindgen::Builder::default()
        .header("include/procd_wrapper.h")
        .clang_args(&clang_args)
        .allowlist_function("(ap|apr|apu|procd)_.*")
        .allowlist_type(
            "(request_rec|server_rec|conn_rec|cmd_parms|command_rec|module|process_rec|ap_conf_vector_t|apr_.*|ap_.*|unixd_config_rec)",
        )
        .allowlist_var("(AP_|APR_|APLOG_|HTTP_|M_|OK|DECLINED|DONE|RSRC_CONF|ACCESS_CONF|OR_|MODULE_MAGIC_).*")
        .allowlist_var("ap_unixd_config|ap_server_conf|ap_server_root|ap_core_output_filter_handle")
        .allowlist_var("APR_OC_REASON_.*|OPT_.*|REQUEST_CHUNKED_.*|DEFAULT_LIMIT_BLANK_LINES|SERVER_BUSY_KEEPALIVE")
        .blocklist_function(".*_v(printf|snprintf|formatter)")
        .blocklist_function("apr_pvsprintf|ap_log_.*_v|ap_vrprintf|apr_vsnprintf|apr_vformatter")
        .default_macro_constant_type(bindgen::MacroTypeVariation::Signed)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate();
    let bindings = match bindings {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{MISSING} (bindgen: {e})");
            std::process::exit(1);
        }
    };
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    if let Err(e) = bindings.write_to_file(out.join("bindings.rs")) {
        eprintln!("mod_procd: cannot write bindings: {e}");
        std::process::exit(1);
    }
    build_cgi_launcher(&out);
}

/// The CGI launcher (src/launcher/procd_cgi.rs) is a program of its own,
/// standard library only, that the .so carries (include_bytes!) and the
/// manager writes to RUNTIME/loaders/: built here with the same rustc for
/// the same target, optimised, stripped, aborting on panic.
fn build_cgi_launcher(out: &std::path::Path) {
    const SOURCE: &str = "src/launcher/procd_cgi.rs";
    println!("cargo:rerun-if-changed={SOURCE}");
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let status = Command::new(&rustc)
        .args(["--edition", "2024", "--crate-name", "procd_cgi_launcher", "--crate-type", "bin"])
        .args(["-C", "opt-level=2", "-C", "panic=abort", "-C", "strip=symbols", "--target", &target])
        .arg("-o")
        .arg(out.join("procd-cgi-launcher"))
        .arg(SOURCE)
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("mod_procd: building the CGI launcher ({rustc} {SOURCE}) failed: {status:?}");
        std::process::exit(1);
    }
}
