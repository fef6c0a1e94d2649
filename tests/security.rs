//! The security model against a real Apache: what Apache's children, a
//! tenant's worker or a tenant's files can do to the root manager and to
//! other tenants (see the README's "Security model").

mod common;
use common::*;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

fn group(name: &str, user: &str, extra: &str) -> String {
    format!(
        "LanguageGroup {name} language=python user={user} \"command=/usr/bin/python3 @DIR@/echo_worker.py\" {extra}"
    )
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A field of /proc/PID/status, in kB (VmHWM, VmRSS).
fn status_kb(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The inode of the socket at `fd` of `pid`.
fn socket_inode(pid: i32, fd: i32) -> Option<u64> {
    let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The inode of the other end of a Unix socket (from the kernel's sock_diag, via ss).
fn peer_inode(inode: u64) -> Option<u64> {
    let out = sh("ss -xan");
    out.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        // Netid State Recv-Q Send-Q Local Port Peer Port
        (cols.len() >= 8 && cols[5] == inode.to_string()).then(|| cols[7].parse().ok()).flatten()
    })
}

/// (pid, fd) of every descriptor on the system open on socket `inode`.
fn holders(inode: u64) -> Vec<(i32, i32)> {
    let needle = format!("socket:[{inode}]");
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for f in fds.flatten() {
            if std::fs::read_link(f.path()).is_ok_and(|t| t.to_str() == Some(needle.as_str())) {
                found.push((pid, f.file_name().to_str().and_then(|s| s.parse().ok()).unwrap_or(-1)));
            }
        }
    }
    found
}

/// Item 1: no Apache child holds the channel to the root manager, and a
/// process that gets hold of a copy anyway cannot make the manager do anything.
#[test]
fn no_apache_child_can_command_the_root_manager() {
    ensure_user("procd-test-a");
    for mpm in [Mpm::Event, Mpm::Prefork] {
        let mut a = Apache::new("control", mpm, &group("ctl", "procd-test-a", ""));
        a.start();
        let before = a.wait_for_group("ctl", Duration::from_secs(10));
        let master = a.master.unwrap();
        let manager = a.manager();
        let ours = socket_inode(manager, 3).unwrap_or_else(|| a.fail("the manager's fd 3 is not its control socket"));
        let parent_end = peer_inode(ours).unwrap_or_else(|| a.fail("no peer for the control socket"));
        // Every Apache child is up by now (StartServers); only the master
        // holds the parent's end.
        let held: BTreeSet<i32> = holders(parent_end).into_iter().map(|(p, _)| p).collect();
        if held != BTreeSet::from([master]) {
            a.fail(&format!(
                "the parent's end of the control channel is held by {held:?}, not only the master {master}"
            ));
        }
        let children_now = children(master);
        if children_now.len() < 2 {
            a.fail(&format!("expected Apache children beside the manager: {children_now:?}"));
        }

        // A process holding a copy (here: this test, which takes one from
        // the master with pidfd_getfd, as code in a child could have before)
        // sends a plan that would run a command; the manager refuses it.
        let (_, master_fd) = holders(parent_end).into_iter().find(|(p, _)| *p == master).unwrap();
        // SAFETY: plain syscalls on our own new descriptors.
        let stolen = unsafe {
            let pidfd = libc::syscall(libc::SYS_pidfd_open, master, 0) as i32;
            assert!(pidfd >= 0, "pidfd_open");
            let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd, master_fd, 0) as i32;
            libc::close(pidfd);
            assert!(fd >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
            fd
        };
        let pwned = a.dir.join("pwned");
        let uid = sh("id -u procd-test-a").trim().to_string();
        let plan = format!(
            "runtime_dir = \"{run}\"\nmain_error_log = \"{d}/error.log\"\nsocket_gid = 33\n\n[[groups]]\nname = \"evil\"\nlanguage = \"python\"\nprotocol = \"procd\"\nargv = [\"/usr/bin/touch\", \"{p}\"]\nuser = \"x\"\nuid = {uid}\ngid = {uid}\ngroups = [{uid}]\nhome = \"/\"\nenv = []\nprocesses = 1\nthreads = 1\nready_message = true\nstartup_timeout_ms = 1000\ngraceful_timeout_ms = 1000\nerror_log = \"{d}/error.log\"\n",
            run = a.dir.join("run/procd").display(),
            d = a.dir.display(),
            p = pwned.display()
        );
        let mut frame = (plan.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(plan.as_bytes());
        // SAFETY: writing our own buffer to our own descriptor.
        unsafe {
            assert_eq!(libc::write(stolen, frame.as_ptr().cast(), frame.len()), frame.len() as isize);
        }
        if !wait_until(Duration::from_secs(5), || a.log_count("PD0211") > 0) {
            a.fail("no PD0211 line for a plan sent by another process");
        }
        std::thread::sleep(Duration::from_millis(1500));
        if pwned.exists() || a.error_log().contains("group evil") {
            a.fail("the manager applied a plan from a process other than the httpd parent");
        }
        let after = a.wait_for_group("ctl", Duration::from_secs(5));
        if field(&after, "gen") != field(&before, "gen") {
            a.fail(&format!("group ctl was restarted by the foreign bytes: {before} / {after}"));
        }
        // The holder shuts the channel down: the groups keep running, and
        // the next graceful restart brings a new manager.
        // SAFETY: shutdown and close of our own descriptor.
        unsafe {
            libc::shutdown(stolen, libc::SHUT_WR);
            libc::close(stolen);
        }
        if !wait_until(Duration::from_secs(5), || {
            a.error_log().contains("the control channel was closed while httpd runs")
        }) {
            a.fail("no log line for the channel closed by another process");
        }
        std::thread::sleep(Duration::from_millis(500));
        let still = a.wait_for_group("ctl", Duration::from_secs(5));
        if field(&still, "pid") != field(&before, "pid") || a.manager() != manager {
            a.fail(&format!("the groups stopped when another process closed the channel: {before} / {still}"));
        }
        a.graceful();
        if !wait_until(Duration::from_secs(15), || {
            manager_of(master).is_some_and(|m| m != manager) && ask(&a.socket("ctl"), "who").is_ok()
        }) {
            a.fail("no new manager serving the group after the next graceful restart");
        }
        a.stop();
    }
}

/// Item 9: a plan of 1,000 groups (1 KB of env= each) reaches the manager
/// whole, at start and at graceful restarts.
#[test]
fn a_thousand_groups_configure_the_manager() {
    ensure_user("procd-test-a");
    let big = "x".repeat(1000);
    let mut conf = group("live", "procd-test-a", "");
    for i in 0..1000 {
        conf.push_str(&format!("\nLanguageGroup many{i} language=cgi \"env=BIG={big}\""));
    }
    let mut a = Apache::new("thousand", Mpm::Event, &conf);
    a.start();
    let first = a.wait_for_group("live", Duration::from_secs(20));
    if !wait_until(Duration::from_secs(10), || a.log_count("new configuration: 1001 group(s)") == 1) {
        a.fail("the manager did not get the 1001-group configuration");
    }
    let mut last = field(&first, "gen").to_string();
    for round in 2..=3 {
        a.graceful();
        if !wait_until(Duration::from_secs(20), || a.log_count("new configuration: 1001 group(s)") == round) {
            a.fail(&format!("graceful {round}: the manager did not get the configuration"));
        }
        let moved = wait_until(Duration::from_secs(20), || {
            ask(&a.socket("live"), "who").is_ok_and(|w| field(&w, "gen") != last)
        });
        if !moved {
            a.fail(&format!("graceful {round}: group live never moved on from generation {last}"));
        }
        last = field(&a.wait_for_group("live", Duration::from_secs(5)), "gen").to_string();
    }
    if a.error_log().contains("cannot send the configuration") {
        a.fail("a configuration was not sent");
    }
    a.stop();
}

/// Item 2: a tenant who owns its log directory cannot make root write
/// through a link it plants, nor stall the manager with a FIFO.
#[test]
fn a_tenants_log_directory_cannot_redirect_roots_writes() {
    ensure_user("procd-test-a");
    ensure_user("procd-test-b");
    let mut a = Apache::new("logs", Mpm::Event, "");
    let logs = a.dir.join("tenant-logs");
    std::fs::create_dir_all(&logs).unwrap();
    sh(&format!("chown procd-test-a: {}", logs.display()));
    let victim = a.dir.join("root-only");
    std::fs::write(&victim, "secret\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let app_log = logs.join("app.log");
    a.set_extra(&format!(
        "{}\n{}",
        group("tenant", "procd-test-a", &format!("error-log={} graceful-timeout=2", app_log.display())),
        group("other", "procd-test-b", "")
    ));
    a.start();
    a.wait_for_group("tenant", Duration::from_secs(10));
    if !wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&app_log).is_ok_and(|t| t.contains("a line on stderr"))
    }) {
        a.fail("the group's own log did not get its worker's output");
    }
    // The tenant replaces its log by a link to a root-only file.
    let (ok, out) = run_as(
        "procd-test-a",
        &["sh", "-c", &format!("rm -f {0} && ln -s {1} {0}", app_log.display(), victim.display())],
    );
    assert!(ok, "{out}");
    a.graceful();
    a.wait_for_group("tenant", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    if std::fs::read_to_string(&victim).unwrap() != "secret\n" {
        a.fail("root appended to the file the tenant's link points to");
    }
    if !wait_until(Duration::from_secs(5), || a.error_log().contains("cannot open the log")) {
        a.fail("the refused log is not reported in the main log");
    }
    // A FIFO instead: the manager must not block in open().
    let (ok, out) = run_as("procd-test-a", &["sh", "-c", &format!("rm -f {0} && mkfifo {0}", app_log.display())]);
    assert!(ok, "{out}");
    let before = a.wait_for_group("other", Duration::from_secs(5));
    a.graceful();
    a.wait_for_group("tenant", Duration::from_secs(10));
    // Supervision goes on: the other group moves to its new generation.
    if !wait_until(Duration::from_secs(10), || {
        field(&a.wait_for_group("other", Duration::from_secs(5)), "gen") != field(&before, "gen")
    }) {
        a.fail("the manager stalled after the tenant's log became a FIFO");
    }
    a.stop();

    // configtest: a log in a directory another user controls, which the
    // group's user cannot write, is refused with what to do.
    let mut b = Apache::new("logs-check", Mpm::Event, "");
    let theirs = b.dir.join("b-logs");
    std::fs::create_dir_all(&theirs).unwrap();
    sh(&format!("chown procd-test-b: {} && chmod 755 {}", theirs.display(), theirs.display()));
    b.set_extra(&group("t", "procd-test-a", &format!("error-log={}/app.log", theirs.display())));
    let (ok, text) = b.configtest();
    if ok || !text.contains("error-log=") || !text.contains("opened as the group's user") {
        b.fail(&format!("configtest should refuse the log: {text}"));
    }
}

/// Item 5: a group named like another group's generation socket never
/// collides with it.
#[test]
fn group_names_never_collide_with_generation_sockets() {
    ensure_user("procd-test-a");
    let names = ["blog", "blog.1", "blog.2", "blog.3", "blog.4", "blog.5", "blog.6"];
    let conf: Vec<String> = names.iter().map(|n| group(n, "procd-test-a", "graceful-timeout=2")).collect();
    let mut a = Apache::new("names", Mpm::Event, &conf.join("\n"));
    a.start();
    for n in names {
        a.wait_for_group(n, Duration::from_secs(10));
    }
    // Meanwhile, every group's socket must stay there: a graceful restart
    // never deletes a live socket of another group.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sockets: Vec<_> = names.iter().map(|n| a.socket(n)).collect();
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut missing = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for s in &sockets {
                    if let Err(e) = std::os::unix::net::UnixStream::connect(s) {
                        missing.push(format!("{}: {e}", s.display()));
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            missing
        })
    };
    for round in 0..3 {
        if round > 0 {
            a.graceful();
        }
        std::thread::sleep(Duration::from_millis(300));
        for n in names {
            let answer = a.wait_for_group(n, Duration::from_secs(10));
            if field(&answer, "group") != n {
                a.fail(&format!("round {round}: {n}.sock answered for another group: {answer}"));
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let missing = watcher.join().unwrap();
    if !missing.is_empty() {
        a.fail(&format!(
            "{} failed connects to live groups during restarts, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(3)]
        ));
    }
    if a.error_log().contains("PD0205") {
        a.fail("a generation failed to start");
    }
    a.stop();
}

/// Item 8: a worker writing 1 GiB to stderr leaves the root manager small
/// and on time for other groups; the excess is summed up in one line.
#[test]
fn a_worker_flooding_its_log_cannot_bloat_or_stall_the_manager() {
    ensure_user("procd-test-a");
    ensure_user("procd-test-b");
    let conf = format!("{}\n{}", group("noisy", "procd-test-a", ""), group("calm", "procd-test-b", ""));
    let mut a = Apache::new("flood", Mpm::Event, &conf);
    a.start();
    a.wait_for_group("noisy", Duration::from_secs(10));
    let calm = a.wait_for_group("calm", Duration::from_secs(10));
    let manager = a.manager();
    let socket = a.socket("noisy");
    let flood = std::thread::spawn(move || {
        let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(120))).ok();
        s.write_all(b"spew 1024\n").expect("send");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    });
    // While the flood runs, a crash in the other group is handled at once.
    std::thread::sleep(Duration::from_millis(500));
    let calm_pid: i32 = field(&calm, "pid").parse().unwrap();
    let killed = Instant::now();
    let _ = ask(&a.socket("calm"), "crash");
    let replaced = wait_until(Duration::from_secs(5), || {
        ask(&a.socket("calm"), "who").is_ok_and(|w| field(&w, "pid") != calm_pid.to_string())
    });
    let took = killed.elapsed();
    let answer = flood.join().unwrap();
    if !answer.contains("group=noisy") {
        a.fail(&format!("the flooding request did not complete: {answer:?}"));
    }
    if !replaced {
        a.fail("the other group's crashed worker was not replaced within 5 s during the flood");
    }
    let hwm = status_kb(manager, "VmHWM");
    eprintln!("manager peak RSS {hwm} kB; other group's worker replaced after {took:?}");
    if hwm > 10 * 1024 {
        a.fail(&format!("the manager's peak RSS is {hwm} kB after 1 GiB of worker output"));
    }
    if !wait_until(Duration::from_secs(8), || a.log_count("PD0212") > 0) {
        a.fail("no PD0212 summary of the dropped output");
    }
    let log_size = std::fs::metadata(a.dir.join("error.log")).map(|m| m.len()).unwrap_or(0);
    if log_size > 64 << 20 {
        a.fail(&format!("the error log grew to {log_size} bytes"));
    }
    a.stop();
}

/// Item 10: workers get their descriptors right under a low RLIMIT_NOFILE.
#[test]
fn workers_start_under_a_low_descriptor_limit() {
    ensure_user("procd-test-a");
    let mut a = Apache::new("nofile", Mpm::Event, &group("few", "procd-test-a", "processes=2"));
    a.wrapper = ["prlimit", "--nofile=64", "--"].iter().map(|s| s.to_string()).collect();
    a.start();
    let answer = a.wait_for_group("few", Duration::from_secs(10));
    if field(&answer, "group") != "few" {
        a.fail(&format!("unexpected answer {answer}"));
    }
    a.stop();
}

/// Item 11: 200 graceful restarts with a crash-looping group leave the
/// manager's descriptors and memory flat.
#[test]
fn generations_in_back_off_are_not_leaked() {
    ensure_user("procd-test-a");
    let conf = format!(
        "{}\n{}\n{}",
        // Ready, then dead at once: the group is in back-off, with no
        // worker, at most restarts.
        group("loop", "procd-test-a", "env=WORKER_MODE=crashloop env=CRASH_AFTER=0 graceful-timeout=1"),
        group("fails", "procd-test-a", "env=WORKER_MODE=fail"),
        group("fine", "procd-test-a", "graceful-timeout=1")
    );
    let mut a = Apache::new("leaks", Mpm::Event, &conf);
    a.start();
    a.wait_for_group("fine", Duration::from_secs(10));
    let manager = a.manager();
    let rounds = 200;
    let mut samples = Vec::new();
    let started = Instant::now();
    for i in 0..rounds {
        a.graceful();
        if i == 19 || i == rounds - 1 {
            // Let this generation settle (crash, back-off) before measuring.
            std::thread::sleep(Duration::from_millis(1500));
            samples.push((fd_count(manager), status_kb(manager, "VmRSS")));
        }
    }
    eprintln!(
        "{rounds} graceful restarts in {:?}; manager (fds, RSS kB) after 20 and {rounds}: {samples:?}",
        started.elapsed()
    );
    let ((fd20, rss20), (fd_end, rss_end)) = (samples[0], samples[1]);
    if fd_end > fd20 + 3 {
        a.fail(&format!("the manager's descriptors grew from {fd20} to {fd_end} over {rounds} restarts"));
    }
    if rss_end > rss20 + 1024 {
        a.fail(&format!("the manager's RSS grew from {rss20} kB to {rss_end} kB over {rounds} restarts"));
    }
    if a.manager() != manager {
        a.fail("the manager was replaced");
    }
    a.wait_for_group("fine", Duration::from_secs(10));
    a.stop();
}

/// Item 12: no worker ever runs with gid 0, and what a worker leaves
/// running outside its process group is killed.
#[test]
fn no_gid_zero_and_no_escaped_grandchildren() {
    ensure_user("procd-test-a");
    // A user whose primary group is root: refused at configtest.
    if !Command::new("id").arg("procd-test-rootgid").status().is_ok_and(|s| s.success()) {
        sh("useradd --system --no-create-home --shell /usr/sbin/nologin -g 0 procd-test-rootgid || true");
    }
    let bad = Apache::new("gid0", Mpm::Event, &group("g0", "procd-test-rootgid", ""));
    let (ok, text) = bad.configtest();
    if ok || !text.contains("gid 0") {
        bad.fail(&format!("configtest should refuse a user whose primary group is root: {text}"));
    }
    // A user in root's group as a supplementary group: the worker runs without it.
    ensure_user("procd-test-wheel");
    sh("usermod -a -G root procd-test-wheel");
    let conf = format!(
        "{}\n{}",
        group("wheel", "procd-test-wheel", ""),
        group("spawner", "procd-test-a", "graceful-timeout=1")
    );
    let mut a = Apache::new("escape", Mpm::Event, &conf);
    a.start();
    let w = a.wait_for_group("wheel", Duration::from_secs(10));
    if field(&w, "groups").split(',').any(|g| g == "0") || field(&w, "gid") == "0" {
        a.fail(&format!("a worker runs with group 0: {w}"));
    }
    a.wait_for_group("spawner", Duration::from_secs(10));
    let grandchild: i32 = ask(&a.socket("spawner"), "daemon").unwrap().trim().parse().unwrap();
    if !pid_alive(grandchild) {
        a.fail("the daemonised grandchild did not start");
    }
    // The manager notices the orphan at its next look (a tick), and says
    // so; a graceful sent before that could end the generation, and the
    // orphan with it, before it was ever seen (CI saw that race).
    if !wait_until(Duration::from_secs(5), || a.log_count("PD0213") > 0 || a.log_count("PD0214") > 0) {
        let _ = Command::new("kill").args(["-KILL", &grandchild.to_string()]).status();
        a.fail("no PD0213 line for the orphan the worker left running");
    }
    a.graceful();
    if !wait_until(Duration::from_secs(8), || !pid_alive(grandchild)) {
        let _ = Command::new("kill").args(["-KILL", &grandchild.to_string()]).status();
        a.fail(&format!("pid {grandchild}, daemonised by a worker, outlived its generation"));
    }
    // A chain of daemons, each in a new session, each forking the next and
    // exiting: none of it outlives the generation that started it.
    let marks = a.dir.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o777)).unwrap();
    let chain = marks.join("chain");
    a.wait_for_group("spawner", Duration::from_secs(10));
    let started = ask(&a.socket("spawner"), &format!("chain {}", chain.display())).unwrap();
    assert_eq!(started.trim(), "started");
    std::thread::sleep(Duration::from_millis(500));
    a.graceful();
    let size = || std::fs::metadata(&chain).map(|m| m.len()).unwrap_or(0);
    let settled = wait_until(Duration::from_secs(8), || {
        let before = size();
        std::thread::sleep(Duration::from_millis(300));
        before > 0 && size() == before
    });
    let pids: Vec<i32> =
        std::fs::read_to_string(&chain).unwrap_or_default().lines().filter_map(|l| l.parse().ok()).collect();
    let alive: Vec<i32> = pids.iter().copied().filter(|p| pid_alive(*p)).collect();
    if !alive.is_empty() || !settled {
        // Cleanup when the promise is broken: a surviving chain forks on
        // under new pids, so killing the pids seen is not enough. Without
        // its file each next link dies at its first write.
        let _ = std::fs::remove_dir_all(&marks);
        std::thread::sleep(Duration::from_millis(300));
        let now: Vec<i32> = pids.iter().copied().filter(|p| pid_alive(*p)).collect();
        for p in &now {
            let _ = Command::new("kill").args(["-KILL", &p.to_string()]).status();
        }
    }
    if !settled || !alive.is_empty() {
        a.fail(&format!("a chain of daemons outlived its generation ({} links, alive: {alive:?})", pids.len()));
    }
    a.stop();
}

