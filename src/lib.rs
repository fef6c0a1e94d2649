//! mod_procd: an Apache httpd 2.4 module that runs web applications in any
//! language as supervised, per-vhost process groups.
//!
//! Layers, in one direction only:
//! - `ffi`: the generated Apache/APR bindings, the module record, the
//!   directive table and every function Apache calls. All `unsafe` lives here.
//! - `config`: directive parsing, merging and validation, in safe Rust.
//! - `manager`: the process manager forked from httpd, in safe Rust.

#![cfg_attr(any(test, feature = "fuzzing"), allow(dead_code))]

mod config;
mod ffi;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_api;
mod handler;
mod manager;
mod protocol;
mod rewrite;
