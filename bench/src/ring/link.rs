//! The measurement protocol of the `ring` suite, written once over a [`Link`] (one end of a
//! two-way message transport) and used by every row.
//!
//! Round trips ([`client_round_trips`] against [`serve_echo`]): one message in flight; the
//! client stamps the payload with its send time (CLOCK_MONOTONIC ns), the echo sends the same
//! bytes back, the client records now − stamp. Warm-up round trips are not recorded; the
//! recording ends after [`RttPlan::measured`] round trips or [`RttPlan::budget`], whichever
//! comes first.
//!
//! Streaming ([`client_stream`] against [`serve_sink`]): the client sends
//! [`StreamPlan::messages`] messages stamped with their sequence number as fast as the link
//! accepts them (retrying when it is full), or fewer followed by an end-of-stream marker when
//! [`StreamPlan::budget`] runs out first; the sink checks each one's length and sequence,
//! notes the time its last one arrived and sends a [`SinkReport`] back. Throughput is
//! `received / (sink's last receive − client's first send)`; both read CLOCK_MONOTONIC, so
//! the times compare across processes.
//!
//! Both protocols end with a goodbye from the client: the serving side keeps its end open
//! until the client has received everything, so no transport can lose a last message to
//! its sender's teardown.

use std::time::Duration;

use crate::clock::monotonic_ns;
use crate::error::BenchError;
use crate::latency::{LatencyRecorder, LatencySummary};
use crate::payload::{read_stamp, sample_message, write_stamp, PAYLOAD_LEN, REPORT_LEN};
use crate::watchdog::{Spin, Watch};

/// One message: [`PAYLOAD_LEN`] bytes.
pub type Message = [u8; PAYLOAD_LEN];

/// The stamp of the goodbye message.
const BYE_STAMP: u64 = u64::MAX;

/// The stamp of the end-of-stream marker (sent only when the budget cut a stream short).
const END_STAMP: u64 = u64::MAX - 1;

/// Streamed messages sent between two looks at the stream's clock budget.
const SENDS_PER_BUDGET_CHECK: u64 = 1024;

/// One end of a two-way message transport.
pub trait Link {
    /// `true` when `send`/`recv` wait in the kernel (bounded by a short socket timeout)
    /// before reporting "not yet"; the loops then check the watchdog after every miss.
    const WAITS_IN_KERNEL: bool = false;

    /// Offers one message; `Ok(false)` when the transport cannot take it yet (full, or the
    /// other side not connected yet): the caller retries.
    fn send(&mut self, msg: &Message) -> Result<bool, BenchError>;

    /// Takes the next message into `buf` if one has arrived; returns its length as sent
    /// (which may differ from [`PAYLOAD_LEN`]; the caller checks).
    fn recv(&mut self, buf: &mut Message) -> Result<Option<usize>, BenchError>;
}

/// How many round trips to make.
#[derive(Debug, Clone, Copy)]
pub struct RttPlan {
    /// Round trips made first and not recorded.
    pub warmup: u64,
    /// Round trips recorded (at most).
    pub measured: u64,
    /// Recording stops early once it has lasted this long, so a slow transport cannot
    /// stretch a run without bound; the summary's `count` says how many were recorded.
    pub budget: Duration,
}

impl RttPlan {
    /// Messages the echo side handles.
    pub fn total(&self) -> u64 {
        self.warmup + self.measured
    }
}

/// How many messages to stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamPlan {
    /// Messages sent (at most).
    pub messages: u64,
    /// Sending stops early once it has lasted this long.
    pub budget: Duration,
}

/// What a stream measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamSummary {
    /// Messages the sink received (all that were sent).
    pub messages: u64,
    /// Messages per second, first send to last receive.
    pub events_per_s: f64,
}

/// What the sink sends back at the end of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkReport {
    /// CLOCK_MONOTONIC ns right after the last receive.
    pub end_ns: u64,
    /// Messages received.
    pub received: u64,
    /// Messages with a wrong length or an unexpected sequence number.
    pub mismatches: u64,
    /// Position in the stream of the first mismatch (`u64::MAX` if none).
    pub first_mismatch_at: u64,
}

impl SinkReport {
    /// The report as a message (four little-endian u64 at the start).
    pub fn encode(&self) -> Message {
        let mut msg = [0u8; PAYLOAD_LEN];
        let words = [self.end_ns, self.received, self.mismatches, self.first_mismatch_at];
        for (slot, word) in msg[..REPORT_LEN].chunks_exact_mut(8).zip(words) {
            slot.copy_from_slice(&word.to_le_bytes());
        }
        msg
    }

