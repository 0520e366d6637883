//! Is the process on the other side of a ring still there?
//!
//! A pid alone is not enough: an exited but unreaped child still answers `kill(pid, 0)`,
//! and pids are reused. [`PidWatch`] holds a pidfd, which becomes readable exactly when
//! that process (not a later one with the same number) exits. Where pidfds are missing
//! (kernels before 5.3), it falls back to `kill(pid, 0)`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What is known about a peer process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// The process exists.
    Alive,
    /// The process has exited.
    Dead,
    /// No pid is known for the peer yet.
    Unknown,
}

/// Watches one process for exit.
#[derive(Debug)]
pub struct PidWatch {
    pid: u32,
    pidfd: Option<OwnedFd>,
}

impl PidWatch {
    /// Starts watching `pid`. Call this while the process is known to be alive (for
    /// example right after reading it from `SO_PEERCRED`), so the pidfd names the right one.
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            pidfd: pidfd_open(pid),
        }
    }

    /// The watched pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process still runs (a zombie counts as dead).
    pub fn state(&self) -> PeerState {
        match &self.pidfd {
            Some(fd) => pidfd_state(fd),
            None => kill_probe(self.pid),
        }
    }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no pointers.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let raw = i32::try_from(raw).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn pidfd_state(fd: &OwnedFd) -> PeerState {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout: poll only reads and writes `pfd`.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    if rc > 0 && pfd.revents & libc::POLLIN != 0 {
        PeerState::Dead
    } else {
        PeerState::Alive
    }
}

fn kill_probe(pid: u32) -> PeerState {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return PeerState::Unknown;
    };
    if pid <= 0 {
        return PeerState::Unknown;
    }
    // SAFETY: signal 0 only checks that the process exists; it delivers nothing.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
        PeerState::Alive
    } else {
        PeerState::Dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_unreaped_child_is_dead() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let watch = PidWatch::new(child.id());
        assert_eq!(watch.state(), PeerState::Alive);
        child.kill().expect("kill");
        // Not reaped yet: a zombie. The pidfd must still say it is gone.
        let mut waited = 0;
        while watch.state() == PeerState::Alive && waited < 5_000 {
            std::thread::sleep(std::time::Duration::from_millis(1));
            waited += 1;
        }
        assert_eq!(watch.state(), PeerState::Dead);
        child.wait().expect("reap");
    }

    #[test]
    fn own_process_is_alive() {
        assert_eq!(PidWatch::new(std::process::id()).state(), PeerState::Alive);
    }
}
