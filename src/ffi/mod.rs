//! Everything that touches Apache or APR, and all of mod_procd's `unsafe`.
//!
//! - `sys`: generated bindings, no logic.
//! - `apache`: the thin safe layer (pools, strings, logging, panic guard).
//! - `module`: the module record, directive table and hook functions.
//! - `os`: fork/exec and other process primitives that are unsafe calls.

#[cfg(not(test))]
mod apache;
#[cfg(not(test))]
mod filter;
#[cfg(not(test))]
pub mod module;
pub mod os;
#[cfg(not(test))]
mod request;
#[cfg(not(test))]
mod sys;
