//! The manager's log files: its own lines go to the main server's error
//! log, each group's worker output to the group's log, in Apache's format
//! with time, group and pid on every line.

use crate::ffi::os::log_time;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

#[derive(Default)]
pub struct Logs {
    files: BTreeMap<String, File>,
    main: String,
    pid: u32,
}

impl Logs {
    pub fn new() -> Logs {
        Logs { files: BTreeMap::new(), main: String::new(), pid: std::process::id() }
    }

    /// Sets the main log and forgets files no longer named (reopened on
    /// next use, which also follows log rotation at each graceful restart).
    pub fn reset(&mut self, main: &str) {
        self.files.clear();
        self.main = main.to_string();
    }

    fn write(&mut self, path: &str, line: &str) {
        if !self.files.contains_key(path) {
            match OpenOptions::new().append(true).create(true).mode(0o640).open(path) {
                Ok(f) => {
                    self.files.insert(path.to_string(), f);
                }
                Err(_) => return,
            }
        }
        if let Some(f) = self.files.get_mut(path) {
            let _ = f.write_all(line.as_bytes());
        }
    }

    /// A line of the manager's own, with a stable id, to the main log.
    pub fn manager(&mut self, level: &str, id: &str, text: &str) {
        let line = format!("[{}] [procd:{level}] [pid {}] {id}: {text}\n", log_time(), self.pid);
        let main = self.main.clone();
        self.write(&main, &line);
    }

    /// A line about one group, to that group's log and (for errors) the main log.
    pub fn group(&mut self, path: &str, level: &str, id: &str, group: &str, text: &str) {
        let line = format!("[{}] [procd:{level}] [pid {}] {id}: group {group}: {text}\n", log_time(), self.pid);
        self.write(path, &line);
        if path != self.main && level != "notice" && level != "info" {
            let main = self.main.clone();
            self.write(&main, &line);
        }
    }

    /// One line a worker printed.
    pub fn worker_output(&mut self, path: &str, group: &str, pid: i32, text: &[u8]) {
        let text = String::from_utf8_lossy(text);
        let line =
            format!("[{}] [procd:app] [group {group}] [pid {pid}] {}\n", log_time(), text.trim_end_matches('\r'));
        self.write(path, &line);
    }
}
