//! The real-Apache test harness every integration test uses.
//!
//! Each `Apache` gets its own directory under /tmp with a generated
//! httpd.conf (Listen on a free 127.0.0.1 port, its own PidFile, ErrorLog,
//! DefaultRuntimeDir and Mutex directory) that loads the freshly built
//! mod_procd.so. It is started with `apache2 -f CONF -k start`, stopped by
//! the pid it wrote, and on drop asserts that no process it started is left.
//! On failure the config and error log are printed (see `Apache::fail`).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const APACHE: &str = "/usr/sbin/apache2";
pub const MODULES: &str = "/usr/lib/apache2/modules";

/// Which MPM the generated config loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mpm {
    Event,
    Worker,
    Prefork,
}

impl Mpm {
    pub const ALL: [Mpm; 3] = [Mpm::Event, Mpm::Worker, Mpm::Prefork];

    fn name(self) -> &'static str {
        match self {
            Mpm::Event => "event",
            Mpm::Worker => "worker",
            Mpm::Prefork => "prefork",
        }
    }
}

/// The module under test: `PROCD_MODULE` if set, else the cdylib built
/// from this tree. `cargo test` does not rebuild a cdylib for integration
/// tests, so the harness runs `cargo build --lib` once per test binary
/// (cargo's own lock serialises the test binaries running this at once).
pub fn module_path() -> PathBuf {
    if let Ok(p) = std::env::var("PROCD_MODULE") {
        return PathBuf::from(p);
    }
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
            let out = Command::new(env!("CARGO"))
                .args(["build", "--lib", "--quiet", "--manifest-path", manifest])
                .output()
                .expect("run cargo build");
            assert!(out.status.success(), "cargo build --lib failed:\n{}", String::from_utf8_lossy(&out.stderr));
            let exe = std::env::current_exe().expect("test binary path");
            // target/debug/deps/<test> -> target/debug/libmod_procd.so
            let so = exe.parent().and_then(Path::parent).expect("target dir").join("libmod_procd.so");
            assert!(so.exists(), "{} is missing after cargo build", so.display());
            so
        })
        .clone()
}

/// Polls `check` every 20 ms until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie is dead for our purposes only once reaped; /proc shows both.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// Every live descendant of `root`.
pub fn descendants(root: i32) -> BTreeSet<i32> {
    let pids = all_pids();
    let mut found = BTreeSet::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &c in &pids {
            if parent_of(c) == Some(p) && found.insert(c) {
                frontier.push(c);
            }
        }
    }
    found
}

