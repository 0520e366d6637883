//! Guards where the journal's commit threads run: the daemon makes the journal on its main
//! thread, moves it to the journal thread and confines the committer to the cold core;
//! every commit thread must follow, also one asked again after it started. Its own test
//! binary: the commit threads are found by name among the process's threads, and no other
//! test may start any.

mod common;

use std::time::{Duration, Instant};

use common::{allowed_cpus, payload, threads_named, TempDir};
use rim_journal::{Fs, Journal, JournalConfig, Storage, SyncMethod};

/// Waits (a thread that has not run yet moves when it first does) until every commit
/// thread may run on `cpu` alone.
fn all_on(cpu: usize) -> Vec<(String, String)> {
    let want = cpu.to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let threads = threads_named("rim-journal-io");
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
