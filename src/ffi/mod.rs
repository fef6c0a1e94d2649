//! Everything that touches Apache or APR, and all of mod_procd's `unsafe`.
//!
//! - `sys`: generated bindings, no logic.
//! - `apache`: the thin safe layer (pools, strings, logging, panic guard).
//! - `module`: the module record, directive table and hook functions.
//! - `request`: the request hooks and the handler's `Client` over
//!   `request_rec`; `filter`: the LINKREWRITE output filter.
//! - `shm`: procd-status's request counters in memory shared by httpd's
//!   processes; `status`: the `procd-status` handler.
//!
//! Tests and fuzz builds (`feature = "fuzzing"`) leave out everything that
//! references Apache symbols, so that they link without httpd.

#[cfg(not(any(test, feature = "fuzzing")))]
mod apache;
#[cfg(not(any(test, feature = "fuzzing")))]
mod filter;
#[cfg(not(any(test, feature = "fuzzing")))]
pub mod module;
#[cfg(not(any(test, feature = "fuzzing")))]
mod request;
pub(crate) mod shm;
#[cfg(not(any(test, feature = "fuzzing")))]
mod status;
#[cfg(not(any(test, feature = "fuzzing")))]
mod sys;
