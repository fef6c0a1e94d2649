//! The plan: what the manager must run, resolved from the configuration by
//! the httpd parent (users to ids, programs to paths, logs to files) and sent
//! to the manager as one TOML document per configuration generation.

use super::access::Identity;
use super::access::{WORKER_PATH, find_program};
use super::check::{ServerView, group_identity};
use super::languages::{CGI_LAUNCHER, CGI_LAUNCHER_FILE, Language, Listen, Protocol, shipped_loaders};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Everything the manager runs for one configuration generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Plan {
    pub runtime_dir: String,
    /// The main server's error log file (the manager's own messages).
    pub main_error_log: String,
    /// Sockets are owned by root and this group (Apache's), mode 0660.
    pub socket_gid: u32,
    /// Apache's `User` (its children's uid): no `listen=tcp` group runs
    /// as it. 0: not said (a plan from an older module).
    #[serde(default)]
    pub apache_uid: u32,
    pub groups: Vec<GroupPlan>,
    /// The loaders of the module that made this plan, (file name, source):
    /// the manager may have been forked from an older module (it survives
    /// graceful restarts), and loaders must speak the protocol of the Apache
    /// children that run now.
    #[serde(default)]
    pub loaders: Vec<(String, String)>,
    /// The build of the module that made this plan.
    #[serde(default)]
    pub build: String,
    /// Whether the manager may wake the httpd parent with SIGCHLD after a
    /// graceful restart (`manager::parent_wake`): set by the parent when
    /// SIGCHLD is not another module's (then mod_procd's handler takes it).
    #[serde(default)]
    pub wake_parent: bool,
    /// The control protocol's version (`protocol::control::VERSION`).
    #[serde(default = "first_version")]
    pub version: u32,
}

fn first_version() -> u32 {
    1
}

/// Identifies this build of the module: version plus a hash of the loaders
/// and protocol description (what must match between Apache and workers).
pub fn build_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut hash = |bytes: &[u8]| {
            for &b in bytes {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        };
        for loader in shipped_loaders() {
            hash(loader.source.as_bytes());
        }
        hash(include_str!("../protocol/PROTOCOL.md").as_bytes());
        hash(CGI_LAUNCHER);
        format!("{}-{h:016x}", env!("CARGO_PKG_VERSION"))
    })
    .clone()
}

/// One group, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupPlan {
    pub name: String,
    pub language: String,
    pub protocol: Protocol,
    /// Where its programs listen: the group's Unix socket, or (`http`
    /// only) a loopback port the manager picks per generation.
    #[serde(default)]
    pub listen: Listen,
    /// Program (absolute path) and arguments; empty: no resident workers
    /// (cgi: one exec per request).
    pub argv: Vec<String>,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
    pub env: Vec<(String, String)>,
    pub app: Option<String>,
    /// `processes=MIN-MAX`: `processes` is MIN (0: none until the first
    /// request), `max_processes` MAX (the manager scales between them).
    pub processes: u32,
    #[serde(default)]
    pub max_processes: u32,
    pub threads: u32,
    /// Whether workers report READY on fd 4 (the procd protocol's loaders
    /// do); others count as ready once they have run for `settle_ms`.
    pub ready_message: bool,
    pub startup_timeout_ms: u64,
    pub graceful_timeout_ms: u64,
    pub error_log: String,
    pub restart_file: Option<String>,
    /// Directories whose files the group's workers may load per request
    /// (where `LanguageHandler` names the group); a worker refuses any other
    /// `SCRIPT_FILENAME`. Empty: no per-file scripts (mounted `app=` only).
    #[serde(default)]
    pub script_roots: Vec<String>,
    /// The extensions `LanguageHandler` maps to the group: a per-request
    /// script must have one of them.
    #[serde(default)]
    pub script_extensions: Vec<String>,
    #[serde(default)]
    pub request_timeout_ms: u64,
    /// `maximum-requests=` (0: never).
    #[serde(default)]
    pub maximum_requests: u64,
    /// `memory-limit=`: resident bytes past which a worker is recycled (0: none).
    #[serde(default)]
    pub memory_limit: u64,
    /// `lifetime=`: age past which a worker is recycled (0: none).
    #[serde(default)]
    pub lifetime_ms: u64,
    /// `inactivity-timeout=`: idle time after which a worker above MIN
    /// retires (0: the default for a range, `DEFAULT_INACTIVITY_MS`).
    #[serde(default)]
    pub inactivity_timeout_ms: u64,
}

