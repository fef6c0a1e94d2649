//! The manager's log files: its own events go to the main server's error
//! log (or, with a `log` field, to that group's log: errors to both), each
//! group's worker output to the group's log, in Apache's format with time,
//! group and pid on every line. `subscriber` is the manager's `tracing`
//! subscriber, which writes `pd_log!` events here.
//!
//! The manager is root and a group's log may sit in a directory its tenant
//! can write. So a log is opened without following links, without blocking
//! (a FIFO planted there cannot stall the manager), and only if it is a
//! regular file; and when a tenant could change what its path names, it is
//! opened with the tenant's own credentials, so the tenant can make root
//! write nowhere it could not write itself. Worker bytes are escaped:
//! no control character of theirs reaches a log file.

use crate::logid::{Level, Record};
use crate::os::log_time;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

#[derive(Default)]
pub struct Logs {
    files: BTreeMap<String, File>,
    /// Who a log belongs to (the group that names it in `error-log=`):
    /// uid, gid and supplementary groups. Kept across configurations, so
    /// that workers of a generation still draining write as their owner.
    owners: BTreeMap<String, (u32, u32, Vec<u32>)>,
    /// Logs that could not be opened this generation: their lines go to
    /// the main log (the reason was logged once).
    failed: std::collections::BTreeSet<String>,
    main: String,
    pid: u32,
}

