//! Everything that touches Apache or APR, and all of mod_procd's `unsafe`.
//!
//! - `sys`: generated bindings, no logic.
//! - `apache`: the thin safe layer (pools, strings, logging, panic guard).
//! - `module`: the module record, directive table and hook functions.

mod apache;
pub mod module;
mod sys;
