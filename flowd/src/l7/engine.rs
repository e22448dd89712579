//! The engine: packets in, events out.

use bytes::{Bytes, BytesMut};
use flowd_common::proto::{ip, tcp};

use super::{
    DnsInfo, HttpInfo, L7Event, L7Kind, L7Packet, L7Stats, Parsed,
    detect::{self, DNS_PORTS, Start},
    dns::{self, DnsMsg},
    event::Detail,
    http,
    pair::{Pending, conn_key},
    reasm::{Buf, Origin, Reasm, stream_key},
    tls,
};

/// The engine's bounds.
#[derive(Clone, Debug)]
pub struct L7Config {
    /// DNS ports besides 53 and 5353.
    pub dns_ports: Vec<u16>,
    /// Flow directions with a message being reassembled.
    pub reasm_max_flows: usize,
    /// Segments one message may span.
    pub reasm_max_segments: u32,
    /// Bytes one message may take.
    pub reasm_max_bytes: usize,
    /// A message not complete after this is dropped.
    pub reasm_timeout_ns: u64,
    /// A request without a response after this is emitted without one.
    pub response_timeout_ns: u64,
    /// Requests waiting for a response, in all.
    pub max_pending: usize,
    /// HTTP requests or ClientHellos waiting on one connection.
    pub max_pending_per_conn: usize,
}

impl Default for L7Config {
    fn default() -> Self {
        Self {
            dns_ports: Vec::new(),
            reasm_max_flows: 4096,
            reasm_max_segments: 4,
            reasm_max_bytes: 8192,
            reasm_timeout_ns: 5_000_000_000,
            response_timeout_ns: 30_000_000_000,
            max_pending: 65_536,
            max_pending_per_conn: 32,
        }
    }
}

/// One parsed message.
enum Msg {
    Request(HttpInfo),
    Status(u16),
    ClientHello(Box<tls::ClientHello>),
    ServerHello(tls::ServerHello),
    Dns(DnsMsg),
}

/// Messages one segment may carry (pipelined requests, DNS over TCP).
const MAX_MESSAGES_PER_SEGMENT: usize = 32;

pub struct Engine {
    cfg: L7Config,
    reasm: Reasm,
    pending: Pending,
    stats: L7Stats,
    out: Vec<L7Event>,
}

impl Engine {
    pub fn new(cfg: L7Config) -> Self {
        Self {
            reasm: Reasm::new(cfg.reasm_max_flows),
            pending: Pending::new(cfg.max_pending, cfg.max_pending_per_conn),
            stats: L7Stats::default(),
            out: Vec::new(),
            cfg,
        }
    }

    pub fn stats(&self) -> &L7Stats {
        &self.stats
    }

    /// DNS ports besides 53 and 5353 (a reload changed them).
    pub fn set_dns_ports(&mut self, ports: &[u16]) {
        self.cfg.dns_ports = ports.to_vec();
    }

    /// Requests waiting for a response.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Messages being reassembled.
    pub fn reassembling(&self) -> usize {
        self.reasm.len()
    }

