//! Output formats of a replay: JSON lines and CSV written straight from
//! the flows, and the human tables (flows, connections).

use std::io::{self, Write};

use flowd_common::{
    FlowKey,
    proto::{ip, tcp},
};

use crate::{
    clock::rfc3339_ns,
    record::{self, Fields},
};

use super::{OutputFormat, Replay, connection_fields, connections};

/// Writes the replay's flows (or connections) in `format`. JSON lines and
/// CSV are written straight from the flows ([`record::Fields`]): the same
/// bytes as serializing [`Replay::records`] / [`Replay::connection_records`].
pub fn write_output(
    out: &mut impl Write,
    replay: &Replay,
    format: OutputFormat,
    bidirectional: bool,
) -> io::Result<()> {
    let device = replay.device.as_str();
    match format {
        OutputFormat::Jsonl if bidirectional => {
            for c in &connections(&replay.table) {
                connection_fields(c, device).write_json_line(out)?;
            }
        }
        OutputFormat::Jsonl => {
            for e in &replay.ended {
                Fields::ended(e, device).write_json_line(out)?;
            }
        }
        OutputFormat::Csv if bidirectional => {
            let conns = connections(&replay.table);
            write_csv(out, conns.iter().map(|c| connection_fields(c, device)))?;
        }
        OutputFormat::Csv => {
            write_csv(out, replay.ended.iter().map(|e| Fields::ended(e, device)))?;
        }
        OutputFormat::Table => {
            let rows = if bidirectional {
                connection_table(replay)
            } else {
                flow_table(replay)
            };
            write_table(out, &rows)?;
        }
    }
    out.flush()
}

/// A header line with the keys any record has (in [`record::KEYS`] order:
/// the documented columns, then the others sorted), then one line per
/// record. No records: nothing at all.
pub(super) fn write_csv<'a>(
    out: &mut impl Write,
    records: impl Iterator<Item = Fields<'a>> + Clone,
) -> io::Result<()> {
    let columns = records.clone().fold(0, |m, r| m | r.mask());
    if columns == 0 {
        return Ok(());
    }
    record::write_csv_header(out, columns)?;
    for r in records {
        r.write_csv_line(out, columns)?;
    }
    Ok(())
}

/// A table: header row first; `true` marks right-aligned (numeric) columns.
struct Rows {
    header: Vec<(&'static str, bool)>,
    rows: Vec<Vec<String>>,
}

fn write_table(out: &mut impl Write, t: &Rows) -> io::Result<()> {
    let mut widths: Vec<usize> = t.header.iter().map(|(h, _)| h.len()).collect();
    for r in &t.rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let w = widths[i];
            if t.header[i].1 {
                s.push_str(&format!("{cell:>w$}"));
            } else {
                s.push_str(&format!("{cell:<w$}"));
            }
        }
        s.trim_end().to_string()
    };
    writeln!(out, "{}", line(t.header.iter().map(|(h, _)| *h).collect()))?;
    for r in &t.rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// The leading columns of both tables: time, protocol and endpoints.
fn endpoint_cells(key: &FlowKey, start_ns: u64, end_ns: u64) -> Vec<String> {
    let (sport, dport) = ports_text(key);
    vec![
        table_time(start_ns),
        duration_text(end_ns.saturating_sub(start_ns)),
        proto_name(key.proto),
        record::addr(&key.src).to_string(),
        sport,
        record::addr(&key.dst).to_string(),
        dport,
        if key.vlan == 0 {
            "-".into()
        } else {
            key.vlan.to_string()
        },
    ]
}

const ENDPOINT_HEADER: [(&str, bool); 8] = [
    ("START (UTC)", false),
    ("DURATION", true),
    ("PROTO", false),
    ("SRC", false),
    ("SPORT", true),
    ("DST", false),
    ("DPORT", true),
    ("VLAN", true),
];

fn flow_table(replay: &Replay) -> Rows {
    let mut header = ENDPOINT_HEADER.to_vec();
    header.extend([
        ("PACKETS", true),
        ("BYTES", true),
        ("FLAGS", false),
        ("STATE", false),
        ("END", false),
    ]);
    let rows = replay
        .ended
        .iter()
        .map(|e| {
            let f = &e.flow;
            let mut r = endpoint_cells(&f.key, f.first_ns, f.last_ns);
            r.push(f.counts.packets.to_string());
            r.push(human_bytes(f.counts.bytes));
            r.push(tcp_flags_text(f.key.proto, f.counts.tcp_flags));
            r.push(e.state.unwrap_or("-").to_owned());
            r.push(e.reason.as_str().to_owned());
            r
        })
        .collect();
    Rows { header, rows }
}

fn connection_table(replay: &Replay) -> Rows {
    let mut header = ENDPOINT_HEADER.to_vec();
    header.extend([
        ("PKTS_FWD", true),
        ("BYTES_FWD", true),
        ("PKTS_REV", true),
        ("BYTES_REV", true),
    ]);
    let rows = connections(&replay.table)
        .iter()
        .map(|c| {
            let mut r = endpoint_cells(&c.fwd.key, c.start_ns(), c.end_ns());
            r.push(c.fwd.counts.packets.to_string());
            r.push(human_bytes(c.fwd.counts.bytes));
            r.push(c.rev.map_or(0, |f| f.counts.packets).to_string());
            r.push(human_bytes(c.rev.map_or(0, |f| f.counts.bytes)));
            r
        })
        .collect();
    Rows { header, rows }
}

/// `2011-03-18 16:26:07.096`: the record's RFC 3339 time to milliseconds.
pub(super) fn table_time(ns: u64) -> String {
    let s = rfc3339_ns(ns);
    s.get(..23).unwrap_or(&s).replacen('T', " ", 1)
}

fn duration_text(ns: u64) -> String {
    let secs = ns as f64 / 1e9;
    if secs < 1000.0 {
        format!("{secs:.3}s")
    } else {
        format!("{secs:.0}s")
    }
}

/// Ports as a person reads them: ICMP type/code, "-" where there are none.
fn ports_text(key: &FlowKey) -> (String, String) {
    if ip::is_icmp(key.proto) {
        (
            "-".into(),
            format!("{}/{}", key.dport >> 8, key.dport & 0xff),
        )
    } else if ip::has_ports(key.proto) {
        (key.sport.to_string(), key.dport.to_string())
    } else {
        ("-".into(), "-".into())
    }
}

fn proto_name(proto: u8) -> String {
    match ip::name(proto) {
        Some(n) => n.into(),
        None => proto.to_string(),
    }
}

/// TCP flags nfdump-style: `UAPRSF`, a dot for each flag not seen.
pub(super) fn tcp_flags_text(proto: u8, flags: u16) -> String {
    if proto != ip::TCP {
        return String::new();
    }
    tcp::LETTERS
        .iter()
        .map(|&(bit, c)| if flags & bit != 0 { c } else { '.' })
        .collect()
}

/// Bytes in SI units, as tshark prints them: `870 B`, `28.5 kB`, `1.2 MB`.
pub fn human_bytes(n: u64) -> String {
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    for unit in ["kB", "MB", "GB", "TB", "PB"] {
        v /= 1000.0;
        if v < 999.95 {
            return format!("{v:.1} {unit}");
        }
    }
    format!("{:.1} EB", v / 1000.0)
}
