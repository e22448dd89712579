//! Selection of packets that carry application metadata (issue 12): after
//! a packet is accounted, its first payload bytes are looked at (only when
//! it has payload) and, for an HTTP/1.x request or status line, a TLS
//! ClientHello / ServerHello, DNS on a DNS port, or a continuation segment
//! of a selected request, a fixed header plus the first `snap_len` bytes of
//! its L4 payload go to `L7_EVENTS`. Nothing here drops or delays a packet;
//! every sample not taken is counted.

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_skb_load_bytes, bpf_xdp_get_buff_len, bpf_xdp_load_bytes},
    },
    programs::{TcContext, XdpContext},
};
use flowd_common::{
    FlowKey, FlowStats, IfaceCounters, counter,
    l7::{
        L7_CONT_SHIFT, L7_CONT_SPENT, L7_SAMPLE_CONTINUATION, L7_SAMPLE_TCP, L7_SNAP_MAX, L7Sample,
        is_dns_port, may_start_l7,
    },
    proto::ip,
};

use crate::{
    maps::{CONTROL, FLOWS_0, FLOWS_1, L7_BUDGET, L7_CONTROL, L7_EVENTS},
    parse::{Frame, L4Info},
};

/// Reads payload bytes out of the packet, whatever part of it is paged.
pub(crate) trait Payload {
    /// Runs [`select`] through this context's global function.
    fn select(&self, key: &FlowKey, info: &L4Info, v: *mut FlowStats, totals: &mut IfaceCounters);
    /// Bytes of the packet (linear and paged) from the start of the frame.
    fn avail(&self) -> u32;
    /// The linear part, read afresh from the context.
    fn frame(&self) -> Frame;
    /// Copies `n` (1..=`L7_SNAP_MAX`) bytes at `off` to `dst`.
    fn load(&self, off: u32, dst: *mut u8, n: u32) -> bool;
}

impl Payload for XdpContext {
    #[inline(always)]
    fn select(&self, key: &FlowKey, info: &L4Info, v: *mut FlowStats, totals: &mut IfaceCounters) {
        flowd_l7_select_xdp(self.ctx, key, info, v, totals);
    }
    #[inline(always)]
    fn frame(&self) -> Frame {
        Frame {
            start: self.data(),
            end: self.data_end(),
        }
    }
    #[inline(always)]
    fn avail(&self) -> u32 {
        // SAFETY: the context pointer is the one the kernel passed in.
        unsafe { bpf_xdp_get_buff_len(self.ctx) as u32 }
    }
    #[inline(always)]
    fn load(&self, off: u32, dst: *mut u8, n: u32) -> bool {
        // SAFETY: `dst` has room for `n` <= L7_SNAP_MAX bytes (the caller's
        // ring entry); the kernel checks the packet side.
        unsafe { bpf_xdp_load_bytes(self.ctx as *mut xdp_md, off, dst.cast(), n) == 0 }
    }
}

impl Payload for TcContext {
    #[inline(always)]
    fn select(&self, key: &FlowKey, info: &L4Info, v: *mut FlowStats, totals: &mut IfaceCounters) {
        flowd_l7_select_tc(self.skb.skb, key, info, v, totals);
    }
    #[inline(always)]
    fn frame(&self) -> Frame {
        Frame {
            start: self.data(),
            end: self.data_end(),
        }
    }
    #[inline(always)]
    fn avail(&self) -> u32 {
        // SAFETY: a plain field of the context the kernel passed in.
        unsafe { (*self.skb.skb).len }
    }
    #[inline(always)]
    fn load(&self, off: u32, dst: *mut u8, n: u32) -> bool {
        // SAFETY: as for XDP.
        unsafe {
            bpf_skb_load_bytes(
                self.skb.skb as *const __sk_buff as *const _,
                off,
                dst.cast(),
                n,
            ) == 0
        }
    }
}

/// Why a packet is selected.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    /// A request or ClientHello: marks the flow for continuation.
    Request,
    /// A response, ServerHello or DNS message.
    Other,
}

/// Whether the first payload bytes start an HTTP/1.x request or status
/// line or a TLS ClientHello / ServerHello.
#[inline(always)]
fn by_content(b: &[u8; 8]) -> Option<Why> {
    // TLS: handshake record, version 3.x, ClientHello (1) or ServerHello (2).
    if b[0] == 22 && b[1] == 3 && b[2] <= 4 {
        return match b[5] {
            1 => Some(Why::Request),
            2 => Some(Why::Other),
            _ => None,
        };
    }
    let w = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let req = match &w.to_be_bytes() {
        b"GET " | b"PUT " => true,
        b"POST" | b"HEAD" => b[4] == b' ',
        b"DELE" => b[4..7] == *b"TE ",
        b"OPTI" => b[4..7] == *b"ONS",
        b"PATC" => b[4] == b'H' && b[5] == b' ',
        b"CONN" => b[4..7] == *b"ECT",
        b"TRAC" => b[4] == b'E' && b[5] == b' ',
        b"HTTP" => return (b[4..7] == *b"/1.").then_some(Why::Other),
        _ => false,
    };
    req.then_some(Why::Request)
}