/// Escapes bytes for a log line as Apache's `ap_escape_logitem` does:
/// control characters (TAB included: no control character of a worker's
/// reaches a log), `\` and non-UTF-8 bytes become `\xNN` (or `\\`).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut b = [0u8; 4];
                    for byte in c.encode_utf8(&mut b).bytes() {
                        out.push_str(&format!("\\x{byte:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Opens a log for appending: no link followed, no blocking open, a
/// regular file with no other name (a hard link planted to another file),
/// and never a controlling terminal (when httpd runs on a terminal, the
/// manager leads the session its workers run in).
fn open_log(path: &str) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if std::os::unix::fs::MetadataExt::nlink(&meta) > 1 {
        return Err(std::io::Error::other("the file has other names (hard links)"));
    }
    Ok(file)
}

/// Opens `path` with the file-system identity of `uid`/`gid` (and no
/// supplementary group of root's), then becomes root again. The manager is
/// single-threaded, so nothing else runs meanwhile.
fn open_log_as(path: &str, uid: u32, gid: u32, groups: &[u32]) -> std::io::Result<File> {
    use nix::unistd::{Gid, Uid, getgroups, setfsgid, setfsuid, setgroups};
    let saved = getgroups().map_err(std::io::Error::from)?;
    let theirs: Vec<Gid> = std::iter::once(gid).chain(groups.iter().copied()).map(Gid::from_raw).collect();
    setgroups(&theirs).map_err(std::io::Error::from)?;
    setfsgid(Gid::from_raw(gid));
    setfsuid(Uid::from_raw(uid));
    let opened = open_log(path);
    setfsuid(Uid::from_raw(0));
    setfsgid(Gid::from_raw(0));
    let restored = setgroups(&saved);
    if restored.is_err() {
        // Never go on with a tenant's group as a supplementary group.
        crate::os::exit_now(super::EXIT_PANIC);
    }
    opened
}

/// Appends one line to `path` (for the panic hook: no state needed).
pub fn append_line(path: &str, line: &str) {
    if let Ok(mut f) = open_log(path) {
        let _ = f.write_all(line.as_bytes());
    }
}

impl Logs {
    pub fn new() -> Logs {
        Logs { pid: std::process::id(), ..Logs::default() }
    }

    /// Sets the main log and forgets files no longer named (reopened on
    /// next use, which also follows log rotation at each graceful restart).
    pub fn reset(&mut self, main: &str) {
        self.files.clear();
        self.failed.clear();
        self.main = main.to_string();
    }

    /// Sets the main log if none is known yet (before any plan applied).
    pub fn reset_if_unset(&mut self, main: &str) {
        if self.main.is_empty() {
            self.main = main.to_string();
        }
    }

    /// `path` is the log of a group running as `uid`/`gid` with `groups`.
    pub fn set_owner(&mut self, path: &str, uid: u32, gid: u32, groups: &[u32]) {
        if path != self.main {
            self.owners.insert(path.to_string(), (uid, gid, groups.to_vec()));
        }
    }

    /// Opens a log: as root where only root controls its directory (and
    /// for the main log, which Apache itself opens as root), else with its
    /// group's credentials; a log of nobody's in a directory others control
    /// is not opened.
    fn open(&self, path: &str) -> std::io::Result<File> {
        let dir = Path::new(path).parent().unwrap_or(Path::new("/"));
        if path == self.main || crate::config::access::only_root_writes(dir) {
            return open_log(path);
        }
        match self.owners.get(path) {
            Some((uid, gid, groups)) => open_log_as(path, *uid, *gid, groups),
            None => Err(std::io::Error::other("users other than root can write its directory")),
        }
    }

    fn write(&mut self, path: &str, line: &str) {
        if self.failed.contains(path) {
            let main = self.main.clone();
            self.write(&main, line);
            return;
        }
        if !self.files.contains_key(path) {
            match self.open(path) {
                Ok(f) => {
                    self.files.insert(path.to_string(), f);
                }
                Err(e) => {
                    if path != self.main {
                        self.failed.insert(path.to_string());
                        let note = format!(
                            "[{}] [procd:error] [pid {}] {}: cannot open the log {}: {e}; its lines go here\n",
                            log_time(),
                            self.pid,
                            crate::logid::MANAGER,
                            escape(path.as_bytes())
                        );
                        let main = self.main.clone();
                        self.write(&main, &note);
                        self.write(&main, line);
                    }
                    return;
                }
            }
        }
        if let Some(f) = self.files.get_mut(path) {
            let _ = f.write_all(line.as_bytes());
        }
    }

    /// One event: to the group's log when it names one (errors and
    /// warnings also to the main log), else to the main log.
    fn event(&mut self, rec: &Record) {
        let line = format!("[{}] [procd:{}] [pid {}] {}\n", log_time(), rec.level.name(), self.pid, rec.text());
        let main = self.main.clone();
        match &rec.log {
            Some(path) if *path != main => {
                self.write(path, &line);
                if !matches!(rec.level, Level::Notice | Level::Info) {
                    self.write(&main, &line);
                }
            }
            _ => self.write(&main, &line),
        }
    }

    /// One line a worker printed, escaped.
    pub fn worker_output(&mut self, path: &str, group: &str, pid: i32, text: &[u8]) {
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let line = format!("[{}] [procd:app] [group {group}] [pid {pid}] {}\n", log_time(), escape(text));
        self.write(path, &line);
    }
}

/// The manager's logs, shared by the manager (configuration, worker
/// output) and its `tracing` subscriber (events). The manager is
/// single-threaded: the lock is never contended.
#[derive(Clone, Default)]
pub struct SharedLogs(Arc<Mutex<Logs>>);

impl SharedLogs {
    pub fn new() -> SharedLogs {
        SharedLogs(Arc::new(Mutex::new(Logs::new())))
    }

    /// The logs, also after a panic while they were held.
    pub fn lock(&self) -> MutexGuard<'_, Logs> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The subscriber that writes this process's events into these logs.
    pub fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
        let logs = self.clone();
        crate::logid::Subscriber {
            write: move |rec: Record| match logs.0.try_lock() {
                Ok(mut l) => l.event(&rec),
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().event(&rec),
                // Only an event emitted while the manager holds its logs
                // (a bug): dropped rather than deadlocking the manager.
                Err(std::sync::TryLockError::WouldBlock) => debug_assert!(false, "event while the logs are held"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_bytes_are_escaped() {
        assert_eq!(escape(b"plain text \xc3\xa9"), "plain text \u{e9}");
        assert_eq!(escape(b"a\x1b[31mred\rb\x00\\"), "a\\x1b[31mred\\x0db\\x00\\\\");
        assert_eq!(escape(b"bad \xff byte"), "bad \\xff byte");
        assert_eq!(escape("c1 \u{85}".as_bytes()), "c1 \\xc2\\x85");
        assert_eq!(escape(b"col1\tcol2\x0b\x0c"), "col1\\x09col2\\x0b\\x0c");
    }

    #[test]
    fn logs_refuse_links_and_fifos() {
        let dir = std::env::temp_dir().join(format!("procd-log-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, "").unwrap();
        let link = dir.join("link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_log(link.to_str().unwrap()).is_err());
        let fifo = dir.join("fifo.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(open_log(fifo.to_str().unwrap()).is_err(), "a FIFO must be refused, without blocking");
        assert!(open_log(dir.join("ok.log").to_str().unwrap()).is_ok());
        assert_eq!(std::fs::read(&target).unwrap(), b"");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