    /// Reads a report; `None` when `len` is not a whole message.
    pub fn decode(msg: &Message, len: usize) -> Option<Self> {
        if len != PAYLOAD_LEN {
            return None;
        }
        let word = |i: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&msg[i * 8..i * 8 + 8]);
            u64::from_le_bytes(bytes)
        };
        Some(Self {
            end_ns: word(0),
            received: word(1),
            mismatches: word(2),
            first_mismatch_at: word(3),
        })
    }
}

/// Counts a miss of a poll: spin, or (for kernel-waiting links) look at the watchdog now.
#[inline]
fn missed<L: Link>(spin: &mut Spin<'_>) -> Result<(), BenchError> {
    if L::WAITS_IN_KERNEL {
        spin.check()
    } else {
        spin.tick()
    }
}

/// Sends `msg`, retrying while the link is full.
#[inline]
fn send_one<L: Link>(link: &mut L, msg: &Message, mut spin: Spin<'_>) -> Result<(), BenchError> {
    while !link.send(msg)? {
        missed::<L>(&mut spin)?;
    }
    Ok(())
}

/// Waits for the next message; returns its length.
#[inline]
fn recv_one<L: Link>(link: &mut L, buf: &mut Message, mut spin: Spin<'_>) -> Result<usize, BenchError> {
    loop {
        if let Some(len) = link.recv(buf)? {
            return Ok(len);
        }
        missed::<L>(&mut spin)?;
    }
}

/// The client side of the round-trip protocol: returns the recorded latencies.
pub fn client_round_trips<L: Link>(
    link: &mut L,
    plan: &RttPlan,
    watch: &Watch<'_>,
) -> Result<LatencySummary, BenchError> {
    let mut msg = sample_message();
    let mut echo = [0u8; PAYLOAD_LEN];
    let mut recorder = LatencyRecorder::new();
    let mut record_until_ns = u64::MAX;
    for i in 0..plan.total() {
        if i == plan.warmup {
            record_until_ns = deadline_ns(plan.budget);
        }
        let sent_ns = monotonic_ns();
        write_stamp(&mut msg, sent_ns);
        send_one(link, &msg, watch.spin("the link to take a round-trip message"))?;
        let len = recv_one(link, &mut echo, watch.spin("an echo"))?;
        let now_ns = monotonic_ns();
        let stamp = checked_echo_stamp(&echo, len, sent_ns)?;
        if i >= plan.warmup {
            recorder.record(now_ns.saturating_sub(stamp));
            if now_ns > record_until_ns {
                break;
            }
        }
    }
    say_bye(link, watch)?;
    Ok(recorder.summary())
}

/// CLOCK_MONOTONIC ns `budget` from now.
fn deadline_ns(budget: Duration) -> u64 {
    let budget_ns = u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX);
    monotonic_ns().saturating_add(budget_ns)
}

/// The echo's stamp, if the echo is the message just sent.
fn checked_echo_stamp(echo: &Message, len: usize, sent_ns: u64) -> Result<u64, BenchError> {
    let stamp = read_stamp(echo);
    if len != PAYLOAD_LEN || stamp != Some(sent_ns) {
        return Err(BenchError::Integrity {
            what: format!(
                "echo of the message stamped {sent_ns} came back with {len} bytes \
                 (expected {PAYLOAD_LEN}) and stamp {stamp:?}"
            ),
        });
    }
    Ok(sent_ns)
}

/// The serving side of the round-trip protocol: echoes up to `count` messages, then waits
/// for the client's goodbye (which comes early when the client's time budget ran out).
pub fn serve_echo<L: Link>(link: &mut L, count: u64, watch: &Watch<'_>) -> Result<(), BenchError> {
    let mut buf = [0u8; PAYLOAD_LEN];
    for _ in 0..count {
        let len = recv_one(link, &mut buf, watch.spin("a message to echo"))?;
        if len != PAYLOAD_LEN {
            return Err(BenchError::Integrity {
                what: format!("echo side received {len} bytes, expected {PAYLOAD_LEN}"),
            });
        }
        if read_stamp(&buf) == Some(BYE_STAMP) {
            return Ok(());
        }
        send_one(link, &buf, watch.spin("the link to take an echo"))?;
    }
    await_bye(link, watch)
}

