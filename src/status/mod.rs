//! procd-status: what the status page shows, as plain data, and its three
//! renderings (HTML, JSON, Prometheus text). Knows nothing of Apache nor of
//! the manager's internals: it takes snapshots as plain structs.
//!
//! Two sources, joined by group name:
//! - [`ManagerState`]: the manager's view (groups, generations, workers,
//!   back-off, restart/recycle/scale counters), written by the manager to
//!   `RUNTIME/status.json` about once a second;
//! - [`Counters`]: per-group request counters that every Apache child adds
//!   to in shared memory owned by httpd (see `ffi::shm`), read as a snapshot.
//!
//! Both are untrusted on the way in (code in an Apache child may scribble on
//! the shared memory; the file is bounded and parsed): renderers escape
//! every string and only format numbers.

#![forbid(unsafe_code)]

pub mod render;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The version of `status.json` and of the `?json` document (see
/// `src/status/schema.json`).
pub const SCHEMA_VERSION: u32 = 1;
/// The manager's snapshot file, under the runtime dir.
pub const STATE_FILE: &str = "status.json";
/// The largest `status.json` the status handler reads.
pub const STATE_FILE_MAX: u64 = 4 << 20;

/// Upper bounds (seconds) of the latency histogram's buckets; one more
/// bucket, +Inf, follows.
pub const BUCKETS: [f64; 15] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Buckets including +Inf.
pub const NBUCKETS: usize = BUCKETS.len() + 1;
/// The sliding window: `WINDOW_SLICES` histograms of `WINDOW_SLICE_SECS` each.
pub const WINDOW_SLICES: usize = 6;
pub const WINDOW_SLICE_SECS: u64 = 10;

/// Why a request to a group failed, as counted (`procd_request_failures_total`).
pub const CAUSES: [&str; 9] = [
    "queue-full",
    "not-running",
    "queue-timeout",
    "worker-died",
    "bad-answer",
    "request-timeout",
    "app-error",
    "cut",
    "other",
];

/// The bucket a request of `micros` falls in.
pub fn bucket_of(micros: u64) -> usize {
    let secs = micros as f64 / 1e6;
    BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len())
}

/// The cause of a failed request, from its status and the handler's log
/// sentence (the handler's `Outcome` carries no structured cause; its
/// sentences are this module's contract, covered by the unit tests below).
/// `cut`: the headers were out.
pub fn cause_of(status: u16, log: &str, cut: bool) -> usize {
    let find = |name: &str| CAUSES.iter().position(|c| *c == name).unwrap_or(CAUSES.len() - 1);
    if cut {
        return find("cut");
    }
    let cause = match status {
        503 if log.contains("queue is full") => "queue-full",
        503 if log.contains("is not running") => "not-running",
        503 => "queue-timeout",
        504 => "request-timeout",
        502 if log.contains("malformed") || log.contains("bad answer") || log.contains("expected HELLO") => {
            "bad-answer"
        }
        502 => "worker-died",
        500 if log.contains("the application failed") => "app-error",
        _ => "other",
    };
    find(cause)
}

/// A group's request counters, from shared memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Finished requests by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub by_class: [u64; 5],
    /// Failed requests by cause (`CAUSES`).
    pub by_cause: BTreeMap<String, u64>,
    /// Requests that waited in the group's queue, and their total wait.
    pub queued: u64,
    pub queue_wait_seconds: f64,
    /// Requests being served now.
    pub in_flight: u64,
    /// Since the slot was assigned (cumulative, for Prometheus).
    pub histogram: Vec<u64>,
    pub duration_sum_seconds: f64,
    pub count: u64,
    /// The last minute (the window's slices, merged).
    pub window: Vec<u64>,
    /// How many seconds the window covers.
    pub window_seconds: u64,
    /// Requests in progress (method, URI, how long so far).
    pub requests: Vec<InFlight>,
}

/// A request in progress, as an Apache child recorded it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub method: String,
    pub uri: String,
    /// The Apache child serving it.
    pub apache_pid: u32,
    /// The worker, once it said HELLO (procd protocol); 0 before.
    pub worker_pid: u32,
    pub running_ms: u64,
}

