//! The control channel between the httpd parent and the manager, both
//! ends (sans-IO): the parent writes one frame per configuration
//! generation, the manager reads them.
//!
//! A frame is a `u32` big-endian length, then that many bytes of the plan
//! (TOML, see `config::plan`), whose `version` field is this protocol's
//! version. The length is at most `MAX_PLAN`. The layout is kept as the
//! first release had it, since a manager survives graceful restarts and
//! may be older than the module that sends to it.

#![forbid(unsafe_code)]

/// The version of the plan format this build writes and reads.
pub const VERSION: u32 = 1;
/// The largest plan the httpd parent sends and the manager accepts: far
/// above what thousands of groups need (1,000 groups with 1 KB of `env=`
/// each make about 1.5 MB), far below what could hurt the manager.
pub const MAX_PLAN: usize = 64 << 20;
const HEADER: usize = 4;

/// Why a control stream cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    TooLarge(usize),
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::TooLarge(n) => {
                write!(f, "a configuration of {n} bytes, more than the {MAX_PLAN} the manager accepts")
            }
        }
    }
}

/// The parent's end: one frame for one plan.
pub fn encode(plan: &[u8]) -> Result<Vec<u8>, ControlError> {
    if plan.len() > MAX_PLAN {
        return Err(ControlError::TooLarge(plan.len()));
    }
    let mut frame = Vec::with_capacity(HEADER + plan.len());
    frame.extend_from_slice(&(plan.len() as u32).to_be_bytes());
    frame.extend_from_slice(plan);
    Ok(frame)
}

/// The manager's end: bytes in, whole plans out; never holds more than
/// one frame's worth.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Adds bytes read from the channel.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), ControlError> {
        if self.buf.len() + bytes.len() > HEADER + MAX_PLAN {
            return Err(ControlError::TooLarge(self.buf.len() + bytes.len()));
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next whole plan, if one is there.
    pub fn next_plan(&mut self) -> Result<Option<Vec<u8>>, ControlError> {
        let Some(head) = self.buf.first_chunk::<HEADER>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*head) as usize;
        if len > MAX_PLAN {
            return Err(ControlError::TooLarge(len));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let plan = self.buf[HEADER..HEADER + len].to_vec();
        self.buf.drain(..HEADER + len);
        Ok(Some(plan))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes() {
        assert_eq!(encode(b"version = 1\n").unwrap(), b"\x00\x00\x00\x0cversion = 1\n");
        assert_eq!(encode(b"").unwrap(), b"\x00\x00\x00\x00");
    }

    #[test]
    fn plans_come_out_whole_however_the_bytes_arrive() {
        let mut stream = encode(b"first").unwrap();
        stream.extend(encode(b"second plan").unwrap());
        for cut in 1..stream.len() {
            let mut d = Decoder::default();
            let mut plans = Vec::new();
            for piece in stream.chunks(cut) {
                d.push(piece).unwrap();
                while let Some(p) = d.next_plan().unwrap() {
                    plans.push(p);
                }
            }
            assert_eq!(plans, [b"first".to_vec(), b"second plan".to_vec()], "pieces of {cut}");
        }
    }

    #[test]
    fn oversized_plans_are_refused_without_buffering_them() {
        assert_eq!(encode(&vec![0; MAX_PLAN + 1]), Err(ControlError::TooLarge(MAX_PLAN + 1)));
        let mut d = Decoder::default();
        d.push(&u32::MAX.to_be_bytes()).unwrap();
        assert_eq!(d.next_plan(), Err(ControlError::TooLarge(u32::MAX as usize)));
        let mut d = Decoder::default();
        assert!(d.push(&vec![0; HEADER + MAX_PLAN + 1]).is_err());
    }
}