/// How long a worker above MIN may stay idle when `inactivity-timeout` is
/// not set.
pub const DEFAULT_INACTIVITY_MS: u64 = 60_000;

/// How long a worker that cannot report readiness must stay up to count as
/// started.
pub const SETTLE_MS: u64 = 1000;

/// Where a language's loader lives under the runtime dir, if it has one.
fn loader_path(runtime_dir: &str, lang: &Language) -> Option<String> {
    lang.loader.map(|l| format!("{runtime_dir}/loaders/{}", l.file))
}

/// Where the error log of a server goes for workers' output: a file path,
/// or, for piped or syslog logs (which the manager cannot share), a file in
/// the runtime dir.
fn usable_log(path: Option<&str>, fallback: &str) -> String {
    match path {
        Some(p) if p.starts_with('/') => p.to_string(),
        _ => fallback.to_string(),
    }
}

/// For each group, the directories its `LanguageHandler`s cover: the
/// `<Directory>` they are written in, else the DocumentRoot of their server
/// (for the main server's own scope, which every virtual host inherits: of
/// every server).
fn script_roots(views: &[ServerView<'_>]) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut roots: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for (i, view) in views.iter().enumerate() {
        for r in &view.config.group_refs {
            let Some(under) = &r.scripts_under else { continue };
            let entry = roots.entry(r.group.clone()).or_default();
            match under.as_ref().map(|d| d.display().to_string()).filter(|d| d.starts_with('/')) {
                Some(dir) => {
                    let dir = dir.trim_end_matches('/');
                    entry.insert(if dir.is_empty() { "/".to_string() } else { dir.to_string() });
                }
                // A regex `<Directory ~ ...>` counts as the DocumentRoot too.
                None if i == 0 => entry.extend(views.iter().filter_map(|v| v.document_root.clone())),
                None => entry.extend(view.document_root.clone()),
            }
        }
    }
    for set in roots.values_mut() {
        set.retain(|d| d.starts_with('/') && !d.contains('\n'));
    }
    roots
}

