//! Language definitions: data, not code.
//!
//! A language says which program runs its workers, which protocol Apache
//! speaks to them and which file extensions it usually serves. The built-in
//! ones can be overridden, and new ones added, with `ProcdLanguages FILE.toml`:
//!
//! ```toml
//! [language.node]
//! protocol = "http"
//! command = "node"
//! package = "nodejs"        # Debian package named in "not installed" errors
//!
//! [language.python]
//! command = "/opt/python3.12/bin/python3"   # override one field of a built-in
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// How Apache talks to a group's workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// mod_procd's own framed protocol, spoken by the shipped loaders.
    Procd,
    /// FastCGI (php-cgi).
    Fastcgi,
    /// One exec per request, as the group's user.
    Cgi,
    /// HTTP/1.1 over the group's Unix socket.
    Http,
}

/// Where a group's programs take their connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Listen {
    /// The group's Unix socket, created by the manager and passed as fd 3
    /// (fd 0 for FastCGI): every protocol.
    #[default]
    Unix,
    /// A loopback TCP port the manager picks for each generation and passes
    /// in `PORT`; the program binds it (`http` only: Java servlet
    /// containers, frameworks that follow the `PORT` convention).
    Tcp,
}

impl Listen {
    /// `listen=` as written in `LanguageGroup`.
    pub fn parse(value: &str) -> Result<Listen, String> {
        match value {
            "unix" => Ok(Listen::Unix),
            "tcp" => Ok(Listen::Tcp),
            _ => Err(LISTEN_ALLOWED.to_string()),
        }
    }
}

/// What `listen=` accepts, for error messages.
pub const LISTEN_ALLOWED: &str = "expected unix (the group's Unix socket, the default) or tcp (a loopback port the manager picks for each generation and passes in PORT; language=http only)";

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Procd => "procd",
            Protocol::Fastcgi => "fastcgi",
            Protocol::Cgi => "cgi",
            Protocol::Http => "http",
        }
    }

    /// Whether one worker process can serve several requests at once.
    pub fn allows_threads(self) -> bool {
        matches!(self, Protocol::Procd)
    }
}

/// One language, built in or from a `ProcdLanguages` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Language {
    pub name: String,
    pub protocol: Protocol,
    /// Program and arguments; `None` when each group must give `command=`
    /// (http) or when requests exec the script itself (cgi).
    pub command: Option<Vec<String>>,
    pub extensions: Vec<String>,
    /// The Debian package that provides `command`, for error messages.
    pub package: Option<String>,
    /// Where it was defined: "built in" or "FILE".
    pub origin: String,
    /// The loader shipped inside the module that `command` runs (built-in
    /// languages of the procd protocol).
    pub loader: Option<Loader>,
    /// Why a worker of this language serves one request at a time whatever
    /// the protocol allows (perl: no threads fit for serving), or `None`.
    pub one_request_at_a_time: Option<&'static str>,
    /// A library the loader needs beside the interpreter, checked by
    /// `apachectl configtest` when the group runs the language's own command.
    pub library: Option<Library>,
    /// Arguments placed right after the program (the language's, or the
    /// one `command=` names), before `command=`'s own arguments, which can
    /// therefore override them (php: `-d display_errors=0 ...`; a later
    /// `-d` wins). Built-in languages only.
    pub defaults: &'static [&'static str],
    /// A PHP file shipped inside the module that php-cgi runs before every
    /// script (`auto_prepend_file`): the guard that runs only what Apache
    /// maps to the group (built-in php only).
    pub guard: Option<Loader>,
    /// Where its groups listen unless `listen=` says otherwise.
    pub listen: Listen,
}

/// A library a loader needs: `probe` are arguments for the interpreter
/// that exit 0 when it is there (e.g. `-e require 'rack'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Library {
    pub name: &'static str,
    pub probe: &'static [&'static str],
    pub package: &'static str,
}

/// php-cgi's settings unless the group's `command=` says otherwise
/// (`-d display_errors=1`): errors go to the log (FCGI_STDERR, hence
/// Apache's error log), never into the page.
pub const PHP_DEFAULTS: &[&str] =
    &["-d", "display_errors=0", "-d", "display_startup_errors=0", "-d", "log_errors=1", "-d", "html_errors=0"];

