//! A peer cannot flood the daemon's log: lines about bad attach connections are
//! rate-limited, every suppressed line is counted (`attach.log_suppressed`), and a
//! summary line says how many were left out.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;

use common::{counter, Daemon, SOON};

const BAD: u64 = 500;

#[test]
fn bad_connections_do_not_flood_the_log() {
    let mut d = Daemon::start(&[], Some(""));
    for _ in 0..BAD {
        let mut s = UnixStream::connect(d.socket()).expect("connect");
        s.write_all(&[0xAA; 64]).expect("garbage request");
    }
    let s = d.wait_for(SOON, "every bad request seen", |s| counter(s, "attach.failed") == BAD);
    let suppressed = counter(&s, "attach.log_suppressed");
    let warned = d
        .log_text()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("attach request refused"))
        .count() as u64;
    assert!(
        warned + suppressed == BAD && warned <= BAD / 10,
        "{warned} lines written, {suppressed} suppressed, of {BAD} bad connections"
    );
    // When the window ends, one line reports what it left out.
    let deadline = std::time::Instant::now() + SOON;
    while !d.log_text().contains("lines suppressed") {
        assert!(
            std::time::Instant::now() < deadline,
            "no summary line\n{}",
            d.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