/// Item 13: a panic in the manager never returns into httpd's start-up
/// code: it is logged, the manager exits, and httpd starts a new one.
#[test]
fn a_panicking_manager_exits_and_is_replaced() {
    ensure_user("procd-test-a");
    let mut a = Apache::new("panic", Mpm::Event, &group("p", "procd-test-a", ""));
    let trigger = a.dir.join("panic-now");
    std::fs::write(&trigger, "").unwrap();
    a.env.push(("PROCD_TEST_PANIC_ONCE".into(), trigger.display().to_string()));
    a.start();
    if !wait_until(Duration::from_secs(10), || a.log_count("PD0210") > 0) {
        a.fail("no PD0210 line for the manager's panic");
    }
    a.wait_for_group("p", Duration::from_secs(15));
    if !wait_until(Duration::from_secs(5), || a.error_log().contains("exited with status 70")) {
        a.fail("the httpd parent did not see the manager exit with status 70");
    }
    std::thread::sleep(Duration::from_millis(500));
    if a.generations() != 1 {
        a.fail("httpd's start-up ran more than once (the panic returned into httpd)");
    }
    let master = a.master.unwrap();
    let managers: Vec<i32> = children(master).into_iter().filter(|p| comm(*p) == "procd-manager").collect();
    if managers.len() != 1 {
        a.fail(&format!("expected one manager, found {managers:?}"));
    }
    a.stop();
}