/// Processes whose command line mentions `needle` (our private directory).
pub fn pids_mentioning(needle: &str) -> BTreeSet<i32> {
    all_pids()
        .into_iter()
        .filter(|p| *p != std::process::id() as i32)
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .filter(|p| pid_alive(*p))
        .collect()
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A private Apache instance.
pub struct Apache {
    pub dir: PathBuf,
    pub port: u16,
    pub mpm: Mpm,
    pub conf: PathBuf,
    /// The master's pid once started.
    pub master: Option<i32>,
    /// Every pid seen under the master, for the leftover check.
    seen: BTreeSet<i32>,
    extra: String,
    /// Environment for `apache2` (and so the manager it forks).
    pub env: Vec<(String, String)>,
    /// A command `apache2 -k start` runs under (e.g. `prlimit --nofile=90 --`).
    pub wrapper: Vec<String>,
}

/// A minimal HTTP answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Apache {
    /// Writes a config for `mpm` with `extra` appended (module loaded).
    pub fn new(name: &str, mpm: Mpm, extra: &str) -> Apache {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/procd-test-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["run", "htdocs"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create test dir");
        }
        std::fs::write(dir.join("htdocs/hello.txt"), "Hello, World!\n").expect("write docroot");
        let worker = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workers/echo_worker.py");
        std::fs::copy(worker, dir.join("echo_worker.py")).expect("copy the test worker");
        // Language "echo": the test worker, speaking the procd status channel.
        std::fs::write(
            dir.join("echo.toml"),
            format!(
                "[language.echo]\nprotocol = \"procd\"\ncommand = \"/usr/bin/python3 {}/echo_worker.py\"\n",
                dir.display()
            ),
        )
        .expect("write echo.toml");
        let _ = Command::new("chmod").args(["-R", "755"]).arg(&dir).status();
        let a = Apache {
            conf: dir.join("httpd.conf"),
            dir,
            port: free_port(),
            mpm,
            master: None,
            seen: BTreeSet::new(),
            extra: extra.to_string(),
            env: Vec::new(),
            wrapper: Vec::new(),
        };
        a.write_conf();
        a
    }

    /// Replaces the extra configuration (for graceful-restart tests).
    pub fn set_extra(&mut self, extra: &str) {
        self.extra = extra.to_string();
        self.write_conf();
    }

    fn write_conf(&self) {
        let d = self.dir.display();
        let mpm = self.mpm.name();
        let threads = match self.mpm {
            Mpm::Prefork => "StartServers 2\nMinSpareServers 1\nMaxSpareServers 4\nMaxRequestWorkers 16".to_string(),
            _ => "StartServers 1\nServerLimit 4\nThreadsPerChild 8\nMaxRequestWorkers 32\nMinSpareThreads 4\nMaxSpareThreads 32".to_string(),
        };
        let conf = format!(
            r#"# generated by tests/common/mod.rs
ServerRoot "{d}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{d}/httpd.pid"
ErrorLog "{d}/error.log"
LogLevel notice
DefaultRuntimeDir "{d}/run"
Mutex file:{d}/run default
User www-data
Group www-data
LoadModule mpm_{mpm}_module {MODULES}/mod_mpm_{mpm}.so
LoadModule authz_core_module {MODULES}/mod_authz_core.so
LoadModule mime_module {MODULES}/mod_mime.so
LoadModule dir_module {MODULES}/mod_dir.so
LoadModule procd_module {module}
TypesConfig /etc/mime.types
{threads}
GracefulShutdownTimeout 5
DocumentRoot "{d}/htdocs"
<Directory />
    Require all denied
</Directory>
<Directory "{d}/htdocs">
    Require all granted
</Directory>

# ---- test-specific ----
{extra}
"#,
            port = self.port,
            module = module_path().display(),
            extra = self.extra.replace("@DIR@", &d.to_string())
        );
        std::fs::write(&self.conf, conf).expect("write httpd.conf");
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Panics with everything needed to understand the failure.
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\n--- config {} ---\n{}\n--- error log ---\n{}",
            self.conf.display(),
            std::fs::read_to_string(&self.conf).unwrap_or_default(),
            self.error_log()
        );
    }

    fn apache(&self, args: &[&str]) -> Output {
        let wrapped = args == ["-k", "start"] && !self.wrapper.is_empty();
        let mut cmd = if wrapped {
            let mut c = Command::new(&self.wrapper[0]);
            c.args(&self.wrapper[1..]).arg(APACHE);
            c
        } else {
            Command::new(APACHE)
        };
        cmd.arg("-f").arg(&self.conf).args(args).env("LANG", "C");
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.output().expect("run apache2")
    }

    /// `apache2 -t`: (success, stderr+stdout).
    pub fn configtest(&self) -> (bool, String) {
        let out = self.apache(&["-t"]);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
        (out.status.success(), text)
    }

    fn pidfile(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("httpd.pid")).ok()?.trim().parse().ok()
    }

    /// Starts Apache and waits until it answers on its port.
    pub fn start(&mut self) {
        let out = self.apache(&["-k", "start"]);
        if !out.status.success() {
            self.fail(&format!("apache2 -k start failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        if !wait_until(Duration::from_secs(10), || self.pidfile().is_some_and(pid_alive)) {
            self.fail("no live pid in PidFile 10 s after start");
        }
        self.master = self.pidfile();
        if !wait_until(Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", self.port)).is_ok()) {
            self.fail("Apache does not accept connections 10 s after start");
        }
        self.note_processes();
    }

    fn note_processes(&mut self) {
        if let Some(m) = self.master {
            self.seen.insert(m);
            self.seen.extend(descendants(m));
        }
    }

    /// How many times Apache said it was (re)configured and serving.
    pub fn generations(&self) -> usize {
        self.error_log().matches("resuming normal operations").count()
    }

    /// `apache2 -k graceful`, waiting for the new generation to be up.
    pub fn graceful(&mut self) {
        self.note_processes();
        let before = self.generations();
        let out = self.apache(&["-k", "graceful"]);
        if !out.status.success() {
            self.fail(&format!("apache2 -k graceful failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        if !wait_until(Duration::from_secs(15), || self.generations() > before) {
            self.fail("no new generation 15 s after graceful");
        }
        if self.pidfile() != self.master {
            self.fail("the master pid changed across a graceful restart");
        }
        self.note_processes();
    }

    /// Stops Apache by its pid file and asserts that every process it ever
    /// had is gone.
    pub fn stop(&mut self) {
        let Some(master) = self.master.take() else {
            return;
        };
        self.seen.insert(master);
        self.seen.extend(descendants(master));
        let _ = self.apache(&["-k", "stop"]);
        let gone = wait_until(Duration::from_secs(15), || !pid_alive(master));
        let left_after = || -> BTreeSet<i32> {
            let mut left: BTreeSet<i32> = self.seen.iter().copied().filter(|p| pid_alive(*p)).collect();
            left.extend(pids_mentioning(&self.dir.display().to_string()));
            left
        };
        let clean = gone && wait_until(Duration::from_secs(5), || left_after().is_empty());
        if !clean {
            let left = left_after();
            for p in &left {
                // Only pids this harness saw under its own master.
                let _ = Command::new("kill").args(["-KILL", &p.to_string()]).status();
            }
            self.fail(&format!("processes left after apache2 -k stop: master gone={gone}, still alive: {left:?}"));
        }
    }

    /// A GET over a fresh connection.
    pub fn get(&self, path: &str) -> Response {
        self.request(&format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
    }

    /// Sends raw bytes and reads the whole answer (connection closes).
    pub fn request(&self, raw: &str) -> Response {
        let mut s =
            TcpStream::connect(("127.0.0.1", self.port)).unwrap_or_else(|e| self.fail(&format!("connect: {e}")));
        s.set_read_timeout(Some(Duration::from_secs(20))).ok();
        s.write_all(raw.as_bytes()).unwrap_or_else(|e| self.fail(&format!("send: {e}")));
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap_or_else(|e| self.fail(&format!("read: {e}")));
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| self.fail("no HTTP head"));
        let head = String::from_utf8_lossy(&buf[..split]).into_owned();
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut body = buf[split + 4..].to_vec();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body).unwrap_or_else(|| self.fail("malformed chunked body"));
        }
        Response { status, head, body }
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        if self.master.is_some() {
            if std::thread::panicking() {
                // Still clean up, but do not panic twice.
                if let Some(m) = self.master.take() {
                    let mut all = descendants(m);
                    all.insert(m);
                    let _ = self.apache(&["-k", "stop"]);
                    wait_until(Duration::from_secs(10), || !pid_alive(m));
                    for p in all.into_iter().filter(|p| pid_alive(*p)) {
                        let _ = Command::new("kill").args(["-KILL", &p.to_string()]).status();
                    }
                }
            } else {
                self.stop();
            }
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Creates a system user for tests if it does not exist (we run as root).
pub fn ensure_user(name: &str) {
    let exists = Command::new("id").arg(name).output().map(|o| o.status.success()).unwrap_or(false);
    if !exists {
        let ok = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        // Another test binary may have created it meanwhile.
        assert!(
            ok || Command::new("id").arg(name).status().map(|s| s.success()).unwrap_or(false),
            "useradd {name} failed"
        );
    }
}

/// The process manager of an Apache master (its child named procd-manager).
pub fn manager_of(master: i32) -> Option<i32> {
    all_pids().into_iter().find(|p| parent_of(*p) == Some(master) && comm(*p) == "procd-manager")
}

/// The direct children of `pid`.
pub fn children(pid: i32) -> BTreeSet<i32> {
    all_pids().into_iter().filter(|p| parent_of(*p) == Some(pid) && pid_alive(*p)).collect()
}

pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

/// (real uid, real gid) of a process.
pub fn uid_gid(pid: i32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u32 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(u32::MAX)
    };
    (field("Uid:"), field("Gid:"))
}

/// What each open descriptor of a process points to (socket:[..], paths, pipes).
pub fn fd_targets(pid: i32) -> BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()).map(|t| t.display().to_string()).collect())
        .unwrap_or_default()
}

