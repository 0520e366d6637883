//! Guards torn-tail detection: a last record cut at any byte, or with any bit flipped
//! (header or payload), is always detected and cut at reopen, every earlier record stays
//! intact, and garbage segment files or headers give clear errors, never a panic.

mod common;

use std::path::Path;

use common::{payload, read_all, Rng, TempDir};
use rim_journal::faulty::FaultyFs;
use rim_journal::frame::{encoded_len, FRAME_HEADER_BYTES};
use rim_journal::segment::{segment_name, stream_dir, HEADER_BYTES};
use rim_journal::storage::StorageFile;
use rim_journal::{Fs, Journal, JournalConfig, JournalError, Pos, Reader, Storage};

const DIR: &str = "/j";

fn cfg(dir: &Path) -> JournalConfig {
    let mut c = JournalConfig::new(dir, 1);
    c.segment_bytes = 64 * 1024;
    c
}

/// A journal of `n` records on `storage`, synced; returns the records.
fn write_journal<S: Storage>(storage: S, dir: &Path, n: u64) -> Vec<(Pos, Vec<u8>)> {
    let (mut j, _) = Journal::open(cfg(dir), storage).expect("open");
    let mut out = Vec::new();
    for seq in 0..n {
        let p = payload(0, seq, 20 + (seq as usize * 13) % 50);
        let pos = j.append(0, &p, seq).expect("append");
        out.push((pos, p));
    }
    j.sync().expect("sync");
    out
}

fn seg_path(dir: &Path) -> std::path::PathBuf {
    stream_dir(dir, 0).join(segment_name(0))
}

/// Applies `damage` to a copy of `pristine` and checks that reopening cuts exactly the
/// last record and keeps the rest.
fn check_cut(pristine: &FaultyFs, records: &[(Pos, Vec<u8>)], damage: impl FnOnce(&mut <FaultyFs as Storage>::File)) {
    let fs = pristine.crash(0); // everything was synced: an exact copy
    let dir = Path::new(DIR);
    let mut file = fs.open_file(&seg_path(dir), true).expect("open seg");
    damage(&mut file);
    drop(file);
    let (last_pos, _) = records.last().expect("records");
    let (j, rec) = Journal::open(cfg(dir), fs.clone()).expect("reopen after damage");
    assert_eq!(j.end(0), *last_pos, "the damaged record must be gone");
    assert_eq!(rec.streams[0].end, *last_pos);
    assert_eq!(rec.streams[0].cut_at, Some(*last_pos), "{rec:?}");
    assert!(rec.streams[0].torn_bytes > 0);
    let back = read_all(dir, 0, 0, fs);
    assert_eq!(back, records[..records.len() - 1].to_vec(), "earlier records intact");
}

#[test]
fn truncated_last_record_is_cut_at_every_offset() {
    let pristine = FaultyFs::reliable();
    let records = write_journal(pristine.clone(), Path::new(DIR), 12);
    let (last_pos, last) = records.last().expect("records").clone();
    let off = HEADER_BYTES + last_pos;
    let frame_len = (FRAME_HEADER_BYTES + last.len()) as u64;
    // Writes land in order; a torn write leaves a prefix of the frame (k bytes), the rest
    // never written (zero). k = 0 is "never written": nothing to cut.
    for k in 1..frame_len {
        check_cut(&pristine, &records, |f| {
            f.zero_range(off + k, frame_len - k).expect("zero");
        });
    }
    // And the other order (payload landed, header not), the way `append` writes.
    for k in 0..FRAME_HEADER_BYTES as u64 {
        check_cut(&pristine, &records, |f| {
            f.zero_range(off + k, 1).expect("zero");
            f.zero_range(off, FRAME_HEADER_BYTES as u64).expect("zero");
        });
    }
}

#[test]
fn every_flipped_bit_of_the_last_record_is_detected() {
    let pristine = FaultyFs::reliable();
    let records = write_journal(pristine.clone(), Path::new(DIR), 9);
    let (last_pos, last) = records.last().expect("records").clone();
    let off = HEADER_BYTES + last_pos;
    let covered = FRAME_HEADER_BYTES + last.len(); // length, CRC, payload
    for byte in 0..covered as u64 {
        for bit in 0..8 {
            check_cut(&pristine, &records, |f| {
                let mut b = [0u8];
                f.read_at(off + byte, &mut b).expect("read");
                b[0] ^= 1 << bit;
                f.write_at(off + byte, &b).expect("write");
            });
        }
    }
}

#[test]
fn torn_tail_on_the_real_fs_is_cut_and_appending_continues() {
    let tmp = TempDir::new("torn");
    let records = write_journal(Fs::new(), tmp.path(), 20);
    let (last_pos, last) = records.last().expect("records").clone();
    {
        let f = Fs::new().open_file(&seg_path(tmp.path()), true).expect("open");
        f.write_at(HEADER_BYTES + last_pos + FRAME_HEADER_BYTES as u64 + 3, &[0xFF])
            .expect("flip");
    }
    let (mut j, rec) = Journal::open(cfg(tmp.path()), Fs::new()).expect("reopen");
    assert_eq!(rec.streams[0].cut_at, Some(last_pos));
    assert_eq!(j.end(0), last_pos);
    let pos = j.append(0, b"after the cut", 1).expect("append");
    assert_eq!(pos, last_pos);
    j.sync().expect("sync");
    let back = read_all(tmp.path(), 0, 0, Fs::new());
    assert_eq!(back.len(), records.len());
    assert_eq!(back.last().map(|r| r.1.as_slice()), Some(&b"after the cut"[..]));
    let _ = last;
}

