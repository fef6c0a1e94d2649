//! procd-status's request counters: a table of group slots in an anonymous
//! shared mapping that the httpd parent creates once and keeps across
//! graceful restarts (its address in Apache's retained data, see
//! `module::post_config`); every Apache child inherits it over fork and
//! adds each finished request to its group's slot with atomic operations.
//! No lock: a request thread never waits here.
//!
//! Code in an Apache child (mod_php, mod_lua) may write anything here. So
//! readers trust nothing: the table's size is this build's constant (never
//! read from the mapping), names and URIs are length-clamped and validated,
//! numbers are only numbers. The worst a hostile child can do is show wrong
//! counters, which it could as well by sending requests.

use crate::status::{CAUSES, Counters, InFlight, NBUCKETS, WINDOW_SLICE_SECS, WINDOW_SLICES, bucket_of};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::Relaxed, Ordering::Release};
use std::time::{Duration, Instant, SystemTime};

/// Group slots in the table.
pub const SLOTS: usize = 256;
/// A group name's bytes (longer names get no slot; configtest allows
/// names of this size).
const NAME_BYTES: usize = 64;
/// Requests in progress recorded per group (more are counted, not listed).
const FLIGHTS: usize = 16;
const URI_BYTES: usize = 128;
const METHOD_BYTES: usize = 16;
/// Identifies this layout; a table of another layout (a previous build's,
/// after a graceful restart with a new .so) is replaced by a new one.
const MAGIC: u64 = 0x7072_6f63_6431_0001 ^ (SLOTS as u64) << 16 ^ (NBUCKETS as u64) << 8;

/// Bytes as atomic words (so concurrent writers and readers never race in
/// the language's sense; a reader may see a torn string, which it validates).
#[repr(C)]
struct Text<const W: usize> {
    len: AtomicU64,
    words: [AtomicU64; W],
}

impl<const W: usize> Text<W> {
    fn store(&self, bytes: &[u8]) {
        let n = bytes.len().min(W * 8);
        for (i, w) in self.words.iter().enumerate() {
            let mut b = [0u8; 8];
            for (j, slot) in b.iter_mut().enumerate() {
                if let Some(x) = bytes.get(i * 8 + j).filter(|_| i * 8 + j < n) {
                    *slot = *x;
                }
            }
            w.store(u64::from_ne_bytes(b), Relaxed);
        }
        self.len.store(n as u64, Relaxed);
    }

    fn load(&self) -> Vec<u8> {
        let n = (self.len.load(Relaxed) as usize).min(W * 8);
        let mut out = Vec::with_capacity(W * 8);
        for w in &self.words {
            out.extend_from_slice(&w.load(Relaxed).to_ne_bytes());
        }
        out.truncate(n);
        out
    }
}

#[repr(C)]
struct Slice {
    /// 1 + the 10-second epoch this slice counts (0: unused).
    epoch: AtomicU64,
    buckets: [AtomicU64; NBUCKETS],
}

#[repr(C)]
struct Flight {
    /// 0 free, 1 being written, 2 in use.
    state: AtomicU64,
    apache_pid: AtomicU64,
    worker_pid: AtomicU64,
    started_ms: AtomicU64,
    method: Text<2>,
    uri: Text<16>,
}

#[repr(C)]
struct Slot {
    name: Text<8>,
    classes: [AtomicU64; 5],
    causes: [AtomicU64; CAUSES.len()],
    queued: AtomicU64,
    queue_wait_us: AtomicU64,
    in_flight: AtomicU64,
    hist: [AtomicU64; NBUCKETS],
    sum_us: AtomicU64,
    window: [Slice; WINDOW_SLICES],
    flights: [Flight; FLIGHTS],
}

#[repr(C)]
pub struct Table {
    magic: AtomicU64,
    slots: [Slot; SLOTS],
}

const _: () = assert!(NAME_BYTES == 8 * 8 && URI_BYTES == 16 * 8 && METHOD_BYTES == 2 * 8);

/// The table of this process (set in the parent's post_config, inherited
/// by children over fork). A plain pointer: no destructor, nothing that
/// pins the .so.
static TABLE: AtomicPtr<Table> = AtomicPtr::new(std::ptr::null_mut());

