//! Fault injection for the tests of a hot shard that dies or stops advancing
//! (the workspace's `tests/shard_health.rs`): readiness must see it, a panic must end the process, and
//! SIGTERM must still end it. No real input can make a shard panic or hang (that is the
//! point of the rest of the code), so the tests need a seam.
//!
//! Debug builds only: in a release build [`on_node`] is an empty inline function and the
//! environment is never read. In a debug build, `RIM_FAULT_SHARD=panic` (or `stall`)
//! together with `RIM_FAULT_NODE=<node id>` makes the reflex shard that first sees that
//! node panic (or stop its loop for good, sleeping) at that moment. (The variables do not
//! start with `RIMD_`, which the configuration reads as settings.)

/// Called by a reflex shard when it learns a node's id (once per node and shard).
#[inline]
pub fn on_node(id: &str) {
    #[cfg(debug_assertions)]
    debug_only::on_node(id);
    #[cfg(not(debug_assertions))]
    let _ = id;
}

#[cfg(debug_assertions)]
mod debug_only {
    use std::sync::OnceLock;

    /// What to do, and at which node.
    enum Fault {
        Panic(String),
        Stall(String),
    }

    fn configured() -> Option<&'static Fault> {
        static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
        FAULT
            .get_or_init(|| {
                let node = std::env::var("RIM_FAULT_NODE").ok()?;
                match std::env::var("RIM_FAULT_SHARD").ok()?.as_str() {
                    "panic" => Some(Fault::Panic(node)),
                    "stall" => Some(Fault::Stall(node)),
                    _ => None,
                }
            })
            .as_ref()
    }

    pub(super) fn on_node(id: &str) {
        match configured() {
            Some(Fault::Panic(node)) if node == id => {
                panic!("fault injection (RIM_FAULT_SHARD=panic): the shard panics at node {id}")
            }
            Some(Fault::Stall(node)) if node == id => {
                tracing::warn!(
                    node = id,
                    "fault injection (RIM_FAULT_SHARD=stall): the shard stops advancing"
                );
                loop {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            _ => {}
        }
    }
}
