//! Which protocol a payload starts, by content (HTTP/1.x, TLS handshake)
//! or, for DNS, which has no signature, by port.

/// What the first bytes of a payload (or a TCP stream's next message) are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    HttpRequest,
    HttpResponse,
    TlsClientHello,
    TlsServerHello,
    /// DNS over UDP, or over TCP with its 2-byte length prefix.
    Dns {
        tcp: bool,
    },
}

/// Methods accepted when the request line is cut before its version.
const METHODS: &[&[u8]] = &[
    b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
];

/// The DNS ports always recognised: DNS and mDNS.
pub const DNS_PORTS: [u16; 2] = [53, 5353];

/// Classifies the start of `p`. `dns_port` says one of the ports is a DNS
/// port (the caller knows the configured ones).
pub fn classify(p: &[u8], tcp: bool, dns_port: bool) -> Option<Start> {
    if dns_port {
        return Some(Start::Dns { tcp });
    }
    if !tcp {
        return None;
    }
    if let Some(s) = tls_hello(p) {
        return Some(s);
    }
    if p.starts_with(b"HTTP/1.") {
        return Some(Start::HttpResponse);
    }
    http_request(p).then_some(Start::HttpRequest)
}

/// A TLS handshake record (type 22, version 3.x) whose first message is a
/// ClientHello (1) or ServerHello (2).
fn tls_hello(p: &[u8]) -> Option<Start> {
    if p.len() < 6 || p[0] != 22 || p[1] != 3 || p[2] > 4 {
        return None;
    }
    match p[5] {
        1 => Some(Start::TlsClientHello),
        2 => Some(Start::TlsServerHello),
        _ => None,
    }
}

/// A method token (upper-case letters, `-`, `_`) and a space, then a target;
/// the line must end in ` HTTP/1.x`, or, when it is cut before its end, the
/// method must be a standard one. This keeps SMTP's `EHLO x` and FTP's
/// `USER x` out.
fn http_request(p: &[u8]) -> bool {
    let Some(sp) = p.iter().take(17).position(|&b| b == b' ') else {
        return false;
    };
    let method = &p[..sp];
    if method.len() < 3
        || !method
            .iter()
            .all(|b| b.is_ascii_uppercase() || *b == b'-' || *b == b'_')
    {
        return false;
    }
    if p.get(sp + 1)
        .is_none_or(|&b| b == b' ' || b == b'\r' || b == b'\n')
    {
        return false;
    }
    match p
        .windows(2)
        .position(|w| w == b"\r\n")
        .or_else(|| p.iter().position(|&b| b == b'\n'))
    {
        Some(eol) => {
            let line = &p[..eol];
            line.len() >= sp + 10 && {
                let v = &line[line.len() - 9..];
                v.starts_with(b" HTTP/1.") && v[8].is_ascii_digit()
            }
        }
        None => METHODS.contains(&method),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_not() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true, false),
            Some(Start::HttpRequest)
        );
        assert_eq!(
            classify(b"PROPFIND /x HTTP/1.1\r\n", true, false),
            Some(Start::HttpRequest)
        );
        assert_eq!(
            classify(b"GET /very/long/url/cut", true, false),
            Some(Start::HttpRequest)
        );
        assert_eq!(classify(b"EHLO example.com\r\n", true, false), None);
        assert_eq!(classify(b"USER anonymous\r\n", true, false), None);
        assert_eq!(classify(b"FOOBAR /cut", true, false), None);
        assert_eq!(classify(b"GET  / HTTP/1.1\r\n", true, false), None);
        assert_eq!(
            classify(b"HTTP/1.1 200 OK\r\n", true, false),
            Some(Start::HttpResponse)
        );
        assert_eq!(classify(b"GET / HTTP/1.1\r\n", false, false), None);
        assert_eq!(classify(b"", true, false), None);
    }

    #[test]
    fn tls_and_dns() {
        assert_eq!(
            classify(&[22, 3, 1, 0, 5, 1, 0], true, false),
            Some(Start::TlsClientHello)
        );
        assert_eq!(
            classify(&[22, 3, 3, 0, 5, 2, 0], true, false),
            Some(Start::TlsServerHello)
        );
        assert_eq!(classify(&[23, 3, 3, 0, 5, 1, 0], true, false), None);
        assert_eq!(classify(&[22, 3, 3, 0, 5, 11, 0], true, false), None);
        assert_eq!(
            classify(&[1, 2, 3], false, true),
            Some(Start::Dns { tcp: false })
        );
        assert_eq!(
            classify(&[1, 2, 3], true, true),
            Some(Start::Dns { tcp: true })
        );
    }
}
