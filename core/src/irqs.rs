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
/// one ([`crate::config::TopologyConfig::avoid_cores`]), unless threads are not pinned or
/// the hot core is isolated (`isolcpus`) and the cold one is not: a tuned host's isolation
/// wins over the disk. Returns the disk when it swapped. The daemon does this once at
/// start, and `rimctl doctor` to check the cores the daemon will use.
pub fn place(config: &mut crate::config::Config) -> Option<DiskIrqs> {
    let t = &config.topology;
    if !t.avoid_disk_irqs || !t.pin || !config.persist.enabled {
        return None;
    }
    let isolated = isolated_cpus();
    if isolated.contains(&t.hot_core) && !isolated.contains(&t.cold_core) {
        return None;
    }
    let disk = of_path(&config.persist.data_dir)?;
    config.topology.avoid_cores(&disk.cpus).then_some(disk)
}

/// The CPUs the kernel keeps other tasks off (`isolcpus=`); empty when none or unreadable.
pub fn isolated_cpus() -> Vec<usize> {
    read(Path::new("/sys/devices/system/cpu/isolated")).map_or_else(Vec::new, |t| parse_cpu_list(&t))
}

/// Where the kernel's files are: `/sys` and `/proc`, or a test's copy.
struct Roots {
    sys: PathBuf,
    proc: PathBuf,
}

/// The disk `path` is on and the cores its interrupts land on, when that can be found.
pub fn of_path(path: &Path) -> Option<DiskIrqs> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let dev = std::os::unix::fs::MetadataExt::dev(&std::fs::metadata(existing).ok()?);
    let host = Roots {
        sys: PathBuf::from("/sys"),
        proc: PathBuf::from("/proc"),
    };
    disk_of(&host, split_dev(dev))
}

