//! Flow records as JSON lines: to stdout, or to a file that SIGHUP reopens
//! (so logrotate can move it away).

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::PathBuf,
};

use serde_json::Value;

use crate::{flowtable::Ended, record::Fields};

/// Where ended flow records go.
#[derive(Debug)]
pub enum RecordSink {
    Stdout,
    File { path: PathBuf, out: BufWriter<File> },
}

impl RecordSink {
    /// `-` is stdout; anything else a file, appended to.
    pub fn open(target: &str) -> io::Result<Self> {
        if target == "-" {
            return Ok(Self::Stdout);
        }
        let path = PathBuf::from(target);
        let out = BufWriter::new(append(&path)?);
        Ok(Self::File { path, out })
    }

    /// Reopens the file (after logrotate moved it); stdout stays as it is.
    pub fn reopen(&mut self) -> io::Result<()> {
        if let Self::File { path, out } = self {
            out.flush()?;
            *out = BufWriter::new(append(path)?);
        }
        Ok(())
    }

    /// Writes ended flow records, one JSON object per line, straight from
    /// the flows (no `serde_json::Value` in between), and flushes.
    /// `devices[i]` names the interface of `ended[i]`.
    pub fn write_ended(&mut self, ended: &[Ended], devices: &[String]) -> io::Result<()> {
        fn lines(w: &mut impl Write, ended: &[Ended], devices: &[String]) -> io::Result<()> {
            for (e, dev) in ended.iter().zip(devices) {
                Fields::ended(e, dev).write_json_line(w)?;
            }
            w.flush()
        }
        match self {
            Self::Stdout => lines(&mut BufWriter::new(io::stdout().lock()), ended, devices),
            Self::File { out, .. } => lines(out, ended, devices),
        }
    }

    /// Writes records, one JSON object per line, and flushes.
    pub fn write(&mut self, records: &[Value]) -> io::Result<()> {
        match self {
            Self::Stdout => write_lines(&mut io::stdout().lock(), records),
            Self::File { out, .. } => write_lines(out, records),
        }
    }
}

fn append(path: &PathBuf) -> io::Result<File> {
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

fn write_lines(w: &mut impl Write, records: &[Value]) -> io::Result<()> {
    for r in records {
        serde_json::to_writer(&mut *w, r)?;
        w.write_all(b"\n")?;
    }
    w.flush()
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
}
