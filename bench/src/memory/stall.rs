//! `store-stall-60s`: the store stops committing for 60 s while events flood in. No code
//! seam is needed: the store's file (`capsules.redb`, a symlink from the data directory)
//! lives on a small ext4 file system of its own, mounted from a loop device and frozen
//! with `fsfreeze` (every write and sync to it blocks) while the journal goes on
//! committing on the data directory's own file system. Needs root and a loop device; a
//! host without them fails the row with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{load, measure, Flood};
use crate::error::BenchError;
use crate::report::Row;
use crate::suite::{RunOpts, RunSize};

/// How long the store is frozen.
fn stall_for(opts: &RunOpts) -> Duration {
    match opts.size {
        RunSize::Smoke => Duration::from_secs(5),
        _ => Duration::from_secs(60),
    }
}

/// Flooding before the freeze (windows close, the store commits) and after the thaw.
const BEFORE: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(5);

/// The row.
pub fn store_stall(opts: &RunOpts) -> Result<Row, BenchError> {
    let fs = LoopFs::mount()?;
    let data = fs.base.join("data");
    let io = |what: &'static str| move |source| BenchError::Io { what, source };
    std::fs::create_dir_all(&data).map_err(io("creating the data directory"))?;
    std::os::unix::fs::symlink(fs.mnt.join("capsules.redb"), data.join("capsules.redb"))
        .map_err(io("linking the store onto the loop file system"))?;
    let sets = vec![format!("persist.data_dir=\"{}\"", data.display())];
    let stall = stall_for(opts);
    let run_for = BEFORE + stall + AFTER;
    measure(
        "store-stall-60s",
        opts,
        run_for,
        stall.as_secs(),
        super::load::QUIET_RULES,
        &sets,
        |d, _, stop| {
            let nodes: Vec<String> = (0..1_000).map(|n| format!("rim:sensor:stall:n{n}")).collect();
            std::thread::scope(|s| {
                let flood = s.spawn(|| load::flood_ring(&d.socket(), "stall", &nodes, stop));
                std::thread::sleep(BEFORE);
                let frozen = fs.freeze();
                std::thread::sleep(stall);
                drop(frozen);
                let events = flood
                    .join()
                    .unwrap_or_else(|_| Err(BenchError::Setup("the flooding thread panicked".into())))?;
                Ok(Flood { events, ws_clients: 0 })
            })
        },
    )
}

/// A 256 MiB ext4 image mounted from a loop device, unmounted and removed on drop.
struct LoopFs {
    base: PathBuf,
    mnt: PathBuf,
}

/// Thaws the file system on drop, so that no error path leaves it frozen.
struct Frozen<'a>(&'a Path);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let _ = run("fsfreeze", &["-u", &self.0.display().to_string()]);
    }
}

impl LoopFs {
    fn mount() -> Result<Self, BenchError> {
        let base = std::env::temp_dir().join(format!("rim-bench-stall-{}", std::process::id()));
        let mnt = base.join("mnt");
        let image = base.join("store.img");
        std::fs::create_dir_all(&mnt).map_err(|source| BenchError::Io {
            what: "creating the mount point",
            source,
        })?;
        let fs = Self { base, mnt };
        let img = image.display().to_string();
        run("truncate", &["-s", "256M", &img])?;
        run("mkfs.ext4", &["-q", "-F", &img])?;
        run("mount", &["-o", "loop", &img, &fs.mnt.display().to_string()])?;
        Ok(fs)
    }

    fn freeze(&self) -> Frozen<'_> {
        if let Err(e) = run("fsfreeze", &["-f", &self.mnt.display().to_string()]) {
            eprintln!("store-stall: {e}");
        }
        Frozen(&self.mnt)
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let mnt = self.mnt.display().to_string();
        let _ = run("fsfreeze", &["-u", &mnt]);
        let _ = run("umount", &[&mnt]);
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<(), BenchError> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| BenchError::Setup(format!("store-stall needs {cmd} (root and a loop device): {e}")))?;
    if !out.status.success() {
        return Err(BenchError::Setup(format!(
            "store-stall: {cmd} {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
