//! The status page's three formats. Every string that reaches output is
//! escaped for its format (HTML, JSON by serde, Prometheus label values).

use super::{BUCKETS, CAUSES, Counters, GroupState, GroupView, InFlight, Report, SCHEMA_VERSION};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

// ---------------------------------------------------------------- JSON

/// The `?json` document (schema: `src/status/schema.json`).
#[derive(Serialize)]
struct Document<'a> {
    schema: &'static str,
    version: u32,
    generated_at_ms: u64,
    module: Module<'a>,
    vhost_only: bool,
    manager: Option<ManagerDoc<'a>>,
    manager_problem: Option<&'a str>,
    groups: Vec<GroupDoc<'a>>,
}

#[derive(Serialize)]
struct Module<'a> {
    version: &'a str,
    build: &'a str,
}

#[derive(Serialize)]
struct ManagerDoc<'a> {
    pid: u32,
    uptime_seconds: u64,
    version: &'a str,
    build: &'a str,
    written_at_ms: u64,
}

#[derive(Serialize)]
struct GroupDoc<'a> {
    name: &'a str,
    /// What the manager says (null if it does not know the group).
    manager: Option<&'a GroupState>,
    requests: RequestsDoc<'a>,
}

#[derive(Serialize)]
struct RequestsDoc<'a> {
    total: u64,
    by_class: BTreeMap<&'static str, u64>,
    failures: BTreeMap<&'a str, u64>,
    queued: u64,
    queue_wait_seconds: f64,
    in_flight: u64,
    last_minute: LastMinute,
    histogram: Histogram<'a>,
    in_progress: &'a [InFlight],
}

#[derive(Serialize)]
struct LastMinute {
    requests: u64,
    seconds: u64,
    rate_per_second: f64,
    p50_seconds: Option<f64>,
    p90_seconds: Option<f64>,
    p99_seconds: Option<f64>,
}

#[derive(Serialize)]
struct Histogram<'a> {
    /// Upper bounds in seconds; the last count is for +Inf.
    bounds: &'static [f64],
    counts: &'a [u64],
    sum_seconds: f64,
    count: u64,
}

/// One of a group's event counters.
type EventMap = fn(&GroupState) -> &BTreeMap<String, u64>;

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn failures(c: &Counters) -> BTreeMap<&str, u64> {
    let mut out: BTreeMap<&str, u64> = CAUSES.iter().map(|k| (*k, 0)).collect();
    for (k, v) in &c.by_cause {
        if let Some(slot) = out.get_mut(k.as_str()) {
            *slot = *v;
        }
    }
    out
}

