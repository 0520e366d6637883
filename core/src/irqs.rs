//! Which cores take a disk's interrupts, so that the hot shard can keep off them.
//!
//! Every journal write and sync completes on the core that takes the disk's interrupt:
//! the interrupt itself, the block layer's completion work and the wake-ups that follow.
//! A disk with one queue (a VM's virtio disk, whose managed interrupt not even root may
//! move) takes all of them on one core. When that core is the hot shard's, the shard pays
//! for them in the middle of its loop: on the 2-core VM this was written on, 13% of the
//! hot shard's samples when every event fires a rule, and the daemon with its hot shard
//! on the other core decided 18-25% more events per second.
//!
//! [`of_path`] finds the block device a directory is on (`/sys/dev/block/MAJ:MIN`), its
//! interrupts (the `msi_irqs` of the device it hangs off, or its one legacy `irq`), and the
//! cores that serve them (`/proc/irq/N/effective_affinity_list`). Vectors that took
//! almost none of the device's interrupts (a virtio device's configuration vector) are
//! left out, by their counts in `/proc/interrupts`. Anything it cannot read or parse (no
//! sysfs, a device-mapper or network file system, garbage) gives `None`: no preference.

use std::path::{Path, PathBuf};

/// A vector that took less than this share of its device's interrupts does not count.
const MINOR_SHARE: f64 = 0.01;
/// Interrupt vectors of one device read at most.
const VECTORS_MAX: usize = 4096;
/// Cores a CPU list may name at most (a larger number is garbage, not a core).
const CPU_MAX: usize = 1 << 16;

/// A disk and the cores its interrupts are served on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskIrqs {
    /// The block device's name (`vda`, `nvme0n1p2`).
    pub device: String,
    /// Its interrupt numbers that count.
    pub irqs: Vec<u32>,
    /// The cores they are served on, ascending.
    pub cpus: Vec<usize>,
}

/// Applies `topology.avoid_disk_irqs` to `config`: swaps its hot and cold cores when the
/// disk under `persist.data_dir` takes its interrupts on the hot core and not on the cold
/// one ([`crate::config::TopologyConfig::avoid_cores`]). Returns the disk when it swapped.
/// The daemon does this once at start, and `rimctl doctor` to check the cores the daemon
/// will use.
pub fn place(config: &mut crate::config::Config) -> Option<DiskIrqs> {
    if !config.topology.avoid_disk_irqs || !config.persist.enabled {
        return None;
    }
    let disk = of_path(&config.persist.data_dir)?;
    config.topology.avoid_cores(&disk.cpus).then_some(disk)
}

/// The disk `path` is on and the cores its interrupts land on, when that can be found.
pub fn of_path(path: &Path) -> Option<DiskIrqs> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let dev = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(existing).ok()?);
    let (major, minor) = split_dev(dev);
    if major == 0 {
        // An anonymous device: tmpfs, overlay, a network file system.
        return None;
    }
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    let device = sys.file_name()?.to_string_lossy().into_owned();
    let vectors = vectors_of(&sys)?;
    let interrupts = std::fs::read_to_string("/proc/interrupts").ok()?;
    let irqs = busy_vectors(&interrupts, &vectors);
    let mut cpus: Vec<usize> = irqs.iter().flat_map(|&irq| served_on(irq)).collect();
    cpus.sort_unstable();
    cpus.dedup();
    (!cpus.is_empty()).then_some(DiskIrqs { device, irqs, cpus })
}

/// glibc's `major` and `minor` of a `dev_t`.
fn split_dev(dev: u64) -> (u64, u64) {
    let major = ((dev & 0x0000_0000_000f_ff00) >> 8) | ((dev & 0xffff_f000_0000_0000) >> 32);
    let minor = (dev & 0xff) | ((dev & 0x0000_0fff_fff0_0000) >> 12);
    (major, minor)
}

