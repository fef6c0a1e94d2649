//! `listen=tcp` groups (`http` only): a free loopback port for each
//! generation, and who listens on it.
//!
//! Any local user may bind a free port on 127.0.0.1, so between the moment
//! the manager picks a port and the moment the program binds it, another
//! tenant could take ("squat") it and receive the group's requests. So a
//! generation counts as started only when the listener on its port belongs
//! to the group's user (the kernel's socket table, `/proc/net/tcp` and
//! `tcp6`, says whose each listening socket is), and is refused otherwise.
//! While the program listens on 127.0.0.1:P (or 0.0.0.0:P), no other user
//! can bind an *overlapping* address with port P (the kernel allows
//! `SO_REUSEPORT` only between sockets of one user); other addresses with
//! the same port (127.0.0.2, ::1, `::` with `IPV6_V6ONLY`) can be bound by
//! anyone, but Apache's connections to 127.0.0.1:P never reach them, so
//! they are not counted (`owner_in`). Once the program stops listening,
//! anyone may bind the port: the manager looks again at every tick
//! (`Manager::watch_ports`).

use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Ports handed out lately are not handed out again: a port a drained
/// generation just released may still be in Apache's keep-alive pools'
/// memory, and a program of an old generation may still hold it.
const RECENT: usize = 512;
/// Tries at finding a port not handed out lately.
const PICK_TRIES: usize = 32;
/// At most this much of each socket table is read (about 200,000 sockets).
const TABLE_LIMIT: u64 = 32 << 20;
/// A line of the socket table longer than this is not one (they are ~150).
const LINE_LIMIT: usize = 512;
/// How long the readiness probe waits for the handshake.
const PROBE_WAIT: Duration = Duration::from_millis(50);

/// The ports the manager has handed out lately.
#[derive(Default)]
pub struct Ports {
    recent: VecDeque<u16>,
}

impl Ports {
    /// A port free on 127.0.0.1 now (the kernel picks it: bind port 0,
    /// read it, close), not one handed out lately.
    pub fn pick(&mut self) -> std::io::Result<u16> {
        for _ in 0..PICK_TRIES {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
            if !self.recent.contains(&port) {
                if self.recent.len() >= RECENT {
                    self.recent.pop_front();
                }
                self.recent.push_back(port);
                return Ok(port);
            }
        }
        Err(std::io::Error::other(format!(
            "no free loopback port that was not handed out lately after {PICK_TRIES} tries"
        )))
    }
}

/// Who listens on a port, as far as connections to 127.0.0.1 are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Nothing that a connection to 127.0.0.1 reaches listens there.
    Nobody,
    /// Only the group's user listens there; `backlog`: connections waiting
    /// to be accepted.
    Group { backlog: u32 },
    /// A socket of another user that a connection to 127.0.0.1 may reach
    /// listens on the port.
    Other { uid: u32 },
}

/// Which connections to 127.0.0.1 a listening socket receives, by its
/// local address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// 127.0.0.1, 0.0.0.0 (tcp), ::ffff:127.0.0.1 or ::ffff:0.0.0.0
    /// (tcp6, v4-mapped): it does.
    Yes,
    /// `::` (tcp6): it does unless the socket is `IPV6_V6ONLY`, which
    /// /proc does not show.
    Unless6Only,
    /// Any other address (127.0.0.2, ::1, a public address): never.
    No,
}

/// One listening socket of the kernel's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    pub uid: u32,
    /// Connections waiting to be accepted.
    pub backlog: u32,
    /// Whether connections to 127.0.0.1 reach it.
    pub reach: Reach,
}

/// The listening socket a line of `/proc/net/tcp` (or `tcp6`) describes,
/// if it is one on `port`. Format (kernel `tcp4_seq_show`): `sl
/// local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid
/// timeout inode ...`, addresses as hex words in host byte order and the
/// port as hex; `st` 0A is LISTEN, and a listener's `rx_queue` is its
/// accept backlog.
pub fn listening_on(line: &str, port: u16) -> Option<Listening> {
    let mut fields = line.split_ascii_whitespace();
    let _slot = fields.next()?;
    let (address, local_port) = fields.next()?.split_once(':')?;
    let _remote = fields.next()?;
    let state = fields.next()?;
    let (_, rx_queue) = fields.next()?.split_once(':')?;
    let _timer = fields.next()?;
    let _retransmits = fields.next()?;
    let uid = fields.next()?.parse().ok()?;
    if state != "0A" || u16::from_str_radix(local_port, 16).ok()? != port {
        return None;
    }
    let backlog = u32::from_str_radix(rx_queue, 16).ok()?;
    let reach = match (address.len(), address) {
        // 127.0.0.1 or 0.0.0.0, one word in host (little-endian) order.
        (8, "0100007F" | "00000000") => Reach::Yes,
        (8, _) => Reach::No,
        // ::ffff:127.0.0.1 or ::ffff:0.0.0.0 (four words), or ::.
        (32, "0000000000000000FFFF00000100007F" | "0000000000000000FFFF000000000000") => Reach::Yes,
        (32, "00000000000000000000000000000000") => Reach::Unless6Only,
        (32, _) => Reach::No,
        _ => return None,
    };
    Some(Listening { uid, backlog, reach })
}