/// A per-file language: its group's options, the extension `LanguageHandler`
/// maps, a script that answers "ok", and one that creates `marker` when it
/// is loaded (or run).
struct PerFile {
    lang: &'static str,
    ext: &'static str,
    ok: &'static str,
    evil: fn(&str) -> String,
    /// Executable scripts (CGI).
    exec: bool,
}

const PYTHON: PerFile = PerFile {
    lang: "python",
    ext: ".py",
    ok: "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'ok']\n",
    evil: |m| {
        format!(
            "open({m:?}, 'w').write('ran')\ndef application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'evil']\n"
        )
    },
    exec: false,
};

const PERL: PerFile = PerFile {
    lang: "perl",
    ext: ".psgi",
    ok: "my $app = sub { [200, ['Content-Type' => 'text/plain'], ['ok']] };\n",
    evil: |m| format!("open(my $f, '>', '{m}'); print $f 'ran'; close $f;\nmy $app = sub {{ [200, [], ['evil']] }};\n"),
    exec: false,
};

const RUBY: PerFile = PerFile {
    lang: "ruby",
    ext: ".ru",
    ok: "run lambda { |env| [200, { 'Content-Type' => 'text/plain' }, ['ok']] }\n",
    evil: |m| format!("File.write('{m}', 'ran')\nrun lambda {{ |env| [200, {{}}, ['evil']] }}\n"),
    exec: false,
};

