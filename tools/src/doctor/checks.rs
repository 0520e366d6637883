//! The checks of `rimctl doctor`, one function each: what the configuration needs of the
//! host, what the host has, and what to do about a difference.
//!
//! A *required* check is one without which rimd does not start or cannot keep its
//! promises (its cores, io_uring for glommio, locked memory, room for its segments and
//! journal); a failed one makes `doctor` exit 1. The others are tuning that the hot
//! core's latency depends on (isolation, governor, THP, clock source, SMT, interrupts,
//! DAMON's memory scanning): they warn. A check whose input the kernel does not expose is skipped.

use rim_core::config::{Config, IdleStrategy};
use serde::Serialize;

use super::host::{self, bytes, format_cpu_list};

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As wanted.
    Ok,
    /// An advisory check is not as wanted.
    Warn,
    /// A required check is not as wanted.
    Fail,
    /// The kernel does not expose what the check reads.
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Its name.
    pub check: &'static str,
    /// Its outcome.
    pub status: Status,
    /// Whether a failure makes `doctor` exit 1.
    pub required: bool,
    /// What the host has.
    pub found: String,
    /// What the configuration needs.
    pub wanted: String,
    /// What to do when it differs (empty when it does not).
    pub action: String,
}

impl Check {
    /// `ok` when `pass`, else `fail` (required) or `warn`; the action only when not `ok`.
    fn judge(check: &'static str, required: bool, pass: bool, found: String, wanted: String, action: &str) -> Self {
        let status = match (pass, required) {
            (true, _) => Status::Ok,
            (false, true) => Status::Fail,
            (false, false) => Status::Warn,
        };
        Self {
            check,
            status,
            required,
            found,
            wanted,
            action: if pass { String::new() } else { action.to_owned() },
        }
    }

    fn skip(check: &'static str, required: bool, found: &str, wanted: String) -> Self {
        Self {
            check,
            status: Status::Skip,
            required,
            found: found.to_owned(),
            wanted,
            action: String::new(),
        }
    }
}

/// Least `RLIMIT_MEMLOCK` per glommio executor (its io_uring rings; FLOORS.md).
const MEMLOCK_PER_EXECUTOR_BYTES: u64 = 512 << 10;

/// The busy-polling cores: the hot shard's and the other reflex shards'.
pub fn hot_cores(config: &Config) -> Vec<usize> {
    let mut cores = vec![config.topology.hot_core];
    cores.extend(&config.topology.reflex_cores);
    cores.sort_unstable();
    cores.dedup();
    cores
}

/// Every check, in report order. The core checks judge the cores the daemon will use:
/// with `topology.avoid_disk_irqs`, the hot and cold cores swapped when the journal's disk
/// takes its interrupts on the configured hot core ([`rim_core::irqs::place`]).
pub fn all(config: &Config) -> Vec<Check> {
    let mut placed = config.clone();
    rim_core::irqs::place(&mut placed);
    let config = &placed;
    let hot = hot_cores(config);
    vec![
        config_relations(config),
        cores(config),
        isolcpus(&hot),
        nohz_full(&hot),
        governor(&hot),
        smt(&hot),
        irqs(&hot),
        damon(),
        thp(),
        clocksource(),
        memlock(config),
        io_uring(),
        shm(config),
        data_dir(config),
    ]
}

/// The report when the configuration cannot be read at all: that is the failed required
/// check `config`; the checks that read only the host still run, and the ones that need
/// to know what the configuration asks for are skipped (still one line each).
pub fn unreadable(error: &str) -> Vec<Check> {
    let unknown = || "unknown: the configuration cannot be read".to_owned();
    let skipped = |check, required| Check::skip(check, required, "not checked", unknown());
    vec![
        Check::judge(
            "config",
            true,
            false,
            error.to_owned(),
            "a configuration rimd can read".into(),
            "fix the file or setting named (rimd --check says the same)",
        ),
        skipped("cores", true),
        skipped("isolcpus", false),
        skipped("nohz_full", false),
        skipped("governor", false),
        skipped("smt", false),
        skipped("irqs", false),
        damon(),
        thp(),
        clocksource(),
        skipped("memlock", true),
        io_uring(),
        skipped("shm", true),
        skipped("data_dir", true),
    ]
}

