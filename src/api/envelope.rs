//! The response envelopes, built in exactly one place: `{data, meta}` for successes and
//! `{error: {code, message, details}, meta}` for failures, with `meta.requestId`,
//! `meta.timestamp` (RFC 3339, UTC, milliseconds) and, for lists, `meta.pagination`.
//!
//! JSON is written straight into one `Vec` per response (no intermediate `Value`).

use std::io::Write as _;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;

/// The body type of every response.
pub type Body = Full<Bytes>;

/// The platform's error codes (DESIGN "HTTP API"), plus the HTTP-level refusals the
/// platform list leaves out (405, 413, 415, 504).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 400: the request is malformed or breaks the data model.
    Validation,
    /// 401: no or unknown bearer token.
    Unauthorized,
    /// 403: the token lacks the scope.
    Forbidden,
    /// 404: no such resource or route.
    NotFound,
    /// 405: the route exists, not with this method.
    MethodNotAllowed,
    /// 409: a capsule with this key exists with other content.
    Conflict,
    /// 413: the body is larger than allowed.
    PayloadTooLarge,
    /// 415: the body is not of a type the route takes.
    UnsupportedMediaType,
    /// 429: over the client's rate limit.
    RateLimited,
    /// 500: a bug or a storage failure.
    Internal,
    /// 503: a part of the daemon is not available (not ready, ring full, store off).
    Unavailable,
    /// 504: a bounded wait (durability) ran out.
    Timeout,
}

impl Code {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Code::Validation => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::Conflict => StatusCode::CONFLICT,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The name in the error envelope.
    pub fn name(self) -> &'static str {
        match self {
            Code::Validation => "VALIDATION_ERROR",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Forbidden => "FORBIDDEN",
            Code::NotFound => "NOT_FOUND",
            Code::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Code::Conflict => "CONFLICT",
            Code::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Code::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Code::RateLimited => "RATE_LIMITED",
            Code::Internal => "INTERNAL_ERROR",
            Code::Unavailable => "SERVICE_UNAVAILABLE",
            Code::Timeout => "TIMEOUT",
        }
    }
}

/// One entry of `error.details`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Detail {
    /// The offending field or query parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Position in a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl Detail {
    /// A detail about `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            index: None,
            message: message.into(),
        }
    }

    /// A detail with only a message.
    pub fn message(message: impl Into<String>) -> Self {
        Self {
            field: None,
            index: None,
            message: message.into(),
        }
    }
}

/// A refusal: everything the error envelope says.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The code (and so the status).
    pub code: Code,
    /// One sentence for people.
    pub message: String,
    /// Per field or per item.
    pub details: Vec<Detail>,
    /// For 429: seconds until the window resets.
    pub retry_after_s: Option<u64>,
    /// For 405: the methods the route takes.
    pub allow: Option<&'static str>,
}

impl Problem {
    /// A problem with no details.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after_s: None,
            allow: None,
        }
    }

    /// 400 about one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(Code::Validation, format!("invalid {field}: {message}")).with(Detail::field(field, message))
    }

    /// Adds a detail.
    pub fn with(mut self, d: Detail) -> Self {
        self.details.push(d);
        self
    }

    /// 500, logged by the caller's span; the message names the failed operation.
    pub fn internal(what: &str, e: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %e, "{what}");
        Self::new(Code::Internal, format!("{what}: {e}"))
    }
}

/// `meta.pagination`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    /// Page number, from 0.
    pub page: usize,
    /// Page size asked for.
    pub size: usize,
    /// Elements in all pages.
    pub total_elements: usize,
    /// Pages.
    pub total_pages: usize,
}

impl Pagination {
    /// The pagination of `total` elements.
    pub fn of(page: usize, size: usize, total: usize) -> Self {
        Self {
            page,
            size,
            total_elements: total,
            total_pages: total.div_ceil(size.max(1)),
        }
    }
}