/// The extensions every `LanguageHandler` of `group` maps, in any server.
fn extensions(views: &[ServerView<'_>], group: &str) -> Vec<String> {
    let all: std::collections::BTreeSet<String> = views
        .iter()
        .flat_map(|v| v.config.group_refs.iter())
        .filter(|r| r.group == group)
        .flat_map(|r| r.extensions.iter().cloned())
        .collect();
    all.into_iter().collect()
}

/// Builds the plan. `views` carry each server's error log; `servers[0]` is
/// the main server. Only groups that pass `check_configuration` reach here.
pub fn build_plan(views: &[ServerView<'_>], apache: &Identity, runtime_dir: &str) -> Plan {
    let main_log = usable_log(views.first().and_then(|v| v.error_log.as_deref()), &format!("{runtime_dir}/procd.log"));
    let table = views.first().and_then(|v| v.config.languages.table().ok()).unwrap_or_default();
    let roots = script_roots(views);
    let mut groups = Vec::new();
    for view in views {
        for g in &view.config.groups {
            // A virtual host with no directive of ours shares the main
            // server's configuration: its groups are the main server's.
            if groups.iter().any(|x: &GroupPlan| x.name == g.name) {
                continue;
            }
            let Some(lang) = table.get(&g.language) else {
                continue;
            };
            let who = group_identity(g, apache);
            let words = g.command.as_ref().or(lang.command.as_ref());
            let mut argv: Vec<String> = match words.and_then(|w| w.split_first()) {
                Some((program, args)) => {
                    let resolved = find_program(program).map_or(program.clone(), |p| p.display().to_string());
                    std::iter::once(resolved)
                        .chain(lang.defaults.iter().map(|a| a.to_string()))
                        .chain(args.iter().cloned())
                        .collect()
                }
                _ => Vec::new(),
            };
            let script_roots: Vec<String> = roots.get(&g.name).map(|r| r.iter().cloned().collect()).unwrap_or_default();
            // php-cgi runs its guard before every script, with what Apache
            // maps to this group (after our defaults, before command='s
            // arguments, which may override them).
            if let (false, Some(guard)) = (argv.is_empty(), lang.guard) {
                let app = g.app.as_ref().map(|a| a.display().to_string()).unwrap_or_default();
                let exts = extensions(views, &g.name).join(" ");
                let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
                let at = 1 + lang.defaults.len().min(argv.len() - 1);
                let settings = [
                    "-d".to_string(),
                    format!("auto_prepend_file={runtime_dir}/loaders/{}", guard.file),
                    "-d".to_string(),
                    format!("procd.guard={}.{}.{}", hex(&app), hex(&exts), hex(&script_roots.join("\n"))),
                ];
                argv.splice(at..at, settings);
            }
            // Built-in languages run their shipped loader; command= replaces
            // only the interpreter (e.g. a virtualenv's python).
            if let (false, Some(loader)) = (argv.is_empty(), loader_path(runtime_dir, lang)) {
                argv.push(loader);
            }
            if lang.protocol == Protocol::Cgi {
                // The launcher is mod_procd's own program; each script's #!
                // line names its interpreter.
                argv = vec![CGI_LAUNCHER_FILE.to_string()];
            }
            let home = g.home.as_ref().map_or_else(
                || {
                    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(who.uid))
                        .ok()
                        .flatten()
                        .map(|u| u.dir.display().to_string())
                        .filter(|d| Path::new(d).is_dir())
                        .unwrap_or_else(|| "/".into())
                },
                |h| h.display().to_string(),
            );
            let mut env = vec![
                ("PATH".to_string(), WORKER_PATH.to_string()),
                ("HOME".to_string(), home.clone()),
                ("USER".to_string(), who.user.clone()),
                ("LOGNAME".to_string(), who.user.clone()),
                ("LANG".to_string(), "C.UTF-8".to_string()),
            ];
            for (k, v) in &g.env {
                env.retain(|(old, _)| old != k);
                env.push((k.clone(), v.clone()));
            }
            // Read by the WSGI loader (README, Serving Python, "intake=gil"):
            // set by the option alone (gil unless intake=threads), which
            // configtest allows for python only, never by env=.
            env.retain(|(k, _)| k != "PROCD_INTAKE");
            let python_loader = lang.loader.as_ref().is_some_and(|l| l.file == "procd_wsgi.py");
            if python_loader && g.intake_gil != Some(false) {
                env.push(("PROCD_INTAKE".to_string(), "gil".to_string()));
            }
            groups.push(GroupPlan {
                name: g.name.clone(),
                language: g.language.clone(),
                protocol: lang.protocol,
                listen: g.listen.unwrap_or(lang.listen),
                argv,
                user: who.user.clone(),
                uid: who.uid,
                gid: who.gid,
                groups: who.groups.clone(),
                home,
                env,
                app: g.app.as_ref().map(|a| a.display().to_string()),
                // A cgi group's launcher starts with its first request and
                // retires after inactivity-timeout: a thousand-vhost server
                // does not keep a thousand idle launchers.
                processes: if lang.protocol == Protocol::Cgi { 0 } else { g.processes.min },
                max_processes: g.processes.max.max(g.processes.min).max(1),
                threads: g.threads,
                // The procd loaders and the CGI launcher say READY.
                ready_message: matches!(lang.protocol, Protocol::Procd | Protocol::Cgi),
                startup_timeout_ms: g.startup_timeout.as_millis() as u64,
                graceful_timeout_ms: g.graceful_timeout.as_millis() as u64,
                error_log: g
                    .error_log
                    .as_ref()
                    .map_or_else(|| usable_log(view.error_log.as_deref(), &main_log), |p| p.display().to_string()),
                restart_file: g.restart_file.as_ref().map(|p| p.display().to_string()),
                script_roots,
                script_extensions: extensions(views, &g.name),
                request_timeout_ms: g.request_timeout.as_millis() as u64,
                maximum_requests: g.maximum_requests,
                memory_limit: g.memory_limit.unwrap_or(0),
                lifetime_ms: g.lifetime.map_or(0, |d| d.as_millis() as u64),
                inactivity_timeout_ms: g.inactivity_timeout.map_or(0, |d| d.as_millis() as u64),
            });
        }
    }
    Plan {
        runtime_dir: runtime_dir.to_string(),
        main_error_log: main_log,
        socket_gid: apache.gid,
        apache_uid: apache.uid,
        groups,
        loaders: shipped_loaders().iter().map(|l| (l.file.to_string(), l.source.to_string())).collect(),
        build: build_id(),
        wake_parent: false,
        version: crate::protocol::control::VERSION,
    }
}

/// Longest time any timer of the plan may be set to (a day is the largest
/// the directives accept); more would overflow the manager's clocks.
const MAX_TIMER_MS: u64 = 7 * 24 * 3600 * 1000;

/// An absolute path without `..`, NUL or control characters.
fn plain_absolute(path: &str) -> bool {
    path.starts_with('/') && !path.split('/').any(|c| c == "..") && !path.chars().any(|c| c.is_control())
}

/// A file name: no directory part, not hidden, not `.` or `..`.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

impl Plan {
    pub fn to_text(&self) -> Result<String, String> {
        toml::to_string(self).map_err(|e| format!("cannot encode the plan: {e}"))
    }

    /// Decodes a plan and checks that it is one an honest httpd parent
    /// sends: the manager runs as root and applies it.
    pub fn from_text(text: &str) -> Result<Plan, String> {
        let plan: Plan = toml::from_str(text).map_err(|e| format!("cannot decode the plan: {e}"))?;
        plan.validate()?;
        Ok(plan)
    }

    /// The main error log a plan names, if it is a plain absolute path,
    /// even when the plan is refused (to say why somewhere).
    pub fn main_log_of(text: &[u8]) -> Option<String> {
        #[derive(Deserialize)]
        struct Head {
            main_error_log: String,
        }
        let head: Head = toml::from_str(std::str::from_utf8(text).ok()?).ok()?;
        plain_absolute(&head.main_error_log).then_some(head.main_error_log)
    }

    /// What no plan from `build_plan` can contain: root identities,
    /// relative or `..` paths, loader names with a directory part, timers
    /// that overflow, absurd counts.
    pub fn validate(&self) -> Result<(), String> {
        let refuse = |why: String| Err(format!("refusing the configuration: {why}"));
        if self.version > crate::protocol::control::VERSION {
            return refuse(format!(
                "it is version {} and this manager reads version {}: restart Apache fully (apachectl restart) to start the new manager",
                self.version,
                crate::protocol::control::VERSION
            ));
        }
        if !plain_absolute(&self.runtime_dir) || self.runtime_dir == "/" {
            return refuse(format!("runtime dir {:?} is not an absolute path", self.runtime_dir));
        }
        if !plain_absolute(&self.main_error_log) {
            return refuse(format!("main error log {:?} is not an absolute path", self.main_error_log));
        }
        for (file, source) in &self.loaders {
            if !plain_file_name(file) || source.len() > 1 << 20 {
                return refuse(format!("loader {file:?} is not a plain file name or is too large"));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for g in &self.groups {
            let n = &g.name;
            if !super::languages::valid_name(n) || !names.insert(n.as_str()) {
                return refuse(format!("group name {n:?} is invalid or repeated"));
            }
            if g.uid == 0 || g.gid == 0 || g.groups.contains(&0) {
                return refuse(format!("group {n} would run with uid or gid 0"));
            }
            // A cgi group's program is the manager's own launcher, by name.
            let launcher = g.protocol == Protocol::Cgi && g.argv == [CGI_LAUNCHER_FILE];
            if (!launcher && g.argv.first().is_some_and(|p| !plain_absolute(p)))
                || g.argv.iter().any(|a| a.contains('\0'))
            {
                return refuse(format!("group {n}: the program is not an absolute path"));
            }
            if !plain_absolute(&g.home) || !plain_absolute(&g.error_log) {
                return refuse(format!("group {n}: home or error log is not an absolute path"));
            }
            if g.restart_file.as_ref().is_some_and(|f| !plain_absolute(f)) {
                return refuse(format!("group {n}: restart file is not an absolute path"));
            }
            if g.processes > 1024 || !(1..=1024).contains(&g.max_processes) || g.max_processes < g.processes {
                return refuse(format!("group {n}: processes out of range"));
            }
            if g.listen == Listen::Tcp && (g.protocol != Protocol::Http || g.processes != 1 || g.max_processes != 1) {
                return refuse(format!("group {n}: listen=tcp is only for one http process"));
            }
            if g.listen == Listen::Tcp && g.uid == self.apache_uid {
                // Code in any Apache child could take over its port.
                return refuse(format!(
                    "group {n}: listen=tcp as Apache's own user (uid {}): give it its own user=",
                    g.uid
                ));
            }
            if !(1..=1024).contains(&g.threads) {
                return refuse(format!("group {n}: threads out of range"));
            }
            if [
                g.startup_timeout_ms,
                g.graceful_timeout_ms,
                g.request_timeout_ms,
                g.lifetime_ms,
                g.inactivity_timeout_ms,
            ]
            .iter()
            .any(|t| *t > MAX_TIMER_MS)
            {
                return refuse(format!("group {n}: a timeout is out of range"));
            }
            if g.env.iter().any(|(k, v)| k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0')) {
                return refuse(format!("group {n}: an environment entry is malformed"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::scope::ServerConfig;
    use crate::config::{DirectiveContext, Origin};

    #[test]
    fn plan_round_trips_and_resolves() {
        let ctx = DirectiveContext {
            directory: None,
            origin: Origin { file: "t.conf".into(), line: 1 },
            in_vhost: false,
            in_section: false,
            server_root: "/etc/apache2".into(),
        };
        let mut main = ServerConfig::default();
        main.apply(
            "LanguageGroup",
            "a language=python processes=0-4 user=nobody env=X=1 env=PATH=/opt/bin env=PROCD_INTAKE=gil intake=threads",
            &ctx,
        )
        .unwrap();
        main.apply("LanguageGroup", "b language=cgi", &ctx).unwrap();
        main.apply("LanguageGroup", "c language=python", &ctx).unwrap();
        let views = [ServerView {
            label: "main".into(),
            config: &main,
            error_log: Some("/var/log/e.log".into()),
            document_root: None,
        }];
        let apache = Identity::new("nobody", 65534, 65534);
        let plan = build_plan(&views, &apache, "/run/procd");
        let a = &plan.groups[0];
        assert!(a.argv[0].ends_with("/python3"), "{:?}", a.argv);
        assert_eq!(a.argv[1], "/run/procd/loaders/procd_wsgi.py");
        assert_eq!(a.uid, 65534);
        assert_eq!((a.processes, a.max_processes), (0, 4));
        assert!(a.ready_message);
        assert_eq!(a.error_log, "/var/log/e.log");
        assert!(a.env.contains(&("PATH".into(), "/opt/bin".into())));
        assert!(a.env.contains(&("X".into(), "1".into())));
        assert!(!a.env.iter().any(|(k, _)| k == "PROCD_INTAKE"), "intake= decides, not env=: {:?}", a.env);
        assert!(plan.groups[2].env.contains(&("PROCD_INTAKE".into(), "gil".into())), "gil, the default for python");
        assert!(!plan.groups[1].env.iter().any(|(k, _)| k == "PROCD_INTAKE"), "only the python loader reads it");
        assert_eq!(plan.groups[1].argv, ["procd-cgi-launcher"], "the CGI launcher, by name (it runs from a memfd)");
        // A virtual host without directives of ours shares the main
        // server's configuration: each group is planned once.
        let shared = [
            ServerView { label: "main".into(), config: &main, error_log: None, document_root: None },
            ServerView { label: "vhost".into(), config: &main, error_log: None, document_root: None },
        ];
        assert_eq!(build_plan(&shared, &apache, "/run/procd").groups.len(), 3);
        assert_eq!(build_plan(&shared, &apache, "/run/procd").validate(), Ok(()));
        let text = plan.to_text().unwrap();
        assert_eq!(Plan::from_text(&text).unwrap(), plan);
    }

    /// php-cgi: the program, our defaults, the guard with what Apache maps
    /// to the group, then command='s own arguments (which can override).
    #[test]
    fn php_groups_get_defaults_and_the_guard_before_their_own_arguments() {
        let ctx = DirectiveContext {
            directory: Some("/srv/www".into()),
            origin: Origin { file: "t.conf".into(), line: 1 },
            in_vhost: false,
            in_section: false,
            server_root: "/etc/apache2".into(),
        };
        let mut main = ServerConfig::default();
        main.apply("LanguageGroup", "blog language=php user=nobody \"command=/bin/sh -d display_errors=1\"", &ctx)
            .unwrap();
        let mut dir = crate::config::scope::DirConfig::default();
        main.group_refs.extend(dir.apply("LanguageHandler", "blog .php", &ctx).unwrap());
        let views = [ServerView {
            label: "main".into(),
            config: &main,
            error_log: Some("/var/log/e.log".into()),
            document_root: None,
        }];
        let plan = build_plan(&views, &Identity::new("nobody", 65534, 65534), "/run/procd");
        let argv = &plan.groups[0].argv;
        let n = crate::config::languages::PHP_DEFAULTS.len();
        assert_eq!(argv[0], "/bin/sh");
        assert_eq!(&argv[1..=n], crate::config::languages::PHP_DEFAULTS);
        assert_eq!(argv[n + 2], "auto_prepend_file=/run/procd/loaders/procd_php_guard.php");
        let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(argv[n + 4], format!("procd.guard=.{}.{}", hex(".php"), hex("/srv/www")));
        assert_eq!(&argv[n + 5..], ["-d", "display_errors=1"]);
        assert_eq!(plan.validate(), Ok(()));
        assert!(plan.loaders.iter().any(|(f, _)| f == "procd_php_guard.php"));
    }

    /// What a hostile holder of the control channel might send is refused.
    #[test]
    fn dishonest_plans_are_refused() {
        let good = GroupPlan {
            name: "shop".into(),
            language: "python".into(),
            protocol: Protocol::Procd,
            listen: Listen::Unix,
            argv: vec!["/usr/bin/python3".into()],
            user: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
            home: "/".into(),
            env: vec![],
            app: None,
            processes: 1,
            max_processes: 1,
            threads: 1,
            ready_message: true,
            startup_timeout_ms: 1000,
            graceful_timeout_ms: 1000,
            error_log: "/var/log/x.log".into(),
            restart_file: None,
            script_roots: vec![],
            script_extensions: vec![],
            request_timeout_ms: 60000,
            maximum_requests: 0,
            memory_limit: 0,
            lifetime_ms: 0,
            inactivity_timeout_ms: 0,
        };
        let plan = |g: GroupPlan| Plan {
            runtime_dir: "/run/procd".into(),
            main_error_log: "/var/log/e.log".into(),
            groups: vec![g],
            ..Plan::default()
        };
        assert_eq!(plan(good.clone()).validate(), Ok(()));
        let bad: [fn(&mut GroupPlan); 13] = [
            |g| g.listen = Listen::Tcp,
            |g| g.uid = 0,
            |g| g.gid = 0,
            |g| g.groups.push(0),
            |g| g.argv = vec!["python3".into()],
            |g| g.name = "../x".into(),
            |g| g.max_processes = 0,
            |g| g.startup_timeout_ms = u64::MAX,
            |g| g.graceful_timeout_ms = u64::MAX,
            |g| g.request_timeout_ms = u64::MAX,
            |g| g.lifetime_ms = u64::MAX,
            |g| g.inactivity_timeout_ms = u64::MAX,
            |g| g.error_log = "/var/log/../../etc/shadow".into(),
        ];
        for change in bad {
            let mut g = good.clone();
            change(&mut g);
            assert!(plan(g.clone()).validate().is_err(), "{g:?}");
        }
        // listen=tcp as Apache's user: refused; as another user: fine.
        let mut tcp = good.clone();
        (tcp.protocol, tcp.listen) = (Protocol::Http, Listen::Tcp);
        let mut p = plan(tcp.clone());
        p.apache_uid = 33;
        assert_eq!(p.validate(), Ok(()));
        p.apache_uid = tcp.uid;
        assert!(p.validate().unwrap_err().contains("listen=tcp as Apache's own user"), "{:?}", p.validate());
        let mut p = plan(good);
        p.loaders = vec![("../../etc/cron.d/x".into(), String::new())];
        assert!(p.validate().is_err());
    }
}