fn config_relations(config: &Config) -> Check {
    let (pass, found) = match config.validate() {
        Ok(()) => (true, "valid".to_owned()),
        Err(e) => (false, e.to_string()),
    };
    Check::judge(
        "config",
        true,
        pass,
        found,
        "settings consistent with each other and this machine".into(),
        "fix the setting named (rimd --check says the same)",
    )
}

fn cores(config: &Config) -> Check {
    let online = host::online_cpus();
    let t = &config.topology;
    let mut wanted_cores = hot_cores(config);
    wanted_cores.push(t.cold_core);
    let missing: Vec<usize> = wanted_cores.iter().copied().filter(|c| !online.contains(c)).collect();
    // A busy-polling shard beside the control plane would starve it; backing off, it may share.
    let shared = hot_cores(config).contains(&t.cold_core) && t.idle == IdleStrategy::Spin;
    Check::judge(
        "cores",
        true,
        missing.is_empty() && !shared,
        format!("online {}", format_cpu_list(&online)),
        format!(
            "hot {} and control plane {} online, apart",
            format_cpu_list(&hot_cores(config)),
            t.cold_core
        ),
        "set topology.hot_core / cold_core / reflex_cores to distinct online cores",
    )
}

fn isolcpus(hot: &[usize]) -> Check {
    let isolated = host::isolated_cpus();
    let pass = hot.iter().all(|c| isolated.contains(c));
    Check::judge(
        "isolcpus",
        false,
        pass,
        format!("isolated {}", format_cpu_list(&isolated)),
        format!("hot cores {} isolated", format_cpu_list(hot)),
        &format!(
            "boot with isolcpus={0} (kernel command line) so the scheduler keeps other tasks off the hot core",
            format_cpu_list(hot)
        ),
    )
}

fn nohz_full(hot: &[usize]) -> Check {
    let wanted = format!("hot cores {} tickless", format_cpu_list(hot));
    let Some(cpus) = host::nohz_full_cpus() else {
        return Check::skip("nohz_full", false, "kernel without NO_HZ_FULL", wanted);
    };
    Check::judge(
        "nohz_full",
        false,
        hot.iter().all(|c| cpus.contains(c)),
        format!("nohz_full {}", format_cpu_list(&cpus)),
        wanted,
        &format!(
            "boot with nohz_full={0} rcu_nocbs={0}: no scheduler tick on a core that busy-polls",
            format_cpu_list(hot)
        ),
    )
}

fn governor(hot: &[usize]) -> Check {
    let wanted = "performance".to_owned();
    let governors: Vec<(usize, String)> = hot.iter().filter_map(|&c| host::governor(c).map(|g| (c, g))).collect();
    if governors.is_empty() {
        return Check::skip("governor", false, "no cpufreq (a VM, or a fixed clock)", wanted);
    }
    let found = governors
        .iter()
        .map(|(c, g)| format!("cpu{c} {g}"))
        .collect::<Vec<_>>()
        .join(", ");
    Check::judge(
        "governor",
        false,
        governors.iter().all(|(_, g)| g == "performance"),
        found,
        wanted,
        "cpupower frequency-set -g performance (or the tuned latency-performance profile)",
    )
}

fn smt(hot: &[usize]) -> Check {
    let siblings: Vec<usize> = hot.iter().flat_map(|&c| host::smt_siblings(c)).collect();
    Check::judge(
        "smt",
        false,
        siblings.is_empty(),
        format!("siblings of the hot cores: {}", format_cpu_list(&siblings)),
        "no SMT sibling busy beside a hot core".into(),
        &format!(
            "take the siblings offline (echo 0 > /sys/devices/system/cpu/cpuN/online for {}) or isolate them too",
            format_cpu_list(&siblings)
        ),
    )
}

