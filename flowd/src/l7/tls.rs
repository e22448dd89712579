//! TLS ClientHello and ServerHello, with tls-parser (rusticata).
//!
//! Only the handshake message's own bytes are needed: the record header
//! says where it starts, its length where it ends, so a ServerHello that
//! shares its record with a long certificate chain parses from the first
//! bytes. A handshake message spread over several records is not
//! reassembled (rare for hellos; counted as a parse error). A ClientHello
//! cut by the snap length gives what was captured (see
//! [`parse_client_hello`]).

use std::borrow::Cow;

use tls_parser::{TlsClientHelloContents, TlsExtension, TlsMessage, TlsMessageHandshake};

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

/// The record at `p`'s start: the end of its first handshake message
/// (`need`) and of the record as far as `p` has it (`used`).
fn message(p: &[u8], last: bool) -> Result<Option<(usize, usize)>, ()> {
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
    if p.len() < need && !last {
        return Ok(None);
    }
    Ok(Some((need, (5 + record).min(p.len()))))
}

/// A ClientHello record at `p`'s start.
///
/// One cut by the snap length (`last`, fewer bytes than the message) is
/// parsed with the missing tail zero-filled, and only what lay in the
/// captured bytes is used: if the cut fell inside the padding extension
/// (zeros by definition, and often last: browsers pad the ClientHello to
/// 512 bytes) nothing is lost and the result is exact; otherwise the
/// extensions after the cut are missing, there is no JA4, and the result
/// is `Cut`.
pub fn parse_client_hello(p: &[u8], last: bool) -> Parsed<ClientHello> {
    let (need, used) = match message(p, last) {
        Ok(Some(m)) => m,
        Ok(None) => return Parsed::More,
        Err(()) => return Parsed::Error,
    };
    let have = p.len().min(need);
    let filled: Cow<'_, [u8]> = if have < need {
        let mut v = p[..have].to_vec();
        v.resize(need, 0);
        Cow::Owned(v)
    } else {
        Cow::Borrowed(&p[..need])
    };
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)))) =
        tls_parser::parse_tls_message_handshake(&filled[5..need])
    else {
        return Parsed::Error;
    };
    let Some(raw_ext) = ch.ext else {
        // No extensions: complete only if nothing was cut.
        return if have < need {
            Parsed::Error
        } else {
            build(&ch, &[], true).map_or(Parsed::Error, |c| Parsed::Done(c, used))
        };
    };
    // Where the extension block starts in `filled`; the cipher and
    // compression lists before it must have been captured.
    let ext_at = raw_ext.as_ptr() as usize - filled.as_ptr() as usize;
    if ext_at > have {
        return Parsed::Error;
    }
    // Walk the extensions as far as they were captured.
    let cap = have.saturating_sub(ext_at).min(raw_ext.len());
    let (mut at, mut exact) = (0, true);
    while at < raw_ext.len() {
        if at + 4 > cap {
            exact = false;
            break;
        }
        let t = u16::from_be_bytes([raw_ext[at], raw_ext[at + 1]]);
        let end = at + 4 + usize::from(u16::from_be_bytes([raw_ext[at + 2], raw_ext[at + 3]]));
        if end > raw_ext.len() {
            return Parsed::Error;
        }
        if end > cap {
            // Only a last padding extension's zeros may be missing.
            exact = t == PADDING && end == raw_ext.len();
            break;
        }
        at = end;
    }
    if exact {
        return build(&ch, raw_ext, true).map_or(Parsed::Error, |c| Parsed::Done(c, used));
    }
    build(&ch, &raw_ext[..at], false).map_or(Parsed::Error, Parsed::Cut)
}

/// The padding extension (RFC 7685): its body is zeros.
const PADDING: u16 = 21;
/// supported_versions (RFC 8446): a ServerHello's names the version chosen.
const SUPPORTED_VERSIONS: u16 = 43;