const CGI: PerFile = PerFile {
    lang: "cgi",
    ext: ".cgi",
    ok: "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok'\n",
    evil: |m| format!("#!/bin/sh\necho ran > '{m}'\nprintf 'Content-Type: text/plain\\r\\n\\r\\nevil'\n"),
    exec: true,
};

/// A REQUEST frame (the procd protocol, also the CGI launcher's) naming
/// `script` as SCRIPT_FILENAME, sent straight to `socket`; whatever comes
/// back is read and dropped.
fn request_straight_to(socket: &std::path::Path, script: &std::path::Path) {
    let mut env = Vec::new();
    for (k, v) in [
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "/x"),
        ("SCRIPT_NAME", "/x"),
        ("PATH_INFO", ""),
        ("QUERY_STRING", ""),
        ("SERVER_NAME", "127.0.0.1"),
        ("SERVER_PORT", "80"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("HTTPS", "off"),
        ("SCRIPT_FILENAME", script.to_str().unwrap()),
    ] {
        env.extend_from_slice(k.as_bytes());
        env.push(0);
        env.extend_from_slice(v.as_bytes());
        env.push(0);
    }
    let mut frame = vec![0x01];
    frame.extend_from_slice(&(env.len() as u32 + 1).to_be_bytes());
    frame.push(1);
    frame.extend_from_slice(&env);
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).ok();
    s.write_all(&frame).unwrap();
    // Not shut down: a connection closed before the worker reads it is
    // dropped unrun, before any check.
    let _ = s.read_to_end(&mut Vec::new());
}

