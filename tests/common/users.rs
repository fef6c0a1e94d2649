//! System users and groups the tests create, and running commands as them.

use std::process::Command;

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

/// The uid of an existing user.
pub fn uid_of(name: &str) -> u32 {
    let out = std::process::Command::new("id").args(["-u", name]).output().expect("run id");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a uid")
}
