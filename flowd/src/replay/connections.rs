//! Connections: a flow paired with its reverse direction, and their JSON
//! and field records.

use std::collections::HashSet;

use flowd_common::{FlowKey, proto::ip};
use serde_json::{Value, json};

use crate::{
    clock::rfc3339_ns,
    flowtable::{Flow, FlowTable},
    record::{self, Field, Fields},
};

/// One connection: a flow and, when it was seen, its reverse.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// The initiator's direction: the earlier flow (for ICMP echo, the
    /// requests).
    pub fwd: &'a Flow,
    pub rev: Option<&'a Flow>,
}

impl Connection<'_> {
    pub fn start_ns(&self) -> u64 {
        self.rev
            .map_or(self.fwd.first_ns, |r| r.first_ns.min(self.fwd.first_ns))
    }

    pub fn end_ns(&self) -> u64 {
        self.rev
            .map_or(self.fwd.last_ns, |r| r.last_ns.max(self.fwd.last_ns))
    }
}

/// Whether an ICMP "port" (type * 256 + code) is an echo request.
fn is_echo_request(key: &FlowKey) -> bool {
    let t = key.dport >> 8;
    (key.proto == ip::ICMP && t == 8) || (key.proto == ip::ICMPV6 && t == 128)
}

/// The key of the other direction of `key`'s connection: addresses and
/// ports swapped, same interface, direction, VLAN and protocol. ICMP has no
/// ports; only echo request and reply (8/0, ICMPv6 128/129) pair up, other
/// ICMP flows have no reverse.
pub fn reverse_key(key: &FlowKey) -> Option<FlowKey> {
    let mut r = *key;
    r.src = key.dst;
    r.dst = key.src;
    let (t, code) = (key.dport >> 8, key.dport & 0xff);
    let rev_type = match (key.proto, t) {
        (ip::ICMP, 8) => 0,
        (ip::ICMP, 0) => 8,
        (ip::ICMPV6, 128) => 129,
        (ip::ICMPV6, 129) => 128,
        (ip::ICMP | ip::ICMPV6, _) => return None,
        _ => {
            r.sport = key.dport;
            r.dport = key.sport;
            return (r != *key).then_some(r);
        }
    };
    r.dport = (rev_type << 8) | code;
    Some(r)
}

/// Pairs every flow with its reverse, sorted by start time, then key.
pub fn connections(table: &FlowTable) -> Vec<Connection<'_>> {
    let mut flows: Vec<&Flow> = table.iter().collect();
    flows.sort_by(|a, b| (a.first_ns, &a.key).cmp(&(b.first_ns, &b.key)));
    let mut paired: HashSet<FlowKey> = HashSet::new();
    let mut out = Vec::new();
    for f in flows {
        if paired.contains(&f.key) {
            continue;
        }
        let rev = reverse_key(&f.key)
            .and_then(|k| table.get(&k))
            .filter(|r| !paired.contains(&r.key));
        let c = match rev {
            Some(r) => {
                paired.insert(r.key);
                if is_echo_request(&r.key) {
                    Connection {
                        fwd: r,
                        rev: Some(f),
                    }
                } else {
                    Connection {
                        fwd: f,
                        rev: Some(r),
                    }
                }
            }
            None => Connection { fwd: f, rev: None },
        };
        paired.insert(f.key);
        out.push(c);
    }
    out.sort_by(|a, b| (a.start_ns(), &a.fwd.key).cmp(&(b.start_ns(), &b.fwd.key)));
    out
}

/// One connection as a JSON object: the forward flow's addresses and ports,
/// both directions' counters.
pub fn connection_json(c: &Connection<'_>, device: &str) -> Value {
    let k = &c.fwd.key;
    let (packets_rev, bytes_rev, flags_rev) = c.rev.map_or((0, 0, 0), |r| {
        (r.counts.packets, r.counts.bytes, r.counts.tcp_flags)
    });
    json!({
        "start": rfc3339_ns(c.start_ns()),
        "end": rfc3339_ns(c.end_ns()),
        "device": device,
        "vlan": k.vlan,
        "proto": k.proto,
        "src": record::addr(&k.src).to_string(),
        "dst": record::addr(&k.dst).to_string(),
        "sport": k.sport,
        "dport": k.dport,
        "packets_fwd": c.fwd.counts.packets,
        "bytes_fwd": c.fwd.counts.bytes,
        "packets_rev": packets_rev,
        "bytes_rev": bytes_rev,
        "tcp_flags_fwd": c.fwd.counts.tcp_flags,
        "tcp_flags_rev": flags_rev,
        "first_seen_ns": c.start_ns(),
        "last_seen_ns": c.end_ns(),
    })
}

/// One connection as [`record::Fields`]: the keys and values of
/// [`connection_json`].
pub fn connection_fields<'a>(c: &Connection<'a>, device: &'a str) -> Fields<'a> {
    use record::key;
    let k = &c.fwd.key;
    let (packets_rev, bytes_rev, flags_rev) = c.rev.map_or((0, 0, 0), |r| {
        (r.counts.packets, r.counts.bytes, r.counts.tcp_flags)
    });
    let mut r = Fields::new();
    r.set(key::START, Field::Time(c.start_ns()));
    r.set(key::END, Field::Time(c.end_ns()));
    r.set(key::DEVICE, Field::Str(device));
    r.set(key::VLAN, Field::Uint(k.vlan.into()));
    r.set(key::PROTO, Field::Uint(k.proto.into()));
    r.set(key::SRC, Field::Addr(&k.src));
    r.set(key::DST, Field::Addr(&k.dst));
    r.set(key::SPORT, Field::Uint(k.sport.into()));
    r.set(key::DPORT, Field::Uint(k.dport.into()));
    r.set(key::PACKETS_FWD, Field::Uint(c.fwd.counts.packets));
    r.set(key::BYTES_FWD, Field::Uint(c.fwd.counts.bytes));
    r.set(key::PACKETS_REV, Field::Uint(packets_rev));
    r.set(key::BYTES_REV, Field::Uint(bytes_rev));
    r.set(
        key::TCP_FLAGS_FWD,
        Field::Uint(c.fwd.counts.tcp_flags.into()),
    );
    r.set(key::TCP_FLAGS_REV, Field::Uint(flags_rev.into()));
    r.set(key::FIRST_SEEN_NS, Field::Uint(c.start_ns()));
    r.set(key::LAST_SEEN_NS, Field::Uint(c.end_ns()));
    r
}
