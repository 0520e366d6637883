//! Guards the sequential reader ([`Reader::open_sequential`]) on the real file system: it
//! reads segments in direct chunks with the next one read ahead, carrying a frame that
//! straddles two chunks over; it must return exactly what the plain reader returns, for
//! records of every size up to the largest, across segments (also segments whose size is
//! not whole blocks), from any record start, when dropped with a read in flight, and while
//! following a journal that grows (a chunk read ahead before the writer's append must not
//! hide it).

mod common;

use common::{on_disk, read_all, takes_direct, Rng};
use rim_journal::{Fs, Journal, JournalConfig, Pos, Reader, Storage, StorageFile, RECORD_BYTES_MAX};

fn cfg(dir: &std::path::Path) -> JournalConfig {
    sized(dir, 5 * 1024 * 1024 + 4096 * 3)
}

/// Several read-ahead chunks (1 MiB) per segment of `segment_bytes`, and several segments.
fn sized(dir: &std::path::Path, segment_bytes: u64) -> JournalConfig {
    let mut c = JournalConfig::new(dir, 1);
    c.segment_bytes = segment_bytes;
    c
}

/// Appends `n` records of random lengths (a few at the largest size), synced.
fn fill(j: &mut Journal<Fs>, rng: &mut Rng, n: usize, out: &mut Vec<(Pos, Vec<u8>)>) {
    for i in 0..n {
        let len = match rng.range(0, 99) {
            0..=2 => RECORD_BYTES_MAX,
            3..=12 => rng.range(4096, RECORD_BYTES_MAX as u64) as usize,
            _ => rng.range(1, 300) as usize,
        };
        let mut data = rng.bytes(len);
        data[0] = i as u8;
        let pos = j.append(0, &data, i as u64).expect("append");
        out.push((pos, data));
        if i % 32 == 31 {
            j.sync().expect("sync");
        }
    }
    j.sync().expect("sync");
}

fn read_sequential(dir: &std::path::Path, from: Pos) -> Vec<(Pos, Vec<u8>)> {
    let direct = takes_direct(dir);
    let mut r = Reader::open_sequential(dir, 0, from, Fs::new()).expect("open");
    let mut out = Vec::new();
    while let Some((pos, bytes)) = r.next().expect("next") {
        out.push((pos, bytes.to_vec()));
        // Where the file system takes direct I/O, the records must come from it (a
        // silent fall back to the plain reader would test nothing new).
        assert!(r.reads_direct() || !direct, "record at {pos} not read direct");
    }
    out
}

#[test]
fn reads_what_the_plain_reader_reads_from_any_record_start() {
    reads_like_the_plain_reader("ahead", 5 * 1024 * 1024 + 4096 * 3);
}

/// Segment files whose size is not whole blocks: the last direct read of each ends short.
#[test]
fn reads_segments_of_partial_blocks() {
    reads_like_the_plain_reader("ahead-partial", 5 * 1024 * 1024 + 4096 * 3 + 104);
}

fn reads_like_the_plain_reader(tag: &str, segment_bytes: u64) {
    let tmp = on_disk(tag);
    let mut rng = Rng(0xA11E ^ segment_bytes);
    let (mut j, _) = Journal::open(sized(tmp.path(), segment_bytes), Fs::new()).expect("open");
    let mut written = Vec::new();
    fill(&mut j, &mut rng, 2_500, &mut written);
    j.close().expect("close");
    let segments = std::fs::read_dir(tmp.path().join("s000")).expect("dir").count();
    assert!(segments >= 3, "several segments: {segments}");
    if takes_direct(tmp.path()) {
        let seg = std::fs::read_dir(tmp.path().join("s000"))
            .expect("dir")
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .expect("a segment");
        let f = Fs::new().open_file(&seg.path(), false).expect("open segment");
        assert!(f.direct_read_fd().is_some(), "this file system takes direct reads");
    }
    assert_eq!(read_all(tmp.path(), 0, 0, Fs::new()), written, "the plain reader");
    assert_eq!(read_sequential(tmp.path(), 0), written, "the sequential reader");
    // Dropped with a chunk in flight (the window lands it before its buffers go).
    for n in [1, 10, 300] {
        let mut r = Reader::open_sequential(tmp.path(), 0, 0, Fs::new()).expect("open");
        for (want_pos, want) in &written[..n] {
            let (pos, bytes) = r.next().expect("next").expect("a record");
            assert_eq!((pos, bytes), (*want_pos, want.as_slice()));
        }
    }
    for _ in 0..12 {
        let k = rng.range(0, written.len() as u64 - 1) as usize;
        let from = read_sequential(tmp.path(), written[k].0);
        assert_eq!(from, written[k..], "from record {k} at {}", written[k].0);
    }
}

#[test]
fn follows_a_journal_that_grows() {
    let tmp = on_disk("ahead-follow");
    let mut rng = Rng(0xF011);
    let (mut j, _) = Journal::open(cfg(tmp.path()), Fs::new()).expect("open");
    let mut written = Vec::new();
    let mut r = Reader::open_sequential(tmp.path(), 0, 0, Fs::new()).expect("open");
    let mut read = Vec::new();
    for round in 0..12 {
        fill(&mut j, &mut rng, 40 + round * 30, &mut written);
        while let Some((pos, bytes)) = r.next().expect("next") {
            read.push((pos, bytes.to_vec()));
        }
        assert_eq!(read.len(), written.len(), "round {round}: every synced record read");
        assert_eq!(read, written, "round {round}");
    }
    j.close().expect("close");
}