pub const TABLE_BYTES: usize = std::mem::size_of::<Table>();

/// A new zeroed shared anonymous mapping for the table (all-zero atomics
/// are valid), or None.
pub fn create() -> Option<*mut Table> {
    // SAFETY: an anonymous mapping, no file, no fixed address; checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            TABLE_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let t = p.cast::<Table>();
    // SAFETY: the mapping is TABLE_BYTES long, zeroed, and page-aligned.
    unsafe { (*t).magic.store(MAGIC, Release) };
    Some(t)
}

/// Whether `addr`/`len` (retained from a previous generation) is a table
/// of this layout.
///
/// # Safety
/// `addr` is 0 or the address of a live mapping of `len` bytes.
pub unsafe fn usable(addr: usize, len: usize) -> bool {
    // SAFETY: per the contract; only the magic word is read.
    addr != 0 && len == TABLE_BYTES && unsafe { (*(addr as *const Table)).magic.load(Relaxed) } == MAGIC
}

/// Unmaps a table of another layout (in the parent; children keep theirs).
///
/// # Safety
/// `addr`/`len` is a mapping this module made and nothing refers to it in
/// this process.
pub unsafe fn discard(addr: usize, len: usize) {
    // SAFETY: per the contract.
    unsafe { libc::munmap(addr as *mut libc::c_void, len) };
}

/// Makes `t` this process's table.
pub fn install(t: *mut Table) {
    TABLE.store(t, Release);
}

fn table() -> Option<&'static Table> {
    let p = TABLE.load(std::sync::atomic::Ordering::Acquire);
    // SAFETY: set by `install` to a live mapping that is never unmapped
    // while installed (only a table of another layout is discarded, before
    // a new one is installed, in the single-threaded parent).
    (!p.is_null()).then(|| unsafe { &*p })
}

fn slot_name(s: &Slot) -> Option<String> {
    let bytes = s.name.load();
    let name = String::from_utf8(bytes).ok()?;
    crate::config::languages::valid_name(&name).then_some(name)
}

fn clear(s: &Slot) {
    s.name.store(b"");
    for a in s.classes.iter().chain(&s.causes).chain(&s.hist) {
        a.store(0, Relaxed);
    }
    for a in [&s.queued, &s.queue_wait_us, &s.in_flight, &s.sum_us] {
        a.store(0, Relaxed);
    }
    for w in &s.window {
        w.epoch.store(0, Relaxed);
        w.buckets.iter().for_each(|b| b.store(0, Relaxed));
    }
    for f in &s.flights {
        f.state.store(0, Relaxed);
    }
}

/// In the parent at each configuration: groups keep their slot (their
/// counters go on across graceful restarts), slots of groups no longer
/// configured are cleared, new groups get free slots. Returns the groups
/// that found no slot.
pub fn assign(names: &[String]) -> Vec<String> {
    let Some(t) = table() else { return names.to_vec() };
    let mut missing = Vec::new();
    for s in &t.slots {
        match slot_name(s) {
            Some(n) if names.contains(&n) => {}
            Some(_) => clear(s),
            None if s.name.len.load(Relaxed) != 0 => clear(s),
            None => {}
        }
    }
    for name in names {
        if name.len() > NAME_BYTES || t.slots.iter().any(|s| slot_name(s).as_deref() == Some(name)) {
            continue;
        }
        match t.slots.iter().find(|s| s.name.len.load(Relaxed) == 0) {
            Some(s) => {
                clear(s);
                s.name.store(name.as_bytes());
            }
            None => missing.push(name.clone()),
        }
    }
    missing
}

