//! HTTP/1.x request and status lines, with httparse.

use super::{HttpInfo, Parsed};

/// Header slots; more headers than this is a parse error.
const MAX_HEADERS: usize = 96;

/// A request's line and headers. `last`: no more bytes will come, so a cut
/// header block gives the lines it has.
pub fn parse_request(p: &[u8], last: bool) -> Parsed<HttpInfo> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(p) {
        Ok(httparse::Status::Complete(used)) => match info(&req) {
            Some(i) => Parsed::Done(i, used),
            None => Parsed::Error,
        },
        Ok(httparse::Status::Partial) if !last => Parsed::More,
        Ok(httparse::Status::Partial) => cut(p),
        Err(_) => Parsed::Error,
    }
}

/// The complete lines of a cut header block, closed with an empty line.
fn cut(p: &[u8]) -> Parsed<HttpInfo> {
    let Some(end) = p.windows(2).rposition(|w| w == b"\r\n") else {
        return Parsed::Error;
    };
    let mut closed = Vec::with_capacity(end + 4);
    closed.extend_from_slice(&p[..end + 2]);
    closed.extend_from_slice(b"\r\n");
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&closed) {
        Ok(httparse::Status::Complete(_)) => info(&req).map_or(Parsed::Error, Parsed::Cut),
        _ => Parsed::Error,
    }
}

fn info(req: &httparse::Request<'_, '_>) -> Option<HttpInfo> {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    Some(HttpInfo {
        method: req.method?.to_owned(),
        url: req.path?.to_owned(),
        host: header("host"),
        user_agent: header("user-agent"),
        status: None,
    })
}

/// A status line's code; the headers are not needed.
pub fn parse_status(p: &[u8], last: bool) -> Parsed<u16> {
    let Some(eol) = p.windows(2).position(|w| w == b"\r\n") else {
        return if last || p.len() > 1024 {
            Parsed::Error
        } else {
            Parsed::More
        };
    };
    let mut line = Vec::with_capacity(eol + 4);
    line.extend_from_slice(&p[..eol + 2]);
    line.extend_from_slice(b"\r\n");
    let mut headers = [httparse::EMPTY_HEADER; 0];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&line) {
        Ok(httparse::Status::Complete(_)) => resp
            .code
            .map_or(Parsed::Error, |c| Parsed::Done(c, p.len())),
        _ => Parsed::Error,
    }
}