impl Counters {
    pub fn total(&self) -> u64 {
        self.by_class.iter().sum()
    }

    /// Requests per second over the window.
    pub fn rate(&self) -> f64 {
        let n: u64 = self.window.iter().sum();
        if self.window_seconds == 0 { 0.0 } else { n as f64 / self.window_seconds as f64 }
    }

    /// The `q` quantile (0..1) of the window's latencies, in seconds,
    /// interpolated within its bucket; None with no request. A quantile in
    /// the +Inf bucket is reported as the last finite bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile(&self.window, q)
    }
}

pub fn quantile(hist: &[u64], q: f64) -> Option<f64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
    let mut seen = 0u64;
    for (i, n) in hist.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        if (seen + n) as f64 >= rank {
            let lo = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
            let Some(hi) = BUCKETS.get(i) else {
                return Some(BUCKETS[BUCKETS.len() - 1]);
            };
            let frac = (rank - seen as f64) / *n as f64;
            return Some(lo + (hi - lo) * frac);
        }
        seen += n;
    }
    Some(BUCKETS[BUCKETS.len() - 1])
}

/// The manager's snapshot (`RUNTIME/status.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ManagerState {
    pub schema: u32,
    /// When the manager wrote it (ms since the epoch).
    pub written_at_ms: u64,
    pub pid: u32,
    pub started_at_ms: u64,
    pub version: String,
    pub build: String,
    pub groups: Vec<GroupState>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub name: String,
    pub language: String,
    pub protocol: String,
    pub user: String,
    /// Removed from the configuration, still draining.
    pub removed: bool,
    pub limits: Limits,
    pub generations: Vec<GenerationState>,
    pub workers: Vec<WorkerState>,
    /// Quick failures in a row, and when the next attempt is (back-off).
    pub failures: u32,
    pub retry_in_ms: Option<u64>,
    pub events: Events,
    /// The last events, newest last (at most `RECENT`).
    pub recent: Vec<Event>,
}

/// How many recent events a group keeps.
pub const RECENT: usize = 10;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub processes_min: u32,
    pub processes_max: u32,
    pub threads: u32,
    pub maximum_requests: u64,
    pub memory_limit_bytes: u64,
    pub lifetime_ms: u64,
    pub request_timeout_ms: u64,
    pub startup_timeout_ms: u64,
    pub graceful_timeout_ms: u64,
    pub inactivity_timeout_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationState {
    pub id: u64,
    /// starting, serving, draining
    pub phase: String,
    pub age_ms: u64,
    /// `listen=tcp` groups: the loopback port its program listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerState {
    pub pid: u32,
    pub generation: u64,
    /// starting, ready, replacing (a replacement not yet ready counts as
    /// starting), retiring, draining
    pub state: String,
    pub age_ms: u64,
    pub resident_bytes: Option<u64>,
    /// It made read/write system calls in the last second (busy).
    pub active: bool,
}

/// Counters of what the manager did to a group, by reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Events {
    /// New generations: start, graceful-restart, restart-file, retry, and
    /// for `listen=tcp` groups recycle and port-refused.
    pub generations: BTreeMap<String, u64>,
    /// Recycled workers: maximum-requests, memory-limit, lifetime, request-timeout ...
    pub recycles: BTreeMap<String, u64>,
    /// Scaling: up, down.
    pub scale: BTreeMap<String, u64>,
    /// Worker exits: crash (unexpected), expected, failed-start.
    pub exits: BTreeMap<String, u64>,
    /// Back-off periods begun.
    pub backoffs: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    /// generation, recycle, scale, exit, backoff
    pub kind: String,
    pub reason: String,
}

/// The short key of a recycle reason ("memory-limit: resident ..." →
/// "memory-limit"): the first word.
pub fn reason_key(reason: &str) -> String {
    let key: String =
        reason.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(40).collect();
    if key.is_empty() { "other".into() } else { key }
}

