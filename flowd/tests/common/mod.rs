//! Frames built by hand and a harness around one loaded [`Datapath`] for the
//! `BPF_PROG_TEST_RUN` tests. Needs root (loads BPF programs).

use std::collections::BTreeMap;

use flowd::{
    loader::Datapath,
    sys::{self, SysError},
};
use flowd_common::{
    DIR_EGRESS, DIR_INGRESS, FlowCounts, FlowKey, FlowStats, IfaceCounters, REPLAY_META_MAGIC,
    counter, ipv4_mapped,
};

/// `BPF_PROG_TEST_RUN` without `ingress_ifindex` (XDP) or a device (TC)
/// runs on the network namespace's loopback device, which is ifindex 1.
pub(crate) const LO: u32 = 1;
/// The counter slot the tests give the loopback device.
pub(crate) const SLOT: u32 = 1;

pub(crate) const XDP_PASS: u32 = 2;
/// `TC_ACT_UNSPEC` (-1) as the test run reports it.
pub(crate) const TC_ACT_UNSPEC: u32 = -1i32 as u32;

pub(crate) const ETH_IPV4: u16 = 0x0800;
pub(crate) const ETH_IPV6: u16 = 0x86dd;
pub(crate) const ETH_ARP: u16 = 0x0806;
pub(crate) const ETH_LLDP: u16 = 0x88cc;
pub(crate) const ETH_8021Q: u16 = 0x8100;
pub(crate) const ETH_8021AD: u16 = 0x88a8;
pub(crate) const ETH_QINQ_OLD: u16 = 0x9100;
pub(crate) const ETH_MPLS_UC: u16 = 0x8847;
pub(crate) const ETH_MPLS_MC: u16 = 0x8848;
pub(crate) const ETH_PPPOE_SESS: u16 = 0x8864;

pub(crate) const P_HOPOPTS: u8 = 0;
pub(crate) const P_ICMP: u8 = 1;
pub(crate) const P_TCP: u8 = 6;
pub(crate) const P_UDP: u8 = 17;
pub(crate) const P_ROUTING: u8 = 43;
pub(crate) const P_FRAGMENT: u8 = 44;
pub(crate) const P_GRE: u8 = 47;
pub(crate) const P_AH: u8 = 51;
pub(crate) const P_ICMPV6: u8 = 58;
pub(crate) const P_DSTOPTS: u8 = 60;
pub(crate) const P_SCTP: u8 = 132;
pub(crate) const P_UDPLITE: u8 = 136;

pub(crate) const TCP_FIN: u16 = 0x01;
pub(crate) const TCP_SYN: u16 = 0x02;
pub(crate) const TCP_RST: u16 = 0x04;
pub(crate) const TCP_PSH: u16 = 0x08;
pub(crate) const TCP_ACK: u16 = 0x10;
pub(crate) const TCP_ECE: u16 = 0x40;
pub(crate) const TCP_CWR: u16 = 0x80;
pub(crate) const TCP_NS: u16 = 0x100;

/// Addresses from the benchmarking ranges (RFC 2544, and fd00::/8).
pub(crate) const SRC4: [u8; 4] = [198, 18, 0, 1];
pub(crate) const DST4: [u8; 4] = [198, 19, 0, 2];
pub(crate) const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub(crate) const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

// ---------------------------------------------------------------- frames

/// Ethernet header with VLAN tags `(TPID, TCI)` in wire order, outer first.
pub(crate) fn l2(tags: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
    let mut v = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    for (tpid, tci) in tags {
        v.extend_from_slice(&tpid.to_be_bytes());
        v.extend_from_slice(&tci.to_be_bytes());
    }
    v.extend_from_slice(&ethertype.to_be_bytes());
    v
}

