//! A private Apache instance: generated config, start, graceful restart,
//! stop by pid with the check that nothing it started is left.

use super::procs::{descendants, pid_alive, pids_mentioning};
use std::collections::BTreeSet;
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

/// A loopback port nobody listens on, below the kernel's ephemeral range
/// (32768 and up): a port the kernel handed out with `bind(:0)` can be taken
/// again as the source port of any test's outgoing connection before Apache
/// binds it ("Address already in use" in CI). Each port is handed out once
/// per test binary.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    const FIRST: usize = 20000;
    const COUNT: usize = 12000;
    let start = (std::process::id() as usize * 7919) % COUNT;
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(n < COUNT, "no free loopback port below 32768");
        let port = (FIRST + (start + n) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
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
    /// What loads mod_procd instead of `LoadModule` of the built .so
    /// (e.g. `Include` of an installed package's mods-enabled files).
    module_conf: Option<String>,
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
            module_conf: None,
        };
        a.write_conf();
        a
    }

    /// Loads mod_procd with `text` instead of the built .so.
    pub fn set_module_conf(&mut self, text: &str) {
        self.module_conf = Some(text.to_string());
        self.write_conf();
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
            r#"# generated by tests/common/apache.rs
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
{module_conf}
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
            module_conf = self
                .module_conf
                .clone()
                .unwrap_or_else(|| format!("LoadModule procd_module {}", module_path().display()))
                .replace("@DIR@", &d.to_string()),
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

    /// The pid in Apache's PidFile, if any.
    pub fn pidfile(&self) -> Option<i32> {
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
        // The parent logs "resuming normal operations" once it has started
        // its children (prefork: after them, so a child can answer first);
        // `graceful` counts these lines, so the first must be there.
        if !wait_until(Duration::from_secs(30), || self.generations() >= 1) {
            self.fail("no \"resuming normal operations\" line 30 s after start");
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