/// Item 4: a per-file group loads (or runs) only files under the
/// directories where `LanguageHandler` names it, with an extension it maps,
/// whoever connects to its socket; the socket is 0660 root:Apache's group
/// in a 0711 root runtime dir; a group without user= gets a configtest
/// warning.
fn per_file_group_runs_only_what_apache_maps(l: &PerFile) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    ensure_user("procd-test-a");
    let conf = format!(
        "LanguageGroup files language={lang} user=procd-test-a\n\
         LanguageGroup shared language={lang}\n\
         <Directory @DIR@/htdocs/app>\n    Options +ExecCGI\n    LanguageHandler files {ext}\n</Directory>\n",
        lang = l.lang,
        ext = l.ext
    );
    let mut a = Apache::new(&format!("perfile-{}", l.lang), Mpm::Event, &conf);
    let app = a.dir.join("htdocs/app");
    let outside = a.dir.join("outside");
    let marks = a.dir.join("marks");
    for d in [&app, &outside, &marks] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o777)).unwrap();
    let marker = marks.join("evil-ran");
    let evil = outside.join(format!("evil{}", l.ext));
    std::fs::write(app.join(format!("ok{}", l.ext)), l.ok).unwrap();
    std::fs::write(&evil, (l.evil)(marker.to_str().unwrap())).unwrap();
    std::os::unix::fs::symlink(&evil, app.join(format!("link{}", l.ext))).unwrap();
    // An upload with another extension, inside the directory.
    let upload = app.join("upload.png");
    std::fs::write(&upload, (l.evil)(marker.to_str().unwrap())).unwrap();
    sh(&format!("chmod -R a+rX {}", a.dir.display()));
    if l.exec {
        sh(&format!("chmod 755 {}/*{ext} {} {}", app.display(), evil.display(), upload.display(), ext = l.ext));
    }

    let (ok, text) = a.configtest();
    if !ok
        || !text.contains("PD0103")
        || !text.contains("LanguageGroup shared")
        || text.contains("LanguageGroup files (")
    {
        a.fail(&format!("configtest should pass and warn about the group without user= only: {text}"));
    }
    a.start();
    let ok_path = format!("/app/ok{}", l.ext);
    let mut r = a.get(&ok_path);
    wait_until(Duration::from_secs(15), || {
        r = a.get(&ok_path);
        r.status != 503
    });
    if r.status != 200 || r.text() != "ok" {
        a.fail(&format!("{}: a script under its <Directory>: {} {}", l.lang, r.status, r.text()));
    }

    // Who can connect: the socket is root:Apache's group 0660, in a runtime
    // dir root's 0711 (nobody lists it).
    let www_gid = sh("getent group www-data | cut -d: -f3").trim().parse::<u32>().unwrap();
    let sock = std::fs::symlink_metadata(a.socket("files")).unwrap();
    let run = std::fs::symlink_metadata(a.dir.join("run/procd")).unwrap();
    let (sock_mode, run_mode) = (sock.mode() & 0o7777, run.mode() & 0o7777);
    if !sock.file_type().is_socket() || sock_mode != 0o660 || sock.uid() != 0 || sock.gid() != www_gid {
        a.fail(&format!("{}: files.sock is mode {sock_mode:o} {}:{}", l.lang, sock.uid(), sock.gid()));
    }
    if run_mode != 0o711 || run.uid() != 0 {
        a.fail(&format!("{}: the runtime dir is mode {run_mode:o} owned by {}", l.lang, run.uid()));
    }

    // Straight to the socket, as any process that may connect could: a file
    // outside the directory, and one inside without a mapped extension.
    for target in [&evil, &upload] {
        request_straight_to(&a.socket("files"), target);
    }
    std::thread::sleep(Duration::from_millis(500));
    if marker.exists() {
        a.fail(&format!("{}: the group loaded a file outside its LanguageHandler directories or extensions", l.lang));
    }
    let refused = |why: &str| a.error_log().lines().any(|line| line.contains("refusing to") && line.contains(why));
    if !wait_until(Duration::from_secs(5), || {
        refused("not under a directory") && refused("does not end with an extension")
    }) {
        a.fail(&format!("{}: no log line for each refused script", l.lang));
    }
    // Through Apache, a link out of the directory is refused by the worker.
    let r = a.get(&format!("/app/link{}", l.ext));
    if r.status == 200 || r.text().contains("evil") {
        a.fail(&format!("{}: a link to a file outside: got {} {}", l.lang, r.status, r.text()));
    }
    // The group still serves what Apache maps.
    if a.get(&ok_path).text() != "ok" {
        a.fail(&format!("{}: the group no longer serves its own script", l.lang));
    }
    a.stop();
}

#[test]
fn per_file_groups_load_only_what_apache_maps() {
    per_file_group_runs_only_what_apache_maps(&PYTHON);
}

#[test]
fn per_file_perl_groups_load_only_what_apache_maps() {
    per_file_group_runs_only_what_apache_maps(&PERL);
}

#[test]
fn per_file_ruby_groups_load_only_what_apache_maps() {
    per_file_group_runs_only_what_apache_maps(&RUBY);
}

#[test]
fn per_file_cgi_groups_run_only_what_apache_maps() {
    per_file_group_runs_only_what_apache_maps(&CGI);
}

/// Item 2, the runtime dir: one under a directory other users can write is
/// refused (nothing is created or chowned there) and the log says why.
#[test]
fn a_runtime_dir_others_can_change_is_refused() {
    ensure_user("procd-test-a");
    let mut a = Apache::new("rundir", Mpm::Event, "");
    let shared = a.dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    a.set_extra(&format!("ProcdRuntimeDir {}/procd\n{}", shared.display(), group("r", "procd-test-a", "")));
    // configtest names the directive, the directory and what to do.
    let (ok, out) = a.configtest();
    if ok
        || !out.contains("ProcdRuntimeDir")
        || !out.contains(&shared.display().to_string())
        || !out.contains("root's alone")
    {
        a.fail(&format!("configtest accepted a runtime dir under a directory others can write:\n{out}"));
    }
    // The manager checks again when it (re)creates the directory: a parent
    // made writable after start is refused when the manager comes back.
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    a.start();
    if !wait_until(Duration::from_secs(10), || shared.join("procd/r.sock").exists()) {
        a.fail("the group did not start under a runtime dir only root can change");
    }
    std::fs::remove_dir_all(shared.join("procd")).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let manager = a.manager();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(manager), nix::sys::signal::Signal::SIGKILL).unwrap();
    if !wait_until(Duration::from_secs(10), || a.error_log().contains("writable by users other than root")) {
        a.fail("no log line for a runtime dir under a directory others can write");
    }
    if shared.join("procd").exists() {
        a.fail("the runtime dir was created under a directory others can write");
    }
    a.stop();
}