fn irqs(hot: &[usize]) -> Check {
    let (touching, total) = host::irqs_touching(hot);
    let balancer = host::process_running("irqbalance");
    let found = format!(
        "{touching} of {total} IRQs may run on {}; irqbalance {}",
        format_cpu_list(hot),
        if balancer { "running" } else { "not running" }
    );
    Check::judge(
        "irqs",
        false,
        touching == 0,
        found,
        "no device interrupts on the hot cores".into(),
        &format!(
            "steer IRQs away: IRQBALANCE_BANNED_CPULIST={0} for irqbalance, or write the other cores to /proc/irq/*/smp_affinity_list",
            format_cpu_list(hot)
        ),
    )
}

fn damon() -> Check {
    damon_of(host::kdamonds_on(), host::damon_reclaim_enabled())
}

/// The `damon` check from what the host says: DAMON's worker threads scan memory and page
/// out on their own schedule, and each pass takes a core for milliseconds (measured on a
/// VM whose DAMON pageout scheme was on: 1–4 ms every ~0.5 s, 97% of them on the core of
/// rimd's HTTP server, the p99 of 10k requests/s).
fn damon_of(kdamonds: Option<Vec<host::Kdamond>>, reclaim: Option<bool>) -> Check {
    let wanted = "no DAMON worker (kdamond) running".to_owned();
    if kdamonds.is_none() && reclaim.is_none() {
        return Check::skip("damon", false, "no DAMON interface", wanted);
    }
    let on = kdamonds.unwrap_or_default();
    let reclaim = reclaim == Some(true);
    let mut found: Vec<String> = on
        .iter()
        .map(|k| match &k.pid {
            Some(pid) => format!("kdamond {} on (pid {pid})", k.index),
            None => format!("kdamond {} on", k.index),
        })
        .collect();
    if reclaim {
        found.push("damon_reclaim enabled".to_owned());
    }
    let pass = found.is_empty();
    Check::judge(
        "damon",
        false,
        pass,
        if pass { "none running".to_owned() } else { found.join("; ") },
        wanted,
        "stop it (echo off > /sys/kernel/mm/damon/admin/kdamonds/N/state; echo N > /sys/module/damon_reclaim/parameters/enabled) or keep it off rimd's cores (taskset -pc <a core rimd does not use> <pid>): each pass takes a core for milliseconds",
    )
}

fn thp() -> Check {
    let wanted = "always or madvise".to_owned();
    let Some(mode) = host::thp_mode() else {
        return Check::skip("thp", false, "not exposed", wanted);
    };
    Check::judge(
        "thp",
        false,
        mode != "never",
        mode,
        wanted,
        "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled: rimd advises huge pages for its per-node tables",
    )
}

fn clocksource() -> Check {
    let wanted = "tsc".to_owned();
    let Some(source) = host::clocksource() else {
        return Check::skip("clocksource", false, "not exposed", wanted);
    };
    Check::judge(
        "clocksource",
        false,
        source == "tsc",
        source,
        wanted,
        "boot with tsc=reliable (if the TSC is invariant): every latency stamp reads the clock",
    )
}

fn memlock(config: &Config) -> Check {
    // hot + cold + one per further reflex shard + the HTTP server's executor.
    let executors = 1 + config.topology.reflex_shards as u64 + u64::from(config.api.enabled);
    let need = executors * MEMLOCK_PER_EXECUTOR_BYTES;
    let wanted = format!(">= {} ({executors} glommio executors × 512 KiB)", bytes(need));
    match host::memlock_limit() {
        None => Check::skip("memlock", true, "not exposed", wanted),
        Some(limit) => Check::judge(
            "memlock",
            true,
            limit.is_none_or(|l| l >= need),
            limit.map_or_else(|| "unlimited".to_owned(), bytes),
            wanted,
            "raise RLIMIT_MEMLOCK: ulimit -l, /etc/security/limits.conf, or LimitMEMLOCK= in the systemd unit",
        ),
    }
}

