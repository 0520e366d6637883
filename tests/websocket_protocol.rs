//! The decision WebSocket speaks RFC 6455 strictly and keeps only live peers: a text
//! frame that is not UTF-8 is closed with 1007, an unmasked frame with 1002; the server
//! pings a quiet client and drops it when it does not answer, while a client that answers
//! stays. A real daemon, a real socket.

mod common;

use std::time::{Duration, Instant};

use common::{get, Daemon, WsClient, HTTP_SETS};

fn daemon(extra: &[&str]) -> (Daemon, String) {
    let sets: Vec<&str> = HTTP_SETS.iter().chain(extra.iter()).copied().collect();
    let mut d = Daemon::start(&sets, None);
    let addr = d.http_addr();
    (d, addr)
}

const PATH: &str = "/api/v1/ws/decisions";

/// The close code of the next close frame within `timeout`.
fn close_code(ws: &mut WsClient, timeout: Duration) -> Option<u16> {
    let deadline = Instant::now() + timeout;
    while let Some((op, payload)) = ws.next_frame(deadline.saturating_duration_since(Instant::now())) {
        if op == 0x8 {
            return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        }
    }
    None
}

#[test]
fn invalid_utf8_closes_with_1007_and_protocol_errors_with_1002() {
    let (_d, addr) = daemon(&[]);
    let mut ws = WsClient::connect(&addr, PATH, &[]);
    ws.send_text("PING");
    assert_eq!(ws.next_text(Duration::from_secs(5)).as_deref(), Some("PONG"));
    ws.send(0x1, &[b'o', 0xff, 0xfe, b'k']);
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)), Some(1007));
    assert!(ws.closed_within(Duration::from_secs(5)), "still open after the close");

    let mut raw = WsClient::connect(&addr, PATH, &[]);
    // A frame without the client's mask.
    raw.send_unmasked(0x1, b"x");
    assert_eq!(close_code(&mut raw, Duration::from_secs(5)), Some(1002));
}

#[test]
fn a_silent_client_is_pinged_then_dropped_and_an_answering_one_stays() {
    let (_d, addr) = daemon(&["api.ws_ping_interval_ms=300", "api.ws_pong_timeout_ms=400"]);
    let mut silent = WsClient::connect(&addr, PATH, &[]);
    let started = Instant::now();
    // The silent one gets a ping and, not answering, is dropped.
    let (op, _) = silent.next_frame(Duration::from_secs(3)).expect("a ping");
    assert_eq!(op, 0x9, "expected a ping frame");
    assert!(silent.closed_within(Duration::from_secs(3)), "a silent client was kept");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    // The answering one answers each ping for a while and is still served (ten ping
    // intervals: on a loaded 2-core machine a debug daemon's timers run late). It connects
    // only now: connected beside the silent one, its first ping came while this thread was
    // still waiting for the silent one's drop, and its answer raced its own deadline.
    let mut answering = WsClient::connect(&addr, PATH, &[]);
    let until = Instant::now() + Duration::from_millis(3_000);
    let mut pings = 0;
    while Instant::now() < until {
        if let Some((0x9, payload)) = answering.next_frame(Duration::from_millis(100)) {
            answering.send(0xA, &payload);
            pings += 1;
        }
    }
    assert!(pings >= 2, "pings answered: {pings}");
    answering.send_text("PING");
    assert_eq!(answering.next_text(Duration::from_secs(5)).as_deref(), Some("PONG"));
    let metrics = get(&addr, "/api/v1/metrics").text();
    assert!(metrics.contains("rimd_http_ws_dropped_silent_total 1\n"), "{metrics}");
}