/// One group as the page shows it: the manager's view (if it knows the
/// group) and the counters (if a slot exists).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupView {
    pub name: String,
    pub state: Option<GroupState>,
    pub counters: Counters,
}

/// Everything one status page shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub now_ms: u64,
    pub manager: Option<ManagerState>,
    /// Why the manager's state is missing or old, if it is.
    pub manager_problem: Option<String>,
    pub groups: Vec<GroupView>,
    /// The page shows only the current virtual host's groups.
    pub vhost_only: bool,
    /// mod_procd's own version and build (the Apache side's).
    pub version: String,
    pub build: String,
}

/// The manager's state is older than this: it is said to be stale.
pub const STALE_MS: u64 = 10_000;

impl Report {
    /// Joins the manager's state with the counters, keeping the groups
    /// `visible` allows (None: all).
    pub fn build(
        now_ms: u64,
        manager: Result<ManagerState, String>,
        counters: Vec<(String, Counters)>,
        visible: Option<&[String]>,
    ) -> Report {
        let keep = |name: &str| visible.is_none_or(|v| v.iter().any(|n| n == name));
        let (manager, mut problem) = match manager {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e)),
        };
        if let Some(m) = &manager {
            let age = now_ms.saturating_sub(m.written_at_ms);
            if age > STALE_MS {
                problem = Some(format!(
                    "the manager's state is {} s old: the manager may not be running (see the error log)",
                    age / 1000
                ));
            }
        }
        let mut groups: BTreeMap<String, GroupView> = BTreeMap::new();
        for g in manager.iter().flat_map(|m| m.groups.iter()) {
            if keep(&g.name) {
                groups.insert(
                    g.name.clone(),
                    GroupView { name: g.name.clone(), state: Some(g.clone()), counters: Counters::default() },
                );
            }
        }
        for (name, c) in counters {
            if keep(&name) {
                groups.entry(name.clone()).or_insert_with(|| GroupView { name, ..Default::default() }).counters = c;
            }
        }
        Report {
            now_ms,
            manager,
            manager_problem: problem,
            groups: groups.into_values().collect(),
            vhost_only: visible.is_some(),
            version: String::new(),
            build: String::new(),
        }
    }
}

/// Parses the manager's snapshot file's text.
pub fn parse_state(text: &[u8]) -> Result<ManagerState, String> {
    let state: ManagerState =
        serde_json::from_slice(text).map_err(|e| format!("the manager's state file is not valid: {e}"))?;
    if state.schema != SCHEMA_VERSION {
        return Err(format!(
            "the manager's state file has schema {} (this module reads {SCHEMA_VERSION}): the manager is from another build; apachectl restart updates it",
            state.schema
        ));
    }
    Ok(state)
}

/// The status page's format, from the query string.
#[derive(Debug, PartialEq, Eq)]
pub enum Format {
    Html { refresh: u32 },
    Json,
    Prometheus,
}

/// `?json`, `?prometheus`, `?refresh=N` (also `format=json|prometheus|html`).
pub fn format_of(args: &str) -> Result<Format, String> {
    let mut format = Format::Html { refresh: 0 };
    let mut refresh = 0;
    for part in args.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match (k, v) {
            ("json", _) | ("format", "json") => format = Format::Json,
            ("prometheus", _) | ("format", "prometheus") => format = Format::Prometheus,
            ("format", "html") => {}
            ("refresh", n) => {
                refresh = n
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=3600).contains(n))
                    .ok_or_else(|| format!("refresh={n}: expected seconds, 1 to 3600"))?;
            }
            _ => {}
        }
    }
    if let Format::Html { .. } = format {
        format = Format::Html { refresh };
    }
    Ok(format)
}