fn find(t: &'static Table, group: &str) -> Option<&'static Slot> {
    let want = group.as_bytes();
    t.slots.iter().find(|s| s.name.len.load(Relaxed) as usize == want.len() && s.name.load() == want)
}

fn epoch_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One request to a group, from its start to its end: counted once, when
/// it is finished (or dropped: a panic in between still counts it, as a
/// 500).
pub struct Request {
    slot: Option<&'static Slot>,
    group: String,
    flight: Option<&'static Flight>,
    started: Instant,
    queued: Option<Duration>,
    done: bool,
}

impl Request {
    pub fn begin(group: &str, method: &[u8], uri: &[u8]) -> Request {
        let slot = table().and_then(|t| find(t, group));
        let mut flight = None;
        if let Some(s) = slot {
            s.in_flight.fetch_add(1, Relaxed);
            flight = s.flights.iter().find(|f| f.state.compare_exchange(0, 1, Relaxed, Relaxed).is_ok());
            if let Some(f) = flight {
                f.apache_pid.store(u64::from(crate::os::own_pid()), Relaxed);
                f.worker_pid.store(0, Relaxed);
                f.started_ms.store(epoch_ms(), Relaxed);
                f.method.store(method);
                f.uri.store(uri);
                f.state.store(2, Release);
            }
        }
        Request { slot, group: group.to_string(), flight, started: Instant::now(), queued: None, done: false }
    }

    /// A worker took the request after `waited` in the group's queue.
    pub fn taken(&mut self, waited: Duration) {
        self.queued = Some(waited);
    }

    /// The worker serving it said who it is.
    pub fn worker(&self, pid: u32) {
        if let Some(f) = self.flight {
            f.worker_pid.store(u64::from(pid), Relaxed);
        }
    }

    /// Counts the finished request: its status, and the cause of a failure
    /// (an index into `CAUSES`).
    pub fn finish(&mut self, status: u16, cause: Option<usize>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if let Some(f) = self.flight.take() {
            f.state.store(0, Release);
        }
        let Some(s) = self.slot else { return };
        s.in_flight.fetch_sub(1, Relaxed);
        // The slot may have been given to another group since (a graceful
        // restart that removed this one): count nothing then.
        if s.name.load() != self.group.as_bytes() {
            return;
        }
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        s.classes[class].fetch_add(1, Relaxed);
        if let Some(c) = cause.and_then(|c| s.causes.get(c)) {
            c.fetch_add(1, Relaxed);
        }
        if let Some(q) = self.queued {
            s.queued.fetch_add(1, Relaxed);
            s.queue_wait_us.fetch_add(q.as_micros() as u64, Relaxed);
        }
        let us = self.started.elapsed().as_micros() as u64;
        let b = bucket_of(us);
        s.hist[b].fetch_add(1, Relaxed);
        s.sum_us.fetch_add(us, Relaxed);
        let epoch = epoch_ms() / 1000 / WINDOW_SLICE_SECS + 1;
        let slice = &s.window[(epoch as usize) % WINDOW_SLICES];
        let seen = slice.epoch.load(Relaxed);
        if seen != epoch && slice.epoch.compare_exchange(seen, epoch, Relaxed, Relaxed).is_ok() {
            // First in this slice's new period: start it from zero (a count
            // racing with this may be lost from the window, never from the
            // totals).
            slice.buckets.iter().for_each(|x| x.store(0, Relaxed));
        }
        slice.buckets[b].fetch_add(1, Relaxed);
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        self.finish(500, Some(CAUSES.len() - 1));
    }
}

/// Whether the Apache child `pid` still runs (a child that died mid-request
/// leaves its entry behind).
fn alive(pid: u64) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    pid > 0 && !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH))
}

fn text(bytes: Vec<u8>) -> String {
    crate::protocol::escape_controls(&String::from_utf8_lossy(&bytes))
}

