//! Every log id mod_procd writes, defined once: its number, its usual
//! level and what it means. Code names ids only through these constants,
//! and a test checks the README's table against this catalogue.
//!
//! Logging goes through `tracing`: code emits an event with `pd_log!`
//! (the id, structured fields such as `group`, `generation`, `pid`,
//! `reason`, and a sentence), and each process has one subscriber that
//! writes it where it belongs: Apache's error log in httpd processes
//! (`ffi::apache`), the server's or the group's log file in the manager
//! (`manager::log`). Both read an event the same way, with `Record`.

#![forbid(unsafe_code)]

/// Log levels, as Apache names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    Crit,
    Error,
    Warn,
    Notice,
    #[default]
    Info,
}

impl Level {
    /// The word Apache's error log uses (`[procd:notice]`).
    pub fn name(self) -> &'static str {
        match self {
            Level::Crit => "crit",
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Notice => "notice",
            Level::Info => "info",
        }
    }

    pub fn from_name(name: &str) -> Option<Level> {
        [Level::Crit, Level::Error, Level::Warn, Level::Notice, Level::Info].into_iter().find(|l| l.name() == name)
    }
}

/// One log id: the `PDnnnn` at the start of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogId {
    pub id: &'static str,
    /// The level it is usually logged at (some ids, e.g. a worker's exit,
    /// are logged lower when the event is expected).
    pub level: Level,
    pub meaning: &'static str,
}

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id)
    }
}

macro_rules! catalogue {
    ($($name:ident = $id:literal, $level:ident, $meaning:literal;)*) => {
        $(pub const $name: LogId = LogId { id: $id, level: Level::$level, meaning: $meaning };)*
        /// Every id, in order.
        #[allow(dead_code)]
        pub const ALL: &[LogId] = &[$($name),*];
    };
}

catalogue! {
    STARTED = "PD0001", Notice, "mod_procd configured (one line per configuration generation)";
    PANIC = "PD0002", Crit, "internal error (a Rust panic) in httpd: the directive or request fails, the process goes on";
    CONFIG_CHECK = "PD0101", Crit, "configuration check failure (configtest)";
    MANAGER_RESTARTED = "PD0102", Crit, "the process manager died, could not start, or was restarted by httpd";
    CONFIG_WARNING = "PD0103", Warn, "configtest warning (a group without user= shares Apache's identity; a listen=tcp group's port is open to every local user; intake=gil with threads=1 does nothing)";
    SIGCHLD_TAKEN = "PD0104", Notice, "another module handles SIGCHLD: graceful restarts keep Apache's one-second refill pause";
    STATUS_SHM = "PD0105", Warn, "procd-status: no shared memory for request counters, or a group without a counter slot";
    MANAGER = "PD0200", Notice, "the manager: configuration received, refused, or a log it cannot open";
    WORKER_STARTED = "PD0201", Notice, "worker started";
    WORKER_EXITED = "PD0202", Error, "worker exited, and how";
    BACKOFF = "PD0203", Error, "workers fail to start: back-off before the next attempt";
    GENERATION_SERVING = "PD0204", Notice, "a new generation is serving";
    GENERATION_FAILED = "PD0205", Error, "a generation failed to start, and what keeps serving";
    DRAINED = "PD0206", Notice, "a generation (or a removed group) has drained and stopped";
    STRAGGLER = "PD0207", Warn, "workers still running after graceful-timeout are signalled";
    SPAWN_FAILED = "PD0208", Error, "fork/exec of a worker failed";
    RESTART_FILE = "PD0209", Notice, "a restart file was touched: the group starts a new generation";
    MANAGER_PANIC = "PD0210", Crit, "the manager panicked: it exits with status 70 and httpd starts a new one";
    REFUSED = "PD0211", Crit, "bytes on the control channel from a process other than httpd, or the channel closed by one";
    OUTPUT_DROPPED = "PD0212", Warn, "worker output over the rate was dropped (one summary line per 5 s)";
    ORPHAN = "PD0213", Warn, "a process a worker left running was adopted by its generation or killed";
    CGROUPS = "PD0214", Notice, "no cgroup v2 containment on this system";
    SCALE = "PD0215", Notice, "a group scales up (requests wait, or a cold start) or down (a worker idle above MIN)";
    RECYCLE = "PD0216", Notice, "a worker is recycled (maximum-requests, memory-limit, lifetime): its replacement starts, then it retires";
    REQUEST_KILLED = "PD0217", Error, "a FastCGI worker held one request past request-timeout: the manager killed it";
    PORT_REFUSED = "PD0218", Error, "a listen=tcp program's port is listened on by another user (squatted): no request goes there, the generation is refused";
    PORT_DEAF = "PD0219", Warn, "a listen=tcp program runs but nothing listens on its port any more: the port is unpublished (503 at once) until it listens there again";
    SCRIPT_MISSING = "PD0301", Error, "script not found or unable to stat";
    EXECCGI_OFF = "PD0302", Error, "Options ExecCGI is off where the script is";
    GROUP_NOT_HERE = "PD0303", Error, "the group is not declared for this virtual host, or its language is unknown";
    REQUEST_FAILED = "PD0304", Error, "a request to a group failed before its answer started: the status and why";
    RESPONSE_CUT = "PD0305", Error, "a request failed after its headers were sent: the response was cut";
    WORKER_STDERR = "PD0306", Error, "a line a FastCGI worker sent on FCGI_STDERR (PHP's errors and warnings), escaped";
    STATUS_FAILED = "PD0307", Error, "procd-status could not answer (a format or state it cannot produce)";
    KEEPALIVE_THREAD_IDLE = "PD0308", Info, "ProcdKeepAliveThread has no effect: a connection's last output filter is not Apache's core one (once per child)";
    UNDECODABLE = "PD0401", Warn, "LinkRewrite: a content encoding it cannot decode passes through untouched";
    CHARSET = "PD0402", Warn, "LinkRewrite: a charset that is not ASCII-compatible passes through untouched";
    CORRUPT_BODY = "PD0403", Error, "LinkRewrite: a corrupt gzip/deflate body: 502 or a cut response";
    UNREADABLE_BODY = "PD0404", Error, "LinkRewrite: the body could not be read (e.g. a CGI script past its timeout)";
}

