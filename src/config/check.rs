//! Checks that need the whole configuration, run from Apache's check_config
//! hook (which `apachectl configtest` runs too): group names unique across
//! all vhosts, every group a directive names declared where it is used, each
//! group's language known, its program installed, and its files reachable by
//! the user it will run as.

use super::access::{Identity, Need, WORKER_PATH, check_access, find_program};
use super::group::GroupConfig;
use super::languages::{Language, Listen, Protocol};
use super::scope::ServerConfig;
use std::collections::BTreeMap;
use std::path::Path;

/// One server (main or vhost) as the check sees it.
pub struct ServerView<'a> {
    /// "the main server" or "virtual host shop.example (file:line)".
    pub label: String,
    pub config: &'a ServerConfig,
    /// The server's ErrorLog as Apache resolved it (a path, `|pipe` or `syslog:`).
    pub error_log: Option<String>,
    /// The server's DocumentRoot.
    pub document_root: Option<String>,
}

/// What deserves a word at configtest without being an error: groups
/// that run as Apache's own user share its identity with Apache's children
/// (and with code inside them, such as mod_php).
pub fn warnings(servers: &[ServerView<'_>], apache_user: &Identity) -> Vec<String> {
    /// Beyond this many, the rest are named in one line.
    const ONE_BY_ONE: usize = 5;
    let mut seen = std::collections::BTreeSet::new();
    let shared: Vec<&GroupConfig> = servers
        .iter()
        .flat_map(|s| s.config.groups.iter())
        .filter(|g| g.user.is_none() && seen.insert(g.name.clone()))
        .collect();
    let mut lines: Vec<String> = shared
        .iter()
        .take(ONE_BY_ONE)
        .map(|g| {
            format!(
                "LanguageGroup {} (at {}) has no user=: its workers run as Apache's user {}, so Apache's children and any code in them (mod_php, CGI scripts, other groups without user=) can read and change its files and signal its processes. Give each group its own user= to isolate it",
                g.name, g.declared_at, apache_user.user
            )
        })
        .collect();
    if shared.len() > ONE_BY_ONE {
        let rest: Vec<&str> = shared[ONE_BY_ONE..].iter().map(|g| g.name.as_str()).collect();
        lines.push(format!(
            "{} more groups have no user= and share Apache's identity the same way: {}",
            rest.len(),
            if rest.len() > 20 { format!("{} ...", rest[..20].join(", ")) } else { rest.join(", ") }
        ));
    }
    lines.extend(tcp_warnings(servers));
    lines.extend(intake_warnings(servers));
    lines
}

/// `intake=gil` with `threads=1`: a process of one thread takes one request
/// at a time anyway, so the option does nothing there.
fn intake_warnings(servers: &[ServerView<'_>]) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    servers
        .iter()
        .flat_map(|s| s.config.groups.iter())
        .filter(|g| seen.insert(g.name.clone()) && g.intake_gil == Some(true) && g.threads <= 1)
        .map(|g| {
            format!(
                "LanguageGroup {} (at {}) has intake=gil with threads={}: a process of one thread takes one request at a time anyway, so intake=gil changes nothing; give threads= above 1 (e.g. threads=8) for it to matter, or remove intake=",
                g.name, g.declared_at, g.threads
            )
        })
        .collect()
}

/// Each `listen=tcp` group (from the group or its language): its port is
/// open to every local user, not only to Apache.
fn tcp_warnings(servers: &[ServerView<'_>]) -> Vec<String> {
    let Some(table) = servers.first().and_then(|m| m.config.languages.table().ok()) else {
        return Vec::new();
    };
    let mut seen = std::collections::BTreeSet::new();
    servers
        .iter()
        .flat_map(|s| s.config.groups.iter())
        .filter(|g| seen.insert(g.name.clone()))
        .filter(|g| g.listen.or_else(|| table.get(&g.language).map(|l| l.listen)) == Some(Listen::Tcp))
        .map(|g| {
            format!(
                "LanguageGroup {} (at {}) uses listen=tcp: any local user (other tenants, code in Apache's children) can connect to its program's port on 127.0.0.1 directly, bypassing Apache's access rules (Require, authentication, mod_security) and sending any X-Forwarded-* headers it likes; a group's Unix socket (listen=unix) admits only Apache. Use listen=unix where the program supports it, or make the program trust no request headers and check access itself",
                g.name, g.declared_at
            )
        })
        .collect()
}

/// Runs every cross-check; returns one sentence per problem (empty: fine).
///
/// `servers[0]` must be the main server. `apache_user` is Apache's `User`,
/// which groups without `user=` run as.
pub fn check_configuration(servers: &[ServerView<'_>], apache_user: &Identity) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(main) = servers.first() else {
        return errors;
    };
    let table = match main.config.languages.table() {
        Ok(t) => t,
        Err(e) => return vec![format!("ProcdLanguages {e}")],
    };

    // Group names are global: each names one socket in the runtime dir.
    let mut first_seen: BTreeMap<&str, &GroupConfig> = BTreeMap::new();
    for server in servers {
        for g in &server.config.groups {
            match first_seen.get(g.name.as_str()) {
                Some(other) if other.declared_at != g.declared_at => errors.push(format!(
                    "LanguageGroup {} (at {}): a group of that name is already declared at {}; group names must be unique across all virtual hosts",
                    g.name, g.declared_at, other.declared_at
                )),
                Some(_) => {}
                None => {
                    first_seen.insert(&g.name, g);
                    errors.extend(check_group(g, &table, apache_user));
                }
            }
        }
    }

    for server in servers {
        for r in &server.config.group_refs {
            if server.config.visible_groups().any(|g| g.name == r.group) {
                continue;
            }
            let elsewhere = first_seen
                .get(r.group.as_str())
                .map(|g| format!(" (it is declared at {}, a scope this one cannot use; a virtual host can use its own groups and those of the main server)", g.declared_at))
                .unwrap_or_default();
            errors.push(format!(
                "{} {} (at {}): no LanguageGroup named \"{}\" is declared for {}{}",
                r.directive, r.group, r.origin, r.group, server.label, elsewhere
            ));
        }
        for m in &server.config.mounts {
            let Some(g) = server.config.visible_groups().find(|g| g.name == m.group) else {
                continue;
            };
            let protocol = table.get(&g.language).map(|l| l.protocol);
            if g.app.is_none() && protocol != Some(Protocol::Http) && protocol.is_some() {
                errors.push(format!(
                    "LanguageMount {} {} (at {}): group {} has no app= to serve the mount; add app=/path/to/the/application to its LanguageGroup (at {})",
                    m.prefix, m.group, m.origin, g.name, g.declared_at
                ));
            }
        }
    }
    errors
}

/// The runtime dir holds the sockets and files root creates for every
/// group: the directory above it (or, where that does not exist yet, the
/// nearest one that does) must be one only root can change, all the way
/// from `/`. The manager checks again when it prepares the directory.
pub fn runtime_dir_error(dir: &Path) -> Option<String> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let existing = parent.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    if super::access::root_controls(existing) {
        return None;
    }
    Some(format!(
        "ProcdRuntimeDir {}: {} or a directory above it is not root's alone (owned by another user, or writable by group or others without the sticky bit): root creates every group's socket there, so whoever can change it could redirect them; use a directory only root can change, such as /run/procd, or fix the owner and mode",
        dir.display(),
        existing.display()
    ))
}

/// Libraries the groups' loaders need (rack for ruby), checked by running
/// the interpreter once per (program, library) as the first group's user
/// with a clean environment, at most 10 s. Only for `apachectl configtest`:
/// at start and graceful restarts the parent must not wait for
/// interpreters (a worker that lacks the library says so in the group's
/// log). Groups with `command=` (a bundle, a virtualenv) are not probed:
/// their command decides where libraries come from.
pub fn library_errors(servers: &[ServerView<'_>], apache_user: &Identity) -> Vec<String> {
    let Some(main) = servers.first() else {
        return Vec::new();
    };
    let Ok(table) = main.config.languages.table() else {
        return Vec::new();
    };
    let mut probed: BTreeMap<(std::path::PathBuf, &str), bool> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for g in servers.iter().flat_map(|s| s.config.groups.iter()) {
        if !seen.insert(g.name.clone()) || g.command.is_some() {
            continue;
        }
        let Some(lang) = table.get(&g.language) else { continue };
        let (Some(library), Some(program)) = (lang.library, lang.command.as_ref().and_then(|c| c.first())) else {
            continue;
        };
        let Some(path) = find_program(program) else { continue };
        let who = group_identity(g, apache_user);
        let present = *probed.entry((path.clone(), library.name)).or_insert_with(|| {
            probe_library(&path, lang.command.as_ref().map_or(&[][..], |c| &c[1..]), &library, &who)
        });
        if !present {
            errors.push(format!(
                "LanguageGroup {} (at {}): language={} needs the {} library, which {} cannot load; install the Debian package {} (apt-get install {}), or name an interpreter or bundle that has it with command= (e.g. command=\"bundle exec ruby\")",
                g.name,
                g.declared_at,
                g.language,
                library.name,
                path.display(),
                library.package,
                library.package
            ));
        }
    }
    errors
}

/// Runs `program args probe` as `who` (when root) and says whether it exited 0.
fn probe_library(program: &Path, args: &[String], library: &super::languages::Library, who: &Identity) -> bool {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(program);
    cmd.args(args)
        .args(library.probe)
        .env_clear()
        .env("PATH", WORKER_PATH)
        .env("LANG", "C.UTF-8")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if nix::unistd::geteuid().is_root() {
        // std drops root's supplementary groups when it changes the uid.
        cmd.uid(who.uid).gid(who.gid);
    }
    let Ok(mut child) = cmd.spawn() else {
        // Whether the program runs at all is checked (and said) elsewhere.
        return true;
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                // A hung interpreter is not proof that the library is missing.
                return true;
            }
        }
    }
}

/// `listen=tcp` (from the group or its language): only for `http`
/// programs, one process per generation, and never as Apache's own user.
/// The program binds the port itself, so the manager cannot hand one
/// listener to several processes as it does a Unix socket; several
/// processes would each need a port of their own and Apache would have to
/// spread requests over them. A program that wants several processes runs
/// them itself on the one port (Node's cluster, gunicorn's workers,
/// Tomcat's threads). The port is the group's only as long as nobody else
/// has its uid: code in any Apache child (mod_php, a CGI script) runs as
/// Apache's user, and as that uid could bind the port once the program
/// leaves it, or share it with `SO_REUSEPORT` (allowed between sockets of
/// one uid), and receive the site's requests.
fn listen_error(g: &GroupConfig, lang: &Language, who: &Identity, apache_user: &Identity, at: &str) -> Option<String> {
    let listen = g.listen.unwrap_or(lang.listen);
    if listen != Listen::Tcp {
        return None;
    }
    let given = if g.listen.is_some() {
        "listen=tcp".to_string()
    } else {
        format!("listen = \"tcp\" (from language {}, {})", lang.name, lang.origin)
    };
    if lang.protocol != Protocol::Http {
        return Some(format!(
            "{at}: {given} is only for language=http groups (programs that serve HTTP on a port); language={} speaks the {} protocol over the group's Unix socket: remove listen=tcp",
            g.language,
            lang.protocol.name()
        ));
    }
    let p = g.processes;
    if (p.min, p.max) != (1, 1) {
        let given_processes = if p.min == p.max { p.min.to_string() } else { format!("{}-{}", p.min, p.max) };
        return Some(format!(
            "{at}: processes={given_processes} is not possible with {given}: each generation runs one program on a port of its own (the program binds it, so it cannot be shared out); use processes=1 and let the program run several processes on PORT itself (Node's cluster, gunicorn --workers, Tomcat's threads), or use listen=unix, where every process accepts on the group's socket"
        ));
    }
    if who.uid == apache_user.uid {
        let user = match &g.user {
            Some(u) => format!("user={}", u.name),
            None => "no user=".to_string(),
        };
        return Some(format!(
            "{at}: {given} with {user} runs the program as Apache's own user {} (uid {}): code in any Apache child (mod_php, CGI scripts) has that uid too, so it could bind the group's port whenever the program is not listening, or share it with SO_REUSEPORT, and receive the site's requests; give the group its own user= (a user nothing else runs as, e.g. useradd --system NAME), or use listen=unix",
            apache_user.user, apache_user.uid
        ));
    }
    None
}

/// The identity a group's workers run as.
pub fn group_identity(g: &GroupConfig, apache_user: &Identity) -> Identity {
    let (name, uid, gid) = match &g.user {
        Some(u) => (u.name.as_str(), u.uid, u.gid),
        None => (apache_user.user.as_str(), apache_user.uid, apache_user.gid),
    };
    Identity::new(name, uid, g.group.as_ref().map_or(gid, |(_, gid)| *gid))
}

fn check_group(g: &GroupConfig, table: &BTreeMap<String, Language>, apache_user: &Identity) -> Vec<String> {
    let mut errors = Vec::new();
    let at = format!("LanguageGroup {} (at {})", g.name, g.declared_at);
    let Some(lang) = table.get(&g.language) else {
        let known: Vec<&str> = table.keys().map(String::as_str).collect();
        return vec![format!(
            "{at}: unknown language={}: known languages are {} (define more with ProcdLanguages FILE.toml)",
            g.language,
            known.join(", ")
        )];
    };
    let who = group_identity(g, apache_user);
    if who.gid == 0 {
        errors.push(format!(
            "{at}: user {} has root's group (gid 0) as its primary group: groups never run with gid 0; name another group with group=",
            who.user
        ));
    }
    if let (true, Some(why)) = (g.threads > 1, lang.one_request_at_a_time) {
        errors.push(format!(
            "{at}: threads={} is not possible for language={}: {why}; threads=1 is allowed: use processes= to serve more requests at once (e.g. processes={})",
            g.threads, g.language, g.threads
        ));
    } else if g.threads > 1 && !lang.protocol.allows_threads() {
        errors.push(format!(
            "{at}: threads={} is not possible for language={}: its workers ({} protocol) serve one request at a time; use processes= to serve more at once",
            g.threads,
            g.language,
            lang.protocol.name()
        ));
    }

    if g.intake_gil == Some(true) && lang.loader.is_none_or(|l| l.file != "procd_wsgi.py") {
        errors.push(format!(
            "{at}: intake=gil is not possible for language={}: only the Python (WSGI) loader takes requests that way; remove intake= or use intake=threads",
            g.language
        ));
    }
    errors.extend(listen_error(g, lang, &who, apache_user, &at));

    match g.command.as_ref().or(lang.command.as_ref()).and_then(|c| c.first()) {
        Some(_) if lang.protocol == Protocol::Cgi => errors.push(format!(
            "{at}: language={} takes no command=: mod_procd's own launcher runs each script, and a script's #! line names its interpreter",
            g.language
        )),
        None if lang.protocol == Protocol::Http => errors.push(format!(
            "{at}: language={} needs command=, the program that serves HTTP on the group's socket (e.g. command=\"/usr/bin/node /srv/app/server.js\")",
            g.language
        )),
        None => {}
        Some(program) => match find_program(program) {
            None => {
                let how = match (&g.command, &lang.package) {
                    (None, Some(pkg)) => format!("install the Debian package {pkg} (apt-get install {pkg}), or name the program with command="),
                    (None, None) => format!("install it, or fix the command of language {} ({})", lang.name, lang.origin),
                    (Some(_), _) => "give the full path of an installed program".to_string(),
                };
                let given = if g.command.is_some() { "command=" } else { "the language's command " };
                errors.push(format!(
                    "{at}: {given}{program} is not installed (looked for it {}); {how}",
                    if program.contains('/') { "at that path".to_string() } else { format!("in {WORKER_PATH}") }
                ));
            }
            Some(path) => {
                if let Err(why) = check_access(&path, &who, Need::Execute) {
                    errors.push(format!("{at}: program {program} cannot be run as the group's user: {why}"));
                }
            }
        },
    }

    if let Some(home) = &g.home {
        if let Err(why) = check_access(home, &who, Need::Directory) {
            errors.push(format!("{at}: home={}: {why}", home.display()));
        }
    }
    if let Some(app) = &g.app {
        if let Err(why) = check_access(app, &who, Need::ReadFile) {
            errors.push(format!("{at}: app={}: {why}", app.display()));
        }
    }
    for (option, path) in [("error-log", &g.error_log), ("restart-file", &g.restart_file)] {
        let Some(path) = path else { continue };
        let parent = path.parent().unwrap_or(Path::new("/"));
        if !parent.is_dir() {
            errors.push(format!(
                "{at}: {option}={}: the directory {} does not exist; create it first",
                path.display(),
                parent.display()
            ));
        } else if option == "error-log" && !crate::config::access::only_root_writes(parent) {
            // Users other than root can change what this path names: the
            // manager opens it as the group's user, who must be able to.
            if let Err(why) = crate::config::access::check_appendable(path, &who) {
                errors.push(format!(
                    "{at}: error-log={}: users other than root can write to {}, so the log is opened as the group's user, and {why}; use a directory only root can write, or let the user write the log",
                    path.display(),
                    parent.display()
                ));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DirectiveContext, Origin};

    fn ctx(line: u32) -> DirectiveContext {
        DirectiveContext {
            directory: None,
            origin: Origin { file: "t.conf".into(), line },
            in_vhost: false,
            in_section: false,
            server_root: "/etc/apache2".into(),
        }
    }

    fn nobody() -> Identity {
        Identity::new("nobody", 65534, 65534)
    }

    fn run(main: &ServerConfig, vhosts: &[ServerConfig]) -> Vec<String> {
        let merged: Vec<ServerConfig> = vhosts.iter().map(|v| ServerConfig::merge(main, v)).collect();
        let mut views =
            vec![ServerView { label: "the main server".into(), config: main, error_log: None, document_root: None }];
        views.extend(merged.iter().map(|c| ServerView {
            label: "virtual host v".into(),
            config: c,
            error_log: None,
            document_root: None,
        }));
        check_configuration(&views, &nobody())
    }

    #[test]
    fn listen_tcp_is_for_one_http_process() {
        let mut main = ServerConfig::default();
        main.apply("LanguageGroup", "ok language=http listen=tcp user=daemon command=/bin/sh", &ctx(1)).unwrap();
        main.apply("LanguageGroup", "py language=python listen=tcp", &ctx(2)).unwrap();
        main.apply("LanguageGroup", "many language=http listen=tcp processes=2-4 command=/bin/sh", &ctx(3)).unwrap();
        main.apply("LanguageGroup", "many2 language=http listen=unix processes=2-4 command=/bin/sh", &ctx(4)).unwrap();
        let errors = run(&main, &[]);
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors[0].starts_with("LanguageGroup py (at t.conf:2): listen=tcp is only for language=http groups"));
        assert!(errors[0].contains("language=python speaks the procd protocol"), "{}", errors[0]);
        assert!(
            errors[1].starts_with("LanguageGroup many (at t.conf:3): processes=2-4 is not possible with listen=tcp")
        );
        assert!(errors[1].contains("use processes=1"), "{}", errors[1]);
    }

    #[test]
    fn every_tcp_group_is_warned_about_direct_connections() {
        let mut main = ServerConfig::default();
        main.apply("LanguageGroup", "port language=http listen=tcp user=daemon command=/bin/sh", &ctx(1)).unwrap();
        main.apply("LanguageGroup", "sock language=http user=daemon command=/bin/sh", &ctx(2)).unwrap();
        let views =
            [ServerView { label: "the main server".into(), config: &main, error_log: None, document_root: None }];
        let lines: Vec<String> = warnings(&views, &nobody()).into_iter().filter(|l| l.contains("listen=tcp")).collect();
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(lines[0].starts_with("LanguageGroup port (at t.conf:1) uses listen=tcp: any local user"), "{lines:?}");
        for said in
            ["bypassing Apache's access rules", "X-Forwarded-*", "Use listen=unix where the program supports it"]
        {
            assert!(lines[0].contains(said), "no {said:?} in {}", lines[0]);
        }
    }

    /// A port is the group's only while no other process has its uid:
    /// Apache's user is every Apache child's (and mod_php's).
    #[test]
    fn listen_tcp_never_as_apaches_user() {
        let mut main = ServerConfig::default();
        main.apply("LanguageGroup", "own language=http listen=tcp user=daemon command=/bin/sh", &ctx(1)).unwrap();
        main.apply("LanguageGroup", "none language=http listen=tcp command=/bin/sh", &ctx(2)).unwrap();
        main.apply("LanguageGroup", "same language=http listen=tcp user=nobody command=/bin/sh", &ctx(3)).unwrap();
        main.apply("LanguageGroup", "unix language=http command=/bin/sh", &ctx(4)).unwrap();
        let errors = run(&main, &[]);
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[0].starts_with("LanguageGroup none (at t.conf:2): listen=tcp with no user= runs the program as Apache's own user nobody (uid 65534)"),
            "{}",
            errors[0]
        );
        assert!(errors[0].contains("give the group its own user="), "{}", errors[0]);
        assert!(
            errors[1].starts_with(
                "LanguageGroup same (at t.conf:3): listen=tcp with user=nobody runs the program as Apache's own user"
            ),
            "{}",
            errors[1]
        );
    }

    #[test]
    fn unknown_language_and_missing_program() {
        let mut main = ServerConfig::default();
        main.apply("LanguageGroup", "a language=cobol", &ctx(1)).unwrap();
        main.apply("LanguageGroup", "b language=python command=/no/such/python", &ctx(2)).unwrap();
        main.apply("LanguageGroup", "c language=http", &ctx(3)).unwrap();
        main.apply("LanguageGroup", "d language=cgi threads=4", &ctx(4)).unwrap();
        main.apply("LanguageGroup", "e language=cgi command=/usr/bin/perl", &ctx(5)).unwrap();
        let errors = run(&main, &[]);
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(
            errors[4].contains("(at t.conf:5): language=cgi takes no command=") && errors[4].contains("#!"),
            "{}",
            errors[4]
        );
        assert!(errors[0].contains("unknown language=cobol: known languages are cgi, http"), "{}", errors[0]);
        assert!(errors[1].contains("command=/no/such/python is not installed"), "{}", errors[1]);
        assert!(errors[2].contains("needs command="), "{}", errors[2]);
        assert!(errors[3].contains("threads=4 is not possible"), "{}", errors[3]);
    }

    #[test]
    fn intake_gil_with_one_thread_is_warned_about() {
        let mut main = ServerConfig::default();
        main.apply("LanguageGroup", "one language=python threads=1 intake=gil", &ctx(1)).unwrap();
        main.apply("LanguageGroup", "many language=python threads=8 intake=gil", &ctx(2)).unwrap();
        // gil by default: no warning for what the administrator did not write.
        main.apply("LanguageGroup", "plain language=python threads=1", &ctx(3)).unwrap();
        let views =
            [ServerView { label: "the main server".into(), config: &main, error_log: None, document_root: None }];
        let lines: Vec<String> = warnings(&views, &nobody()).into_iter().filter(|l| l.contains("intake=gil")).collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("LanguageGroup one (at t.conf:1) has intake=gil with threads=1"), "{lines:?}");
    }

    #[test]
    fn intake_gil_is_for_python_groups() {
        let mut main = ServerConfig::default();
        main.apply("LanguageGroup", "py language=python threads=8 intake=gil", &ctx(1)).unwrap();
        main.apply("LanguageGroup", "rb language=ruby threads=4 intake=gil", &ctx(2)).unwrap();
        main.apply("LanguageGroup", "rb2 language=ruby threads=4 intake=threads", &ctx(3)).unwrap();
        main.apply("LanguageGroup", "rb3 language=ruby threads=4", &ctx(4)).unwrap();
        let errors: Vec<String> = run(&main, &[]).into_iter().filter(|e| e.contains("intake=")).collect();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].contains("LanguageGroup rb (at t.conf:2): intake=gil is not possible for language=ruby")
                && errors[0].contains("intake=threads"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn perl_groups_serve_with_processes_not_threads() {
        let mut main = ServerConfig::default();
        main.apply("LanguageGroup", "pl language=perl threads=4", &ctx(1)).unwrap();
        main.apply("LanguageGroup", "ok language=perl processes=4 threads=1", &ctx(2)).unwrap();
        main.apply("LanguageGroup", "rb language=ruby threads=4", &ctx(3)).unwrap();
        let errors: Vec<String> = run(&main, &[]).into_iter().filter(|e| e.contains("threads=")).collect();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].contains("LanguageGroup pl (at t.conf:1): threads=4 is not possible for language=perl")
                && errors[0].contains("threads=1 is allowed")
                && errors[0].contains("processes="),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn references_must_be_visible() {
        let mut main = ServerConfig::default();
        main.apply("LanguageGroup", "shared language=cgi", &ctx(1)).unwrap();
        let mut v1 = ServerConfig::default();
        v1.apply("LanguageGroup", "mine language=cgi", &ctx(5)).unwrap();
        v1.apply("LanguageMount", "/s shared", &ctx(6)).unwrap();
        let mut v2 = ServerConfig::default();
        v2.apply("LanguageMount", "/m mine", &ctx(9)).unwrap();
        v2.apply("LanguageMount", "/n nowhere", &ctx(10)).unwrap();
        let errors = run(&main, &[v1, v2]);
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors[0].contains("group shared has no app="), "{}", errors[0]);
        assert!(
            errors[1].contains("LanguageMount /m mine (at t.conf:9)") && errors[1].contains("declared at t.conf:5"),
            "{}",
            errors[1]
        );
        assert!(errors[2].contains("no LanguageGroup named \"nowhere\""), "{}", errors[2]);
    }

    #[test]
    fn duplicate_names_across_vhosts() {
        let main = ServerConfig::default();
        let mut v1 = ServerConfig::default();
        v1.apply("LanguageGroup", "x language=cgi", &ctx(1)).unwrap();
        let mut v2 = ServerConfig::default();
        v2.apply("LanguageGroup", "x language=cgi", &ctx(2)).unwrap();
        let errors = run(&main, &[v1, v2]);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].contains("already declared at t.conf:1"), "{}", errors[0]);
    }

    #[test]
    fn files_must_be_reachable_by_the_user() {
        let dir = std::env::temp_dir().join(format!("procd-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let app = dir.join("app.wsgi");
        std::fs::write(&app, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut main = ServerConfig::default();
        let line = format!("p language=cgi user=nobody app={} home=/no/such/dir", app.display());
        main.apply("LanguageGroup", &line, &ctx(1)).unwrap();
        let errors = run(&main, &[]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors[0].contains("home=/no/such/dir: /no/such/dir does not exist"), "{}", errors[0]);
        assert!(errors[1].contains("user nobody (uid 65534) cannot read"), "{}", errors[1]);
    }
    #[test]
    fn a_runtime_dir_under_a_directory_others_can_change_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("procd-rundir-{}", std::process::id()));
        let shared = base.join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        let safe = nix::unistd::geteuid().is_root();
        // Not created yet, two levels down: the nearest existing directory counts.
        assert_eq!(runtime_dir_error(&shared.join("a/b/procd")).is_none(), safe);
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = runtime_dir_error(&shared.join("procd")).expect("a world-writable parent is refused");
        assert!(e.starts_with("ProcdRuntimeDir ") && e.contains(&shared.display().to_string()), "{e}");
        assert!(runtime_dir_error(&shared.join("a/b/procd")).is_some());
        // Sticky, as /tmp: others may add names but not replace root's.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(runtime_dir_error(&shared.join("procd")).is_none(), safe);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
