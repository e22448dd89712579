//! Clocks: the kernel stamps flows with CLOCK_MONOTONIC; records carry wall
//! time. Replay stamps flows with capture time (already wall time).

/// Nanoseconds of a clock.
fn now(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec for the call.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn monotonic_ns() -> u64 {
    now(libc::CLOCK_MONOTONIC)
}

pub fn realtime_ns() -> u64 {
    now(libc::CLOCK_REALTIME)
}

/// Converts kernel monotonic timestamps to Unix time.
#[derive(Debug, Clone, Copy)]
pub enum TimeBase {
    /// Live: wall = monotonic + offset (offset read when the data was drained).
    Monotonic { offset_ns: i128 },
    /// Replay: the timestamps are capture time already.
    Capture,
}

impl TimeBase {
    pub fn live() -> Self {
        Self::Monotonic {
            offset_ns: realtime_ns() as i128 - monotonic_ns() as i128,
        }
    }

    pub fn to_unix_ns(self, t: u64) -> u64 {
        match self {
            Self::Monotonic { offset_ns } => (t as i128 + offset_ns).max(0) as u64,
            Self::Capture => t,
        }
    }
}

/// RFC 3339 UTC with nanoseconds: `2026-11-28T16:25:41.123456789Z`.
pub fn rfc3339_ns(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let nanos = unix_ns % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
        // 2000-02-29 (leap day) 12:34:56.000000789
        assert_eq!(
            rfc3339_ns(951_827_696_000_000_789),
            "2000-02-29T12:34:56.000000789Z"
        );
        assert_eq!(
            rfc3339_ns(1_309_144_887_024_263_000),
            "2011-06-27T03:21:27.024263000Z"
        );
    }

    #[test]
    fn capture_time_passes_through() {
        assert_eq!(TimeBase::Capture.to_unix_ns(42), 42);
        let b = TimeBase::Monotonic { offset_ns: 100 };
        assert_eq!(b.to_unix_ns(5), 105);
    }
}
