//! TLS ClientHello and ServerHello, with tls-parser (rusticata).
//!
//! Only the handshake message's own bytes are needed: the record header
//! says where it starts, its length where it ends, so a ServerHello that
//! shares its record with a long certificate chain parses from the first
//! bytes. A handshake message spread over several records is not
//! reassembled (rare for hellos; counted as a parse error).

use tls_parser::{TlsExtension, TlsMessage, TlsMessageHandshake};

use super::{Parsed, TlsInfo, ja4};

/// The handshake message's length bound: a ClientHello larger than this is
/// absurd (the record layer allows 2^14).
const MAX_HELLO: usize = 1 << 14;

/// What a ClientHello gives: the event's fields and the JA4 inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub info: TlsInfo,
    pub ja4: ja4::Ja4Input,
}

/// What a ServerHello gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerHello {
    pub version: u16,
    pub cipher: u16,
}

/// The bytes of the first handshake message in the record at `p`'s start.
fn message(p: &[u8], last: bool) -> Result<Option<(&[u8], usize)>, ()> {
    if p.len() < 9 {
        return if last { Err(()) } else { Ok(None) };
    }
    if p[0] != 22 || p[1] != 3 {
        return Err(());
    }
    let record = usize::from(u16::from_be_bytes([p[3], p[4]]));
    let hs = (usize::from(p[6]) << 16) | (usize::from(p[7]) << 8) | usize::from(p[8]);
    if hs > MAX_HELLO || hs + 4 > record {
        return Err(());
    }
    let need = 5 + 4 + hs;
    if p.len() < need {
        return if last { Err(()) } else { Ok(None) };
    }
    Ok(Some((&p[5..need], 5 + record.min(p.len() - 5))))
}

/// A ClientHello record at `p`'s start.
pub fn parse_client_hello(p: &[u8], last: bool) -> Parsed<ClientHello> {
    let (msg, used) = match message(p, last) {
        Ok(Some(m)) => m,
        Ok(None) => return Parsed::More,
        Err(()) => return Parsed::Error,
    };
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)))) =
        tls_parser::parse_tls_message_handshake(msg)
    else {
        return Parsed::Error;
    };
    let raw_ext = ch.ext.unwrap_or(&[]);
    let Some(ext_types) = extension_types(raw_ext) else {
        return Parsed::Error;
    };
    let Ok((_, exts)) = tls_parser::parse_tls_client_hello_extensions(raw_ext) else {
        return Parsed::Error;
    };
    let mut out = ClientHello::default();
    for e in &exts {
        match e {
            TlsExtension::SNI(names) => {
                if let Some((_, name)) = names.iter().find(|(t, _)| t.0 == 0) {
                    out.info.sni = Some(String::from_utf8_lossy(name).into_owned());
                }
            }
            TlsExtension::ALPN(protos) => {
                out.info.alpn = protos
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect();
                out.ja4.alpn_first = protos.first().map(|p| p.to_vec());
            }
            TlsExtension::SupportedVersions(v) => {
                let all: Vec<u16> = v.iter().map(|v| v.0).collect();
                out.info.versions_offered = all
                    .iter()
                    .copied()
                    .filter(|v| !ja4::is_grease(*v))
                    .collect();
                out.ja4.supported_versions = Some(all);
            }
            TlsExtension::SignatureAlgorithms(s) => out.ja4.sig_algs = s.clone(),
            _ => {}
        }
    }
    out.ja4.tcp = true;
    out.ja4.legacy_version = ch.version.0;
    out.ja4.ciphers = ch.ciphers.iter().map(|c| c.0).collect();
    out.ja4.extensions = ext_types;
    out.info.ja4 = Some(ja4::ja4(&out.ja4));
    Parsed::Done(out, used)
}

/// The extension type codes in wire order; `None` if the block is malformed.
fn extension_types(mut p: &[u8]) -> Option<Vec<u16>> {
    let mut v = Vec::new();
    while !p.is_empty() {
        if p.len() < 4 {
            return None;
        }
        let t = u16::from_be_bytes([p[0], p[1]]);
        let len = usize::from(u16::from_be_bytes([p[2], p[3]]));
        p = p.get(4 + len..)?;
        v.push(t);
    }
    Some(v)
}

/// A ServerHello record at `p`'s start: the negotiated version (its
/// supported_versions extension, else its version field) and cipher.
pub fn parse_server_hello(p: &[u8], last: bool) -> Parsed<ServerHello> {
    let (msg, used) = match message(p, last) {
        Ok(Some(m)) => m,
        Ok(None) => return Parsed::More,
        Err(()) => return Parsed::Error,
    };
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ServerHello(sh)))) =
        tls_parser::parse_tls_message_handshake(msg)
    else {
        return Parsed::Error;
    };
    let mut version = sh.version.0;
    if let Some(raw) = sh.ext {
        match tls_parser::parse_tls_server_hello_extensions(raw) {
            Ok((_, exts)) => {
                for e in exts {
                    if let TlsExtension::SupportedVersions(v) = e
                        && let Some(v) = v.first()
                    {
                        version = v.0;
                    }
                }
            }
            Err(_) => return Parsed::Error,
        }
    }
    Parsed::Done(
        ServerHello {
            version,
            cipher: sh.cipher.0,
        },
        used,
    )
}