/// Every group's counters now (a bounded walk of the table).
pub fn snapshot() -> Vec<(String, Counters)> {
    let Some(t) = table() else { return Vec::new() };
    let now_ms = epoch_ms();
    let epoch = now_ms / 1000 / WINDOW_SLICE_SECS + 1;
    let mut out = Vec::new();
    for s in &t.slots {
        let Some(name) = slot_name(s) else { continue };
        let mut c = Counters::default();
        for (i, a) in s.classes.iter().enumerate() {
            c.by_class[i] = a.load(Relaxed);
        }
        for (name, a) in CAUSES.iter().zip(&s.causes) {
            c.by_cause.insert(name.to_string(), a.load(Relaxed));
        }
        c.queued = s.queued.load(Relaxed);
        c.queue_wait_seconds = s.queue_wait_us.load(Relaxed) as f64 / 1e6;
        // A gauge a hostile or crashed child may have left off: never
        // shown as more than the table could hold in the worst case.
        c.in_flight = s.in_flight.load(Relaxed).min(1 << 20);
        c.histogram = s.hist.iter().map(|a| a.load(Relaxed)).collect();
        c.count = c.histogram.iter().sum();
        c.duration_sum_seconds = s.sum_us.load(Relaxed) as f64 / 1e6;
        c.window = vec![0; NBUCKETS];
        for w in &s.window {
            let e = w.epoch.load(Relaxed);
            if e != 0 && e <= epoch && epoch - e < WINDOW_SLICES as u64 {
                for (sum, b) in c.window.iter_mut().zip(&w.buckets) {
                    *sum = sum.saturating_add(b.load(Relaxed));
                }
            }
        }
        c.window_seconds = (WINDOW_SLICES as u64 - 1) * WINDOW_SLICE_SECS + (now_ms / 1000) % WINDOW_SLICE_SECS + 1;
        for f in &s.flights {
            if f.state.load(std::sync::atomic::Ordering::Acquire) != 2 {
                continue;
            }
            let apache_pid = f.apache_pid.load(Relaxed);
            if !alive(apache_pid) {
                continue;
            }
            c.requests.push(InFlight {
                method: text(f.method.load()),
                uri: text(f.uri.load()),
                apache_pid: apache_pid as u32,
                worker_pid: u32::try_from(f.worker_pid.load(Relaxed)).unwrap_or(0),
                running_ms: now_ms.saturating_sub(f.started_ms.load(Relaxed)),
            });
        }
        out.push((name, c));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_once_and_slots_survive_reassignment() {
        let t = create().expect("mmap");
        install(t);
        assert!(assign(&["shop".into(), "blog".into()]).is_empty());
        let mut r = Request::begin("shop", b"GET", b"/slow?x=1");
        r.worker(4242);
        let snap = snapshot();
        let shop = &snap.iter().find(|(n, _)| n == "shop").unwrap().1;
        assert_eq!(shop.in_flight, 1);
        assert_eq!(shop.requests[0].uri, "/slow?x=1");
        assert_eq!(shop.requests[0].worker_pid, 4242);
        r.taken(Duration::from_millis(5));
        r.finish(200, None);
        drop(r); // not counted twice
        Request::begin("shop", b"GET", b"/").finish(503, Some(0));
        drop(Request::begin("blog", b"POST", b"/")); // dropped: a 500
        // A graceful restart that keeps shop, drops blog, adds wiki.
        assert!(assign(&["shop".into(), "wiki".into()]).is_empty());
        let snap = snapshot();
        let get = |n: &str| snap.iter().find(|(x, _)| x == n).map(|(_, c)| c.clone());
        let shop = get("shop").unwrap();
        assert_eq!(shop.by_class, [0, 1, 0, 0, 1]);
        assert_eq!(shop.by_cause["queue-full"], 1);
        assert_eq!(shop.queued, 1);
        assert_eq!(shop.in_flight, 0);
        assert!(shop.requests.is_empty());
        assert_eq!(shop.count, 2);
        assert_eq!(shop.window.iter().sum::<u64>(), 2);
        assert!(get("blog").is_none());
        assert_eq!(get("wiki").unwrap().total(), 0);
        // Scribbles (a hostile child): bounded, validated.
        // SAFETY: the test's own table.
        let tab = unsafe { &*t };
        tab.slots[5].name.len.store(u64::MAX, Relaxed);
        tab.slots[6].name.store(b"../bad name");
        tab.slots[0].flights[0].state.store(2, Relaxed);
        tab.slots[0].flights[0].apache_pid.store(u64::from(std::process::id()), Relaxed);
        tab.slots[0].flights[0].uri.len.store(u64::MAX, Relaxed);
        tab.slots[0].flights[0].uri.words[0].store(u64::from_ne_bytes(*b"\x1b[31m\xff\xfe\n"), Relaxed);
        let snap = snapshot();
        assert_eq!(snap.len(), 2);
        let r = &snap[0].1.requests[0];
        assert!(r.uri.len() <= 4 * URI_BYTES && !r.uri.contains('\x1b') && !r.uri.contains('\n'));
        assert_eq!(assign(&["shop".into()]), Vec::<String>::new());
        assert_eq!(snapshot().len(), 1);
    }
}
