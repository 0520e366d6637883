//! The stats segment: `rimctl stats` maps a file that any process of the user could
//! have written. Any bytes as that file: a snapshot or a typed error (size, magic,
//! version, length out of bounds, torn, bad JSON), never a panic and never a read
//! outside the mapping; a snapshot that parses renders as Prometheus text.
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rim_stats::{render_prometheus, StatsReader};

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    let Ok(mut f) = std::fs::File::create(path) else { return };
    if f.write_all(data).is_err() {
        return;
    }
    drop(f);
    let Ok(reader) = StatsReader::open(path) else { return };
    let _ = reader.writer_pid();
    if let Ok(snap) = reader.read() {
        let mut text = String::new();
        render_prometheus(&snap, "rimd", &mut text);
    }
});

/// One file per fuzzing process, in tmpfs when there is one.
fn scratch() -> &'static std::path::Path {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::path::Path::new("/dev/shm");
        let dir = if dir.is_dir() {
            dir.to_owned()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("rimd-fuzz-stats-{}", std::process::id()))
    })
}