fn io_uring() -> Check {
    let sysctl = host::io_uring_disabled();
    // The journal's own probe: it creates a ring as its sequential readers do.
    let works = rim_journal::storage::io_uring_works();
    let found = format!(
        "{}; kernel.io_uring_disabled = {}",
        if works {
            "a ring was created"
        } else {
            "creating a ring failed"
        },
        sysctl.map_or_else(|| "absent".to_owned(), |v| v.to_string())
    );
    Check::judge(
        "io_uring",
        true,
        works,
        found,
        "available (glommio runs on it; the journal's sequential reads use it)".into(),
        "sysctl kernel.io_uring_disabled=0, and allow io_uring_setup in any seccomp profile",
    )
}

/// Bytes of shared memory the configuration maps at most: every producer ring at its
/// largest, each shard's decision ring, the stats segment.
fn ring_bytes_max(config: &Config) -> u64 {
    let producers =
        config.ingest.producers_max as u64 * rim_ring::spsc::segment_bytes(config.ingest.ring_capacity_max) as u64;
    let decisions = rim_ring::broadcast::segment_bytes(config.decisions.slots, config.decisions.slot_bytes).unwrap_or(0)
        as u64
        * config.topology.reflex_shards as u64;
    producers + decisions + config.stats.segment_bytes as u64
}

fn shm(config: &Config) -> Check {
    let run_dir = &config.daemon.run_dir;
    let stats = config.stats.segment_bytes as u64;
    let rings = ring_bytes_max(config);
    let wanted = format!(
        "{} in the run dir for the stats segment; {} of memory for rings at their configured maxima",
        bytes(stats),
        bytes(rings)
    );
    let Some(fs) = host::fs_info(run_dir) else {
        return Check::skip("shm", true, "run dir's file system not found", wanted);
    };
    let available = host::mem_available().unwrap_or(u64::MAX);
    let found = format!(
        "{} ({}) {} free{}; {} memory available",
        fs.mount.display(),
        fs.fstype,
        bytes(fs.free_bytes),
        if fs.writable { "" } else { ", not writable" },
        bytes(available)
    );
    let mut check = Check::judge(
        "shm",
        true,
        fs.writable && fs.free_bytes >= stats,
        found,
        wanted,
        &format!(
            "give daemon.run_dir ({}) a writable tmpfs with room: mount -o remount,size=… /dev/shm",
            run_dir.display()
        ),
    );
    // Producer and decision rings are sealed memfds: memory, not /dev/shm's size limit.
    if check.status == Status::Ok && (available < rings || fs.fstype != "tmpfs") {
        check.status = Status::Warn;
        check.action = if fs.fstype != "tmpfs" {
            "put daemon.run_dir on tmpfs (/dev/shm): the stats segment is rewritten every interval".to_owned()
        } else {
            "lower ingest.producers_max or ingest.ring_capacity_max, or add memory".to_owned()
        };
    }
    check
}