/// IPv4 header with options (a multiple of 4 bytes) and a valid checksum.
/// `frag` is the flags + fragment offset field (MF = 0x2000).
pub(crate) fn ipv4_header(
    proto: u8,
    id: u16,
    frag: u16,
    options: &[u8],
    payload_len: usize,
) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let hlen = 20 + options.len();
    let total = (hlen + payload_len) as u16;
    let mut h = vec![0x40 | (hlen / 4) as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&SRC4);
    h.extend_from_slice(&DST4);
    h.extend_from_slice(options);
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

pub(crate) fn ipv6_header(next: u8, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload_len as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&SRC6);
    h.extend_from_slice(&DST6);
    h
}

/// TCP header (20 bytes) with flag bits; NS (0x100) goes in byte 12.
pub(crate) fn tcp(sport: u16, dport: u16, flags: u16) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&1000u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.push(0x50 | (flags >> 8) as u8 & 1);
    t.push(flags as u8);
    t.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    t
}

/// UDP (and UDP-Lite) header plus `payload` zero bytes.
pub(crate) fn udp(sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.resize(8 + payload, 0);
    u
}

/// SCTP common header (12 bytes) plus a 4-byte chunk header.
pub(crate) fn sctp(sport: u16, dport: u16) -> Vec<u8> {
    let mut s = Vec::with_capacity(16);
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    s.extend_from_slice(&[1, 0, 0, 4]);
    s
}

/// ICMP / ICMPv6 header (8 bytes).
pub(crate) fn icmp(typ: u8, code: u8) -> Vec<u8> {
    vec![typ, code, 0, 0, 0, 1, 0, 1]
}

/// IPv6 extension header of the generic (len + 1) * 8 form
/// (hop-by-hop, routing, destination options): `units` extra 8-byte units.
pub(crate) fn ext_generic(next: u8, units: u8) -> Vec<u8> {
    let mut e = vec![next, units];
    // PadN option over the rest (also a valid routing header shape for the parser).
    e.extend_from_slice(&[1, 4, 0, 0, 0, 0]);
    e.resize((units as usize + 1) * 8, 0);
    e
}

/// Authentication header with a 12-byte ICV: (len + 2) * 4 = 24 bytes.
pub(crate) fn ext_ah(next: u8) -> Vec<u8> {
    let mut e = vec![next, 4, 0, 0];
    e.extend_from_slice(&0x100u32.to_be_bytes()); // SPI
    e.extend_from_slice(&1u32.to_be_bytes()); // sequence
    e.resize(24, 0xab);
    e
}

/// Fragment header: offset in 8-byte units, M flag, identification.
pub(crate) fn ext_frag(next: u8, offset_units: u16, more: bool, id: u32) -> Vec<u8> {
    let mut e = vec![next, 0];
    e.extend_from_slice(&((offset_units << 3) | more as u16).to_be_bytes());
    e.extend_from_slice(&id.to_be_bytes());
    e
}

/// Ethernet + IPv4 (no options) + `l4`.
pub(crate) fn v4(proto: u8, l4: &[u8]) -> Vec<u8> {
    v4_tagged(&[], proto, l4)
}

pub(crate) fn v4_tagged(tags: &[(u16, u16)], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = l2(tags, ETH_IPV4);
    f.extend(ipv4_header(proto, 1, 0, &[], l4.len()));
    f.extend_from_slice(l4);
    f
}

/// Ethernet + IPv6 + `rest` (extension headers and L4); `next` is the IPv6
/// header's next header.
pub(crate) fn v6(next: u8, rest: &[u8]) -> Vec<u8> {
    let mut f = l2(&[], ETH_IPV6);
    f.extend(ipv6_header(next, rest.len()));
    f.extend_from_slice(rest);
    f
}

/// An IPv6 chain of extension headers `exts` (protocol numbers, in order)
/// in front of `l4` of protocol `proto`, behind Ethernet.
pub(crate) fn v6_chain(exts: &[u8], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut rest = Vec::new();
    for (i, &e) in exts.iter().enumerate() {
        let next = exts.get(i + 1).copied().unwrap_or(proto);
        rest.extend(match e {
            P_AH => ext_ah(next),
            P_FRAGMENT => ext_frag(next, 0, false, 7),
            _ => ext_generic(next, (i % 3) as u8),
        });
    }
    rest.extend_from_slice(l4);
    v6(exts.first().copied().unwrap_or(proto), &rest)
}