/// The selection's pre-check, inline on every accounted packet while the
/// selection is on (`FLAG_L7`): whether [`select`] could take this packet.
/// A superset of what it takes, from what the path already has: the
/// parse's payload length, ports and first two payload bytes
/// ([`L4Info::lead`]), `Control::l7_dns_ports` and the flow value's
/// continuation mark (the line `add_to` just wrote). Only TCP flows carry
/// a mark: a request is selected by content, and content only over TCP.
/// Reads no packet pointer and branches only on values the verifier does
/// not know (or already branched on), so its walk of the code before it
/// stays as it was. Ports are compared exactly: a hash to a bit mask let
/// one ephemeral port in 16 share a DNS port's bit.
#[inline(always)]
pub(crate) fn candidate(
    key: &FlowKey,
    info: &L4Info,
    v: *mut FlowStats,
    dns_ports: [u16; 2],
) -> bool {
    // `tcp_full` rather than the protocol: the RTT code branches on it.
    let tcp = info.tcp_full;
    if tcp {
        if info.tcp_payload == 0 {
            return false;
        }
        // The cheapest and most selective test first.
        if may_start_l7(info.lead) {
            return true;
        }
        // SAFETY: a live map value for this program run (null for a new flow).
        if !v.is_null()
            && unsafe { (&raw const (*v).counts.seq_valid).read_volatile() } >> L7_CONT_SHIFT != 0
        {
            return true;
        }
    } else if info.ip_payload <= 8 {
        // UDP without payload (other protocols with ports on a DNS port
        // reach `select`, which turns them away).
        return false;
    }
    is_dns_port(key.sport, dns_ports) || is_dns_port(key.dport, dns_ports)
}

/// Notes the packet's payload offset, length and TCP fields in this CPU's
/// `L7_BUDGET` slot when it has payload and the selection is on; true then.
/// Called right after the parse, so that the parse's values (precise
/// constants per header layout, for the verifier) are dead by the time
/// [`select`] runs: it reads them back as unknown values, and the verifier
/// checks it once, not once per parse path (that went over the limit).
#[inline(always)]
fn stash(key: &FlowKey, info: &L4Info) -> bool {
    let tcp = key.proto == ip::TCP;
    let wire = if tcp {
        if !info.tcp_full {
            return false;
        }
        info.tcp_payload
    } else if key.proto == ip::UDP {
        info.ip_payload.saturating_sub(8)
    } else {
        return false;
    };
    // The path of every packet without payload (pure ACKs): one compare.
    if wire == 0 {
        return false;
    }
    let Some(ctl) = L7_CONTROL.get(0) else {
        return false;
    };
    if ctl.snap_len == 0 {
        return false;
    }
    let Some(b) = L7_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot of a per-CPU array (no sharing); volatile so
    // that `select` reads the values back from the map.
    unsafe {
        (&raw mut (*b).off).write_volatile(info.header_end);
        (&raw mut (*b).wire).write_volatile(wire);
        (&raw mut (*b).seq).write_volatile(info.tcp_seq);
        (&raw mut (*b).tcp_flags).write_volatile(info.tcp_flags as u8);
        (&raw mut (*b).tcp).write_volatile(tcp as u8);
    }
    true
}

/// Selects and copies one accounted packet whose values [`stash`] noted
/// (ingress). A global BPF function: the verifier checks it once on its
/// own, not once per path of the parser that leads to it (inlined, or as a
/// static subprogram, that took ingress past 500,000 processed
/// instructions). `key` is the flow key on the caller's stack, `v` the
/// flow's entry when it existed before this packet (null for a new one),
/// `totals` the packet's counter block.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn flowd_l7_select_xdp(
    ctx: *mut xdp_md,
    key: *const FlowKey,
    info: *const L4Info,
    v: *mut FlowStats,
    totals: *mut IfaceCounters,
) -> i32 {
    let c = XdpContext::new(ctx);
    // A live frame user space holds (an AF_XDP worker's, run through the
    // replay driver: replay metadata with timestamp 0) is not budgeted:
    // the budget bounds the copies a CPU makes in the packet path, and
    // this run is the worker's own work, on a mirror port where every
    // payload is wanted (`flowd::afxdp`). The ring's room (`ring_full`)
    // still bounds it. A capture's frames (`flowd replay`, timestamp != 0)
    // and in-kernel frames are budgeted.
    let (ts_ns, budgeted) = crate::replay_meta(&c).map_or((0, true), |m| (m.ts_ns, m.ts_ns != 0));
    select(&c, key, info, v, ts_ns, budgeted, totals);
    0
}

/// [`flowd_l7_select_xdp`] for egress.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn flowd_l7_select_tc(
    ctx: *mut __sk_buff,
    key: *const FlowKey,
    info: *const L4Info,
    v: *mut FlowStats,
    totals: *mut IfaceCounters,
) -> i32 {
    select(&TcContext::new(ctx), key, info, v, 0, true, totals);
    0
}