/// A loader: a small program in the language's own tongue, shipped inside
/// the .so, written by the manager to `RUNTIME/loaders/FILE` and run by the
/// language's interpreter (or `command=`), speaking PROTOCOL.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loader {
    pub file: &'static str,
    pub source: &'static str,
}

fn builtin(name: &str, protocol: Protocol, command: Option<&str>, exts: &[&str], package: Option<&str>) -> Language {
    Language {
        name: name.into(),
        protocol,
        command: command.map(|c| vec![c.to_string()]),
        extensions: exts.iter().map(|e| e.to_string()).collect(),
        package: package.map(str::to_string),
        origin: "built in".into(),
        loader: None,
        one_request_at_a_time: None,
        library: None,
        defaults: &[],
        guard: None,
        listen: Listen::Unix,
    }
}

/// Adding a language on an existing protocol: its loader file under
/// src/loaders/, one line here, and a test file.
const PYTHON_LOADER: Loader = Loader { file: "procd_wsgi.py", source: include_str!("../loaders/procd_wsgi.py") };
const RUBY_LOADER: Loader = Loader { file: "procd_rack.rb", source: include_str!("../loaders/procd_rack.rb") };
const PERL_LOADER: Loader = Loader { file: "procd_psgi.pl", source: include_str!("../loaders/procd_psgi.pl") };
/// The CGI launcher: not a language's loader but the group's resident
/// program (src/launcher/procd_cgi.rs, built by build.rs), which runs a
/// script per request as the group's user. The manager writes it, from its
/// own build, to `RUNTIME/loaders/` under this name.
pub const CGI_LAUNCHER_FILE: &str = "procd-cgi-launcher";
pub static CGI_LAUNCHER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/procd-cgi-launcher"));

/// php-cgi's guard: see src/loaders/procd_php_guard.php.
const PHP_GUARD: Loader =
    Loader { file: "procd_php_guard.php", source: include_str!("../loaders/procd_php_guard.php") };

/// The loaders (and guards) every built-in language ships, once each.
pub fn shipped_loaders() -> Vec<Loader> {
    builtin_languages().into_iter().flat_map(|l| [l.loader, l.guard]).flatten().collect()
}

/// The languages mod_procd knows without any `ProcdLanguages` file.
pub fn builtin_languages() -> Vec<Language> {
    use Protocol::*;
    vec![
        Language {
            loader: Some(PYTHON_LOADER),
            ..builtin("python", Procd, Some("python3"), &[".wsgi", ".py"], Some("python3"))
        },
        Language {
            loader: Some(RUBY_LOADER),
            library: Some(Library { name: "rack", probe: &["-e", "require 'rack'"], package: "ruby-rack" }),
            ..builtin("ruby", Procd, Some("ruby"), &[".ru"], Some("ruby"))
        },
        Language {
            loader: Some(PERL_LOADER),
            one_request_at_a_time: Some(
                "its PSGI loader serves one request at a time per process (Perl's threads are not fit for serving)",
            ),
            ..builtin("perl", Procd, Some("perl"), &[".psgi"], Some("perl"))
        },
        Language {
            defaults: PHP_DEFAULTS,
            guard: Some(PHP_GUARD),
            ..builtin("php", Fastcgi, Some("php-cgi"), &[".php"], Some("php-cgi"))
        },
        builtin("cgi", Cgi, None, &[".cgi", ".pl", ".sh"], None),
        builtin("http", Http, None, &[], None),
    ]
}

/// The language table in force: built-ins, then each `ProcdLanguages` file in
/// configuration order (a later definition of a field wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LanguageOverrides {
    pub files: Vec<LanguageFile>,
}

/// One parsed `ProcdLanguages` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanguageFile {
    pub path: String,
    pub entries: BTreeMap<String, LanguageEntry>,
}

/// A `[language.NAME]` table; every field optional so that it can override
/// one field of a built-in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanguageEntry {
    pub protocol: Option<Protocol>,
    pub command: Option<String>,
    pub extensions: Option<Vec<String>>,
    pub package: Option<String>,
    /// `"unix"` (default) or `"tcp"` (protocol `http` only).
    pub listen: Option<Listen>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    language: BTreeMap<String, LanguageEntry>,
}

