//! pcapng: section headers, interface descriptions and the packet blocks
//! (Enhanced, Simple, the obsolete Packet block); other blocks are skipped.

use std::io::Read;

use super::{
    BLOCK_EPB, BLOCK_IDB, BLOCK_PB, BLOCK_SPB, CaptureError, CaptureErrorKind, CaptureReader,
    Endian, Format, Interface, MAX_CAPLEN, MAX_META_BLOCK, OPT_IF_TSOFFSET, OPT_IF_TSRESOL,
    PCAPNG_BOM, PCAPNG_SHB, Packet, TsUnit, read_up_to,
};

impl<R: Read> CaptureReader<R> {
    /// Reads a Section Header Block whose type field (4 bytes at `start`)
    /// was already consumed.
    pub(super) fn read_section_header(&mut self, start: u64) -> Result<(), CaptureError> {
        let what = || "a pcapng section header".to_string();
        // length(4) byte-order magic(4)
        self.read_exact_buf(8, start, what)?;
        let bom = [self.buf[4], self.buf[5], self.buf[6], self.buf[7]];
        let endian = if u32::from_be_bytes(bom) == PCAPNG_BOM {
            Endian::Big
        } else if u32::from_le_bytes(bom) == PCAPNG_BOM {
            Endian::Little
        } else {
            return Err(self.error(start, CaptureErrorKind::BadByteOrderMagic(bom)));
        };
        let len = endian.u32(&self.buf[..4]);
        // type, length, magic, version(2+2), section length(8), trailer
        if len < 28 || len % 4 != 0 || len > MAX_META_BLOCK {
            return Err(self.error(
                start,
                CaptureErrorKind::BadBlockLength {
                    block_type: PCAPNG_SHB,
                    len,
                },
            ));
        }
        let rest = len as usize - 12;
        self.read_exact_buf(rest, start, what)?;
        let major = endian.u16(&self.buf[..2]);
        if major != 1 {
            return Err(self.error(start, CaptureErrorKind::PcapngVersion(major)));
        }
        self.check_trailer(
            PCAPNG_SHB,
            len,
            endian.u32(&self.buf[rest - 4..rest]),
            start,
        )?;
        let last_ts_ns = match &self.format {
            Format::Pcapng { last_ts_ns, .. } => *last_ts_ns,
            Format::Pcap { .. } => 0,
        };
        // A new section starts with no interfaces.
        self.format = Format::Pcapng {
            endian,
            interfaces: Vec::new(),
            last_ts_ns,
        };
        Ok(())
    }
    /// A block ends with its length repeated.
    pub(super) fn check_trailer(
        &self,
        block_type: u32,
        len: u32,
        trailer: u32,
        start: u64,
    ) -> Result<(), CaptureError> {
        if trailer != len {
            return Err(self.error(
                start,
                CaptureErrorKind::BlockTrailer {
                    block_type,
                    len,
                    trailer,
                },
            ));
        }
        Ok(())
    }
    pub(super) fn next_pcapng(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        loop {
            let start = self.offset;
            let got = self.read_buf(4)?;
            if got == 0 {
                return Ok(None);
            }
            if got < 4 {
                return Err(self.truncated(start, "a pcapng block header".into(), 8, got as u64));
            }
            let raw_type = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
            if u32::from_be_bytes(raw_type) == PCAPNG_SHB {
                self.read_section_header(start)?;
                continue;
            }
            let endian = match &self.format {
                Format::Pcapng { endian, .. } => *endian,
                Format::Pcap { .. } => unreachable!("next_pcapng on a pcap file"),
            };
            let block_type = endian.u32(&raw_type);
            let what = |t: u32| move || format!("a pcapng block of type {t:#x}");
            self.read_exact_buf(4, start, what(block_type))?;
            let len = endian.u32(&self.buf[..4]);
            if len < 12 || len % 4 != 0 {
                return Err(self.error(start, CaptureErrorKind::BadBlockLength { block_type, len }));
            }
            match block_type {
                BLOCK_EPB | BLOCK_PB | BLOCK_SPB => {
                    return self
                        .read_packet_block(endian, block_type, len, start)
                        .map(Some);
                }
                BLOCK_IDB => self.read_interface(endian, len, start)?,
                _ => {
                    self.skip(u64::from(len) - 12, start, what(block_type))?;
                    self.read_exact_buf(4, start, what(block_type))?;
                    self.check_trailer(block_type, len, endian.u32(&self.buf[..4]), start)?;
                }
            }
        }
    }
    pub(super) fn read_interface(
        &mut self,
        endian: Endian,
        len: u32,
        start: u64,
    ) -> Result<(), CaptureError> {
        // link type(2) reserved(2) snaplen(4)
        if !(20..=MAX_META_BLOCK).contains(&len) {
            return Err(self.error(
                start,
                CaptureErrorKind::BadBlockLength {
                    block_type: BLOCK_IDB,
                    len,
                },
            ));
        }
        let body = len as usize - 8;
        self.read_exact_buf(body, start, || {
            "a pcapng interface description block".into()
        })?;
        self.check_trailer(BLOCK_IDB, len, endian.u32(&self.buf[body - 4..body]), start)?;
        let b = &self.buf[..body - 4];
        let mut iface = Interface {
            link_type: u32::from(endian.u16(&b[0..2])),
            snaplen: endian.u32(&b[4..8]),
            ts: TsUnit::default(),
        };
        // Options: code(2) length(2) value padded to 4; code 0 ends them.
        let mut opts = &b[8..];
        while opts.len() >= 4 {
            let code = endian.u16(&opts[0..2]);
            let olen = endian.u16(&opts[2..4]) as usize;
            let padded = olen.div_ceil(4) * 4;
            if code == 0 || opts.len() < 4 + padded {
                break;
            }
            let v = &opts[4..4 + olen];
            match code {
                OPT_IF_TSRESOL if olen >= 1 => iface.ts.resol = v[0],
                OPT_IF_TSOFFSET if olen >= 8 => iface.ts.offset_s = endian.u64(v) as i64,
                _ => {}
            }
            opts = &opts[4 + padded..];
        }
        if let Format::Pcapng { interfaces, .. } = &mut self.format {
            interfaces.push(iface);
        }
        Ok(())
    }
    pub(super) fn read_packet_block(
        &mut self,
        endian: Endian,
        block_type: u32,
        len: u32,
        start: u64,
    ) -> Result<Packet<'_>, CaptureError> {
        let number = self.packets + 1;
        let name = match block_type {
            BLOCK_EPB => "enhanced packet block",
            BLOCK_SPB => "simple packet block",
            _ => "packet block",
        };
        let what = move || format!("the {name} of packet {number}");
        let fixed: usize = if block_type == BLOCK_SPB { 4 } else { 20 };
        if (len as usize) < 12 + fixed {
            return Err(self.error(start, CaptureErrorKind::BadBlockLength { block_type, len }));
        }
        self.read_exact_buf(fixed, start, what)?;
        let h = &self.buf[..fixed];
        let (interface, ts, caplen, orig_len) = if block_type == BLOCK_SPB {
            let orig_len = endian.u32(&h[0..4]);
            (0, None, orig_len, orig_len)
        } else {
            let interface = if block_type == BLOCK_EPB {
                endian.u32(&h[0..4])
            } else {
                u32::from(endian.u16(&h[0..2]))
            };
            let ts = (u64::from(endian.u32(&h[4..8])) << 32) | u64::from(endian.u32(&h[8..12]));
            (
                interface,
                Some(ts),
                endian.u32(&h[12..16]),
                endian.u32(&h[16..20]),
            )
        };
        let (iface, count, last_ts_ns) = match &self.format {
            Format::Pcapng {
                interfaces,
                last_ts_ns,
                ..
            } => (
                interfaces.get(interface as usize).copied(),
                interfaces.len(),
                *last_ts_ns,
            ),
            Format::Pcap { .. } => unreachable!("read_packet_block on a pcap file"),
        };
        let Some(iface) = iface else {
            return Err(self.error(
                start,
                CaptureErrorKind::UnknownInterface {
                    packet: number,
                    interface,
                    count,
                },
            ));
        };
        let room = len as usize - 12 - fixed;
        let caplen = if block_type == BLOCK_SPB {
            // The captured length is implied: the block's room, the snaplen.
            let mut c = caplen.min(room as u32);
            if iface.snaplen != 0 {
                c = c.min(iface.snaplen);
            }
            c
        } else {
            caplen
        };
        if caplen > MAX_CAPLEN {
            return Err(self.error(
                start,
                CaptureErrorKind::AbsurdCaplen {
                    packet: number,
                    caplen,
                },
            ));
        }
        if caplen as usize > room {
            return Err(self.error(start, CaptureErrorKind::BadBlockLength { block_type, len }));
        }
        let ts_ns = match ts {
            Some(t) => iface.ts.to_unix_ns(t),
            None => last_ts_ns,
        };
        if let Format::Pcapng { last_ts_ns, .. } = &mut self.format {
            *last_ts_ns = ts_ns;
        }
        // The data, then padding and options (skipped), then the trailing length.
        self.read_exact_buf(caplen as usize, start, what)?;
        self.skip((room - caplen as usize) as u64, start, what)?;
        let mut t = [0u8; 4];
        let got = read_up_to(&mut self.r, &mut t)
            .map_err(|e| self.error(self.offset, CaptureErrorKind::Io(e)))?;
        self.offset += got as u64;
        if got < 4 {
            let need = u64::from(len);
            return Err(self.truncated(start, what(), need, need - 4 + got as u64));
        }
        self.check_trailer(block_type, len, endian.u32(&t), start)?;
        self.packets = number;
        Ok(Packet {
            number,
            offset: start,
            ts_ns,
            orig_len,
            link_type: iface.link_type,
            interface,
            data: &self.buf[..caplen as usize],
        })
    }
}
