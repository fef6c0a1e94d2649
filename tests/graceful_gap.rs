//! A graceful restart has no pause in intake.
//!
//! Apache's MPMs replace old children one for one as they exit, looking for
//! exits with a non-blocking wait and a one-second sleep; so intake pauses
//! for about a second at every graceful (measured before this change:
//! longest gap between answers 1.00-1.06 s). mod_procd installs a handler
//! for SIGCHLD in the parent (src/os.rs `wake_on_child_exit`), so an exit
//! ends that sleep. These tests measure the gap under every MPM, with a
//! piped logger and another module's other-child (mod_cgid's daemon) in
//! the same server, and check that those keep working and that stop is
//! prompt and complete.

mod common;
use common::{Apache, Mpm, http_get, wait_until};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const GRACEFULS: usize = 4;
const CLIENTS: usize = 4;

/// With one `language=cgi` group (it starts nothing until a request), so
/// that mod_procd's manager runs, as on any server that uses mod_procd.
const CONFIG: &str = r#"LanguageGroup idle language=cgi
LoadModule cgid_module /usr/lib/apache2/modules/mod_cgid.so
ScriptSock "@DIR@/run/cgid.sock"
CustomLog "|$trap '' TERM; exec /bin/cat >> @DIR@/access.log" "%r %>s"
<Directory "@DIR@/htdocs">
    Options +ExecCGI
    AddHandler cgi-script .cgi
</Directory>
"#;

/// mod_cgid's test script (its output names the CGI interface) and one
/// that keeps a child busy for 0.3 s.
const ENV_CGI: &str = "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nenv\n";
const SLOW_CGI: &str = "#!/bin/sh\nsleep 0.3\nprintf 'Content-Type: text/plain\\n\\nslow\\n'\n";

/// Writes an executable file into the test server's document root.
fn write_script(dir: &std::path::Path, name: &str, text: &str) {
    let path = dir.join("htdocs").join(name);
    std::fs::write(&path, text).expect("write a CGI script");
    let _ = std::process::Command::new("chmod").arg("755").arg(&path).status();
}

/// How many answers to /hello.txt the piped access log holds.
fn logged_answers(access: &std::path::Path) -> usize {
    std::fs::read_to_string(access).unwrap_or_default().matches("GET /hello.txt HTTP/1.1 200").count()
}

/// Runs clients against /hello.txt through `GRACEFULS` graceful restarts:
/// returns (answers, failures, the longest gap between two answers around
/// each restart: from its command to the next one's, or to the end).
/// With `slow` more clients asking for /slow.cgi (0.3 s) all along, so that
/// an old child is still busy when the graceful tells it to go.
fn gap_under_gracefuls(a: &mut Apache, slow: usize) -> (usize, Vec<String>, Vec<Duration>) {
    let stop = Arc::new(AtomicBool::new(false));
    let port = a.port;
    let slow_clients: Vec<_> = (0..slow)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut failed = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match http_get(port, "/slow.cgi") {
                        Ok(r) if r.status == 200 => {}
                        Ok(r) => failed.push(format!("/slow.cgi: status {}", r.status)),
                        Err(e) => failed.push(e),
                    }
                }
                failed
            })
        })
        .collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut done = Vec::new();
                let mut failed = Vec::new();
                // Bounded: at most 60 s or 100,000 requests per client.
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && done.len() < 100_000 {
                    match http_get(port, "/hello.txt") {
                        Ok(r) if r.status == 200 => done.push(Instant::now()),
                        Ok(r) => failed.push(format!("status {}", r.status)),
                        Err(e) => failed.push(e),
                    }
                }
                (done, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut starts = Vec::new();
    for _ in 0..GRACEFULS {
        starts.push(Instant::now());
        a.graceful();
        let cgi = a.get("/env.cgi");
        if cgi.status != 200 || !cgi.text().contains("GATEWAY_INTERFACE=CGI/1.1") {
            a.fail(&format!("the CGI script (mod_cgid's daemon) after a graceful: {} {:?}", cgi.status, cgi.text()));
        }
        std::thread::sleep(Duration::from_millis(800));
    }
    let last = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    let mut failures = Vec::new();
    for c in clients {
        let (done, failed) = c.join().expect("client thread");
        answers.extend(done);
        failures.extend(failed);
    }
    for c in slow_clients {
        failures.extend(c.join().expect("slow client thread"));
    }
    answers.sort();
    starts.push(last);
    let gaps = starts
        .windows(2)
        .map(|s| {
            // The last answer before the window counts: a pause that
            // began before the command is still a pause.
            let before = answers.iter().copied().rfind(|t| *t < s[0]);
            let window: Vec<Instant> =
                before.into_iter().chain(answers.iter().copied().filter(|t| *t >= s[0] && *t <= s[1])).collect();
            window.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(s[1] - s[0])
        })
        .collect();
    (answers.len(), failures, gaps)
}

