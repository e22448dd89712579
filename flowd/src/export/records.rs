//! Flow records as JSON lines: to stdout, or to a file that SIGHUP reopens
//! (so logrotate can move it away).
//!
//! The file only ever holds whole lines. Records are written in buffers of
//! whole lines (at most [`BUF_BYTES`]); when a write fails (a full disk), the
//! bytes of that buffer that did reach the file are cut off again, its
//! records are counted as dropped, and the next buffer starts on a line
//! boundary. `flowd_records_written_total{sink}` and
//! `flowd_records_dropped_total{sink,reason}` add up to the records ended.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{flowtable::Ended, record::Fields};

/// Bytes of whole lines written at a time: the most one failure drops
/// beyond its own record.
pub const BUF_BYTES: usize = 16 * 1024;

/// Why records were dropped: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// ENOSPC, EDQUOT or EFBIG: the filesystem (or the quota) is full.
    NoSpace,
    /// Any other write error.
    IoError,
}

impl DropReason {
    pub const ALL: [Self; 2] = [Self::NoSpace, Self::IoError];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSpace => "no_space",
            Self::IoError => "io_error",
        }
    }

    fn of(e: &io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => Self::NoSpace,
            _ => Self::IoError,
        }
    }
}

/// The sink's counters, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// `file` or `stdout`: the `sink` label.
    pub sink: &'static str,
    pub written: u64,
    /// Indexed by `DropReason as usize`.
    pub dropped: [u64; 2],
}

