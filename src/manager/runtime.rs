//! The runtime directory: group sockets, generation sockets, shipped
//! loaders and exit records, all root's; and restart files, read without
//! following links.

use crate::config::languages::{CGI_LAUNCHER, CGI_LAUNCHER_FILE};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::SystemTime;

/// Generation sockets live here, under the runtime dir, until they are
/// renamed over `<group>.sock`: no group name can collide with them.
pub const GENERATIONS: &str = "generations";
/// Under the runtime dir: one file per recently exited worker, named by pid:
/// its group on the first line, then how it ended.
pub const EXITS: &str = "exits";

/// The time a restart file was last touched: only a regular file counts,
/// never what a link a tenant planted points to (lstat, not stat).
pub fn restart_mtime(path: &str) -> Option<SystemTime> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_file() { meta.modified().ok() } else { None }
}

/// Creates `dir` as root's with `mode`; refuses one that exists as a link
/// or as someone else's.
fn root_dir(dir: &Path, mode: u32, gid: u32) -> std::io::Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        // Made under another name with its owner and mode, then renamed
        // into place: Apache's children, which connect from the first
        // moment, never see it with the umask's mode (EACCES, a 500).
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.with_file_name(format!(".{name}.new-{}", std::process::id()));
        let _ = std::fs::remove_dir(&tmp);
        std::fs::create_dir(&tmp)?;
        nix::unistd::chown(&tmp, Some(nix::unistd::Uid::from_raw(0)), Some(nix::unistd::Gid::from_raw(gid)))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        if std::fs::rename(&tmp, dir).is_err() {
            // Made meanwhile by someone else: checked below like any.
            let _ = std::fs::remove_dir(&tmp);
        }
    }
    root_dir_checked(dir, mode, gid)
}

/// `root_dir` for a directory that now exists.
fn root_dir_checked(dir: &Path, mode: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir)?;
    if !m.file_type().is_dir() || m.uid() != 0 {
        return Err(std::io::Error::other(format!(
            "{} exists and is not a directory owned by root: remove it",
            dir.display()
        )));
    }
    nix::unistd::chown(dir, Some(nix::unistd::Uid::from_raw(0)), Some(nix::unistd::Gid::from_raw(gid)))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// The runtime dir: 0711 root (others may pass through to a socket they may
/// open, but not list it); `loaders/` (0755, the shipped loaders, 0644);
/// `generations/` (0711: sockets of generations not yet serving);
/// `exits/` (0750 root:Apache's group: how each worker ended, read by the
/// request handler to explain a failed request). The runtime dir and each
/// of its ancestors must be root's alone: root creates sockets and writes
/// files there.
pub fn prepare_runtime_dir(dir: &Path, apache_gid: u32, loader_files: &[(String, String)]) -> std::io::Result<()> {
    // Checked before anything is created or changed in it: where only root
    // controls the parent, nobody can swap the directory for a link between
    // the check and the chown/chmod below.
    let parent = dir.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent)?;
    if !crate::config::access::root_controls(parent) {
        return Err(std::io::Error::other(
            "a directory above it is writable by users other than root; use a directory only root can change (ProcdRuntimeDir)",
        ));
    }
    root_dir(dir, 0o711, 0)?;
    let loaders = dir.join("loaders");
    root_dir(&loaders, 0o755, 0)?;
    for (file, source) in loader_files {
        write_by_rename(&loaders, file, source.as_bytes(), 0o644)?;
    }
    // Written by earlier builds; the launcher now runs from memory.
    let _ = std::fs::remove_file(loaders.join(CGI_LAUNCHER_FILE));
    root_dir(&dir.join(EXITS), 0o750, apache_gid)?;
    // Sockets of generations of a previous manager (killed, or httpd
    // killed) are stale; nothing else lives there.
    let generations = dir.join(GENERATIONS);
    root_dir(&generations, 0o711, 0)?;
    for entry in std::fs::read_dir(&generations)?.flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
    Ok(())
}

