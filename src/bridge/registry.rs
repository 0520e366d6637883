//! Writer schemas by id, compiled into decoding plans ([`rim_avro::Plan`]) once: from
//! local `.avsc` files mapped to ids in the configuration, or from a schema registry's
//! REST API (`GET {url}/schemas/ids/{id}`).
//!
//! The registry client is `ureq` (rustls, no OpenSSL): `http://` or `https://` (Mozilla's
//! roots, or only the CAs of `bridge.registry_ca_file` for a private CA), basic auth
//! (`registry_username`/`registry_password`) or a bearer token (`registry_bearer_token`),
//! one total timeout per request (`registry_timeout_ms`: resolution, connection, TLS,
//! request and the whole response), every resolved address tried in turn, a response
//! bounded to [`RESPONSE_BYTES_MAX`], no redirects.
//!
//! Cache: plans stay while the bridge runs (a registered id never changes its schema), at
//! most `registry_cache_max` of them from the registry (the oldest goes first; local
//! files are never evicted); an id the registry does not know is not asked again for
//! `registry_negative_ttl_ms`, so a stream of messages with a bogus id costs one request,
//! not one each. Retry policy: an answer that may change (unreachable, timeout, 5xx, 429,
//! 401/403) is a transient error, which the inbound side retries for that message with
//! exponential backoff (`retries_max`, `retry_backoff_ms` doubling up to
//! `retry_backoff_max_ms`) before the DLQ; anything else is final at once.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::time::{Duration, Instant};

use rim_avro::{Plan, PlanError, Schema, SchemaError};
use thiserror::Error;

use super::config::BridgeConfig;

/// Largest registry response read, in bytes.
pub const RESPONSE_BYTES_MAX: u64 = 1024 * 1024;

/// Why a writer schema could not be had.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// No schema has this id (registry 404, or no local file for it): retrying cannot help.
    #[error("unknown schema id {0}")]
    UnknownId(u32),
    /// The registry could not be reached, timed out, or answered 5xx or 429: retrying may
    /// help.
    #[error("schema registry unreachable: {0}")]
    Unreachable(String),
    /// The registry refused the credentials (401, 403): retrying helps once they are fixed.
    #[error("schema registry refused the request: {0}")]
    Refused(String),
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
    /// The schema parses but cannot be read as a RimFastEvent.
    #[error("schema id {id}: {source}")]
    Plan {
        /// The id.
        id: u32,
        /// Why.
        source: PlanError,
    },
    /// A configured local schema file or a registry setting is unusable (at start-up).
    #[error("{what}: {reason}")]
    Config {
        /// The file or the setting.
        what: String,
        /// Why.
        reason: String,
    },
}

impl RegistryError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Unreachable(_) | RegistryError::Refused(_))
    }
}

/// Compiles schema text into a plan.
fn compile(id: u32, text: &str) -> Result<Plan, RegistryError> {
    let schema = Schema::parse(text).map_err(|source| RegistryError::Schema { id, source })?;
    Plan::compile(&schema).map_err(|source| RegistryError::Plan { id, source })
}

/// Hashes a schema id for the plans' map: one multiplication (Fibonacci hashing), where
/// the standard SipHash, twice per message (a look and a get), was 7% of the consuming
/// thread. The map is bounded (`bridge.registry_cache_max`) and holds only ids that resolved, so
/// ids a producer picks to collide cost it a longer probe, nothing more.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Where writer schemas come from, and the plans made of them.
pub struct Schemas {
    plans: HashMap<u32, Plan, BuildHasherDefault<IdHasher>>,
    /// Ids fetched from the registry, oldest first (local ones are never evicted).
    fetched: VecDeque<u32>,
    /// Ids the registry did not know, and when it said so.
    unknown: HashMap<u32, Instant>,
    registry: Option<HttpRegistry>,
    cache_max: usize,
    negative_ttl: Duration,
}