/// A metric family as plain data: (name without `_total`, help, samples of
/// (labels, value)). The exporter turns it into its own family type.
pub type CounterFamily = (
    &'static str,
    &'static str,
    Vec<(Vec<(&'static str, String)>, u64)>,
);

impl RecordStats {
    /// `flowd_records_written_total{sink}` and
    /// `flowd_records_dropped_total{sink,reason}` (every reason, zeros too).
    pub fn families(&self) -> Vec<CounterFamily> {
        let sink = || ("sink", self.sink.to_owned());
        vec![
            (
                "flowd_records_written",
                "Ended flow records written whole to the JSON-lines sink.",
                vec![(vec![sink()], self.written)],
            ),
            (
                "flowd_records_dropped",
                "Ended flow records the JSON-lines sink could not write (no_space: the filesystem is full); none of their bytes stay in the file.",
                DropReason::ALL
                    .iter()
                    .map(|r| {
                        (
                            vec![sink(), ("reason", r.as_str().to_owned())],
                            self.dropped[*r as usize],
                        )
                    })
                    .collect(),
            ),
        ]
    }
}

/// Where ended flow records go.
#[derive(Debug)]
pub struct RecordSink {
    target: Target,
    stats: RecordStats,
    /// Whole lines not written yet.
    buf: Vec<u8>,
    /// When a failure was last reported, and records dropped since then
    /// (a full disk fails every drain: the log gets a line a minute).
    last_report: Option<Instant>,
    unreported: u64,
    /// The last write failed.
    failing: bool,
}

/// Least time between two reported write failures.
const REPORT_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
enum Target {
    Stdout,
    File { path: PathBuf, file: File },
}

impl RecordSink {
    /// `-` is stdout; anything else a file, appended to.
    pub fn open(target: &str) -> io::Result<Self> {
        let (target, sink) = if target == "-" {
            (Target::Stdout, "stdout")
        } else {
            let path = PathBuf::from(target);
            let file = append(&path)?;
            (Target::File { path, file }, "file")
        };
        Ok(Self {
            target,
            stats: RecordStats {
                sink,
                ..RecordStats::default()
            },
            buf: Vec::with_capacity(BUF_BYTES),
            last_report: None,
            unreported: 0,
            failing: false,
        })
    }

    pub fn stats(&self) -> RecordStats {
        self.stats
    }

    /// Reopens the file (after logrotate moved it); stdout stays as it is.
    /// Nothing is pending between writes, so a full disk cannot stop it; if
    /// the new file cannot be opened, records keep going to the old one.
    pub fn reopen(&mut self) -> io::Result<()> {
        if let Target::File { path, file } = &mut self.target {
            *file = append(path)?;
        }
        Ok(())
    }

    /// Writes ended flow records, one JSON object per line, straight from
    /// the flows (no `serde_json::Value` in between). `devices[i]` names the
    /// interface of `ended[i]`. On failure the records of the failed
    /// buffers are counted as dropped and the rest are written; the error
    /// (at most one a minute, the first at once) says how many were dropped
    /// since the last one.
    pub fn write_ended(&mut self, ended: &[Ended], devices: &[String]) -> io::Result<()> {
        self.write_with(ended.iter().zip(devices), |(e, dev), buf| {
            Fields::ended(e, dev).write_json_line(buf)
        })
    }

    /// Writes records, one JSON object per line.
    pub fn write(&mut self, records: &[Value]) -> io::Result<()> {
        self.write_with(records.iter(), |r, buf| {
            serde_json::to_writer(&mut *buf, r)?;
            buf.push(b'\n');
            Ok(())
        })
    }

    /// Lines already encoded as JSON objects (without their newline).
    pub fn write_encoded(&mut self, lines: &[String]) -> io::Result<()> {
        self.write_with(lines.iter(), |l, buf| {
            buf.extend_from_slice(l.as_bytes());
            buf.push(b'\n');
            Ok(())
        })
    }

    fn write_with<T>(
        &mut self,
        items: impl Iterator<Item = T>,
        mut line: impl FnMut(T, &mut Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut failed: Option<(io::Error, u64)> = None;
        let mut lines = 0;
        for item in items {
            line(item, &mut self.buf)?;
            lines += 1;
            if self.buf.len() >= BUF_BYTES {
                self.flush_lines(lines, &mut failed);
                lines = 0;
            }
        }
        if lines > 0 {
            self.flush_lines(lines, &mut failed);
        }
        let Some((e, dropped)) = failed else {
            if std::mem::take(&mut self.failing) {
                let unreported = std::mem::take(&mut self.unreported);
                tracing::info!(
                    dropped_since_last_error = unreported,
                    "{}: records are written again",
                    self.name()
                );
            }
            return Ok(());
        };
        self.failing = true;
        self.unreported += dropped;
        if self.last_report.is_some_and(|t| t.elapsed() < REPORT_EVERY) {
            return Ok(());
        }
        self.last_report = Some(Instant::now());
        let dropped = std::mem::take(&mut self.unreported);
        Err(io::Error::new(
            e.kind(),
            format!(
                "{}: {e}; {dropped} records dropped (counted in flowd_records_dropped_total)",
                self.name()
            ),
        ))
    }

    fn name(&self) -> String {
        match &self.target {
            Target::Stdout => "flow records on stdout".into(),
            Target::File { path, .. } => format!("flow records file {}", path.display()),
        }
    }

    /// Writes the buffer (`lines` whole lines) or drops all of it.
    fn flush_lines(&mut self, lines: u64, failed: &mut Option<(io::Error, u64)>) {
        let result = match &mut self.target {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&self.buf).and_then(|()| out.flush())
            }
            Target::File { file, .. } => write_whole(file, &self.buf),
        };
        self.buf.clear();
        match result {
            Ok(()) => self.stats.written += lines,
            Err(e) => {
                self.stats.dropped[DropReason::of(&e) as usize] += lines;
                match failed {
                    Some((_, n)) => *n += lines,
                    None => *failed = Some((e, lines)),
                }
            }
        }
    }
}

/// Appends `buf` to `file`, or leaves the file as it was: a write that
/// stopped part way (a full disk) is cut off again, so the file never
/// ends inside a line.
fn write_whole(file: &mut File, buf: &[u8]) -> io::Result<()> {
    let start = file.metadata()?.len();
    let Err(e) = file.write_all(buf) else {
        return Ok(());
    };
    // Only our own bytes go: if the file shrank meanwhile (copytruncate),
    // its length is not ours to restore.
    if let Ok(m) = file.metadata()
        && m.len() > start
        && let Err(t) = file.set_len(start)
    {
        tracing::error!(error = %t, "cutting a partly written buffer off the flow records file failed");
    }
    Err(e)
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("flow records file {}: {e}", path.display()),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_records_are_the_json_records_line_by_line() {
        use flowd_common::{FlowKey, ipv4_mapped};

        use crate::flowtable::{EndReason, Flow};
        let flow = |sport, proto| Flow {
            key: FlowKey {
                src: ipv4_mapped([198, 18, 0, 1]),
                dst: ipv4_mapped([198, 18, 0, 2]),
                sport,
                dport: 443,
                proto,
                ifindex: 3,
                ..FlowKey::default()
            },
            counts: flowd_common::FlowCounts {
                packets: 7,
                bytes: 7000,
                syn: 1,
                retrans: 2,
                ce: 1,
                ..Default::default()
            },
            first_ns: 1_795_000_000_000_000_001,
            last_ns: 1_795_000_001_000_000_000,
            ..Flow::default()
        };
        let ended = [
            Ended {
                flow: flow(40000, 6),
                state: Some("SF"),
                reason: EndReason::EndOfFlow,
                originator: true,
            },
            Ended {
                flow: flow(5353, 17),
                state: None,
                reason: EndReason::Idle,
                originator: true,
            },
        ];
        let devices = ["eth0".to_owned(), "eth1".to_owned()];
        let dir = std::env::temp_dir().join(format!("flowd-ended-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flows.jsonl");
        let mut sink = RecordSink::open(path.to_str().unwrap()).unwrap();
        sink.write_ended(&ended, &devices).unwrap();
        let want: String = ended
            .iter()
            .zip(&devices)
            .map(|(e, d)| format!("{}\n", crate::record::ended_json(e, d)))
            .collect();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_sink_appends_lines_and_reopens_after_rotation() {
        let dir = std::env::temp_dir().join(format!("flowd-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flows.jsonl");
        let mut sink = RecordSink::open(path.to_str().unwrap()).unwrap();
        sink.write(&[serde_json::json!({"a": 1}), serde_json::json!({"a": 2})])
            .unwrap();
        std::fs::rename(&path, dir.join("flows.jsonl.1")).unwrap();
        sink.reopen().unwrap();
        sink.write(&[serde_json::json!({"a": 3})]).unwrap();
        let old = std::fs::read_to_string(dir.join("flows.jsonl.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old, "{\"a\":1}\n{\"a\":2}\n");
        assert_eq!(new, "{\"a\":3}\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_device_drops_whole_buffers_and_counts_them() {
        let mut sink = RecordSink::open("/dev/full").unwrap();
        let recs: Vec<Value> = (0..3000)
            .map(|i| serde_json::json!({"n": i, "pad": "x".repeat(40)}))
            .collect();
        let e = sink.write(&recs).unwrap_err().to_string();
        assert!(e.starts_with("flow records file /dev/full: No space left on device (os error 28); 3000 records dropped"), "{e}");
        assert_eq!(e.matches("os error").count(), 1, "the cause once: {e}");
        let st = sink.stats();
        assert_eq!((st.sink, st.written, st.dropped), ("file", 0, [3000, 0]));
        let fams = st.families();
        assert_eq!(fams[0].2, vec![(vec![("sink", "file".to_owned())], 0)]);
        assert_eq!(
            fams[1].2[0],
            (
                vec![
                    ("sink", "file".to_owned()),
                    ("reason", "no_space".to_owned())
                ],
                3000
            )
        );
        // The next failure within a minute is counted, not reported again.
        sink.write(&recs[..10]).unwrap();
        assert_eq!(sink.stats().dropped, [3010, 0]);
        sink.reopen().unwrap();
    }

    #[test]
    fn whole_lines_are_counted_as_written() {
        let dir = std::env::temp_dir().join(format!("flowd-records-n-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flows.jsonl");
        let mut sink = RecordSink::open(path.to_str().unwrap()).unwrap();
        let recs: Vec<Value> = (0..5000)
            .map(|i| serde_json::json!({"n": i, "pad": "x".repeat(40)}))
            .collect();
        sink.write(&recs).unwrap();
        assert_eq!(sink.stats().written, 5000);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() > 3 * BUF_BYTES, "several buffers");
        assert_eq!(text.lines().count(), 5000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
