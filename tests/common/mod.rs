//! The real-Apache test harness every integration test uses.
//!
//! Each `Apache` gets its own directory under /tmp with a generated
//! httpd.conf (Listen on a free 127.0.0.1 port, its own PidFile, ErrorLog,
//! DefaultRuntimeDir and Mutex directory) that loads the freshly built
//! mod_procd.so. It is started with `apache2 -f CONF -k start`, stopped by
//! the pid it wrote, and on drop asserts that no process it started is left.
//! On failure the config and error log are printed (see `Apache::fail`).
//!
//! Modules: `apache` (the instance), `procs` (/proc inspection), `users`
//! (system users and groups), `http` (the HTTP client), `logs` (times of
//! error-log lines), `echo` (the echo worker's line protocol), `ws` (a
//! WebSocket client). Everything
//! is re-exported here, so tests `use common::*;`.

#![allow(dead_code)]

pub mod apache;
pub mod echo;
pub mod http;
pub mod logs;
pub mod procs;
pub mod users;
pub mod ws;

// Not every test binary uses every module.
#[allow(unused_imports)]
pub use apache::*;
#[allow(unused_imports)]
pub use echo::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use logs::*;
#[allow(unused_imports)]
pub use procs::*;
#[allow(unused_imports)]
pub use users::*;
#[allow(unused_imports)]
pub use ws::*;
