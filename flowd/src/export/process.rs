//! The standard `process_*` metrics of the exporting process, read from
//! `/proc/self` at scrape time (what client_golang's process collector shows).

/// One reading of the process' resource use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    /// Unix time the process started.
    pub start_time_seconds: f64,
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: u64,
}

impl ProcessStats {
    /// Reads `/proc/self`; `None` where procfs is missing.
    pub fn read_self() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let proc_stat = std::fs::read_to_string("/proc/stat").ok()?;
        let boot_time = proc_stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())?;
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let mut s = parse(&stat, &statm, ticks as u64, page as u64, boot_time)?;
        s.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid pointer to an rlimit for the call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            s.max_fds = lim.rlim_cur;
        }
        Some(s)
    }
}

/// Parses `/proc/<pid>/stat` and `/proc/<pid>/statm` (proc(5)).
fn parse(stat: &str, statm: &str, ticks: u64, page: u64, boot_time: u64) -> Option<ProcessStats> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): field n is rest[n - 3].
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ticks = ticks.max(1) as f64;
    let (utime, stime, start, vsize) = (field(14)?, field(15)?, field(22)?, field(23)?);
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(ProcessStats {
        cpu_seconds: (utime + stime) as f64 / ticks,
        resident_memory_bytes: resident_pages * page,
        virtual_memory_bytes: vsize,
        start_time_seconds: boot_time as f64 + start as f64 / ticks,
        open_fds: 0,
        max_fds: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_tricky_command_name() {
        let stat = "4242 (fl (o) wd) S 1 4242 4242 0 -1 4194560 3066 0 0 0 250 50 0 0 20 0 5 0 \
                    12345 987654144 2000 18446744073709551615 1 1 0 0 0 0 0 4096 17667 0 0 0 17 \
                    1 0 0 0 0 0";
        let statm = "241126 1500 1100 300 0 20000 0\n";
        let s = parse(stat, statm, 100, 4096, 1_700_000_000).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.resident_memory_bytes, 1500 * 4096);
        assert_eq!(s.virtual_memory_bytes, 987_654_144);
        assert_eq!(s.start_time_seconds, 1_700_000_000.0 + 123.45);
        assert_eq!(parse("garbage", statm, 100, 4096, 0), None);
    }

    #[test]
    fn reads_this_process() {
        let s = ProcessStats::read_self().expect("procfs");
        assert!(s.resident_memory_bytes > 0);
        assert!(s.virtual_memory_bytes >= s.resident_memory_bytes);
        assert!(s.open_fds > 0 && s.max_fds >= s.open_fds);
        assert!(s.start_time_seconds > 1_500_000_000.0);
    }
}
