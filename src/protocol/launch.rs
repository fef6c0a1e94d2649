//! The launch contract: what a worker program finds when the manager
//! starts it, and what it must do. One place, so that a loader author reads
//! one page (PROTOCOL.md, "Launch contract") and the manager builds it here.

#![forbid(unsafe_code)]

/// The group's listening socket: accept requests on it (systemd style,
/// `LISTEN_FDS=1`).
pub const LISTEN_FD: i32 = 3;
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
    let mut env: Vec<(String, String)> = base
        .iter()
        .filter(|(k, _)| {
            k != "PROCD_APP" && k != "PROCD_SOCKET" && k != "LISTEN_PID" && !ours.iter().any(|(name, _)| name == k)
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
            socket: Some("/run/procd/generations/shop.3.sock"),
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
}