fn build(ch: &TlsClientHelloContents<'_>, raw_ext: &[u8], complete: bool) -> Option<ClientHello> {
    let ext_types = extension_spans(raw_ext)?.into_iter().map(|s| s.0).collect();
    let (rest, exts) = tls_parser::parse_tls_client_hello_extensions(raw_ext).ok()?;
    // tls-parser stops at the first extension it cannot parse and returns
    // the rest: a malformed one (a server_name list longer than its
    // extension, ...) makes the ClientHello a parse error, not an event
    // without that extension and every one after it.
    if !rest.is_empty() {
        return None;
    }
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
    if complete {
        out.info.ja4 = Some(ja4::ja4(&out.ja4));
    }
    Some(out)
}

/// Each extension's type and its span in the block, in wire order; `None`
/// if the block is malformed.
fn extension_spans(block: &[u8]) -> Option<Vec<(u16, usize, usize)>> {
    let mut v = Vec::new();
    let mut at = 0;
    while at < block.len() {
        let h = block.get(at..at + 4)?;
        let t = u16::from_be_bytes([h[0], h[1]]);
        let end = at + 4 + usize::from(u16::from_be_bytes([h[2], h[3]]));
        if end > block.len() {
            return None;
        }
        v.push((t, at, end));
        at = end;
    }
    Some(v)
}

/// A ServerHello record at `p`'s start: the negotiated version (its
/// supported_versions extension, else its version field) and cipher.
pub fn parse_server_hello(p: &[u8], last: bool) -> Parsed<ServerHello> {
    let (need, used) = match message(p, last) {
        Ok(Some(m)) => m,
        Ok(None) => return Parsed::More,
        Err(()) => return Parsed::Error,
    };
    let Some(msg) = p.get(5..need) else {
        return Parsed::Error;
    };
    let Ok((_, TlsMessage::Handshake(TlsMessageHandshake::ServerHello(sh)))) =
        tls_parser::parse_tls_message_handshake(msg)
    else {
        return Parsed::Error;
    };
    let mut version = sh.version.0;
    if let Some(raw) = sh.ext {
        // Only supported_versions (its body: the selected version) is
        // needed. tls-parser's ServerHello extension parser is not used:
        // it rejects extensions servers legitimately send (NPN with the
        // server's protocol list, which it accepts only empty, as in a
        // ClientHello: Google's ServerHello in the repository's
        // tls-conn-with-extensions.pcap), which would lose the version.
        // The block must still be well formed.
        let Some(spans) = extension_spans(raw) else {
            return Parsed::Error;
        };
        for (t, at, end) in spans {
            if t == SUPPORTED_VERSIONS {
                match raw[at + 4..end] {
                    [hi, lo] => version = u16::from_be_bytes([hi, lo]),
                    _ => return Parsed::Error,
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record: one cipher, no session ID, these extensions.
    fn hello(exts: &[u8]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([0x11; 32]);
        body.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend((exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut rec = vec![22, 3, 1];
        rec.extend((body.len() as u16 + 4).to_be_bytes());
        rec.extend([1, 0]);
        rec.extend((body.len() as u16).to_be_bytes());
        rec.extend(body);
        rec
    }

    #[test]
    fn a_malformed_extension_is_a_parse_error_not_a_shorter_hello() {
        // server_name claiming a 65535-byte list with 3 bytes there, then ALPN "h2".
        let sni = [0, 0, 0, 9, 0xff, 0xff, 0, 0xff, 0xff, b'a', b'b', b'c', 0];
        let alpn = [0, 16, 0, 5, 0, 3, 2, b'h', b'2'];
        let Parsed::Done(ok, _) = parse_client_hello(&hello(&alpn), false) else {
            panic!("a ClientHello with ALPN parses");
        };
        assert_eq!(ok.info.alpn, ["h2"]);
        let bad = hello(&[&sni[..], &alpn].concat());
        assert_eq!(parse_client_hello(&bad, false), Parsed::Error);
    }
}
