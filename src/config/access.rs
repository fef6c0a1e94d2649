//! Who a group runs as, and whether that user can reach a file.
//!
//! Checks are computed from mode bits, owners and group membership (as the
//! kernel would decide for that user), never by switching user: the httpd
//! parent must not change identity while it reads its configuration.

use nix::unistd::{Gid, Group, Uid, User};
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A Unix identity: the user a group's workers run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Primary and supplementary groups.
    pub groups: Vec<u32>,
}

impl Identity {
    /// Builds the identity of an existing user, with `gid` as primary group.
    pub fn new(user: &str, uid: u32, gid: u32) -> Identity {
        let mut groups = vec![gid];
        if let Ok(name) = CString::new(user) {
            if let Ok(list) = nix::unistd::getgrouplist(&name, Gid::from_raw(gid)) {
                groups.extend(list.into_iter().map(Gid::as_raw));
            }
        }
        groups.sort_unstable();
        groups.dedup();
        // Never a group of root's, whatever the user database says (a
        // primary gid 0 is refused at configtest).
        if gid != 0 {
            groups.retain(|g| *g != 0);
        }
        Identity { user: user.to_string(), uid, gid, groups }
    }

    fn describe(&self) -> String {
        format!("user {} (uid {})", self.user, self.uid)
    }
}

/// Looks up a user by name or `#uid`.
pub fn lookup_user(spec: &str) -> Result<User, String> {
    let found = match spec.strip_prefix('#') {
        Some(num) => {
            let uid: u32 = num.parse().map_err(|_| format!("\"{spec}\" is not a user name or #uid"))?;
            User::from_uid(Uid::from_raw(uid))
        }
        None => User::from_name(spec),
    };
    match found {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(format!(
            "there is no user \"{spec}\" on this system: create it (useradd --system {spec}) or name an existing user"
        )),
        Err(e) => Err(format!("cannot look up user \"{spec}\": {e}")),
    }
}

/// Looks up a group by name or `#gid`.
pub fn lookup_group(spec: &str) -> Result<Group, String> {
    let found = match spec.strip_prefix('#') {
        Some(num) => {
            let gid: u32 = num.parse().map_err(|_| format!("\"{spec}\" is not a group name or #gid"))?;
            Group::from_gid(Gid::from_raw(gid))
        }
        None => Group::from_name(spec),
    };
    match found {
        Ok(Some(g)) => Ok(g),
        Ok(None) => Err(format!(
            "there is no group \"{spec}\" on this system: create it (groupadd --system {spec}) or name an existing group"
        )),
        Err(e) => Err(format!("cannot look up group \"{spec}\": {e}")),
    }
}

/// What a user needs to do with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Read a file.
    ReadFile,
    /// Enter a directory (search and read it).
    Directory,
    /// Execute a program.
    Execute,
}

fn allowed(meta: &std::fs::Metadata, who: &Identity, bit: u32) -> bool {
    let mode = meta.mode();
    if who.uid == 0 {
        // root: everything but executing a file with no x bit at all.
        return bit != 0o1 || meta.is_dir() || mode & 0o111 != 0;
    }
    if meta.uid() == who.uid {
        mode & (bit << 6) != 0
    } else if who.groups.contains(&meta.gid()) {
        mode & (bit << 3) != 0
    } else {
        mode & bit != 0
    }
}

fn explain(path: &Path, meta: &std::fs::Metadata) -> String {
    let owner =
        User::from_uid(Uid::from_raw(meta.uid())).ok().flatten().map_or_else(|| meta.uid().to_string(), |u| u.name);
    let group =
        Group::from_gid(Gid::from_raw(meta.gid())).ok().flatten().map_or_else(|| meta.gid().to_string(), |g| g.name);
    format!("{} is mode {:04o}, owned by {owner}:{group}", path.display(), meta.mode() & 0o7777)
}

