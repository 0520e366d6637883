//! Writer schemas by id: from local `.avsc` files mapped to ids in the configuration, or
//! from a schema registry's REST API (`GET /schemas/ids/{id}`), cached for the life of the
//! bridge (a registered id never changes its schema).
//!
//! The registry client is a minimal HTTP/1.1 client over a `TcpStream` (plain `http://`
//! only, `Connection: close`, bounded response, timeouts): the bridge makes one request per
//! new schema id, and a general HTTP stack would be most of the dependency tree.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::avro::{Schema, SchemaError};

/// Largest registry response read, in bytes.
pub const RESPONSE_BYTES_MAX: usize = 1024 * 1024;

/// Why a writer schema could not be had.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No schema has this id (registry 404, or no local file for it): retrying cannot help.
    #[error("unknown schema id {0}")]
    UnknownId(u32),
    /// The registry could not be reached or answered 5xx: retrying may help.
    #[error("schema registry unreachable: {0}")]
    Unreachable(String),
    /// The registry answered something that is not a schema response.
    #[error("schema registry answered badly: {0}")]
    BadResponse(String),
    /// The schema text does not parse.
    #[error("schema id {id}: {source}")]
    Schema {
        /// The id.
        id: u32,
        /// Why.
        source: SchemaError,
    },
    /// A configured local schema file is unreadable or malformed (at start-up).
    #[error("schema file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl RegistryError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Unreachable(_))
    }
}

/// Where writer schemas come from.
pub struct Schemas {
    cache: HashMap<u32, Arc<Schema>>,
    registry: Option<HttpRegistry>,
}

impl Schemas {
    /// Local `ID=PATH` entries (parsed now: a bad file stops the bridge at start) and an
    /// optional registry URL (empty for none).
    pub fn new(files: &[String], registry_url: &str, timeout: Duration) -> Result<Self, RegistryError> {
        let mut cache = HashMap::new();
        for entry in files {
            let (id, path) = parse_file_entry(entry)?;
            let text = read_schema_file(Path::new(path))?;
            let schema = Schema::parse(&text).map_err(|e| RegistryError::File {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            cache.insert(id, Arc::new(schema));
        }
        let registry = if registry_url.is_empty() {
            None
        } else {
            Some(HttpRegistry::new(registry_url, timeout)?)
        };
        Ok(Self { cache, registry })
    }

    /// The writer schema of `id`.
    pub fn get(&mut self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(s) = self.cache.get(&id) {
            return Ok(s.clone());
        }
        let registry = self.registry.as_ref().ok_or(RegistryError::UnknownId(id))?;
        let text = registry.schema_text(id)?;
        let schema = Arc::new(Schema::parse(&text).map_err(|source| RegistryError::Schema { id, source })?);
        self.cache.insert(id, schema.clone());
        Ok(schema)
    }
}

fn parse_file_entry(entry: &str) -> Result<(u32, &str), RegistryError> {
    let bad = |reason: &str| RegistryError::File {
        path: entry.to_owned(),
        reason: reason.to_owned(),
    };
    let (id, path) = entry
        .split_once('=')
        .ok_or_else(|| bad("expected ID=PATH (bridge.schema_files)"))?;
    let id = id.trim().parse::<u32>().map_err(|_| bad("the id is not a u32"))?;
    Ok((id, path.trim()))
}

fn read_schema_file(path: &Path) -> Result<String, RegistryError> {
    let bad = |reason: String| RegistryError::File {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.len() > super::avro::SCHEMA_BYTES_MAX as u64 {
        return Err(bad(format!("larger than {} bytes", super::avro::SCHEMA_BYTES_MAX)));
    }
    std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))
}

/// A schema registry at an `http://host:port[/prefix]` URL.
struct HttpRegistry {
    host: String,
    port: u16,
    prefix: String,
    timeout: Duration,
}

impl HttpRegistry {
    fn new(url: &str, timeout: Duration) -> Result<Self, RegistryError> {
        let bad = |r: &str| RegistryError::BadResponse(format!("registry URL {url:?}: {r}"));
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// URLs are supported"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("bad port"))?),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            prefix: prefix.to_owned(),
            timeout,
        })
    }

    fn schema_text(&self, id: u32) -> Result<String, RegistryError> {
        let path = format!("{}/schemas/ids/{id}", self.prefix);
        let (status, body) = self.get(&path)?;
        match status {
            200 => {}
            404 => return Err(RegistryError::UnknownId(id)),
            s if s >= 500 || s == 429 => return Err(RegistryError::Unreachable(format!("HTTP {s} for {path}"))),
            s => return Err(RegistryError::BadResponse(format!("HTTP {s} for {path}"))),
        }
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RegistryError::BadResponse(format!("{path}: {e}")))?;
        if let Some(t) = json.get("schemaType").and_then(|t| t.as_str()) {
            if t != "AVRO" {
                return Err(RegistryError::BadResponse(format!("schema {id} is {t}, not AVRO")));
            }
        }
        json.get("schema")
            .and_then(|s| s.as_str())
            .map(str::to_owned)
            .ok_or_else(|| RegistryError::BadResponse(format!("{path}: no \"schema\" string")))
    }

    /// One GET; the status and the body (Content-Length, chunked, or to EOF).
    fn get(&self, path: &str) -> Result<(u16, Vec<u8>), RegistryError> {
        let unreachable = |e: std::io::Error| RegistryError::Unreachable(format!("{}:{}: {e}", self.host, self.port));
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(unreachable)?
            .next()
            .ok_or_else(|| RegistryError::Unreachable(format!("{} resolves to no address", self.host)))?;
        let mut stream = TcpStream::connect_timeout(&addr, self.timeout).map_err(unreachable)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(unreachable)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(unreachable)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}:{}\r\nAccept: application/vnd.schemaregistry.v1+json, application/json\r\nConnection: close\r\nUser-Agent: rimd\r\n\r\n",
            self.host, self.port
        );
        stream.write_all(request.as_bytes()).map_err(unreachable)?;
        let mut raw = Vec::new();
        stream
            .take(RESPONSE_BYTES_MAX as u64 + 1)
            .read_to_end(&mut raw)
            .map_err(unreachable)?;
        if raw.len() > RESPONSE_BYTES_MAX {
            return Err(RegistryError::BadResponse(format!(
                "response larger than {RESPONSE_BYTES_MAX} bytes"
            )));
        }
        parse_response(&raw)
    }
}