pub fn json(r: &Report) -> String {
    let doc = Document {
        schema: "mod_procd-status",
        version: SCHEMA_VERSION,
        generated_at_ms: r.now_ms,
        module: Module { version: &r.version, build: &r.build },
        vhost_only: r.vhost_only,
        manager: r.manager.as_ref().map(|m| ManagerDoc {
            pid: m.pid,
            uptime_seconds: r.now_ms.saturating_sub(m.started_at_ms) / 1000,
            version: &m.version,
            build: &m.build,
            written_at_ms: m.written_at_ms,
        }),
        manager_problem: r.manager_problem.as_deref(),
        groups: r
            .groups
            .iter()
            .map(|g| {
                let c = &g.counters;
                GroupDoc {
                    name: &g.name,
                    manager: g.state.as_ref(),
                    requests: RequestsDoc {
                        total: c.total(),
                        by_class: CLASSES.iter().copied().zip(c.by_class).collect(),
                        failures: failures(c),
                        queued: c.queued,
                        queue_wait_seconds: c.queue_wait_seconds,
                        in_flight: c.in_flight,
                        last_minute: LastMinute {
                            requests: c.window.iter().sum(),
                            seconds: c.window_seconds,
                            rate_per_second: c.rate(),
                            p50_seconds: c.quantile(0.5),
                            p90_seconds: c.quantile(0.9),
                            p99_seconds: c.quantile(0.99),
                        },
                        histogram: Histogram {
                            bounds: &BUCKETS,
                            counts: &c.histogram,
                            sum_seconds: c.duration_sum_seconds,
                            count: c.count,
                        },
                        in_progress: &c.requests,
                    },
                }
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    text.push('\n');
    text
}

// ---------------------------------------------------------------- Prometheus

/// A label value, escaped as the text exposition format requires.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: integers plainly, others with Rust's shortest exact form.
fn num(v: f64) -> String {
    if v.is_finite() { format!("{v}") } else { "NaN".into() }
}

struct Prom {
    out: String,
}

impl Prom {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", num(value));
    }
}

/// Text exposition format 0.0.4.
pub fn prometheus(r: &Report) -> String {
    let mut p = Prom { out: String::with_capacity(8192) };
    p.family("procd_up", "gauge", "1 if the manager's state is current, 0 if it is missing or stale");
    p.sample("procd_up", &[], if r.manager.is_some() && r.manager_problem.is_none() { 1.0 } else { 0.0 });
    if let Some(m) = &r.manager {
        p.family("procd_manager_uptime_seconds", "gauge", "Seconds since the process manager started");
        p.sample("procd_manager_uptime_seconds", &[], (r.now_ms.saturating_sub(m.started_at_ms) / 1000) as f64);
        p.family("procd_build_info", "gauge", "The manager's version and build (always 1)");
        p.sample("procd_build_info", &[("version", &m.version), ("build", &m.build)], 1.0);
    }
    let gs = &r.groups;
    p.family("procd_requests_total", "counter", "Requests to the group, by status class");
    for g in gs {
        for (class, n) in CLASSES.iter().zip(g.counters.by_class) {
            p.sample("procd_requests_total", &[("group", &g.name), ("code_class", class)], n as f64);
        }
    }
    p.family(
        "procd_request_failures_total",
        "counter",
        "Requests the handler failed (502, 503, 504, 500, cut), by cause",
    );
    for g in gs {
        for (cause, n) in failures(&g.counters) {
            p.sample("procd_request_failures_total", &[("group", &g.name), ("cause", cause)], n as f64);
        }
    }
    p.family("procd_requests_in_flight", "gauge", "Requests being served now");
    for g in gs {
        p.sample("procd_requests_in_flight", &[("group", &g.name)], g.counters.in_flight as f64);
    }
    p.family("procd_queued_requests_total", "counter", "Requests that a worker took from the group's queue");
    for g in gs {
        p.sample("procd_queued_requests_total", &[("group", &g.name)], g.counters.queued as f64);
    }
    p.family("procd_queue_wait_seconds_total", "counter", "Time requests waited for a worker to take them");
    for g in gs {
        p.sample("procd_queue_wait_seconds_total", &[("group", &g.name)], g.counters.queue_wait_seconds);
    }
    p.family("procd_request_duration_seconds", "histogram", "Time Apache spent on a request to the group");
    for g in gs {
        let c = &g.counters;
        let mut cumulative = 0u64;
        for (i, n) in c.histogram.iter().enumerate() {
            cumulative += n;
            let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| format!("{b}"));
            p.sample("procd_request_duration_seconds_bucket", &[("group", &g.name), ("le", &le)], cumulative as f64);
        }
        if c.histogram.is_empty() {
            p.sample("procd_request_duration_seconds_bucket", &[("group", &g.name), ("le", "+Inf")], 0.0);
        }
        p.sample("procd_request_duration_seconds_sum", &[("group", &g.name)], c.duration_sum_seconds);
        p.sample("procd_request_duration_seconds_count", &[("group", &g.name)], cumulative as f64);
    }
    p.family("procd_workers", "gauge", "Workers by state (busy: ready and active in the last second)");
    for g in gs {
        let Some(s) = &g.state else { continue };
        for state in ["starting", "idle", "busy", "retiring", "draining"] {
            let n = s.workers.iter().filter(|w| worker_state(w, &g.counters) == state).count();
            p.sample("procd_workers", &[("group", &g.name), ("state", state)], n as f64);
        }
    }
    p.family("procd_worker_resident_bytes", "gauge", "Resident memory of each worker");
    for g in gs {
        for w in g.state.iter().flat_map(|s| s.workers.iter()) {
            if let Some(b) = w.resident_bytes {
                p.sample("procd_worker_resident_bytes", &[("group", &g.name), ("pid", &w.pid.to_string())], b as f64);
            }
        }
    }
    p.family("procd_worker_age_seconds", "gauge", "Seconds since each worker started");
    for g in gs {
        for w in g.state.iter().flat_map(|s| s.workers.iter()) {
            p.sample(
                "procd_worker_age_seconds",
                &[("group", &g.name), ("pid", &w.pid.to_string())],
                (w.age_ms / 1000) as f64,
            );
        }
    }
    p.family(
        "procd_group_backoff",
        "gauge",
        "1 while the group's workers fail to start and it waits before the next attempt",
    );
    for g in gs {
        if let Some(s) = &g.state {
            p.sample("procd_group_backoff", &[("group", &g.name)], if s.retry_in_ms.is_some() { 1.0 } else { 0.0 });
        }
    }
    p.family("procd_group_failures", "gauge", "Quick worker failures in a row");
    for g in gs {
        if let Some(s) = &g.state {
            p.sample("procd_group_failures", &[("group", &g.name)], s.failures as f64);
        }
    }
    let maps: [(&str, &str, EventMap, &str); 4] = [
        ("procd_generations_total", "New generations of the group, by reason", |s| &s.events.generations, "reason"),
        ("procd_worker_recycles_total", "Workers recycled, by reason", |s| &s.events.recycles, "reason"),
        ("procd_scale_events_total", "Pool scaling decisions, by direction", |s| &s.events.scale, "direction"),
        ("procd_worker_exits_total", "Worker exits: crash, expected, failed-start", |s| &s.events.exits, "how"),
    ];
    for (name, help, get, key) in maps {
        p.family(name, "counter", help);
        for g in gs {
            if let Some(s) = &g.state {
                for (k, v) in get(s) {
                    p.sample(name, &[("group", &g.name), (key, k)], *v as f64);
                }
            }
        }
    }
    p.family("procd_backoffs_total", "counter", "Back-off periods begun");
    for g in gs {
        if let Some(s) = &g.state {
            p.sample("procd_backoffs_total", &[("group", &g.name)], s.events.backoffs as f64);
        }
    }
    p.out
}

/// A worker's state for display: busy when it was active in the last
/// second or a request in progress names it.
fn worker_state(w: &super::WorkerState, c: &Counters) -> &'static str {
    match w.state.as_str() {
        "starting" | "replacing" => "starting",
        "retiring" => "retiring",
        "draining" => "draining",
        _ if w.active || c.requests.iter().any(|q| q.worker_pid == w.pid) => "busy",
        _ => "idle",
    }
}

