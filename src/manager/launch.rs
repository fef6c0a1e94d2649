//! Starting one worker: the launch contract (`protocol::launch`) filled
//! in for a group's plan, then fork+exec by `crate::os`.

use crate::config::plan::GroupPlan;
use crate::os::{Launch, spawn_worker};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::Pid;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};

fn cstrings(items: impl IntoIterator<Item = String>) -> Result<Vec<CString>, String> {
    items
        .into_iter()
        .map(|s| CString::new(s).map_err(|_| "a NUL byte in the command or environment".to_string()))
        .collect()
}

/// Forks and execs one worker of `plan` on `listener` (a program on a
/// port gets /dev/null as fd 3, and the port in `PORT`).
pub fn start_worker(
    plan: &GroupPlan,
    gen_id: u64,
    slot: u32,
    listener: &super::Listener,
    cgroup: Option<&std::path::Path>,
    program: Option<std::os::fd::BorrowedFd<'_>>,
) -> Result<(Pid, OwnedFd, OwnedFd), String> {
    let cgroup_procs = cgroup
        .map(|dir| CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()))
        .transpose()
        .map_err(|_| "a NUL byte in the cgroup path".to_string())?;
    let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| format!("socketpair: {e}"))?;
    let (out_read, out_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let argv = cstrings(plan.argv.clone())?;
    let null;
    let (listen, socket, port) = match listener {
        super::Listener::Unix { socket, .. } => {
            let path = (plan.protocol == crate::config::languages::Protocol::Http)
                .then(|| socket.local_addr().ok()?.as_pathname().map(|p| p.display().to_string()))
                .flatten();
            (socket.as_fd(), path, None)
        }
        super::Listener::Tcp { port } => {
            null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
            (null.as_fd(), None, Some(*port))
        }
    };
    let contract = crate::protocol::launch::Worker {
        group: &plan.name,
        generation: gen_id,
        protocol: plan.protocol.name(),
        threads: plan.threads,
        app: plan.app.as_deref(),
        script_roots: &plan.script_roots,
        script_extensions: &plan.script_extensions,
        request_timeout_ms: plan.request_timeout_ms,
        maximum_requests: plan.maximum_requests,
        slot,
        slots: plan.processes,
        socket: socket.as_deref(),
        port,
    };
    let env: Vec<String> = crate::protocol::launch::environment(&plan.env, &contract)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let env = cstrings(env)?;
    let home = CString::new(plan.home.clone()).map_err(|_| "a NUL byte in home=".to_string())?;
    let launch = Launch {
        argv: &argv,
        env: &env,
        uid: plan.uid,
        gid: plan.gid,
        groups: &plan.groups,
        home: &home,
        listen,
        listen_at: crate::protocol::launch::listen_fd(plan.protocol.name()),
        status: theirs.as_fd(),
        output: out_write.as_fd(),
        cgroup_procs: cgroup_procs.as_ref(),
        program,
    };
    let pid = spawn_worker(&launch).map_err(|e| format!("fork: {e}"))?;
    drop(theirs);
    drop(out_write);
    super::procs::set_nonblocking(&ours);
    super::procs::set_nonblocking(&out_read);
    Ok((pid, ours, out_read))
}
