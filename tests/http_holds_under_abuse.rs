//! The HTTP server holds against clients that try to hold it: a client that trickles its
//! header, one that sends half a body, and one that connects and says nothing are cut
//! after their timeouts; connections beyond `api.connections_max` are closed at once while
//! the clients already connected keep their answers; every cut and refusal is in
//! `/metrics`. A real daemon, real sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{get, Daemon, HTTP_SETS};

fn daemon(extra: &[&str]) -> (Daemon, String) {
    let sets: Vec<&str> = HTTP_SETS.iter().chain(extra.iter()).copied().collect();
    let mut d = Daemon::start(&sets, None);
    let addr = d.http_addr();
    (d, addr)
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s
}

/// Reads until the server closes the connection; how long that took, or None if it was
/// still open after `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return None,
            // A reset is a close too.
            Err(_) => return Some(started.elapsed()),
        }
    }
}

/// One keep-alive `GET` on an open connection; the status and body.
fn keep_alive_get(s: &mut TcpStream, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: rimd\r\n\r\n");
    s.write_all(req.as_bytes()).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("read an answer");
        assert!(n > 0, "the server closed a connection it should have kept");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        let Some(head_end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = &text[..head_end];
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .expect("content-length");
        if got.len() >= head_end + 4 + len {
            let status = head[9..12].parse().expect("status");
            return (status, text[head_end + 4..head_end + 4 + len].to_owned());
        }
    }
}

fn metric(addr: &str, line_start: &str) -> u64 {
    let text = get(addr, "/api/v1/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start).map(|v| v.trim().parse().expect("a number")))
        .unwrap_or_else(|| panic!("no metric {line_start} in:\n{text}"))
}

#[test]
fn slow_headers_slow_bodies_and_silent_clients_are_cut_after_their_timeouts() {
    let (_d, addr) = daemon(&[
        "api.header_read_timeout_ms=400",
        "api.body_read_timeout_ms=400",
        "api.idle_timeout_ms=800",
    ]);
    // Slowloris: a header trickled a byte every 100 ms, which never completes.
    let mut slow = connect(&addr);
    let trickle = b"GET /api/v1/ping HTTP/1.1\r\nHost: rimd\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    let mut cut_after = None;
    for b in trickle {
        if slow.write_all(&[*b]).is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cut_after = cut_after
        .or_else(|| closed_within(&mut slow, Duration::from_secs(3)).map(|_| started.elapsed()))
        .expect("the slow header was not cut");
    assert!(
        cut_after >= Duration::from_millis(400) && cut_after < Duration::from_secs(3),
        "cut after {cut_after:?}"
    );

    // Half a body: the header is complete, the body never is.
    let mut half = connect(&addr);
    half.write_all(
        b"POST /api/v1/events HTTP/1.1\r\nHost: rimd\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n[{\"rim_node_id\":",
    )
    .expect("write");
    let took = closed_within(&mut half, Duration::from_secs(3)).expect("the slow body was not cut");
    assert!(took >= Duration::from_millis(300), "cut after {took:?}");

    // Silent: connects and sends nothing.
    let mut silent = connect(&addr);
    let took = closed_within(&mut silent, Duration::from_secs(4)).expect("the silent client was not cut");
    assert!(took >= Duration::from_millis(700), "cut after {took:?}");

    // A keep-alive client that asks in time is served, and kept between its requests.
    let mut polite = connect(&addr);
    for _ in 0..3 {
        assert_eq!(keep_alive_get(&mut polite, "/api/v1/ping").0, 200);
        std::thread::sleep(Duration::from_millis(300));
    }

    assert!(metric(&addr, "rimd_http_connections_cut_total{reason=\"header\"}") >= 1);
    assert!(metric(&addr, "rimd_http_connections_cut_total{reason=\"body\"}") >= 1);
    assert!(metric(&addr, "rimd_http_connections_cut_total{reason=\"idle\"}") >= 1);
}

#[test]
fn connections_over_the_cap_are_refused_while_connected_clients_keep_their_answers() {
    let (_d, addr) = daemon(&["api.connections_max=4"]);
    let mut kept: Vec<TcpStream> = (0..4).map(|_| connect(&addr)).collect();
    // Each is served once, so all four are surely open on the server's side.
    for s in &mut kept {
        assert_eq!(keep_alive_get(s, "/api/v1/ping").0, 200);
    }
    for _ in 0..3 {
        let mut over = connect(&addr);
        // Written before the server closes it or after (then refused by a reset):
        // either way no answer comes, and the connection ends at once.
        let _ = over.write_all(b"GET /api/v1/ping HTTP/1.1\r\nHost: rimd\r\n\r\n");
        let took = closed_within(&mut over, Duration::from_secs(3)).expect("an over-cap connection stayed open");
        assert!(took < Duration::from_secs(1), "closed only after {took:?}");
    }
    for s in &mut kept {
        let (status, body) = keep_alive_get(s, "/api/v1/ping");
        assert_eq!(status, 200, "{body}");
    }
    // One leaves: a newcomer is served again. (Its slot frees once the server sees the
    // close.)
    drop(kept.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    let newcomer = loop {
        let mut s = connect(&addr);
        let _ = s.write_all(b"GET /api/v1/ping HTTP/1.1\r\nHost: rimd\r\n\r\n");
        let mut buf = [0u8; 12];
        if s.read_exact(&mut buf).is_ok() && &buf[9..12] == b"200" {
            break s;
        }
        assert!(Instant::now() < deadline, "no slot freed after a client left");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = newcomer.shutdown(std::net::Shutdown::Both);
    let scrape = &mut kept[0];
    let (status, text) = keep_alive_get(scrape, "/api/v1/metrics");
    assert_eq!(status, 200);
    let refused: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("rimd_http_connections_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the refused counter");
    assert!(refused >= 3, "refused {refused}");
    assert!(text.contains("rimd_http_connections_max 4\n"), "{text}");
}
