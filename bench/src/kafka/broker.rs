//! The suite's own Kafka broker: tansu (Kafka protocol, in-memory storage) from the venv
//! `scripts/pyenv.sh` builds, on a free loopback port, with the inbound topic and its DLQ
//! created. The same broker and start-up as `tests/kafka.rs`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::BenchError;

/// Partitions of the inbound topic (as `scripts/kafka.sh` and the tests create it).
pub const PARTITIONS: u32 = 12;

/// The inbound topic of the bridge (its default `bridge.in_topic`).
pub const IN_TOPIC: &str = "rim.fast-path";

/// The `broker-floor` row's topic: the same messages, read by a plain consumer, not rimd.
pub const FLOOR_TOPIC: &str = "rim.floor";

/// Topics created at start: the inbound topic and its dead-letter topic (a message the
/// bridge cannot decode goes there, and must not fail for want of the topic), and the
/// floor's.
const TOPICS: [&str; 3] = [IN_TOPIC, "rim.fast-path.dlq", FLOOR_TOPIC];

/// How long the broker may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running tansu broker; killed on drop.
pub struct Broker {
    tansu: PathBuf,
    port: u16,
    child: Child,
    log: PathBuf,
}

/// The venv's directory: `RIM_PYENV`, or `target/pyenv-kafka` in the workspace.
fn venv() -> PathBuf {
    std::env::var_os("RIM_PYENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv-kafka"))
}

/// The tansu binary, or an error that says how to get it.
pub fn tansu_binary() -> Result<PathBuf, BenchError> {
    let dir = venv();
    let tansu = dir.join("bin/tansu");
    if tansu.exists() {
        return Ok(tansu);
    }
    Err(BenchError::Setup(format!(
        "no Kafka broker at {}: run scripts/pyenv.sh first (it installs tansu into {}; RIM_PYENV overrides the venv)",
        tansu.display(),
        dir.display()
    )))
}

/// A loopback port free right now (bound, then released for the broker to bind).
fn free_port() -> Result<u16, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| BenchError::Io {
        what: "finding a free port for the broker",
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| BenchError::Io {
        what: "finding a free port for the broker",
        source,
    })?;
    Ok(addr.port())
}

impl Broker {
    /// The broker's process id (for its CPU time, [`super::cpu`]).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts a broker (log in `dir`), waits until it answers, creates the topics.
    pub fn start(dir: &Path) -> Result<Self, BenchError> {
        let tansu = tansu_binary()?;
        let port = free_port()?;
        let log = dir.join("broker.log");
        let child = spawn(&tansu, port, &log)?;
        let mut broker = Self {
            tansu,
            port,
            child,
            log,
        };
        broker.wait_ready()?;
        for topic in TOPICS {
            broker.create_topic(topic)?;
        }
        Ok(broker)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// The broker's log so far (for errors).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ready once it answers a Kafka request (a topic listing), not merely accepts TCP.
    fn wait_ready(&mut self) -> Result<(), BenchError> {
        let started = Instant::now();
        loop {
            let answered = Command::new(&self.tansu)
                .args(["topic", "list", "--broker", &self.url()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if answered {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::PeerFailed {
                    kind: "tansu".into(),
                    status: status.to_string(),
                    stderr: self.log_text(),
                });
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(BenchError::Timeout {
                    waiting_for: "the Kafka broker to answer",
                    timeout: START_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn create_topic(&self, topic: &str) -> Result<(), BenchError> {
        let out = Command::new(&self.tansu)
            .args(["topic", "create", "--broker", &self.url(), "--partitions"])
            .arg(PARTITIONS.to_string())
            .arg(topic)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| BenchError::Io {
                what: "running tansu topic create",
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        Err(BenchError::Setup(format!(
            "creating topic {topic}: {} {}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `tansu broker` on `port`, dying with the harness, free to run on every core
/// (the harness thread that spawns it may be pinned; an outside broker would not be).
fn spawn(tansu: &Path, port: u16, log: &Path) -> Result<Child, BenchError> {
    let io = |what: &'static str| move |source| BenchError::Io { what, source };
    let out = std::fs::File::create(log).map_err(io("creating the broker log"))?;
    let err = out.try_clone().map_err(io("creating the broker log"))?;
    let url = format!("tcp://127.0.0.1:{port}");
    let mut cmd = Command::new(tansu);
    cmd.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        // `RUST_LOG` set for the daemon is not the broker's: at debug, tansu's log filled
        // 57 GB of disk within a minute of a run.
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    crate::affinity::child_of_harness(&mut cmd);
    cmd.spawn().map_err(io("spawning the tansu broker"))
}