/// Line and column (1-based) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Parses the text of a `ProcdLanguages` file; errors carry line and column.
pub fn parse_language_file(path: &str, text: &str) -> Result<LanguageFile, String> {
    let shape: FileShape = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map(|s| {
                let (l, c) = line_col(text, s.start);
                format!("line {l}, column {c}: ")
            })
            .unwrap_or_default();
        format!("{path}: {at}{}", e.message().trim())
    })?;
    let locate = |name: &str| {
        // Point at the table header of a bad entry; good enough for a human.
        let needle = format!("[language.{name}]");
        text.find(&needle).map_or(String::new(), |off| {
            let (l, c) = line_col(text, off);
            format!("line {l}, column {c}: ")
        })
    };
    for (name, entry) in &shape.language {
        if !valid_name(name) {
            return Err(format!(
                "{path}: {}language name \"{name}\" is not allowed: use letters, digits, '_' and '-'",
                locate(name)
            ));
        }
        if let Some(exts) = &entry.extensions {
            for ext in exts {
                if let Err(why) = check_extension(ext) {
                    return Err(format!("{path}: {}[language.{name}] extensions: {why}", locate(name)));
                }
            }
        }
        if let Some(cmd) = &entry.command {
            if cmd.split_whitespace().next().is_none() {
                return Err(format!("{path}: {}[language.{name}] command is empty", locate(name)));
            }
        }
    }
    Ok(LanguageFile { path: path.to_string(), entries: shape.language })
}

/// Reads and parses a `ProcdLanguages` file.
pub fn load_language_file(path: &Path) -> Result<LanguageFile, String> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    parse_language_file(&shown, &text)
}

impl LanguageOverrides {
    /// Resolves the full language table: built-ins plus every file's entries.
    pub fn table(&self) -> Result<BTreeMap<String, Language>, String> {
        let mut table: BTreeMap<String, Language> =
            builtin_languages().into_iter().map(|l| (l.name.clone(), l)).collect();
        for file in &self.files {
            for (name, entry) in &file.entries {
                let lang = match table.remove(name) {
                    Some(mut known) => {
                        if let Some(p) = entry.protocol {
                            known.protocol = p;
                        }
                        known.origin = file.path.clone();
                        known
                    }
                    None => Language {
                        name: name.clone(),
                        protocol: entry.protocol.ok_or_else(|| {
                            format!(
                                "{}: [language.{name}] is a new language and needs protocol = \"procd\", \"fastcgi\", \"cgi\" or \"http\"",
                                file.path
                            )
                        })?,
                        command: None,
                        extensions: Vec::new(),
                        package: None,
                        origin: file.path.clone(),
                        loader: None,
                        one_request_at_a_time: None,
                        library: None,
                        defaults: &[],
                        guard: None,
                        listen: Listen::Unix,
                    },
                };
                let mut lang = lang;
                if let Some(c) = &entry.command {
                    lang.command = Some(c.split_whitespace().map(str::to_string).collect());
                    // A user-supplied program: the built-in package hint no longer applies.
                    lang.package = None;
                }
                if let Some(e) = &entry.extensions {
                    lang.extensions = e.iter().map(|x| x.to_ascii_lowercase()).collect();
                }
                if let Some(p) = &entry.package {
                    lang.package = Some(p.clone());
                }
                if let Some(l) = entry.listen {
                    lang.listen = l;
                }
                if lang.listen == Listen::Tcp && lang.protocol != Protocol::Http {
                    return Err(format!(
                        "{}: [language.{name}] listen = \"tcp\" is only for protocol = \"http\" (programs that serve HTTP on a port); this language speaks the {} protocol, over the group's Unix socket: remove listen or set protocol = \"http\"",
                        file.path,
                        lang.protocol.name()
                    ));
                }
                table.insert(name.clone(), lang);
            }
        }
        Ok(table)
    }
}

/// Names of groups and languages: they end up in socket paths and logs.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !name.starts_with('.')
}