// ----------------------------------------------------------- mod_status

/// One group in a line: workers by state, requests, 5xx answers, and
/// whether it serves, starts or waits in back-off.
struct Summary {
    workers: usize,
    busy: usize,
    requests: u64,
    errors: u64,
    state: String,
}

fn summary(r: &Report, g: &GroupView) -> Summary {
    let c = &g.counters;
    let (workers, busy, state) = match &g.state {
        None if r.manager.is_none() => (0, 0, "manager not running".to_string()),
        None => (0, 0, "not known to the manager".to_string()),
        Some(s) => {
            let busy = s.workers.iter().filter(|w| worker_state(w, c) == "busy").count();
            let state = match s.retry_in_ms {
                Some(ms) => format!("back-off, next start in {}", duration_ms(ms)),
                None if s.generations.iter().any(|x| x.phase == "serving") => "serving".to_string(),
                None if s.generations.is_empty() => "no workers".to_string(),
                None => "starting".to_string(),
            };
            (s.workers.len(), busy, state)
        }
    };
    Summary { workers, busy, requests: c.by_class.iter().sum(), errors: c.by_class[4], state }
}

/// mod_status's section (`server-status`): one line per group, as an HTML
/// table or, for `?auto`, `ProcdGroup.NAME: key=value ...` lines. The full
/// page is `SetHandler procd-status`.
pub fn mod_status_section(r: &Report, short: bool) -> String {
    let mut o = String::new();
    if short {
        for g in &r.groups {
            let s = summary(r, g);
            let _ = writeln!(
                o,
                "ProcdGroup.{}: workers={} busy={} requests={} 5xx={} state={}",
                g.name,
                s.workers,
                s.busy,
                s.requests,
                s.errors,
                s.state.replace(' ', "-")
            );
        }
        return o;
    }
    o.push_str("<hr /><h2>mod_procd process groups</h2>\n");
    if let Some(p) = &r.manager_problem {
        let _ = writeln!(o, "<p>{}</p>", html_escape(p));
    }
    o.push_str("<table border=\"0\"><tr><th>Group</th><th>Workers</th><th>Busy</th><th>Requests</th><th>5xx</th><th>State</th></tr>\n");
    for g in &r.groups {
        let s = summary(r, g);
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            html_escape(&g.name),
            s.workers,
            s.busy,
            s.requests,
            s.errors,
            html_escape(&s.state)
        );
    }
    o.push_str("</table>\n<p>Details: a <code>SetHandler procd-status</code> location.</p>\n");
    o
}

