//! The `procd` backend: mod_procd's own framed protocol (see
//! src/protocol/PROTOCOL.md), spoken by the shipped loaders.

use super::readbuf::ReadBuf;
use super::{
    Client, Outcome, Target, bad_gateway_plain, connect_failure, connect_within, content_length, epoch_ms, read_within,
    recent_death, worker_fate,
};
use crate::protocol::{EnvBuilder, Frame, ProtocolError, decode, encode, escape_log_bounded};
use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// How often Apache asks the kernel whether a worker took a queued request.
const QUEUE_POLL: Duration = Duration::from_millis(100);

/// Largest body chunk relayed in one BODY frame.
const BODY_CHUNK: usize = 256 << 10;

/// Bytes read from the worker, with one reusable read buffer per request.
struct Inbox {
    buf: Vec<u8>,
    chunk: ReadBuf,
}

fn read_frame(stream: &UnixStream, inbox: &mut Inbox, deadline: Instant) -> Result<Frame, ReadError> {
    let Inbox { buf, chunk } = inbox;
    loop {
        match decode(buf) {
            Ok(Some((frame, used))) => {
                buf.drain(..used);
                return Ok(frame);
            }
            Ok(None) => {}
            Err(e) => return Err(ReadError::Protocol(e)),
        }
        match read_within(stream.as_fd(), chunk, deadline) {
            Ok(None) => return Err(ReadError::Timeout),
            Ok(Some(0)) => return Err(ReadError::Closed),
            Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Err(ReadError::Io),
        }
    }
}

enum ReadError {
    Timeout,
    Closed,
    /// A read error other than a timeout: the worker's side is gone too.
    Io,
    Protocol(ProtocolError),
}

fn send(stream: &mut UnixStream, frame: &Frame) -> std::io::Result<()> {
    let mut out = Vec::new();
    encode(frame, &mut out);
    stream.write_all(&out)
}