// ---------------------------------------------------------------- keys

pub(crate) fn key4(proto: u8, sport: u16, dport: u16) -> FlowKey {
    FlowKey {
        ifindex: LO,
        vlan: 0,
        direction: DIR_INGRESS,
        proto,
        src: ipv4_mapped(SRC4),
        dst: ipv4_mapped(DST4),
        sport,
        dport,
    }
}

pub(crate) fn key6(proto: u8, sport: u16, dport: u16) -> FlowKey {
    FlowKey {
        src: SRC6,
        dst: DST6,
        ..key4(proto, sport, dport)
    }
}

/// Flow counters of replayed packets whose capture times were `ts`.
pub(crate) fn stats(packets: u64, bytes: u64, first_ns: u64, last_ns: u64) -> FlowStats {
    FlowStats {
        counts: FlowCounts {
            packets,
            bytes,
            ..Default::default()
        },
        first_seen_ns: first_ns,
        last_seen_ns: last_ns,
        ..Default::default()
    }
}

/// `ReplayMeta` as the XDP metadata area wants it (little endian).
pub(crate) fn meta(wire_len: u32, ts_ns: u64) -> [u8; 16] {
    meta_with_magic(REPLAY_META_MAGIC, wire_len, ts_ns)
}

pub(crate) fn meta_with_magic(magic: u32, wire_len: u32, ts_ns: u64) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[0..4].copy_from_slice(&magic.to_le_bytes());
    m[4..8].copy_from_slice(&wire_len.to_le_bytes());
    m[8..16].copy_from_slice(&ts_ns.to_le_bytes());
    m
}

/// Expected counter block: every index not named is zero.
pub(crate) fn counters(set: &[(usize, u64)]) -> IfaceCounters {
    let mut c = IfaceCounters::default();
    for &(i, n) in set {
        c.c[i] += n;
    }
    c
}

/// Compares two counter blocks and names every counter that differs.
#[track_caller]
pub(crate) fn assert_counters(actual: &IfaceCounters, expected: &IfaceCounters) {
    let diff: Vec<String> = (0..counter::COUNT)
        .filter(|&i| actual.c[i] != expected.c[i])
        .map(|i| {
            format!(
                "{}: got {}, want {}",
                counter::NAMES[i],
                actual.c[i],
                expected.c[i]
            )
        })
        .collect();
    assert!(diff.is_empty(), "counters differ: {}", diff.join("; "));
}

// ------------------------------------------------------------ kernel log

/// The `log` facade's records from the programs on this thread: aya-log's reader passes the
/// programs' log to it in `Datapath::flush_kernel_log`, on the caller's
/// thread, so each test sees only its own datapath's lines.
struct ThreadLog;

thread_local! {
    static LOG_LINES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl log::Log for ThreadLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.target() == "flowd::kernel"
    }
    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = format!("{} {}: {}", r.level(), r.target(), r.args());
        LOG_LINES.with(|l| l.borrow_mut().push(line));
    }
    fn flush(&self) {}
}

