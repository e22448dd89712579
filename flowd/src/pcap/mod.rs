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
//!
//! This file holds the reader and what both formats share; [`classic`] and
//! [`pcapng`] read their own headers and records, [`link`] the link types.

use std::{
    fs::File,
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
};

use thiserror::Error;

mod classic;
mod link;
mod pcapng;
#[cfg(test)]
mod tests;

pub use link::{LinkLayer, link_type_name};

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