// ---------------------------------------------------------------- HTML

/// Text for HTML (element content and quoted attribute values).
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms} ms"),
        1..60 => format!("{}.{} s", s, (ms % 1000) / 100),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86400, (s % 86400) / 3600),
    }
}

fn seconds(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(s) if s < 1.0 => format!("{:.1} ms", s * 1000.0),
        Some(s) => format!("{s:.2} s"),
    }
}

fn bytes(b: Option<u64>) -> String {
    match b {
        None => "–".into(),
        Some(b) if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        Some(b) => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
    }
}

fn count_map(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter().map(|(k, v)| format!("{} {}", html_escape(k), v)).collect::<Vec<_>>().join(", ")
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.2em 2em;color:#1d232b;background:#f6f7f9}
h1{font-size:1.45em;margin:0 0 .2em}
h2{font-size:1.15em;margin:0;display:inline-block}
.meta{color:#555;margin-bottom:1em}
section{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:.8em 1.1em;margin:0 0 1.2em}
.head{display:flex;gap:.8em;align-items:baseline;flex-wrap:wrap;margin-bottom:.4em}
.badge{font-size:.85em;padding:.1em .6em;border-radius:9px;background:#e3f3e6;color:#17622b;font-weight:600}
.badge.warn{background:#fff1d6;color:#8a5300}.badge.bad{background:#fde2e1;color:#a11b12}
.sub{color:#555}
.problem{background:#fde2e1;border:1px solid #f0b4b0;color:#8d1a12;padding:.5em .8em;border-radius:6px;margin:0 0 1em}
table{border-collapse:collapse;margin:.4em 0 .6em;min-width:40em}
th,td{padding:.22em .7em;border-bottom:1px solid #e6e8ec;text-align:left;white-space:nowrap}
th{background:#eef1f5;font-weight:600;font-size:.92em}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.busy td{background:#fff4cc}
tr.retiring td,tr.draining td{color:#777}
td.uri{white-space:normal;word-break:break-all;max-width:36em;font-family:ui-monospace,monospace;font-size:.92em}
.grid{display:grid;grid-template-columns:max-content auto;gap:.1em 1.2em;margin:.3em 0 .5em}
.grid div:nth-child(odd){color:#555}
ul.events{margin:.2em 0;padding-left:1.2em;color:#333}
.bad{color:#a11b12}
footer{color:#777;font-size:.9em}
"#;

/// The HTML page; `refresh`: seconds for a meta refresh (0: none).
pub fn html(r: &Report, refresh: u32) -> String {
    let mut o = String::with_capacity(16384);
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    if refresh > 0 {
        let _ = writeln!(o, "<meta http-equiv=\"refresh\" content=\"{refresh}\">");
    }
    let _ = write!(o, "<title>procd-status</title>\n<style>{STYLE}</style></head><body>\n<h1>mod_procd status</h1>\n");
    o.push_str("<div class=\"meta\">");
    match &r.manager {
        Some(m) => {
            let _ = write!(
                o,
                "manager pid {} · up {} · version {} · build {}",
                m.pid,
                duration_ms(r.now_ms.saturating_sub(m.started_at_ms)),
                html_escape(&m.version),
                html_escape(&m.build)
            );
        }
        None => o.push_str("manager: unknown"),
    }
    let _ = writeln!(
        o,
        " · {} group(s){}{}</div>",
        r.groups.len(),
        if r.vhost_only { " of this virtual host" } else { "" },
        if refresh > 0 { format!(" · refreshes every {refresh} s") } else { String::new() }
    );
    if let Some(p) = &r.manager_problem {
        let _ = writeln!(o, "<div class=\"problem\">{}</div>", html_escape(p));
    }
    if r.groups.is_empty() {
        o.push_str("<p>No process group is configured here.</p>\n");
    }
    for g in &r.groups {
        group_html(&mut o, r, g);
    }
    let _ = writeln!(
        o,
        "<footer>Also as <a href=\"?json\">JSON</a> and <a href=\"?prometheus\">Prometheus text</a>. mod_procd {} (build {}).</footer>\n</body></html>",
        html_escape(&r.version),
        html_escape(&r.build)
    );
    o
}

fn group_html(o: &mut String, r: &Report, g: &GroupView) {
    let c = &g.counters;
    let name = html_escape(&g.name);
    let _ = write!(o, "<section id=\"group-{name}\">\n<div class=\"head\"><h2>{name}</h2>");
    let Some(s) = &g.state else {
        let _ = writeln!(
            o,
            "<span class=\"badge warn\">not known to the manager</span></div><p class=\"sub\">Counters only (the group was removed, or the manager has not reported it yet).</p>"
        );
        counters_html(o, c);
        o.push_str("</section>\n");
        return;
    };
    let serving = s.generations.iter().find(|x| x.phase == "serving");
    let starting = s.generations.iter().find(|x| x.phase == "starting");
    let (badge, class) = if let Some(ms) = s.retry_in_ms {
        (format!("back-off: {} failure(s) in a row, next attempt in {}", s.failures, duration_ms(ms)), "bad")
    } else if s.removed {
        ("removed: draining".to_string(), "warn")
    } else if let Some(st) = starting {
        (format!("restarting: generation {} starting", st.id), "warn")
    } else if serving.is_some() {
        ("serving".to_string(), "")
    } else {
        ("not serving".to_string(), "bad")
    };
    let _ = write!(o, "<span class=\"badge {class}\">{}</span>", html_escape(&badge));
    let _ = writeln!(
        o,
        "<span class=\"sub\">{} · {} · user {}</span></div>",
        html_escape(&s.language),
        html_escape(&s.protocol),
        html_escape(&s.user)
    );
    let l = &s.limits;
    let procs = if l.processes_max > l.processes_min {
        format!("{}–{}", l.processes_min, l.processes_max)
    } else {
        l.processes_min.to_string()
    };
    o.push_str("<div class=\"grid\">");
    let gens = s
        .generations
        .iter()
        .map(|x| {
            let port = x.port.map_or(String::new(), |p| format!(", port {p}"));
            format!("{} ({}, {}{port})", x.id, html_escape(&x.phase), duration_ms(x.age_ms))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let _ = write!(o, "<div>generations</div><div>{}</div>", if gens.is_empty() { "none".into() } else { gens });
    let mut limits = format!("processes {procs}, threads {}", l.threads);
    if l.maximum_requests > 0 {
        let _ = write!(limits, ", maximum-requests {}", l.maximum_requests);
    }
    if l.memory_limit_bytes > 0 {
        let _ = write!(limits, ", memory-limit {}", bytes(Some(l.memory_limit_bytes)));
    }
    if l.lifetime_ms > 0 {
        let _ = write!(limits, ", lifetime {}", duration_ms(l.lifetime_ms));
    }
    let _ = write!(
        limits,
        ", request-timeout {}, graceful-timeout {}",
        duration_ms(l.request_timeout_ms),
        duration_ms(l.graceful_timeout_ms)
    );
    let _ = write!(o, "<div>limits</div><div>{limits}</div>");
    let e = &s.events;
    let _ = write!(o, "<div>new generations</div><div>{}</div>", count_map(&e.generations));
    let _ = write!(o, "<div>recycles</div><div>{}</div>", count_map(&e.recycles));
    let _ = write!(o, "<div>scaling</div><div>{}</div>", count_map(&e.scale));
    let _ = write!(
        o,
        "<div>worker exits</div><div>{}{}</div>",
        count_map(&e.exits),
        if e.backoffs > 0 { format!("; back-offs {}", e.backoffs) } else { String::new() }
    );
    o.push_str("</div>\n");
    counters_html(o, c);
    // Workers.
    o.push_str("<table class=\"workers\"><tr><th class=\"n\">pid</th><th class=\"n\">gen</th><th>state</th><th class=\"n\">age</th><th class=\"n\">memory</th><th>current request</th><th class=\"n\">running</th></tr>\n");
    if s.workers.is_empty() {
        o.push_str("<tr><td colspan=\"7\" class=\"sub\">no worker runs</td></tr>\n");
    }
    for w in &s.workers {
        let state = worker_state(w, c);
        let current = c.requests.iter().find(|q| q.worker_pid == w.pid);
        let (req, running) = match current {
            Some(q) => (format!("{} {}", html_escape(&q.method), html_escape(&q.uri)), duration_ms(q.running_ms)),
            None => (String::new(), String::new()),
        };
        let _ = writeln!(
            o,
            "<tr class=\"{state}\"><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{state}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"uri\">{req}</td><td class=\"n\">{running}</td></tr>",
            w.pid,
            w.generation,
            duration_ms(w.age_ms),
            bytes(w.resident_bytes)
        );
    }
    o.push_str("</table>\n");
    in_progress_html(o, c);
    if !s.recent.is_empty() {
        o.push_str("<div class=\"sub\">recent events</div><ul class=\"events\">");
        for ev in s.recent.iter().rev().take(5) {
            let _ = write!(
                o,
                "<li>{} ago: {} — {}</li>",
                duration_ms(r.now_ms.saturating_sub(ev.at_ms)),
                html_escape(&ev.kind),
                html_escape(&ev.reason)
            );
        }
        o.push_str("</ul>\n");
    }
    o.push_str("</section>\n");
}

fn counters_html(o: &mut String, c: &Counters) {
    o.push_str("<table class=\"counters\"><tr><th class=\"n\">requests</th><th class=\"n\">2xx</th><th class=\"n\">3xx</th><th class=\"n\">4xx</th><th class=\"n\">5xx</th><th class=\"n\">in flight</th><th class=\"n\">req/s (1 min)</th><th class=\"n\">p50</th><th class=\"n\">p90</th><th class=\"n\">p99</th><th class=\"n\">queued</th><th class=\"n\">avg queue wait</th></tr>\n");
    let avg_wait = (c.queued > 0).then(|| c.queue_wait_seconds / c.queued as f64);
    let _ = writeln!(
        o,
        "<tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr></table>",
        c.total(),
        c.by_class[1],
        c.by_class[2],
        c.by_class[3],
        if c.by_class[4] > 0 { " bad" } else { "" },
        c.by_class[4],
        c.in_flight,
        c.rate(),
        seconds(c.quantile(0.5)),
        seconds(c.quantile(0.9)),
        seconds(c.quantile(0.99)),
        c.queued,
        seconds(avg_wait)
    );
    let failed: Vec<String> =
        c.by_cause.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{} {n}", html_escape(k))).collect();
    if !failed.is_empty() {
        let _ = writeln!(o, "<div class=\"bad\">failed requests by cause: {}</div>", failed.join(", "));
    }
}

fn in_progress_html(o: &mut String, c: &Counters) {
    if c.requests.is_empty() {
        return;
    }
    o.push_str("<table class=\"requests\"><tr><th>request in progress</th><th class=\"n\">running</th><th class=\"n\">worker</th><th class=\"n\">Apache pid</th></tr>\n");
    for q in &c.requests {
        let worker = if q.worker_pid == 0 { "–".to_string() } else { q.worker_pid.to_string() };
        let _ = writeln!(
            o,
            "<tr class=\"busy\"><td class=\"uri\">{} {}</td><td class=\"n\">{}</td><td class=\"n\">{worker}</td><td class=\"n\">{}</td></tr>",
            html_escape(&q.method),
            html_escape(&q.uri),
            duration_ms(q.running_ms),
            q.apache_pid
        );
    }
    o.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    fn sample() -> Report {
        let state = GroupState {
            name: "sh\"op".into(),
            language: "python".into(),
            protocol: "procd".into(),
            user: "<shop>".into(),
            generations: vec![GenerationState { id: 3, phase: "serving".into(), age_ms: 5000, port: None }],
            workers: vec![WorkerState {
                pid: 42,
                generation: 3,
                state: "ready".into(),
                age_ms: 5000,
                resident_bytes: Some(30 << 20),
                active: false,
            }],
            ..Default::default()
        };
        let mut window = vec![0; NBUCKETS];
        window[5] = 10;
        let counters = Counters {
            by_class: [0, 10, 0, 0, 2],
            by_cause: [("queue-full".to_string(), 2)].into(),
            histogram: window.clone(),
            window,
            window_seconds: 60,
            count: 10,
            requests: vec![InFlight {
                method: "GET".into(),
                uri: "/a?<script>".into(),
                apache_pid: 7,
                worker_pid: 42,
                running_ms: 1500,
            }],
            ..Default::default()
        };
        let m = ManagerState {
            schema: SCHEMA_VERSION,
            written_at_ms: 1000,
            pid: 9,
            version: "0.1.0".into(),
            groups: vec![state],
            ..Default::default()
        };
        Report::build(1500, Ok(m), vec![("sh\"op".into(), counters)], None)
    }

    #[test]
    fn html_escapes_and_highlights_busy_workers() {
        let page = html(&sample(), 5);
        assert!(page.contains("content=\"5\""));
        assert!(page.contains("sh&quot;op"));
        assert!(page.contains("&lt;shop&gt;"));
        assert!(page.contains("/a?&lt;script&gt;"));
        assert!(!page.contains("<script>"));
        assert!(page.contains("<tr class=\"busy\"><td class=\"n\">42</td>"));
    }

    #[test]
    fn prometheus_labels_are_escaped_and_histograms_cumulative() {
        let text = prometheus(&sample());
        assert!(text.contains("procd_requests_total{group=\"sh\\\"op\",code_class=\"2xx\"} 10"));
        assert!(text.contains("procd_request_duration_seconds_bucket{group=\"sh\\\"op\",le=\"+Inf\"} 10"));
        assert!(text.contains("procd_request_duration_seconds_count{group=\"sh\\\"op\"} 10"));
        assert!(text.contains("procd_workers{group=\"sh\\\"op\",state=\"busy\"} 1"));
        assert!(text.contains("procd_request_failures_total{group=\"sh\\\"op\",cause=\"queue-full\"} 2"));
        assert!(label("a\nb\\c").contains("a\\nb\\\\c"));
    }

    #[test]
    fn json_is_versioned() {
        let v: serde_json::Value = serde_json::from_str(&json(&sample())).unwrap();
        assert_eq!(v["schema"], "mod_procd-status");
        assert_eq!(v["version"], SCHEMA_VERSION);
        assert_eq!(v["groups"][0]["requests"]["by_class"]["2xx"], 10);
        assert_eq!(v["groups"][0]["requests"]["failures"]["queue-full"], 2);
        assert_eq!(v["groups"][0]["manager"]["workers"][0]["pid"], 42);
    }
    #[test]
    fn mod_status_lines_sum_each_group() {
        let short = mod_status_section(&sample(), true);
        assert_eq!(short, "ProcdGroup.sh\"op: workers=1 busy=1 requests=12 5xx=2 state=serving\n");
        let page = mod_status_section(&sample(), false);
        assert!(
            page.contains("<td>sh&quot;op</td><td>1</td><td>1</td><td>12</td><td>2</td><td>serving</td>"),
            "{page}"
        );
    }
}
