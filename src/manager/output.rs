//! Worker output on its way to the logs: read in bounded pieces, cut into
//! lines of at most `MAX_LINE` bytes, and limited per group to a rate, with
//! what is dropped counted and summed up in one line.

use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Longest line of worker output kept before it is logged in pieces.
pub const MAX_LINE: usize = 8192;
/// Most bytes read from one worker's output pipe per round of the event
/// loop: a worker that writes without pause cannot hold the manager.
pub const READ_BUDGET: usize = 64 << 10;
/// Worker output a group may log per second (bytes); more is dropped,
/// counted, and summed up in one line (PD0212) per `OUTPUT_SUMMARY`.
pub const OUTPUT_RATE: u64 = 1 << 20;
/// Bytes a group may log at once before the rate applies.
pub const OUTPUT_BURST: u64 = 4 << 20;
pub const OUTPUT_SUMMARY: Duration = Duration::from_secs(5);

/// A group's allowance of worker output (a token bucket), and what was
/// dropped over it since the last summary.
pub struct OutputBudget {
    tokens: u64,
    refilled: Instant,
    dropped_lines: u64,
    dropped_bytes: u64,
    since: Instant,
}

impl Default for OutputBudget {
    fn default() -> Self {
        let now = Instant::now();
        OutputBudget { tokens: OUTPUT_BURST, refilled: now, dropped_lines: 0, dropped_bytes: 0, since: now }
    }
}

impl OutputBudget {
    /// Whether a line of `len` bytes may be logged now.
    pub fn allow(&mut self, len: usize) -> bool {
        let now = Instant::now();
        let earned = (now.duration_since(self.refilled).as_micros() as u64).saturating_mul(OUTPUT_RATE) / 1_000_000;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(OUTPUT_BURST);
            self.refilled = now;
        }
        let cost = len as u64 + 1;
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            self.dropped_lines += 1;
            self.dropped_bytes += cost;
            false
        }
    }

    /// The summary line owed, if anything was dropped and it is time.
    pub fn summary(&mut self) -> Option<String> {
        if self.dropped_lines == 0 {
            self.since = Instant::now();
            return None;
        }
        if self.since.elapsed() < OUTPUT_SUMMARY {
            return None;
        }
        let text = format!(
            "worker output over the limit of {} KiB/s: {} line(s), {} bytes dropped in the last {} s",
            OUTPUT_RATE >> 10,
            self.dropped_lines,
            self.dropped_bytes,
            self.since.elapsed().as_secs()
        );
        self.dropped_lines = 0;
        self.dropped_bytes = 0;
        self.since = Instant::now();
        Some(text)
    }
}

/// Reads what is there, up to `budget` bytes, without blocking; returns
/// false on EOF.
pub fn read_some(fd: &OwnedFd, into: &mut Vec<u8>, budget: usize) -> bool {
    let mut buf = [0u8; 16384];
    let mut got = 0;
    while got < budget {
        let want = buf.len().min(budget - got);
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[..want]) {
            Ok(0) => return false,
            Ok(n) => {
                into.extend_from_slice(&buf[..n]);
                got += n;
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return true,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_output_is_rate_limited_and_summed_up() {
        let mut b = OutputBudget::default();
        let line = 8191;
        let allowed = (0..1000).filter(|_| b.allow(line)).count();
        let burst = (OUTPUT_BURST / (line as u64 + 1)) as usize;
        // (A descheduled test thread may earn a line or two meanwhile.)
        assert!((burst..burst + 3).contains(&allowed), "the burst, then nothing: {allowed}");
        assert_eq!(b.dropped_lines, 1000 - allowed as u64);
        assert_eq!(b.summary(), None, "not before OUTPUT_SUMMARY");
        b.since -= OUTPUT_SUMMARY;
        let text = b.summary().unwrap_or_default();
        assert!(text.contains(&format!("{} line(s)", 1000 - allowed)), "{text}");
        assert_eq!(b.summary(), None, "counted once");
    }
}
