//! The `cgi` backend: one CGI script per request (RFC 3875), run by the
//! group's launcher (`src/launcher/procd_cgi.rs`), a resident process of
//! the group's user that spawns the script with this connection as its
//! stdin and stdout. Apache never forks on the request path and
//! nothing runs as root.
//!
//! The exchange (PROTOCOL.md, "CGI launcher"): connect within
//! `queue-timeout`; send one REQUEST frame (the CGI environment); send the
//! body, exactly CONTENT_LENGTH bytes (a chunked body is spooled first, so
//! the script sees a correct CONTENT_LENGTH), then shut the write side;
//! read the script's output until EOF: a CGI head (Status, Location: a
//! local path is an internal redirect), then the body, streamed to the
//! client as it comes. The script's stderr goes to the group's log through
//! the launcher. At `request-timeout` Apache answers 504 and the launcher
//! kills the script's process group.

use super::fastcgi::{Body, spool, write_body};
use super::readbuf::ReadBuf;
use super::{
    BodyLength, Client, Outcome, Target, bad_gateway_plain, connect_failure, connect_within, content_length, epoch_ms,
};
use crate::protocol::cgi::{CgiHead, head_may_have_changed, parse_head};
use crate::protocol::{EnvBuilder, Frame, encode};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime};

/// Sends one request to `target`'s launcher and streams the script's answer.
pub fn proxy(client: &mut dyn Client, target: &Target, mut env: Vec<u8>) -> Outcome {
    let g = &target.group;
    let mut extra = EnvBuilder::default();
    let mut body = match client.body_length() {
        BodyLength::None => Body::Done,
        BodyLength::Known(_) => Body::Client,
        BodyLength::Chunked => match spool(client) {
            Ok((body, n)) => {
                extra.add(b"CONTENT_LENGTH", n.to_string().as_bytes());
                body
            }
            Err(e) => {
                return Outcome::Failed {
                    status: 400,
                    retry_after: None,
                    log: format!("group {g}: reading the chunked request body failed: {e}"),
                };
            }
        },
    };
    let queue_timeout = target.queue_timeout.max(Duration::from_millis(50));
    let queue_deadline = Instant::now() + queue_timeout;
    extra.add(b"PROCD_QUEUED_AT_MS", epoch_ms(SystemTime::now()).to_string().as_bytes());
    extra.add(b"PROCD_QUEUE_TIMEOUT_MS", queue_timeout.as_millis().to_string().as_bytes());
    if let BodyLength::Chunked = client.body_length() {
        remove_var(&mut env, b"CONTENT_LENGTH");
    }
    env.extend_from_slice(&extra.finish());
    let mut out = Vec::with_capacity(env.len() + 16);
    encode(&Frame::Request { env }, &mut out);

    let mut stream = match connect_within(&target.socket, queue_deadline) {
        Ok(s) => s,
        Err(e) => return connect_failure(target, queue_timeout, e),
    };
    let queue_left = queue_deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let _ = stream.set_write_timeout(Some(queue_left));
    if let Err(e) = stream.write_all(&out) {
        return Outcome::Failed {
            status: 503,
            retry_after: Some(5),
            log: format!(
                "group {g}: the CGI launcher did not take the request within queue-timeout ({} s): {e}",
                queue_timeout.as_secs_f32()
            ),
        };
    }
    if stream.set_nonblocking(true).is_err() {
        return bad_gateway_plain(format!("group {g}: cannot make the launcher connection non-blocking"));
    }
    let mut deadline = Instant::now() + target.request_timeout;
    out.clear();
    let mut out_at = 0;
    let mut body_done = matches!(body, Body::Done);
    if body_done {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut script_gone_reading = false;
    let mut chunk = ReadBuf::take(64 << 10);
    let mut head_buf: Vec<u8> = Vec::new();
    let mut head_sent = false;
    let mut declared: Option<u64> = None;
    let mut sent: u64 = 0;
    let mut bodiless = false;
    let mut unflushed = false;
    let fail = |head_sent: bool, status: u16, log: String| {
        if head_sent { Outcome::Cut { log } } else { Outcome::Failed { status, retry_after: None, log } }
    };

    let outcome = loop {
        // The next piece of the body for the script's stdin.
        if out_at == out.len() && !body_done && !script_gone_reading {
            out.clear();
            out_at = 0;
            let waiting = Instant::now();
            let piece = body.next_piece(client);
            deadline += waiting.elapsed();
            match piece {
                Ok(piece) if piece.is_empty() => {
                    body_done = true;
                    body = Body::Done;
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                }
                Ok(piece) => out = piece,
                Err(e) => {
                    break fail(
                        head_sent,
                        400,
                        format!("group {g}: reading the request body from the client failed: {e}"),
                    );
                }
            }
        }
        if out_at < out.len() && !script_gone_reading {
            match stream.write(&out[out_at..]) {
                Ok(n) => out_at += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                // The script stopped reading its stdin (it may answer anyway).
                Err(_) => script_gone_reading = true,
            }
        }
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if out_at == out.len() && !body_done && !script_gone_reading {
                    continue; // more body to send first
                }
                if unflushed {
                    let waiting = Instant::now();
                    let flushed = client.flush();
                    deadline += waiting.elapsed();
                    unflushed = false;
                    if !flushed {
                        break Outcome::Done;
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break fail(
                        head_sent,
                        504,
                        format!(
                            "group {g}: request-timeout ({} s) exceeded: the script did not finish in time; its launcher kills it and its process group",
                            target.request_timeout.as_secs_f32()
                        ),
                    );
                }
                let mut flags = PollFlags::POLLIN;
                if out_at < out.len() && !script_gone_reading {
                    flags |= PollFlags::POLLOUT;
                }
                let ms = u16::try_from(left.as_millis().clamp(1, 10_000)).unwrap_or(10_000);
                let mut fds = [PollFd::new(stream.as_fd(), flags)];
                let _ = poll(&mut fds, PollTimeout::from(ms));
                continue;
            }
            Err(_) => 0,
        };
        if n == 0 {
            // EOF: the script has ended (and its children closed stdout).
            if !head_sent {
                break fail(
                    false,
                    502,
                    format!(
                        "group {g}: the script ended without a CGI response head (its stderr, in the group's log, may say why)"
                    ),
                );
            }
            break match declared {
                Some(limit) if sent < limit => Outcome::Cut {
                    log: format!("group {g}: the script ended after {sent} bytes of its Content-Length ({limit})"),
                },
                _ => Outcome::Done,
            };
        }
        let data = &chunk[..n];
        if head_sent {
            if let Some(outcome) = write_body(client, g, data, declared, &mut sent, bodiless, &mut deadline) {
                break outcome;
            }
            unflushed = true;
            continue;
        }
        head_buf.extend_from_slice(data);
        if !head_may_have_changed(head_buf.len(), data) {
            continue;
        }
        match parse_head(&head_buf) {
            Ok(None) => {}
            Err(e) => break fail(false, 502, format!("group {g}: bad answer from the script: {e}")),
            Ok(Some((CgiHead::LocalRedirect { location }, _))) => break Outcome::LocalRedirect { location },
            Ok(Some((CgiHead::Response { status, mut headers }, used))) => {
                let length = match content_length(&mut headers) {
                    Ok(length) => length,
                    Err(why) => break fail(false, 502, format!("group {g}: bad answer from the script: {why}")),
                };
                bodiless = status == 204 || status == 304;
                if !bodiless && !client.head_only() {
                    declared = length;
                }
                client.start_response(status, &headers);
                head_sent = true;
                let rest = head_buf.split_off(used);
                head_buf = Vec::new();
                if let Some(outcome) = write_body(client, g, &rest, declared, &mut sent, bodiless, &mut deadline) {
                    break outcome;
                }
                unflushed = !rest.is_empty();
            }
        }
    };
    if !body_done && client.body_length() != BodyLength::None {
        client.body_not_read();
    }
    if let Outcome::Cut { .. } = outcome {
        client.abort();
    }
    outcome
}

/// Drops `name` from a `name\0value\0` environment blob.
fn remove_var(env: &mut Vec<u8>, name: &[u8]) {
    let mut out = Vec::with_capacity(env.len());
    let mut parts = env.split(|b| *b == 0);
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        if k.is_empty() || k == name {
            continue;
        }
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    *env = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variable_leaves_the_environment() {
        let mut env = b"A\0one\0CONTENT_LENGTH\0\0B\0\0".to_vec();
        remove_var(&mut env, b"CONTENT_LENGTH");
        assert_eq!(env, b"A\0one\0B\0\0");
    }
}