impl Schemas {
    /// Local `ID=PATH` entries (compiled now: a bad file stops the bridge at start) and the
    /// registry of `cfg` (none when its URL is empty).
    pub fn new(cfg: &BridgeConfig) -> Result<Self, RegistryError> {
        let mut plans = HashMap::default();
        for entry in &cfg.schema_files {
            let (id, path) = parse_file_entry(entry)?;
            let text = read_schema_file(Path::new(path))?;
            let plan = compile(id, &text).map_err(|e| RegistryError::Config {
                what: format!("schema file {path}"),
                reason: e.to_string(),
            })?;
            plans.insert(id, plan);
        }
        let registry = if cfg.schema_registry_url.is_empty() {
            None
        } else {
            Some(HttpRegistry::new(cfg)?)
        };
        Ok(Self {
            plans,
            fetched: VecDeque::new(),
            unknown: HashMap::new(),
            registry,
            cache_max: cfg.registry_cache_max.max(1),
            negative_ttl: Duration::from_millis(cfg.registry_negative_ttl_ms),
        })
    }

    /// The plan of writer schema `id`. Only a new id does any I/O.
    pub fn get(&mut self, id: u32) -> Result<&Plan, RegistryError> {
        if !self.plans.contains_key(&id) {
            self.fetch(id)?;
        }
        self.plans.get(&id).ok_or(RegistryError::UnknownId(id))
    }

    fn fetch(&mut self, id: u32) -> Result<(), RegistryError> {
        if let Some(at) = self.unknown.get(&id) {
            if at.elapsed() < self.negative_ttl {
                return Err(RegistryError::UnknownId(id));
            }
            self.unknown.remove(&id);
        }
        let registry = self.registry.as_ref().ok_or(RegistryError::UnknownId(id))?;
        let text = match registry.schema_text(id) {
            Ok(text) => text,
            Err(e @ RegistryError::UnknownId(_)) => {
                self.remember_unknown(id);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let plan = compile(id, &text)?;
        if self.fetched.len() >= self.cache_max {
            if let Some(old) = self.fetched.pop_front() {
                self.plans.remove(&old);
            }
        }
        self.fetched.push_back(id);
        self.plans.insert(id, plan);
        Ok(())
    }

    /// Bounded like the plans: when full, entries past their time go, then the oldest.
    fn remember_unknown(&mut self, id: u32) {
        if self.unknown.len() >= self.cache_max {
            let ttl = self.negative_ttl;
            self.unknown.retain(|_, at| at.elapsed() < ttl);
            if self.unknown.len() >= self.cache_max {
                if let Some(oldest) = self.unknown.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k) {
                    self.unknown.remove(&oldest);
                }
            }
        }
        self.unknown.insert(id, Instant::now());
    }
}

fn config_error(what: &str, reason: impl Into<String>) -> RegistryError {
    RegistryError::Config {
        what: what.to_owned(),
        reason: reason.into(),
    }
}

fn parse_file_entry(entry: &str) -> Result<(u32, &str), RegistryError> {
    let what = format!("bridge.schema_files entry {entry:?}");
    let (id, path) = entry
        .split_once('=')
        .ok_or_else(|| config_error(&what, "expected ID=PATH"))?;
    let id = id
        .trim()
        .parse::<u32>()
        .map_err(|_| config_error(&what, "the id is not a u32"))?;
    Ok((id, path.trim()))
}

fn read_schema_file(path: &Path) -> Result<String, RegistryError> {
    let what = format!("schema file {}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| config_error(&what, e.to_string()))?;
    if meta.len() > rim_avro::schema::SCHEMA_BYTES_MAX as u64 {
        return Err(config_error(
            &what,
            format!("larger than {} bytes", rim_avro::schema::SCHEMA_BYTES_MAX),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| config_error(&what, e.to_string()))
}

/// A schema registry at an `http(s)://host[:port][/prefix]` URL.
struct HttpRegistry {
    agent: ureq::Agent,
    base: String,
    /// The `Authorization` header's value, if any.
    authorization: Option<String>,
}

impl HttpRegistry {
    fn new(cfg: &BridgeConfig) -> Result<Self, RegistryError> {
        let url = cfg.schema_registry_url.trim_end_matches('/');
        let what = "bridge.schema_registry_url";
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| config_error(what, format!("{url:?} is not an http:// or https:// URL")))?;
        let authority = rest.split('/').next().unwrap_or("");
        if authority.contains('@') {
            return Err(config_error(
                what,
                "credentials go in bridge.registry_username and registry_password, not in the URL (which is logged)",
            ));
        }
        if authority.is_empty() || authority.starts_with(':') {
            return Err(config_error(what, format!("{url:?} has no host")));
        }
        let port = authority
            .rsplit_once(']')
            .map_or(authority, |(_, rest)| rest)
            .rsplit_once(':');
        if port.is_some_and(|(_, p)| p.parse::<u16>().is_err()) {
            return Err(config_error(what, format!("{url:?} has a bad port")));
        }
        let parsed: Result<ureq::http::Uri, _> = url.parse();
        if parsed.is_err() {
            return Err(config_error(what, format!("{url:?} is not a valid URL")));
        }
        Ok(Self {
            agent: agent(cfg)?,
            base: url.to_owned(),
            authorization: authorization(cfg)?,
        })
    }

    fn schema_text(&self, id: u32) -> Result<String, RegistryError> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let (status, body) = self.get(&url)?;
        match status {
            200 => {}
            404 => return Err(RegistryError::UnknownId(id)),
            401 | 403 => {
                return Err(RegistryError::Refused(format!(
                    "HTTP {status} for GET {url} (bridge.registry_username/registry_password or registry_bearer_token)"
                )))
            }
            s if s >= 500 || s == 429 || s == 408 => {
                return Err(RegistryError::Unreachable(format!("HTTP {s} for GET {url}")))
            }
            s => return Err(RegistryError::BadResponse(format!("HTTP {s} for GET {url}"))),
        }
        schema_of(id, &url, &body)
    }

    /// One GET: the status and the body (bounded).
    fn get(&self, url: &str) -> Result<(u16, Vec<u8>), RegistryError> {
        let mut request = self
            .agent
            .get(url)
            .header("Accept", "application/vnd.schemaregistry.v1+json, application/json");
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        let started = Instant::now();
        let failed = |e: ureq::Error| {
            let text = format!("GET {url}: {e} (after {} ms)", started.elapsed().as_millis());
            match e {
                ureq::Error::BodyExceedsLimit(_) => RegistryError::BadResponse(text),
                ureq::Error::BadUri(_) | ureq::Error::Http(_) => RegistryError::BadResponse(text),
                _ => RegistryError::Unreachable(text),
            }
        };
        let mut response = request.call().map_err(failed)?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(RESPONSE_BYTES_MAX)
            .read_to_vec()
            .map_err(failed)?;
        Ok((status, body))
    }
}

/// The client: total timeout, no redirects, statuses as answers (not errors).
fn agent(cfg: &BridgeConfig) -> Result<ureq::Agent, RegistryError> {
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(cfg.registry_timeout_ms)))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent("rimd");
    if !cfg.registry_ca_file.is_empty() {
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ca_roots(&cfg.registry_ca_file)?)
                .build(),
        );
    }
    Ok(config.build().new_agent())
}