/// Sends the REQUEST frame on a new connection. It usually fits the empty
/// socket buffer at once, under the short send timeout `connect_within`
/// left; one that does not (large headers, a small net.core.wmem_default)
/// waits for a worker to read it, up to the queue deadline.
fn send_request(stream: &mut UnixStream, env: Vec<u8>, queue_deadline: Instant) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(env.len() + 16);
    encode(&Frame::Request { env }, &mut out);
    let mut at = 0;
    let mut patient = false;
    while at < out.len() {
        match stream.write(&out[at..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if !patient && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                patient = true;
                let left = queue_deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
                stream.set_write_timeout(Some(left))?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends one request to `target` and streams the answer to `client`.
pub fn proxy(client: &mut dyn Client, target: &Target, env: Vec<u8>) -> Outcome {
    let g = &target.group;
    let started = std::time::SystemTime::now();
    let unavailable = |log: String| Outcome::Failed { status: 503, retry_after: Some(5), log };
    // queue-timeout bounds all the waiting for a worker: the connect, and
    // the wait for the worker's first frame.
    let queue_timeout = target.queue_timeout.max(Duration::from_millis(50));
    let begun = Instant::now();
    let queue_deadline = begun + queue_timeout;
    // A worker that takes the request after this deadline (Apache has
    // answered 503 by then) drops it unrun: see PROTOCOL.md.
    let mut env = EnvBuilder::continuing(env);
    env.add(b"PROCD_QUEUED_AT_MS", epoch_ms(started).to_string().as_bytes());
    env.add(b"PROCD_QUEUE_TIMEOUT_MS", queue_timeout.as_millis().to_string().as_bytes());
    let env = env.finish();
    let mut stream = match connect_within(&target.socket, queue_deadline) {
        Ok(s) => s,
        Err(e) => return connect_failure(target, queue_timeout, e),
    };
    let mut buf = Inbox { buf: Vec::new(), chunk: ReadBuf::take(32 << 10) };

    // 1. The request waits in the socket until a worker accepts it...
    if let Err(e) = send_request(&mut stream, env, queue_deadline) {
        return unavailable(format!("group {g}: cannot queue the request: {e}; the group is overloaded"));
    }

    // 2. ...and the worker that does says HELLO. Its first frame (HELLO,
    // sent with the worker's first answer) may come long after it took the
    // request, so Apache also asks the kernel, every QUEUE_POLL, whether a
    // worker has read the REQUEST: from then on request-timeout runs (it
    // measures the application, not the time in the queue). Nobody took it
    // within queue-timeout: 503.
    let mut taken_at: Option<Instant> = None;
    let pid = loop {
        let until = match taken_at {
            None => (Instant::now() + QUEUE_POLL).min(queue_deadline),
            Some(taken) => taken + target.request_timeout,
        };
        match read_frame(&stream, &mut buf, until) {
            Ok(Frame::Hello { pid }) => {
                client.taken(taken_at.unwrap_or_else(Instant::now).saturating_duration_since(begun), pid);
                break pid;
            }
            Ok(other) => return bad_gateway(g, 0, &format!("expected HELLO, got {}", other.name())),
            Err(ReadError::Timeout) if taken_at.is_none() => {
                if matches!(crate::os::unread_by_peer(&stream), Ok(0)) {
                    taken_at = Some(Instant::now());
                } else if Instant::now() >= queue_deadline {
                    return unavailable(format!(
                        "group {g}: no worker became free within queue-timeout ({} s); the group is overloaded or its requests are slow: add processes= or threads=",
                        queue_timeout.as_secs_f32()
                    ));
                }
            }
            Err(ReadError::Timeout) => {
                return Outcome::Failed {
                    status: 504,
                    retry_after: None,
                    log: format!(
                        "group {g}: request-timeout ({} s) exceeded before the worker answered; the worker exits and the manager replaces it",
                        target.request_timeout.as_secs_f32()
                    ),
                };
            }
            Err(ReadError::Closed | ReadError::Io) => {
                // A worker took the request and ended before its first frame.
                let late = taken_at.unwrap_or_else(Instant::now) + QUEUE_POLL * 2 >= queue_deadline;
                let who = recent_death(&target.exits, g, started).unwrap_or_else(|| {
                    if late {
                        // Taken at about queue-timeout: the worker may have
                        // found it too old and dropped it unrun.
                        "a worker closed the connection without answering (it may have crashed, or taken the request just after queue-timeout and dropped it unrun: see the group's error log)".into()
                    } else {
                        "a worker closed the connection without answering (it may have crashed)".into()
                    }
                });
                return bad_gateway_plain(format!("group {g}: {who} while handling this request"));
            }
            Err(ReadError::Protocol(e)) => return bad_gateway(g, 0, &e.to_string()),
        }
    };

    // 3. Frames until END.
    // request-timeout measures the application: from when a worker took the
    // request, less the time spent waiting on the client (reading its body,
    // writing and flushing to it), which moves the deadline on by as much.
    // (Each of those waits is bounded by Apache's own Timeout.)
    let mut deadline = taken_at.unwrap_or_else(Instant::now) + target.request_timeout;
    let mut headers_sent = false;
    // The worker's Content-Length, when the client is to get a body: the
    // body it sends is held to it (`sent` bytes so far).
    let mut declared: Option<u64> = None;
    let mut sent: u64 = 0;
    let mut bodiless = false;
    let mut pulled = false;
    let mut body_done = false;
    let fail = |headers_sent: bool, status: u16, log: String| {
        if headers_sent { Outcome::Cut { log } } else { Outcome::Failed { status, retry_after: None, log } }
    };
    let outcome = loop {
        match read_frame(&stream, &mut buf, deadline) {
            Ok(Frame::Pull { max }) => {
                if !pulled {
                    // BODY frames: each write is bounded by request-timeout
                    // (set here, not for the many requests without a body).
                    let _ = stream.set_write_timeout(Some(target.request_timeout));
                }
                pulled = true;
                let chunk = if body_done {
                    Vec::new()
                } else {
                    let waiting = Instant::now();
                    let read = client.read_body((max as usize).min(BODY_CHUNK));
                    deadline += waiting.elapsed();
                    match read {
                        Ok(chunk) => chunk,
                        Err(e) => {
                            break fail(
                                headers_sent,
                                400,
                                format!("group {g}: reading the request body from the client failed: {e}"),
                            );
                        }
                    }
                };
                body_done = chunk.is_empty();
                if send(&mut stream, &Frame::Body(chunk)).is_err() {
                    break fail(
                        headers_sent,
                        502,
                        format!(
                            "group {g}: worker pid {pid} went away while reading the request body: {}",
                            worker_fate(&target.exits, g, pid)
                        ),
                    );
                }
            }
            Ok(Frame::Headers { status, mut headers }) if !headers_sent => {
                let length = match content_length(&mut headers) {
                    Ok(length) => length,
                    Err(why) => break fail(false, 502, format!("group {g}: bad answer from worker pid {pid}: {why}")),
                };
                // 204 and 304 have no body; HEAD's Apache drops.
                bodiless = status == 204 || status == 304;
                if !bodiless && !client.head_only() {
                    declared = length;
                }
                if !pulled {
                    client.body_not_read();
                }
                client.start_response(status, &headers);
                headers_sent = true;
            }
            Ok(Frame::Data(data)) if headers_sent => {
                if bodiless {
                    continue;
                }
                let mut data = &data[..];
                let room = declared.map(|limit| limit - sent);
                let over = room.is_some_and(|room| data.len() as u64 > room);
                if let (true, Some(room)) = (over, room) {
                    data = &data[..room as usize];
                }
                sent += data.len() as u64;
                let waiting = Instant::now();
                let written = data.is_empty() || client.write(data);
                deadline += waiting.elapsed();
                if !written {
                    break Outcome::Done; // the client left; closing tells the worker
                }
                if over {
                    // Never more than the client was told: the rest would be
                    // read as the next response on this connection.
                    break Outcome::Cut {
                        log: format!(
                            "group {g}: worker pid {pid} sent more than its Content-Length ({sent}); the response was stopped there"
                        ),
                    };
                }
            }
            Ok(Frame::Flush) if headers_sent => {
                let waiting = Instant::now();
                let flushed = client.flush();
                deadline += waiting.elapsed();
                if !flushed {
                    break Outcome::Done;
                }
            }
            Ok(Frame::End) if headers_sent => {
                match declared {
                    // Too short: the client would wait for the rest, or read
                    // the next response as this body.
                    Some(limit) if sent < limit => {
                        break Outcome::Cut {
                            log: format!(
                                "group {g}: worker pid {pid} ended its response after it sent {sent} bytes of its Content-Length ({limit})"
                            ),
                        };
                    }
                    _ => break Outcome::Done,
                }
            }
            Ok(Frame::Error(why)) => {
                break fail(
                    headers_sent,
                    500,
                    format!(
                        "group {g}: the application failed in worker pid {pid}: \"{}\" (traceback in the group's error log)",
                        escape_log_bounded(&why)
                    ),
                );
            }
            Ok(other) => {
                let what = format!("unexpected {} frame (headers sent: {headers_sent})", other.name());
                break fail(headers_sent, 502, format!("group {g}: malformed response from worker pid {pid}: {what}"));
            }
            Err(ReadError::Timeout) => {
                break fail(
                    headers_sent,
                    504,
                    format!(
                        "group {g}: request-timeout ({} s) exceeded: worker pid {pid} did not finish in time; the worker exits and the manager replaces it",
                        target.request_timeout.as_secs_f32()
                    ),
                );
            }
            Err(ReadError::Closed | ReadError::Io) => {
                break fail(
                    headers_sent,
                    502,
                    format!(
                        "group {g}: worker pid {pid} {} while handling this request",
                        worker_fate(&target.exits, g, pid)
                    ),
                );
            }
            Err(ReadError::Protocol(e)) => {
                break fail(headers_sent, 502, format!("group {g}: malformed response from worker pid {pid}: {e}"));
            }
        }
    };
    if !pulled {
        client.body_not_read();
    }
    if let Outcome::Cut { .. } = outcome {
        client.abort();
    }
    outcome
}

fn bad_gateway(group: &str, pid: u32, why: &str) -> Outcome {
    Outcome::Failed {
        status: 502,
        retry_after: None,
        log: format!("group {group}: bad answer from worker pid {pid}: {why}"),
    }
}