/// The client side of the streaming protocol.
pub fn client_stream<L: Link>(link: &mut L, plan: &StreamPlan, watch: &Watch<'_>) -> Result<StreamSummary, BenchError> {
    let mut msg = sample_message();
    let first_send_ns = monotonic_ns();
    let stop_at_ns = first_send_ns.saturating_add(u64::try_from(plan.budget.as_nanos()).unwrap_or(u64::MAX));
    let mut sent = 0;
    while sent < plan.messages {
        write_stamp(&mut msg, sent);
        send_one(link, &msg, watch.spin("the link to take a streamed message"))?;
        sent += 1;
        if sent % SENDS_PER_BUDGET_CHECK == 0 && monotonic_ns() > stop_at_ns {
            break;
        }
    }
    if sent < plan.messages {
        write_stamp(&mut msg, END_STAMP);
        send_one(link, &msg, watch.spin("the link to take the end of the stream"))?;
    }
    let mut buf = [0u8; PAYLOAD_LEN];
    let len = recv_one(link, &mut buf, watch.spin("the sink's report"))?;
    let report = SinkReport::decode(&buf, len).ok_or_else(|| BenchError::Integrity {
        what: format!("the sink's report has {len} bytes, expected {PAYLOAD_LEN}"),
    })?;
    say_bye(link, watch)?;
    let events_per_s = events_per_s(sent, first_send_ns, &report)?;
    Ok(StreamSummary {
        messages: sent,
        events_per_s,
    })
}

/// Checks the sink's report against the `sent` messages and turns it into a rate.
fn events_per_s(sent: u64, first_send_ns: u64, report: &SinkReport) -> Result<f64, BenchError> {
    if report.received != sent || report.mismatches != 0 {
        return Err(BenchError::Integrity {
            what: format!(
                "the sink received {} of {sent} messages, {} with a wrong length or \
                 sequence (first at position {})",
                report.received, report.mismatches, report.first_mismatch_at
            ),
        });
    }
    let elapsed_ns = report.end_ns.checked_sub(first_send_ns).filter(|&ns| ns > 0);
    let elapsed_ns = elapsed_ns.ok_or_else(|| BenchError::Integrity {
        what: format!(
            "the sink's last receive ({} ns) is not after the first send ({first_send_ns} ns)",
            report.end_ns
        ),
    })?;
    Ok(sent as f64 * 1e9 / elapsed_ns as f64)
}

/// The serving side of the streaming protocol: receives and checks up to `count` messages
/// (fewer when an end-of-stream marker comes first), sends the report, waits for the
/// goodbye.
pub fn serve_sink<L: Link>(link: &mut L, count: u64, watch: &Watch<'_>) -> Result<(), BenchError> {
    let mut buf = [0u8; PAYLOAD_LEN];
    let mut report = SinkReport {
        end_ns: 0,
        received: 0,
        mismatches: 0,
        first_mismatch_at: u64::MAX,
    };
    while report.received < count {
        let len = recv_one(link, &mut buf, watch.spin("a streamed message"))?;
        let stamp = read_stamp(&buf);
        if len == PAYLOAD_LEN && stamp == Some(END_STAMP) {
            break;
        }
        if len != PAYLOAD_LEN || stamp != Some(report.received) {
            report.mismatches += 1;
            report.first_mismatch_at = report.first_mismatch_at.min(report.received);
        }
        report.received += 1;
    }
    // When a marker ended the stream, this is its arrival: one message after the last.
    report.end_ns = monotonic_ns();
    send_one(link, &report.encode(), watch.spin("the link to take the report"))?;
    await_bye(link, watch)
}

/// Tells the serving side the client has everything it needs.
fn say_bye<L: Link>(link: &mut L, watch: &Watch<'_>) -> Result<(), BenchError> {
    let mut msg = sample_message();
    write_stamp(&mut msg, BYE_STAMP);
    send_one(link, &msg, watch.spin("the link to take the goodbye"))
}

