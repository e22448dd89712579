//! Classic pcap: the file header and one record at a time.

use std::io::Read;

use super::{CaptureError, CaptureErrorKind, CaptureReader, Endian, Format, MAX_CAPLEN, Packet};

impl<R: Read> CaptureReader<R> {
    pub(super) fn read_pcap_header(
        &mut self,
        endian: Endian,
        nanos: bool,
    ) -> Result<(), CaptureError> {
        // magic(4) version(2+2) thiszone(4) sigfigs(4) snaplen(4) linktype(4)
        let got = self.read_buf(20)?;
        if got < 20 {
            return Err(self.truncated(0, "the pcap file header".into(), 24, 4 + got as u64));
        }
        // The upper bits hold FCS information; the link type is the low 16.
        let link_type = endian.u32(&self.buf[16..20]) & 0xffff;
        self.format = Format::Pcap {
            endian,
            nanos,
            link_type,
        };
        Ok(())
    }
    pub(super) fn next_pcap(
        &mut self,
        endian: Endian,
        nanos: bool,
        link_type: u32,
    ) -> Result<Option<Packet<'_>>, CaptureError> {
        let start = self.offset;
        let number = self.packets + 1;
        let got = self.read_buf(16)?;
        if got == 0 {
            return Ok(None);
        }
        if got < 16 {
            return Err(self.truncated(
                start,
                format!("the record header of packet {number}"),
                16,
                got as u64,
            ));
        }
        let h = &self.buf[..16];
        let secs = u64::from(endian.u32(&h[0..4]));
        let frac = u64::from(endian.u32(&h[4..8]));
        let caplen = endian.u32(&h[8..12]);
        let orig_len = endian.u32(&h[12..16]);
        if caplen > MAX_CAPLEN {
            return Err(self.error(
                start,
                CaptureErrorKind::AbsurdCaplen {
                    packet: number,
                    caplen,
                },
            ));
        }
        // Out-of-range fractions (>= 1 s) are kept as they are, as tshark does.
        let ts_ns = secs * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        let got = self.read_buf(caplen as usize)?;
        if got < caplen as usize {
            return Err(self.truncated(
                start,
                format!("the data of packet {number} (record at byte {start})"),
                u64::from(caplen),
                got as u64,
            ));
        }
        self.packets = number;
        Ok(Some(Packet {
            number,
            offset: start,
            ts_ns,
            orig_len,
            link_type,
            interface: 0,
            data: &self.buf[..caplen as usize],
        }))
    }
}
