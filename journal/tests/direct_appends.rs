//! Guards the direct (`O_DIRECT`) appends of [`Fs`]'s committer on the real file system:
//! a commit's appends go as whole blocks that start with what the previous commit left in
//! its last block and end padded with zeros, so after every commit the file must hold
//! exactly what was written, whatever the lengths and offsets: across block boundaries,
//! with several commits in flight, after a reopen (the partial block read back instead of
//! remembered), beside writes that are not appends (a seal in the header), and at the end
//! of a file whose size is not whole blocks (which goes through the page cache), and in a
//! commit that also writes the file through the page cache (which keeps its later appends
//! there).

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Rng, TempDir};
use rim_journal::{Commit, Committer, Fs, FsFile, Storage, StorageFile, WriteOp, FLIGHTS_MAX};

/// A directory on the build's own file system (`CARGO_TARGET_TMPDIR`), not the system
/// temp dir, which is tmpfs on many machines (and tmpfs takes no `O_DIRECT`).
fn on_disk(tag: &str) -> TempDir {
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("direct-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("test dir");
    TempDir(p)
}

/// Whether the file system under `dir` takes `O_DIRECT` (tmpfs does not).
fn takes_direct(dir: &Path) -> bool {
    let probe = dir.join("probe");
    let ok = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// Lands every commit in flight, failing the test on an error or a stall.
fn land_all(c: &mut <Fs as Storage>::Committer) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.in_flight() {
        if let Some(done) = c.poll(Some(Duration::from_millis(100))).expect("poll") {
            done.result.expect("commit failed");
        }
        assert!(Instant::now() < deadline, "a commit never landed");
    }
}

fn append(file: &FsFile, offset: u64, bytes: Vec<u8>) -> Commit<FsFile> {
    let end = bytes.len();
    Commit {
        bufs: vec![bytes],
        writes: vec![WriteOp {
            file: file.clone(),
            offset,
            buf: 0,
            start: 0,
            end,
            zeros_after: true,
        }],
        syncs: vec![file.clone()],
        dirs: Vec::new(),
    }
}

fn assert_holds(file: &FsFile, image: &[u8], what: &str) {
    let mut back = vec![0u8; image.len()];
    assert_eq!(file.read_at(0, &mut back).expect("read back"), image.len());
    if let Some(i) = back.iter().zip(image).position(|(a, b)| a != b) {
        panic!("{what}: byte {i} is {:#04x}, {:#04x} was written", back[i], image[i]);
    }
}

#[test]
fn appends_of_any_length_read_back_exactly() {
    let tmp = on_disk("any-length");
    let fs = Fs::new();
    let path = tmp.path().join("seg");
    const LEN: u64 = 1 << 20;
    const HEAD: usize = 128;
    let head: Vec<u8> = (0..HEAD).map(|i| i as u8 ^ 0xA5).collect();
    let mut file = fs.create_file(&path, LEN, &head).expect("create");
    if takes_direct(tmp.path()) {
        assert!(
            file.is_direct(),
            "the file system takes O_DIRECT but the file has no direct descriptor"
        );
    } else {
        eprintln!(
            "{}: no O_DIRECT here; the appends go through the page cache",
            tmp.path().display()
        );
    }
    let mut image = vec![0u8; LEN as usize];
    image[..HEAD].copy_from_slice(&head);
    let mut off = HEAD as u64;
    let mut rng = Rng(7);
    let mut committer = fs.committer().expect("committer");
    let mut round = 0;
    while off + 20_000 < LEN {
        // Up to FLIGHTS_MAX commits at once: each later one rewrites the block the one
        // before ended in.
        let flights = rng.range(1, FLIGHTS_MAX as u64);
        for _ in 0..flights {
            // Short ones (inside a block), block-sized ones and long ones.
            let len = match rng.range(0, 3) {
                0 => rng.range(1, 64),
                1 => 4096,
                _ => rng.range(1, 20_000),
            } as usize;
            let bytes = rng.bytes(len);
            image[off as usize..off as usize + len].copy_from_slice(&bytes);
            committer.start(append(&file, off, bytes)).expect("start");
            off += len as u64;
        }
        land_all(&mut committer);
        assert_holds(&file, &image, &format!("after round {round}"));
        round += 1;
        if round % 7 == 0 {
            // A write that is no append (as a seal in the header): through the page cache,
            // and the block it touches is not remembered wrongly.
            let seal = rng.bytes(12);
            image[64..76].copy_from_slice(&seal);
            committer
                .start(Commit {
                    bufs: vec![seal],
                    writes: vec![WriteOp {
                        file: file.clone(),
                        offset: 64,
                        buf: 0,
                        start: 0,
                        end: 12,
                        zeros_after: false,
                    }],
                    syncs: vec![file.clone()],
                    dirs: Vec::new(),
                })
                .expect("start the seal");
            land_all(&mut committer);
            assert_holds(&file, &image, "after a seal");
        }
        if round % 11 == 0 {
            // Reopened: the block the next append starts in is read back, not remembered.
            drop(committer);
            file = fs.open_file(&path, true).expect("reopen");
            committer = fs.committer().expect("committer");
        }
    }
    drop(committer);
    let reopened = fs.open_file(&path, false).expect("open read-only");
    assert!(!reopened.is_direct());
    assert_holds(&reopened, &image, "read-only, at the end");
}

#[test]
fn a_write_through_the_page_cache_keeps_the_later_appends_of_its_commit_there() {
    let tmp = on_disk("mixed");
    let fs = Fs::new();
    let path = tmp.path().join("seg");
    const LEN: u64 = 1 << 16;
    let mut image = vec![0u8; LEN as usize];
    image[..128].fill(7);
    let file = fs.create_file(&path, LEN, &image[..128]).expect("create");
    let mut committer = fs.committer().expect("committer");
    let first: Vec<u8> = (0..100).map(|i| i as u8 | 0x80).collect();
    image[128..228].copy_from_slice(&first);
    committer.start(append(&file, 128, first)).expect("start");
    land_all(&mut committer);
    // One commit: a seal-like write into block 0, then an append into the same block. Had
    // the append gone direct, its block 0 would have been staged from the disk before the
    // seal and put the old bytes back over it.
    let seal = vec![0xEE; 12];
    let second = vec![0x5A; 50];
    image[64..76].copy_from_slice(&seal);
    image[228..278].copy_from_slice(&second);
    let mut c = append(&file, 228, second);
    c.bufs.insert(0, seal);
    c.writes[0].buf = 1;
    c.writes.insert(
        0,
        WriteOp {
            file: file.clone(),
            offset: 64,
            buf: 0,
            start: 0,
            end: 12,
            zeros_after: false,
        },
    );
    committer.start(c).expect("start the mixed commit");
    land_all(&mut committer);
    assert_holds(&file, &image, "after a seal and an append in one commit");
}

#[test]
fn the_end_of_a_file_of_partial_blocks_is_written_through_the_page_cache() {
    let tmp = on_disk("end");
    let fs = Fs::new();
    let path = tmp.path().join("seg");
    // 8 bytes past whole blocks: the last append's block would grow the file.
    const LEN: u64 = 3 * 4096 + 8;
    let mut file_image = vec![0u8; LEN as usize];
    let file = fs.create_file(&path, LEN, &[1, 2, 3]).expect("create");
    file_image[..3].copy_from_slice(&[1, 2, 3]);
    let mut committer = fs.committer().expect("committer");
    let mut rng = Rng(11);
    let mut off = 3u64;
    for len in [5000u64, 7000, 293] {
        let bytes = rng.bytes(len as usize);
        file_image[off as usize..(off + len) as usize].copy_from_slice(&bytes);
        committer.start(append(&file, off, bytes)).expect("start");
        land_all(&mut committer);
        off += len;
    }
    assert_eq!(off, LEN, "the appends fill the file");
    assert_holds(&file, &file_image, "a full file");
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        LEN,
        "the file did not grow"
    );
}
