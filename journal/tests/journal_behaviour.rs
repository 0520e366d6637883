//! Guards the journal's everyday contract on the real file system: positions across
//! rotation, retention by age and by size, readers from any record start (and refusing
//! positions inside records), polling a growing journal, list_streams, config checks.

mod common;

use std::time::Instant;

use common::{payload, read_all, TempDir};
use rim_journal::frame::encoded_len;
use rim_journal::{list_streams, Fs, Journal, JournalConfig, JournalError, Reader};

fn small_cfg(tmp: &TempDir, streams: u32) -> JournalConfig {
    let mut c = JournalConfig::new(tmp.path(), streams);
    c.segment_bytes = 64 * 1024;
    c
}

fn seg_count(tmp: &TempDir, p: u32) -> usize {
    std::fs::read_dir(tmp.path().join(format!("s{p:03}")))
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        })
        .count()
}

#[test]
fn positions_are_contiguous_across_rotation_and_reopen() {
    let tmp = TempDir::new("rotate");
    let (mut j, rec) = Journal::open(small_cfg(&tmp, 2), Fs::new()).expect("open");
    assert_eq!(rec.streams.len(), 2);
    let mut expect = 0;
    let mut written = Vec::new();
    for seq in 0..200 {
        let data = payload(1, seq, 1000 + seq as usize);
        let pos = j.append(1, &data, seq).expect("append");
        assert_eq!(pos, expect, "start positions are contiguous");
        expect += encoded_len(data.len()) as u64;
        written.push((pos, data));
    }
    assert_eq!(j.end(1), expect);
    assert!(j.durable(1) < j.end(1));
    let report = j.sync().expect("sync");
    assert_eq!(j.durable(1), j.end(1));
    assert!(report.files >= 1 && report.bytes > 0, "{report:?}");
    assert!(seg_count(&tmp, 1) > 3, "rotated into several segments");
    assert_eq!(j.end(0), 0);
    j.close().expect("close");
    let (j, rec) = Journal::open(small_cfg(&tmp, 2), Fs::new()).expect("reopen");
    assert_eq!(
        rec.streams[1].segments_scanned, 1,
        "sealed segments are not rescanned: {rec:?}"
    );
    assert_eq!(rec.streams[1].cut_at, None);
    assert_eq!(j.end(1), expect);
    assert_eq!(read_all(tmp.path(), 1, 0, Fs::new()), written);
    // Too large and empty payloads are refused with the numbers.
    let mut j = j;
    let big = vec![1u8; j.record_bytes_max() + 1];
    let e = j.append(1, &big, 0).expect_err("too large");
    assert!(matches!(e, JournalError::RecordTooLarge { .. }), "{e}");
    assert!(j.append(1, &[], 0).is_err());
    assert!(matches!(
        j.append(9, b"x", 0),
        Err(JournalError::NoStream { stream: 9, streams: 2 })
    ));
}

#[test]
fn retention_by_size_and_by_age_removes_whole_old_segments() {
    let tmp = TempDir::new("retain");
    let mut cfg = small_cfg(&tmp, 1);
    cfg.retention_bytes = 200 * 1024;
    cfg.retention_ms = 10_000;
    let (mut j, _) = Journal::open(cfg.clone(), Fs::new()).expect("open");
    for seq in 0..400u64 {
        j.append(0, &payload(0, seq, 2000), 1_000 + seq).expect("append");
        if seq % 10 == 0 {
            j.sync().expect("sync");
        }
    }
    j.sync().expect("sync");
    j.sync().expect("seal");
    let before = seg_count(&tmp, 0);
    let r = j.retain(1_000).expect("retain by size");
    assert!(r.segments_removed > 0, "{r:?}");
    assert!(j.end(0) - j.start(0) <= cfg.retention_bytes + cfg.segment_bytes);
    assert_eq!(seg_count(&tmp, 0), before - r.segments_removed as usize);
    // A reader from 0 starts at the oldest retained record.
    let mut rd = Reader::open(tmp.path(), 0, 0, Fs::new()).expect("reader");
    assert_eq!(rd.position(), j.start(0));
    let first = rd.next().expect("next").expect("a record");
    assert_eq!(first.0, j.start(0));
    // By age: everything sealed is older than 10 s at t = 1_000_000; the active stays.
    let r = j.retain(1_000_000).expect("retain by age");
    assert!(r.segments_removed > 0);
    assert_eq!(seg_count(&tmp, 0), 1, "only the active segment is left");
    // Not yet old enough, and under the size limit: nothing removed.
    for seq in 0..40u64 {
        j.append(0, &payload(0, seq, 2000), 2_000_000 + seq).expect("append");
    }
    j.sync().expect("sync");
    j.sync().expect("seal");
    assert_eq!(j.retain(2_000_050).expect("retain").segments_removed, 0);
}