/// `apache2 -k stop` reads the configuration too: what a tenant does to its
/// own files after start (here: its home= made unreadable, which configtest
/// refuses) must not keep the server from stopping.
#[test]
fn a_tenant_cannot_keep_apache_from_stopping() {
    ensure_user("procd-test-a");
    let mut a = Apache::new("nostop", Mpm::Event, "");
    let home = a.dir.join("tenant-home");
    std::fs::create_dir_all(&home).unwrap();
    sh(&format!("chown procd-test-a {}", home.display()));
    a.set_extra(&group("t", "procd-test-a", &format!("home={}", home.display())));
    a.start();
    a.wait_for_group("t", Duration::from_secs(10));
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o000)).unwrap();
    let (ok, out) = a.configtest();
    if ok || !out.contains("home") {
        a.fail(&format!("configtest accepted a home= its user cannot enter:\n{out}"));
    }
    // The harness's stop is `apache2 -k stop` and asserts everything is gone.
    a.stop();
}

/// Item 12: a worker that tries to leave its session and process group,
/// and whose child (setsid) and grandchild (setpgid) do leave them while
/// staying its descendants, is gone with them after graceful-timeout, and
/// at `apachectl stop`.
fn escaped_descendants_are_gone(name: &str, wrapper: &[&str], expect_cgroup: bool) {
    ensure_user("procd-test-a");
    let mut a = Apache::new(name, Mpm::Event, &group("esc", "procd-test-a", "graceful-timeout=1 env=ON_TERM=ignore"));
    a.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
    a.start();
    let escape = |a: &Apache| -> (i32, Vec<i32>) {
        let w = a.wait_for_group("esc", Duration::from_secs(10));
        let answer = ask(&a.socket("esc"), "escape").unwrap_or_else(|e| a.fail(&format!("escape: {e}")));
        let parts: Vec<&str> = answer.split_whitespace().collect();
        if parts.len() != 4 || parts[0] != "escaped" || parts[1].contains("setsid:ok") {
            a.fail(&format!("escape answered {answer:?} (a worker must not be able to leave its session)"));
        }
        let pids: Vec<i32> = parts[2..].iter().map(|p| p.parse().unwrap()).collect();
        for p in &pids {
            // Out of the worker's session and process group.
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            if f.get(2) == Some(&field(&w, "pid")) || !pid_alive(*p) {
                a.fail(&format!("pid {p} did not leave the worker's process group: {stat}"));
            }
        }
        (field(&w, "pid").parse().unwrap(), pids)
    };
    // The manager logs PD0214 (no cgroup) as it sets up, which may be
    // after `start` returns: look once the group has served.
    let (worker, pids) = escape(&a);
    let log_has_cgroup = a.log_count("PD0214") == 0;
    if log_has_cgroup != expect_cgroup {
        a.fail(&format!("cgroup containment expected: {expect_cgroup}, PD0214 lines: {}", a.log_count("PD0214")));
    }
    let t0 = Instant::now();
    a.graceful();
    // graceful-timeout (1 s) + SIGTERM, SIGKILL 2 s later: all gone within 6 s.
    let gone = wait_until(Duration::from_secs(8), || !pid_alive(worker) && pids.iter().all(|p| !pid_alive(*p)));
    let took = t0.elapsed();
    let alive: Vec<i32> = pids.iter().copied().filter(|p| pid_alive(*p)).collect();
    for p in &alive {
        let _ = Command::new("kill").args(["-KILL", &p.to_string()]).status();
    }
    if !gone {
        a.fail(&format!(
            "{name}: after a graceful restart, the worker ({}) or its escaped descendants {alive:?} outlived graceful-timeout",
            if pid_alive(worker) { "alive" } else { "gone" }
        ));
    }
    eprintln!("{name}: worker {worker} and escaped descendants {pids:?} gone {took:?} after the graceful");
    // And at stop.
    let (worker, pids) = escape(&a);
    let t0 = Instant::now();
    let _ = Command::new(APACHE).arg("-f").arg(&a.conf).args(["-k", "stop"]).status();
    let gone = wait_until(Duration::from_secs(8), || !pid_alive(worker) && pids.iter().all(|p| !pid_alive(*p)));
    let alive: Vec<i32> = pids.iter().copied().filter(|p| pid_alive(*p)).collect();
    for p in &alive {
        let _ = Command::new("kill").args(["-KILL", &p.to_string()]).status();
    }
    if !gone {
        a.fail(&format!("{name}: escaped descendants {alive:?} outlived apachectl stop"));
    }
    eprintln!("{name}: worker {worker} and escaped descendants {pids:?} gone {:?} after stop", t0.elapsed());
    a.stop();
}

#[test]
fn workers_that_leave_their_process_group_are_still_killed() {
    escaped_descendants_are_gone("escape-pgrp", &[], true);
}

/// The same without cgroup v2 (it is unmounted in Apache's mount
/// namespace): the manager's subreaper and process-group signals.
#[test]
fn workers_that_leave_their_process_group_are_still_killed_without_cgroups() {
    escaped_descendants_are_gone(
        "escape-nocg",
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "umount -l /sys/fs/cgroup/unified && exec \"$0\" \"$@\"",
        ],
        false,
    );
}

/// The paths of the Unix sockets `pid` holds (from /proc/net/unix; a
/// connected or unnamed socket has no path and is not listed).
fn socket_paths(pid: i32) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let held: BTreeSet<u64> = (0..4096).filter_map(|fd| socket_inode(pid, fd)).collect();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let inode: u64 = cols.get(6)?.parse().ok()?;
            // Path, then the socket state (01 listening, 03 connected).
            (held.contains(&inode) && cols.len() > 7).then(|| format!("{} (state {}, inode {inode})", cols[7], cols[5]))
        })
        .collect()
}

