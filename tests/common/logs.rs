//! Reading the error log: the time of a line, as seconds since the epoch.

/// Now, in seconds since the epoch.
pub fn now_epoch() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The time of an error-log line (`[Wed Dec 02 02:10:49.123456 2026] ...`,
/// Apache's and the manager's format, local time), in seconds since the
/// epoch. Assumes the line is from the last 12 hours.
pub fn line_epoch(line: &str) -> Option<f64> {
    let stamp = line.strip_prefix('[')?.split(']').next()?;
    let clock = stamp.split_whitespace().nth(3)?;
    let mut parts = clock.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    let of_day = h * 3600.0 + m * 60.0 + s;
    let now = now_epoch();
    // Seconds since local midnight, now.
    let secs = now as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        tm
    };
    let now_of_day = f64::from(tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec) + now.fract();
    let mut ago = now_of_day - of_day;
    if ago < -43_200.0 {
        ago += 86_400.0; // the line is from before midnight
    }
    Some(now - ago)
}

/// The lines of `log` containing `needle`, with their times.
pub fn timed_lines(log: &str, needle: &str) -> Vec<(f64, String)> {
    log.lines().filter(|l| l.contains(needle)).filter_map(|l| Some((line_epoch(l)?, l.to_string()))).collect()
}

/// The time of the first line of `log` with `needle` logged at or after
/// `after` (epoch seconds; a line's stamp has microseconds).
pub fn first_line_after(log: &str, needle: &str, after: f64) -> Option<f64> {
    timed_lines(log, needle).into_iter().map(|(t, _)| t).find(|t| *t >= after - 0.000_5)
}

/// SIGKILL to `pid` now (no `kill` process in between, so the time taken
/// just before is the time of the signal).
pub fn sigkill(pid: i32) {
    // SAFETY: kill(2) on a pid this test started (through Apache).
    let r = unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_eq!(r, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
}
