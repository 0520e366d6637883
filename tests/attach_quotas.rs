//! No process or user can take every producer slot: rings and ring bytes are limited per
//! process (pid) and per user (uid), as the kernel reports them for the socket, each
//! refusal naming its setting; and the in-process intake rings of the HTTP API and the
//! Kafka bridge count against none of it.

mod common;

use rim_ring::attach::{attach_producer, AttachError};

use common::{child_socket, ChildProc, Daemon, SOON};

const KIB_64: usize = 1 << 16;

/// Attaches a ring of `capacity` bytes; the refusal's message if refused.
fn try_attach(socket: &std::path::Path, name: &str, capacity: usize) -> Result<rim_ring::Producer, String> {
    attach_producer(socket, name, capacity).map_err(|e| match e {
        AttachError::Refused(m) => m,
        other => panic!("attach failed other than by refusal: {other}"),
    })
}

#[test]
fn rings_per_process_and_per_user_are_limited() {
    if let Some(socket) = child_socket("second-process") {
        // Same user, another process: one more ring fits the user's quota, then no more.
        let first = try_attach(&socket, "child-1", KIB_64).map(|_| "ok".to_owned());
        let second = try_attach(&socket, "child-2", KIB_64)
            .err()
            .unwrap_or_else(|| "ok".into());
        println!(
            "first={} second={}",
            first.unwrap_or_else(|e| e),
            second.replace(' ', "_")
        );
        // Keep the ring until the parent has read the answer.
        std::thread::sleep(std::time::Duration::from_secs(2));
        return;
    }
    let d = Daemon::start(
        &[
            "ingest.producers_max=8",
            "ingest.rings_per_pid_max=2",
            "ingest.rings_per_uid_max=3",
        ],
        Some(""),
    );
    let _a = try_attach(&d.socket(), "mine-1", KIB_64).expect("first ring");
    let _b = try_attach(&d.socket(), "mine-2", KIB_64).expect("second ring");
    let third = try_attach(&d.socket(), "mine-3", KIB_64).expect_err("a third is refused");
    assert!(third.contains("rings_per_pid_max"), "{third}");

    let mut child = ChildProc::spawn(
        "rings_per_process_and_per_user_are_limited",
        "second-process",
        d.dir(),
        &d.socket(),
    );
    assert_eq!(child.wait_reported("first", SOON), "ok", "{}", child.log());
    let second = child.wait_reported("second", SOON);
    assert!(second.contains("rings_per_uid_max"), "{second}");
}

#[test]
fn ring_bytes_per_process_are_limited() {
    let d = Daemon::start(
        &[
            "ingest.ring_capacity_max=1048576",
            "ingest.ring_bytes_per_pid_max=1572864",
        ],
        Some(""),
    );
    let _big = try_attach(&d.socket(), "big", 1 << 20).expect("1 MiB fits");
    let refused = try_attach(&d.socket(), "big-2", 1 << 20).expect_err("2 MiB do not");
    assert!(refused.contains("ring_bytes_per_pid_max"), "{refused}");
    let _small = try_attach(&d.socket(), "small", 1 << 18).expect("1.25 MiB fit");
}

/// The case: the HTTP API's intake ring used to take one of `producers_max`.
#[test]
fn the_intake_rings_are_outside_the_producers_budget() {
    let mut d = Daemon::start(&["ingest.producers_max=1", "api.enabled=true"], Some(""));
    let _ = d.http_addr();
    let _only = try_attach(&d.socket(), "the-one", KIB_64).expect("the one producer slot is free");
    let refused = try_attach(&d.socket(), "one-too-many", KIB_64).expect_err("the second is refused");
    assert!(refused.contains("producers_max"), "{refused}");
    d.wait_for(SOON, "one producer, the intake not counted", |s| {
        common::gauge(s, "producers") == 1
    });
}
