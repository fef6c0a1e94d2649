//! A connection to a group's program: over the group's Unix socket, or for
//! `listen=tcp` groups over loopback TCP. The `http` backend reads and
//! writes either the same way.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

pub(super) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// The same call on whichever socket it is.
macro_rules! either {
    ($self:expr, $s:ident => $call:expr) => {
        match $self {
            Stream::Unix($s) => $call,
            Stream::Tcp($s) => $call,
        }
    };
}

impl Stream {
    pub fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        either!(self, s => s.set_write_timeout(t))
    }

    pub fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        either!(self, s => s.set_nonblocking(on))
    }

    pub fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        either!(self, s => s.shutdown(how))
    }
}

/// Only for a stream set non-blocking (the tunnel): no receive timeout is
/// ever set on these sockets, so a blocking read would have no bound; wait
/// for a worker's answer with `read_within`.
impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        either!(self, s => s.read(buf))
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        either!(self, s => s.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        either!(self, s => s.flush())
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        either!(self, s => s.as_fd())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        either!(self, s => s.as_raw_fd())
    }
}
