//! One daemon per directory: an `flock`ed `rimd.lock` holding the owner's pid, used for the
//! run directory and for the data directory.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

/// What trying the lock found.
pub enum Lock {
    /// Ours, until the file is dropped.
    Held(File),
    /// Another process holds it; its pid as written in the file ("?" if unreadable).
    Busy(String),
}

/// Tries to lock `path` (created if missing) and, when it is ours, writes our pid in it.
pub fn try_lock(path: &Path) -> std::io::Result<Lock> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid: String = pid.trim().chars().take(16).collect();
            return Ok(Lock::Busy(if pid.is_empty() { "?".into() } else { pid }));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(Lock::Held(file))
}
