//! Guards where the journal's commit threads run: the daemon makes the journal on its main
//! thread, moves it to the journal thread and confines the committer to the cold core;
//! every commit thread must follow, also one asked again after it started. Its own test
//! binary: the commit threads are found by name among the process's threads, and no other
//! test may start any.

mod common;

use std::time::{Duration, Instant};

use common::{payload, TempDir};
use rim_journal::{Fs, Journal, JournalConfig, Storage, SyncMethod};

/// This process's commit threads and the CPUs each may run on (`Cpus_allowed_list`).
fn commit_threads() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("tasks").flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("rim-journal-io") {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|c| c.trim().to_owned())
            .unwrap_or_default();
        out.push((comm.trim().to_owned(), cpus));
    }
    out
}

/// The CPUs this process may run on.
#[allow(unsafe_code)]
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is a plain bit array (all-zero is the empty set); sched_getaffinity
    // writes at most `size_of` bytes into it and keeps no pointer.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Waits (a thread that has not run yet moves when it first does) until every commit
/// thread may run on `cpu` alone.
fn all_on(cpu: usize) -> Vec<(String, String)> {
    let want = cpu.to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let threads = commit_threads();
        if (!threads.is_empty() && threads.iter().all(|(_, c)| *c == want)) || Instant::now() > deadline {
            return threads;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_commit_threads_run_where_they_are_confined() {
    let cpus = allowed_cpus();
    let (first, last) = (cpus[0], cpus[cpus.len() - 1]);
    let tmp = TempDir::new("confine");
    let fs = Fs::new();
    assert_eq!(fs.sync_method(), SyncMethod::Threads);
    let (mut j, _) = Journal::open(JournalConfig::new(tmp.path(), 1), fs).expect("open");
    std::thread::spawn(move || {
        // Before the first commit, as the daemon's journal thread does: the threads start
        // at that commit and take the CPUs asked for.
        j.confine_io_workers(&[first]).expect("confine");
        j.append(0, &payload(0, 1, 300), 1).expect("append");
        j.sync().expect("sync");
        assert_eq!(j.durable(0), j.end(0));
        let threads = all_on(first);
        assert!(!threads.is_empty(), "no commit threads");
        for (name, on) in &threads {
            assert_eq!(*on, first.to_string(), "{name} runs on CPUs {on}, not {first}");
        }
        // Asked again once they run, they move again, and commits still land.
        j.confine_io_workers(&[last]).expect("confine again");
        j.append(0, &payload(1, 2, 300), 2).expect("append");
        j.sync().expect("sync");
        assert_eq!(j.durable(0), j.end(0));
        for (name, on) in &all_on(last) {
            assert_eq!(*on, last.to_string(), "{name} runs on CPUs {on}, not {last}");
        }
    })
    .join()
    .expect("the confining thread");
}
