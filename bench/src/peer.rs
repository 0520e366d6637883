//! Peer processes: the other end of a two-process measurement.
//!
//! The harness re-executes its own binary as `rim-bench __peer <kind> --core N ...`
//! ([`PeerCommand::spawn`]); the child pins itself to the peer core and runs the suite's
//! peer function for `<kind>` ([`run_peer`]). The child:
//! - gets `SIGKILL` when the parent dies (`PR_SET_PDEATHSIG`, set between fork and exec; it
//!   fires when the *spawning thread* ends, so peers are spawned from the suite's own thread),
//!   and refuses to run if its parent is already gone;
//! - may inherit one file descriptor (a socket, a memfd) whose number it is told in
//!   `--endpoint`; every other descriptor of the parent is close-on-exec;
//! - writes its error, if any, to stderr, which the parent captures and puts in the row.
//!
//! The parent always reaps the child: [`PeerProcess::finish`] waits for it (bounded by the
//! timeout, then kills it), and dropping a [`PeerProcess`] kills and reaps it.

use std::io::Read as _;
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::affinity::pin_current_thread;
use crate::error::BenchError;

/// The hidden subcommand that runs a peer.
pub const PEER_SUBCOMMAND: &str = "__peer";

/// How often [`PeerProcess::finish`] looks whether the child has exited.
const REAP_POLL_INTERVAL: Duration = Duration::from_millis(1);

/// What a peer process is told on its command line.
#[derive(Debug, Clone, clap::Args)]
pub struct PeerArgs {
    /// Which peer to run, e.g. `uds-echo`.
    pub kind: String,
    /// The core to pin to.
    #[arg(long)]
    pub core: usize,
    /// How many messages to handle before saying goodbye.
    #[arg(long)]
    pub count: u64,
    /// Where to find the other end: an inherited fd number, a service name, a path.
    #[arg(long, default_value = "")]
    pub endpoint: String,
    /// How long any single wait may last, in milliseconds.
    #[arg(long)]
    pub timeout_ms: u64,
    /// The pid of the harness that spawned this peer.
    #[arg(long)]
    pub parent_pid: u32,
}

impl PeerArgs {
    /// The watchdog timeout for this peer's waits.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// A function that runs one kind of peer to completion.
pub type PeerFn = fn(&PeerArgs) -> Result<(), BenchError>;

/// The peer side of `__peer`: checks the parent is alive, pins, runs `run`.
pub fn run_peer(args: &PeerArgs, run: PeerFn) -> Result<(), BenchError> {
    // SAFETY: getppid has no preconditions and cannot fail.
    let parent_pid = unsafe { libc::getppid() };
    if u32::try_from(parent_pid).ok() != Some(args.parent_pid) {
        return Err(BenchError::PeerGone {
            waiting_for: "the parent that spawned this peer (it had already exited)",
        });
    }
    pin_current_thread(args.core)?;
    run(args)
}

/// How to start one peer process.
#[derive(Debug)]
pub struct PeerCommand {
    kind: String,
    core: usize,
    count: u64,
    endpoint: String,
    timeout: Duration,
    inherit_fd: Option<OwnedFd>,
}

impl PeerCommand {
    /// A peer of `kind` on `core` that handles `count` messages, each wait bounded by
    /// `timeout`.
    pub fn new(kind: impl Into<String>, core: usize, count: u64, timeout: Duration) -> Self {
        Self {
            kind: kind.into(),
            core,
            count,
            endpoint: String::new(),
            timeout,
            inherit_fd: None,
        }
    }

    /// Tells the peer where the other end is.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into();
        self
    }

    /// Hands `fd` to the peer (same number in the child; put it in the endpoint). The
    /// parent's copy is closed once the child is started.
    pub fn inherit(mut self, fd: OwnedFd) -> Self {
        self.inherit_fd = Some(fd);
        self
    }