/// The certificates of a PEM file, as the only roots trusted.
fn ca_roots(path: &str) -> Result<ureq::tls::RootCerts, RegistryError> {
    let what = format!("bridge.registry_ca_file {path}");
    let pem = std::fs::read(path).map_err(|e| config_error(&what, e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item.map_err(|e| config_error(&what, e.to_string()))? {
            ureq::tls::PemItem::Certificate(c) => certs.push(c),
            _ => continue,
        }
    }
    if certs.is_empty() {
        return Err(config_error(&what, "holds no PEM certificate"));
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

/// `Basic base64(user:password)` or `Bearer token`, from the settings.
fn authorization(cfg: &BridgeConfig) -> Result<Option<String>, RegistryError> {
    let basic = !cfg.registry_username.is_empty() || !cfg.registry_password.is_empty();
    let bearer = !cfg.registry_bearer_token.is_empty();
    match (basic, bearer) {
        (true, true) => Err(config_error(
            "bridge.registry_bearer_token",
            "set either it or registry_username/registry_password, not both",
        )),
        (true, false) => {
            let pair = format!("{}:{}", cfg.registry_username, cfg.registry_password);
            Ok(Some(format!("Basic {}", base64(pair.as_bytes()))))
        }
        (false, true) => Ok(Some(format!("Bearer {}", cfg.registry_bearer_token))),
        (false, false) => Ok(None),
    }
}

/// Standard base64 with padding (RFC 4648), for the basic-auth header.
fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let b = [c[0], c.get(1).copied().unwrap_or(0), c.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= c.len() {
                out.push(char::from(T[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The schema text of a `/schemas/ids/{id}` answer.
fn schema_of(id: u32, url: &str, body: &[u8]) -> Result<String, RegistryError> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| RegistryError::BadResponse(format!("GET {url}: not JSON: {e}")))?;
    if let Some(t) = json.get("schemaType").and_then(|t| t.as_str()) {
        if t != "AVRO" {
            return Err(RegistryError::BadResponse(format!("schema {id} is {t}, not AVRO")));
        }
    }
    json.get("schema")
        .and_then(|s| s.as_str())
        .map(str::to_owned)
        .ok_or_else(|| RegistryError::BadResponse(format!("GET {url}: no \"schema\" string")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> BridgeConfig {
        BridgeConfig {
            schema_registry_url: url.to_owned(),
            registry_timeout_ms: 500,
            ..BridgeConfig::default()
        }
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
        assert_eq!(base64(b"Aladdin:open sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }

    #[test]
    fn registry_answers_that_are_not_schemas_are_refused() {
        let url = "http://r/schemas/ids/1";
        assert_eq!(
            schema_of(1, url, br#"{"schema":"\"long\""}"#),
            Ok("\"long\"".to_owned())
        );
        for garbage in [
            &b""[..],
            b"<html>",
            b"{}",
            br#"{"schema": 5}"#,
            br#"{"schema":"x","schemaType":"PROTOBUF"}"#,
        ] {
            assert!(
                matches!(schema_of(1, url, garbage), Err(RegistryError::BadResponse(_))),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn an_unreachable_registry_is_transient_and_an_unknown_id_is_not() {
        // Port 1 on loopback: nothing listens there.
        let mut s = Schemas::new(&cfg("http://127.0.0.1:1")).expect("schemas");
        let err = s.get(5).expect_err("unreachable");
        assert!(err.is_transient(), "{err}");
        assert!(
            err.to_string().contains("GET http://127.0.0.1:1/schemas/ids/5"),
            "{err}"
        );
        let mut none = Schemas::new(&cfg("")).expect("schemas");
        let err = none.get(5).expect_err("unknown");
        assert_eq!(err, RegistryError::UnknownId(5));
        assert!(!err.is_transient());
    }

    #[test]
    fn local_files_are_mapped_to_ids_and_bad_entries_and_urls_refused() {
        let dir = std::env::temp_dir().join(format!("rimd-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("e.avsc");
        std::fs::write(&good, rim_avro::wire::RIM_FAST_EVENT_AVSC).expect("write");
        let other = dir.join("o.avsc");
        std::fs::write(&other, r#"{"type":"record","name":"Other","fields":[]}"#).expect("write");
        let files = |entries: &[String]| BridgeConfig {
            schema_files: entries.to_vec(),
            ..BridgeConfig::default()
        };
        let mut s = Schemas::new(&files(&[format!("7={}", good.display())])).expect("schemas");
        assert!(s.get(7).is_ok());
        assert_eq!(s.get(8).expect_err("unknown"), RegistryError::UnknownId(8));
        for entry in [
            "7".to_owned(),
            "x=/nope".to_owned(),
            "7=/does/not/exist.avsc".to_owned(),
            format!("3={}", other.display()),
        ] {
            assert!(
                matches!(
                    Schemas::new(&files(std::slice::from_ref(&entry))),
                    Err(RegistryError::Config { .. })
                ),
                "{entry}"
            );
        }
        for url in [
            "ftp://x",
            "http://:80",
            "http://user:pw@h:8081",
            "https://",
            "http://h:notaport",
        ] {
            assert!(Schemas::new(&cfg(url)).is_err(), "{url}");
        }
        let both = BridgeConfig {
            registry_username: "u".into(),
            registry_bearer_token: "t".into(),
            ..cfg("https://r:8081")
        };
        assert!(Schemas::new(&both).is_err());
        let no_ca = BridgeConfig {
            registry_ca_file: dir.join("missing.pem").display().to_string(),
            ..cfg("https://r:8081")
        };
        assert!(Schemas::new(&no_ca).is_err());
        let not_pem = BridgeConfig {
            registry_ca_file: good.display().to_string(),
            ..cfg("https://r:8081")
        };
        assert!(Schemas::new(&not_pem).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
