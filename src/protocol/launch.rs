//! The launch contract: what a worker program finds when the manager
//! starts it, and what it must do. One place, so that a loader author reads
//! one page (PROTOCOL.md, "Launch contract") and the manager builds it here.

#![forbid(unsafe_code)]

/// The group's listening socket: accept requests on it (systemd style,
/// `LISTEN_FDS=1`).
pub const LISTEN_FD: i32 = 3;
/// Where FastCGI workers find the listening socket instead (the FastCGI
/// specification's FCGI_LISTENSOCK_FILENO, as mod_fcgid passes it); their
/// fd 3 is /dev/null.
pub const FASTCGI_LISTEN_FD: i32 = 0;

/// The descriptor a worker of `protocol` accepts on.
pub fn listen_fd(protocol: &str) -> i32 {
    if protocol == "fastcgi" { FASTCGI_LISTEN_FD } else { LISTEN_FD }
}

/// The status channel: write `READY\n` once able to serve; EOF from the
/// manager means "finish what you hold, serve what is queued, exit".
pub const STATUS_FD: i32 = 4;
/// The line a worker writes on `STATUS_FD` when it is ready.
pub const READY: &str = "READY";
/// Exit status of a worker process that could not be set up or exec'd
/// (the reason is on its stderr, hence in the group's log).
pub const EXIT_CANNOT_START: i32 = 127;

/// What the manager tells one worker through its environment.
pub struct Worker<'a> {
    pub group: &'a str,
    pub generation: u64,
    /// `procd`, `fastcgi`, `cgi` or `http`.
    pub protocol: &'a str,
    pub threads: u32,
    /// The mounted application (`app=`), if any.
    pub app: Option<&'a str>,
    /// Directories whose files it may load per request.
    pub script_roots: &'a [String],
    /// Extensions such a file must have.
    pub script_extensions: &'a [String],
    pub request_timeout_ms: u64,
    /// Exit after this many requests (0: never).
    pub maximum_requests: u64,
    /// The path fd 3 is bound to (`PROCD_SOCKET`), for programs of the
    /// `http` protocol: to show, not to bind (see PROTOCOL.md).
    pub socket: Option<&'a str>,
    /// `listen=tcp` (`http` only): the loopback port this generation's
    /// program must bind on 127.0.0.1, passed in `PORT` and `PROCD_PORT`;
    /// then there is no listening socket (fd 3 is /dev/null, no `LISTEN_*`).
    pub port: Option<u16>,
    /// This worker's place among its generation's `processes` (`slot` of
    /// `slots`): FastCGI workers recycle after staggered counts.
    pub slot: u32,
    pub slots: u32,
}

/// The request count after which a FastCGI worker in `slot` of `slots`
/// exits, for `maximum-requests` = `max`: between `max / 2` and `max`,
/// spread over the slots, so that a group's php-cgi processes, which
/// share the load, are not all replaced at the same moment (while one
/// starts, the others accept). 0 stays 0 (never).
pub fn staggered_max_requests(max: u64, slot: u32, slots: u32) -> u64 {
    let slots = u64::from(slots.max(1));
    let slot = u64::from(slot) % slots;
    if max == 0 {
        return 0;
    }
    (max - (max / 2) * slot / slots).max(1)
}

/// The contract's variables, appended to (and overriding) the group's own
/// environment. `LISTEN_PID` is added in the child, where the pid is known.
pub fn environment(base: &[(String, String)], w: &Worker<'_>) -> Vec<(String, String)> {
    let ours = [
        ("LISTEN_FDS", "1".to_string()),
        ("LISTEN_FDNAMES", "procd".to_string()),
        ("PROCD_STATUS_FD", STATUS_FD.to_string()),
        ("PROCD_GROUP", w.group.to_string()),
        ("PROCD_GENERATION", w.generation.to_string()),
        ("PROCD_PROTOCOL", w.protocol.to_string()),
        ("PROCD_THREADS", w.threads.to_string()),
        ("PROCD_SCRIPT_ROOTS", w.script_roots.join("\n")),
        ("PROCD_SCRIPT_EXTS", w.script_extensions.join(" ")),
        ("PROCD_REQUEST_TIMEOUT_MS", w.request_timeout_ms.to_string()),
        ("PROCD_MAX_REQUESTS", w.maximum_requests.to_string()),
    ];
    // FastCGI workers (php-cgi): the listener is fd 0, not systemd's fd 3;
    // one process serves one request at a time (PHP never forks children
    // of its own: the manager runs `processes` of them) and exits after
    // `maximum-requests` (0: never; php-cgi's own default would be 500).
    let fastcgi = w.protocol == "fastcgi";
    let ours: Vec<(&str, String)> = if fastcgi {
        let max = staggered_max_requests(w.maximum_requests, w.slot, w.slots).min(i32::MAX as u64).to_string();
        ours.into_iter()
            .filter(|(k, _)| !k.starts_with("LISTEN_"))
            .chain([("PHP_FCGI_CHILDREN", "0".to_string()), ("PHP_FCGI_MAX_REQUESTS", max)])
            .collect()
    } else if let Some(port) = w.port {
        ours.into_iter()
            .filter(|(k, _)| !k.starts_with("LISTEN_"))
            .chain([("PORT", port.to_string()), ("PROCD_PORT", port.to_string())])
            .collect()
    } else {
        ours.into_iter().collect()
    };
    let mut env: Vec<(String, String)> = base
        .iter()
        .filter(|(k, _)| {
            k != "PROCD_APP"
                && k != "PROCD_SOCKET"
                && !k.starts_with("LISTEN_")
                && !ours.iter().any(|(name, _)| name == k)
        })
        .cloned()
        .collect();
    env.extend(ours.into_iter().map(|(k, v)| (k.to_string(), v)));
    if let Some(app) = w.app {
        env.push(("PROCD_APP".to_string(), app.to_string()));
    }
    if let Some(socket) = w.socket {
        env.push(("PROCD_SOCKET".to_string(), socket.to_string()));
    }
    env
}

