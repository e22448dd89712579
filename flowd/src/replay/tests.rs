use flowd_common::{
    FlowCounts, FlowKey, FlowStats, REPLAY_META_MAGIC, ReplayMeta, ipv4_mapped, replay as wire,
};

use super::{
    output::{table_time, tcp_flags_text, write_csv},
    *,
};
use crate::{
    clock::{TimeBase, rfc3339_ns},
    record::Fields,
};

fn key(proto: u8, src: u8, dst: u8, sport: u16, dport: u16) -> FlowKey {
    FlowKey {
        ifindex: 1,
        proto,
        src: ipv4_mapped([198, 18, 0, src]),
        dst: ipv4_mapped([198, 18, 0, dst]),
        sport,
        dport,
        ..Default::default()
    }
}

fn add(t: &mut FlowTable, k: FlowKey, packets: u64, first: u64) {
    let s = FlowStats {
        counts: FlowCounts {
            packets,
            bytes: packets * 100,
            ..Default::default()
        },
        first_seen_ns: first,
        last_seen_ns: first + 10,
        ..Default::default()
    };
    t.apply(&k, &s, TimeBase::Capture);
}

#[test]
fn flows_pair_with_their_reverse() {
    let mut t = FlowTable::default();
    add(&mut t, key(6, 1, 2, 40000, 80), 5, 100);
    add(&mut t, key(6, 2, 1, 80, 40000), 4, 105);
    // Same ports, other VLAN: a connection of its own.
    let mut v = key(6, 2, 1, 80, 40000);
    v.vlan = 42;
    add(&mut t, v, 1, 90);
    // Echo reply seen before its request: the request is still forward.
    add(&mut t, key(1, 2, 1, 0, 0), 3, 50);
    add(&mut t, key(1, 1, 2, 0, 8 << 8), 3, 60);
    // Destination unreachable: no pair.
    add(&mut t, key(1, 2, 1, 0, 3 << 8 | 3), 1, 70);
    // ICMPv6 echo.
    add(&mut t, key(58, 1, 2, 0, 128 << 8), 2, 200);
    add(&mut t, key(58, 2, 1, 0, 129 << 8), 2, 201);
    let c = connections(&t);
    let got: Vec<(u8, u16, u16, u64, u64, u64)> = c
        .iter()
        .map(|c| {
            let k = c.fwd.key;
            (
                k.proto,
                k.vlan,
                k.dport,
                c.fwd.counts.packets,
                c.rev.map_or(0, |r| r.counts.packets),
                c.start_ns(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, 0, 8 << 8, 3, 3, 50),
            (1, 0, 3 << 8 | 3, 1, 0, 70),
            (6, 42, 40000, 1, 0, 90),
            (6, 0, 80, 5, 4, 100),
            (58, 0, 128 << 8, 2, 2, 200),
        ]
    );
    let j = connection_json(&c[0], "x");
    assert_eq!(j["src"], "198.18.0.1");
    assert_eq!(j["packets_rev"], 3);
    assert_eq!(j["end"], rfc3339_ns(70));
}

#[test]
fn same_endpoint_both_ways_is_one_flow() {
    let k = key(17, 1, 1, 5353, 5353);
    assert_eq!(reverse_key(&k), None);
}

#[test]
fn human_units() {
    assert_eq!(human_bytes(999), "999 B");
    assert_eq!(human_bytes(1234), "1.2 kB");
    assert_eq!(human_bytes(28_495), "28.5 kB");
    assert_eq!(human_bytes(1_234_567), "1.2 MB");
    assert_eq!(human_bytes(999_999), "1.0 MB");
    assert_eq!(tcp_flags_text(6, 0x12), ".A..S.");
    assert_eq!(
        table_time(1_300_475_167_096_535_000),
        "2011-03-18 19:06:07.096"
    );
}

#[test]
fn csv_quotes_and_orders() {
    let mut t = FlowTable::default();
    add(&mut t, key(17, 1, 2, 53, 53), 3, 100);
    let c = connections(&t);
    let mut out = Vec::new();
    write_csv(&mut out, c.iter().map(|c| connection_fields(c, "a,b"))).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "start,end,device,vlan,proto,src,sport,dst,dport,packets_fwd,bytes_fwd,packets_rev,bytes_rev,tcp_flags_fwd,tcp_flags_rev,first_seen_ns,last_seen_ns\n\
         1970-01-01T00:00:00.000000100Z,1970-01-01T00:00:00.000000110Z,\"a,b\",0,17,198.18.0.1,53,198.18.0.2,53,3,300,0,0,0,0,100,110\n"
    );
    let mut out = Vec::new();
    write_csv(&mut out, std::iter::empty::<Fields<'_>>()).unwrap();
    assert!(out.is_empty());
}

/// What a batch holds reads back chunk by chunk, newest first, as the
/// driver walks it (and the one-by-one rerun reads it).
#[test]
fn batch_chunks_read_back_from_the_end() {
    let mut b = Batch::new();
    let frames: [&[u8]; 2] = [&[1; 14], &[2; 60]];
    for (i, f) in frames.iter().enumerate() {
        let meta = ReplayMeta::new(f.len() as u32, 10 + i as u64).to_bytes();
        b.push(&meta, f, i as u64, i as u64 + 1);
    }
    let n = b.bytes().len();
    assert_eq!(n, 16 + 2 * wire::CHUNK_OVERHEAD + 14 + 60);
    let mut end = BATCH_BYTES;
    for (i, f) in frames.iter().enumerate() {
        let (meta, frame, start) = wire::chunk_before(&b.buf[..], end).unwrap();
        assert_eq!(
            meta,
            ReplayMeta::new(f.len() as u32, 10 + i as u64).to_bytes()
        );
        assert_eq!(frame, *f);
        end = start;
    }
    assert_eq!(wire::chunk_before(&b.buf[..], end), None, "the end mark");
}

#[test]
fn meta_is_little_endian_and_never_zero_time() {
    let m = ReplayMeta::new(1514, 0).to_bytes();
    assert_eq!(&m[0..4], &REPLAY_META_MAGIC.to_le_bytes());
    assert_eq!(&m[4..8], &1514u32.to_le_bytes());
    assert_eq!(&m[8..16], &1u64.to_le_bytes());
    assert_eq!(device_name(Path::new("/x/amp.dns.pcap")), "amp.dns");
    assert_eq!(device_name(Path::new("/")), "replay");
}
