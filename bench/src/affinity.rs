//! Pinning threads to cores. The client of a measurement and its peer (thread or process)
//! always sit on different cores: two spinners on one core never make progress.

use core_affinity::CoreId;

use crate::error::BenchError;

/// Pins the calling thread to core `core`.
pub fn pin_current_thread(core: usize) -> Result<(), BenchError> {
    if core_affinity::set_for_current(CoreId { id: core }) {
        return Ok(());
    }
    Err(BenchError::Pin {
        core,
        online: online_cores(),
    })
}

/// How many cores the machine has online. (Not `core_affinity::get_core_ids`, which lists
/// only the cores the calling thread may already run on: after pinning, just one.)
pub fn online_cores() -> usize {
    // SAFETY: sysconf has no preconditions; a negative result means "unknown".
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online).unwrap_or(0)
}

/// Makes a process the harness spawns die with the harness (`PR_SET_PDEATHSIG`) and free
/// to run on every core: the harness thread that spawns it may be pinned, and a daemon
/// checks its topology against the cores it sees and pins its own threads.
pub fn child_of_harness(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the forked child before exec; prctl and sched_setaffinity are plain
    // syscalls (async-signal-safe) and nothing here allocates; `all` is a local, fully
    // initialised cpu_set_t.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut all: libc::cpu_set_t = std::mem::zeroed();
            for c in 0..libc::CPU_SETSIZE as usize {
                libc::CPU_SET(c, &mut all);
            }
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &all);
            Ok(())
        });
    }
}
