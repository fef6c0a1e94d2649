//! The echo test worker (tests/workers/echo_worker.py) over its group's
//! socket: one line in, one line out.

use super::apache::{Apache, wait_until};
use super::procs::manager_of;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Sends one line to a group's socket and returns the answer line.
pub fn ask(socket: &Path, line: &str) -> Result<String, String> {
    use std::os::unix::net::UnixStream;
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(format!("{line}\n").as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| format!("read: {e}"))?;
    if out.is_empty() {
        return Err("connection closed without an answer".into());
    }
    Ok(out.trim().to_string())
}

/// A field (`gen=`, `pid=`...) of an echo worker's answer.
pub fn field<'a>(answer: &'a str, name: &str) -> &'a str {
    answer.split_whitespace().find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('='))).unwrap_or("")
}

impl Apache {
    /// The group's stable socket path.
    pub fn socket(&self, group: &str) -> PathBuf {
        self.dir.join("run/procd").join(format!("{group}.sock"))
    }

    /// Waits until `group` answers; returns the answer.
    pub fn wait_for_group(&self, group: &str, limit: Duration) -> String {
        let mut last = String::new();
        if wait_until(limit, || match ask(&self.socket(group), "who") {
            Ok(a) => {
                last = a;
                true
            }
            Err(e) => {
                last = e;
                false
            }
        }) {
            last
        } else {
            self.fail(&format!("group {group} does not answer within {limit:?}: {last}"))
        }
    }

    pub fn manager(&self) -> i32 {
        let master = self.master.unwrap_or_else(|| self.fail("not started"));
        let mut found = None;
        wait_until(Duration::from_secs(5), || {
            found = manager_of(master);
            found.is_some()
        });
        found.unwrap_or_else(|| self.fail("no procd-manager process under the httpd master"))
    }

    pub fn log_count(&self, needle: &str) -> usize {
        self.error_log().matches(needle).count()
    }

    /// Forgets the master (for tests that kill it themselves).
    pub fn forget_master(&mut self) -> Option<i32> {
        self.master.take()
    }
}
