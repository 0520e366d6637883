//! No other process can reach the daemon's rings through `/proc`: rimd is not dumpable,
//! so a producer of the same user cannot open `/proc/<rimd>/fd/N` (another producer's
//! memfd) or `/proc/<rimd>/mem` and write into a ring it was not given.
//!
//! The daemon and the prober run as one ordinary user: this one, or `nobody` when the
//! tests run as root (root may read any process's `/proc` entries, so it would prove
//! nothing).

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;

use common::{child_socket, ChildProc, Daemon, TempDir, SOON};

const TARGET_PID_ENV: &str = "RIMD_IT_TARGET_PID";

/// The user the daemon and the prober run as: (uid, gid), and whether to switch to it.
fn ordinary_user() -> (u32, u32, bool) {
    // SAFETY: geteuid/getuid/getgid take no arguments and cannot fail.
    let (euid, uid, gid) = unsafe { (libc::geteuid(), libc::getuid(), libc::getgid()) };
    if euid == 0 {
        (65_534, 65_534, true)
    } else {
        (uid, gid, false)
    }
}

/// Tries to open every fd of process `pid` read-write through `/proc`, and its memory.
/// Returns (fds listed, fds opened read-write, memory opened).
fn probe(pid: u32) -> (usize, usize, bool) {
    let fd_dir = format!("/proc/{pid}/fd");
    let (mut listed, mut opened) = (0, 0);
    if let Ok(entries) = std::fs::read_dir(&fd_dir) {
        for e in entries.flatten() {
            listed += 1;
            if std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(e.path())
                .is_ok()
            {
                opened += 1;
            }
        }
    }
    // Numbers the listing may not show (a denied listing): try the first few directly.
    for n in 0..64 {
        let path = format!("{fd_dir}/{n}");
        if listed == 0 && std::fs::OpenOptions::new().read(true).write(true).open(&path).is_ok() {
            opened += 1;
        }
    }
    let mem = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .is_ok();
    (listed, opened, mem)
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).expect("chown the test directory");
}

#[test]
fn another_process_of_the_same_user_cannot_open_the_daemons_rings() {
    if let Some(socket) = child_socket("prober") {
        let pid: u32 = std::env::var(TARGET_PID_ENV).expect("pid").parse().expect("pid");
        // A ring of its own first: the prober is a producer like any other.
        let _own = rim_ring::attach::attach_producer(&socket, "prober", 1 << 16).expect("attach");
        let (listed, opened, mem) = probe(pid);
        println!("listed={listed} opened={opened} mem={mem}");
        return;
    }
    let (uid, gid, switch) = ordinary_user();
    let dir = TempDir::new("proc");
    if switch {
        chown_tree(dir.path(), uid, gid);
    }
    let d = Daemon::start_with(dir, &[], Some(""), |cmd| {
        if switch {
            cmd.uid(uid).gid(gid);
        }
    });
    // Another producer's ring, which the prober must not reach.
    let _victim = d.producer("victim", 1 << 16);
    let pid = d.pid().to_string();
    let mut prober = ChildProc::spawn_with(
        "another_process_of_the_same_user_cannot_open_the_daemons_rings",
        "prober",
        d.dir(),
        &d.socket(),
        |cmd| {
            cmd.env(TARGET_PID_ENV, &pid);
            if switch {
                cmd.uid(uid).gid(gid);
            }
        },
    );
    let opened = prober.wait_reported("opened", SOON);
    let mem = prober.wait_reported("mem", SOON);
    assert_eq!(
        (opened.as_str(), mem.as_str()),
        ("0", "false"),
        "a process of the daemon's user reached its fds or memory\n{}",
        prober.log()
    );
}
