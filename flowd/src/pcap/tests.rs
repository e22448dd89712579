use super::*;

fn pcap_file(
    endian: Endian,
    nanos: bool,
    link_type: u32,
    records: &[(u32, u32, u32, &[u8])],
) -> Vec<u8> {
    let w32 = |v: u32| match endian {
        Endian::Little => v.to_le_bytes(),
        Endian::Big => v.to_be_bytes(),
    };
    let w16 = |v: u16| match endian {
        Endian::Little => v.to_le_bytes(),
        Endian::Big => v.to_be_bytes(),
    };
    let mut f = Vec::new();
    f.extend(w32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
    f.extend(w16(2));
    f.extend(w16(4));
    f.extend(w32(0));
    f.extend(w32(0));
    f.extend(w32(65535));
    f.extend(w32(link_type));
    for (sec, frac, orig, data) in records {
        f.extend(w32(*sec));
        f.extend(w32(*frac));
        f.extend(w32(data.len() as u32));
        f.extend(w32(*orig));
        f.extend_from_slice(data);
    }
    f
}

/// (ts_ns, orig_len, link_type, data) of each packet.
type Packets = Vec<(u64, u32, u32, Vec<u8>)>;

fn read_all(bytes: &[u8]) -> Result<Packets, CaptureError> {
    let mut r = CaptureReader::new(Path::new("t.pcap"), bytes)?;
    let mut out = Vec::new();
    while let Some(p) = r.next_packet()? {
        out.push((p.ts_ns, p.orig_len, p.link_type, p.data.to_vec()));
    }
    Ok(out)
}

#[test]
fn pcap_both_orders_and_resolutions() {
    for endian in [Endian::Little, Endian::Big] {
        for nanos in [false, true] {
            let f = pcap_file(endian, nanos, 1, &[(10, 5, 60, b"abc"), (11, 7, 3, b"xyz")]);
            let got = read_all(&f).unwrap();
            let unit = if nanos { 1 } else { 1000 };
            assert_eq!(got.len(), 2);
            assert_eq!(got[0], (10_000_000_000 + 5 * unit, 60, 1, b"abc".to_vec()));
            assert_eq!(got[1], (11_000_000_000 + 7 * unit, 3, 1, b"xyz".to_vec()));
        }
    }
}

#[test]
fn pcap_errors_name_the_offset() {
    let e = read_all(&[]).unwrap_err();
    assert!(matches!(e.kind, CaptureErrorKind::Empty));
    let e = read_all(b"hello world, this is text").unwrap_err();
    assert!(matches!(e.kind, CaptureErrorKind::BadMagic(_)), "{e}");
    assert_eq!(e.to_string().split(": ").next(), Some("t.pcap"));

    let f = pcap_file(
        Endian::Little,
        false,
        1,
        &[(1, 0, 60, &[7; 60]), (2, 0, 60, &[8; 60])],
    );
    // Cut inside the second record's data, then inside its header.
    let e = read_all(&f[..f.len() - 10]).unwrap_err();
    assert_eq!(e.offset, 24 + 16 + 60);
    assert!(
        matches!(
            e.kind,
            CaptureErrorKind::Truncated {
                need: 60,
                got: 50,
                ..
            }
        ),
        "{e}"
    );
    let e = read_all(&f[..24 + 16 + 60 + 5]).unwrap_err();
    assert_eq!(e.offset, 100);
    assert!(
        matches!(
            e.kind,
            CaptureErrorKind::Truncated {
                need: 16,
                got: 5,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("byte 100"), "{e}");
    let e = read_all(&f[..10]).unwrap_err();
    assert!(
        matches!(
            e.kind,
            CaptureErrorKind::Truncated {
                need: 24,
                got: 10,
                ..
            }
        ),
        "{e}"
    );

    let mut f = pcap_file(Endian::Little, false, 1, &[(1, 0, 60, &[7; 60])]);
    f[32..36].copy_from_slice(&(MAX_CAPLEN + 1).to_le_bytes());
    let e = read_all(&f).unwrap_err();
    assert!(
        matches!(e.kind, CaptureErrorKind::AbsurdCaplen { packet: 1, .. }),
        "{e}"
    );
    assert_eq!(e.offset, 24);
}

fn block(endian: Endian, block_type: u32, body: &[u8]) -> Vec<u8> {
    let w32 = |v: u32| match endian {
        Endian::Little => v.to_le_bytes(),
        Endian::Big => v.to_be_bytes(),
    };
    let padded = body.len().div_ceil(4) * 4;
    let len = (12 + padded) as u32;
    let mut b = Vec::new();
    b.extend(w32(block_type));
    b.extend(w32(len));
    b.extend_from_slice(body);
    b.resize(8 + padded, 0);
    b.extend(w32(len));
    b
}

fn pcapng(endian: Endian) -> Vec<u8> {
    let w16 = |v: u16| match endian {
        Endian::Little => v.to_le_bytes().to_vec(),
        Endian::Big => v.to_be_bytes().to_vec(),
    };
    let w32 = |v: u32| match endian {
        Endian::Little => v.to_le_bytes().to_vec(),
        Endian::Big => v.to_be_bytes().to_vec(),
    };
    let mut f = Vec::new();
    let shb = [w32(PCAPNG_BOM), w16(1), w16(0), vec![0xff; 8]].concat();
    f.extend(block(endian, PCAPNG_SHB, &shb));
    // Interface 0: Ethernet, default microseconds.
    f.extend(block(endian, BLOCK_IDB, &[w16(1), w16(0), w32(0)].concat()));
    // Interface 1: raw IPv4, nanoseconds, plus an unknown option.
    let opts = [
        w16(2),
        w16(3),
        b"abc\0".to_vec(),
        w16(OPT_IF_TSRESOL),
        w16(1),
        vec![9, 0, 0, 0],
        w16(0),
        w16(0),
    ]
    .concat();
    f.extend(block(
        endian,
        BLOCK_IDB,
        &[w16(228), w16(0), w32(4), opts].concat(),
    ));
    // Interface 2: SLL, 2^-10 s, offset 100 s.
    let opts = [
        w16(OPT_IF_TSRESOL),
        w16(1),
        vec![0x8a, 0, 0, 0],
        w16(OPT_IF_TSOFFSET),
        w16(8),
        match endian {
            Endian::Little => 100u64.to_le_bytes().to_vec(),
            Endian::Big => 100u64.to_be_bytes().to_vec(),
        },
    ]
    .concat();
    f.extend(block(
        endian,
        BLOCK_IDB,
        &[w16(113), w16(0), w32(0), opts].concat(),
    ));
    let epb = |iface: u32, ts: u64, data: &[u8], orig: u32| {
        let body = [
            w32(iface),
            w32((ts >> 32) as u32),
            w32(ts as u32),
            w32(data.len() as u32),
            w32(orig),
            data.to_vec(),
        ]
        .concat();
        block(endian, BLOCK_EPB, &body)
    };
    f.extend(epb(0, 1_500_000, b"eth", 70));
    // A name resolution block in between is skipped.
    f.extend(block(endian, 4, &[0u8; 12]));
    f.extend(epb(1, (5 << 32) | 7, b"ipv4ip", 6));
    f.extend(epb(2, 3 * 1024 + 512, b"sll", 80));
    // Simple packet block: interface 0's snaplen is 0 (none); the
    // block's room holds 3 of 9 bytes.
    f.extend(block(
        endian,
        BLOCK_SPB,
        &[w32(9), b"spb".to_vec()].concat(),
    ));
    f
}

#[test]
fn pcapng_interfaces_and_resolutions() {
    for endian in [Endian::Little, Endian::Big] {
        let got = read_all(&pcapng(endian)).unwrap();
        assert_eq!(
            got,
            vec![
                (1_500_000_000, 70, 1, b"eth".to_vec()),
                ((5u64 << 32) + 7, 6, 228, b"ipv4ip".to_vec()),
                (103_500_000_000, 80, 113, b"sll".to_vec()),
                // No timestamp of its own: the previous packet's.
                // Its captured length is implied by the block: the
                // padding is in it (as in Wireshark).
                (103_500_000_000, 9, 1, b"spb\0".to_vec()),
            ],
            "{endian:?}"
        );
    }
}

#[test]
fn pcapng_errors() {
    let f = pcapng(Endian::Big);
    let e = read_all(&f[..f.len() - 3]).unwrap_err();
    assert!(matches!(e.kind, CaptureErrorKind::Truncated { .. }), "{e}");
    let mut bad = f.clone();
    // Break the last block's trailer.
    let n = bad.len();
    bad[n - 1] ^= 0x40;
    let e = read_all(&bad).unwrap_err();
    assert!(
        matches!(e.kind, CaptureErrorKind::BlockTrailer { .. }),
        "{e}"
    );
    // A packet on an interface the section does not describe.
    let mut f = pcapng(Endian::Little);
    let body = [9u32, 0, 0, 1, 1]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .chain([0])
        .collect::<Vec<u8>>();
    let at = f.len() as u64;
    f.extend(block(Endian::Little, BLOCK_EPB, &body));
    let e = read_all(&f).unwrap_err();
    assert_eq!(e.offset, at);
    assert!(
        matches!(
            e.kind,
            CaptureErrorKind::UnknownInterface {
                interface: 9,
                count: 3,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn link_layers_become_ethernet() {
    let ip4 = [0x45u8, 0, 0, 20];
    let ip6 = [0x60u8, 0, 0, 0];
    let mut s = Vec::new();
    let eth = |t: u16, p: &[u8]| [&[0u8; 12][..], &t.to_be_bytes(), p].concat();
    assert_eq!(
        LinkLayer::Ethernet.to_ethernet(&[1, 2, 3], 2, &mut s),
        &[1, 2]
    );
    let mut sll = vec![0u8; 16];
    sll[14..16].copy_from_slice(&0x8100u16.to_be_bytes());
    sll.extend_from_slice(&ip4);
    assert_eq!(
        LinkLayer::LinuxSll.to_ethernet(&sll, 3000, &mut s),
        eth(0x8100, &ip4)
    );
    let mut sll2 = vec![0x86, 0xdd];
    sll2.extend_from_slice(&[0; 18]);
    sll2.extend_from_slice(&ip6);
    assert_eq!(
        LinkLayer::LinuxSll2.to_ethernet(&sll2, 3000, &mut s),
        eth(0x86dd, &ip6)
    );
    assert_eq!(
        LinkLayer::RawIp.to_ethernet(&ip6, 3000, &mut s),
        eth(0x86dd, &ip6)
    );
    assert_eq!(
        LinkLayer::RawIp.to_ethernet(&ip4, 16, &mut s),
        eth(0x0800, &ip4[..2])
    );
    assert_eq!(
        LinkLayer::Ipv4.to_ethernet(&ip6, 3000, &mut s),
        eth(0x0800, &ip6)
    );
    let null_le = [&30u32.to_le_bytes()[..], &ip6].concat();
    let null_be = [&2u32.to_be_bytes()[..], &ip4].concat();
    assert_eq!(
        LinkLayer::Null.to_ethernet(&null_le, 3000, &mut s),
        eth(0x86dd, &ip6)
    );
    assert_eq!(
        LinkLayer::Null.to_ethernet(&null_be, 3000, &mut s),
        eth(0x0800, &ip4)
    );
    assert_eq!(
        LinkLayer::Loop.to_ethernet(&null_be, 3000, &mut s),
        eth(0x0800, &ip4)
    );
    let loop_other = [&7u32.to_be_bytes()[..], &ip4].concat();
    assert_eq!(
        LinkLayer::Loop.to_ethernet(&loop_other, 3000, &mut s),
        eth(0, &ip4)
    );
    // Cut inside the link header: an empty frame (counted as truncated).
    assert!(
        LinkLayer::LinuxSll
            .to_ethernet(&sll[..10], 3000, &mut s)
            .is_empty()
    );
    assert!(LinkLayer::RawIp.to_ethernet(&[], 3000, &mut s).is_empty());
    assert_eq!(LinkLayer::from_link_type(9), None);
    assert_eq!(link_type_name(239), "NFLOG");
}

#[test]
fn ts_units() {
    let us = TsUnit::default();
    assert_eq!(us.to_unix_ns(1_000_001), 1_000_001_000);
    let ms = TsUnit {
        resol: 3,
        offset_s: -1,
    };
    assert_eq!(ms.to_unix_ns(1500), 500_000_000);
    let ps = TsUnit {
        resol: 12,
        offset_s: 0,
    };
    assert_eq!(ps.to_unix_ns(1_234_567), 1234);
    let bin = TsUnit {
        resol: 0x80 | 20,
        offset_s: 0,
    };
    assert_eq!(bin.to_unix_ns(1 << 20), 1_000_000_000);
}
