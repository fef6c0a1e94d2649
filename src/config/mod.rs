//! mod_procd's configuration: every directive parsed into typed Rust values,
//! with Apache's per-server and per-directory create/merge semantics.
//!
//! This module is plain safe Rust. The FFI layer hands it the directive
//! name, the raw argument words and where they were written
//! ([`DirectiveContext`]); it answers with a typed configuration or a
//! sentence naming the directive, the value and what is allowed.

#![forbid(unsafe_code)]

pub mod access;
pub mod check;
pub mod group;
pub mod languages;
pub mod plan;
pub mod scope;
pub mod units;
pub mod words;

/// Where a directive was written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    pub file: String,
    pub line: u32,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// What the FFI layer knows about the place a directive appears.
#[derive(Debug, Clone)]
pub struct DirectiveContext {
    pub origin: Origin,
    /// Inside a `<VirtualHost>`.
    pub in_vhost: bool,
    /// Inside `<Directory>`, `<Location>`, `<Files>` (per-directory scope).
    pub in_section: bool,
    /// The path of the `<Directory>` section the directive is in, if any.
    pub directory: Option<std::path::PathBuf>,
    /// Apache's ServerRoot, for relative paths.
    pub server_root: std::path::PathBuf,
}