/// A file extension as `LanguageHandler` takes it: a dot, then letters,
/// digits, `_` or `-`.
pub fn check_extension(ext: &str) -> Result<(), String> {
    match ext.strip_prefix('.') {
        None => Err(format!("\"{ext}\" is not an extension: write it with its leading dot, as \".{ext}\"")),
        Some(rest)
            if !rest.is_empty()
                && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') =>
        {
            Ok(())
        }
        Some(_) => Err(format!(
            "\"{ext}\" is not an extension: expected a dot followed by letters, digits, '_' or '-', such as .php"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_complete() {
        let t = LanguageOverrides::default().table().unwrap();
        let names: Vec<_> = t.keys().map(String::as_str).collect();
        assert_eq!(names, ["cgi", "http", "perl", "php", "python", "ruby"]);
        assert_eq!(t["php"].protocol, Protocol::Fastcgi);
        assert_eq!(t["php"].package.as_deref(), Some("php-cgi"));
    }

    #[test]
    fn file_adds_and_overrides() {
        let f = parse_language_file(
            "l.toml",
            "[language.node]\nprotocol = \"http\"\ncommand = \"node server.js\"\n\n[language.python]\ncommand = \"/opt/py/bin/python3\"\n",
        )
        .unwrap();
        let t = LanguageOverrides { files: vec![f] }.table().unwrap();
        assert_eq!(t["node"].protocol, Protocol::Http);
        assert_eq!(t["node"].command.as_ref().unwrap(), &["node", "server.js"]);
        assert_eq!(t["python"].protocol, Protocol::Procd);
        assert_eq!(t["python"].command.as_ref().unwrap(), &["/opt/py/bin/python3"]);
        assert_eq!(t["python"].package, None);
    }

    #[test]
    fn languages_may_listen_on_tcp_only_for_http() {
        let f = parse_language_file(
            "l.toml",
            "[language.tomcat]\nprotocol = \"http\"\nlisten = \"tcp\"\ncommand = \"/usr/share/tomcat10/bin/catalina.sh run\"\n",
        )
        .unwrap();
        let t = LanguageOverrides { files: vec![f] }.table().unwrap();
        assert_eq!(t["tomcat"].listen, Listen::Tcp);
        assert_eq!(t["http"].listen, Listen::Unix);
        let f = parse_language_file("l.toml", "[language.python]\nlisten = \"tcp\"\n").unwrap();
        let err = LanguageOverrides { files: vec![f] }.table().unwrap_err();
        assert!(err.contains("[language.python] listen = \"tcp\" is only for protocol = \"http\""), "{err}");
        assert!(err.contains("procd protocol"), "{err}");
        let err = parse_language_file("l.toml", "[language.x]\nprotocol = \"http\"\nlisten = \"udp\"\n").unwrap_err();
        assert!(err.contains("line 3") && err.contains("tcp"), "{err}");
        assert_eq!(Listen::parse("tcp"), Ok(Listen::Tcp));
        assert_eq!(Listen::parse("unix"), Ok(Listen::Unix));
        assert!(Listen::parse("udp").unwrap_err().contains("expected unix"));
    }

    #[test]
    fn new_language_needs_protocol() {
        let f = parse_language_file("l.toml", "[language.go]\ncommand = \"/srv/app\"\n").unwrap();
        let err = LanguageOverrides { files: vec![f] }.table().unwrap_err();
        assert!(err.contains("needs protocol"), "{err}");
    }

    #[test]
    fn malformed_files_name_line_and_column() {
        let err = parse_language_file("l.toml", "[language.node]\nprotocol = \"ftp\"\n").unwrap_err();
        assert!(err.starts_with("l.toml: line 2, column 12: "), "{err}");
        assert!(err.contains("procd"), "{err}");
        let err = parse_language_file("l.toml", "[language.node\n").unwrap_err();
        assert!(err.contains("line 1, column"), "{err}");
        let err = parse_language_file("l.toml", "[language.x]\nprotocol = \"http\"\ncolour = 1\n").unwrap_err();
        assert!(err.contains("line 3") && err.contains("colour"), "{err}");
        let err =
            parse_language_file("l.toml", "\n[language.x]\nprotocol = \"http\"\nextensions = [\"js\"]\n").unwrap_err();
        assert!(err.contains("line 2, column 1") && err.contains(".js"), "{err}");
    }

    #[test]
    fn extensions() {
        assert!(check_extension(".php").is_ok());
        assert!(check_extension(".tar.gz").is_ok());
        assert!(check_extension("php").unwrap_err().contains("\".php\""));
        assert!(check_extension(".").is_err());
        assert!(check_extension(".p/hp").is_err());
    }
}