/// What the status page shows of a request's URI: its path (at most what
/// the table keeps), never its query string, which may carry a token.
pub fn shown_uri(unparsed: &[u8]) -> Vec<u8> {
    match unparsed.iter().position(|b| *b == b'?') {
        Some(q) => [&unparsed[..q], b"?\xe2\x80\xa6"].concat(),
        None => unparsed.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1000), 0);
        assert_eq!(bucket_of(1001), 1);
        assert_eq!(bucket_of(60_000_000), BUCKETS.len() - 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS.len());
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let mut h = vec![0; NBUCKETS];
        assert_eq!(quantile(&h, 0.5), None);
        h[bucket_of(50_000)] = 100; // (0.025, 0.05]
        let p50 = quantile(&h, 0.5).unwrap();
        assert!((p50 - 0.0375).abs() < 1e-9, "{p50}");
        h[NBUCKETS - 1] = 1000;
        assert_eq!(quantile(&h, 0.99), Some(60.0));
        let mut one = vec![0; NBUCKETS];
        one[3] = 1;
        let q = quantile(&one, 0.99).unwrap();
        assert!(q > BUCKETS[2] && q <= BUCKETS[3]);
    }

    #[test]
    fn causes_follow_the_handlers_sentences() {
        let c = |s, l: &str| CAUSES[cause_of(s, l, false)];
        assert_eq!(c(503, "group g: its connection queue is full: for queue-timeout"), "queue-full");
        assert_eq!(c(503, "group g is not running: x did not appear"), "not-running");
        assert_eq!(c(503, "group g: no worker became free within queue-timeout"), "queue-timeout");
        assert_eq!(c(504, "request-timeout (1 s) exceeded"), "request-timeout");
        assert_eq!(c(502, "group g: worker pid 3 was killed by signal SIGKILL while handling"), "worker-died");
        assert_eq!(c(502, "group g: malformed response from worker pid 3"), "bad-answer");
        assert_eq!(c(502, "group g: bad answer from worker pid 3: x"), "bad-answer");
        assert_eq!(c(500, "group g: the application failed in worker pid 3"), "app-error");
        assert_eq!(c(500, "its language speaks fastcgi"), "other");
        assert_eq!(CAUSES[cause_of(200, "", true)], "cut");
    }

    #[test]
    fn reason_keys() {
        assert_eq!(reason_key("memory-limit: resident set 90 MiB > 80 MiB"), "memory-limit");
        assert_eq!(reason_key("maximum-requests, as the worker reported"), "maximum-requests");
        assert_eq!(reason_key("lifetime: 3 s > 2 s"), "lifetime");
        assert_eq!(reason_key(""), "other");
    }

    #[test]
    fn reports_join_and_filter_groups() {
        let m = ManagerState {
            schema: SCHEMA_VERSION,
            written_at_ms: 1000,
            groups: vec![
                GroupState { name: "a".into(), ..Default::default() },
                GroupState { name: "b".into(), ..Default::default() },
            ],
            ..Default::default()
        };
        let c = Counters { by_class: [0, 3, 0, 0, 0], ..Default::default() };
        let r = Report::build(2000, Ok(m.clone()), vec![("b".into(), c.clone()), ("z".into(), c.clone())], None);
        assert_eq!(r.groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["a", "b", "z"]);
        assert_eq!(r.groups[1].counters.total(), 3);
        assert!(r.manager_problem.is_none());
        let only = ["b".to_string()];
        let r = Report::build(20_000, Ok(m), vec![("z".into(), c)], Some(&only));
        assert_eq!(r.groups.len(), 1);
        assert!(r.manager_problem.unwrap().contains("old"));
        assert!(parse_state(b"{\"schema\":99}").is_err());
        assert!(parse_state(b"not json").is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(format_of(""), Ok(Format::Html { refresh: 0 }));
        assert_eq!(format_of("refresh=5"), Ok(Format::Html { refresh: 5 }));
        assert_eq!(format_of("json"), Ok(Format::Json));
        assert_eq!(format_of("prometheus"), Ok(Format::Prometheus));
        assert_eq!(format_of("format=json&x=1"), Ok(Format::Json));
        assert!(format_of("refresh=0").is_err());
        assert!(format_of("refresh=abc").is_err());
        assert_eq!(shown_uri(b"/a/b?token=secret"), "/a/b?\u{2026}".as_bytes());
        assert_eq!(shown_uri(b"/a"), b"/a");
    }
}
