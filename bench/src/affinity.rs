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
fn online_cores() -> usize {
    // SAFETY: sysconf has no preconditions; a negative result means "unknown".
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online).unwrap_or(0)
}