/// The CGI launcher (this manager's own build of it), as a sealed memfd
/// that workers are exec'ed from: no file for it anywhere, so it runs
/// where the runtime dir's file system is mounted noexec (Debian's /run),
/// and nobody can change it.
pub fn cgi_launcher_memfd() -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::sys::memfd::{MemFdCreateFlag, memfd_create};
    let name = c"procd-cgi-launcher";
    let flags = MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3+): executable whatever vm.memfd_noexec defaults
    // to; older kernels refuse the flag, and their memfds are executable.
    const MFD_EXEC: libc::c_uint = 0x10;
    let fd = match memfd_create(name, flags | MemFdCreateFlag::from_bits_retain(MFD_EXEC)) {
        Err(nix::errno::Errno::EINVAL) => memfd_create(name, flags),
        Err(nix::errno::Errno::EACCES) => {
            return Err(std::io::Error::other(
                "executable memfds are forbidden here (sysctl vm.memfd_noexec=2), and language=cgi runs its launcher from one",
            ));
        }
        other => other,
    }
    .map_err(std::io::Error::from)?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, CGI_LAUNCHER)?;
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    let seals = SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE;
    fcntl(std::os::fd::AsRawFd::as_raw_fd(&file), FcntlArg::F_ADD_SEALS(seals)).map_err(std::io::Error::from)?;
    Ok(file.into())
}

/// A listening socket only root and Apache's group (its child user) may
/// connect to.
pub fn bind_socket(path: &Path, gid: u32) -> std::io::Result<UnixListener> {
    let listener = UnixListener::bind(path)?;
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(nix::unistd::Gid::from_raw(gid)))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Writes `dir/name` (with `mode`, readable by all) as `dir/.name.tmp`,
/// then renames it over: a reader sees the old file or the new one, never
/// half of one (and a running program keeps its own). A failure leaves no
/// temporary file behind.
fn write_by_rename(dir: &Path, name: &str, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::write(&tmp, contents)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
        .and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Says, in `RUNTIME/GROUP.down`, that a group has no working generation
/// and waits in back-off, and why: Apache answers its requests 503 at once
/// instead of waiting for a socket that will not come soon. Written by
/// rename (no reader sees half a file); readable by all, like the loaders.
pub fn mark_down(dir: &Path, group: &str, why: &str) {
    let _ = write_by_rename(dir, &format!("{group}.down"), why.as_bytes(), 0o644);
}

/// The group serves again (or is gone): no `GROUP.down`.
pub fn mark_up(dir: &Path, group: &str) {
    let _ = std::fs::remove_file(dir.join(format!("{group}.down")));
}

/// The name of a `listen=tcp` group's port file in the runtime dir.
fn port_file_name(group: &str) -> String {
    format!("{group}.port")
}

/// `RUNTIME/GROUP.port`: where Apache's children find the serving
/// generation of a `listen=tcp` group (`PORT\n`). Replaced by rename, as
/// a new generation's socket is renamed over `GROUP.sock`: a reader sees
/// the old port or the new one, never half a file. The one place its name
/// is made (the manager writes it, Apache's children read it).
pub fn port_file(dir: &Path, group: &str) -> std::path::PathBuf {
    dir.join(port_file_name(group))
}

/// Publishes `port` as the serving generation's of `group`.
pub fn publish_port(dir: &Path, group: &str, port: u16) -> std::io::Result<()> {
    write_by_rename(dir, &port_file_name(group), format!("{port}\n").as_bytes(), 0o644)
}

/// Removes every `*.port` file in `dir` (and a half-written `.*.port.tmp`):
/// ports published by a manager that is gone (killed with -9, in a runtime
/// dir that outlives it), or by this one in a runtime dir it no longer
/// uses; their programs are gone, and anyone may listen there now. By
/// name: unlink removes a link, never what it points to.
pub fn remove_port_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".port") || (name.starts_with('.') && name.ends_with(".port.tmp")) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// No port for `group` (its program is gone, or it listens on its Unix
/// socket now): Apache's requests wait for the next one, or fail at
/// queue-timeout, instead of going to a port someone else may bind.
pub fn unpublish_port(dir: &Path, group: &str) {
    let _ = std::fs::remove_file(port_file(dir, group));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_files_are_removed_by_name_and_nothing_else() {
        let base = std::env::temp_dir().join(format!("procd-runtime-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (dir, outside) = (base.join("run"), base.join("outside"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("precious"), "keep").unwrap();
        publish_port(&dir, "a", 8080).unwrap();
        std::fs::write(dir.join(".b.port.tmp"), "1").unwrap();
        std::fs::write(dir.join("a.sock"), "").unwrap();
        std::fs::write(dir.join("a.down"), "why").unwrap();
        std::os::unix::fs::symlink(outside.join("precious"), dir.join("link.port")).unwrap();
        assert_eq!(std::fs::read_to_string(port_file(&dir, "a")).unwrap(), "8080\n");
        remove_port_files(&dir);
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["a.down", "a.sock"]);
        assert_eq!(std::fs::read_to_string(outside.join("precious")).unwrap(), "keep");
        let _ = std::fs::remove_dir_all(&base);
    }
}
