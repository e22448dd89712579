//! The flow record shape shared by `/api/v1/flows`, JSON lines and replay.

use std::net::{IpAddr, Ipv6Addr};

use flowd_common::{DIR_INGRESS, FlowKey};
use serde_json::{Value, json};

use crate::{
    clock::rfc3339_ns,
    flowtable::{Ended, Flow},
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
    if key.direction == DIR_INGRESS {
        "ingress"
    } else {
        "egress"
    }
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
        "packets": flow.packets,
        "bytes": flow.bytes,
        "tcp_flags": flow.tcp_flags,
        "syn": flow.syn,
        "fin": flow.fin,
        "rst": flow.rst,
        "first_seen_ns": flow.first_ns,
        "last_seen_ns": flow.last_ns,
    });
    if k.proto == 6 {
        v["synack"] = flow.synack.into();
        v["retrans"] = flow.retrans.into();
        v["zero_window"] = flow.zero_window.into();
        if flow.rtt_samples > 0 {
            v["rtt_min_ns"] = flow.rtt_min_ns.into();
            v["rtt_srtt_ns"] = flow.rtt_srtt_ns.into();
            v["rtt_samples"] = flow.rtt_samples.into();
        }
    }
    if flow.ce + flow.ect0 + flow.ect1 > 0 {
        v["ecn_ce"] = flow.ce.into();
        v["ecn_ect0"] = flow.ect0.into();
        v["ecn_ect1"] = flow.ect1.into();
    }
    v["dscp"] = flow.dscp.into();
    v
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

#[cfg(test)]
mod tests {
    use super::*;

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