/// Splits an HTTP/1.x response into status and body.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), RegistryError> {
    let bad = |r: &str| RegistryError::BadResponse(r.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers are not UTF-8"))?;
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("no status code"))?;
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else { continue };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        } else if k == "content-length" {
            length = v.parse().ok();
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(n) = length {
        body.get(..n)
            .ok_or_else(|| bad("body shorter than Content-Length"))?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, RegistryError> {
    let bad = |r: &str| RegistryError::BadResponse(format!("chunked body: {r}"));
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("no size line"))?;
        let size_text = std::str::from_utf8(&body[..line_end]).map_err(|_| bad("size not UTF-8"))?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("size not hex"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).ok_or_else(|| bad("chunk runs past the end"))?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).ok_or_else(|| bad("chunk without CRLF"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_with_length_chunked_or_to_eof() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhixx").expect("length");
        assert_eq!(r, (200, b"hi".to_vec()));
        let r =
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n1;x=y\r\n!\r\n0\r\n\r\n")
                .expect("chunked");
        assert_eq!(r, (200, b"hi!".to_vec()));
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\n{}").expect("eof");
        assert_eq!(r, (404, b"{}".to_vec()));
        for garbage in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"nonsense\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhi",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffff\r\nab",
        ] {
            assert!(parse_response(garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn an_unreachable_registry_is_transient_and_an_unknown_id_is_not() {
        // Port 1 on loopback: nothing listens there.
        let mut s = Schemas::new(&[], "http://127.0.0.1:1", Duration::from_millis(500)).expect("schemas");
        let err = s.get(5).expect_err("unreachable");
        assert!(err.is_transient(), "{err}");
        let mut none = Schemas::new(&[], "", Duration::from_millis(500)).expect("schemas");
        let err = none.get(5).expect_err("unknown");
        assert_eq!(err, RegistryError::UnknownId(5));
        assert!(!err.is_transient());
    }

    #[test]
    fn local_files_are_mapped_to_ids_and_bad_entries_refused() {
        let dir = std::env::temp_dir().join(format!("rimd-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("e.avsc");
        std::fs::write(&good, super::super::wire::RIM_FAST_EVENT_AVSC).expect("write");
        let mut s = Schemas::new(&[format!("7={}", good.display())], "", Duration::from_secs(1)).expect("schemas");
        assert!(s.get(7).is_ok());
        assert_eq!(s.get(8).expect_err("unknown"), RegistryError::UnknownId(8));
        for entry in ["7", "x=/nope", "7=/does/not/exist.avsc"] {
            assert!(
                matches!(
                    Schemas::new(&[entry.to_owned()], "", Duration::from_secs(1)),
                    Err(RegistryError::File { .. })
                ),
                "{entry}"
            );
        }
        for url in ["https://x", "http://:80", "http://h:notaport"] {
            assert!(Schemas::new(&[], url, Duration::from_secs(1)).is_err(), "{url}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
