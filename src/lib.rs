//! mod_procd: an Apache httpd 2.4 module that runs web applications in any
//! language as supervised, per-vhost process groups.
//!
//! Layers, each using only those below it:
//! - `ffi`: the generated Apache/APR bindings, the C shim, the thin safe
//!   Apache layer, the module record, the directive table and every
//!   function Apache calls (hooks, handler glue, the LINKREWRITE filter).
//!   All `unsafe` that touches Apache lives here.
//! - `handler`: one request to a group, a backend per protocol, over the
//!   `Client` trait that `ffi` implements (safe Rust).
//! - `manager`: the process manager forked from httpd (safe Rust); after
//!   the fork it calls nothing of Apache's.
//! - `os`: process primitives that are unsafe calls (fork, fork+exec of a
//!   worker, fd placement); used by the manager without passing through
//!   the Apache layer.
//! - `config`: directive parsing, merging, validation and the plan (safe).
//! - `rewrite`: LinkRewrite's streaming scanner (safe, knows no Apache).
//! - `status`: procd-status's data (the manager's snapshot, the request
//!   counters) and its HTML, JSON and Prometheus renderings (safe, knows
//!   no Apache; `ffi` reads the shared counters, `manager` writes its
//!   snapshot).
//! - `protocol`: the codecs and contracts: worker frames, FastCGI records,
//!   the CGI and HTTP response heads, the control
//!   channel, the launch contract (safe, knows nothing of the others).

#![cfg_attr(any(test, feature = "fuzzing"), allow(dead_code))]

/// The CGI launcher is a program of its own (build.rs builds it); compiled
/// here too for its unit tests, its fuzz target and clippy.
#[cfg(any(test, feature = "fuzzing"))]
#[path = "launcher/procd_cgi.rs"]
#[allow(dead_code)]
mod cgi_launcher;
mod config;
mod ffi;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_api;
mod handler;
mod logid;
mod manager;
mod os;
mod protocol;
mod rewrite;
mod status;
