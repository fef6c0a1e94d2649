//! Per-server and per-directory configuration and their merge rules.
//!
//! - A group (`LanguageGroup`) belongs to the server or vhost that declares
//!   it; a vhost also sees the groups of the main server.
//! - Mounts (`LanguageMount`) of the main server are inherited by vhosts; a
//!   vhost's mount of the same prefix replaces the inherited one.
//! - Per-directory handlers (`LanguageHandler`): an inner scope's mapping of
//!   an extension replaces the outer one; other extensions are inherited.
//!   Server-level handlers reach every vhost through Apache's own merge of
//!   per-directory defaults.
//! - Link maps (`LinkRewrite`): an inner scope adds its maps to its parents'
//!   (same FROM: the inner TO wins); the longest FROM matches first.

use super::group::{GroupConfig, parse_group, server_relative};
use super::languages::{LanguageFile, LanguageOverrides, check_extension, load_language_file, valid_name};
use super::units::{parse_duration, show_duration};
use super::words::split_words;
use super::{DirectiveContext, Origin};
use std::path::PathBuf;
use std::time::Duration;

/// A reference to a group by name, checked once the whole configuration is
/// read (the group may be declared further down the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRef {
    pub group: String,
    /// The directive as written, e.g. "LanguageMount /api".
    pub directive: String,
    pub origin: Origin,
    /// For `LanguageHandler`: where its files may be (its `<Directory>`,
    /// or `None`: the server's DocumentRoot).
    pub scripts_under: Option<Option<PathBuf>>,
    /// For `LanguageHandler`: the extensions it maps to the group.
    pub extensions: Vec<String>,
}

/// `LanguageMount /prefix GROUP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub prefix: String,
    pub group: String,
    pub origin: Origin,
}

/// Per-server configuration (main server or one vhost, after merging).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerConfig {
    /// Groups declared in this server's own scope.
    pub groups: Vec<GroupConfig>,
    /// Groups visible here because the main server declares them.
    pub inherited_groups: Vec<GroupConfig>,
    pub mounts: Vec<Mount>,
    /// Group names used by directives in this server's scopes.
    pub group_refs: Vec<GroupRef>,
    /// `ProcdRuntimeDir` (main server only).
    pub runtime_dir: Option<PathBuf>,
    /// `ProcdLanguages` files (main server only).
    pub languages: LanguageOverrides,
    /// `ProcdKeepAliveThread Off|On|DURATION` (unset: Off).
    pub keepalive_thread: Option<KeepAliveThread>,
}

/// What happens to a kept-alive client connection after a group's
/// response, under the event MPM (`ProcdKeepAliveThread`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAliveThread {
    /// Apache's own handling: the connection goes back to the MPM's
    /// listener until its next request.
    Off,
    /// The connection keeps its thread for all its requests, waiting up to
    /// KeepAliveTimeout for each (as under the worker MPM).
    On,
    /// The thread waits this long for the connection's next request, then
    /// hands it back to the listener.
    Wait(Duration),
}

/// The longest `ProcdKeepAliveThread DURATION`: longer waits are what `On`
/// is for.
pub const MAX_KEEPALIVE_WAIT: Duration = Duration::from_secs(1);

/// One `LinkRewrite FROM TO` map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMap {
    pub from: String,
    pub to: String,
}

/// `LanguageHandler GROUP .ext`: one extension's mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerMapping {
    /// Lower-case, with its dot.
    pub extension: String,
    pub group: String,
}

/// Per-directory configuration (`<Directory>`, `<Location>`, `<Files>`, or
/// a server's defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirConfig {
    pub handlers: Vec<HandlerMapping>,
    /// Sorted longest FROM first.
    pub link_maps: Vec<LinkMap>,
    /// `LinkRewriteCSS On|Off`: also rewrite `url()` and `@import` in
    /// `<style>`, `style` attributes and text/css bodies (unset: Off).
    pub link_css: Option<bool>,
    /// `ProcdStatus vhost|server`: procd-status shows only the groups the
    /// request's virtual host can use (unset: the whole server).
    pub status_vhost_only: Option<bool>,
}