    /// Starts the peer.
    pub fn spawn(self) -> Result<PeerProcess, BenchError> {
        let exe = std::env::current_exe().map_err(|source| BenchError::Io {
            what: "finding the harness binary to re-execute as a peer",
            source,
        })?;
        let mut command = Command::new(exe);
        command
            .arg(PEER_SUBCOMMAND)
            .arg(&self.kind)
            .arg("--core")
            .arg(self.core.to_string())
            .arg("--count")
            .arg(self.count.to_string())
            .arg("--endpoint")
            .arg(&self.endpoint)
            .arg("--timeout-ms")
            .arg(self.timeout.as_millis().to_string())
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let inherit_raw = self.inherit_fd.as_ref().map(|fd| fd.as_raw_fd());
        // SAFETY: the closure runs in the forked child before exec; it only makes the
        // async-signal-safe calls prctl and fcntl, and allocates nothing.
        unsafe {
            command.pre_exec(move || prepare_child(inherit_raw));
        }
        let child = command.spawn().map_err(|source| BenchError::Io {
            what: "spawning a peer process",
            source,
        })?;
        // `self.inherit_fd` (the parent's copy of the child's end) closes here.
        Ok(PeerProcess {
            kind: self.kind,
            child: Some(child),
            timeout: self.timeout,
        })
    }
}

/// Runs in the forked child: die with the parent, and keep the inherited fd across exec.
fn prepare_child(inherit_fd: Option<RawFd>) -> std::io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; it changes only this process.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if let Some(fd) = inherit_fd {
        // SAFETY: `fd` is open (the parent holds it until after spawn); clearing its
        // descriptor flags only drops FD_CLOEXEC in this child's descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A running peer process. Dropping it kills and reaps the child.
#[derive(Debug)]
pub struct PeerProcess {
    kind: String,
    child: Option<Child>,
    timeout: Duration,
}

impl PeerProcess {
    /// Whether the child has exited (without reaping it, so [`finish`](Self::finish) still
    /// gets its status).
    pub fn has_exited(&self) -> bool {
        let Some(child) = &self.child else {
            return true;
        };
        let pid: libc::id_t = child.id();
        // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: `info` is a valid, writable siginfo_t; WNOWAIT leaves the child waitable.
        let rc = unsafe { libc::waitid(libc::P_PID, pid, &mut info, flags) };
        // SAFETY: waitid filled `info` (or left it zeroed); si_pid reads the pid field,
        // which is 0 when no child has changed state.
        rc != 0 || unsafe { info.si_pid() } != 0
    }

    /// Kills the child now (it is reaped by [`finish`](Self::finish) or on drop).
    pub fn kill(&mut self) {
        if let Some(child) = &mut self.child {
            // An error means it has already exited, which is what we want.
            let _ = child.kill();
        }
    }

    /// Waits for the child to exit (at most the timeout, then kills it) and turns a bad
    /// exit into an error carrying the child's stderr.
    pub fn finish(mut self) -> Result<(), BenchError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let Some(status) = wait_bounded(&mut child, self.timeout)? else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::PeerHung {
                kind: self.kind.clone(),
                timeout: self.timeout,
            });
        };
        if status.success() {
            return Ok(());
        }
        Err(BenchError::PeerFailed {
            kind: self.kind.clone(),
            status: status.to_string(),
            stderr: read_stderr(&mut child),
        })
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The child's exit status, or `None` if it is still running after `timeout`.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>, BenchError> {
    let started = Instant::now();
    loop {
        let status = child.try_wait().map_err(|source| BenchError::Io {
            what: "waiting for a peer process",
            source,
        })?;
        if status.is_some() || started.elapsed() > timeout {
            return Ok(status);
        }
        std::thread::sleep(REAP_POLL_INTERVAL);
    }
}

/// Whatever the exited child wrote to stderr (lossy UTF-8; empty if unreadable).
fn read_stderr(child: &mut Child) -> String {
    let mut bytes = Vec::new();
    if let Some(stderr) = &mut child.stderr {
        let _ = stderr.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}