/// The interrupt vectors of the device the block device at `sys` hangs off: the nearest
/// ancestor directory with `msi_irqs`, else one with a non-zero legacy `irq`.
fn vectors_of(sys: &Path) -> Option<Vec<u32>> {
    let devices = Path::new("/sys/devices");
    for dir in sys.ancestors().take_while(|d| d.starts_with(devices) && *d != devices) {
        if let Ok(entries) = std::fs::read_dir(dir.join("msi_irqs")) {
            let names = entries
                .flatten()
                .take(VECTORS_MAX)
                .map(|e| e.file_name().to_string_lossy().into_owned());
            let v = parse_vectors(names);
            if !v.is_empty() {
                return Some(v);
            }
        }
        if let Some(irq) = read(&dir.join("irq")).and_then(|t| t.trim().parse::<u32>().ok()) {
            if irq != 0 {
                return Some(vec![irq]);
            }
        }
    }
    None
}

/// Interrupt numbers from directory entry names; anything else is skipped.
fn parse_vectors(names: impl Iterator<Item = String>) -> Vec<u32> {
    let mut v: Vec<u32> = names.filter_map(|n| n.trim().parse().ok()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The vectors of `vectors` that took at least [`MINOR_SHARE`] of their interrupts so
/// far, by `/proc/interrupts` text. When none has fired yet (or the text says nothing of
/// them), all of them.
fn busy_vectors(interrupts: &str, vectors: &[u32]) -> Vec<u32> {
    let counts: Vec<(u32, u64)> = vectors
        .iter()
        .filter_map(|&irq| interrupt_count(interrupts, irq).map(|n| (irq, n)))
        .collect();
    let total: u64 = counts.iter().map(|&(_, n)| n).fold(0, u64::saturating_add);
    if total == 0 {
        return vectors.to_vec();
    }
    counts
        .into_iter()
        .filter(|&(_, n)| n as f64 >= total as f64 * MINOR_SHARE)
        .map(|(irq, _)| irq)
        .collect()
}

/// The interrupts vector `irq` took on all cores, from `/proc/interrupts` text: the
/// line `  N: count count … chip name`, one count per core of the header line.
fn interrupt_count(interrupts: &str, irq: u32) -> Option<u64> {
    let mut lines = interrupts.lines();
    let cores = lines
        .next()?
        .split_whitespace()
        .filter(|w| w.starts_with("CPU"))
        .count();
    let want = format!("{irq}:");
    let line = lines.find(|l| l.trim_start().starts_with(&want))?;
    let counts = line.trim_start().get(want.len()..)?.split_whitespace().take(cores);
    Some(counts.map_while(|w| w.parse::<u64>().ok()).fold(0, u64::saturating_add))
}

/// The cores interrupt `irq` is served on: its effective affinity, else the affinity
/// asked for.
fn served_on(irq: u32) -> Vec<usize> {
    let dir = PathBuf::from(format!("/proc/irq/{irq}"));
    read(&dir.join("effective_affinity_list"))
        .map(|t| parse_cpu_list(&t))
        .filter(|c| !c.is_empty())
        .or_else(|| read(&dir.join("smp_affinity_list")).map(|t| parse_cpu_list(&t)))
        .unwrap_or_default()
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A kernel CPU list (`0-3,8,10-11`); anything malformed or past [`CPU_MAX`] makes it
/// empty, not partly read.
pub fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<usize>(), b.trim().parse::<usize>()),
            None => (part.trim().parse::<usize>(), part.trim().parse::<usize>()),
        };
        let (Ok(a), Ok(b)) = (a, b) else { return Vec::new() };
        if a > b || b >= CPU_MAX {
            return Vec::new();
        }
        cpus.extend(a..=b);
    }
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERRUPTS: &str = "           CPU0       CPU1       \n\
  28:          0          0 PCI-MSIX-0000:00:01.0   0-edge      virtio0-config\n\
  35:          0          1 PCI-MSIX-0000:00:02.0   0-edge      virtio1-config\n\
  36:          0   25492713 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0\n\
 LOC:   49239188   17862239   Local timer interrupts\n";

    #[test]
    fn a_device_number_splits_as_glibc_does() {
        // glibc's makedev.
        fn makedev(major: u64, minor: u64) -> u64 {
            ((major & 0xfff) << 8) | ((major & !0xfff) << 32) | (minor & 0xff) | ((minor & !0xff) << 12)
        }
        assert_eq!(split_dev(0xfe00), (254, 0));
        assert_eq!(split_dev(0x0803), (8, 3));
        // Large majors and minors use the high bits.
        for (major, minor) in [(259, 1), (4095, 255), (4096, 256), (0x12345, 0xabcde), (0, 7)] {
            assert_eq!(split_dev(makedev(major, minor)), (major, minor));
        }
    }

    #[test]
    fn counts_come_from_the_vectors_line_and_one_count_per_core() {
        assert_eq!(interrupt_count(INTERRUPTS, 36), Some(25_492_713));
        assert_eq!(interrupt_count(INTERRUPTS, 35), Some(1));
        assert_eq!(interrupt_count(INTERRUPTS, 3), None, "`3:` is not `36:`");
        assert_eq!(interrupt_count(INTERRUPTS, 99), None);
    }

    #[test]
    fn a_configuration_vector_that_never_fires_does_not_count() {
        assert_eq!(busy_vectors(INTERRUPTS, &[35, 36]), vec![36]);
        // None fired yet: every vector counts.
        assert_eq!(busy_vectors(INTERRUPTS, &[28]), vec![28]);
        // Vectors the text does not name: all of them.
        assert_eq!(busy_vectors(INTERRUPTS, &[7, 8]), vec![7, 8]);
    }

    #[test]
    fn cpu_lists_parse_and_garbage_gives_nothing() {
        assert_eq!(parse_cpu_list("1\n"), vec![1]);
        assert_eq!(parse_cpu_list("0-1"), vec![0, 1]);
        assert_eq!(parse_cpu_list("0-2,8,10-11"), vec![0, 1, 2, 8, 10, 11]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
        for garbage in ["x", "1-", "-1", "3-1", "0-99999999999", "1,,2x", "\u{0}\u{ff}", "1-2-3"] {
            assert_eq!(parse_cpu_list(garbage), Vec::<usize>::new(), "{garbage:?}");
        }
    }

    #[test]
    fn garbage_in_proc_interrupts_or_vector_names_is_skipped_without_panicking() {
        for text in [
            "",
            "\n\n",
            "CPU0\n36:",
            "CPU0 CPU1\n36: x y",
            "36: 5 5\n",
            "\u{0}:\u{0}\n36:\u{ffff}",
        ] {
            let _ = interrupt_count(text, 36);
            let _ = busy_vectors(text, &[36]);
        }
        assert_eq!(
            interrupt_count("CPU0 CPU1\n36: 7 x 9", 36),
            Some(7),
            "stops at the first non-count"
        );
        let names = ["36", "x", "", " 35 ", "4294967296", "36"].map(String::from);
        assert_eq!(parse_vectors(names.into_iter()), vec![35, 36]);
    }

    #[test]
    fn a_path_on_no_block_device_has_no_disk() {
        // /proc is an anonymous device (major 0).
        assert_eq!(of_path(Path::new("/proc/self")), None);
    }

    #[test]
    fn this_machines_disk_when_it_has_one_names_cores_that_exist() {
        // What this test can check on any machine: if a disk is found for the temporary
        // directory, its cores are online cores and its vectors are in /proc/interrupts.
        let Some(d) = of_path(&std::env::temp_dir()) else {
            eprintln!("no disk with readable interrupts under the temporary directory: nothing to check");
            return;
        };
        let online = parse_cpu_list(&std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default());
        assert!(!d.device.is_empty());
        assert!(!d.irqs.is_empty(), "{d:?}");
        assert!(d.cpus.iter().all(|c| online.contains(c)), "{d:?} on {online:?}");
        let text = std::fs::read_to_string("/proc/interrupts").expect("read /proc/interrupts");
        assert!(d.irqs.iter().all(|&i| interrupt_count(&text, i).is_some()), "{d:?}");
    }
}
