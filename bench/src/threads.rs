//! A process's threads as `/proc/<pid>/task/*` shows them: name, time on a CPU
//! (`schedstat`'s first field, ns, kept by the scheduler) and voluntary context switches.
//! Suites read them at the start and the end of a window and compare by thread id.

use std::collections::HashMap;

/// One thread at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Thread {
    pub name: String,
    pub cpu_ns: u64,
    pub voluntary: u64,
}

/// Every thread of `pid`, by thread id; a thread that ends while it is read is left out.
/// Fails only when the process's task list cannot be listed (a process that is gone).
pub fn read(pid: u32) -> std::io::Result<HashMap<u32, Thread>> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let path = entry.path();
        let file = |name: &str| std::fs::read_to_string(path.join(name)).ok();
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        let (Some(name), Some(sched), Some(status)) = (file("comm"), file("schedstat"), file("status")) else {
            continue;
        };
        out.insert(
            tid,
            Thread {
                name: name.trim().to_owned(),
                cpu_ns: schedstat_ns(&sched).unwrap_or(0),
                voluntary: voluntary_switches(&status).unwrap_or(0),
            },
        );
    }
    Ok(out)
}

/// The first field of a `schedstat` file: ns on a CPU.
pub fn schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

fn voluntary_switches(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_parse_and_garbage_is_none() {
        assert_eq!(schedstat_ns("123 45 6\n"), Some(123));
        assert_eq!(schedstat_ns("garbage"), None);
        assert_eq!(voluntary_switches("Name:\tx\nvoluntary_ctxt_switches:\t42\n"), Some(42));
        assert_eq!(voluntary_switches("nothing here"), None);
    }

    #[test]
    fn this_process_lists_this_thread() {
        let me = read(std::process::id()).expect("own threads");
        let tid = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok())
            .expect("own thread id");
        assert!(me.contains_key(&tid), "{me:?}");
    }
}
