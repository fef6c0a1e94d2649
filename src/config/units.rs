//! Numbers, sizes, durations and process ranges as administrators write them.
//!
//! Every parser returns the typed value or a sentence saying what is allowed;
//! the caller prefixes the directive and option name.

use std::time::Duration;

/// Parses a whole number within `min..=max`.
pub fn parse_count(value: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = value.parse().map_err(|_| format!("expected a whole number from {min} to {max}"))?;
    if n < min || n > max {
        return Err(format!("{n} is out of range: allowed is {min} to {max}"));
    }
    Ok(n)
}

/// Parses a size in bytes: `1048576`, `512K`, `512M`, `2G`, `1T` (powers of
/// 1024; an optional trailing `B` and any letter case are accepted).
pub fn parse_size(value: &str, min: u64, max: u64) -> Result<u64, String> {
    let what = || {
        format!(
            "expected a size such as 512M or 2G (bytes, or K, M, G, T), from {} to {}",
            show_size(min),
            show_size(max)
        )
    };
    let upper = value.to_ascii_uppercase();
    let trimmed = upper.strip_suffix('B').unwrap_or(&upper);
    let (digits, unit) = match trimmed.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => trimmed.split_at(i),
        None => (trimmed, ""),
    };
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(what()),
    };
    let n: u64 = digits.parse().map_err(|_| what())?;
    let bytes = n.checked_mul(1u64 << shift).ok_or_else(what)?;
    if bytes < min || bytes > max {
        return Err(what());
    }
    Ok(bytes)
}

/// Formats a byte count the way `parse_size` reads it back.
pub fn show_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}")
}

/// Parses a duration: plain seconds (`30`), or with a unit: `500ms`, `30s`,
/// `5m`, `2h`, `1d`.
pub fn parse_duration(value: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let what = || {
        format!(
            "expected seconds or a duration such as 30s, 5m, 2h or 500ms, from {} to {}",
            show_duration(min),
            show_duration(max)
        )
    };
    let lower = value.to_ascii_lowercase();
    let (digits, unit) = match lower.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => lower.split_at(i),
        None => (lower.as_str(), "s"),
    };
    let n: u64 = digits.parse().map_err(|_| what())?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => None,
    }
    .ok_or_else(what)?;
    let d = Duration::from_millis(millis);
    if d < min || d > max {
        return Err(what());
    }
    Ok(d)
}

/// Formats a duration compactly (`30s`, `5m`, `500ms`).
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit_ms, unit) in [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s")] {
        if ms >= unit_ms && ms % unit_ms == 0 {
            return format!("{}{unit}", ms / unit_ms);
        }
    }
    format!("{ms}ms")
}

/// How many worker processes a group keeps: `min` always running (0 means
/// the group starts on its first request), up to `max` under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRange {
    pub min: u32,
    pub max: u32,
}

/// The largest `processes=` value accepted.
pub const MAX_PROCESSES: u32 = 1024;

/// Parses `processes=N` (exactly N) or `processes=MIN-MAX`.
pub fn parse_processes(value: &str) -> Result<ProcessRange, String> {
    let what = || {
        format!(
            "expected N (1 to {MAX_PROCESSES}) or MIN-MAX (MIN from 0, MAX from 1 to {MAX_PROCESSES}, MIN <= MAX), e.g. processes=4 or processes=2-8"
        )
    };
    let number = |s: &str| s.parse::<u32>().ok().filter(|n| *n <= MAX_PROCESSES);
    match value.split_once('-') {
        None => match number(value) {
            Some(n) if n >= 1 => Ok(ProcessRange { min: n, max: n }),
            _ => Err(what()),
        },
        Some((lo, hi)) => match (number(lo), number(hi)) {
            (Some(min), Some(max)) if max >= 1 && min <= max => Ok(ProcessRange { min, max }),
            _ => Err(what()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn counts() {
        assert_eq!(parse_count("8", 1, 10).unwrap(), 8);
        assert!(parse_count("0", 1, 10).unwrap_err().contains("out of range"));
        assert!(parse_count("-1", 1, 10).is_err());
        assert!(parse_count("4x", 1, 10).is_err());
        assert!(parse_count("99999999999999999999999", 0, 10).is_err());
    }

    #[test]
    fn sizes() {
        let max = 1 << 50;
        assert_eq!(parse_size("512M", 0, max).unwrap(), 512 << 20);
        assert_eq!(parse_size("512mb", 0, max).unwrap(), 512 << 20);
        assert_eq!(parse_size("2G", 0, max).unwrap(), 2 << 30);
        assert_eq!(parse_size("100", 0, max).unwrap(), 100);
        assert_eq!(parse_size("1k", 0, max).unwrap(), 1024);
        for bad in ["", "M", "12Q", "1.5G", "-1M", "99999999999T"] {
            assert!(parse_size(bad, 0, max).is_err(), "{bad}");
        }
        assert!(parse_size("1K", 1 << 20, max).unwrap_err().contains("from 1M"));
        assert_eq!(show_size(512 << 20), "512M");
        assert_eq!(show_size(1000), "1000");
    }

    #[test]
    fn durations() {
        let max = Duration::from_secs(86_400);
        assert_eq!(parse_duration("30", S, max).unwrap(), 30 * S);
        assert_eq!(parse_duration("30s", S, max).unwrap(), 30 * S);
        assert_eq!(parse_duration("5m", S, max).unwrap(), 300 * S);
        assert_eq!(parse_duration("2H", S, max).unwrap(), 7200 * S);
        assert_eq!(parse_duration("1500ms", S, max).unwrap(), Duration::from_millis(1500));
        for bad in ["", "s", "1.5s", "10y", "-3", "2d", "500ms"] {
            assert!(parse_duration(bad, S, max).is_err(), "{bad}");
        }
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(show_duration(Duration::from_secs(3600)), "1h");
    }

    #[test]
    fn process_ranges() {
        assert_eq!(parse_processes("4").unwrap(), ProcessRange { min: 4, max: 4 });
        assert_eq!(parse_processes("2-8").unwrap(), ProcessRange { min: 2, max: 8 });
        assert_eq!(parse_processes("0-4").unwrap(), ProcessRange { min: 0, max: 4 });
        for bad in ["0", "0-0", "8-2", "1-", "-3", "a", "1-2000", "1-2-3", ""] {
            assert!(parse_processes(bad).is_err(), "{bad}");
        }
    }
}
