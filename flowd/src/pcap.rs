//! Streaming pcap / pcapng reader.
//!
//! Reads classic pcap (microsecond and nanosecond magic, either byte order)
//! and pcapng (Section Header, Interface Description, Enhanced, Simple and
//! the obsolete Packet block; every other block is skipped), one record at a
//! time through a `BufReader`: memory use does not grow with the file.
//!
//! Every error names the file, the byte offset of the record or block it was
//! found in, and the problem. [`LinkLayer`] turns the frames of the link
//! types flowd replays into the Ethernet frames the XDP program parses.

use std::{
    fs::File,
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
};

use thiserror::Error;

/// Largest captured length accepted for one packet. libpcap's own maximum
/// snaplen is 262144; more than that in a record means a corrupt file.
pub const MAX_CAPLEN: u32 = 256 * 1024;
/// Largest pcapng block that is read into memory other than a packet block
/// (Section Header, Interface Description); skipped blocks may be any size.
const MAX_META_BLOCK: u32 = 1 << 20;
const READ_BUFFER: usize = 1 << 20;

const PCAP_MICRO: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];
const PCAP_NANO: [u8; 4] = [0xa1, 0xb2, 0x3c, 0x4d];
/// Alexey Kuznetzov's modified pcap: different record header, not read here.
const PCAP_KUZNETZOV: [u8; 4] = [0xa1, 0xb2, 0xcd, 0x34];
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;
const PCAPNG_BOM: u32 = 0x1a2b_3c4d;
const BLOCK_IDB: u32 = 1;
const BLOCK_PB: u32 = 2;
const BLOCK_SPB: u32 = 3;
const BLOCK_EPB: u32 = 6;
const OPT_IF_TSRESOL: u16 = 9;
const OPT_IF_TSOFFSET: u16 = 14;

/// A capture file could not be read. Displays as `FILE: byte N: problem`.
#[derive(Debug, Error)]
#[error("{}: byte {offset}: {kind}", path.display())]
pub struct CaptureError {
    pub path: PathBuf,
    /// Offset of the file header, record or block the problem is in.
    pub offset: u64,
    pub kind: CaptureErrorKind,
}

#[derive(Debug, Error)]
pub enum CaptureErrorKind {
    #[error("cannot open the file: {0}")]
    Open(#[source] io::Error),
    #[error("reading failed: {0}")]
    Io(#[source] io::Error),
    #[error("the file is empty")]
    Empty,
    #[error(
        "not a pcap or pcapng file (it starts with {}; pcap starts with a1b2c3d4 or a1b23c4d in either byte order, pcapng with 0a0d0d0a)",
        hex(.0)
    )]
    BadMagic([u8; 4]),
    #[error("a gzip-compressed file: decompress it first (gunzip)")]
    Gzip,
    #[error(
        "a modified (Kuznetzov) pcap file, which flowd does not read: convert it with `editcap -F pcap`"
    )]
    Kuznetzov,
    #[error(
        "the file ends inside {what}: {got} of {need} bytes are there (the file was cut short)"
    )]
    Truncated { what: String, need: u64, got: u64 },
    #[error(
        "packet {packet} claims {caplen} captured bytes, more than the {MAX_CAPLEN} a capture can hold: the file is corrupt"
    )]
    AbsurdCaplen { packet: u64, caplen: u32 },
    #[error(
        "pcapng block of type {block_type:#x} has an invalid length {len}: the file is corrupt"
    )]
    BadBlockLength { block_type: u32, len: u32 },
    #[error(
        "pcapng block of type {block_type:#x} ends with length {trailer}, but starts with {len}: the file is corrupt"
    )]
    BlockTrailer {
        block_type: u32,
        len: u32,
        trailer: u32,
    },
    #[error(
        "pcapng section header with byte-order magic {0:02x?} (expected 1a2b3c4d in either byte order)"
    )]
    BadByteOrderMagic([u8; 4]),
    #[error("pcapng major version {0}: flowd reads version 1")]
    PcapngVersion(u16),
    #[error(
        "packet {packet} refers to interface {interface}, but its section describes {count} interface(s)"
    )]
    UnknownInterface {
        packet: u64,
        interface: u32,
        count: usize,
    },
    #[error(
        "unsupported link type {link_type} ({}) of packet {packet}: flowd replays Ethernet (1), Linux cooked SLL (113) and SLL2 (276), raw IP (101, 12, 14), IPv4 (228), IPv6 (229), BSD loopback NULL (0) and LOOP (108)",
        link_type_name(*link_type)
    )]
    UnsupportedLinkType { link_type: u32, packet: u64 },
}