/// Emits one log event: `pd_log!(ID, field = value, ..., "sentence {}", x)`.
///
/// The Apache level is the catalogue's for `ID`, or the one given first
/// with `level: LEVEL,` (e.g. a worker's exit, logged lower when expected).
/// Fields the subscribers know: `group` (a group's name), `log` (in the
/// manager: the group's error log, where the line goes), `generation`,
/// `pid`, `reason`, and `startup` (configuration time: Apache prints the
/// line plainly, also at configtest). Any other field is kept for
/// consumers to come (the status page's counters) and not printed.
///
/// `tracing`'s own level is INFO for every event: Apache has more levels
/// than `tracing`, and the one that counts travels in the `level` field.
macro_rules! pd_log {
    (level: $level:expr, $id:expr, $($rest:tt)+) => {
        ::tracing::event!(
            target: "mod_procd",
            ::tracing::Level::INFO,
            pd = $id.id,
            level = $crate::logid::Level::name($level),
            $($rest)+
        )
    };
    ($id:expr, $($rest:tt)+) => {
        ::tracing::event!(
            target: "mod_procd",
            ::tracing::Level::INFO,
            pd = $id.id,
            level = $crate::logid::Level::name($id.level),
            $($rest)+
        )
    };
}
pub(crate) use pd_log;

/// One event as a subscriber reads it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record {
    /// The `PDnnnn` id (empty for an event from outside `pd_log!`).
    pub id: String,
    pub level: Level,
    pub group: Option<String>,
    pub log: Option<String>,
    pub generation: Option<u64>,
    pub pid: Option<i64>,
    pub reason: Option<String>,
    pub startup: bool,
    pub message: String,
}

impl Record {
    pub fn of(event: &tracing::Event<'_>) -> Record {
        let mut r = Record::default();
        event.record(&mut r);
        r
    }