/// The three MPMs' tests measure one at a time: with two of them at once on
/// 2 cores (CI runs 4 test threads) each one's clients and gracefuls slow
/// the other's, and the longest gap was 154-542 ms instead of 67-74 ms.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn no_intake_gap(mpm: Mpm) {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut a = Apache::new(&format!("gap-{mpm:?}"), mpm, CONFIG);
    let dir = a.dir.clone();
    write_script(&dir, "env.cgi", ENV_CGI);
    a.start();
    let (answers, failures, gaps) = gap_under_gracefuls(&mut a, 0);
    let ms: Vec<u128> = gaps.iter().map(Duration::as_millis).collect();
    println!(
        "{mpm:?}: {answers} answers, {} failed, longest gap at each of {GRACEFULS} gracefuls: {ms:?} ms",
        failures.len()
    );
    if !failures.is_empty() {
        a.fail(&format!("{} failed requests, e.g. {:?}", failures.len(), &failures[..failures.len().min(3)]));
    }
    // Before: 1,000 ms and more at every graceful. README: 59-74 ms
    // measured under every MPM, one at a time (see ONE_AT_A_TIME); on this
    // shared 2-core box a single graceful's gap has reached 0.5 s under
    // others' load, so: at least 3 of the 4 under 0.3 s, none a second.
    let short = gaps.iter().filter(|g| **g < Duration::from_millis(300)).count();
    if short < GRACEFULS - 1 || gaps.iter().any(|g| *g >= Duration::from_millis(1000)) {
        a.fail(&format!("intake paused during graceful restarts: longest gaps {ms:?} ms"));
    }
    let log = a.error_log();
    if log.contains("PD0104") {
        a.fail("SIGCHLD was not ours to take here");
    }

    // Stop is prompt and complete (the harness checks every process).
    let t = Instant::now();
    a.stop();
    let stop_time = t.elapsed();
    if stop_time > Duration::from_secs(5) {
        panic!("apache2 -k stop took {} ms", stop_time.as_millis());
    }
    // The piped logger saw every answer. (At a graceful Apache sends the
    // old logger SIGTERM while old children may still write to it; this
    // logger ignores it and drains until the last writer closes.)
    let access = dir.join("access.log");
    let logged = || logged_answers(&access);
    // Apache itself loses a few piped-log lines at gracefuls, some of them
    // without a word: `piped_log_loss_diagnostic` (below, by hand) measured
    // plain Apache 2.4.71 without mod_procd on 2026-12-04, 4 gracefuls per
    // run: event 0-3 lines per run of 21,000-30,000 answers (4 of 7 unreported),
    // worker 3-9 per run (9 of 27 unreported), prefork 0-4 (unreported);
    // with mod_procd about the same (event 0-8, worker 0-1, prefork 0-4,
    // 3-5 runs each). So this
    // checks that the logger keeps working across gracefuls: at most one
    // line in 2,000 missing and never fewer than 3 per graceful (the loss
    // comes per graceful, not per answer; a logger that stopped would miss
    // thousands).
    let allowed = (answers / 2000).max(3 * GRACEFULS);
    if !wait_until(Duration::from_secs(5), || logged() + allowed >= answers) {
        let errlog = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        let notes: Vec<&str> = errlog.lines().filter(|l| l.contains("AH006") || l.contains("piped")).take(5).collect();
        let other: Vec<String> = std::fs::read_to_string(&access)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with("GET /hello.txt HTTP/1.1 200"))
            .take(5)
            .map(str::to_string)
            .collect();
        panic!(
            "the piped access log has {} of {answers} answers; other lines {other:?}; error log {notes:?}",
            logged()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn graceful_has_no_intake_gap_event() {
    no_intake_gap(Mpm::Event);
}

#[test]
fn graceful_has_no_intake_gap_worker() {
    no_intake_gap(Mpm::Worker);
}

#[test]
fn graceful_has_no_intake_gap_prefork() {
    no_intake_gap(Mpm::Prefork);
}

/// An old child still busy (a 0.3 s CGI request) when the graceful tells it
/// to go. The MPM replaces old children as they exit, and starts the rest
/// after a second without an exit; mod_cgid's daemon, restarted at each
/// graceful, is often reaped before the parent goes to sleep, so the SIGCHLD
/// handler alone left ~1 s without intake at 2-3 gracefuls of 4 under event
/// and worker (1,002-1,073 ms, 2026-12-02). The manager's wake
/// (src/manager/parent_wake.rs) ends that sleep after 50 ms: 0-125 ms
/// gaps measured under event (probe, 4 gracefuls).
fn busy_child_replaced_at_its_exit(mpm: Mpm) {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut a = Apache::new(&format!("gap-busy-{mpm:?}"), mpm, CONFIG);
    let dir = a.dir.clone();
    write_script(&dir, "env.cgi", ENV_CGI);
    write_script(&dir, "slow.cgi", SLOW_CGI);
    a.start();
    let (answers, failures, gaps) = gap_under_gracefuls(&mut a, 2);
    let ms: Vec<u128> = gaps.iter().map(Duration::as_millis).collect();
    println!("{mpm:?}, old children busy: {answers} answers, {} failed, longest gaps {ms:?} ms", failures.len());
    // mod_cgid answers 503 when it cannot reach its daemon, which every
    // graceful restarts: seen on /slow.cgi once in 2-5 runs under worker
    // (the fast clients, which ask for a static file, never failed). That
    // one is mod_cgid's; every other failure counts.
    let failures: Vec<String> = failures.into_iter().filter(|f| f != "/slow.cgi: status 503").collect();
    if !failures.is_empty() {
        a.fail(&format!("{} failed requests, e.g. {:?}", failures.len(), &failures[..failures.len().min(3)]));
    }
    // As for idle old children: at least 3 of the 4 under 0.3 s (noise on
    // this shared box), none a second.
    let short = gaps.iter().filter(|g| **g < Duration::from_millis(300)).count();
    if short < GRACEFULS - 1 || gaps.iter().any(|g| *g >= Duration::from_millis(1000)) {
        a.fail(&format!("intake paused while old children finished: longest gaps {ms:?} ms"));
    }
    a.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_busy_old_child_is_replaced_at_its_exit_event() {
    busy_child_replaced_at_its_exit(Mpm::Event);
}

#[test]
fn a_busy_old_child_is_replaced_at_its_exit_worker() {
    busy_child_replaced_at_its_exit(Mpm::Worker);
}

#[test]
fn a_busy_old_child_is_replaced_at_its_exit_prefork() {
    busy_child_replaced_at_its_exit(Mpm::Prefork);
}

/// Diagnostic (run by hand): piped-log lines lost, and the longest gap in
/// intake, across gracefuls under `PROCD_LOSS_MPM` (event, worker, prefork;
/// worker by default), with mod_procd loaded or not (`PROCD_LOSS_WITHOUT=1`),
/// with mod_cgid's daemon or not (`PROCD_LOSS_NOCGID=1`), with clients of
/// a 0.3 s CGI script that keep old children busy (`PROCD_LOSS_SLOW=2`),
/// more configuration (`PROCD_LOSS_EXTRA='StartServers 6\nMinSpareServers 4'`),
/// `PROCD_LOSS_RUNS` runs:
///   PROCD_LOSS_NOCGID=1 PROCD_LOSS_WITHOUT=1 PROCD_LOSS_MPM=event \
///     cargo test --test graceful_gap piped_log_loss -- --ignored --nocapture
#[test]
#[ignore]
fn piped_log_loss_diagnostic() {
    let mpm = match std::env::var("PROCD_LOSS_MPM").as_deref() {
        Ok("event") => Mpm::Event,
        Ok("prefork") => Mpm::Prefork,
        _ => Mpm::Worker,
    };
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    let (without, nocgid) = (set("PROCD_LOSS_WITHOUT"), set("PROCD_LOSS_NOCGID"));
    let runs: usize = std::env::var("PROCD_LOSS_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let slow: usize = std::env::var("PROCD_LOSS_SLOW").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(slow == 0 || !nocgid, "PROCD_LOSS_SLOW needs mod_cgid (without PROCD_LOSS_NOCGID)");
    let cut = |config: String, line: &str| {
        assert!(config.contains(line), "CONFIG no longer has {line:?}");
        config.replace(line, "")
    };
    let mut config = CONFIG.to_string();
    if without {
        config = cut(config, "LanguageGroup idle language=cgi\n");
    }
    if nocgid {
        config = cut(config, "LoadModule cgid_module /usr/lib/apache2/modules/mod_cgid.so\n");
        config = cut(config, "ScriptSock \"@DIR@/run/cgid.sock\"\n");
        config = cut(config, "    AddHandler cgi-script .cgi\n");
    }
    // More configuration, e.g. "StartServers 6" (last one wins).
    config.push_str(&std::env::var("PROCD_LOSS_EXTRA").unwrap_or_default().replace("\\n", "\n"));
    config.push('\n');
    for run in 0..runs {
        let mut a = Apache::new(&format!("loss-{mpm:?}-{run}"), mpm, &config);
        if without {
            a.set_module_conf("");
        }
        let dir = a.dir.clone();
        // Without mod_cgid, served as a file: what the graceful loop looks for.
        write_script(&dir, "env.cgi", if nocgid { "GATEWAY_INTERFACE=CGI/1.1\n" } else { ENV_CGI });
        write_script(&dir, "slow.cgi", SLOW_CGI);
        a.start();
        let (answers, failures, gaps) = gap_under_gracefuls(&mut a, slow);
        a.stop();
        let access = dir.join("access.log");
        let logged = || logged_answers(&access);
        wait_until(Duration::from_secs(5), || logged() >= answers);
        let reported = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default().matches("AH00646").count();
        println!(
            "{mpm:?} without={without} run {run}: {answers} answers, {} logged, {} missing, AH00646 {reported}, failed {}, gaps {:?}",
            logged(),
            answers.saturating_sub(logged()),
            failures.len(),
            gaps.iter().map(Duration::as_millis).collect::<Vec<_>>()
        );
        let text = std::fs::read_to_string(&access).unwrap_or_default();
        let odd: Vec<&str> = text.lines().filter(|l| *l != "GET /hello.txt HTTP/1.1 200").take(12).collect();
        println!("  other lines: {odd:?}");
        if logged() == answers {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
