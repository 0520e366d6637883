//! What `rimctl doctor` reads of the host: sysfs, procfs, and `statvfs` of a path. Every
//! reader returns `None` (or an empty list) when the kernel does not expose the file, so a
//! check can say "not exposed" instead of failing; the parsers are pure functions of the
//! files' text, tested on text in the kernel's formats.

use std::path::{Path, PathBuf};

/// A file's contents, trimmed; `None` when it cannot be read.
pub fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// A kernel CPU list (`0-3,5,7-8`) as CPU numbers, the one parser the daemon uses too:
/// empty for an empty list, `(null)` or anything malformed.
pub use rim_core::irqs::{isolated_cpus, parse_cpu_list};

/// CPU numbers as a kernel CPU list (`0-3,5`).
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        parts.push(if sorted[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", sorted[i])
        });
        i += 1;
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(",")
    }
}

const CPU_DIR: &str = "/sys/devices/system/cpu";

/// CPUs online.
pub fn online_cpus() -> Vec<usize> {
    read(format!("{CPU_DIR}/online")).map_or_else(Vec::new, |t| parse_cpu_list(&t))
}

/// CPUs in full dynticks mode (`nohz_full=`); `None` when the kernel lacks NO_HZ_FULL.
pub fn nohz_full_cpus() -> Option<Vec<usize>> {
    read(format!("{CPU_DIR}/nohz_full")).map(|t| parse_cpu_list(&t))
}

/// A CPU's frequency governor; `None` without cpufreq (typical of VMs).
pub fn governor(cpu: usize) -> Option<String> {
    read(format!("{CPU_DIR}/cpu{cpu}/cpufreq/scaling_governor"))
}

/// The other hardware threads of a CPU's core (its SMT siblings).
pub fn smt_siblings(cpu: usize) -> Vec<usize> {
    read(format!("{CPU_DIR}/cpu{cpu}/topology/thread_siblings_list"))
        .map_or_else(Vec::new, |t| parse_cpu_list(&t))
        .into_iter()
        .filter(|&c| c != cpu)
        .collect()
}

/// The selected mode of a sysfs choice file: `always [madvise] never` → `madvise`.
pub fn selected(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(&text[start..end])
}

/// Transparent huge pages: `always`, `madvise` or `never`.
pub fn thp_mode() -> Option<String> {
    read("/sys/kernel/mm/transparent_hugepage/enabled").and_then(|t| selected(&t).map(str::to_owned))
}

/// The current clock source (`tsc`, `kvm-clock`, `hpet`, …).
pub fn clocksource() -> Option<String> {
    read("/sys/devices/system/clocksource/clocksource0/current_clocksource")
}

/// `kernel.io_uring_disabled`: 0 allowed, 1 only for a group, 2 disabled; `None` on
/// kernels older than the sysctl.
pub fn io_uring_disabled() -> Option<u32> {
    read("/proc/sys/kernel/io_uring_disabled").and_then(|t| t.parse().ok())
}

/// A resource limit's soft value in `/proc/<pid>/limits` text; `Some(None)` = unlimited.
pub fn parse_limit(limits: &str, name: &str) -> Option<Option<u64>> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let soft = line[name.len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(None)
    } else {
        soft.parse().ok().map(Some)
    }
}

/// This process's soft `RLIMIT_MEMLOCK`, bytes; `Some(None)` = unlimited.
pub fn memlock_limit() -> Option<Option<u64>> {
    parse_limit(&read("/proc/self/limits")?, "Max locked memory")
}

/// `MemAvailable` from `/proc/meminfo` text, bytes.
pub fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Memory available for new allocations without swapping, bytes.
pub fn mem_available() -> Option<u64> {
    parse_mem_available(&read("/proc/meminfo")?)
}

/// Whether a process whose `comm` is `name` runs.
pub fn process_running(name: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .any(|e| read(e.path().join("comm")).is_some_and(|c| c == name))
}

/// A DAMON worker thread switched on through sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kdamond {
    /// Its index under `/sys/kernel/mm/damon/admin/kdamonds`.
    pub index: String,
    /// Its thread id, when the kernel says.
    pub pid: Option<String>,
}

/// The DAMON workers (`kdamond`) whose sysfs `state` is `on`; `None` when the kernel has
/// no DAMON sysfs interface.
pub fn kdamonds_on() -> Option<Vec<Kdamond>> {
    let dir = std::fs::read_dir("/sys/kernel/mm/damon/admin/kdamonds").ok()?;
    let mut on: Vec<Kdamond> = dir
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| read(e.path().join("state")).is_some_and(|s| s == "on"))
        .map(|e| Kdamond {
            index: e.file_name().to_string_lossy().into_owned(),
            pid: read(e.path().join("pid")),
        })
        .collect();
    on.sort_by(|a, b| a.index.cmp(&b.index));
    Some(on)
}

/// Whether the DAMON-based reclaim module runs (`damon_reclaim.enabled`); `None` when the
/// kernel has no such module.
pub fn damon_reclaim_enabled() -> Option<bool> {
    read("/sys/module/damon_reclaim/parameters/enabled").map(|v| v == "Y")
}

