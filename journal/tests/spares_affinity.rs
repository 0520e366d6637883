//! Guards where the spares thread runs: it is started by the first commit after open, from
//! the thread that commits, so it shares that thread's CPUs and not those of the thread
//! that opened the journal. (The daemon opens the journal on its unconfined main thread
//! and writes from a thread pinned to its cold core; a spares thread started at open ran
//! its zero fills on the busy-polling hot core.) Its own test binary: the spares thread is
//! found by name among the process's threads, and no other test may start one.

mod common;

use std::time::{Duration, Instant};

use common::{payload, TempDir};
use rim_journal::{Fs, Journal, JournalConfig};

/// The `Cpus_allowed_list` of a thread of this process (`thread-self`: the caller).
fn allowed(tid: &str) -> String {
    let path = if tid == "thread-self" {
        "/proc/thread-self/status".to_owned()
    } else {
        format!("/proc/self/task/{tid}/status")
    };
    let status = std::fs::read_to_string(path).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
        .expect("Cpus_allowed_list")
}

/// Thread ids of this process whose name starts as the spares thread's (names are cut to
/// 15 bytes).
fn spares_threads() -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/task").expect("tasks").flatten() {
        let tid = e.file_name().to_string_lossy().into_owned();
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with("rim-journal-spa") {
            out.push(tid);
        }
    }
    out
}

/// Confines the calling thread to `cpu`.
#[allow(unsafe_code)]
fn pin_to(cpu: usize) {
    // SAFETY: the set is a local, fully initialised by CPU_ZERO before CPU_SET reads it;
    // sched_setaffinity(0, ..) reads it and changes only the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity"
        );
    }
}

/// The last CPU the calling thread may run on.
#[allow(unsafe_code)]
fn last_allowed_cpu() -> usize {
    // SAFETY: as in `pin_to`; sched_getaffinity writes at most `size_of` bytes into the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .rev()
            .find(|&c| libc::CPU_ISSET(c, &set))
            .expect("some CPU is allowed")
    }
}

#[test]
fn the_spares_thread_runs_on_the_cpus_of_the_thread_that_commits() {
    let tmp = TempDir::new("spares-affinity");
    let opener = allowed("thread-self");
    let (mut j, _) = Journal::open(JournalConfig::new(tmp.path(), 1), Fs::new()).expect("open");
    assert!(spares_threads().is_empty(), "no spares thread before the first commit");
    let cpu = last_allowed_cpu();
    let (writer, spares) = std::thread::spawn(move || {
        pin_to(cpu);
        j.append(0, &payload(0, 1, 200), 1).expect("append");
        j.sync().expect("sync");
        let watchdog = Instant::now();
        let spares = loop {
            let found = spares_threads();
            if let Some(tid) = found.first() {
                break allowed(tid);
            }
            assert!(watchdog.elapsed() < Duration::from_secs(30), "no spares thread started");
            std::thread::sleep(Duration::from_millis(5));
        };
        let writer = allowed("thread-self");
        j.close().expect("close");
        (writer, spares)
    })
    .join()
    .expect("writer thread");
    assert_eq!(writer, cpu.to_string());
    assert_eq!(
        spares, writer,
        "the spares thread shares the writer's CPUs (the opener had {opener})"
    );
}

/// A background fill told to hurry (the journal is past half of its segment and the spare
/// is not ready) still writes every byte zero, and clears the flag when done; one with
/// time to spare leaves it clear.
#[test]
fn a_fill_told_to_hurry_finishes_zeroed_and_clears_the_flag() {
    use rim_journal::Storage;
    use std::sync::atomic::{AtomicBool, Ordering};
    let tmp = TempDir::new("spares-hurry");
    let len = 3 * 1024 * 1024 + 4096 + 8;
    for start_hurried in [true, false] {
        let path = tmp.path().join(format!("spare-{start_hurried}.tmp"));
        // Garbage where the file will be: a fill that skipped a chunk would leave it.
        std::fs::write(&path, vec![0xA5u8; len]).expect("garbage");
        let hurry = AtomicBool::new(start_hurried);
        Fs::new().prepare_spare(&path, len as u64, Some(&hurry)).expect("fill");
        assert!(
            !hurry.load(Ordering::Relaxed),
            "the flag is cleared once the fill is done"
        );
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes.len(), len);
        assert!(
            bytes.iter().all(|&b| b == 0),
            "every byte is zero (hurried: {start_hurried})"
        );
    }
}
