//! Guards the pipelined group commits: what is appended while commits are in flight goes
//! into the next one, up to FLIGHTS_MAX run at once, and they land in the order they
//! started (durable never runs ahead of a commit that has not landed), the buffer refuses
//! what does not fit and says how much does, and rotations take the spare segments
//! prepared ahead (zero-filled files) on the real file system, with every record read
//! back across them and after a reopen.

mod common;

use std::time::{Duration, Instant};

use common::{payload, read_all, TempDir};
use rim_journal::faulty::FaultyFs;
use rim_journal::frame::encoded_len;
use rim_journal::{Fs, Journal, JournalConfig, JournalError, BUFFER_BYTES_MIN, FLIGHTS_MAX};

#[test]
fn commits_in_flight_land_in_the_order_they_started() {
    let tmp = TempDir::new("pipelined");
    let (mut j, _) = Journal::open(JournalConfig::new(tmp.path(), 1), Fs::new()).expect("open");
    let a = j.append(0, &payload(0, 1, 500), 1).expect("append a");
    assert!(j.commit().expect("commit"), "a commit started");
    assert!(!j.commit().expect("commit"), "nothing new: no second commit");
    // Each commit carries what was appended since the one before, beside those in flight,
    // up to FLIGHTS_MAX.
    let mut ends = vec![j.end(0)];
    for i in 1..FLIGHTS_MAX {
        j.append(0, &payload(0, 1 + i as u64, 500), 1)
            .expect("append while commits run");
        ends.push(j.end(0));
        assert!(j.commit().expect("commit"), "commit {i} starts beside the others");
    }
    assert_eq!(j.flights(), FLIGHTS_MAX);
    j.append(0, &payload(0, 99, 500), 1).expect("append");
    assert!(!j.can_commit());
    assert!(!j.commit().expect("commit"), "no more than FLIGHTS_MAX in flight");
    // However long each takes and whichever reaches the disk first: durable moves to each
    // commit's end in turn, never past one that has not landed.
    let watchdog = Instant::now();
    for (i, &end) in ends.iter().enumerate() {
        loop {
            if j.complete(Some(Duration::from_millis(100)))
                .expect("complete")
                .is_some()
            {
                break;
            }
            assert!(
                watchdog.elapsed() < Duration::from_secs(60),
                "commit {i} never completed"
            );
        }
        assert_eq!(j.durable(0), end, "after commit {i} lands, durable is its end");
    }
    assert!(j.durable(0) > a);
    assert!(j.commit().expect("commit"), "the last record's commit starts");
    j.sync().expect("sync");
    assert_eq!(j.durable(0), j.end(0));
    let back = read_all(tmp.path(), 0, 0, Fs::new());
    assert_eq!(back.len(), FLIGHTS_MAX + 1);
}

#[test]
fn a_full_buffer_refuses_and_room_says_how_much_fits() {
    let mut cfg = JournalConfig::new("/buffer", 1);
    cfg.buffer_bytes = BUFFER_BYTES_MIN;
    let (mut j, _) = Journal::open(cfg, FaultyFs::reliable()).expect("open");
    assert_eq!(j.room(0), BUFFER_BYTES_MIN);
    let rec = payload(0, 0, 1000);
    let mut n = 0u64;
    loop {
        let room = j.room(0);
        match j.append(0, &rec, 1) {
            Ok(_) => {
                assert!(room >= encoded_len(rec.len()));
                assert_eq!(j.room(0), room - encoded_len(rec.len()));
                n += 1;
            }
            Err(JournalError::BufferFull { need, room: r, .. }) => {
                assert!(r < need, "refused though it fit");
                assert_eq!(r, room);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(n > 10);
    j.commit().expect("commit");
    assert_eq!(
        j.room(0),
        BUFFER_BYTES_MIN,
        "the next buffer is empty while one is in flight"
    );
    j.complete(Some(Duration::from_secs(1))).expect("complete");
    assert_eq!(j.durable(0), j.end(0));
}

#[test]
fn rotations_take_spares_prepared_ahead_and_records_survive_a_reopen() {
    let tmp = TempDir::new("spares");
    let mut cfg = JournalConfig::new(tmp.path(), 1);
    cfg.segment_bytes = 256 * 1024;
    let mut written = Vec::new();
    {
        let (mut j, _) = Journal::open(cfg.clone(), Fs::new()).expect("open");
        for round in 0..6u64 {
            // Give the spare thread its time (a background zero fill), then fill a segment.
            let watchdog = Instant::now();
            while !j.spare_ready(0) {
                std::thread::sleep(Duration::from_millis(5));
                assert!(watchdog.elapsed() < Duration::from_secs(60), "no spare was prepared");
            }
            for k in 0..60u64 {
                let p = payload(0, round * 100 + k, 4000);
                let pos = j.append(0, &p, 1).expect("append");
                written.push((pos, p));
            }
            j.sync().expect("sync");
        }
        let (used, missed) = j.spares();
        assert_eq!((used, missed), (5, 0), "every rotation took a spare");
        j.close().expect("close");
    }
    let (j, _) = Journal::open(cfg, Fs::new()).expect("reopen");
    assert_eq!(j.end(0), j.durable(0));
    assert_eq!(read_all(tmp.path(), 0, 0, Fs::new()), written);
}
