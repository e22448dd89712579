//! JA4, FoxIO's TLS client fingerprint (github.com/FoxIO-LLC/ja4,
//! `technical_details/JA4.md`): `a_b_c` where
//! - a: protocol (`t` TCP, `q` QUIC), version (highest of
//!   supported_versions, else the ClientHello's), `d` with SNI else `i`,
//!   cipher count and extension count (2 digits, at most 99), first and last
//!   character of the first ALPN value (`00` without ALPN; the first and last
//!   hex digit when either byte is not alphanumeric);
//! - b: the first 12 hex digits of SHA-256 of the sorted cipher list (4 hex
//!   digits each, comma-separated);
//! - c: the same of the sorted extension list without SNI (0x0000) and
//!   ALPN (0x0010), then `_` and the signature algorithms in wire order.
//!
//! GREASE values (0x?a?a) count nowhere.

use ring::digest;

/// The ClientHello fields JA4 reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ja4Input {
    /// TCP (`t`); QUIC (`q`) otherwise.
    pub tcp: bool,
    pub legacy_version: u16,
    /// The supported_versions extension, GREASE included, if present.
    pub supported_versions: Option<Vec<u16>>,
    /// Cipher suites in wire order, GREASE included.
    pub ciphers: Vec<u16>,
    /// Extension types in wire order, GREASE included.
    pub extensions: Vec<u16>,
    /// Signature algorithms in wire order.
    pub sig_algs: Vec<u16>,
    /// The first ALPN value's bytes.
    pub alpn_first: Option<Vec<u8>>,
}

/// A GREASE value (RFC 8701): 0x0a0a, 0x1a1a, ... 0xfafa.
pub fn is_grease(v: u16) -> bool {
    (v & 0x0f0f) == 0x0a0a && (v >> 8) == (v & 0xff)
}

fn version_str(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 | 0x0200 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

fn alpn_chars(alpn: Option<&[u8]>) -> String {
    let Some(a) = alpn.filter(|a| !a.is_empty()) else {
        return "00".into();
    };
    let (first, last) = (a[0], a[a.len() - 1]);
    if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
        return format!("{}{}", first as char, last as char);
    }
    let hex: String = a.iter().map(|b| format!("{b:02x}")).collect();
    let h = hex.as_bytes();
    format!("{}{}", h[0] as char, h[h.len() - 1] as char)
}

/// The first 12 hex digits of SHA-256, or twelve zeros for an empty input.
pub fn hash12(s: &str) -> String {
    if s.is_empty() {
        return "000000000000".into();
    }
    let d = digest::digest(&digest::SHA256, s.as_bytes());
    d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_list(v: &[u16]) -> String {
    v.iter()
        .map(|x| format!("{x:04x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// JA4's raw form (`ja4_r`): the lists before hashing.
pub fn ja4_raw(i: &Ja4Input) -> (String, String, String) {
    let version = i
        .supported_versions
        .as_ref()
        .and_then(|v| v.iter().copied().filter(|v| !is_grease(*v)).max())
        .unwrap_or(i.legacy_version);
    let mut ciphers: Vec<u16> = i
        .ciphers
        .iter()
        .copied()
        .filter(|c| !is_grease(*c))
        .collect();
    let exts: Vec<u16> = i
        .extensions
        .iter()
        .copied()
        .filter(|e| !is_grease(*e))
        .collect();
    let sni = if exts.contains(&0) { 'd' } else { 'i' };
    let a = format!(
        "{}{}{}{:02}{:02}{}",
        if i.tcp { 't' } else { 'q' },
        version_str(version),
        sni,
        ciphers.len().min(99),
        exts.len().min(99),
        alpn_chars(i.alpn_first.as_deref()),
    );
    ciphers.sort_unstable();
    let mut sorted: Vec<u16> = exts
        .into_iter()
        .filter(|e| *e != 0x0000 && *e != 0x0010)
        .collect();
    sorted.sort_unstable();
    let sigs: Vec<u16> = i
        .sig_algs
        .iter()
        .copied()
        .filter(|s| !is_grease(*s))
        .collect();
    let mut c = hex_list(&sorted);
    if !sigs.is_empty() {
        c.push('_');
        c.push_str(&hex_list(&sigs));
    }
    (a, hex_list(&ciphers), c)
}

/// The JA4 fingerprint.
pub fn ja4(i: &Ja4Input) -> String {
    let (a, b, c) = ja4_raw(i);
    let c_hash = if i.extensions.iter().all(|e| is_grease(*e)) {
        hash12("")
    } else {
        hash12(&c)
    };
    format!("{a}_{}_{c_hash}", hash12(&b))
}