/// Whether a status message from a worker says it is ready.
/// A worker's line on fd 4 saying it has served `maximum-requests`: the
/// manager starts its replacement and, once that is ready, closes fd 4
/// (drain). Anything after the word is a free-form reason.
pub const RECYCLE: &str = "RECYCLE";

/// The reason of a `RECYCLE` line in `message`: printable ASCII, at most
/// 64 characters (a worker's words, shown in the manager's log).
pub fn recycle_reason(message: &[u8]) -> Option<String> {
    String::from_utf8_lossy(message).lines().find_map(|l| {
        let rest = l.trim().strip_prefix(RECYCLE)?;
        let why: String = rest.trim().chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(64).collect();
        Some(if why.is_empty() { "asked".to_string() } else { why })
    })
}

pub fn says_ready(message: &[u8]) -> bool {
    String::from_utf8_lossy(message).lines().any(|l| l.trim() == READY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_overrides_what_a_group_sets() {
        let base = vec![("PATH".to_string(), "/bin".to_string()), ("PROCD_GROUP".to_string(), "forged".to_string())];
        let roots = vec!["/srv/a".to_string(), "/srv/b".to_string()];
        let w = Worker {
            group: "shop",
            generation: 3,
            protocol: "procd",
            threads: 4,
            app: Some("/srv/app.wsgi"),
            script_roots: &roots,
            script_extensions: &[],
            request_timeout_ms: 60000,
            maximum_requests: 0,
            slot: 0,
            slots: 1,
            socket: Some("/run/procd/generations/shop.3.sock"),
            port: None,
        };
        let env = environment(&base, &w);
        let get = |k: &str| env.iter().filter(|(n, _)| n == k).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!(get("PROCD_GROUP"), ["shop"]);
        assert_eq!(get("PATH"), ["/bin"]);
        assert_eq!(get("LISTEN_FDS"), ["1"]);
        assert_eq!(get("PROCD_SCRIPT_ROOTS"), ["/srv/a\n/srv/b"]);
        assert_eq!(get("PROCD_APP"), ["/srv/app.wsgi"]);
        assert_eq!(get("PROCD_SOCKET"), ["/run/procd/generations/shop.3.sock"]);
        assert!(says_ready(b"READY\n") && says_ready(b"hello\nREADY\n") && !says_ready(b"NOT READY\n"));
    }

    #[test]
    fn tcp_programs_get_port_and_no_listen_fds() {
        let base = vec![("PORT".to_string(), "80".to_string()), ("LISTEN_FDS".to_string(), "1".to_string())];
        let w = Worker {
            group: "jsp",
            generation: 7,
            protocol: "http",
            threads: 1,
            app: None,
            script_roots: &[],
            script_extensions: &[],
            request_timeout_ms: 1000,
            maximum_requests: 0,
            slot: 0,
            slots: 1,
            socket: None,
            port: Some(41234),
        };
        let env = environment(&base, &w);
        let get = |k: &str| env.iter().filter(|(n, _)| n == k).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!(get("PORT"), ["41234"]);
        assert_eq!(get("PROCD_PORT"), ["41234"]);
        assert!(get("LISTEN_FDS").is_empty() && get("LISTEN_FDNAMES").is_empty() && get("PROCD_SOCKET").is_empty());
        assert_eq!(get("PROCD_GENERATION"), ["7"]);
    }

    #[test]
    fn fastcgi_workers_listen_on_fd_0_and_never_fork() {
        let base =
            vec![("PHP_FCGI_CHILDREN".to_string(), "8".to_string()), ("LISTEN_FDS".to_string(), "1".to_string())];
        let w = Worker {
            group: "blog",
            generation: 1,
            protocol: "fastcgi",
            threads: 1,
            app: None,
            script_roots: &[],
            script_extensions: &[],
            request_timeout_ms: 1000,
            maximum_requests: u64::MAX,
            slot: 0,
            slots: 1,
            socket: None,
            port: None,
        };
        let env = environment(&base, &w);
        let get = |k: &str| env.iter().filter(|(n, _)| n == k).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!(get("PHP_FCGI_CHILDREN"), ["0"]);
        assert_eq!(get("PHP_FCGI_MAX_REQUESTS"), ["2147483647"]);
        assert!(get("LISTEN_FDS").is_empty() && get("LISTEN_FDNAMES").is_empty());
        assert_eq!(get("PROCD_PROTOCOL"), ["fastcgi"]);
        assert_eq!((listen_fd("fastcgi"), listen_fd("procd")), (0, 3));
        let counts: Vec<u64> = (0..4).map(|slot| staggered_max_requests(1000, slot, 4)).collect();
        assert_eq!(counts, [1000, 875, 750, 625]);
        assert_eq!(staggered_max_requests(5, 1, 2), 4);
        assert_eq!(staggered_max_requests(1, 1, 2), 1);
        assert_eq!(staggered_max_requests(0, 3, 4), 0);
        assert_eq!(staggered_max_requests(7, 9, 0), 7);
    }
}