/// The listening sockets on `port` in the socket tables `tables` (their
/// text, each read bounded), judged for the group's `uid`.
///
/// Only sockets a connection to 127.0.0.1:`port` may reach count: another
/// user's listener on 127.0.0.2, ::1 or a public address is none of the
/// group's business (refusing it would let any tenant block the group's
/// new generations by listening there). `[::]:port` is ambiguous: dual-
/// stack it receives 127.0.0.1's connections, `IPV6_V6ONLY` it does not,
/// and /proc does not say which. The kernel does not let a dual-stack
/// `[::]:port` and `127.0.0.1:port` (or `0.0.0.0:port`) sockets of two
/// users coexist, so another user's `[::]:port` is V6ONLY, and ignored,
/// while the group's user listens on 127.0.0.1 or 0.0.0.0 there; without
/// such a listener it counts as another user's (refused: a tenant who
/// binds `[::]:port` before the program costs that generation a retry on
/// a new port, and cannot touch a program that already listens).
pub fn owner_in<'a>(tables: impl IntoIterator<Item = &'a str>, port: u16, uid: u32) -> Owner {
    let mut backlog: Option<u32> = None;
    // The group's user listens where 127.0.0.1's connections surely go.
    let mut group_v4 = false;
    let mut other: Option<u32> = None;
    let mut other_dual: Option<u32> = None;
    for line in tables.into_iter().flat_map(str::lines) {
        let Some(l) = listening_on(line, port) else {
            continue;
        };
        match (l.uid == uid, l.reach) {
            (_, Reach::No) => {}
            (true, reach) => {
                group_v4 |= reach == Reach::Yes;
                backlog = Some(backlog.unwrap_or(0).saturating_add(l.backlog));
            }
            (false, Reach::Yes) => other = other.or(Some(l.uid)),
            (false, Reach::Unless6Only) => other_dual = other_dual.or(Some(l.uid)),
        }
    }
    match (other, other_dual, backlog) {
        (Some(uid), _, _) => Owner::Other { uid },
        (None, Some(uid), _) if !group_v4 => Owner::Other { uid },
        (None, _, Some(backlog)) => Owner::Group { backlog },
        (None, _, None) => Owner::Nobody,
    }
}

/// At most `TABLE_LIMIT` bytes of a socket table, without over-long lines.
fn read_table(path: &str) -> String {
    let Ok(file) = std::fs::File::open(path) else {
        return String::new(); // no IPv6: no tcp6
    };
    let mut text = String::new();
    let mut reader = std::io::BufReader::new(file.take(TABLE_LIMIT));
    let mut line = String::new();
    loop {
        line.clear();
        match reader.by_ref().take(LINE_LIMIT as u64).read_line(&mut line) {
            Ok(0) | Err(_) => return text,
            Ok(_) if !line.ends_with('\n') => return text, // cut: not the kernel's format
            Ok(_) => text.push_str(&line),
        }
    }
}

/// The kernel's socket tables as read once (bounded), to judge any
/// number of ports: the manager reads them once per tick.
pub struct Tables {
    v4: String,
    v6: String,
}

impl Tables {
    pub fn read() -> Tables {
        Tables { v4: read_table("/proc/net/tcp"), v6: read_table("/proc/net/tcp6") }
    }

    /// Who listens on 127.0.0.1:`port`, for a group of user `uid`.
    pub fn owner(&self, port: u16, uid: u32) -> Owner {
        owner_in([self.v4.as_str(), self.v6.as_str()], port, uid)
    }
}

/// Who listens on 127.0.0.1:`port`, for a group of user `uid`, now.
pub fn who_listens(port: u16, uid: u32) -> Owner {
    Tables::read().owner(port, uid)
}

/// Whether a connection to 127.0.0.1:`port` is accepted (the handshake
/// completes) within `PROBE_WAIT`. The probe sends nothing.
pub fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), PROBE_WAIT).is_ok()
}