/// Bytes as hex digits, `a1 b2 c3 d4`.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One packet record.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// 1-based number of the packet in the file.
    pub number: u64,
    /// Byte offset of its record (pcap) or block (pcapng).
    pub offset: u64,
    /// Capture time, Unix nanoseconds.
    pub ts_ns: u64,
    /// Length of the frame on the wire (a snaplen cuts `data`, not this).
    pub orig_len: u32,
    /// The link type of its interface (pcap: the file's).
    pub link_type: u32,
    /// pcapng interface id (0 for pcap).
    pub interface: u32,
    /// The captured bytes.
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    fn u16(self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        match self {
            Self::Little => u16::from_le_bytes(a),
            Self::Big => u16::from_be_bytes(a),
        }
    }

    fn u32(self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        match self {
            Self::Little => u32::from_le_bytes(a),
            Self::Big => u32::from_be_bytes(a),
        }
    }

    fn u64(self, b: &[u8]) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        match self {
            Self::Little => u64::from_le_bytes(a),
            Self::Big => u64::from_be_bytes(a),
        }
    }
}

/// Timestamp units of a pcapng interface (`if_tsresol`, `if_tsoffset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TsUnit {
    /// The option byte: MSB clear, 10^-n s; MSB set, 2^-n s.
    resol: u8,
    offset_s: i64,
}

impl Default for TsUnit {
    fn default() -> Self {
        // pcapng's default resolution: microseconds.
        Self {
            resol: 6,
            offset_s: 0,
        }
    }
}

impl TsUnit {
    fn to_unix_ns(self, ts: u64) -> u64 {
        let exp = u32::from(self.resol & 0x7f);
        let ts = i128::from(ts);
        let ns: i128 = if self.resol & 0x80 != 0 {
            (ts * 1_000_000_000) >> exp
        } else if exp <= 9 {
            ts * 10i128.pow(9 - exp)
        } else if exp - 9 <= 38 {
            ts / 10i128.pow(exp - 9)
        } else {
            0
        };
        let ns = ns + i128::from(self.offset_s) * 1_000_000_000;
        ns.clamp(0, i128::from(u64::MAX)) as u64
    }
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    link_type: u32,
    snaplen: u32,
    ts: TsUnit,
}

#[derive(Debug)]
enum Format {
    Pcap {
        endian: Endian,
        nanos: bool,
        link_type: u32,
    },
    Pcapng {
        endian: Endian,
        interfaces: Vec<Interface>,
        /// Simple Packet Blocks carry no time: they take the previous packet's.
        last_ts_ns: u64,
    },
}

/// Reads one capture file record by record.
#[derive(Debug)]
pub struct CaptureReader<R = BufReader<File>> {
    r: R,
    path: PathBuf,
    /// Bytes consumed so far.
    offset: u64,
    packets: u64,
    format: Format,
    buf: Vec<u8>,
}

impl CaptureReader {
    /// Opens a capture and reads its file header (pcap) or first section
    /// header (pcapng).
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let file = File::open(path).map_err(|e| CaptureError {
            path: path.to_owned(),
            offset: 0,
            kind: CaptureErrorKind::Open(e),
        })?;
        Self::new(path, BufReader::with_capacity(READ_BUFFER, file))
    }
}

impl<R: Read> CaptureReader<R> {
    /// Reads a capture from `r`; `path` names it in errors.
    pub fn new(path: &Path, r: R) -> Result<Self, CaptureError> {
        let mut reader = Self {
            r,
            path: path.to_owned(),
            offset: 0,
            packets: 0,
            // Replaced once the header is read.
            format: Format::Pcap {
                endian: Endian::Little,
                nanos: false,
                link_type: 0,
            },
            buf: Vec::new(),
        };
        reader.read_file_header()?;
        Ok(reader)
    }

    /// Bytes of the file consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Packets returned so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// "pcap", "pcap (ns)" or "pcapng", with the byte order.
    pub fn format_name(&self) -> String {
        let (name, endian) = match &self.format {
            Format::Pcap {
                endian,
                nanos: false,
                ..
            } => ("pcap", endian),
            Format::Pcap { endian, .. } => ("pcap (ns)", endian),
            Format::Pcapng { endian, .. } => ("pcapng", endian),
        };
        let order = match endian {
            Endian::Little => "little-endian",
            Endian::Big => "big-endian",
        };
        format!("{name}, {order}")
    }

    fn error(&self, offset: u64, kind: CaptureErrorKind) -> CaptureError {
        CaptureError {
            path: self.path.clone(),
            offset,
            kind,
        }
    }

