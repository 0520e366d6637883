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

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{on_disk, takes_direct, Rng, TempDir};
use rim_journal::{Commit, Committer, Fs, FsFile, Storage, StorageFile, WriteOp, FLIGHTS_MAX};

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

/// A commit of one write of `bytes` at `offset`, an append (`zeros_after`) or not (a seal).
fn write(file: &FsFile, offset: u64, bytes: Vec<u8>, zeros_after: bool) -> Commit<FsFile> {
    let end = bytes.len();
    Commit {
        bufs: vec![bytes],
        writes: vec![WriteOp {
            file: file.clone(),
            offset,
            buf: 0,
            start: 0,
            end,
            zeros_after,
        }],
        syncs: vec![file.clone()],
        dirs: Vec::new(),
    }
}

fn append(file: &FsFile, offset: u64, bytes: Vec<u8>) -> Commit<FsFile> {
    write(file, offset, bytes, true)
}

/// `a`'s writes, then `b`'s, as one commit (`b` writes only files `a` syncs).
fn then(mut a: Commit<FsFile>, b: Commit<FsFile>) -> Commit<FsFile> {
    let first = a.bufs.len();
    a.bufs.extend(b.bufs);
    a.writes.extend(b.writes.into_iter().map(|mut w| {
        w.buf += first;
        w
    }));
    a
}

/// A segment-like file of `len` bytes starting with `head`, on disk, and what it must hold.
struct Seg {
    tmp: TempDir,
    fs: Fs,
    path: PathBuf,
    file: FsFile,
    image: Vec<u8>,
}

impl Seg {
    fn new(tag: &str, len: u64, head: &[u8]) -> Self {
        let tmp = on_disk(tag);
        let fs = Fs::new();
        let path = tmp.path().join("seg");
        let file = fs.create_file(&path, len, head).expect("create");
        let mut image = vec![0u8; len as usize];
        image[..head.len()].copy_from_slice(head);
        Self {
            tmp,
            fs,
            path,
            file,
            image,
        }
    }

    /// Starts `bytes` at `offset` (and notes them in the image).
    fn start(&mut self, c: &mut <Fs as Storage>::Committer, offset: u64, bytes: Vec<u8>, zeros_after: bool) {
        self.image[offset as usize..offset as usize + bytes.len()].copy_from_slice(&bytes);
        c.start(write(&self.file, offset, bytes, zeros_after)).expect("start");
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
    const LEN: u64 = 1 << 20;
    const HEAD: usize = 128;
    let head: Vec<u8> = (0..HEAD).map(|i| i as u8 ^ 0xA5).collect();
    let mut seg = Seg::new("any-length", LEN, &head);
    if takes_direct(seg.tmp.path()) {
        assert!(
            seg.file.is_direct(),
            "the file system takes O_DIRECT but the file has no direct descriptor"
        );
    } else {
        eprintln!(
            "{}: no O_DIRECT here; the appends go through the page cache",
            seg.tmp.path().display()
        );
    }
    let mut off = HEAD as u64;
    let mut rng = Rng(7);
    let mut committer = seg.fs.committer().expect("committer");
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
            seg.start(&mut committer, off, rng.bytes(len), true);
            off += len as u64;
        }
        land_all(&mut committer);
        assert_holds(&seg.file, &seg.image, &format!("after round {round}"));
        round += 1;
        if round % 7 == 0 {
            // A write that is no append (as a seal in the header): through the page cache,
            // and the block it touches is not remembered wrongly.
            seg.start(&mut committer, 64, rng.bytes(12), false);
            land_all(&mut committer);
            assert_holds(&seg.file, &seg.image, "after a seal");
        }
        if round % 11 == 0 {
            // Reopened: the block the next append starts in is read back, not remembered.
            drop(committer);
            seg.file = seg.fs.open_file(&seg.path, true).expect("reopen");
            committer = seg.fs.committer().expect("committer");
        }
    }
    drop(committer);
    let reopened = seg.fs.open_file(&seg.path, false).expect("open read-only");
    assert!(!reopened.is_direct());
    assert_holds(&reopened, &seg.image, "read-only, at the end");
}

#[test]
fn a_write_through_the_page_cache_keeps_the_later_appends_of_its_commit_there() {
    let mut seg = Seg::new("mixed", 1 << 16, &[7; 128]);
    let mut committer = seg.fs.committer().expect("committer");
    seg.start(&mut committer, 128, (0..100).map(|i| i as u8 | 0x80).collect(), true);
    land_all(&mut committer);
    // One commit: a seal-like write into block 0, then an append into the same block. Had
    // the append gone direct, its block 0 would have been staged from the disk before the
    // seal and put the old bytes back over it.
    let (seal, second) = (vec![0xEE; 12], vec![0x5A; 50]);
    seg.image[64..76].copy_from_slice(&seal);
    seg.image[228..278].copy_from_slice(&second);
    let c = then(write(&seg.file, 64, seal, false), append(&seg.file, 228, second));
    committer.start(c).expect("start the mixed commit");
    land_all(&mut committer);
    assert_holds(&seg.file, &seg.image, "after a seal and an append in one commit");
}

#[test]
fn the_end_of_a_file_of_partial_blocks_is_written_through_the_page_cache() {
    // 8 bytes past whole blocks: the last append's block would grow the file.
    const LEN: u64 = 3 * 4096 + 8;
    let mut seg = Seg::new("end", LEN, &[1, 2, 3]);
    let mut committer = seg.fs.committer().expect("committer");
    let mut rng = Rng(11);
    let mut off = 3u64;
    for len in [5000u64, 7000, 293] {
        seg.start(&mut committer, off, rng.bytes(len as usize), true);
        land_all(&mut committer);
        off += len;
    }
    assert_eq!(off, LEN, "the appends fill the file");
    assert_holds(&seg.file, &seg.image, "a full file");
    assert_eq!(
        std::fs::metadata(&seg.path).expect("stat").len(),
        LEN,
        "the file did not grow"
    );
}