/// The block device `major:minor` and the cores its interrupts land on.
fn disk_of(roots: &Roots, (major, minor): (u64, u64)) -> Option<DiskIrqs> {
    if major == 0 {
        // An anonymous device: tmpfs, overlay, btrfs, a network file system.
        return None;
    }
    let sys = std::fs::canonicalize(roots.sys.join(format!("dev/block/{major}:{minor}"))).ok()?;
    let device = sys.file_name()?.to_string_lossy().into_owned();
    let devices = std::fs::canonicalize(roots.sys.join("devices")).ok()?;
    let vectors = vectors_of(&sys, &devices)?;
    let interrupts = read(&roots.proc.join("interrupts"))?;
    let irqs = busy_vectors(&interrupts, &vectors);
    let mut cpus: Vec<usize> = irqs.iter().flat_map(|&irq| served_on(&roots.proc, irq)).collect();
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

/// The interrupt vectors of the device the block device at `sys` hangs off: walking up
/// from it to the first PCI function (a directory with a `config` file), the first
/// directory with `msi_irqs`, else a non-zero legacy `irq`. Devices outside `devices`
/// (`/sys/devices/virtual`: device-mapper, zram, loop are under it but hang off nothing)
/// and functions with neither have none: a PCI bridge's vectors above the function are
/// not the disk's.
fn vectors_of(sys: &Path, devices: &Path) -> Option<Vec<u32>> {
    if sys.starts_with(devices.join("virtual")) {
        return None;
    }
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
        if dir.join("config").is_file() {
            return None;
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
fn served_on(proc: &Path, irq: u32) -> Vec<usize> {
    let dir = proc.join(format!("irq/{irq}"));
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
        for garbage in [
            "x",
            "(null)",
            "1-",
            "-1",
            "3-1",
            "0-99999999999",
            "1,,2x",
            "\u{0}\u{ff}",
            "1-2-3",
        ] {
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

    /// A copy of the kernel's files for four disks: a virtio disk with MSI-X vectors, a
    /// SCSI partition behind a function with a legacy interrupt, a virtio disk whose
    /// function has neither (its root bus has vectors, which are not the disk's), and a
    /// device-mapper volume.
    fn kernel_tree() -> PathBuf {
        use std::os::unix::fs::symlink;
        let root = std::env::temp_dir().join(format!(
            "rim-irqs-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        let sys = root.join("sys");
        let put = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, text).expect("write");
        };
        let dir = |rel: &str| std::fs::create_dir_all(root.join(rel)).expect("mkdir");
        let bus = "sys/devices/pci0000:00";
        put(&format!("{bus}/msi_irqs/99"), "msi");
        put(&format!("{bus}/0000:00:02.0/config"), "");
        put(&format!("{bus}/0000:00:02.0/msi_irqs/35"), "msix");
        put(&format!("{bus}/0000:00:02.0/msi_irqs/36"), "msix");
        put(&format!("{bus}/0000:00:02.0/msi_irqs/not-a-number"), "");
        dir(&format!("{bus}/0000:00:02.0/virtio1/block/vda"));
        put(&format!("{bus}/0000:00:03.0/config"), "");
        put(&format!("{bus}/0000:00:03.0/irq"), "11\n");
        dir(&format!("{bus}/0000:00:03.0/host0/target0/0:0/block/sda/sda1"));
        put(&format!("{bus}/0000:00:05.0/config"), "");
        put(&format!("{bus}/0000:00:05.0/irq"), "0\n");
        dir(&format!("{bus}/0000:00:05.0/virtio3/block/vdb"));
        dir("sys/devices/virtual/block/dm-0");
        dir("sys/dev/block");
        for (dev, to) in [
            ("254:0", "0000:00:02.0/virtio1/block/vda"),
            ("8:1", "0000:00:03.0/host0/target0/0:0/block/sda/sda1"),
            ("253:1", "0000:00:05.0/virtio3/block/vdb"),
        ] {
            symlink(
                format!("../../devices/pci0000:00/{to}"),
                sys.join("dev/block").join(dev),
            )
            .expect("symlink");
        }
        symlink("../../devices/virtual/block/dm-0", sys.join("dev/block/252:0")).expect("symlink");
        put(
            "proc/interrupts",
            "           CPU0       CPU1\n  11:        500          0   IO-APIC   11-fasteoi   ata_piix\n\
             35:          0          1 PCI-MSIX  0-edge virtio1-config\n  36:          0   25492713 PCI-MSIX  1-edge virtio1-req.0\n\
             99:          7          7 PCI-MSI  PME\n",
        );
        put("proc/irq/35/effective_affinity_list", "0\n");
        put("proc/irq/36/effective_affinity_list", "1\n");
        put("proc/irq/11/effective_affinity_list", "\n");
        put("proc/irq/11/smp_affinity_list", "0-1\n");
        root
    }

    #[test]
    fn the_disks_vectors_and_cores_are_found_from_the_kernels_files() {
        let root = kernel_tree();
        let roots = Roots {
            sys: root.join("sys"),
            proc: root.join("proc"),
        };
        let disk = |major, minor| disk_of(&roots, (major, minor));
        // The configuration vector (one interrupt of 25 million, and on core 0) is left out.
        let want = |device: &str, irqs: Vec<u32>, cpus: Vec<usize>| {
            Some(DiskIrqs {
                device: device.into(),
                irqs,
                cpus,
            })
        };
        assert_eq!(disk(254, 0), want("vda", vec![36], vec![1]));
        // A legacy interrupt with no effective affinity: the affinity asked for.
        assert_eq!(disk(8, 1), want("sda1", vec![11], vec![0, 1]));
        // Neither vectors nor an interrupt at the PCI function: the bus's PME vector above
        // it is not the disk's.
        assert_eq!(disk(253, 1), None);
        assert_eq!(disk(252, 0), None, "device-mapper hangs off no device");
        assert_eq!(disk(0, 5), None, "an anonymous device");
        assert_eq!(disk(9, 9), None, "no such device");
        let _ = std::fs::remove_dir_all(&root);
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
