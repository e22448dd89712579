//! The L7 selection (issue 12): its settings in the programs, and the ring
//! buffer of samples they write.

use aya::maps::{Array, MapData, RingBuf};
use bytes::Bytes;
use flowd_common::{
    FLAG_L7,
    l7::{L7_SAMPLE_TCP, L7_SNAP_MAX, L7Control, L7Sample, extra_dns_ports},
    maps,
};

use super::{Datapath, LoadError, typed_map};
use crate::l7::{L7Packet, TcpMeta};

impl Datapath {
    /// Writes the selection's settings; `None` (or a snap length of 0)
    /// switches it off. `FLAG_L7` in `CONTROL` follows: off, the programs
    /// skip the selection without reading `L7_CONTROL`. Switching on, the
    /// settings are written before the flag; switching off, the flag is
    /// cleared first (the selection also checks the snap length itself).
    /// The DNS ports besides 53 and 5353 (at most two) go to `CONTROL` too,
    /// for the programs' pre-check.
    pub fn set_l7(&mut self, ctl: Option<L7Control>) -> Result<(), LoadError> {
        let mut c = ctl.unwrap_or_default();
        c.snap_len = c.snap_len.min(L7_SNAP_MAX as u32);
        let on = c.snap_len != 0;
        let extra = extra_dns_ports(&c.dns_ports).ok_or(LoadError::L7DnsPorts(c.dns_ports))?;
        if !on {
            self.flags &= !FLAG_L7;
            self.write_control()?;
        }
        let mut map: Array<&mut MapData, L7Control> = typed_map(&mut self.ebpf, maps::L7_CONTROL)?;
        map.set(0, c, 0).map_err(|source| LoadError::Map {
            map: maps::L7_CONTROL,
            source,
        })?;
        if on {
            self.flags |= FLAG_L7;
            self.l7_dns_ports = extra;
            self.write_control()?;
        }
        Ok(())
    }

    /// Hands every L7 sample waiting in the ring buffer to `sink`.
    pub fn drain_l7(&mut self, sink: impl FnMut(&L7Sample)) -> usize {
        match self.l7_events.as_mut() {
            Some(ring) => drain_l7_ring(ring, sink),
            None => 0,
        }
    }

    /// The L7 ring, for a reader that is not the `Datapath`'s owner (the
    /// replay reads it after each test run); `drain_l7` then reads nothing.
    pub fn take_l7_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.l7_events.take()
    }
}

/// Hands every L7 sample waiting in `ring` to `sink`.
pub fn drain_l7_ring(ring: &mut RingBuf<MapData>, mut sink: impl FnMut(&L7Sample)) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        if item.len() >= size_of::<L7Sample>() {
            // SAFETY: the programs write whole L7Sample records (plain
            // data, any bit pattern valid); read unaligned to be safe.
            let s = unsafe { item.as_ptr().cast::<L7Sample>().read_unaligned() };
            sink(&s);
            n += 1;
        }
    }
    n
}

/// The engine's packet for a sample; `ts_ns` is the sample's time already
/// converted to wall-clock nanoseconds (as flow timestamps are).
pub fn l7_packet(s: &L7Sample, ts_ns: u64) -> L7Packet {
    let cap = (s.cap_len as usize).min(L7_SNAP_MAX);
    L7Packet {
        ts_ns,
        key: s.key,
        direction: s.direction,
        tcp: (s.flags & L7_SAMPLE_TCP != 0).then_some(TcpMeta {
            seq: s.tcp_seq,
            flags: s.tcp_flags,
        }),
        payload: Bytes::copy_from_slice(&s.payload[..cap]),
        wire_payload_len: s.wire_len,
    }
}
