//! The manager's end of the control channel: plans from the httpd parent
//! only (the kernel names each sender), framed as `protocol::control`
//! says, then validated (`Plan::from_text`) and applied.

use super::{EXIT_PANIC, Manager, id, log};
use crate::config::plan::Plan;
use crate::logid::{Level, pd_log};
use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

impl Manager {
    /// Reads the control channel. Only bytes the kernel says the httpd
    /// parent sent are kept: any other holder of the channel (none should
    /// exist) is refused and logged. Returns false at EOF.
    pub(super) fn read_control(&mut self, control: &OwnedFd) -> bool {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg};
        let mut buf = vec![0u8; 65536];
        // At most 1 MiB a round: a flood on the channel cannot hold the loop.
        for _ in 0..16 {
            let mut space = nix::cmsg_space!(UnixCredentials);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let (n, sender) =
                match recvmsg::<()>(control.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_DONTWAIT) {
                    Ok(msg) => {
                        let sender = msg.cmsgs().ok().and_then(|mut c| {
                            c.find_map(|m| match m {
                                ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                                _ => None,
                            })
                        });
                        (msg.bytes, sender)
                    }
                    Err(Errno::EAGAIN) => break,
                    Err(Errno::EINTR) => continue,
                    Err(_) => return false,
                };
            if n == 0 {
                return false;
            }
            if sender == Some(self.httpd.as_raw()) {
                if let Err(e) = self.control.push(&buf[..n]) {
                    pd_log!(level: Level::Crit, id::MANAGER, "{e}; exiting");
                    crate::os::exit_now(EXIT_PANIC);
                }
            } else if self.refused_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                self.refused_logged = Some(Instant::now());
                let who = sender.map_or("an unknown process".to_string(), |p| format!("pid {p}"));
                pd_log!(
                    id::REFUSED,
                    "refused {n} bytes on the control channel from {who}: only the httpd parent (pid {}) configures the manager",
                    self.httpd
                );
            }
        }
        loop {
            let frame = match self.control.next_plan() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    pd_log!(level: Level::Crit, id::MANAGER, "{e}; exiting");
                    crate::os::exit_now(EXIT_PANIC);
                }
            };
            match std::str::from_utf8(&frame).map_err(|e| e.to_string()).and_then(Plan::from_text) {
                Ok(plan) => self.apply(plan),
                Err(e) => {
                    // A first plan refused: its main log (from httpd, whose
                    // bytes these are) is where the reason goes.
                    if let Some(main) = Plan::main_log_of(&frame) {
                        self.logs.lock().reset_if_unset(&main);
                    }
                    pd_log!(level: Level::Crit, id::MANAGER, "{}", log::escape(e.as_bytes()));
                }
            }
        }
        true
    }
}