#[inline(always)]
fn select<P: Payload>(
    p: &P,
    key: *const FlowKey,
    info: *const L4Info,
    v: *mut FlowStats,
    ts_ns: u64,
    budgeted: bool,
    totals: *mut IfaceCounters,
) {
    if key.is_null() || info.is_null() || totals.is_null() {
        return;
    }
    // SAFETY: non-null pointers to the caller's key, parse results and
    // counter block.
    let (key, info, totals) = unsafe { (&*key, &*info, &mut *totals) };
    if !stash(key, info) {
        return;
    }
    let f = &p.frame();
    let lookup = |k: &FlowKey| {
        let active = CONTROL.get(0).map_or(0, |c| c.active_gen);
        if active == 0 {
            FLOWS_0.get_ptr_mut(k)
        } else {
            FLOWS_1.get_ptr_mut(k)
        }
    };
    let Some(ctl) = L7_CONTROL.get(0) else {
        return;
    };
    let Some(budget) = L7_BUDGET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array (no sharing).
    let budget = unsafe { &mut *budget };
    // SAFETY: volatile reads of the slot above (see `stash`).
    let (off, wire, seq, tcp_flags, tcp) = unsafe {
        (
            (&raw const budget.off).read_volatile(),
            (&raw const budget.wire).read_volatile(),
            (&raw const budget.seq).read_volatile(),
            (&raw const budget.tcp_flags).read_volatile(),
            (&raw const budget.tcp).read_volatile() != 0,
        )
    };
    let mut dns = false;
    let mut i = 0;
    while i < ctl.dns_ports.len() {
        let port = ctl.dns_ports[i];
        if port != 0 && (key.sport == port || key.dport == port) {
            dns = true;
        }
        i += 1;
    }
    let mut why = if dns { Some(Why::Other) } else { None };
    if why.is_none() && tcp {
        if let Some(b) = f.bytes::<8>(off as usize) {
            why = by_content(b);
        }
    }
    let mut continuation = false;
    if why.is_none() {
        // Not by content: a continuation segment of a marked flow?
        if v.is_null() {
            return;
        }
        // SAFETY: a live map value for this program run; the flow lives on
        // one CPU (RSS), plain byte stores.
        unsafe {
            let p = &raw mut (*v).counts.seq_valid;
            let sv = p.read_volatile();
            let left = sv >> L7_CONT_SHIFT;
            if left == 0 {
                return;
            }
            if left == L7_CONT_SPENT {
                p.write_volatile(sv & 1);
                totals.c[counter::L7_CONTINUATION_LIMIT] += 1;
                return;
            }
            let next = if left <= 1 { L7_CONT_SPENT } else { left - 1 };
            p.write_volatile((sv & 1) | (next << L7_CONT_SHIFT));
        }
        continuation = true;
    } else if why == Some(Why::Request) && ctl.continuation != 0 {
        let mark = (ctl.continuation.min(L7_CONT_SPENT as u32 - 1)) as u8;
        let v = if v.is_null() { lookup(key) } else { Some(v) };
        if let Some(v) = v {
            // SAFETY: as above.
            unsafe {
                let p = &raw mut (*v).counts.seq_valid;
                p.write_volatile((p.read_volatile() & 1) | (mark << L7_CONT_SHIFT));
            }
        }
    }

    let t = if ts_ns != 0 {
        ts_ns
    } else {
        // SAFETY: a helper without arguments.
        unsafe { bpf_ktime_get_ns() }
    };
    if budgeted {
        if t.wrapping_sub(budget.window_ns) >= 1_000_000_000 {
            budget.window_ns = t;
            budget.used = 0;
        }
        if budget.used >= ctl.budget_per_s as u64 {
            totals.c[counter::L7_BUDGET] += 1;
            return;
        }
        budget.used += 1;
    }

    let avail = p.avail().saturating_sub(off);
    let mut n = wire.min(avail).min(ctl.snap_len);
    if n > L7_SNAP_MAX as u32 {
        n = L7_SNAP_MAX as u32;
    }
    let Some(mut entry) = L7_EVENTS.reserve::<L7Sample>(0) else {
        totals.c[counter::L7_RING_FULL] += 1;
        crate::note::note(crate::note::L7_RING_FULL, key.ifindex, key.direction as u32);
        return;
    };
    let s = entry.as_mut_ptr();
    // SAFETY: `s` is the reserved record, L7Sample-sized and aligned.
    unsafe {
        (*s).ts_ns = t;
        (*s).key = *key;
        (*s).direction = key.direction;
        (*s).tcp_flags = tcp_flags;
        (*s).flags = if tcp { L7_SAMPLE_TCP } else { 0 }
            | if continuation {
                L7_SAMPLE_CONTINUATION
            } else {
                0
            };
        (*s)._pad0 = 0;
        (*s).tcp_seq = seq;
        (*s).wire_len = wire;
        (*s)._pad1 = 0;
        let n = core::hint::black_box(n) & (2 * L7_SNAP_MAX as u32 - 1);
        let ok = n > 0
            && n <= L7_SNAP_MAX as u32
            && p.load(off, (&raw mut (*s).payload).cast::<u8>(), n);
        (*s).cap_len = if ok { n } else { 0 };
    }
    entry.submit(0);
}
