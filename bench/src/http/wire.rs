//! HTTP/1.1 on the wire: the requests the suite sends (rendered once, then copied or
//! patched in place, so the load generator spends its core on the socket rather than on
//! formatting) and the framing of responses (status, `Content-Length` or chunked).

use crate::error::BenchError;

/// The API's prefix (DESIGN "HTTP API").
pub const API: &str = "/api/v1";

/// The trivial route of the `bare` row.
pub const PING_PATH: &str = "/api/v1/ping";

/// Readiness (recovery done, shards running).
pub const READY_PATH: &str = "/api/v1/health/ready";

/// `Host` of every request (the server does not route on it).
const HOST: &str = "rimd";

/// Headers of a response looked at, at most.
const HEADERS_MAX: usize = 48;

/// A GET request for `path`, keep-alive (HTTP/1.1's default).
pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes()
}

/// A POST of a JSON `body` to `path`.
pub fn post_json(path: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The path of a node's temporal slice.
pub fn slice_path(node_id: &str) -> String {
    format!("{API}/temporal/slice/{node_id}")
}

/// A complete response at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Bytes of head and body together: where the next response would start.
    pub len: usize,
    /// Where the body starts.
    pub body_start: usize,
    /// The server will close the connection after it (`Connection: close`).
    pub close: bool,
}

impl Response {
    /// 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body's bytes (for a chunked body, the raw chunks).
    pub fn body<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.body_start..self.len).unwrap_or_default()
    }
}

/// How a body's end is found.
enum Framing {
    Length(usize),
    Chunked,
}

/// The response at the front of `buf`: `Ok(None)` while it is incomplete.
pub fn parse(buf: &[u8]) -> Result<Option<Response>, BenchError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut head = httparse::Response::new(&mut headers);
    let head_len = match head.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(malformed(format!("response head: {e}"))),
    };
    let status = head.code.ok_or_else(|| malformed("no status code".into()))?;
    let mut framing = Framing::Length(0);
    let mut close = head.version == Some(0);
    for h in head.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            framing = Framing::Length(content_length(h.value)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") && contains_token(h.value, "chunked") {
            framing = Framing::Chunked;
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = contains_token(h.value, "close");
        }
    }
    let end = match framing {
        Framing::Length(n) => Some(head_len + n).filter(|&end| end <= buf.len()),
        Framing::Chunked => chunked_end(buf, head_len)?,
    };
    Ok(end.map(|len| Response {
        status,
        len,
        body_start: head_len,
        close,
    }))
}

fn content_length(value: &[u8]) -> Result<usize, BenchError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| malformed(format!("Content-Length {:?}", String::from_utf8_lossy(value))))
}

fn contains_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Where a chunked body that starts at `pos` ends (after the last chunk and any
/// trailers), or `None` while it is incomplete.
fn chunked_end(buf: &[u8], mut pos: usize) -> Result<Option<usize>, BenchError> {
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        let (consumed, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(malformed("chunk size".into())),
        };
        pos += consumed;
        if size == 0 {
            return Ok(trailers_end(buf, pos));
        }
        let size = usize::try_from(size).map_err(|_| malformed("chunk size".into()))?;
        // The chunk's data and its CRLF.
        pos = pos.saturating_add(size).saturating_add(2);
        if pos > buf.len() {
            return Ok(None);
        }
    }
}

/// After the last chunk: an empty line, or trailer fields ending with one.
fn trailers_end(buf: &[u8], pos: usize) -> Option<usize> {
    let rest = buf.get(pos..)?;
    if rest.starts_with(b"\r\n") {
        return Some(pos + 2);
    }
    rest.windows(4).position(|w| w == b"\r\n\r\n").map(|at| pos + at + 4)
}

fn malformed(what: String) -> BenchError {
    BenchError::Integrity {
        what: format!("malformed HTTP response: {what}"),
    }
}

/// Writes `value` as exactly `out.len()` decimal digits, zero-padded (the fixed-width
/// fields of a pre-rendered body are patched this way, so its length never changes).
pub fn put_digits(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_with_a_length_completes_only_when_its_body_is_there() -> Result<(), BenchError> {
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloHTTP/1.1";
        assert_eq!(parse(&full[..20])?, None);
        assert_eq!(parse(&full[..40])?, None);
        let Some(r) = parse(full)? else {
            panic!("complete");
        };
        assert_eq!((r.status, r.len, r.close), (200, 43, false));
        assert_eq!(r.body(full), b"hello");
        Ok(())
    }

    #[test]
    fn a_chunked_response_ends_after_its_last_chunk() -> Result<(), BenchError> {
        let full = b"HTTP/1.1 429 Too Many Requests\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(parse(&full[..full.len() - 1])?, None);
        let Some(r) = parse(full)? else {
            panic!("complete");
        };
        assert_eq!((r.status, r.len, r.close, r.ok()), (429, full.len(), true, false));
        Ok(())
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"NOT HTTP AT ALL\r\n\r\n").is_err());
    }

    #[test]
    fn digits_are_fixed_width() {
        let mut field = *b"xxxxx";
        put_digits(&mut field, 42);
        assert_eq!(&field, b"00042");
    }
}