/// What every envelope's `meta` carries.
#[derive(Debug, Clone)]
pub struct Meta {
    /// `X-Request-ID`, taken or generated.
    pub request_id: String,
    /// When the request arrived, epoch ms on the daemon's clock (`meta.timestamp`).
    pub now_ms: i64,
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

fn write_meta(buf: &mut Vec<u8>, meta: &Meta, pagination: Option<&Pagination>) {
    buf.extend_from_slice(b"\"meta\":{\"requestId\":");
    // A string always serializes.
    let _ = serde_json::to_writer(&mut *buf, &meta.request_id);
    buf.extend_from_slice(b",\"timestamp\":\"");
    write_rfc3339_ms(buf, meta.now_ms);
    buf.push(b'"');
    if let Some(p) = pagination {
        buf.extend_from_slice(b",\"pagination\":");
        let _ = serde_json::to_writer(&mut *buf, p);
    }
    buf.push(b'}');
}

/// `{data, meta}` with `status`.
pub fn data<T: Serialize + ?Sized>(
    meta: &Meta,
    status: StatusCode,
    data: &T,
    pagination: Option<&Pagination>,
) -> Response<Body> {
    data_sized(meta, status, data, pagination, 0)
}

/// [`data`] with room for `bytes_hint` bytes of `data` made up front (a large answer is
/// then written without growing, and copying, its buffer on the way).
pub fn data_sized<T: Serialize + ?Sized>(
    meta: &Meta,
    status: StatusCode,
    data: &T,
    pagination: Option<&Pagination>,
    bytes_hint: usize,
) -> Response<Body> {
    let mut buf = Vec::with_capacity(256 + bytes_hint);
    buf.extend_from_slice(b"{\"data\":");
    if let Err(e) = serde_json::to_writer(&mut buf, data) {
        return error(meta, &Problem::internal("cannot serialize the response", &e));
    }
    buf.push(b',');
    write_meta(&mut buf, meta, pagination);
    buf.push(b'}');
    json_response(status, buf)
}

/// `{data, meta}` where `data` is JSON text already written (the WebSocket and the
/// decision list reuse one rendering).
pub fn raw_data(meta: &Meta, status: StatusCode, data_json: &[u8], pagination: Option<&Pagination>) -> Response<Body> {
    let mut buf = Vec::with_capacity(data_json.len() + 160);
    buf.extend_from_slice(b"{\"data\":");
    buf.extend_from_slice(data_json);
    buf.push(b',');
    write_meta(&mut buf, meta, pagination);
    buf.push(b'}');
    json_response(status, buf)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    code: &'static str,
    message: &'a str,
    details: &'a [Detail],
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

/// The error envelope for `p`, with `Retry-After` and `Allow` where they apply.
pub fn error(meta: &Meta, p: &Problem) -> Response<Body> {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"{\"error\":");
    let body = ErrorBody {
        code: p.code.name(),
        message: &p.message,
        details: &p.details,
        retry_after: p.retry_after_s,
    };
    // Strings, numbers and a slice of plain structs: this cannot fail.
    let _ = serde_json::to_writer(&mut buf, &body);
    buf.push(b',');
    write_meta(&mut buf, meta, None);
    buf.push(b'}');
    let mut resp = json_response(p.code.status(), buf);
    if let Some(s) = p.retry_after_s {
        resp.headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from(s));
    }
    if let Some(allow) = p.allow {
        resp.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

/// A plain-text response (Prometheus exposition).
pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json_response(status: StatusCode, buf: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(buf)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, JSON);
    resp
}

/// Writes `ms` (epoch milliseconds, UTC) as `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339).
pub fn write_rfc3339_ms(buf: &mut Vec<u8>, ms: i64) {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    // Writing into a Vec cannot fail.
    let _ = write!(
        buf,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_millis() {
        let mut b = Vec::new();
        write_rfc3339_ms(&mut b, 1_701_597_600_123);
        assert_eq!(std::str::from_utf8(&b).expect("utf8"), "2023-12-03T10:00:00.123Z");
        b.clear();
        write_rfc3339_ms(&mut b, 0);
        assert_eq!(std::str::from_utf8(&b).expect("utf8"), "1970-01-01T00:00:00.000Z");
        b.clear();
        write_rfc3339_ms(&mut b, 951_782_400_000);
        assert_eq!(std::str::from_utf8(&b).expect("utf8"), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn the_error_envelope_has_code_message_details_and_meta() {
        let meta = Meta {
            request_id: "req-1".into(),
            now_ms: 951_782_400_000,
        };
        let mut p = Problem::new(Code::RateLimited, "Too many requests");
        p.retry_after_s = Some(7);
        let resp = error(&meta, &p);
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[hyper::header::RETRY_AFTER], "7");
    }
}
