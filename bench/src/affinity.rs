//! Pinning threads to cores. The client of a measurement and its peer (thread or process)
//! always sit on different cores: two spinners on one core never make progress.

use core_affinity::CoreId;

use crate::error::BenchError;

/// Pins the calling thread to core `core` (an id as `core_affinity` reports it).
pub fn pin_current_thread(core: usize) -> Result<(), BenchError> {
    let available = available_cores();
    if !available.contains(&core) || !core_affinity::set_for_current(CoreId { id: core }) {
        return Err(BenchError::Pin { core, available });
    }
    Ok(())
}

/// The core ids this process may run on.
pub fn available_cores() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|core| core.id)
        .collect()
}