#[test]
fn garbage_segment_files_give_clear_errors_never_panics() {
    let mut rng = Rng(0xBAD5E6);
    let dir = Path::new(DIR);
    let pdir = stream_dir(dir, 0);
    for case in 0..300u64 {
        let fs = FaultyFs::reliable();
        let records = write_journal(fs.clone(), dir, 5);
        let end = records.last().map_or(0, |(p, r)| p + encoded_len(r.len()) as u64);
        // Either a second (newest) segment of garbage, or damage to the first's header.
        let garbage_len = match case % 3 {
            0 => 64 * 1024,
            1 => rng.range(0, 300) as usize,
            _ => 0,
        };
        if garbage_len > 0 || case % 3 == 1 {
            let mut g = rng.bytes(garbage_len);
            if case % 7 == 0 && g.len() >= 8 {
                g[..8].copy_from_slice(b"RIMJSEG1");
            }
            fs.create_file(&pdir.join(segment_name(end)), g.len() as u64, &g)
                .expect("create garbage");
        } else {
            let f = fs.open_file(&seg_path(dir), true).expect("open");
            let at = rng.range(0, HEADER_BYTES - 1);
            let n = rng.range(1, 16) as usize;
            let b = rng.bytes(n);
            let n = b.len().min((HEADER_BYTES - at) as usize);
            f.write_at(at, &b[..n]).expect("write");
        }
        match Journal::open(cfg(dir), fs.clone()) {
            Ok((j, _)) => {
                // Only acceptable when the damage was harmless (e.g. inside the seal area
                // of an active segment or bytes equal to what was there).
                assert!(j.end(0) <= end, "case {case}: end {} past {end}", j.end(0));
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    matches!(e, JournalError::Corrupt { .. }),
                    "case {case}: unexpected error kind {msg}"
                );
                assert!(msg.contains("s000"), "case {case}: message names the file: {msg}");
            }
        }
        // A reader on the damaged journal errs or reads; it never panics.
        if let Ok(mut r) = Reader::open(dir, 0, 0, fs) {
            for _ in 0..100 {
                match r.next() {
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
        }
    }
}

#[test]
fn random_bytes_after_the_last_record_are_cut() {
    let mut rng = Rng(77);
    for _ in 0..50 {
        let pristine = FaultyFs::reliable();
        let records = write_journal(pristine.clone(), Path::new(DIR), 7);
        let end = records.last().map_or(0, |(p, r)| p + encoded_len(r.len()) as u64);
        let fs = pristine.crash(1);
        let f = fs.open_file(&seg_path(Path::new(DIR)), true).expect("open");
        let at = HEADER_BYTES + end + rng.range(0, 4000);
        let n = rng.range(1, 2000) as usize;
        let mut junk = rng.bytes(n);
        junk[0] |= 1; // non-zero, so there is something to cut
        f.write_at(at, &junk).expect("write");
        drop(f);
        let (j, rec) = Journal::open(cfg(Path::new(DIR)), fs.clone()).expect("reopen");
        assert_eq!(j.end(0), end);
        assert!(rec.streams[0].torn_bytes > 0);
        assert_eq!(read_all(Path::new(DIR), 0, 0, fs), records);
    }
}

/// A reader verifies every record it hands out (a payload damaged in the middle of a
/// segment is never returned), while opening at a later position walks frame lengths
/// only: the damaged record before it does not stop a reader opened past it, and the
/// records from there are returned verified.
#[test]
fn a_reader_verifies_what_it_reads_and_seeks_by_lengths() {
    let fs = FaultyFs::reliable();
    let dir = Path::new(DIR);
    let records = write_journal(fs.clone(), dir, 20);
    let (bad_pos, bad) = records[5].clone();
    {
        let file = fs.open_file(&seg_path(dir), true).expect("open seg");
        let off = HEADER_BYTES + bad_pos + FRAME_HEADER_BYTES as u64 + bad.len() as u64 / 2;
        let mut b = [0u8];
        file.read_at(off, &mut b).expect("read");
        b[0] ^= 0x10;
        file.write_at(off, &b).expect("write");
    }
    let mut r = Reader::open(dir, 0, 0, fs.clone()).expect("open at 0");
    let mut got = Vec::new();
    // Reading ends (an error or the end) at the damaged record.
    while let Ok(Some((pos, p))) = r.next() {
        got.push((pos, p.to_vec()));
    }
    assert_eq!(got, records[..5].to_vec(), "reading stops at the damaged record");
    let from = records[7].0;
    assert_eq!(
        read_all(dir, 0, from, fs),
        records[7..].to_vec(),
        "opened past it: verified records"
    );
}