fn data_dir(config: &Config) -> Check {
    let p = &config.persist;
    if !p.enabled {
        return Check::judge("data_dir", true, true, "persistence off".into(), "-".into(), "");
    }
    // Each partition preallocates a segment; the store and its checkpoints need room too.
    let need = u64::from(config.topology.partitions) * p.segment_bytes * 2;
    let retention = u64::from(config.topology.partitions).saturating_mul(p.retention_bytes);
    let wanted = format!(
        "a disk file system, writable, >= {} free ({} at full retention)",
        bytes(need),
        bytes(retention)
    );
    let Some(fs) = host::fs_info(&p.data_dir) else {
        return Check::skip("data_dir", true, "file system not found", wanted);
    };
    let found = format!(
        "{} on {} ({}) {} free{}",
        fs.path.display(),
        fs.mount.display(),
        fs.fstype,
        bytes(fs.free_bytes),
        if fs.writable { "" } else { ", not writable" }
    );
    let mut check = Check::judge(
        "data_dir",
        true,
        fs.writable && fs.free_bytes >= need,
        found,
        wanted,
        &format!(
            "point persist.data_dir ({}) at a writable disk with room",
            p.data_dir.display()
        ),
    );
    let volatile = matches!(fs.fstype.as_str(), "tmpfs" | "ramfs");
    if check.status == Status::Ok && (volatile || fs.free_bytes < retention) {
        check.status = Status::Warn;
        check.action = if volatile {
            "a journal on tmpfs does not survive a reboot: use a disk".to_owned()
        } else {
            "lower persist.retention_bytes or retention_hours, or add disk".to_owned()
        };
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sets: &[&str]) -> Config {
        let sets: Vec<String> = sets.iter().map(|s| (*s).to_owned()).collect();
        Config::load_unchecked(None, std::iter::empty(), &sets).expect("config")
    }

    #[test]
    fn hot_cores_are_the_hot_shard_and_the_other_reflex_shards() {
        let c = config(&[
            "topology.hot_core=3",
            "topology.reflex_shards=3",
            "topology.reflex_cores=[5, 4]",
        ]);
        assert_eq!(hot_cores(&c), vec![3, 4, 5]);
    }

    #[test]
    fn a_required_check_fails_and_an_advisory_one_warns() {
        let failed = Check::judge("x", true, false, "a".into(), "b".into(), "do it");
        assert_eq!((failed.status, failed.action.as_str()), (Status::Fail, "do it"));
        let warned = Check::judge("x", false, false, "a".into(), "b".into(), "do it");
        assert_eq!(warned.status, Status::Warn);
        let passed = Check::judge("x", true, true, "a".into(), "b".into(), "do it");
        assert_eq!((passed.status, passed.action.as_str()), (Status::Ok, ""));
    }

    #[test]
    fn an_unreadable_configuration_fails_config_and_keeps_one_line_per_check() {
        let read = all(&config(&[]));
        let unread = unreadable("no such key");
        let names = |c: &[Check]| c.iter().map(|c| (c.check, c.required)).collect::<Vec<_>>();
        assert_eq!(names(&unread), names(&read));
        assert_eq!(unread[0].status, Status::Fail);
        assert_eq!(unread.iter().filter(|c| c.status == Status::Fail).count(), 1);
    }

    #[test]
    fn a_running_damon_worker_or_reclaim_warns_and_no_interface_skips() {
        let k = |i: &str, pid: Option<&str>| host::Kdamond {
            index: i.into(),
            pid: pid.map(Into::into),
        };
        let none = damon_of(Some(vec![]), Some(false));
        assert_eq!((none.status, none.found.as_str()), (Status::Ok, "none running"));
        assert!(none.action.is_empty());
        let one = damon_of(Some(vec![k("0", Some("83"))]), None);
        assert_eq!(one.status, Status::Warn);
        assert_eq!(one.found, "kdamond 0 on (pid 83)");
        assert!(one.action.contains("kdamonds/N/state"), "{}", one.action);
        let both = damon_of(Some(vec![k("0", None), k("1", Some("9"))]), Some(true));
        assert_eq!(both.found, "kdamond 0 on; kdamond 1 on (pid 9); damon_reclaim enabled");
        assert_eq!(damon_of(None, Some(true)).status, Status::Warn);
        assert_eq!(damon_of(None, None).status, Status::Skip);
        assert!(!damon_of(None, None).required);
    }

    #[test]
    fn memory_for_rings_counts_every_producer_at_its_largest() {
        let c = config(&["ingest.producers_max=2", "ingest.ring_capacity_max=1048576"]);
        let one = rim_ring::spsc::segment_bytes(1 << 20) as u64;
        assert!(ring_bytes_max(&c) > 2 * one, "{}", ring_bytes_max(&c));
    }
}
