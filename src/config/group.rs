//! `LanguageGroup NAME language=LANG [key=value ...]`: one process group.

use super::access::{lookup_group, lookup_user};
use super::languages::valid_name;
use super::units::{ProcessRange, parse_count, parse_duration, parse_processes, parse_size};
use super::{Origin, words::split_words};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A resolved user (and its primary group) from `user=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Everything `LanguageGroup` says about one group, typed and range-checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub name: String,
    pub language: String,
    /// What the language speaks, resolved once the language table is known
    /// (`ServerConfig::resolve_protocols`, at post_config).
    pub protocol: Option<super::languages::Protocol>,
    /// `listen=` as given; once resolved with the language table
    /// (`ServerConfig::resolve_protocols`), what the group uses.
    pub listen: Option<super::languages::Listen>,
    pub processes: ProcessRange,
    pub threads: u32,
    /// `intake=`: `Some(true)` for gil (a python worker takes a new request
    /// only while none of its requests in progress computes), `Some(false)`
    /// for threads (on every thread), `None` if not given: gil for groups
    /// the Python loader serves, threads for the others.
    pub intake_gil: Option<bool>,
    /// `None`: Apache's own `User`.
    pub user: Option<RunAs>,
    /// `group=`; `None`: the user's primary group.
    pub group: Option<(String, u32)>,
    pub home: Option<PathBuf>,
    pub app: Option<PathBuf>,
    /// `command=`: program and arguments, replacing the language's.
    pub command: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    /// 0: never recycle.
    pub maximum_requests: u64,
    pub memory_limit: Option<u64>,
    pub lifetime: Option<Duration>,
    pub inactivity_timeout: Option<Duration>,
    pub request_timeout: Duration,
    pub queue_timeout: Duration,
    pub startup_timeout: Duration,
    pub graceful_timeout: Duration,
    pub error_log: Option<PathBuf>,
    pub restart_file: Option<PathBuf>,
    pub declared_at: Origin,
}

const SEC: Duration = Duration::from_secs(1);
const DAY: Duration = Duration::from_secs(86_400);

/// Defaults, documented in the README.
pub const DEFAULT_PROCESSES: ProcessRange = ProcessRange { min: 1, max: 1 };
pub const DEFAULT_THREADS: u32 = 1;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_GRACEFUL_TIMEOUT: Duration = Duration::from_secs(30);

/// Every option, with what it accepts: the text of "unknown option" errors.
pub const OPTIONS: &[(&str, &str)] = &[
    ("language", "a language name (python, ruby, perl, php, cgi, http, or one from ProcdLanguages)"),
    ("processes", "N or MIN-MAX"),
    ("threads", "1 to 1024"),
    ("intake", "gil (language=python only, its default) or threads"),
    ("user", "an existing user other than root"),
    ("group", "an existing group other than root"),
    ("home", "a directory"),
    ("app", "a file"),
    ("command", "a program and its arguments"),
    ("env", "NAME=VALUE, repeatable"),
    ("maximum-requests", "0 (never) to 4294967295"),
    ("memory-limit", "a size such as 512M"),
    ("lifetime", "a duration, 0 for none"),
    ("inactivity-timeout", "a duration, 0 for none"),
    ("request-timeout", "a duration"),
    ("queue-timeout", "a duration"),
    ("startup-timeout", "a duration"),
    ("graceful-timeout", "a duration"),
    ("error-log", "a file path"),
    ("restart-file", "a file path"),
    ("listen", "unix (default) or tcp (language=http only)"),
];

/// Levenshtein distance, for "did you mean" hints.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn unknown_option(key: &str) -> String {
    let names: Vec<&str> = OPTIONS.iter().map(|(n, _)| *n).collect();
    let hint = names
        .iter()
        .map(|n| (distance(key, n), *n))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map_or(String::new(), |(_, n)| format!(" (did you mean {n}=?)"));
    format!("unknown option \"{key}\"{hint}; allowed options are: {}", names.join(", "))
}

fn optional_duration(value: &str) -> Result<Option<Duration>, String> {
    let d = parse_duration(value, Duration::ZERO, 365 * DAY)?;
    Ok((!d.is_zero()).then_some(d))
}

/// Resolves a path against ServerRoot, as Apache does for relative paths.
pub fn server_relative(server_root: &Path, value: &str) -> Result<PathBuf, String> {
    if value.is_empty() {
        return Err("expected a path, got nothing".into());
    }
    let p = Path::new(value);
    Ok(if p.is_absolute() { p.to_path_buf() } else { server_root.join(p) })
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses the raw argument line of `LanguageGroup`.
///
/// Checks here need nothing but the line itself (syntax, ranges, that users
/// and groups exist). Checks that need the whole configuration (the language
/// table, duplicate names, file access for the final user) run at
/// check_config time, see `check.rs`.
pub fn parse_group(args: &str, server_root: &Path, origin: Origin) -> Result<GroupConfig, String> {
    let words = split_words(args).map_err(|e| format!("LanguageGroup: {e}"))?;
    let Some((name, options)) = words.split_first() else {
        return Err("LanguageGroup needs a name and options: LanguageGroup NAME language=LANG [key=value ...]".into());
    };
    if name.contains('=') {
        return Err(format!(
            "LanguageGroup: the first argument must be the group's name, got \"{name}\": LanguageGroup NAME language=LANG [key=value ...]"
        ));
    }
    if !valid_name(name) {
        return Err(format!(
            "LanguageGroup: \"{name}\" is not a valid group name: use up to 64 letters, digits, '_', '-' or '.', not starting with '.'"
        ));
    }
    let mut g = GroupConfig {
        name: name.clone(),
        language: String::new(),
        protocol: None,
        listen: None,
        processes: DEFAULT_PROCESSES,
        threads: DEFAULT_THREADS,
        intake_gil: None,
        user: None,
        group: None,
        home: None,
        app: None,
        command: None,
        env: Vec::new(),
        maximum_requests: 0,
        memory_limit: None,
        lifetime: None,
        inactivity_timeout: None,
        request_timeout: DEFAULT_REQUEST_TIMEOUT,
        queue_timeout: DEFAULT_QUEUE_TIMEOUT,
        startup_timeout: DEFAULT_STARTUP_TIMEOUT,
        graceful_timeout: DEFAULT_GRACEFUL_TIMEOUT,
        error_log: None,
        restart_file: None,
        declared_at: origin,
    };
    let mut seen: Vec<&str> = Vec::new();
    for word in options {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!(
                "LanguageGroup {name}: \"{word}\" is not an option: options are written key=value, e.g. processes=4"
            ));
        };
        let bad = |why: String| format!("LanguageGroup {name}: invalid {key}={value}: {why}");
        if key != "env" {
            if seen.contains(&key) {
                return Err(format!("LanguageGroup {name}: option {key}= is given twice; give it once"));
            }
            if OPTIONS.iter().any(|(n, _)| *n == key) {
                seen.push(key);
            }
        }
        match key {
            "language" => {
                if !valid_name(value) {
                    return Err(bad("expected a language name such as python, php or ruby".into()));
                }
                g.language = value.to_string();
            }
            "processes" => g.processes = parse_processes(value).map_err(bad)?,
            "threads" => g.threads = parse_count(value, 1, 1024).map_err(bad)? as u32,
            "intake" => {
                g.intake_gil = match value {
                    "threads" => Some(false),
                    "gil" => Some(true),
                    _ => return Err(bad("expected gil (a python worker takes a new request only while none of its requests computes; python only, its default) or threads (every thread takes requests)".into())),
                }
            }
            "user" => {
                let u = lookup_user(value).map_err(bad)?;
                if u.uid.is_root() {
                    return Err(bad(
                        "groups never run as root: application code must not run with root's rights; create a dedicated user (useradd --system NAME) and name it here".into(),
                    ));
                }
                g.user = Some(RunAs { name: u.name, uid: u.uid.as_raw(), gid: u.gid.as_raw() });
            }
            "group" => {
                let grp = lookup_group(value).map_err(bad)?;
                if grp.gid.as_raw() == 0 {
                    return Err(bad("groups never run with group root (gid 0); name another group".into()));
                }
                g.group = Some((grp.name, grp.gid.as_raw()));
            }
            "home" => g.home = Some(server_relative(server_root, value).map_err(bad)?),
            "app" => g.app = Some(server_relative(server_root, value).map_err(bad)?),
            "command" => {
                let parts: Vec<String> = value.split_whitespace().map(str::to_string).collect();
                if parts.is_empty() {
                    return Err(bad("expected a program, e.g. command=/srv/app/venv/bin/python3".into()));
                }
                g.command = Some(parts);
            }
            "env" => {
                let Some((var, val)) = value.split_once('=') else {
                    return Err(bad("expected env=NAME=VALUE".into()));
                };
                if !valid_env_name(var) {
                    return Err(bad(format!(
                        "\"{var}\" is not a valid variable name: letters, digits and '_', not starting with a digit"
                    )));
                }
                if let Some(slot) = g.env.iter_mut().find(|(k, _)| k == var) {
                    slot.1 = val.to_string();
                } else {
                    g.env.push((var.to_string(), val.to_string()));
                }
            }
            "maximum-requests" => g.maximum_requests = parse_count(value, 0, u32::MAX.into()).map_err(bad)?,
            "memory-limit" => g.memory_limit = Some(parse_size(value, 1 << 20, 1 << 40).map_err(bad)?),
            "lifetime" => g.lifetime = optional_duration(value).map_err(bad)?,
            "inactivity-timeout" => g.inactivity_timeout = optional_duration(value).map_err(bad)?,
            "request-timeout" => g.request_timeout = parse_duration(value, SEC, DAY).map_err(bad)?,
            "queue-timeout" => g.queue_timeout = parse_duration(value, Duration::ZERO, 3600 * SEC).map_err(bad)?,
            "startup-timeout" => g.startup_timeout = parse_duration(value, SEC, 3600 * SEC).map_err(bad)?,
            "graceful-timeout" => g.graceful_timeout = parse_duration(value, Duration::ZERO, DAY).map_err(bad)?,
            "error-log" => g.error_log = Some(server_relative(server_root, value).map_err(bad)?),
            "restart-file" => g.restart_file = Some(server_relative(server_root, value).map_err(bad)?),
            "listen" => g.listen = Some(super::languages::Listen::parse(value).map_err(bad)?),
            _ => return Err(format!("LanguageGroup {name}: {}", unknown_option(key))),
        }
    }
    if g.language.is_empty() {
        return Err(format!(
            "LanguageGroup {name}: language= is required, e.g. language=python (built in: python, ruby, perl, php, cgi, http)"
        ));
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str) -> Result<GroupConfig, String> {
        parse_group(args, Path::new("/etc/apache2"), Origin { file: "t.conf".into(), line: 1 })
    }

    #[test]
    fn full_example_from_the_design() {
        let g = parse(
            "shop language=python processes=2-8 threads=4 user=nobody app=/srv/shop/app.wsgi home=/srv/shop \
             maximum-requests=10000 memory-limit=512M error-log=logs/shop.log env=A=1 env='B=two words' \
             \"command=/venv/bin/python3 -X dev\" lifetime=1h inactivity-timeout=0 request-timeout=90 \
             queue-timeout=5s startup-timeout=1m graceful-timeout=0 restart-file=/srv/shop/restart.txt",
        )
        .unwrap();
        assert_eq!(g.name, "shop");
        assert_eq!(g.processes, ProcessRange { min: 2, max: 8 });
        assert_eq!(g.threads, 4);
        assert_eq!(g.intake_gil, None);
        assert_eq!(parse("shop language=python threads=8 intake=gil").unwrap().intake_gil, Some(true));
        assert_eq!(parse("shop language=python threads=8 intake=threads").unwrap().intake_gil, Some(false));
        assert_eq!(g.user.as_ref().unwrap().name, "nobody");
        assert_eq!(g.memory_limit, Some(512 << 20));
        assert_eq!(g.error_log.as_deref(), Some(Path::new("/etc/apache2/logs/shop.log")));
        assert_eq!(g.env, [("A".into(), "1".into()), ("B".into(), "two words".into())]);
        assert_eq!(g.command.as_ref().unwrap(), &["/venv/bin/python3", "-X", "dev"]);
        assert_eq!(g.lifetime, Some(3600 * SEC));
        assert_eq!(g.inactivity_timeout, None);
        assert_eq!(g.request_timeout, 90 * SEC);
        assert_eq!(g.graceful_timeout, Duration::ZERO);
    }

    #[test]
    fn listen_is_unix_or_tcp() {
        use crate::config::languages::Listen;
        let g = parse("jsp language=http listen=tcp \"command=/usr/share/tomcat10/bin/catalina.sh run\"").unwrap();
        assert_eq!(g.listen, Some(Listen::Tcp));
        assert_eq!(parse("node language=http listen=unix command=/usr/bin/node").unwrap().listen, Some(Listen::Unix));
        assert_eq!(parse("node language=http command=/usr/bin/node").unwrap().listen, None);
        let e = err("jsp language=http listen=udp");
        assert!(e.starts_with("LanguageGroup jsp: invalid listen=udp: expected unix"), "{e}");
        assert!(e.contains("or tcp (a loopback port"), "{e}");
        let e = err("jsp language=http listen=tcp listen=unix");
        assert!(e.contains("listen= is given twice"), "{e}");
        let e = err("jsp language=http lisen=tcp");
        assert!(e.contains("did you mean listen=?"), "{e}");
    }

    #[test]
    fn defaults() {
        let g = parse("blog language=php").unwrap();
        assert_eq!(g.processes, DEFAULT_PROCESSES);
        assert_eq!(g.user, None);
        assert_eq!(g.request_timeout, DEFAULT_REQUEST_TIMEOUT);
    }

    fn err(args: &str) -> String {
        parse(args).unwrap_err()
    }

    #[test]
    fn errors_name_the_option_and_what_is_allowed() {
        let e = err("shop language=python proceses=4");
        assert!(e.contains("unknown option \"proceses\"") && e.contains("did you mean processes=?"), "{e}");
        let e = err("shop language=python processes=abc");
        assert!(e.starts_with("LanguageGroup shop: invalid processes=abc: expected N"), "{e}");
        let e = err("shop language=python intake=one");
        assert!(e.contains("invalid intake=one") && e.contains("expected gil") && e.contains("or threads"), "{e}");
        let e = err("shop language=python threads=0");
        assert!(e.contains("invalid threads=0") && e.contains("1 to 1024"), "{e}");
        let e = err("shop language=python memory-limit=lots");
        assert!(e.contains("invalid memory-limit=lots") && e.contains("512M"), "{e}");
        let e = err("shop language=python request-timeout=forever");
        assert!(e.contains("invalid request-timeout=forever") && e.contains("30s"), "{e}");
        let e = err("shop language=python user=root");
        assert!(e.contains("invalid user=root") && e.contains("never run as root"), "{e}");
        let e = err("shop language=python user=#0");
        assert!(e.contains("never run as root"), "{e}");
        let e = err("shop language=python group=root");
        assert!(e.contains("invalid group=root"), "{e}");
        let e = err("shop language=python user=no-such-user-procd");
        assert!(e.contains("no user \"no-such-user-procd\""), "{e}");
        let e = err("shop processes=2");
        assert!(e.contains("language= is required"), "{e}");
        let e = err("shop language=python threads=2 threads=3");
        assert!(e.contains("threads= is given twice"), "{e}");
        let e = err("shop language=python env=1X=2");
        assert!(e.contains("invalid env=1X=2"), "{e}");
        let e = err("shop language=python verbose");
        assert!(e.contains("\"verbose\" is not an option"), "{e}");
        let e = err("language=python");
        assert!(e.contains("first argument must be the group's name"), "{e}");
        let e = err("sh/op language=python");
        assert!(e.contains("not a valid group name"), "{e}");
        let e = err("");
        assert!(e.contains("needs a name"), "{e}");
        let e = err("shop language=python command=\"unclosed");
        assert!(e.contains("unbalanced"), "{e}");
    }
}