    /// The events completed so far (counted here, by kind).
    pub fn take_events(&mut self) -> Vec<L7Event> {
        for ev in &self.out {
            match ev.kind() {
                L7Kind::Http => self.stats.http_events += 1,
                L7Kind::Dns => self.stats.dns_events += 1,
                L7Kind::Tls => self.stats.tls_events += 1,
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Emits requests unanswered after the timeout and drops stale buffers;
    /// call about once a second with the packets' clock.
    pub fn poll(&mut self, now_ns: u64) {
        self.reasm
            .expire(now_ns, self.cfg.reasm_timeout_ns, &mut self.stats);
        self.pending.expire(
            now_ns,
            self.cfg.response_timeout_ns,
            &mut self.out,
            &mut self.stats,
        );
    }

    /// Emits every request still waiting (end of a capture, shutdown).
    pub fn flush(&mut self) {
        self.reasm.clear(&mut self.stats);
        self.pending.flush(&mut self.out, &mut self.stats);
    }

    fn dns_port(&self, a: u16, b: u16) -> bool {
        let is = |p: u16| DNS_PORTS.contains(&p) || self.cfg.dns_ports.contains(&p);
        is(a) || is(b)
    }

    pub fn push(&mut self, pkt: &L7Packet) {
        self.stats.packets += 1;
        let k = &pkt.key;
        let origin = Origin {
            ts_ns: pkt.ts_ns,
            key: *k,
            direction: pkt.direction,
        };
        let dns_port = self.dns_port(k.sport, k.dport);
        match (k.proto, pkt.tcp) {
            (ip::TCP, Some(t)) => self.tcp_segment(pkt, origin, t.seq, t.flags, dns_port),
            (ip::UDP, _) => {
                if !dns_port || pkt.payload.is_empty() {
                    self.stats.unrecognised += 1;
                    return;
                }
                match dns::parse_message(&pkt.payload) {
                    Some(m) => {
                        // Answers were dropped so the rest parses: cut by
                        // the snap length, or (a whole datagram) malformed,
                        // e.g. an answer name that loops. The header and
                        // question still pair the response either way.
                        if m.truncated {
                            if pkt.truncated() {
                                self.stats.dns_truncated += 1;
                            } else {
                                self.stats.dns_parse_errors += 1;
                            }
                        }
                        self.handle(origin, Msg::Dns(m));
                    }
                    None => self.stats.dns_parse_errors += 1,
                }
            }
            _ => self.stats.unrecognised += 1,
        }
    }

    fn tcp_segment(&mut self, pkt: &L7Packet, origin: Origin, seq: u32, flags: u8, dns_port: bool) {
        if pkt.wire_payload_len == 0 {
            return;
        }
        let seq = if u16::from(flags) & tcp::SYN != 0 {
            seq.wrapping_add(1)
        } else {
            seq
        };
        let next_seq = seq.wrapping_add(pkt.wire_payload_len);
        let skey = stream_key(&pkt.key);
        if let Some(mut buf) = self.reasm.take(&skey) {
            let d = seq.wrapping_sub(buf.next_seq) as i32;
            if d < 0 {
                // A retransmission of what the buffer has.
                self.reasm.put(skey, buf, &mut self.stats);
                return;
            }
            if d == 0 {
                let room = self.cfg.reasm_max_bytes.saturating_sub(buf.data.len());
                let take = pkt.payload.len().min(room);
                buf.data.extend_from_slice(&pkt.payload[..take]);
                buf.segments += 1;
                buf.next_seq = next_seq;
                buf.cut |= pkt.truncated() || take < pkt.payload.len();
                let data = buf.data.split().freeze();
                self.run(
                    buf.origin,
                    buf.start,
                    data,
                    buf.cut,
                    buf.segments,
                    next_seq,
                    true,
                    dns_port,
                );
                return;
            }
            self.stats.reasm_gap += 1;
        } else if self.reasm.is_retransmission(&skey, seq) {
            self.stats.retransmissions += 1;
            return;
        }
        let Some(start) = detect::classify(&pkt.payload, true, dns_port) else {
            self.stats.unrecognised += 1;
            return;
        };
        self.run(
            origin,
            start,
            pkt.payload.clone(),
            pkt.truncated(),
            1,
            next_seq,
            true,
            dns_port,
        );
    }

    /// Parses the messages in `data`, from a message start, and keeps an
    /// unfinished one for the next segment.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site per path, all fields of one segment"
    )]
    fn run(
        &mut self,
        origin: Origin,
        mut start: Start,
        data: Bytes,
        cut: bool,
        segments: u32,
        next_seq: u32,
        is_tcp: bool,
        dns_port: bool,
    ) {
        let limit =
            segments >= self.cfg.reasm_max_segments || data.len() >= self.cfg.reasm_max_bytes;
        let last = cut || limit;
        let mut off = 0;
        for _ in 0..MAX_MESSAGES_PER_SEGMENT {
            let rest = &data[off..];
            let (parsed, kind) = parse(start, rest, last);
            match parsed {
                Parsed::Done(msg, used) => {
                    if is_tcp {
                        self.reasm.parsed_up_to(stream_key(&origin.key), next_seq);
                    }
                    // A whole DNS message (its length prefix says so) whose
                    // answers had to be dropped to parse is malformed, not
                    // cut: as over UDP, a parse error that still pairs.
                    if let Msg::Dns(m) = &msg
                        && m.truncated
                    {
                        self.stats.dns_parse_errors += 1;
                    }
                    self.handle(origin, msg);
                    off += used.max(1);
                    if off >= data.len() {
                        return;
                    }
                    match detect::classify(&data[off..], is_tcp, dns_port) {
                        Some(s) => start = s,
                        None => return,
                    }
                }
                Parsed::Cut(msg) => {
                    if is_tcp {
                        self.reasm.parsed_up_to(stream_key(&origin.key), next_seq);
                    }
                    match kind {
                        L7Kind::Http => self.stats.http_truncated += 1,
                        L7Kind::Dns => self.stats.dns_truncated += 1,
                        L7Kind::Tls => self.stats.tls_truncated += 1,
                    }
                    if limit && !cut {
                        self.stats.reasm_limit += 1;
                    }
                    self.handle(origin, msg);
                    return;
                }
                Parsed::More => {
                    let buf = Buf {
                        start,
                        origin,
                        data: BytesMut::from(rest),
                        next_seq,
                        segments,
                        cut: false,
                    };
                    self.reasm
                        .put(stream_key(&origin.key), buf, &mut self.stats);
                    return;
                }
                Parsed::Error => {
                    if limit && !cut {
                        self.stats.reasm_limit += 1;
                    }
                    match kind {
                        L7Kind::Http => self.stats.http_parse_errors += 1,
                        L7Kind::Dns => self.stats.dns_parse_errors += 1,
                        L7Kind::Tls => self.stats.tls_parse_errors += 1,
                    }
                    return;
                }
            }
        }
    }

    fn event(origin: Origin, detail: Detail) -> L7Event {
        L7Event {
            ts_ns: origin.ts_ns,
            key: origin.key,
            direction: origin.direction,
            latency_ns: None,
            detail,
        }
    }

    fn respond(
        &mut self,
        kind: L7Kind,
        origin: Origin,
        ev: Option<L7Event>,
        fill: impl FnOnce(&mut Detail),
    ) {
        let Some(mut ev) = ev else {
            match kind {
                L7Kind::Http => self.stats.http_unmatched_responses += 1,
                L7Kind::Dns => self.stats.dns_unmatched_responses += 1,
                L7Kind::Tls => self.stats.tls_unmatched_responses += 1,
            }
            return;
        };
        ev.latency_ns = Some(origin.ts_ns.saturating_sub(ev.ts_ns));
        fill(&mut ev.detail);
        self.out.push(ev);
    }

    fn handle(&mut self, origin: Origin, msg: Msg) {
        let req = conn_key(&origin.key, false);
        let resp = conn_key(&origin.key, true);
        match msg {
            Msg::Request(info) => {
                let ev = Self::event(origin, Detail::Http(info));
                self.pending
                    .push_fifo(L7Kind::Http, req, ev, &mut self.out, &mut self.stats);
            }
            Msg::Status(code) => {
                let ev = self.pending.pop_fifo(L7Kind::Http, &resp);
                self.respond(L7Kind::Http, origin, ev, |d| {
                    if let Detail::Http(h) = d {
                        h.status = Some(code);
                    }
                });
            }
            Msg::ClientHello(ch) => {
                let ev = Self::event(origin, Detail::Tls(ch.info));
                self.pending
                    .push_fifo(L7Kind::Tls, req, ev, &mut self.out, &mut self.stats);
            }
            Msg::ServerHello(sh) => {
                let ev = self.pending.pop_fifo(L7Kind::Tls, &resp);
                self.respond(L7Kind::Tls, origin, ev, |d| {
                    if let Detail::Tls(t) = d {
                        t.version = Some(sh.version);
                        t.cipher = Some(sh.cipher);
                    }
                });
            }
            Msg::Dns(m) if !m.response => {
                let info = DnsInfo {
                    id: m.id,
                    qname: m.qname,
                    qtype: m.qtype,
                    rcode: None,
                    answers: Vec::new(),
                };
                let ev = Self::event(origin, Detail::Dns(info));
                self.pending
                    .push_dns(req, m.id, ev, &mut self.out, &mut self.stats);
            }
            Msg::Dns(m) => {
                let ev = self.pending.pop_dns(&resp, m.id);
                self.respond(L7Kind::Dns, origin, ev, |d| {
                    if let Detail::Dns(q) = d {
                        q.rcode = Some(m.rcode);
                        q.answers = m.answers;
                    }
                });
            }
        }
    }
}

/// Runs the parser for `start` on `p`.
fn parse(start: Start, p: &[u8], last: bool) -> (Parsed<Msg>, L7Kind) {
    fn map<T>(p: Parsed<T>, f: impl FnOnce(T) -> Msg) -> Parsed<Msg> {
        match p {
            Parsed::Done(t, n) => Parsed::Done(f(t), n),
            Parsed::Cut(t) => Parsed::Cut(f(t)),
            Parsed::More => Parsed::More,
            Parsed::Error => Parsed::Error,
        }
    }
    match start {
        Start::HttpRequest => (
            map(http::parse_request(p, last), Msg::Request),
            L7Kind::Http,
        ),
        Start::HttpResponse => (map(http::parse_status(p, last), Msg::Status), L7Kind::Http),
        Start::TlsClientHello => (
            map(tls::parse_client_hello(p, last), |c| {
                Msg::ClientHello(Box::new(c))
            }),
            L7Kind::Tls,
        ),
        Start::TlsServerHello => (
            map(tls::parse_server_hello(p, last), Msg::ServerHello),
            L7Kind::Tls,
        ),
        Start::Dns { tcp: true } => (map(dns::parse_tcp(p, last), Msg::Dns), L7Kind::Dns),
        Start::Dns { tcp: false } => (
            match dns::parse_message(p) {
                Some(m) => Parsed::Done(Msg::Dns(m), p.len()),
                None => Parsed::Error,
            },
            L7Kind::Dns,
        ),
    }
}