/// User + system CPU time of a process, in clock ticks.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    // After the comm: state(0) ppid(1) ... utime(11) stime(12)
    fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Zombies among the children of `pid`.
pub fn zombie_children(pid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|p| parent_of(*p) == Some(pid))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .collect()
}

/// Sends one line to a group's socket and returns the answer line.
pub fn ask(socket: &Path, line: &str) -> Result<String, String> {
    use std::os::unix::net::UnixStream;
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect {}: {e}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(format!("{line}\n").as_bytes()).map_err(|e| format!("send: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| format!("read: {e}"))?;
    if out.is_empty() {
        return Err("connection closed without an answer".into());
    }
    Ok(out.trim().to_string())
}

/// A field (`gen=`, `pid=`...) of an echo worker's answer.
pub fn field<'a>(answer: &'a str, name: &str) -> &'a str {
    answer.split_whitespace().find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('='))).unwrap_or("")
}

impl Apache {
    /// The group's stable socket path.
    pub fn socket(&self, group: &str) -> PathBuf {
        self.dir.join("run/procd").join(format!("{group}.sock"))
    }

    /// Waits until `group` answers; returns the answer.
    pub fn wait_for_group(&self, group: &str, limit: Duration) -> String {
        let mut last = String::new();
        if wait_until(limit, || match ask(&self.socket(group), "who") {
            Ok(a) => {
                last = a;
                true
            }
            Err(e) => {
                last = e;
                false
            }
        }) {
            last
        } else {
            self.fail(&format!("group {group} does not answer within {limit:?}: {last}"))
        }
    }