impl ServerConfig {
    /// Apache's merge_server_config: `base` is the main server, `vhost` what
    /// the virtual host itself declared.
    pub fn merge(base: &ServerConfig, vhost: &ServerConfig) -> ServerConfig {
        let mut inherited = base.inherited_groups.clone();
        inherited.extend(base.groups.iter().cloned());
        let mut mounts: Vec<Mount> =
            base.mounts.iter().filter(|m| !vhost.mounts.iter().any(|v| v.prefix == m.prefix)).cloned().collect();
        mounts.extend(vhost.mounts.iter().cloned());
        mounts.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        ServerConfig {
            groups: vhost.groups.clone(),
            inherited_groups: inherited,
            mounts,
            group_refs: vhost.group_refs.clone(),
            runtime_dir: base.runtime_dir.clone(),
            languages: base.languages.clone(),
            keepalive_thread: vhost.keepalive_thread.or(base.keepalive_thread),
        }
    }

    /// What connections this server's groups serve do between requests.
    pub fn keepalive_thread(&self) -> KeepAliveThread {
        self.keepalive_thread.unwrap_or(KeepAliveThread::Off)
    }

    /// Notes on each group what its language speaks, from this server's
    /// language table (built-ins plus `ProcdLanguages`).
    pub fn resolve_protocols(&mut self) {
        let Ok(table) = self.languages.table() else { return };
        for g in self.groups.iter_mut().chain(self.inherited_groups.iter_mut()) {
            g.protocol = table.get(&g.language).map(|l| l.protocol);
            g.listen = g.listen.or(table.get(&g.language).map(|l| l.listen));
        }
    }

    /// All groups this server can use: its own and the main server's.
    pub fn visible_groups(&self) -> impl Iterator<Item = &GroupConfig> {
        self.groups.iter().chain(self.inherited_groups.iter())
    }

    /// Applies a server-scope directive.
    pub fn apply(&mut self, directive: &str, args: &str, ctx: &DirectiveContext) -> Result<(), String> {
        match directive {
            "LanguageGroup" => {
                let g = parse_group(args, &ctx.server_root, ctx.origin.clone())?;
                if let Some(other) = self.groups.iter().find(|o| o.name == g.name) {
                    return Err(format!(
                        "LanguageGroup {}: a group of that name is already declared at {}; group names must be unique",
                        g.name, other.declared_at
                    ));
                }
                self.groups.push(g);
                Ok(())
            }
            "LanguageMount" => self.apply_mount(args, ctx),
            "ProcdKeepAliveThread" => {
                let what = || {
                    format!(
                        "ProcdKeepAliveThread \"{args}\": expected Off, On or a duration from 1ms to {} (Off: Apache's own keep-alive handling; On: a client connection that a group served keeps its Apache thread between its requests, up to KeepAliveTimeout; a duration such as 2ms: the thread waits that long for the next request, then hands the connection back to the event MPM)",
                        show_duration(MAX_KEEPALIVE_WAIT)
                    )
                };
                let words = split_words(args).map_err(|e| format!("{directive}: {e}"))?;
                self.keepalive_thread = Some(match words.as_slice() {
                    [w] if w.eq_ignore_ascii_case("on") => KeepAliveThread::On,
                    [w] if w.eq_ignore_ascii_case("off") => KeepAliveThread::Off,
                    // A bare number would read as seconds: a unit is required.
                    [w] if w.ends_with(|c: char| c.is_ascii_alphabetic()) => KeepAliveThread::Wait(
                        parse_duration(w, Duration::from_millis(1), MAX_KEEPALIVE_WAIT).map_err(|_| what())?,
                    ),
                    [w] if w.parse::<u64>().is_ok() => {
                        return Err(format!("{}; a number needs its unit, as in {w}ms", what()));
                    }
                    _ => return Err(what()),
                });
                Ok(())
            }
            "ProcdRuntimeDir" => {
                let dir = main_server_only(directive, args, ctx)?;
                self.runtime_dir =
                    Some(server_relative(&ctx.server_root, &dir).map_err(|e| format!("{directive}: {e}"))?);
                Ok(())
            }
            "ProcdLanguages" => {
                let file = main_server_only(directive, args, ctx)?;
                let path = server_relative(&ctx.server_root, &file).map_err(|e| format!("{directive}: {e}"))?;
                let parsed: LanguageFile = load_language_file(&path).map_err(|e| format!("ProcdLanguages {e}"))?;
                self.languages.files.push(parsed);
                // A new language must be complete on its own; say so here, at its line.
                self.languages.table().map_err(|e| format!("ProcdLanguages {e}"))?;
                Ok(())
            }
            _ => Err(format!("mod_procd: {directive} is not a server directive")),
        }
    }

