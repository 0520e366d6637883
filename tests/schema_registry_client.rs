//! The schema registry client against a real registry over real sockets (the test registry
//! of `tests/kafka/registry.py`, from the venv of `scripts/pyenv.sh`): https with a private
//! CA, basic and bearer auth, wrong or missing credentials, an unknown id asked once while
//! it is negatively cached, answers that are not schemas, one that never ends, a registry
//! reached by host name. Guards that a managed registry works and that a bad one is a clear
//! error, never a panic or a hang.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::TempDir;
use rimd::bridge::config::BridgeConfig;
use rimd::bridge::registry::{RegistryError, Schemas};

fn venv() -> PathBuf {
    let dir = std::env::var_os("RIM_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv-kafka"));
    assert!(
        dir.join("bin/python").exists(),
        "no Kafka test environment at {}: run scripts/pyenv.sh first",
        dir.display()
    );
    dir
}

/// A registry process with the platform schema preloaded as id 1; killed on drop.
struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    fn start(dir: &Path, args: &[&str]) -> Registry {
        let schema = dir.join("preloaded.avsc");
        std::fs::write(&schema, rimd::bridge::wire::RIM_FAST_EVENT_AVSC).expect("schema file");
        let mut child = Command::new(venv().join("bin/python"))
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/registry.py"))
            .arg("0")
            .arg("--schema")
            .arg(&schema)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn registry.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("registry port");
        let port = line
            .trim()
            .strip_prefix("PORT=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no PORT= line from registry.py: {line:?}"));
        Registry { child, port }
    }

    /// Schema-id lookups it has answered (over plain http, without credentials only).
    fn lookups(&self) -> u64 {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        write!(s, "GET /_requests HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("request");
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        v["schema_ids"].as_u64().expect("count")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(url: String) -> BridgeConfig {
    BridgeConfig {
        schema_registry_url: url,
        registry_timeout_ms: 2_000,
        ..BridgeConfig::default()
    }
}

#[test]
fn https_with_a_private_ca_and_basic_auth() {
    let dir = TempDir::new("registry-tls");
    let reg = Registry::start(
        dir.path(),
        &["--tls-dir", &dir.path().display().to_string(), "--basic", "rim:s3cret"],
    );
    let ca = dir.path().join("ca.pem").display().to_string();
    let tls = |user: &str, password: &str| BridgeConfig {
        registry_ca_file: ca.clone(),
        registry_username: user.into(),
        registry_password: password.into(),
        ..config(format!("https://127.0.0.1:{}", reg.port))
    };
    let mut ok = Schemas::new(&tls("rim", "s3cret")).expect("client");
    assert!(ok.get(1).is_ok(), "{:?}", ok.get(1).err());
    // By name too: localhost is in the certificate.
    let mut by_name = Schemas::new(&BridgeConfig {
        schema_registry_url: format!("https://localhost:{}", reg.port),
        ..tls("rim", "s3cret")
    })
    .expect("client");
    assert!(by_name.get(1).is_ok(), "{:?}", by_name.get(1).err());

    let err = Schemas::new(&tls("rim", "wrong"))
        .expect("client")
        .get(1)
        .expect_err("401");
    assert!(matches!(err, RegistryError::Refused(_)), "{err}");
    assert!(err.to_string().contains("HTTP 401"), "{err}");
    assert!(err.is_transient());

    // Mozilla's roots do not know the test CA: the TLS handshake fails, and says so.
    let untrusted = BridgeConfig {
        registry_ca_file: String::new(),
        ..tls("rim", "s3cret")
    };
    let err = Schemas::new(&untrusted).expect("client").get(1).expect_err("untrusted");
    assert!(matches!(err, RegistryError::Unreachable(_)), "{err}");
    // And plain http to a TLS port is an error too, not a hang.
    let plain = BridgeConfig {
        schema_registry_url: format!("http://127.0.0.1:{}", reg.port),
        ..tls("rim", "s3cret")
    };
    assert!(Schemas::new(&plain).expect("client").get(1).is_err());
}

#[test]
fn bearer_tokens_and_missing_credentials() {
    let dir = TempDir::new("registry-bearer");
    let reg = Registry::start(dir.path(), &["--bearer", "tok-123"]);
    let url = format!("http://127.0.0.1:{}", reg.port);
    let mut ok = Schemas::new(&BridgeConfig {
        registry_bearer_token: "tok-123".into(),
        ..config(url.clone())
    })
    .expect("client");
    assert!(ok.get(1).is_ok());
    let err = Schemas::new(&config(url))
        .expect("client")
        .get(1)
        .expect_err("no token");
    assert!(matches!(err, RegistryError::Refused(_)), "{err}");
}

#[test]
fn unknown_ids_are_asked_once_while_negatively_cached() {
    let dir = TempDir::new("registry-neg");
    let reg = Registry::start(dir.path(), &[]);
    let mut schemas = Schemas::new(&config(format!("http://127.0.0.1:{}", reg.port))).expect("client");
    assert!(schemas.get(1).is_ok());
    for _ in 0..50 {
        assert_eq!(schemas.get(1234).expect_err("unknown"), RegistryError::UnknownId(1234));
        assert!(schemas.get(1).is_ok());
    }
    // One lookup for id 1 (cached from then on), one for 1234 (negatively cached).
    assert_eq!(reg.lookups(), 2);
}

#[test]
fn answers_that_are_not_schemas_are_clear_errors() {
    let dir = TempDir::new("registry-bad");
    let reg = Registry::start(dir.path(), &[]);
    let mut schemas = Schemas::new(&BridgeConfig {
        registry_timeout_ms: 500,
        ..config(format!("http://127.0.0.1:{}", reg.port))
    })
    .expect("client");
    let not_json = schemas.get(666).expect_err("not json");
    assert!(matches!(not_json, RegistryError::BadResponse(_)), "{not_json}");
    let huge = schemas.get(667).expect_err("too large");
    assert!(matches!(huge, RegistryError::BadResponse(_)), "{huge}");
    // The total timeout ends a request that never answers; it may pass, so it is retried.
    let stalled = schemas.get(668).expect_err("stalled");
    assert!(stalled.is_transient(), "{stalled}");
    assert!(stalled.to_string().contains("/schemas/ids/668"), "{stalled}");
}
