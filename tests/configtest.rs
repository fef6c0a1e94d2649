//! `apache2 -t` with the module loaded: every kind of bad input is rejected
//! with a message that names the directive, the value and what is allowed,
//! and good configurations pass.

mod common;
use common::{Apache, Mpm, ensure_user};

/// Runs configtest on `conf`; returns the output if it failed as expected.
fn rejected(name: &str, conf: &str, expect: &[&str]) -> Result<(), String> {
    let a = Apache::new(name, Mpm::Event, conf);
    let (ok, out) = a.configtest();
    if ok {
        return Err(format!("[{name}] configtest accepted:\n{conf}\n"));
    }
    let missing: Vec<&&str> = expect.iter().filter(|e| !out.contains(**e)).collect();
    if !missing.is_empty() {
        return Err(format!("[{name}] output lacks {missing:?}:\n{out}\nfor:\n{conf}\n"));
    }
    Ok(())
}

fn run_cases(cases: &[(String, String, Vec<&str>)]) {
    let failures: Vec<String> = cases.iter().filter_map(|(n, c, e)| rejected(n, c, e).err()).collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

fn case(name: &str, conf: &str, expect: &[&'static str]) -> (String, String, Vec<&'static str>) {
    (name.to_string(), conf.to_string(), expect.to_vec())
}

#[test]
fn language_group_option_errors() {
    let cases = [
        case(
            "unknown-option",
            "LanguageGroup a language=python proceses=2",
            &["LanguageGroup a", "unknown option \"proceses\"", "did you mean processes=?", "allowed options are"],
        ),
        case(
            "not-a-number",
            "LanguageGroup a language=python threads=lots",
            &["LanguageGroup a: invalid threads=lots", "1 to 1024"],
        ),
        case(
            "out-of-range",
            "LanguageGroup a language=python threads=5000",
            &["invalid threads=5000", "out of range: allowed is 1 to 1024"],
        ),
        case("bad-range", "LanguageGroup a language=python processes=8-2", &["invalid processes=8-2", "MIN <= MAX"]),
        case("bad-size", "LanguageGroup a language=python memory-limit=12Q", &["invalid memory-limit=12Q", "512M"]),
        case("tiny-size", "LanguageGroup a language=python memory-limit=10K", &["invalid memory-limit=10K", "from 1M"]),
        case(
            "bad-duration",
            "LanguageGroup a language=python request-timeout=soon",
            &["invalid request-timeout=soon", "30s"],
        ),
        case(
            "zero-startup",
            "LanguageGroup a language=python startup-timeout=0",
            &["invalid startup-timeout=0", "from 1s"],
        ),
        case("no-language", "LanguageGroup a processes=2", &["LanguageGroup a: language= is required"]),
        case(
            "listen-udp",
            "LanguageGroup a language=http listen=udp command=/bin/sh",
            &["LanguageGroup a: invalid listen=udp", "expected unix", "or tcp (a loopback port"],
        ),
        case(
            "listen-tcp-python",
            "LanguageGroup a language=python listen=tcp",
            &["LanguageGroup a (at", "listen=tcp is only for language=http groups", "speaks the procd protocol"],
        ),
        case(
            "listen-tcp-processes",
            "LanguageGroup a language=http listen=tcp processes=2 command=/bin/sh user=daemon",
            &["processes=2 is not possible with listen=tcp", "use processes=1"],
        ),
        // Apache's user is every Apache child's (and mod_php's): it could
        // take over the port.
        case(
            "listen-tcp-apache-user",
            "LanguageGroup a language=http listen=tcp command=/bin/sh",
            &[
                "LanguageGroup a (at",
                "listen=tcp with no user= runs the program as Apache's own user www-data",
                "give the group its own user=",
            ],
        ),
        case(
            "listen-tcp-www-data",
            "LanguageGroup a language=http listen=tcp command=/bin/sh user=www-data",
            &["listen=tcp with user=www-data runs the program as Apache's own user www-data", "own user="],
        ),
        case(
            "unknown-language",
            "LanguageGroup a language=cobol",
            &[
                "LanguageGroup a (at",
                "unknown language=cobol",
                "known languages are cgi, http, perl, php, python, ruby",
            ],
        ),
        case(
            "no-such-user",
            "LanguageGroup a language=python user=no-such-user-procd",
            &["invalid user=no-such-user-procd", "no user \"no-such-user-procd\""],
        ),
        case(
            "no-such-group",
            "LanguageGroup a language=python group=no-such-group-procd",
            &["invalid group=no-such-group-procd", "no group"],
        ),
        case("root-user", "LanguageGroup a language=python user=root", &["invalid user=root", "never run as root"]),
        case("root-uid", "LanguageGroup a language=python user=#0", &["invalid user=#0", "never run as root"]),
        case("duplicate-option", "LanguageGroup a language=python threads=2 threads=4", &["threads= is given twice"]),
        case("bare-word", "LanguageGroup a language=python verbose", &["\"verbose\" is not an option", "key=value"]),
        case("bad-env", "LanguageGroup a language=python env=NOVALUE", &["invalid env=NOVALUE", "env=NAME=VALUE"]),
        case(
            "unbalanced-quote",
            "LanguageGroup a language=python \"command=/usr/bin/python3",
            &["unbalanced \" quote"],
        ),
        case("no-args", "LanguageGroup", &["LanguageGroup needs a name"]),
        case("bad-name", "LanguageGroup ../x language=python", &["not a valid group name"]),
        case(
            "threads-for-php",
            "LanguageGroup a language=cgi threads=4",
            &["threads=4 is not possible for language=cgi"],
        ),
        case("http-needs-command", "LanguageGroup a language=http", &["language=http needs command="]),
        case(
            "wrong-context",
            "<Location /x>\nLanguageGroup a language=python\n</Location>",
            &["LanguageGroup not allowed in <Location> context"],
        ),
        case(
            "duplicate-name",
            "LanguageGroup a language=python\nLanguageGroup a language=cgi",
            &["LanguageGroup a: a group of that name is already declared at"],
        ),
        case(
            "duplicate-across-vhosts",
            "<VirtualHost 127.0.0.1:*>\nServerName one\nLanguageGroup a language=cgi\n</VirtualHost>\n<VirtualHost 127.0.0.1:*>\nServerName two\nLanguageGroup a language=cgi\n</VirtualHost>",
            &["LanguageGroup a (at", "already declared at", "unique across all virtual hosts"],
        ),
    ];
    run_cases(&cases);
}

#[test]
fn programs_and_files_are_checked_for_the_groups_user() {
    ensure_user("procd-test-a");
    let dir = std::path::PathBuf::from(format!("/tmp/procd-files-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("private")).unwrap();
    std::fs::create_dir_all(dir.join("public")).unwrap();
    std::fs::write(dir.join("private/app.wsgi"), "application = None\n").unwrap();
    std::fs::write(dir.join("public/app.wsgi"), "application = None\n").unwrap();
    let _ = std::process::Command::new("chmod").args(["644", dir.join("public/app.wsgi").to_str().unwrap()]).status();
    std::fs::write(
        dir.join("langs.toml"),
        "[language.missing]\nprotocol = \"procd\"\ncommand = \"procd-no-such-interpreter --flag\"\npackage = \"procd-interp-pkg\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("broken.toml"), "[language.node]\nprotocol = \"http\"\ncommand = 5\n").unwrap();
    let _ = std::process::Command::new("chmod").args(["755", dir.to_str().unwrap()]).status();
    let _ = std::process::Command::new("chmod").args(["700", dir.join("private").to_str().unwrap()]).status();
    let _ = std::process::Command::new("chmod").args(["755", dir.join("public").to_str().unwrap()]).status();
    let d = dir.display();
    let cases = [
        case(
            "missing-program",
            "LanguageGroup a language=python command=/no/such/python3",
            &["command=/no/such/python3 is not installed"],
        ),
        case(
            "missing-interpreter-names-package",
            &format!("ProcdLanguages {d}/langs.toml\nLanguageGroup a language=missing"),
            &["procd-no-such-interpreter is not installed", "apt-get install procd-interp-pkg"],
        ),
        case(
            "not-executable",
            &format!("LanguageGroup a language=python command={d}/public/app.wsgi"),
            &["program", "app.wsgi cannot be run as the group's user", "cannot execute"],
        ),
        case(
            "app-missing",
            "LanguageGroup a language=python app=/no/such/app.wsgi",
            &["app=/no/such/app.wsgi: /no/such/app.wsgi does not exist"],
        ),
        case(
            "app-unreadable-for-user",
            &format!("LanguageGroup a language=python user=procd-test-a app={d}/private/app.wsgi"),
            &["app=", "user procd-test-a", "cannot enter", "mode 0700"],
        ),
        case(
            "home-missing",
            "LanguageGroup a language=python home=/no/such/home",
            &["home=/no/such/home: /no/such/home does not exist"],
        ),
        case("home-not-dir", "LanguageGroup a language=python home=/etc/hostname", &["home=/etc/hostname", "not one"]),
        case(
            "languages-unreadable",
            "ProcdLanguages /no/such/langs.toml",
            &["ProcdLanguages cannot read /no/such/langs.toml"],
        ),
        case(
            "languages-malformed",
            &format!("ProcdLanguages {d}/broken.toml"),
            &["ProcdLanguages", "broken.toml: line 3, column 11", "invalid type"],
        ),
        case(
            "languages-in-vhost",
            &format!("<VirtualHost 127.0.0.1:*>\nProcdLanguages {d}/langs.toml\n</VirtualHost>"),
            &["ProcdLanguages is a server-wide setting"],
        ),
        case(
            "error-log-dir-missing",
            "LanguageGroup a language=cgi error-log=/no/such/dir/a.log",
            &["error-log=/no/such/dir/a.log", "does not exist"],
        ),
    ];
    run_cases(&cases);
    // A readable app for the same user passes.
    let ok = Apache::new(
        "files-ok",
        Mpm::Event,
        &format!(
            "LanguageGroup a language=python user=procd-test-a app={d}/public/app.wsgi home={d}/public\nLanguageMount /a a"
        ),
    );
    let (good, out) = ok.configtest();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(good, "{out}");
}

#[test]
fn handler_mount_and_rewrite_errors() {
    let cases = [
        case(
            "handler-undeclared",
            "LanguageHandler ghost .php",
            &["LanguageHandler .php ghost", "no LanguageGroup named \"ghost\""],
        ),
        case(
            "mount-undeclared",
            "LanguageMount /api ghost",
            &["LanguageMount /api ghost", "no LanguageGroup named \"ghost\""],
        ),
        case(
            "ext-without-dot",
            "LanguageGroup a language=cgi\nLanguageHandler a php",
            &["LanguageHandler a", "write it with its leading dot, as \".php\""],
        ),
        case("handler-no-ext", "LanguageGroup a language=cgi\nLanguageHandler a", &["name at least one extension"]),
        case(
            "mount-no-slash",
            "LanguageGroup a language=cgi app=/etc/hostname\nLanguageMount api a",
            &["LanguageMount api", "must start with '/'"],
        ),
        case(
            "mount-twice",
            "LanguageGroup a language=cgi app=/etc/hostname\nLanguageMount /api a\nLanguageMount /api/ a",
            &["already mounted"],
        ),
        case(
            "mount-needs-app",
            "LanguageGroup a language=python\nLanguageMount /api a",
            &["LanguageMount /api a", "has no app="],
        ),
        case(
            "mount-in-location",
            "<Location /x>\nLanguageMount /api a\n</Location>",
            &["LanguageMount not allowed in <Location> context"],
        ),
        case(
            "other-vhosts-group",
            "<VirtualHost 127.0.0.1:*>\nServerName one\nLanguageGroup mine language=cgi\n</VirtualHost>\n<VirtualHost 127.0.0.1:*>\nServerName two\nLanguageHandler mine .cgi\n</VirtualHost>",
            &["LanguageHandler .cgi mine", "the virtual host two", "a scope this one cannot use"],
        ),
        case(
            "location-handler-undeclared",
            "<Location /x>\nLanguageHandler ghost .py\n</Location>",
            &["LanguageHandler .py ghost", "no LanguageGroup named \"ghost\""],
        ),
        case("rewrite-bad-from", "LinkRewrite ftp://x/ /y/", &["LinkRewrite: FROM \"ftp://x/\" is not a URL prefix"]),
        case("rewrite-one-arg", "LinkRewrite http://x/", &["LinkRewrite takes two arguments"]),
        case("rewrite-slash-mismatch", "LinkRewrite http://x:81/ /legacy", &["write TO as /legacy/"]),
        case("rewrite-css-value", "LinkRewriteCSS yes", &["LinkRewriteCSS \"yes\": expected On or Off"]),
        case(
            "runtime-dir-in-vhost",
            "<VirtualHost 127.0.0.1:*>\nProcdRuntimeDir /run/x\n</VirtualHost>",
            &["ProcdRuntimeDir is a server-wide setting"],
        ),
        case("runtime-dir-two-args", "ProcdRuntimeDir /a /b", &["ProcdRuntimeDir takes one path"]),
    ];
    run_cases(&cases);
}

/// Garbage never crashes or hangs apache2 -t: it answers, with an error.
#[test]
fn hostile_input_never_crashes_configtest() {
    let long = "x".repeat(100_000);
    let inputs = [
        format!("LanguageGroup {long} language=python"),
        format!("LanguageGroup a language=python env=A={long}"),
        "LanguageGroup a language=python processes=99999999999999999999-1".to_string(),
        "LanguageGroup a language=python memory-limit=18446744073709551615T".to_string(),
        "LanguageGroup a language=python request-timeout=18446744073709551615d".to_string(),
        "LanguageGroup é language=pythön user=ü".to_string(),
        "LanguageGroup a language=python \"\"=\"\" ===".to_string(),
        "LanguageHandler a . .. ...".to_string(),
        "LinkRewrite // //".to_string(),
        "LanguageMount / /".to_string(),
    ];
    for (i, input) in inputs.iter().enumerate() {
        let a = Apache::new(&format!("hostile{i}"), Mpm::Event, input);
        let (status, stderr) = configtest_within(&a, std::time::Duration::from_secs(10))
            .unwrap_or_else(|| panic!("input {i}: apache2 -t still running after 10 s (killed)"));
        // 0 (valid, e.g. a long env value) or 1 (rejected); never a signal.
        assert!(matches!(status.code(), Some(0 | 1)), "input {i}: apache2 -t ended with {status:?}\n{stderr}");
    }
}

/// `apache2 -t` on `a`'s config, killed (by its pid) if it runs past
/// `limit`: its status and stderr, or None if it had to be killed.
fn configtest_within(a: &Apache, limit: std::time::Duration) -> Option<(std::process::ExitStatus, String)> {
    use std::io::Read;
    let mut child = std::process::Command::new(common::APACHE)
        .arg("-t")
        .arg("-f")
        .arg(&a.conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run apache2 -t");
    // Read stderr on a thread, so a full pipe cannot stall the child.
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for apache2 -t") {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap_or_default();
    status.map(|s| (s, stderr))
}

/// A listen=tcp group passes with a warning: its port is open to every
/// local user, past Apache's access rules.
#[test]
fn listen_tcp_is_warned_about() {
    ensure_user("procd-test-a");
    let a = Apache::new(
        "listen-tcp-warning",
        Mpm::Event,
        "LanguageGroup a language=http listen=tcp command=/bin/sh user=procd-test-a\nLanguageMount /a a",
    );
    let (ok, out) = a.configtest();
    assert!(ok, "{out}");
    for expected in [
        "PD0103",
        "LanguageGroup a (at",
        "uses listen=tcp: any local user",
        "bypassing Apache's access rules",
        "X-Forwarded-*",
        "Use listen=unix where the program supports it",
    ] {
        assert!(out.contains(expected), "no {expected:?} in:\n{out}");
    }
}

/// intake=gil with threads=1 passes with a warning: it changes nothing.
#[test]
fn intake_gil_with_one_thread_is_warned_about() {
    ensure_user("procd-test-a");
    let a = Apache::new(
        "intake-one-thread",
        Mpm::Event,
        "LanguageGroup a language=python threads=1 intake=gil user=procd-test-a",
    );
    let (ok, out) = a.configtest();
    assert!(ok, "{out}");
    for expected in ["PD0103", "LanguageGroup a (at", "has intake=gil with threads=1", "changes nothing"] {
        assert!(out.contains(expected), "no {expected:?} in:\n{out}");
    }
}

/// The shipped example vhost (every directive) passes configtest.
#[test]
fn shipped_example_passes_configtest() {
    ensure_user("procd-shop");
    ensure_user("procd-blog");
    let root = env!("CARGO_MANIFEST_DIR");
    let example = std::fs::read_to_string(format!("{root}/apache-conf/procd-example-vhost.conf")).unwrap();
    // Its status page says `Require local`: mod_authz_host, which Debian
    // enables by default.
    let conf = format!(
        "LoadModule authz_host_module /usr/lib/apache2/modules/mod_authz_host.so\n{}",
        example.replace("/srv/procd-example", &format!("{root}/apache-conf/example-site"))
    );
    let a = Apache::new("example", Mpm::Event, &conf);
    let (ok, out) = a.configtest();
    assert!(ok && out.contains("Syntax OK"), "{out}");
}