    pub fn manager(&self) -> i32 {
        let master = self.master.unwrap_or_else(|| self.fail("not started"));
        let mut found = None;
        wait_until(Duration::from_secs(5), || {
            found = manager_of(master);
            found.is_some()
        });
        found.unwrap_or_else(|| self.fail("no procd-manager process under the httpd master"))
    }

    pub fn log_count(&self, needle: &str) -> usize {
        self.error_log().matches(needle).count()
    }

    /// Forgets the master (for tests that kill it themselves).
    pub fn forget_master(&mut self) -> Option<i32> {
        self.master.take()
    }
}

/// Creates a system group for tests if it does not exist, and adds `user` to it.
pub fn ensure_supplementary_group(group: &str, user: &str) -> u32 {
    let _ = Command::new("groupadd").args(["--system", "-f", group]).status();
    let _ = Command::new("usermod").args(["-a", "-G", group, user]).status();
    let out = Command::new("getent").args(["group", group]).output().expect("getent");
    String::from_utf8_lossy(&out.stdout).split(':').nth(2).and_then(|g| g.parse().ok()).expect("gid of the test group")
}

/// Runs a command as `user` (setpriv, no shell); returns (success, output).
pub fn run_as(user: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid", user, "--regid", user, "--init-groups", "--"])
        .args(args)
        .output()
        .expect("setpriv");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Descriptors of `pid` that share an open file description with one of
/// `master`'s: inherited, not merely the same file opened again (kcmp(2)).
pub fn shared_descriptions(master: i32, pid: i32) -> Vec<String> {
    let fds = |p: i32| -> Vec<(i32, String)> {
        std::fs::read_dir(format!("/proc/{p}/fd"))
            .map(|d| {
                d.filter_map(|e| {
                    let e = e.ok()?;
                    let n: i32 = e.file_name().to_str()?.parse().ok()?;
                    Some((n, std::fs::read_link(e.path()).ok()?.display().to_string()))
                })
                .collect()
            })
            .unwrap_or_default()
    };
    let theirs = fds(master);
    let mut shared = Vec::new();
    for (fd, target) in fds(pid) {
        for (mfd, mtarget) in &theirs {
            if &target != mtarget {
                continue;
            }
            const KCMP_FILE: libc::c_long = 0;
            // SAFETY: kcmp only compares kernel objects of two processes.
            let same = unsafe {
                libc::syscall(
                    libc::SYS_kcmp,
                    pid as libc::c_long,
                    master as libc::c_long,
                    KCMP_FILE,
                    fd as libc::c_long,
                    *mfd as libc::c_long,
                )
            };
            if same == 0 {
                shared.push(format!("fd {fd} -> {target} (master fd {mfd})"));
            }
        }
    }
    shared
}

/// Decodes a chunked HTTP body.
pub fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Reads the whole answer; also when `needle` first arrived (since `started`).
/// A read interrupted by a signal (other tests' children) is retried.
pub fn read_until_closed(
    c: &mut std::net::TcpStream,
    started: std::time::Instant,
    needle: &str,
) -> (String, Option<Duration>) {
    let (mut got, mut buf, mut first_seen) = (Vec::new(), [0u8; 4096], None);
    loop {
        let n = match c.read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) | Ok(0) => break,
            Ok(n) => n,
        };
        got.extend_from_slice(&buf[..n]);
        if first_seen.is_none() && memchr::memmem::find(&got, needle.as_bytes()).is_some() {
            first_seen = Some(started.elapsed());
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), first_seen)
}