    fn apply_mount(&mut self, args: &str, ctx: &DirectiveContext) -> Result<(), String> {
        let words = split_words(args).map_err(|e| format!("LanguageMount: {e}"))?;
        let [prefix, group] = words.as_slice() else {
            return Err(format!(
                "LanguageMount takes two arguments, /prefix and a group name (LanguageMount /api shop), got {}",
                words.len()
            ));
        };
        if !prefix.starts_with('/') {
            return Err(format!(
                "LanguageMount {prefix}: the URL prefix must start with '/', e.g. LanguageMount /{prefix} {group}"
            ));
        }
        if let Some(bad) = prefix.chars().find(|c| matches!(c, '?' | '#' | '%') || c.is_control()) {
            return Err(format!(
                "LanguageMount {prefix}: '{bad}' is not allowed in a mount prefix: give the decoded URL path, without query or fragment"
            ));
        }
        if prefix.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(format!("LanguageMount {prefix}: '.' and '..' segments are not allowed in a mount prefix"));
        }
        // "/api/" and "/api" mean the same mount; "/" stays "/".
        let normal = match prefix.trim_end_matches('/') {
            "" => "/".to_string(),
            p => p.to_string(),
        };
        if !valid_name(group) {
            return Err(format!("LanguageMount {prefix} {group}: \"{group}\" is not a valid group name"));
        }
        if let Some(other) = self.mounts.iter().find(|m| m.prefix == normal) {
            return Err(format!(
                "LanguageMount {prefix}: this prefix is already mounted (to group {}) at {}",
                other.group, other.origin
            ));
        }
        self.group_refs.push(GroupRef {
            group: group.clone(),
            directive: format!("LanguageMount {normal}"),
            origin: ctx.origin.clone(),
            scripts_under: None,
            extensions: Vec::new(),
        });
        self.mounts.push(Mount { prefix: normal, group: group.clone(), origin: ctx.origin.clone() });
        self.mounts.sort_by_key(|m| std::cmp::Reverse(m.prefix.len()));
        Ok(())
    }
}

fn main_server_only(directive: &str, args: &str, ctx: &DirectiveContext) -> Result<String, String> {
    if ctx.in_vhost || ctx.in_section {
        return Err(format!(
            "{directive} is a server-wide setting: move it out of <VirtualHost> and other sections, to the main server configuration"
        ));
    }
    let words = split_words(args).map_err(|e| format!("{directive}: {e}"))?;
    match words.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!("{directive} takes one path, got {} arguments", words.len())),
    }
}

/// Checks a `LinkRewrite` FROM or TO value.
fn check_link_url(which: &str, value: &str) -> Result<(), String> {
    let rest =
        value.strip_prefix("http://").or_else(|| value.strip_prefix("https://")).or_else(|| value.strip_prefix("//"));
    let ok = match rest {
        Some(hostpart) => {
            let host = hostpart.split('/').next().unwrap_or("");
            !host.is_empty() && !host.contains(['@', '?', '#'])
        }
        None => value.starts_with('/'),
    };
    if !ok || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{which} \"{value}\" is not a URL prefix: expected an absolute URL (http://host:port/path/), a scheme-relative one (//host/path/) or a path starting with '/'"
        ));
    }
    Ok(())
}

impl DirConfig {
    /// Apache's merge_dir_config: `outer` is the enclosing scope.
    pub fn merge(outer: &DirConfig, inner: &DirConfig) -> DirConfig {
        let mut handlers: Vec<HandlerMapping> = outer
            .handlers
            .iter()
            .filter(|h| !inner.handlers.iter().any(|i| i.extension == h.extension))
            .cloned()
            .collect();
        handlers.extend(inner.handlers.iter().cloned());
        let mut link_maps: Vec<LinkMap> =
            outer.link_maps.iter().filter(|m| !inner.link_maps.iter().any(|i| i.from == m.from)).cloned().collect();
        link_maps.extend(inner.link_maps.iter().cloned());
        link_maps.sort_by_key(|m| std::cmp::Reverse(m.from.len()));
        DirConfig {
            handlers,
            link_maps,
            link_css: inner.link_css.or(outer.link_css),
            status_vhost_only: inner.status_vhost_only.or(outer.status_vhost_only),
        }
    }