/// The user name of `uid`, for log lines.
pub fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| format!("{} (uid {uid})", u.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:A0F2 00000000:0000 0A 00000000:00000002 00:00000000 00000000  1001        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A0F2 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1001        0 4243 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1 0000000000000000 100 0 0 10 0
";
    const V6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1002        0 99 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:2710 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 98 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn the_groups_own_listener_with_its_backlog() {
        // 0xA0F2 = 41202; the established connection on it is not a listener.
        assert_eq!(owner_in([V4, V6], 41202, 1001), Owner::Group { backlog: 2 });
        assert_eq!(listening_on(V4.lines().nth(1).unwrap(), 41202).map(|l| l.reach), Some(Reach::Yes));
    }

    /// The group's program on 127.0.0.1:41202 (0xA0F2, uid 1001) and other
    /// users on the same port where 127.0.0.1's connections never go.
    const BESIDE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:A0F2 00000000:0000 0A 00000000:00000001 00:00000000 00000000  1001        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0200007F:A0F2 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1002        0 4244 1 0000000000000000 100 0 0 10 0
   2: 0100A8C0:A0F2 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1003        0 4245 1 0000000000000000 100 0 0 10 0
";
    /// tcp6: ::1, :: (V6ONLY or not: /proc does not say) and a v4-mapped
    /// 127.0.0.1, all on 41202, of three other users.
    const SIX_LOOP: &str = "   0: 00000000000000000000000001000000:A0F2 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1004        0 97 1 0000000000000000 100 0 0 10 0\n";
    const SIX_ANY: &str = "   0: 00000000000000000000000000000000:A0F2 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1005        0 96 1 0000000000000000 100 0 0 10 0\n";
    const SIX_MAPPED: &str = "   0: 0000000000000000FFFF00000100007F:A0F2 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1006        0 95 1 0000000000000000 100 0 0 10 0\n";
    const SIX_MAPPED_ANY: &str = "   0: 0000000000000000FFFF000000000000:A0F2 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1007        0 94 1 0000000000000000 100 0 0 10 0\n";

    #[test]
    fn listeners_that_127_0_0_1_never_reaches_are_not_squatters() {
        // 127.0.0.2, 192.168.0.1 and ::1 beside the program: not counted.
        assert_eq!(owner_in([BESIDE, SIX_LOOP], 41202, 1001), Owner::Group { backlog: 1 });
        // [::]:P of another user beside the program's 127.0.0.1:P must be
        // V6ONLY (the kernel refuses a dual-stack one there): not counted.
        assert_eq!(owner_in([BESIDE, SIX_ANY], 41202, 1001), Owner::Group { backlog: 1 });
        // Without the program's listener: 127.0.0.2 and ::1 are nobody,
        // [::]:P may be dual-stack and is another user's.
        let others: String =
            BESIDE.lines().filter(|l| !l.contains("0100007F:A0F2")).map(|l| format!("{l}\n")).collect();
        assert_eq!(owner_in([others.as_str(), SIX_LOOP], 41202, 1001), Owner::Nobody);
        assert_eq!(owner_in([others.as_str(), SIX_ANY], 41202, 1001), Owner::Other { uid: 1005 });
        // v4-mapped 127.0.0.1 and 0.0.0.0 reach it, with or without the program.
        assert_eq!(owner_in([BESIDE, SIX_MAPPED], 41202, 1001), Owner::Other { uid: 1006 });
        assert_eq!(owner_in([BESIDE, SIX_MAPPED_ANY], 41202, 1001), Owner::Other { uid: 1007 });
        // The group's own [::]:P counts as the group's (the probe connects
        // to 127.0.0.1 before it is ready), and then another user's [::]:P
        // is refused (they cannot both be there unless something is odd).
        assert_eq!(owner_in([SIX_ANY], 41202, 1005), Owner::Group { backlog: 0 });
        assert_eq!(
            owner_in([SIX_ANY, SIX_ANY.replace("1005", "1008").as_str()], 41202, 1005),
            Owner::Other { uid: 1008 }
        );
        // Another user's 0.0.0.0:P always counts.
        let any = BESIDE.replace("0200007F:A0F2", "00000000:A0F2");
        assert_eq!(owner_in([any.as_str()], 41202, 1001), Owner::Other { uid: 1002 });
    }

    #[test]
    fn a_listener_of_another_user_is_a_squatter() {
        assert_eq!(owner_in([V4, V6], 41202, 1002), Owner::Other { uid: 1001 });
        // 0x1F90 = 8080 on :: by uid 1002 (IPv4 connections reach it).
        assert_eq!(owner_in([V4, V6], 8080, 1001), Owner::Other { uid: 1002 });
        assert_eq!(owner_in([V4, V6], 8080, 1002), Owner::Group { backlog: 0 });
    }

    #[test]
    fn nothing_or_only_unreachable_listeners_is_nobody() {
        assert_eq!(owner_in([V4, V6], 5000, 1001), Owner::Nobody);
        // 0x2710 = 10000 on ::1 only: connections to 127.0.0.1 do not reach it.
        assert_eq!(owner_in([V4, V6], 10000, 1001), Owner::Nobody);
        assert_eq!(owner_in(["garbage", "1: zz:zz", ""], 80, 0), Owner::Nobody);
        assert_eq!(
            listening_on("0: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000 x", 80),
            None
        );
        assert_eq!(listening_on("0: 7F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000 5", 80), None);
    }

    #[test]
    fn ports_are_free_and_not_handed_out_twice_in_a_row() {
        let mut ports = Ports::default();
        let picked: Vec<u16> = (0..20).map(|_| ports.pick().unwrap()).collect();
        let distinct: std::collections::BTreeSet<u16> = picked.iter().copied().collect();
        assert_eq!(distinct.len(), picked.len());
        assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, picked[0])).is_ok());
    }

    #[test]
    fn the_live_table_sees_our_own_listener() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(who_listens(port, me), Owner::Group { backlog: 0 });
        assert_eq!(who_listens(port, me + 1), Owner::Other { uid: me });
        assert!(answers(port));
        drop(l);
        assert_eq!(who_listens(port, me), Owner::Nobody);
        assert!(!answers(port));
    }
}
