//! Guards where the spares thread runs: it is started at open (so the first spare is ready
//! before any load) and given the CPUs of the thread that commits at the first commit, so
//! it does not keep those of the thread that opened the journal. (The daemon opens the
//! journal on its unconfined main thread and writes from a thread pinned to its cold
//! core; left on the opener's CPUs, the spares thread ran its zero fills on the
//! busy-polling hot core.) Its own test binary: the spares thread is found by name among
//! the process's threads, and no other test may start one.

mod common;

use std::time::Duration;

use common::{allowed_cpus, cpus_allowed, payload, threads_named, TempDir};
use rim_journal::{Fs, Journal, JournalConfig};

/// The `Cpus_allowed_list` of the calling thread.
fn own_cpus() -> String {
    cpus_allowed(std::path::Path::new("/proc/thread-self"))
}

/// Thread ids of this process whose name starts as the spares thread's.
fn spares_threads() -> Vec<String> {
    threads_named("rim-journal-spa")
        .into_iter()
        .map(|(tid, _)| tid)
        .collect()
}

/// The `Cpus_allowed_list` of thread `tid` of this process.
fn allowed(tid: &str) -> String {
    cpus_allowed(&std::path::Path::new("/proc/self/task").join(tid))
}

/// Confines the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    assert!(
        core_affinity::set_for_current(core_affinity::CoreId { id: cpu }),
        "sched_setaffinity"
    );
}

#[test]
fn the_spares_thread_runs_on_the_cpus_of_the_thread_that_commits() {
    let tmp = TempDir::new("spares-affinity");
    let opener = own_cpus();
    let (mut j, _) = Journal::open(JournalConfig::new(tmp.path(), 1), Fs::new()).expect("open");
    let at_open = spares_threads();
    assert_eq!(at_open.len(), 1, "one spares thread from open on");
    assert_eq!(allowed(&at_open[0]), opener, "at open, the opener's CPUs");
    let cpu = *allowed_cpus().last().expect("some CPU is allowed");
    if opener == cpu.to_string() {
        eprintln!("the_spares_thread_runs_on_the_cpus_of_the_thread_that_commits: skipped, this process has one CPU");
        return;
    }
    let (writer, spares) = std::thread::spawn(move || {
        pin_to(cpu);
        j.append(0, &payload(0, 1, 200), 1).expect("append");
        j.sync().expect("sync");
        let found = spares_threads();
        assert_eq!(found.len(), 1, "still the one spares thread");
        let spares = allowed(&found[0]);
        let writer = own_cpus();
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

/// The calling thread's I/O priority (`ioprio_get`), as class << 13 | level.
#[allow(unsafe_code)]
fn io_priority() -> libc::c_long {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    // SAFETY: ioprio_get takes two integers (who = this thread) and touches no memory.
    unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0 as libc::c_long) }
}

/// A background fill writes every byte of the spare, whether it was told to hurry (the
/// journal is past half of its segment and the spare is not ready) from the start or
/// midway, and leaves its thread at the idle I/O priority, as the spares thread lives.
#[test]
fn a_fill_told_to_hurry_finishes_and_returns_to_the_idle_priority() {
    use rim_journal::Storage;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const IDLE: libc::c_long = 3 << 13;
    let tmp = TempDir::new("spares-hurry");
    let len = 16 * 1024 * 1024 + 4096 + 8;
    for case in ["from the start", "midway", "never"] {
        let path = tmp.path().join(format!("spare-{}.tmp", case.replace(' ', "-")));
        let hurry = Arc::new(AtomicBool::new(case == "from the start"));
        let flip = (case == "midway").then(|| {
            let h = hurry.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(2));
                h.store(true, Ordering::Relaxed);
            })
        });
        let fill = {
            let (path, hurry) = (path.clone(), hurry.clone());
            std::thread::spawn(move || {
                Fs::new().prepare_spare(&path, len as u64, Some(&hurry)).expect("fill");
                io_priority()
            })
        };
        let priority = fill.join().expect("fill thread");
        if let Some(f) = flip {
            f.join().expect("flip thread");
        }
        assert_eq!(
            priority, IDLE,
            "a fill ({case}) leaves its thread at the idle I/O priority"
        );
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes.len(), len, "{case}");
        assert!(bytes.iter().all(|&b| b == 0), "every byte is zero ({case})");
    }
}