    /// Whether CSS is rewritten too in this scope.
    pub fn rewrites_css(&self) -> bool {
        self.link_css.unwrap_or(false)
    }

    /// The group that serves files with this name's extension, if any.
    pub fn group_for_file(&self, file_name: &str) -> Option<&str> {
        let lower = file_name.to_ascii_lowercase();
        self.handlers
            .iter()
            .filter(|h| lower.ends_with(&h.extension))
            .max_by_key(|h| h.extension.len())
            .map(|h| h.group.as_str())
    }

    /// Applies a per-directory directive. Group names used here are returned
    /// so that the caller can record them on the server for checking.
    pub fn apply(&mut self, directive: &str, args: &str, ctx: &DirectiveContext) -> Result<Vec<GroupRef>, String> {
        let words = split_words(args).map_err(|e| format!("{directive}: {e}"))?;
        match directive {
            "LanguageHandler" => {
                let Some((group, exts)) = words.split_first() else {
                    return Err("LanguageHandler needs a group and at least one extension: LanguageHandler GROUP .ext [.ext ...]".into());
                };
                if !valid_name(group) {
                    return Err(format!("LanguageHandler {group}: \"{group}\" is not a valid group name"));
                }
                if exts.is_empty() {
                    return Err(format!(
                        "LanguageHandler {group}: name at least one extension, e.g. LanguageHandler {group} .php"
                    ));
                }
                for ext in exts {
                    check_extension(ext).map_err(|e| format!("LanguageHandler {group}: {e}"))?;
                    let extension = ext.to_ascii_lowercase();
                    self.handlers.retain(|h| h.extension != extension);
                    self.handlers.push(HandlerMapping { extension, group: group.clone() });
                }
                Ok(vec![GroupRef {
                    group: group.clone(),
                    directive: format!("LanguageHandler {}", exts.join(" ")),
                    origin: ctx.origin.clone(),
                    scripts_under: Some(ctx.directory.clone()),
                    extensions: exts.iter().map(|e| e.to_ascii_lowercase()).collect(),
                }])
            }
            "LinkRewrite" => {
                let [from, to] = words.as_slice() else {
                    return Err(format!(
                        "LinkRewrite takes two arguments, FROM and TO (LinkRewrite http://127.0.0.1:8180/ /legacy/), got {}",
                        words.len()
                    ));
                };
                check_link_url("LinkRewrite: FROM", from)?;
                check_link_url("LinkRewrite: TO", to)?;
                if from.ends_with('/') && !to.ends_with('/') {
                    return Err(format!(
                        "LinkRewrite {from} {to}: FROM ends with '/' but TO does not, so {from}page would become {to}page; write TO as {to}/"
                    ));
                }
                self.link_maps.retain(|m| &m.from != from);
                self.link_maps.push(LinkMap { from: from.clone(), to: to.clone() });
                self.link_maps.sort_by_key(|m| std::cmp::Reverse(m.from.len()));
                Ok(Vec::new())
            }
            "LinkRewriteCSS" => {
                let on = match words.as_slice() {
                    [w] if w.eq_ignore_ascii_case("on") => true,
                    [w] if w.eq_ignore_ascii_case("off") => false,
                    _ => {
                        return Err(format!(
                            "LinkRewriteCSS \"{args}\": expected On or Off (On also rewrites url() and @import in <style>, style attributes and text/css bodies)"
                        ));
                    }
                };
                self.link_css = Some(on);
                Ok(Vec::new())
            }
            "ProcdStatus" => {
                let vhost = match words.as_slice() {
                    [w] if w.eq_ignore_ascii_case("vhost") => true,
                    [w] if w.eq_ignore_ascii_case("server") => false,
                    _ => {
                        return Err(format!(
                            "ProcdStatus \"{args}\": expected vhost (procd-status shows the groups of the request's virtual host only) or server (every group, the default)"
                        ));
                    }
                };
                self.status_vhost_only = Some(vhost);
                Ok(Vec::new())
            }
            _ => Err(format!("mod_procd: {directive} is not a per-directory directive")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> DirectiveContext {
        DirectiveContext {
            directory: None,
            origin: Origin { file: "t.conf".into(), line: 7 },
            in_vhost: false,
            in_section: false,
            server_root: "/etc/apache2".into(),
        }
    }

    #[test]
    fn vhost_sees_main_groups_and_mounts() {
        let mut main = ServerConfig::default();
        main.apply("LanguageGroup", "shared language=python", &ctx()).unwrap();
        main.apply("LanguageMount", "/shared/ shared", &ctx()).unwrap();
        main.apply("LanguageMount", "/x shared", &ctx()).unwrap();
        let mut vhost = ServerConfig::default();
        vhost.apply("LanguageGroup", "own language=php", &ctx()).unwrap();
        vhost.apply("LanguageMount", "/x own", &ctx()).unwrap();
        let merged = ServerConfig::merge(&main, &vhost);
        let names: Vec<_> = merged.visible_groups().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["own", "shared"]);
        assert_eq!(merged.groups.len(), 1);
        let mounts: Vec<_> = merged.mounts.iter().map(|m| (m.prefix.as_str(), m.group.as_str())).collect();
        assert_eq!(mounts, [("/shared", "shared"), ("/x", "own")]);
    }

    #[test]
    fn server_directive_errors() {
        let mut s = ServerConfig::default();
        s.apply("LanguageGroup", "a language=python", &ctx()).unwrap();
        let e = s.apply("LanguageGroup", "a language=php", &ctx()).unwrap_err();
        assert!(e.contains("already declared at t.conf:7"), "{e}");
        let e = s.apply("LanguageMount", "api a", &ctx()).unwrap_err();
        assert!(e.contains("must start with '/'"), "{e}");
        let e = s.apply("LanguageMount", "/api", &ctx()).unwrap_err();
        assert!(e.contains("two arguments"), "{e}");
        s.apply("LanguageMount", "/api a", &ctx()).unwrap();
        let e = s.apply("LanguageMount", "/api/ a", &ctx()).unwrap_err();
        assert!(e.contains("already mounted"), "{e}");
        let e = s.apply("LanguageMount", "/a?b a", &ctx()).unwrap_err();
        assert!(e.contains("'?' is not allowed"), "{e}");
        let vctx = DirectiveContext { in_vhost: true, ..ctx() };
        let e = s.apply("ProcdRuntimeDir", "/run/procd", &vctx).unwrap_err();
        assert!(e.contains("server-wide"), "{e}");
        s.apply("ProcdRuntimeDir", "run/procd", &ctx()).unwrap();
        assert_eq!(s.runtime_dir.as_deref(), Some(std::path::Path::new("/etc/apache2/run/procd")));
        let e = s.apply("ProcdLanguages", "/no/such/file.toml", &ctx()).unwrap_err();
        assert!(e.starts_with("ProcdLanguages cannot read /no/such/file.toml"), "{e}");
    }

    #[test]
    fn handlers_merge_per_extension() {
        let mut outer = DirConfig::default();
        outer.apply("LanguageHandler", "blog .php .PHTML", &ctx()).unwrap();
        let mut inner = DirConfig::default();
        let refs = inner.apply("LanguageHandler", "shop .php", &ctx()).unwrap();
        assert_eq!(refs[0].group, "shop");
        let merged = DirConfig::merge(&outer, &inner);
        assert_eq!(merged.group_for_file("index.PHP"), Some("shop"));
        assert_eq!(merged.group_for_file("x.phtml"), Some("blog"));
        assert_eq!(merged.group_for_file("x.txt"), None);
        let e = inner.apply("LanguageHandler", "blog php", &ctx()).unwrap_err();
        assert!(e.contains("\".php\""), "{e}");
        let e = inner.apply("LanguageHandler", "blog", &ctx()).unwrap_err();
        assert!(e.contains("at least one extension"), "{e}");
    }

    #[test]
    fn keepalive_thread_is_off_on_or_a_wait_and_a_vhost_inherits_it() {
        let mut main = ServerConfig::default();
        assert_eq!(main.keepalive_thread(), KeepAliveThread::Off);
        main.apply("ProcdKeepAliveThread", "On", &ctx()).unwrap();
        assert_eq!(ServerConfig::merge(&main, &ServerConfig::default()).keepalive_thread(), KeepAliveThread::On);
        let mut vhost = ServerConfig::default();
        vhost.apply("ProcdKeepAliveThread", "off", &ctx()).unwrap();
        assert_eq!(ServerConfig::merge(&main, &vhost).keepalive_thread(), KeepAliveThread::Off);
        vhost.apply("ProcdKeepAliveThread", "2ms", &ctx()).unwrap();
        assert_eq!(
            ServerConfig::merge(&main, &vhost).keepalive_thread(),
            KeepAliveThread::Wait(Duration::from_millis(2))
        );
        vhost.apply("ProcdKeepAliveThread", "1s", &ctx()).unwrap();
        assert_eq!(vhost.keepalive_thread(), KeepAliveThread::Wait(Duration::from_secs(1)));
        let e = vhost.apply("ProcdKeepAliveThread", "2", &ctx()).unwrap_err();
        assert!(e.contains("a number needs its unit, as in 2ms"), "{e}");
        for bad in ["", "yes", "On Off", "2", "0ms", "2s", "-1ms", "2 ms"] {
            let e = vhost.apply("ProcdKeepAliveThread", bad, &ctx()).unwrap_err();
            assert!(e.contains("ProcdKeepAliveThread") && e.contains("expected Off, On or a duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn link_css_is_on_off_and_inherited() {
        let mut server = DirConfig::default();
        assert!(!server.rewrites_css());
        server.apply("LinkRewriteCSS", "On", &ctx()).unwrap();
        let inner = DirConfig::default();
        assert!(DirConfig::merge(&server, &inner).rewrites_css());
        let mut off = DirConfig::default();
        off.apply("LinkRewriteCSS", "off", &ctx()).unwrap();
        assert!(!DirConfig::merge(&server, &off).rewrites_css());
        for bad in ["", "yes", "On Off"] {
            let e = off.apply("LinkRewriteCSS", bad, &ctx()).unwrap_err();
            assert!(e.contains("LinkRewriteCSS") && e.contains("expected On or Off"), "{e}");
        }
    }

    #[test]
    fn procd_status_scope_is_vhost_or_server_and_inherited() {
        let mut outer = DirConfig::default();
        outer.apply("ProcdStatus", "vhost", &ctx()).unwrap();
        assert_eq!(DirConfig::merge(&outer, &DirConfig::default()).status_vhost_only, Some(true));
        let mut inner = DirConfig::default();
        inner.apply("ProcdStatus", "Server", &ctx()).unwrap();
        assert_eq!(DirConfig::merge(&outer, &inner).status_vhost_only, Some(false));
        for bad in ["", "all", "vhost server"] {
            let e = inner.apply("ProcdStatus", bad, &ctx()).unwrap_err();
            assert!(
                e.contains("ProcdStatus") && e.contains(&format!("\"{bad}\"")) && e.contains("expected vhost"),
                "{e}"
            );
        }
    }

    #[test]
    fn link_maps_add_up_down_the_tree() {
        let mut server = DirConfig::default();
        server.apply("LinkRewrite", "http://127.0.0.1:8180/ /legacy/", &ctx()).unwrap();
        let mut loc = DirConfig::default();
        loc.apply("LinkRewrite", "http://127.0.0.1:8180/app/ /legacy/app2/", &ctx()).unwrap();
        loc.apply("LinkRewrite", "http://other:81/ /other/", &ctx()).unwrap();
        let merged = DirConfig::merge(&server, &loc);
        let froms: Vec<_> = merged.link_maps.iter().map(|m| m.from.as_str()).collect();
        assert_eq!(froms, ["http://127.0.0.1:8180/app/", "http://127.0.0.1:8180/", "http://other:81/"]);
        let e = loc.apply("LinkRewrite", "http://a/ /b", &ctx()).unwrap_err();
        assert!(e.contains("write TO as /b/"), "{e}");
        let e = loc.apply("LinkRewrite", "ftp://a/ /b/", &ctx()).unwrap_err();
        assert!(e.contains("FROM \"ftp://a/\" is not a URL prefix"), "{e}");
        let e = loc.apply("LinkRewrite", "http://a/", &ctx()).unwrap_err();
        assert!(e.contains("two arguments"), "{e}");
    }
}