#[test]
fn reader_from_middle_before_start_inside_record_and_past_end() {
    let tmp = TempDir::new("reader");
    let (mut j, _) = Journal::open(small_cfg(&tmp, 1), Fs::new()).expect("open");
    let mut written = Vec::new();
    for seq in 0..120 {
        let data = payload(0, seq, 700);
        written.push((j.append(0, &data, seq).expect("append"), data));
    }
    j.sync().expect("sync");
    for i in [0usize, 1, 50, 90, 119] {
        let back = read_all(tmp.path(), 0, written[i].0, Fs::new());
        assert_eq!(back, written[i..].to_vec(), "from record {i}");
    }
    let end = j.end(0);
    assert!(read_all(tmp.path(), 0, end, Fs::new()).is_empty());
    let e = Reader::open(tmp.path(), 0, written[50].0 + 8, Fs::new()).expect_err("inside a record");
    assert!(
        matches!(e, JournalError::NotRecordStart { before, .. } if before == written[50].0),
        "{e}"
    );
    let e = Reader::open(tmp.path(), 0, end + 8, Fs::new()).expect_err("past the end");
    assert!(matches!(e, JournalError::PastEnd { .. }), "{e}");
}

#[test]
fn a_reader_polls_a_growing_journal_across_rotations() {
    let tmp = TempDir::new("poll");
    let (mut j, _) = Journal::open(small_cfg(&tmp, 1), Fs::new()).expect("open");
    let mut r = Reader::open(tmp.path(), 0, 0, Fs::new()).expect("reader");
    assert!(r.next().expect("next").is_none());
    let mut seen = 0u64;
    for round in 0..30u64 {
        // A reader sees what a commit wrote (same page cache), before any sync; what is
        // still in the journal's buffer it does not see.
        for k in 0..20 {
            j.append(0, &payload(0, round * 20 + k, 900), 0).expect("append");
        }
        let before = r.position();
        assert!(
            r.next().expect("next").is_none(),
            "buffered frames are not in the file yet"
        );
        assert_eq!(r.position(), before);
        j.sync().expect("sync");
        while let Some((pos, data)) = r.next().expect("next") {
            assert_eq!(data, payload(0, seen, 900).as_slice(), "record {seen} at {pos}");
            seen += 1;
        }
        assert_eq!(seen, (round + 1) * 20);
        assert_eq!(r.position(), j.end(0));
    }
    assert!(seg_count(&tmp, 0) > 5);
}

#[test]
fn list_streams_and_config_checks() {
    let tmp = TempDir::new("list");
    let (j, _) = Journal::open(small_cfg(&tmp, 4), Fs::new()).expect("open");
    assert_eq!(j.streams(), 4);
    drop(j);
    std::fs::create_dir_all(tmp.path().join("not-a-stream")).expect("mkdir");
    assert_eq!(list_streams(tmp.path()).expect("list"), vec![0, 1, 2, 3]);
    // Fewer streams than on disk is refused; segment sizes out of range too.
    let e = Journal::open(small_cfg(&tmp, 3), Fs::new()).expect_err("shrink");
    assert!(e.to_string().contains("stream 3"), "{e}");
    let mut c = small_cfg(&tmp, 4);
    c.segment_bytes = 1024;
    assert!(matches!(
        Journal::open(c.clone(), Fs::new()),
        Err(JournalError::Config(_))
    ));
    c.segment_bytes = 2 << 30;
    assert!(matches!(Journal::open(c, Fs::new()), Err(JournalError::Config(_))));
    let d = JournalConfig::new(tmp.path(), 12);
    assert_eq!((d.segment_bytes, d.retention_ms), (64 << 20, 7 * 24 * 3600 * 1000));
    assert_eq!(d.retention_bytes, 16 << 30);
}

#[test]
fn fdatasync_fallback_works_too() {
    let tmp = TempDir::new("fallback");
    let (mut j, _) = Journal::open(small_cfg(&tmp, 2), Fs::without_commit_threads()).expect("open");
    assert_eq!(j.sync_method(), rim_journal::SyncMethod::Fdatasync);
    for p in 0..2 {
        j.append(p, b"hello", 0).expect("append");
    }
    assert_eq!(j.sync().expect("sync").files, 2);
    assert_eq!(j.durable(1), j.end(1));
}

/// Figures for the report (printed, not asserted): append cost and group-commit time.
#[test]
fn figures_append_and_sync_on_the_real_fs() {
    let tmp = TempDir::new("figures");
    let mut cfg = JournalConfig::new(tmp.path(), 12);
    cfg.segment_bytes = 8 << 20;
    let (mut j, _) = Journal::open(cfg, Fs::new()).expect("open");
    let data = vec![0x5Au8; 200];
    let n = 200_000u64;
    let t = Instant::now();
    for i in 0..n {
        j.append((i % 12) as u32, &data, i).expect("append");
    }
    let append_ns = t.elapsed().as_nanos() as f64 / n as f64;
    let t = Instant::now();
    j.sync().expect("sync");
    let big_sync = t.elapsed();
    let mut syncs = Vec::new();
    for i in 0..200u64 {
        for p in 0..12 {
            j.append(p, &data, i).expect("append");
        }
        let t = Instant::now();
        j.sync().expect("sync");
        syncs.push(t.elapsed().as_micros());
    }
    syncs.sort_unstable();
    eprintln!(
        "figures: method {:?}; append {append_ns:.0} ns/record (200 B); first sync of {} MB {:?}; \
         12-stream group commit p50 {} us p99 {} us",
        j.sync_method(),
        n * 208 / 1_000_000,
        big_sync,
        syncs[syncs.len() / 2],
        syncs[syncs.len() * 99 / 100]
    );
}