/// Checks that `who` can do `need` on `path`, following every directory on
/// the way; the error says which component stops them and why.
pub fn check_access(path: &Path, who: &Identity, need: Need) -> Result<PathBuf, String> {
    let real = path.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{} does not exist", path.display()),
        _ => format!("{}: {e}", path.display()),
    })?;
    let mut dir = PathBuf::from("/");
    let comps: Vec<_> = real.components().skip(1).collect();
    for (i, comp) in comps.iter().enumerate() {
        let meta = std::fs::metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !allowed(&meta, who, 0o1) {
            return Err(format!("{} cannot enter {}: {}", who.describe(), dir.display(), explain(&dir, &meta)));
        }
        dir.push(comp);
        let _ = i;
    }
    let meta = std::fs::metadata(&real).map_err(|e| format!("{}: {e}", real.display()))?;
    let (ok, what) = match need {
        Need::ReadFile if meta.is_dir() => (false, "read (it is a directory, a file is needed)"),
        Need::ReadFile => (allowed(&meta, who, 0o4), "read"),
        Need::Directory if !meta.is_dir() => (false, "use as a directory (it is not one)"),
        Need::Directory => (allowed(&meta, who, 0o1) && allowed(&meta, who, 0o4), "enter and list"),
        Need::Execute if meta.is_dir() => (false, "execute (it is a directory)"),
        Need::Execute => (allowed(&meta, who, 0o1), "execute"),
    };
    if ok {
        Ok(real)
    } else {
        Err(format!("{} cannot {what} {}: {}", who.describe(), real.display(), explain(&real, &meta)))
    }
}

/// Whether only root can change what `path` names: every directory from `/`
/// down to it (as written, and after resolving links) is root's and not
/// writable by group or others, unless sticky (as /tmp: others may add
/// entries but not replace root's); links on the way are root's.
pub fn root_controls(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let safe = |p: &Path| match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => m.uid() == 0,
        Ok(m) => m.uid() == 0 && (m.mode() & 0o022 == 0 || (m.is_dir() && m.mode() & 0o1000 != 0)),
        Err(_) => false,
    };
    let chain_safe = |p: &Path| p.ancestors().all(safe);
    chain_safe(path) && std::fs::canonicalize(path).is_ok_and(|real| chain_safe(&real))
}

/// Whether only root may create or replace entries in `dir` itself (no
/// sticky exception: in /tmp anyone may plant a name) and only root
/// controls the way to it.
pub fn only_root_writes(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    root_controls(dir) && std::fs::metadata(dir).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0)
}

/// Whether `who` may append to `path`: write the file as it is, or create
/// and replace files in its directory (whatever the file is now: the user
/// may change it at any time, and the manager checks it at run time).
pub fn check_appendable(path: &Path, who: &Identity) -> Result<(), String> {
    let file_ok = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file() && allowed(&m, who, 0o2));
    let dir = path.parent().unwrap_or(Path::new("/"));
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if file_ok || (allowed(&meta, who, 0o2) && allowed(&meta, who, 0o1)) {
        Ok(())
    } else {
        Err(format!("{} cannot create files in {}: {}", who.describe(), dir.display(), explain(dir, &meta)))
    }
}

/// The PATH under which worker programs are looked up and run. Workers get a
/// clean environment, so this is fixed rather than inherited from httpd.
pub const WORKER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds a program the way the manager will run it: a path as given, or a
/// bare name searched on `WORKER_PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.exists().then_some(p);
    }
    WORKER_PATH.split(':').map(|dir| Path::new(dir).join(program)).find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn someone() -> Identity {
        Identity { user: "tester".into(), uid: 4_000_001, gid: 4_000_001, groups: vec![4_000_001] }
    }

    #[test]
    fn mode_bits_decide_for_other_users() {
        let dir = std::env::temp_dir().join(format!("procd-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = dir.join("app.wsgi");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_access(&file, &someone(), Need::ReadFile).is_ok());
        assert!(check_access(&file, &someone(), Need::Execute).unwrap_err().contains("cannot execute"));
        assert!(check_access(&dir, &someone(), Need::Directory).is_ok());
        assert!(check_access(&file, &someone(), Need::Directory).unwrap_err().contains("not one"));

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = check_access(&file, &someone(), Need::ReadFile).unwrap_err();
        assert!(err.contains("cannot read") && err.contains("mode 0600"), "{err}");

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = check_access(&file, &someone(), Need::ReadFile).unwrap_err();
        assert!(err.contains("cannot enter") && err.contains("mode 0700"), "{err}");

        assert!(check_access(&dir.join("missing"), &someone(), Need::ReadFile).unwrap_err().contains("does not exist"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn programs_are_found_on_the_worker_path() {
        assert!(find_program("sh").is_some());
        assert!(find_program("/bin/sh").is_some());
        assert!(find_program("no-such-program-procd").is_none());
    }

    #[test]
    fn users_and_groups() {
        assert_eq!(lookup_user("root").unwrap().uid.as_raw(), 0);
        assert_eq!(lookup_user("#0").unwrap().name, "root");
        assert!(lookup_user("no-such-user-procd").unwrap_err().contains("useradd"));
        assert!(lookup_group("no-such-group-procd").unwrap_err().contains("groupadd"));
    }
}