    /// Reads up to `n` bytes into `self.buf[..n]`; returns how many arrived
    /// (fewer only at the end of the file).
    fn read_buf(&mut self, n: usize) -> Result<usize, CaptureError> {
        if self.buf.len() < n {
            self.buf.resize(n, 0);
        }
        let mut got = 0;
        while got < n {
            match self.r.read(&mut self.buf[got..n]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(self.error(self.offset + got as u64, CaptureErrorKind::Io(e)));
                }
            }
        }
        self.offset += got as u64;
        Ok(got)
    }

    /// Reads exactly `n` bytes into `self.buf[..n]`, or fails naming `what`
    /// (which starts at `start`).
    fn read_exact_buf(
        &mut self,
        n: usize,
        start: u64,
        what: impl FnOnce() -> String,
    ) -> Result<(), CaptureError> {
        let got = self.read_buf(n)?;
        if got < n {
            return Err(self.truncated(start, what(), n as u64, got as u64));
        }
        Ok(())
    }

    fn truncated(&self, start: u64, what: String, need: u64, got: u64) -> CaptureError {
        self.error(start, CaptureErrorKind::Truncated { what, need, got })
    }

    /// Skips `n` bytes without keeping them.
    fn skip(
        &mut self,
        n: u64,
        start: u64,
        what: impl FnOnce() -> String,
    ) -> Result<(), CaptureError> {
        let got = io::copy(&mut (&mut self.r).take(n), &mut io::sink())
            .map_err(|e| self.error(self.offset, CaptureErrorKind::Io(e)))?;
        self.offset += got;
        if got < n {
            return Err(self.truncated(start, what(), n, got));
        }
        Ok(())
    }

    fn read_file_header(&mut self) -> Result<(), CaptureError> {
        let got = self.read_buf(4)?;
        if got == 0 {
            return Err(self.error(0, CaptureErrorKind::Empty));
        }
        let mut magic = [0u8; 4];
        magic[..got].copy_from_slice(&self.buf[..got]);
        if magic[..2] == [0x1f, 0x8b] {
            return Err(self.error(0, CaptureErrorKind::Gzip));
        }
        if got < 4 {
            return Err(self.truncated(0, "the magic number".into(), 4, got as u64));
        }
        let mut reversed = magic;
        reversed.reverse();
        let pcap = |m: [u8; 4]| (m == PCAP_MICRO || m == PCAP_NANO).then_some(m == PCAP_NANO);
        if let Some(nanos) = pcap(magic) {
            self.read_pcap_header(Endian::Big, nanos)
        } else if let Some(nanos) = pcap(reversed) {
            self.read_pcap_header(Endian::Little, nanos)
        } else if magic == PCAPNG_SHB.to_be_bytes() {
            self.read_section_header(0)
        } else if magic == PCAP_KUZNETZOV || reversed == PCAP_KUZNETZOV {
            Err(self.error(0, CaptureErrorKind::Kuznetzov))
        } else {
            Err(self.error(0, CaptureErrorKind::BadMagic(magic)))
        }
    }

    fn read_pcap_header(&mut self, endian: Endian, nanos: bool) -> Result<(), CaptureError> {
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

    /// Reads a Section Header Block whose type field (4 bytes at `start`)
    /// was already consumed.
    fn read_section_header(&mut self, start: u64) -> Result<(), CaptureError> {
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
    fn check_trailer(
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

    /// The next packet, or `None` at the end of the file.
    pub fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        match self.format {
            Format::Pcap {
                endian,
                nanos,
                link_type,
            } => self.next_pcap(endian, nanos, link_type),
            Format::Pcapng { .. } => self.next_pcapng(),
        }
    }

    fn next_pcap(
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

    fn next_pcapng(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
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

    fn read_interface(&mut self, endian: Endian, len: u32, start: u64) -> Result<(), CaptureError> {
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

    fn read_packet_block(
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

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The link types flowd replays, and how each becomes an Ethernet frame.
///
/// The XDP program parses Ethernet. Other link layers get a synthesized
/// 14-byte Ethernet header (zero MAC addresses) in front of their L3
/// payload, with the EtherType taken from:
/// - Linux SLL / SLL2: the header's protocol field. It is an EtherType, so
///   an 802.1Q tag that libpcap put back after the cooked header (protocol
///   0x8100) is parsed as a VLAN tag as usual.
/// - raw IP: the IP version nibble (4 or 6; anything else: no EtherType,
///   counted as non-IP); IPv4 / IPv6 link types: their family.
/// - NULL: the 4-byte address family in the writer's byte order (detected);
///   LOOP: the same in network byte order. AF_INET (2) is IPv4; 24, 28 and
///   30 (the BSDs' and macOS' AF_INET6) are IPv6; others count as non-IP.
///
/// A frame whose link header is cut short becomes an empty frame, which the
/// program counts as truncated. SLL's packet type (incoming / outgoing) is
/// not used: a replay counts every frame as ingress of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkLayer {
    Ethernet,
    LinuxSll,
    LinuxSll2,
    RawIp,
    Ipv4,
    Ipv6,
    Null,
    Loop,
}

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_HLEN: usize = 14;

impl LinkLayer {
    /// The link layer of a pcap/pcapng link type, `None` if flowd does not
    /// replay it.
    pub fn from_link_type(link_type: u32) -> Option<Self> {
        Some(match link_type {
            1 => Self::Ethernet,
            113 => Self::LinuxSll,
            276 => Self::LinuxSll2,
            // LINKTYPE_RAW, and the DLT_RAW values some writers put in files.
            101 | 12 | 14 => Self::RawIp,
            228 => Self::Ipv4,
            229 => Self::Ipv6,
            0 => Self::Null,
            108 => Self::Loop,
            _ => return None,
        })
    }

    /// `data` as an Ethernet frame of at most `max` bytes: a prefix of
    /// `data` itself for Ethernet, else built in `scratch`.
    pub fn to_ethernet<'a>(self, data: &'a [u8], max: usize, scratch: &'a mut Vec<u8>) -> &'a [u8] {
        let (ethertype, payload) = match self {
            Self::Ethernet => return &data[..data.len().min(max)],
            Self::LinuxSll => match data.get(..16) {
                Some(h) => (u16::from_be_bytes([h[14], h[15]]), &data[16..]),
                None => return &[],
            },
            Self::LinuxSll2 => match data.get(..20) {
                Some(h) => (u16::from_be_bytes([h[0], h[1]]), &data[20..]),
                None => return &[],
            },
            Self::RawIp => match data.first().map(|b| b >> 4) {
                Some(4) => (ETH_P_IPV4, data),
                Some(6) => (ETH_P_IPV6, data),
                Some(_) => (0, data),
                None => return &[],
            },
            Self::Ipv4 => (ETH_P_IPV4, data),
            Self::Ipv6 => (ETH_P_IPV6, data),
            Self::Null | Self::Loop => {
                let Some(h) = data.get(..4) else {
                    return &[];
                };
                let raw = [h[0], h[1], h[2], h[3]];
                let af = if self == Self::Loop {
                    u32::from_be_bytes(raw)
                } else {
                    // Host order of the writer: a family fits in 16 bits.
                    let le = u32::from_le_bytes(raw);
                    if le > 0xffff { le.swap_bytes() } else { le }
                };
                let ethertype = match af {
                    2 => ETH_P_IPV4,
                    24 | 28 | 30 => ETH_P_IPV6,
                    _ => 0,
                };
                (ethertype, &data[4..])
            }
        };
        scratch.clear();
        scratch.extend_from_slice(&[0; 12]);
        scratch.extend_from_slice(&ethertype.to_be_bytes());
        let take = payload.len().min(max.saturating_sub(ETH_HLEN));
        scratch.extend_from_slice(&payload[..take]);
        scratch
    }
}

/// The name of a link type (tcpdump.org's `LINKTYPE_` names, without the
/// prefix), "unknown" for numbers not in this list.
pub fn link_type_name(link_type: u32) -> &'static str {
    match link_type {
        0 => "NULL",
        1 => "ETHERNET",
        3 => "AX25",
        6 => "IEEE802_5",
        7 => "ARCNET_BSD",
        8 => "SLIP",
        9 => "PPP",
        10 => "FDDI",
        12 | 14 => "RAW (DLT_RAW)",
        50 => "PPP_HDLC",
        51 => "PPP_ETHER",
        100 => "ATM_RFC1483",
        101 => "RAW",
        104 => "C_HDLC",
        105 => "IEEE802_11",
        107 => "FRELAY",
        108 => "LOOP",
        113 => "LINUX_SLL",
        114 => "LTALK",
        117 => "PFLOG",
        119 => "IEEE802_11_PRISM",
        122 => "IP_OVER_FC",
        123 => "SUNATM",
        127 => "IEEE802_11_RADIOTAP",
        129 => "ARCNET_LINUX",
        143 => "DOCSIS",
        144 => "LINUX_IRDA",
        147..=162 => "USER0..USER15",
        163 => "IEEE802_11_AVS",
        166 => "PPP_PPPD",
        177 => "LINUX_LAPD",
        187 => "BLUETOOTH_HCI_H4",
        189 => "USB_LINUX",
        192 => "PPI",
        195 => "IEEE802_15_4_WITHFCS",
        201 => "BLUETOOTH_HCI_H4_WITH_PHDR",
        220 => "USB_LINUX_MMAPPED",
        227 => "CAN_SOCKETCAN",
        228 => "IPV4",
        229 => "IPV6",
        239 => "NFLOG",
        240 => "NETANALYZER",
        241 => "NETANALYZER_TRANSPARENT",
        249 => "USBPCAP",
        251 => "BLUETOOTH_LE_LL",
        252 => "WIRESHARK_UPPER_PDU",
        253 => "NETLINK",
        254 => "BLUETOOTH_LINUX_MONITOR",
        264 => "PKTAP",
        276 => "LINUX_SLL2",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
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
}