/// Item 11: a crash-looping group (and one that never starts) removed from
/// the configuration at a graceful restart, while in back-off, leaves
/// nothing behind: no listener or other descriptor in the manager, no
/// socket, `.down` file or cgroup; ten times over, the manager's
/// descriptors stay exactly as many as before.
#[test]
fn a_removed_crash_looping_group_leaves_nothing_behind() {
    ensure_user("procd-test-a");
    let fine = group("fine", "procd-test-a", "graceful-timeout=1");
    let with = format!(
        "{fine}\n{}\n{}",
        group("loop", "procd-test-a", "env=WORKER_MODE=crashloop env=CRASH_AFTER=0 graceful-timeout=1"),
        group("fails", "procd-test-a", "env=WORKER_MODE=fail")
    );
    let mut a = Apache::new("removed", Mpm::Event, &fine);
    a.start();
    a.wait_for_group("fine", Duration::from_secs(10));
    let manager = a.manager();
    let master = a.master.unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let baseline = fd_list(manager);
    let cgroups = format!("/sys/fs/cgroup/unified/procd-{master}");
    let leftovers = |a: &Apache| -> Vec<String> {
        let mut left: Vec<String> = socket_paths(manager)
            .into_iter()
            .filter(|p| p.contains("/loop.") || p.contains("/fails."))
            .map(|p| format!("manager holds a listener on {p}"))
            .collect();
        let run = a.dir.join("run/procd");
        for name in ["loop.sock", "fails.sock", "loop.down", "fails.down"] {
            if run.join(name).exists() {
                left.push(format!("{name} exists"));
            }
        }
        for dir in [run.join("generations"), std::path::PathBuf::from(&cgroups)] {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("loop.") || n.starts_with("fails.") {
                    left.push(format!("{}/{n} exists", dir.display()));
                }
            }
        }
        left
    };
    let rounds = 10;
    let mut counts = Vec::new();
    for round in 0..rounds {
        a.set_extra(&with);
        a.graceful();
        // Crashed (loop) or failed (fails), and now waiting in back-off.
        std::thread::sleep(Duration::from_millis(1200));
        a.set_extra(&fine);
        let plans = a.log_count("new configuration: 1 group(s)");
        a.graceful();
        // The manager has the plan without them (Apache says it resumed
        // before the manager applies it).
        if !wait_until(Duration::from_secs(10), || a.log_count("new configuration: 1 group(s)") > plans) {
            a.fail(&format!("round {round}: the manager did not get the configuration without the groups"));
        }
        let settled =
            wait_until(Duration::from_secs(8), || fd_list(manager).len() == baseline.len() && leftovers(&a).is_empty());
        let now = fd_list(manager);
        counts.push(now.len());
        if !settled && leftovers(&a).is_empty() {
            a.fail(&format!(
                "round {round}: the manager has {} descriptors, {} before the group came and went:\nbefore {baseline:?}\nnow {now:?}",
                now.len(),
                baseline.len()
            ));
        }
        let left = leftovers(&a);
        if !left.is_empty() {
            a.fail(&format!("round {round}: the removed groups left {left:?}; the manager's descriptors: {now:?}"));
        }
    }
    eprintln!("manager descriptors: {} before, after each of {rounds} rounds: {counts:?}", baseline.len());
    if a.log_count("PD0203") < rounds {
        a.fail("the removed groups were not in back-off when removed (no PD0203 lines)");
    }
    a.wait_for_group("fine", Duration::from_secs(10));
    a.stop();
}

/// Item 2, `restart-file=`: a tenant who can write its directory replaces
/// the file with a link to a root file, then with a FIFO. The manager
/// neither follows the link (touching its target restarts nothing) nor
/// blocks on the FIFO (it goes on supervising), and a regular file works
/// again afterwards.
#[test]
fn a_restart_file_link_or_fifo_is_not_followed() {
    ensure_user("procd-test-a");
    ensure_user("procd-test-b");
    let mut a = Apache::new("restartfile", Mpm::Event, "");
    let tenant = a.dir.join("tenant");
    std::fs::create_dir_all(&tenant).unwrap();
    sh(&format!("chown procd-test-a: {0} && chmod 755 {0}", tenant.display()));
    let file = tenant.join("restart.txt");
    let (ok, out) = run_as("procd-test-a", &["touch", file.to_str().unwrap()]);
    assert!(ok, "{out}");
    let victim = a.dir.join("root-only");
    std::fs::write(&victim, "secret\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    a.set_extra(&format!(
        "{}\n{}",
        group("rf", "procd-test-a", &format!("restart-file={} graceful-timeout=1", file.display())),
        group("other", "procd-test-b", "")
    ));
    a.start();
    let generation = |a: &Apache| field(&a.wait_for_group("rf", Duration::from_secs(10)), "gen").to_string();
    let g1 = generation(&a);
    // The mechanism works: the tenant touches its file, rf restarts.
    std::thread::sleep(Duration::from_millis(1100)); // a new mtime second
    let (ok, out) = run_as("procd-test-a", &["touch", file.to_str().unwrap()]);
    assert!(ok, "{out}");
    if !wait_until(Duration::from_secs(10), || generation(&a) != g1) {
        a.fail("touching the restart file did not restart the group");
    }
    let g2 = generation(&a);
    let restarts = a.log_count("PD0209");

    // A link to a root file, whose mtime root then changes.
    let (ok, out) =
        run_as("procd-test-a", &["sh", "-c", &format!("rm -f {0} && ln -s {1} {0}", file.display(), victim.display())]);
    assert!(ok, "{out}");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        sh(&format!("touch {}", victim.display()));
    }
    std::thread::sleep(Duration::from_millis(1000));
    if generation(&a) != g2 || a.log_count("PD0209") != restarts {
        a.fail("the manager followed the tenant's link: touching its target restarted the group");
    }
    if std::fs::read_to_string(&victim).unwrap() != "secret\n" {
        a.fail("the link's target changed");
    }

    // A FIFO: the manager must not block on it.
    let (ok, out) = run_as("procd-test-a", &["sh", "-c", &format!("rm -f {0} && mkfifo {0}", file.display())]);
    assert!(ok, "{out}");
    std::thread::sleep(Duration::from_millis(1000));
    let other = a.wait_for_group("other", Duration::from_secs(5));
    let _ = ask(&a.socket("other"), "crash");
    if !wait_until(Duration::from_secs(5), || {
        ask(&a.socket("other"), "who").is_ok_and(|w| field(&w, "pid") != field(&other, "pid"))
    }) {
        a.fail("the manager stalled after the restart file became a FIFO: a crashed worker was not replaced");
    }
    if generation(&a) != g2 || a.log_count("PD0209") != restarts {
        a.fail("a FIFO as the restart file restarted the group");
    }

    // A regular file again: restarts work as before.
    let (ok, out) = run_as("procd-test-a", &["sh", "-c", &format!("rm -f {0} && touch {0}", file.display())]);
    assert!(ok, "{out}");
    if !wait_until(Duration::from_secs(10), || generation(&a) != g2) {
        a.fail("a regular restart file no longer restarts the group");
    }
    a.stop();
}

