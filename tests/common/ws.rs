//! A WebSocket client by hand (RFC 6455), for the `http` tests: the
//! handshake through Apache, masked frames, and an echo check against
//! the Node test app's `/ws`.

use super::apache::Apache;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A WebSocket client by hand (RFC 6455): handshake, masked frames.
pub struct Ws {
    pub s: TcpStream,
    buf: Vec<u8>,
    /// The 101 answer's head.
    pub head: String,
    mask: u32,
}

impl Ws {
    pub fn connect(port: u16, path: &str) -> Result<Ws, String> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            let n = s.read(&mut chunk).map_err(|e| format!("handshake: {e}"))?;
            if n == 0 {
                return Err(format!("closed during the handshake: {:?}", String::from_utf8_lossy(&buf)));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") || !head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") {
            return Err(format!("not a WebSocket handshake: {head}"));
        }
        Ok(Ws { s, buf: buf[end + 4..].to_vec(), head, mask: 0x1234_5678 })
    }

    pub fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        self.mask = self.mask.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let key = self.mask.to_be_bytes();
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
        self.s.write_all(&f)
    }

    pub fn recv(&mut self) -> Result<(u8, Vec<u8>), String> {
        let mut chunk = [0u8; 65536];
        loop {
            if self.buf.len() >= 2 {
                let (op, mut len, mut off) = (self.buf[0] & 0x0f, usize::from(self.buf[1] & 0x7f), 2);
                if len == 126 && self.buf.len() >= 4 {
                    len = usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]]));
                    off = 4;
                } else if len == 127 && self.buf.len() >= 10 {
                    len = u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize;
                    off = 10;
                }
                if self.buf[1] & 0x80 != 0 {
                    return Err("a masked frame from the server".into());
                }
                if !(len >= 126 && off == 2) && self.buf.len() >= off + len {
                    let payload = self.buf[off..off + len].to_vec();
                    self.buf.drain(..off + len);
                    return Ok((op, payload));
                }
            }
            let n = self.s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn close(mut self) -> Result<(), String> {
        self.send(0x8, &1000u16.to_be_bytes()).map_err(|e| e.to_string())?;
        let (op, _) = self.recv()?;
        if op != 0x8 {
            return Err(format!("expected a close frame, got opcode {op}"));
        }
        let mut rest = Vec::new();
        let _ = self.s.read_to_end(&mut rest);
        Ok(())
    }
}

/// Message `i` (text, every 7th binary) sent and echoed back unchanged.
pub fn ws_echo(a: &Apache, ws: &mut Ws, i: usize) {
    let msg = format!("message {i} {}", "x".repeat(i % 300));
    let op = if i % 7 == 0 { 0x2 } else { 0x1 };
    if let Err(e) = ws.send(op, msg.as_bytes()) {
        a.fail(&format!("send {i}: {e}"));
    }
    match ws.recv() {
        Ok((o, p)) if o == op && p == msg.as_bytes() => {}
        other => a.fail(&format!("echo {i}: {other:?}")),
    }
}