/// Interrupts (by `/proc/irq/N/smp_affinity_list`) that may be delivered to any of
/// `cpus`, and the total seen.
pub fn irqs_touching(cpus: &[usize]) -> (usize, usize) {
    let Ok(dir) = std::fs::read_dir("/proc/irq") else {
        return (0, 0);
    };
    let mut total = 0;
    let mut touching = 0;
    for entry in dir.flatten() {
        let Some(list) = read(entry.path().join("smp_affinity_list")) else {
            continue;
        };
        total += 1;
        if parse_cpu_list(&list).iter().any(|c| cpus.contains(c)) {
            touching += 1;
        }
    }
    (touching, total)
}

/// A file system as `doctor` describes it.
#[derive(Debug, Clone)]
pub struct FsInfo {
    /// The path examined: the given one, or its nearest existing ancestor.
    pub path: PathBuf,
    /// Its mount point.
    pub mount: PathBuf,
    /// File system type (`ext4`, `tmpfs`, …).
    pub fstype: String,
    /// Bytes free for unprivileged users.
    pub free_bytes: u64,
    /// Whether this process may create files in `path`.
    pub writable: bool,
}

/// The nearest existing ancestor of `path` (itself if it exists).
fn existing_ancestor(path: &Path) -> Option<PathBuf> {
    path.ancestors().find(|p| p.exists()).map(Path::to_path_buf)
}

/// The mount point and type of the mount holding `path`, from `/proc/self/mountinfo`
/// text: the longest mount point that is a prefix of `path`.
pub fn mount_of(mountinfo: &str, path: &Path) -> Option<(PathBuf, String)> {
    let mut best: Option<(PathBuf, String)> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let (Some(mount), Some(fstype)) = (left.split(' ').nth(4), right.split(' ').next()) else {
            continue;
        };
        // Spaces and other odd bytes in mount points are octal escapes (`\040`).
        let mount = PathBuf::from(mount.replace("\\040", " "));
        let longer = best
            .as_ref()
            .is_none_or(|(b, _)| mount.as_os_str().len() >= b.as_os_str().len());
        if path.starts_with(&mount) && longer {
            best = Some((mount, fstype.to_owned()));
        }
    }
    best
}

/// The file system that holds (or would hold) `path`.
pub fn fs_info(path: &Path) -> Option<FsInfo> {
    let at = existing_ancestor(path)?;
    let at = at.canonicalize().unwrap_or(at);
    let (mount, fstype) = mount_of(&read("/proc/self/mountinfo")?, &at)?;
    let st = nix::sys::statvfs::statvfs(&at).ok()?;
    let free_bytes = st.blocks_available().saturating_mul(st.fragment_size());
    Some(FsInfo {
        writable: can_create_in(&at),
        path: at,
        mount,
        fstype,
        free_bytes,
    })
}

/// Whether a file can be created in `dir` (creates and removes a probe file).
fn can_create_in(dir: &Path) -> bool {
    let probe = dir.join(format!(".rimctl-doctor-{}", std::process::id()));
    let ok = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .is_ok();
    if ok {
        let _ = std::fs::remove_file(&probe);
    }
    ok
}

/// Bytes in binary units: `8 MiB`, `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_print_in_the_kernels_format() {
        assert_eq!(parse_cpu_list("0-3,5,7-8\n"), vec![0, 1, 2, 3, 5, 7, 8]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("(null)"), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("3-1,x,99999"), Vec::<usize>::new());
        assert_eq!(format_cpu_list(&[5, 0, 1, 2, 3, 7, 8]), "0-3,5,7-8");
        assert_eq!(format_cpu_list(&[]), "none");
    }

    #[test]
    fn sysfs_choices_limits_and_meminfo_parse() {
        assert_eq!(selected("always [madvise] never"), Some("madvise"));
        assert_eq!(selected("always madvise never"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max locked memory         8388608              8388608              bytes\n\
                      Max open files            1024                 unlimited            files\n";
        assert_eq!(parse_limit(limits, "Max locked memory"), Some(Some(8_388_608)));
        let unlimited = "Max locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(parse_limit(unlimited, "Max locked memory"), Some(None));
        assert_eq!(parse_limit(limits, "Max stack size"), None);
        assert_eq!(
            parse_mem_available("MemTotal: 100 kB\nMemAvailable:   24068432 kB\n"),
            Some(24_068_432 * 1024)
        );
    }

    #[test]
    fn the_longest_mount_prefix_names_the_file_system() {
        let mountinfo = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                         27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                         30 27 0:25 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw\n\
                         31 27 0:26 / /mnt/my\\040disk rw - xfs /dev/vdb rw\n";
        let of = |p: &str| mount_of(mountinfo, Path::new(p)).map(|(m, t)| (m.display().to_string(), t));
        assert_eq!(of("/dev/shm/rimd"), Some(("/dev/shm".into(), "tmpfs".into())));
        assert_eq!(of("/var/tmp/rimd"), Some(("/".into(), "ext4".into())));
        assert_eq!(of("/mnt/my disk/x"), Some(("/mnt/my disk".into(), "xfs".into())));
    }

    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(8 << 20), "8 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
    }
}
