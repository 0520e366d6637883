//! A real rimd daemon for the `reflex` and `ingest` suites: a child process (this binary
//! re-executed as `rim-bench __daemon`, which runs `rimd::daemon::run`, the same code as the
//! `rimd` binary's `main` after argument parsing) with its own run directory, rule file and
//! settings. It dies with the harness (`PR_SET_PDEATHSIG`) and is stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rim_stats::{Snapshot, StatsReader};

use crate::error::BenchError;

/// The hidden subcommand that runs the daemon.
pub const DAEMON_SUBCOMMAND: &str = "__daemon";

/// A running daemon.
pub struct DaemonProc {
    child: Child,
    /// Its run directory.
    pub run_dir: PathBuf,
}

impl DaemonProc {
    /// Starts a daemon with `rules` and `--set` overrides; returns once its control socket
    /// and stats segment answer.
    pub fn start(rules: &str, sets: &[String], timeout: Duration) -> Result<Self, BenchError> {
        let run_dir = std::env::temp_dir().join(format!("rim-bench-{}-{}", std::process::id(), unique()));
        let io = |what: &'static str| move |source| BenchError::Io { what, source };
        std::fs::create_dir_all(&run_dir).map_err(io("creating the daemon's run directory"))?;
        let rules_path = run_dir.join("rules.toml");
        std::fs::write(&rules_path, rules).map_err(io("writing the daemon's rule file"))?;
        let log = std::fs::File::create(run_dir.join("rimd.log")).map_err(io("creating the daemon log"))?;
        let exe = std::env::current_exe().map_err(io("finding the harness binary"))?;
        let mut cmd = Command::new(exe);
        cmd.arg(DAEMON_SUBCOMMAND)
            .arg(format!("daemon.run_dir=\"{}\"", run_dir.display()))
            .arg(format!("reflex.rules_file=\"{}\"", rules_path.display()))
            // The journal and store live with the run (a suite that keeps them across
            // restarts sets its own data_dir, which comes later and wins).
            .arg(format!("persist.data_dir=\"{}\"", run_dir.join("data").display()))
            // A port of its own (the bound address is in {run_dir}/http.addr).
            .arg("api.listen=\"127.0.0.1:0\"")
            .args(sets)
            // Last, so an experiment's settings win over the suite's.
            .args(crate::workload::experiment_sets())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        crate::affinity::child_of_harness(&mut cmd);
        let child = cmd.spawn().map_err(io("spawning the daemon"))?;
        let mut d = Self { child, run_dir };
        d.wait_ready(timeout)?;
        Ok(d)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), BenchError> {
        let started = Instant::now();
        loop {
            if self.socket().exists() && self.stats().is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::PeerFailed {
                    kind: "rimd".into(),
                    status: status.to_string(),
                    stderr: self.log(),
                });
            }
            if started.elapsed() > timeout {
                return Err(BenchError::Timeout {
                    waiting_for: "the daemon to start",
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("rimd.sock")
    }

    /// The daemon's current stats.
    pub fn stats(&self) -> Result<Snapshot, BenchError> {
        let path = self.run_dir.join("stats");
        let reader = StatsReader::open(&path).map_err(|e| BenchError::transport("rimd", "stats", e))?;
        reader.read().map_err(|e| BenchError::transport("rimd", "stats", e))
    }

    /// Polls the stats until `done` says so.
    pub fn wait_stats(&self, timeout: Duration, done: impl Fn(&Snapshot) -> bool) -> Result<Snapshot, BenchError> {
        let started = Instant::now();
        loop {
            let s = self.stats()?;
            if done(&s) {
                return Ok(s);
            }
            if started.elapsed() > timeout {
                return Err(BenchError::Timeout {
                    waiting_for: "the daemon's stats",
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.run_dir.join("rimd.log")).unwrap_or_default()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no drain, no final sync or commit (a crash).
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for exit.
    pub fn stop(mut self) -> Result<(), BenchError> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill takes a pid and a signal; the child is ours and not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = self.child.wait().map_err(|source| BenchError::Io {
            what: "waiting for the daemon",
            source,
        })?;
        if !status.success() {
            return Err(BenchError::PeerFailed {
                kind: "rimd".into(),
                status: status.to_string(),
                stderr: self.log(),
            });
        }
        Ok(())
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// The slowest journal commit (start to completion) the daemon reports while it runs:
/// its stats carry the slowest commit of each one-second window (0 for a window without
/// one), so a thread of the bench reads them every [`CommitWatch::EVERY`] until
/// [`CommitWatch::stop`]. A diagnostic, to the second: a window that straddles the start
/// takes in a commit just before it, and the last window is in only if it closed before
/// the stop.
pub struct CommitWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Option<u64>>>,
}

impl CommitWatch {
    /// How often the stats are read: a tenth of a window, so none is missed.
    const EVERY: Duration = Duration::from_millis(100);

    /// Starts reading `daemon`'s stats.
    pub fn start(daemon: &DaemonProc) -> Self {
        let path = daemon.run_dir.join("stats");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let reader = StatsReader::open(&path).ok()?;
            let mut slowest = None;
            loop {
                if let Ok(s) = reader.read() {
                    let commit = s.counters.get("persist.commit_max_ns").copied().unwrap_or(0);
                    slowest = Some(slowest.unwrap_or(0).max(commit));
                }
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    return slowest;
                }
                std::thread::park_timeout(Self::EVERY);
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops reading (at once: the thread is woken); the slowest commit seen, ns, or None
    /// when no read of the stats succeeded.
    pub fn stop(mut self) -> Option<u64> {
        self.halt()
    }

    fn halt(&mut self) -> Option<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let thread = self.thread.take()?;
        thread.thread().unpark();
        thread.join().ok().flatten()
    }
}

impl Drop for CommitWatch {
    /// A row that unwinds does not leave the thread reading.
    fn drop(&mut self) {
        self.halt();
    }
}

/// What the daemon's counters say about events held back between two snapshots: the
/// turns its reflex shards waited for room in their rings to the journal thread, and for
/// decisions in flight (not yet durable). Empty when neither happened.
pub fn holds_note(before: &Snapshot, after: &Snapshot) -> String {
    let d = |name: &str| counter_delta(before, after, name);
    let (room, in_flight) = (d("reflex.held_persist_room_turns"), d("reflex.held_in_flight_turns"));
    if room == 0 && in_flight == 0 {
        return String::new();
    }
    format!(
        "; the shards held events back {room} turns for room to the journal thread and {in_flight} for \
         decisions in flight"
    )
}

/// How much counter `name` grew from `before` to `after` (0 where it is absent).
pub fn counter_delta(before: &Snapshot, after: &Snapshot, name: &str) -> u64 {
    let at = |s: &Snapshot| s.counters.get(name).copied().unwrap_or(0);
    at(after).saturating_sub(at(before))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// `rim-bench __daemon KEY=VALUE...`: runs the daemon with these settings.
pub fn daemon_main(sets: &[String]) -> Result<(), BenchError> {
    let config = rimd::config::Config::load(None::<&Path>, std::env::vars(), sets)
        .map_err(|e| BenchError::transport("rimd", "config", e))?;
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    rimd::daemon::run(config).map_err(|e| BenchError::transport("rimd", "run", e))
}
