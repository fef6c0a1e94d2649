//! Every log id mod_procd writes, defined once: its number, its usual
//! level and what it means. Code names ids only through these constants,
//! and a test checks the README's table against this catalogue.

#![forbid(unsafe_code)]

/// Log levels, as Apache names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Crit,
    Error,
    Warn,
    Notice,
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
    CONFIG_WARNING = "PD0103", Warn, "configtest warning (a group without user= shares Apache's identity)";
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
    REQUEST_KILLED = "PD0215", Error, "a FastCGI worker held one request past request-timeout: the manager killed it";
    SCRIPT_MISSING = "PD0301", Error, "script not found or unable to stat";
    EXECCGI_OFF = "PD0302", Error, "Options ExecCGI is off where the script is";
    GROUP_NOT_HERE = "PD0303", Error, "the group is not declared for this virtual host, or its language is unknown";
    REQUEST_FAILED = "PD0304", Error, "a request to a group failed before its answer started: the status and why";
    RESPONSE_CUT = "PD0305", Error, "a request failed after its headers were sent: the response was cut";
    WORKER_STDERR = "PD0306", Error, "a line a FastCGI worker sent on FCGI_STDERR (PHP's errors and warnings), escaped";
    UNDECODABLE = "PD0401", Notice, "LinkRewrite: a content encoding it cannot decode passes through untouched";
    CHARSET = "PD0402", Notice, "LinkRewrite: a charset that is not ASCII-compatible passes through untouched";
    CORRUPT_BODY = "PD0403", Error, "LinkRewrite: a corrupt gzip/deflate body: 502 or a cut response";
    UNREADABLE_BODY = "PD0404", Error, "LinkRewrite: the body could not be read (e.g. a CGI script past its timeout)";
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
