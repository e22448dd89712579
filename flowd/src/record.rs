//! The flow record shape shared by `/api/v1/flows`, JSON lines and replay.

use std::{
    io::{self, Write},
    net::{IpAddr, Ipv6Addr},
};

use flowd_common::{
    FlowKey,
    proto::{self, ip},
};
use serde_json::{Value, json};

use crate::{
    clock::rfc3339_ns,
    flowtable::{Ended, Flow, FlowL7},
};

/// The textual form of a key address: dotted quad for IPv4-mapped addresses.
pub fn addr(a: &[u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(*a);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

pub fn direction(key: &FlowKey) -> &'static str {
    proto::direction_name(key.direction)
}

/// One flow as a JSON object with the documented keys.
pub fn flow_json(flow: &Flow, device: &str) -> Value {
    let k = &flow.key;
    let mut v = json!({
        "start": rfc3339_ns(flow.first_ns),
        "end": rfc3339_ns(flow.last_ns),
        "device": device,
        "direction": direction(k),
        "vlan": k.vlan,
        "src": addr(&k.src).to_string(),
        "dst": addr(&k.dst).to_string(),
        "sport": k.sport,
        "dport": k.dport,
        "proto": k.proto,
        "packets": flow.counts.packets,
        "bytes": flow.counts.bytes,
        "tcp_flags": flow.counts.tcp_flags,
        "syn": flow.counts.syn,
        "fin": flow.counts.fin,
        "rst": flow.counts.rst,
        "first_seen_ns": flow.first_ns,
        "last_seen_ns": flow.last_ns,
    });
    if k.proto == ip::TCP {
        v["synack"] = flow.counts.synack.into();
        v["retrans"] = flow.counts.retrans.into();
        v["zero_window"] = flow.counts.zero_window.into();
        if flow.rtt_samples > 0 {
            v["rtt_min_ns"] = flow.rtt_min_ns.into();
            v["rtt_srtt_ns"] = flow.rtt_srtt_ns.into();
            v["rtt_samples"] = flow.rtt_samples.into();
        }
    }
    if (flow.counts.ce | flow.counts.ect0 | flow.counts.ect1) != 0 {
        v["ecn_ce"] = flow.counts.ce.into();
        v["ecn_ect0"] = flow.counts.ect0.into();
        v["ecn_ect1"] = flow.counts.ect1.into();
    }
    v["dscp"] = flow.counts.dscp.into();
    if let Some(l7) = &flow.l7 {
        for (k, name) in l7_names(l7) {
            v[KEYS[k]] = name.into();
        }
    }
    v
}

/// The application-layer names a flow has, as ([`KEYS`] index, value).
fn l7_names(l7: &FlowL7) -> impl Iterator<Item = (usize, &str)> {
    [
        (key::HTTP_HOST, &l7.http_host),
        (key::HTTP_URL, &l7.http_url),
        (key::DNS_QNAME, &l7.dns_qname),
        (key::TLS_SNI, &l7.tls_sni),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
}

/// An ended flow record: the flow plus `state` (TCP) and `end_reason`.
pub fn ended_json(e: &Ended, device: &str) -> Value {
    let mut v = flow_json(&e.flow, device);
    if let Some(state) = e.state {
        v["state"] = state.into();
    }
    v["end_reason"] = e.reason.as_str().into();
    v
}

/// The keys of flow and connection records, in CSV column order: the
/// documented columns first, then the rest sorted by name.
pub const KEYS: [&str; 40] = [
    "start",
    "end",
    "device",
    "direction",
    "vlan",
    "proto",
    "src",
    "sport",
    "dst",
    "dport",
    "packets",
    "bytes",
    "packets_fwd",
    "bytes_fwd",
    "packets_rev",
    "bytes_rev",
    "tcp_flags",
    "tcp_flags_fwd",
    "tcp_flags_rev",
    "state",
    "end_reason",
    "syn",
    "fin",
    "rst",
    "first_seen_ns",
    "last_seen_ns",
    "dscp",
    "ecn_ce",
    "ecn_ect0",
    "ecn_ect1",
    "retrans",
    "rtt_min_ns",
    "rtt_samples",
    "rtt_srtt_ns",
    "synack",
    "zero_window",
    "http_host",
    "http_url",
    "dns_qname",
    "tls_sni",
];

/// Indexes into [`KEYS`].
pub mod key {
    pub const START: usize = 0;
    pub const END: usize = 1;
    pub const DEVICE: usize = 2;
    pub const DIRECTION: usize = 3;
    pub const VLAN: usize = 4;
    pub const PROTO: usize = 5;
    pub const SRC: usize = 6;
    pub const SPORT: usize = 7;
    pub const DST: usize = 8;
    pub const DPORT: usize = 9;
    pub const PACKETS: usize = 10;
    pub const BYTES: usize = 11;
    pub const PACKETS_FWD: usize = 12;
    pub const BYTES_FWD: usize = 13;
    pub const PACKETS_REV: usize = 14;
    pub const BYTES_REV: usize = 15;
    pub const TCP_FLAGS: usize = 16;
    pub const TCP_FLAGS_FWD: usize = 17;
    pub const TCP_FLAGS_REV: usize = 18;
    pub const STATE: usize = 19;
    pub const END_REASON: usize = 20;
    pub const SYN: usize = 21;
    pub const FIN: usize = 22;
    pub const RST: usize = 23;
    pub const FIRST_SEEN_NS: usize = 24;
    pub const LAST_SEEN_NS: usize = 25;
    pub const DSCP: usize = 26;
    pub const ECN_CE: usize = 27;
    pub const ECN_ECT0: usize = 28;
    pub const ECN_ECT1: usize = 29;
    pub const RETRANS: usize = 30;
    pub const RTT_MIN_NS: usize = 31;
    pub const RTT_SAMPLES: usize = 32;
    pub const RTT_SRTT_NS: usize = 33;
    pub const SYNACK: usize = 34;
    pub const ZERO_WINDOW: usize = 35;
    pub const HTTP_HOST: usize = 36;
    pub const HTTP_URL: usize = 37;
    pub const DNS_QNAME: usize = 38;
    pub const TLS_SNI: usize = 39;
}

/// [`KEYS`] indexes in JSON object order: sorted by name, as serde_json's
/// (BTreeMap) objects print them.
const JSON_ORDER: [usize; KEYS.len()] = {
    let mut order = [0; KEYS.len()];
    let mut i = 0;
    while i < KEYS.len() {
        order[i] = i;
        i += 1;
    }
    // Insertion sort by name (const context: no slice::sort).
    let mut i = 1;
    while i < KEYS.len() {
        let mut j = i;
        while j > 0 && str_less(KEYS[order[j]], KEYS[order[j - 1]]) {
            let t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    order
};

const fn str_less(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

/// One value of a record, formatted only when written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Field<'a> {
    /// The record has no such key.
    #[default]
    Absent,
    Uint(u64),
    Str(&'a str),
    /// Unix ns, written as RFC 3339 (a string).
    Time(u64),
    /// A key address, written as text (a string).
    Addr(&'a [u8; 16]),
}

/// A flow (or connection) record as [`KEYS`]-indexed fields: the same keys
/// and values as [`ended_json`] / [`flow_json`], written straight to a
/// writer as JSON or CSV without building a `serde_json::Value`.
#[derive(Debug, Clone)]
pub struct Fields<'a>(pub [Field<'a>; KEYS.len()]);

impl<'a> Fields<'a> {
    pub fn new() -> Self {
        Self([Field::Absent; KEYS.len()])
    }

    pub fn set(&mut self, key: usize, value: Field<'a>) {
        self.0[key] = value;
    }

    /// [`flow_json`]'s keys and values.
    pub fn flow(flow: &'a Flow, device: &'a str) -> Self {
        let k = &flow.key;
        let mut r = Self::new();
        r.set(key::START, Field::Time(flow.first_ns));
        r.set(key::END, Field::Time(flow.last_ns));
        r.set(key::DEVICE, Field::Str(device));
        r.set(key::DIRECTION, Field::Str(direction(k)));
        r.set(key::VLAN, Field::Uint(k.vlan.into()));
        r.set(key::SRC, Field::Addr(&k.src));
        r.set(key::DST, Field::Addr(&k.dst));
        r.set(key::SPORT, Field::Uint(k.sport.into()));
        r.set(key::DPORT, Field::Uint(k.dport.into()));
        r.set(key::PROTO, Field::Uint(k.proto.into()));
        r.set(key::PACKETS, Field::Uint(flow.counts.packets));
        r.set(key::BYTES, Field::Uint(flow.counts.bytes));
        r.set(key::TCP_FLAGS, Field::Uint(flow.counts.tcp_flags.into()));
        r.set(key::SYN, Field::Uint(flow.counts.syn.into()));
        r.set(key::FIN, Field::Uint(flow.counts.fin.into()));
        r.set(key::RST, Field::Uint(flow.counts.rst.into()));
        r.set(key::FIRST_SEEN_NS, Field::Uint(flow.first_ns));
        r.set(key::LAST_SEEN_NS, Field::Uint(flow.last_ns));
        if k.proto == ip::TCP {
            r.set(key::SYNACK, Field::Uint(flow.counts.synack.into()));
            r.set(key::RETRANS, Field::Uint(flow.counts.retrans.into()));
            r.set(
                key::ZERO_WINDOW,
                Field::Uint(flow.counts.zero_window.into()),
            );
            if flow.rtt_samples > 0 {
                r.set(key::RTT_MIN_NS, Field::Uint(flow.rtt_min_ns));
                r.set(key::RTT_SRTT_NS, Field::Uint(flow.rtt_srtt_ns));
                r.set(key::RTT_SAMPLES, Field::Uint(flow.rtt_samples.into()));
            }
        }
        // The same test as flow_json's.
        if (flow.counts.ce | flow.counts.ect0 | flow.counts.ect1) != 0 {
            r.set(key::ECN_CE, Field::Uint(flow.counts.ce.into()));
            r.set(key::ECN_ECT0, Field::Uint(flow.counts.ect0.into()));
            r.set(key::ECN_ECT1, Field::Uint(flow.counts.ect1.into()));
        }
        r.set(key::DSCP, Field::Uint(flow.counts.dscp.into()));
        if let Some(l7) = &flow.l7 {
            for (k, name) in l7_names(l7) {
                r.set(k, Field::Str(name));
            }
        }
        r
    }

    /// [`ended_json`]'s keys and values.
    pub fn ended(e: &'a Ended, device: &'a str) -> Self {
        let mut r = Self::flow(&e.flow, device);
        if let Some(state) = e.state {
            r.set(key::STATE, Field::Str(state));
        }
        r.set(key::END_REASON, Field::Str(e.reason.as_str()));
        r
    }

    /// Bit i set: the record has `KEYS[i]`.
    pub fn mask(&self) -> u64 {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, f)| **f != Field::Absent)
            .fold(0, |m, (i, _)| m | 1 << i)
    }

    /// One JSON object and a newline, keys sorted as serde_json sorts them.
    pub fn write_json_line(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(b"{")?;
        let mut first = true;
        for &i in &JSON_ORDER {
            let f = self.0[i];
            if f == Field::Absent {
                continue;
            }
            if !first {
                w.write_all(b",")?;
            }
            first = false;
            w.write_all(b"\"")?;
            w.write_all(KEYS[i].as_bytes())?;
            w.write_all(b"\":")?;
            match f {
                Field::Absent => {}
                Field::Uint(n) => write_uint(w, n)?,
                Field::Str(s) => serde_json::to_writer(&mut *w, s)?,
                Field::Time(ns) => {
                    w.write_all(b"\"")?;
                    write_rfc3339_ns(w, ns)?;
                    w.write_all(b"\"")?;
                }
                Field::Addr(a) => {
                    w.write_all(b"\"")?;
                    write_addr(w, a)?;
                    w.write_all(b"\"")?;
                }
            }
        }
        w.write_all(b"}\n")
    }

    /// One CSV line with the columns in `columns` (a [`Fields::mask`]
    /// union), in [`KEYS`] order; absent values are empty, strings with a
    /// comma, quote or line break are quoted.
    pub fn write_csv_line(&self, w: &mut impl Write, columns: u64) -> io::Result<()> {
        let mut first = true;
        for (i, f) in self.0.iter().enumerate() {
            if columns & (1 << i) == 0 {
                continue;
            }
            if !first {
                w.write_all(b",")?;
            }
            first = false;
            match *f {
                Field::Absent => {}
                Field::Uint(n) => write_uint(w, n)?,
                Field::Str(s) if s.contains([',', '"', '\n', '\r']) => {
                    write!(w, "\"{}\"", s.replace('"', "\"\""))?
                }
                Field::Str(s) => w.write_all(s.as_bytes())?,
                Field::Time(ns) => write_rfc3339_ns(w, ns)?,
                Field::Addr(a) => write_addr(w, a)?,
            }
        }
        w.write_all(b"\n")
    }
}

impl Default for Fields<'_> {
    fn default() -> Self {
        Self::new()
    }
}

/// The CSV header of the columns in `columns` (see [`Fields::write_csv_line`]).
pub fn write_csv_header(w: &mut impl Write, columns: u64) -> io::Result<()> {
    let mut first = true;
    for (i, k) in KEYS.iter().enumerate() {
        if columns & (1 << i) != 0 {
            if !first {
                w.write_all(b",")?;
            }
            first = false;
            w.write_all(k.as_bytes())?;
        }
    }
    w.write_all(b"\n")
}

/// [`rfc3339_ns`] without a `String` per call: the date part is formatted
/// once per day (records of a capture share a few days).
fn write_rfc3339_ns(w: &mut impl Write, unix_ns: u64) -> io::Result<()> {
    thread_local! {
        static DAY: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let secs = unix_ns / 1_000_000_000;
    let day = secs / 86_400;
    DAY.with_borrow_mut(|(d, date)| {
        if *d != day {
            let full = rfc3339_ns(day * 86_400 * 1_000_000_000);
            *date = full[..full.find('T').unwrap_or(full.len())].to_owned();
            *d = day;
        }
        w.write_all(date.as_bytes())
    })?;
    let rem = secs % 86_400;
    let mut t = *b"T00:00:00.000000000Z";
    two_digits(&mut t[1..3], rem / 3600);
    two_digits(&mut t[4..6], (rem / 60) % 60);
    two_digits(&mut t[7..9], rem % 60);
    let mut nanos = unix_ns % 1_000_000_000;
    for b in t[10..19].iter_mut().rev() {
        *b = b'0' + (nanos % 10) as u8;
        nanos /= 10;
    }
    w.write_all(&t)
}

fn two_digits(out: &mut [u8], v: u64) {
    out[0] = b'0' + (v / 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

/// [`addr`]'s text; IPv4 without going through `fmt`.
fn write_addr(w: &mut impl Write, a: &[u8; 16]) -> io::Result<()> {
    match addr(a) {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().iter().enumerate() {
                if i > 0 {
                    w.write_all(b".")?;
                }
                write_uint(w, u64::from(*o))?;
            }
            Ok(())
        }
        v6 => write!(w, "{v6}"),
    }
}

/// Decimal digits without going through `fmt`.
fn write_uint(w: &mut impl Write, mut n: u64) -> io::Result<()> {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    w.write_all(&buf[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    use flowd_common::FlowKey;

    use crate::flowtable::EndReason;

    fn flow(proto: u8, rtt: bool, ecn: bool) -> Flow {
        Flow {
            key: FlowKey {
                ifindex: 1,
                proto,
                vlan: 7,
                src: flowd_common::ipv4_mapped([198, 18, 0, 1]),
                dst: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                sport: 40000,
                dport: 443,
                ..Default::default()
            },
            counts: flowd_common::FlowCounts {
                packets: 12,
                bytes: 3400,
                tcp_flags: 0x1b,
                syn: 1,
                fin: 2,
                rst: 0,
                synack: 1,
                retrans: 3,
                zero_window: 4,
                ce: 1,
                ect0: if ecn { 5 } else { 0 },
                ect1: 0,
                dscp: 46,
                seq_valid: 0,
            },
            first_ns: 1_300_475_167_096_535_000,
            last_ns: 1_300_475_168_000_000_001,
            rtt_min_ns: if rtt { 1000 } else { 0 },
            rtt_srtt_ns: if rtt { 1500 } else { 0 },
            rtt_samples: u32::from(rtt),
            l7: None,
        }
    }

    /// The direct writers print what serde_json prints for the `Value`
    /// records, byte for byte (the replay tests compare whole captures).
    #[test]
    fn fields_write_what_the_json_records_hold() {
        assert!(JSON_ORDER.windows(2).all(|w| KEYS[w[0]] < KEYS[w[1]]));
        for (proto, rtt, ecn, state) in [
            (6, true, true, Some("SF")),
            (6, false, false, None),
            (17, false, true, None),
            (1, true, false, None),
        ] {
            let mut f = flow(proto, rtt, ecn);
            if !ecn {
                f.counts.ce = 0;
            }
            if proto == 6 {
                // Names with characters JSON must escape.
                f.l7 = Some(Box::new(FlowL7 {
                    http_host: Some("example.test:8080".into()),
                    http_url: Some("/a?b=c&d=é\u{1}".into()),
                    dns_qname: None,
                    tls_sni: rtt.then(|| "sni.example.test".into()),
                }));
            }
            let e = Ended {
                flow: f,
                state,
                reason: EndReason::EndOfFlow,
                originator: true,
            };
            for device in ["eth0", "a,\"b\"\n\u{1}é"] {
                let v = ended_json(&e, device);
                let mut got = Vec::new();
                Fields::ended(&e, device).write_json_line(&mut got).unwrap();
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    format!("{}\n", serde_json::to_string(&v).unwrap())
                );
                let r = Fields::ended(&e, device);
                let mut csv = Vec::new();
                r.write_csv_line(&mut csv, r.mask()).unwrap();
                let csv = String::from_utf8(csv).unwrap();
                if !device.contains(',') {
                    let cells: Vec<&str> = csv.trim_end().split(',').collect();
                    let keys: Vec<&str> = KEYS
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| r.mask() & (1 << i) != 0)
                        .map(|(_, k)| *k)
                        .collect();
                    assert_eq!(cells.len(), keys.len());
                    for (k, c) in keys.iter().zip(&cells) {
                        let want = match &v[*k] {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        assert_eq!(*c, want, "{k}");
                    }
                } else {
                    assert!(csv.contains(",\"a,\"\"b\"\"\n\u{1}é\","), "{csv}");
                }
            }
        }
        let mut h = Vec::new();
        write_csv_header(&mut h, 1 << key::START | 1 << key::DSCP | 1 << key::SRC).unwrap();
        assert_eq!(h, b"start,src,dscp\n");
    }

    #[test]
    fn times_and_addresses_print_as_rfc3339_ns_and_addr() {
        for ns in [
            0,
            1,
            999_999_999,
            86_399_999_999_999,
            951_782_400_000_000_000, // 2000-02-29
            1_300_475_167_096_535_000,
            4_102_444_800_123_456_789, // 2100-01-01
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_rfc3339_ns(&mut out, ns).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), rfc3339_ns(ns));
        }
        let mut v6 = [0u8; 16];
        v6[0] = 0x20;
        v6[1] = 0x01;
        v6[15] = 9;
        for a in [
            flowd_common::ipv4_mapped([0, 0, 0, 0]),
            flowd_common::ipv4_mapped([255, 10, 100, 1]),
            v6,
            [0; 16],
        ] {
            let mut out = Vec::new();
            write_addr(&mut out, &a).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), addr(&a).to_string());
        }
    }

    #[test]
    fn mapped_ipv4_prints_as_ipv4() {
        let a = flowd_common::ipv4_mapped([198, 18, 0, 1]);
        assert_eq!(addr(&a).to_string(), "198.18.0.1");
        let mut b = [0u8; 16];
        b[0] = 0xfd;
        b[15] = 1;
        assert_eq!(addr(&b).to_string(), "fd00::1");
    }
}