    /// The line's text after Apache's (or the manager's) prefix:
    /// `PD0202: group shop: worker 812 exited ...`.
    pub fn text(&self) -> String {
        let mut out = String::with_capacity(self.id.len() + self.message.len() + 32);
        if !self.id.is_empty() {
            out.push_str(&self.id);
            out.push_str(": ");
        }
        if let Some(g) = &self.group {
            out.push_str("group ");
            out.push_str(g);
            out.push_str(": ");
        }
        out.push_str(&self.message);
        out
    }
}

impl tracing::field::Visit for Record {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "pd" => self.id = value.to_string(),
            "level" => self.level = Level::from_name(value).unwrap_or_default(),
            "group" => self.group = Some(value.to_string()),
            "log" => self.log = Some(value.to_string()),
            "reason" => self.reason = Some(value.to_string()),
            "message" => self.message = value.to_string(),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        match field.name() {
            "generation" => self.generation = Some(value),
            "pid" => self.pid = i64::try_from(value).ok(),
            _ => {}
        }
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        match field.name() {
            "generation" => self.generation = u64::try_from(value).ok(),
            "pid" => self.pid = Some(value),
            _ => {}
        }
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        if field.name() == "startup" {
            self.startup = value;
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        // `message` (a format string with arguments) and `%value` fields
        // arrive here.
        let text = format!("{value:?}");
        self.record_str(field, &text);
    }
}

/// A subscriber that hands every event, as a `Record`, to `write`; spans
/// are not used. Both processes' subscribers are one of these.
pub struct Subscriber<W: Fn(Record) + Send + Sync + 'static> {
    pub write: W,
}

impl<W: Fn(Record) + Send + Sync + 'static> tracing::Subscriber for Subscriber<W> {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        (self.write)(Record::of(event));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for l in ALL {
            assert!(l.id.len() == 6 && l.id.starts_with("PD") && l.id[2..].bytes().all(|b| b.is_ascii_digit()));
            assert!(seen.insert(l.id), "{} twice", l.id);
            assert!(!l.meaning.is_empty());
        }
    }

    #[test]
    fn events_carry_their_fields() {
        use std::sync::{Arc, Mutex};
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let sub = Subscriber { write: move |r| sink.lock().unwrap().push(r) };
        tracing::subscriber::with_default(sub, || {
            let pid = 812;
            pd_log!(WORKER_EXITED, group = "shop", generation = 4u64, pid, reason = "signal", "worker {pid} exited");
            pd_log!(level: Level::Notice, WORKER_EXITED, "quiet {}", 1);
        });
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0],
            Record {
                id: "PD0202".into(),
                level: Level::Error,
                group: Some("shop".into()),
                generation: Some(4),
                pid: Some(812),
                reason: Some("signal".into()),
                message: "worker 812 exited".into(),
                ..Record::default()
            }
        );
        assert_eq!(seen[0].text(), "PD0202: group shop: worker 812 exited");
        assert_eq!((seen[1].level, seen[1].text().as_str()), (Level::Notice, "PD0202: quiet 1"));
    }

    /// The README's table of log ids is this catalogue: same ids, same meanings.
    #[test]
    fn the_readme_table_is_the_catalogue() {
        let readme = include_str!("../README.md");
        let table: Vec<(String, String, String)> = readme
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let id = cells.get(1)?.trim_matches('`');
                (cells.len() >= 5 && id.starts_with("PD0"))
                    .then(|| (id.to_string(), cells[2].to_string(), cells[3].to_string()))
            })
            .collect();
        let expected: Vec<(String, String, String)> =
            ALL.iter().map(|l| (l.id.to_string(), l.level.name().to_string(), l.meaning.to_string())).collect();
        assert_eq!(table, expected, "README's log id table and src/logid.rs differ");
        // Every id the README mentions anywhere exists.
        for word in readme.split(|c: char| !c.is_ascii_alphanumeric()) {
            if word.len() == 6 && word.starts_with("PD0") && word[2..].bytes().all(|b| b.is_ascii_digit()) {
                assert!(ALL.iter().any(|l| l.id == word), "README mentions {word}, which is not in the catalogue");
            }
        }
    }
}