/// Item 10: when RLIMIT_NOFILE leaves no room at 5 and up, a worker's
/// descriptors cannot be moved out of the way: the child exits with the
/// cause in the log and never execs; with room again, the group starts.
#[test]
fn a_worker_whose_descriptors_cannot_be_placed_never_runs() {
    ensure_user("procd-test-a");
    let mut a = Apache::new("nofile-tight", Mpm::Event, &group("tight", "procd-test-a", "startup-timeout=5"));
    a.start();
    let first = a.wait_for_group("tight", Duration::from_secs(10));
    let manager = a.manager();
    std::thread::sleep(Duration::from_millis(1500));
    let open = (0..5).map(|_| fd_count(manager)).min().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{manager}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_string();
    let cols: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (cols[3].to_string(), cols[4].to_string());
    // A new worker costs the manager 4 descriptors (status socket pair and
    // output pipe); its child then needs 4 more at 5 and up: leave 2.
    let tight = open + 4 + 2;
    sh(&format!("prlimit --pid {manager} --nofile={tight}:{hard}"));
    let runs_before = a.log_count("echo worker pid");
    let _ = ask(&a.socket("tight"), "crash");
    let cause = "mod_procd: cannot start worker: moving the";
    let logged = wait_until(Duration::from_secs(10), || a.log_count(cause) >= 2);
    let runs_during = a.log_count("echo worker pid");
    let lines: Vec<String> = a.error_log().lines().filter(|l| l.contains(cause)).map(str::to_string).collect();
    sh(&format!("prlimit --pid {manager} --nofile={soft}:{hard}"));
    if !logged {
        a.fail(&format!("with RLIMIT_NOFILE {tight} ({open} open), no log line saying why the worker cannot start"));
    }
    eprintln!("RLIMIT_NOFILE {tight} with {open} open: {}", lines[0]);
    if runs_during != runs_before {
        a.fail("a worker ran although its descriptors could not be placed");
    }
    if !lines[0].contains("Too many open files") && !lines[0].contains("EMFILE") {
        a.fail(&format!("the cause does not say what failed: {}", lines[0]));
    }
    // Room again: the next attempt after back-off starts a worker.
    if !wait_until(Duration::from_secs(30), || {
        ask(&a.socket("tight"), "who").is_ok_and(|w| field(&w, "pid") != field(&first, "pid"))
    }) {
        a.fail("the group did not start again once descriptors were available");
    }
    a.stop();
}

/// `(pgrp, session, tty_nr)` of a process, from /proc/PID/stat.
fn pgrp_session_tty(pid: i32) -> (i32, i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<i32> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(2)
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    match f[..] {
        [pgrp, session, tty] => (pgrp, session, tty),
        _ => panic!("cannot read /proc/{pid}/stat: {stat:?}"),
    }
}

/// The manager and every worker lead process groups of their own (out of
/// Apache's, which the MPMs signal at stop) in Apache's session: under the
/// kernel's autogroup scheduling, one CPU share with Apache, as mod_wsgi's
/// daemons are. When httpd runs in the foreground on a terminal, the
/// manager starts a session of its own instead: no worker has, or can get,
/// a controlling terminal.
#[test]
fn workers_share_apaches_session_but_never_its_terminal() {
    ensure_user("procd-test-a");
    let conf = group("sess", "procd-test-a", "");
    let check = |a: &Apache, on_terminal: bool| -> Result<(), String> {
        let (apache_pgrp, apache_session, apache_tty) = pgrp_session_tty(a.master.unwrap());
        let manager = a.manager();
        let worker: i32 = field(&a.wait_for_group("sess", Duration::from_secs(10)), "pid").parse().unwrap();
        let (manager_pgrp, manager_session, manager_tty) = pgrp_session_tty(manager);
        let (worker_pgrp, worker_session, worker_tty) = pgrp_session_tty(worker);
        let seen = format!(
            "apache group {apache_pgrp} session {apache_session} tty {apache_tty}; manager {manager}: group {manager_pgrp}, session {manager_session}, tty {manager_tty}; worker {worker}: group {worker_pgrp}, session {worker_session}, tty {worker_tty}"
        );
        if on_terminal && apache_tty == 0 {
            return Err(format!("httpd under script(1) has no controlling terminal, the test proves nothing: {seen}"));
        }
        let session = if on_terminal { manager } else { apache_session };
        let groups = manager_pgrp == manager && worker_pgrp == worker && apache_pgrp != manager;
        if manager_session != session || worker_session != session || !groups || manager_tty != 0 || worker_tty != 0 {
            return Err(format!(
                "expected groups of their own in {} session, with no terminal: {seen}",
                if on_terminal { "the manager's own" } else { "Apache's" }
            ));
        }
        eprintln!("{}: {seen}", if on_terminal { "on a terminal" } else { "daemonised" });
        Ok(())
    };
    let mut a = Apache::new("session", Mpm::Event, &conf);
    a.start();
    let verdict = check(&a, false);
    a.stop();
    verdict.unwrap_or_else(|e| panic!("{e}"));

    // The same httpd in the foreground, on a terminal `script` gives it.
    let mut a = Apache::new("session-tty", Mpm::Event, &conf);
    let mut script = Command::new("script")
        .arg("-qfec")
        .arg(format!("{APACHE} -f {} -DFOREGROUND", a.conf.display()))
        .arg("/dev/null")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("script (bsdutils)");
    if !wait_until(Duration::from_secs(10), || a.pidfile().is_some_and(pid_alive)) {
        let _ = script.kill();
        let _ = script.wait();
        a.fail("httpd did not start in the foreground under script(1)");
    }
    a.master = a.pidfile();
    let verdict = check(&a, true);
    a.stop();
    if !wait_until(Duration::from_secs(10), || matches!(script.try_wait(), Ok(Some(_)))) {
        let _ = script.kill();
    }
    let _ = script.wait();
    verdict.unwrap_or_else(|e| panic!("{e}"));
}
