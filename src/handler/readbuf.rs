//! The buffer a request reads its backend's answer into, kept by the
//! Apache thread for its next request.
//!
//! A fresh zeroed 32-64 KiB buffer per request cost about 6 µs of Apache's
//! CPU (measured with `tests/bench/cpu-per-request.sh`: the memset, and
//! glibc giving the freed chunk back to the kernel and faulting it in again
//! at the next request). Each thread keeps one, the largest it has taken
//! (64 KiB), for as long as the thread lives.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};

thread_local! {
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A byte buffer of a fixed length to read into (a reused one holds what
/// earlier reads left); back to the thread's spare when dropped.
pub struct ReadBuf {
    bytes: Vec<u8>,
    len: usize,
}

impl ReadBuf {
    /// The thread's spare buffer if it is large enough, else a new one.
    pub fn take(len: usize) -> ReadBuf {
        // None when the thread is exiting: then a buffer of its own.
        let spare = SPARE.try_with(Cell::take).unwrap_or_default();
        let bytes = if spare.len() >= len { spare } else { vec![0; len] };
        ReadBuf { bytes, len }
    }
}

impl Deref for ReadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl DerefMut for ReadBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.len]
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        // Keeps the larger of the two if another buffer came back first.
        let _ = SPARE.try_with(|spare| {
            let other = spare.take();
            spare.set(if other.len() > bytes.len() { other } else { bytes });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_reused_by_its_thread_and_keeps_its_length() {
        let first = ReadBuf::take(64);
        let at = first.bytes.as_ptr();
        drop(first);
        let mut again = ReadBuf::take(32);
        assert_eq!(again.len(), 32);
        assert_eq!(again.bytes.as_ptr(), at);
        again[0] = 7;
        drop(again);
        let larger = ReadBuf::take(128);
        assert_eq!(larger.len(), 128);
        assert!(larger.iter().all(|&b| b == 0));
    }

    #[test]
    fn two_at_once_are_two_buffers() {
        let a = ReadBuf::take(16);
        let b = ReadBuf::take(16);
        assert_ne!(a.bytes.as_ptr(), b.bytes.as_ptr());
    }
}
