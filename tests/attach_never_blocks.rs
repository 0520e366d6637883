//! One silent or trickling peer on the control socket never holds up another: a producer
//! attaches at once while other connections send nothing; connections past the cap of
//! pending attaches per process are refused at once ("busy"), and every silent one is
//! answered and dropped when its deadline passes.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{child_socket, counter, event, ChildProc, Daemon, SOON, T0};

/// Silent connections from the test process: the cap per process is a quarter of
/// `ingest.attach_pending_max` (64), so 16 wait and 4 are refused at once.
const SILENT: usize = 20;
const PER_PID: usize = 16;

/// Status and message of a reply read from `s` (fails the test if none comes).
fn reply(s: &mut UnixStream) -> (u32, String) {
    s.set_read_timeout(Some(SOON)).expect("timeout");
    let mut msg = [0u8; 64];
    s.read_exact(&mut msg).expect("a reply to every connection");
    assert_eq!(&msg[0..8], b"RIMREPLY");
    let status = u32::from_le_bytes([msg[8], msg[9], msg[10], msg[11]]);
    let text = &msg[16..];
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    (status, String::from_utf8_lossy(&text[..end]).into_owned())
}

#[test]
fn silent_peers_do_not_hold_up_an_attach() {
    if let Some(socket) = child_socket("attacher") {
        // The well-behaved producer, in a process of its own.
        match rim_ring::attach::attach_producer(&socket, "on-time", 1 << 16) {
            Ok(p) => {
                let mut f = common::Feed::new(p);
                f.publish(&event("rim:sensor:attach:n1", T0, &[("v", 1.0)]));
                assert!(f.wait_consumed(SOON));
                println!("attached=ok");
            }
            Err(e) => println!("attached=err:{}", e.to_string().replace(' ', "_")),
        }
        return;
    }
    let mut d = Daemon::start(&["ingest.attach_timeout_ms=3000"], Some(""));
    let mut silent: Vec<UnixStream> = (0..SILENT)
        .map(|_| UnixStream::connect(d.socket()).expect("connect"))
        .collect();
    // A trickler: half a request, then nothing. It is past the cap, so the daemon may
    // have answered "busy" and closed it before the write: a broken pipe then is the
    // refusal arriving first (its reply is still read below), not a failure.
    let mut trickler = UnixStream::connect(d.socket()).expect("connect");
    match trickler.write_all(b"RIMATTCH\x01\x00\x00\x00") {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("part of a request: {e}"),
    }

    let mut child = ChildProc::spawn(
        "silent_peers_do_not_hold_up_an_attach",
        "attacher",
        d.dir(),
        &d.socket(),
    );
    let got = child.wait_reported("attached", Duration::from_secs(60));
    assert_eq!(got, "ok", "the attach waited behind silent peers\n{}", child.log());

    // Every silent connection is answered: the ones past the cap at once ("busy"), the
    // others when their deadline passes.
    let answers: Vec<(u32, String)> = silent.iter_mut().map(reply).collect();
    let busy = answers.iter().filter(|(_, m)| m.starts_with("busy")).count();
    let late = answers
        .iter()
        .filter(|(_, m)| m.contains("not received in time"))
        .count();
    assert_eq!((busy, late), (SILENT - PER_PID, PER_PID), "{answers:?}");
    assert!(answers.iter().all(|(status, _)| *status == 1), "{answers:?}");
    assert!(
        reply(&mut trickler).1.starts_with("busy"),
        "the trickler is past the cap too"
    );

    let s = d.wait_for(SOON, "the refusals counted", |s| {
        counter(s, "attach.timed_out") == PER_PID as u64
    });
    assert_eq!(
        counter(&s, "attach.busy"),
        (SILENT - PER_PID + 1) as u64,
        "the trickler too"
    );
    assert_eq!(counter(&s, "ingest.events_accepted"), 1);
}

/// A peer that sends its request slowly, byte by byte within the deadline, still attaches,
/// and holds up no one meanwhile.
#[test]
fn a_slow_but_timely_request_is_served() {
    let d = Daemon::start(&["ingest.attach_timeout_ms=10000"], Some(""));
    let mut slow = UnixStream::connect(d.socket()).expect("connect");
    let mut req = [0u8; 64];
    req[0..8].copy_from_slice(b"RIMATTCH");
    req[8..12].copy_from_slice(&1u32.to_le_bytes());
    req[12..16].copy_from_slice(&1u32.to_le_bytes());
    req[16..24].copy_from_slice(&(1u64 << 16).to_le_bytes());
    req[24..28].copy_from_slice(b"slow");
    slow.write_all(&req[..10]).expect("first bytes");
    // Meanwhile another producer attaches.
    let mut other = d.producer("meanwhile", 1 << 16);
    other.publish(&event("rim:sensor:attach:n2", T0, &[("v", 1.0)]));
    assert!(other.wait_consumed(SOON));
    for chunk in req[10..].chunks(9) {
        slow.write_all(chunk).expect("more bytes");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (status, message) = reply(&mut slow);
    assert_eq!((status, message.as_str()), (0, "ok"));
}
