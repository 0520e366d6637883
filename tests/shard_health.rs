//! A dead or stalled hot shard is never a zombie: readiness answers 503 naming a shard
//! whose loop stopped turning, a panic on a shard ends the process with a message naming
//! it, and SIGTERM always ends the process. The shard is made to panic or stall through
//! the debug-only fault seam (`core/src/fault.rs`): no real input can do it any more.

mod common;

use std::time::{Duration, Instant};

use common::{event, get, Daemon, TempDir, SOON, T0};

const FAULT_NODE: &str = "rim:sensor:fault:here";

fn faulty_daemon(fault: &str) -> Daemon {
    Daemon::start_with(
        TempDir::new("fault"),
        &["api.enabled=true", "topology.shard_stall_ms_max=500"],
        Some(""),
        |cmd| {
            cmd.env("RIM_FAULT_SHARD", fault).env("RIM_FAULT_NODE", FAULT_NODE);
        },
    )
}

/// Polls `/health/ready` until it answers `status`; returns the body.
#[track_caller]
fn wait_ready_status(d: &mut Daemon, status: u16) -> serde_json::Value {
    let a = d.http_addr();
    let deadline = Instant::now() + SOON;
    loop {
        let r = get(&a, "/api/v1/health/ready");
        if r.status == status {
            return r.json();
        }
        assert!(
            Instant::now() < deadline,
            "readiness still {} ({}), not {status}\n{}",
            r.status,
            r.text(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stalled_shard_is_named_by_readiness_and_sigterm_still_ends_the_process() {
    let mut d = faulty_daemon("stall");
    wait_ready_status(&mut d, 200);
    let mut p = d.producer("staller", 1 << 16);
    p.publish(&event(FAULT_NODE, T0, &[("v", 1.0)]));
    let body = wait_ready_status(&mut d, 503);
    let shards = body["data"]["components"]
        .as_array()
        .and_then(|c| c.iter().find(|x| x["name"] == "shards"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(shards["status"], "down", "{body}");
    let reason = shards["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("rimd-hot") && reason.contains("stalled"), "{body}");
    // Liveness is about the process, which still answers.
    assert_eq!(get(&d.http_addr(), "/api/v1/health/live").status, 200);

    let status = d.sigterm();
    assert!(!status.success(), "exits, and says it left a shard behind: {status}");
    assert!(d.log_text().contains("did not stop"), "{}", d.log_text());
}

#[test]
fn a_panicking_shard_ends_the_process_with_a_message() {
    let mut d = faulty_daemon("panic");
    wait_ready_status(&mut d, 200);
    let mut p = d.producer("panicker", 1 << 16);
    p.publish(&event(FAULT_NODE, T0, &[("v", 1.0)]));
    let status = d.wait_exit(SOON);
    assert_eq!(status.code(), Some(rimd::daemon::EXIT_PANIC), "{}", d.log_text());
    let log = d.log_text();
    assert!(log.contains("thread rimd-hot panicked"), "{log}");
}