/// Waits for the client's goodbye.
fn await_bye<L: Link>(link: &mut L, watch: &Watch<'_>) -> Result<(), BenchError> {
    let mut buf = [0u8; PAYLOAD_LEN];
    let len = recv_one(link, &mut buf, watch.spin("the client's goodbye"))?;
    if len != PAYLOAD_LEN || read_stamp(&buf) != Some(BYE_STAMP) {
        return Err(BenchError::Integrity {
            what: format!(
                "expected the client's goodbye, got {len} bytes stamped {:?}",
                read_stamp(&buf)
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A loopback link: what one end sends, the same end receives (an echo and a sink in
    /// one, played by hand in the tests).
    #[derive(Default)]
    struct Loopback {
        queue: VecDeque<Message>,
    }

    impl Link for Loopback {
        fn send(&mut self, msg: &Message) -> Result<bool, BenchError> {
            self.queue.push_back(*msg);
            Ok(true)
        }

        fn recv(&mut self, buf: &mut Message) -> Result<Option<usize>, BenchError> {
            Ok(self.queue.pop_front().map(|msg| {
                *buf = msg;
                PAYLOAD_LEN
            }))
        }
    }

    #[test]
    fn a_report_survives_encoding() {
        let report = SinkReport {
            end_ns: 1,
            received: 2,
            mismatches: 3,
            first_mismatch_at: 4,
        };
        assert_eq!(SinkReport::decode(&report.encode(), PAYLOAD_LEN), Some(report));
        assert_eq!(SinkReport::decode(&report.encode(), 8), None);
    }

    #[test]
    fn round_trips_over_a_loopback_are_recorded() -> Result<(), BenchError> {
        let mut link = Loopback::default();
        let watch = Watch::new(Duration::from_secs(5));
        let plan = RttPlan {
            warmup: 10,
            measured: 100,
            budget: Duration::from_secs(60),
        };
        let summary = client_round_trips(&mut link, &plan, &watch)?;
        assert_eq!(summary.count, 100);
        Ok(())
    }

    #[test]
    fn a_short_or_out_of_order_stream_is_refused() {
        let good = SinkReport {
            end_ns: 2_000_000_000,
            received: 10,
            mismatches: 0,
            first_mismatch_at: u64::MAX,
        };
        assert!(events_per_s(10, 1_000_000_000, &good).is_ok_and(|rate| (rate - 10.0).abs() < 1e-9));
        let short = SinkReport { received: 9, ..good };
        assert!(events_per_s(10, 1_000_000_000, &short).is_err());
        let disordered = SinkReport {
            mismatches: 1,
            first_mismatch_at: 3,
            ..good
        };
        assert!(events_per_s(10, 1_000_000_000, &disordered).is_err());
    }

    /// One end of a pair of bounded channels, for tests that run both sides at once.
    struct ChannelEnd {
        tx: std::sync::mpsc::SyncSender<Message>,
        rx: std::sync::mpsc::Receiver<Message>,
    }

    impl Link for ChannelEnd {
        fn send(&mut self, msg: &Message) -> Result<bool, BenchError> {
            Ok(self.tx.try_send(*msg).is_ok())
        }

        fn recv(&mut self, buf: &mut Message) -> Result<Option<usize>, BenchError> {
            Ok(self.rx.try_recv().ok().map(|msg| {
                *buf = msg;
                PAYLOAD_LEN
            }))
        }
    }

    fn channel_pair() -> (ChannelEnd, ChannelEnd) {
        let (there_tx, there_rx) = std::sync::mpsc::sync_channel(64);
        let (back_tx, back_rx) = std::sync::mpsc::sync_channel(64);
        let mine = ChannelEnd {
            tx: there_tx,
            rx: back_rx,
        };
        let theirs = ChannelEnd {
            tx: back_tx,
            rx: there_rx,
        };
        (mine, theirs)
    }

    /// Streams `plan` into a sink on another thread.
    fn stream_through_channels(plan: StreamPlan) -> Result<StreamSummary, BenchError> {
        let (mut mine, mut theirs) = channel_pair();
        let watch = Watch::new(Duration::from_secs(10));
        std::thread::scope(|scope| {
            let sink = scope.spawn(|| serve_sink(&mut theirs, plan.messages, &Watch::new(Duration::from_secs(10))));
            let summary = client_stream(&mut mine, &plan, &watch);
            let served = sink.join().unwrap_or(Err(BenchError::PeerPanicked { kind: "sink" }));
            served.and(summary)
        })
    }

    #[test]
    fn a_whole_stream_arrives_in_order() -> Result<(), BenchError> {
        let plan = StreamPlan {
            messages: 5_000,
            budget: Duration::from_secs(60),
        };
        let summary = stream_through_channels(plan)?;
        assert_eq!(summary.messages, 5_000);
        assert!(summary.events_per_s > 0.0);
        Ok(())
    }

    #[test]
    fn a_stream_cut_by_its_budget_ends_with_a_marker() -> Result<(), BenchError> {
        let plan = StreamPlan {
            messages: 1_000_000,
            budget: Duration::ZERO,
        };
        let summary = stream_through_channels(plan)?;
        assert_eq!(summary.messages, SENDS_PER_BUDGET_CHECK);
        Ok(())
    }

    #[test]
    fn a_silent_link_times_out() {
        struct Silent;
        impl Link for Silent {
            fn send(&mut self, _: &Message) -> Result<bool, BenchError> {
                Ok(true)
            }
            fn recv(&mut self, _: &mut Message) -> Result<Option<usize>, BenchError> {
                Ok(None)
            }
        }
        let watch = Watch::new(Duration::from_millis(20));
        let plan = RttPlan {
            warmup: 0,
            measured: 1,
            budget: Duration::from_secs(60),
        };
        let outcome = client_round_trips(&mut Silent, &plan, &watch);
        assert!(matches!(outcome, Err(BenchError::Timeout { .. })));
    }
}