/// Installs [`ThreadLog`] (once per test binary), before a datapath is
/// loaded: aya-log's reader takes the logger installed at that moment.
fn capture_kernel_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&ThreadLog).expect("no other logger in the test binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// The programs' log lines since the last call: `LEVEL target: message`.
pub(crate) fn kernel_log(dp: &mut Datapath) -> Vec<String> {
    dp.flush_kernel_log();
    LOG_LINES.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

// ---------------------------------------------------------------- harness

/// One loaded datapath with the loopback device in counter slot 1.
pub(crate) struct Harness {
    pub(crate) dp: Datapath,
}

impl Harness {
    pub(crate) fn new(capacity: u32) -> Self {
        capture_kernel_log();
        let mut dp = Datapath::load(capacity).expect("loading the datapath (needs root)");
        dp.set_slot(LO, SLOT)
            .expect("assigning slot 1 to ifindex 1");
        Self { dp }
    }

    /// Loads without assigning any slot (all counters go to slot 0).
    pub(crate) fn without_slot(capacity: u32) -> Self {
        capture_kernel_log();
        Self {
            dp: Datapath::load(capacity).expect("loading the datapath (needs root)"),
        }
    }

    pub(crate) fn try_xdp_with_meta(&self, meta: &[u8], frame: &[u8]) -> Result<u32, SysError> {
        let fd = self.dp.ingress_fd().unwrap();
        sys::xdp_test_run(fd, meta, frame, 1).map(|r| r.retval)
    }

    /// One XDP run without metadata (length from the buffer, kernel clock).
    #[track_caller]
    pub(crate) fn xdp(&self, frame: &[u8]) {
        let r = self.try_xdp_with_meta(&[], frame).expect("XDP test run");
        assert_eq!(r, XDP_PASS, "XDP verdict");
    }

    /// One XDP run as a replay would: the original length and capture time.
    #[track_caller]
    pub(crate) fn replay(&self, frame: &[u8], wire_len: u32, ts_ns: u64) {
        let r = self
            .try_xdp_with_meta(&meta(wire_len, ts_ns), frame)
            .expect("XDP test run");
        assert_eq!(r, XDP_PASS, "XDP verdict");
    }

    /// `replay` with the frame's own length.
    #[track_caller]
    pub(crate) fn replay_at(&self, frame: &[u8], ts_ns: u64) {
        self.replay(frame, frame.len() as u32, ts_ns);
    }

    pub(crate) fn try_tc(&self, frame: &[u8]) -> Result<u32, SysError> {
        let fd = self.dp.egress_fd().unwrap();
        sys::test_run_plain(fd, frame, 1).map(|r| r.retval)
    }

    /// One TC (egress) run.
    #[track_caller]
    pub(crate) fn tc(&self, frame: &[u8]) {
        let r = self.try_tc(frame).expect("TC test run");
        assert_eq!(r, TC_ACT_UNSPEC, "TC verdict");
    }

    pub(crate) fn totals(&self, direction: u8) -> IfaceCounters {
        self.dp.totals(SLOT, direction).unwrap()
    }

    pub(crate) fn ingress(&self) -> IfaceCounters {
        self.totals(DIR_INGRESS)
    }

    pub(crate) fn egress(&self) -> IfaceCounters {
        self.totals(DIR_EGRESS)
    }

    /// Drains both generations, with the TCP health and ECN counters and
    /// the kernel-internal sequence state cleared (the parser tests compare
    /// the v1 counters; `drain_raw` keeps everything).
    pub(crate) fn drain(&mut self) -> BTreeMap<FlowKey, FlowStats> {
        let mut flows = self.drain_raw();
        for v in flows.values_mut() {
            *v = FlowStats {
                counts: FlowCounts {
                    synack: 0,
                    retrans: 0,
                    zero_window: 0,
                    ce: 0,
                    ect0: 0,
                    ect1: 0,
                    dscp: 0,
                    seq_valid: 0,
                    ..v.counts
                },
                seq_next: 0,
                ts_last: 0,
                ..*v
            };
        }
        flows
    }

    /// Drains both generations. A key must come out at most once.
    pub(crate) fn drain_raw(&mut self) -> BTreeMap<FlowKey, FlowStats> {
        let mut flows = BTreeMap::new();
        let mut dup = Vec::new();
        let n = self
            .dp
            .drain_all(|k, v| {
                if flows.insert(*k, *v).is_some() {
                    dup.push(*k);
                }
            })
            .unwrap();
        assert!(dup.is_empty(), "keys drained twice: {dup:?}");
        assert_eq!(n, flows.len());
        flows
    }
}

/// Splitmix64: a seeded generator so failures reproduce exactly.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub(crate) fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}
