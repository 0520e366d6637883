//! The measuring loop every row shares: events offered (saturating, or paced at a rate)
//! through a [`Sender`], their completions read back (the daemon's decisions from its
//! broadcast ring, or for the broker floor the messages themselves from a plain consumer),
//! each matched to its event by a tag. Latency = completion read − event handed over,
//! and for a paced row − the event's due time (as wrk2 does: a sender that falls behind
//! its schedule cannot hide the wait from the figures).
//!
//! The tag: every event of the daemon's life carries its own `metric.probe` value (1, 2,
//! 3, …; exact in an f64). The `probe` rule fires on `metric.probe > 0`, with no cooldown,
//! and puts the value it read into the decision's evidence, so the decision names its
//! event whichever path, partition or order it came by.
//!
//! One thread sends and reads, alternating bursts of sends with draining the decision
//! ring: on two cores a separate spinning reader would take the core the daemon's bridge,
//! journal and store run on. Events without their decision yet are bounded by a window
//! smaller than the decision ring, so the reader can never be lapped.

use std::time::{Duration, Instant};

use rim_ring::broadcast::{ReadError, Reader};

use crate::clock::monotonic_ns;
use crate::error::BenchError;
use crate::latency::{LatencyRecorder, LatencySummary};

/// Events offered in one go before the decision ring is drained again.
const BURST: u64 = 256;

/// Decision records read in one go before offering more.
const DRAIN_MAX: usize = 4096;

/// One way of handing events to the daemon.
pub trait Sender {
    /// Offers event `tag` of node `node` with event time `timestamp_ms`, handed over at
    /// `now_ns` (CLOCK_MONOTONIC). `Ok(false)`: not taken now (queue full), offer again.
    fn offer(&mut self, node: usize, tag: u64, timestamp_ms: i64, now_ns: u64) -> Result<bool, BenchError>;
    /// Housekeeping between bursts (delivery reports).
    fn service(&mut self) -> Result<(), BenchError>;
    /// Nothing to do right now: wait a little, leaving the core to the daemon.
    fn idle(&mut self);
}

/// Where the completions of events are read: [`Completions::drain`] reads up to `max`,
/// calls `f(tag, read_ns)` for each, and returns (matched, other records skipped).
pub trait Completions {
    /// Reads what has completed.
    fn drain(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(u64, u64) -> Result<(), BenchError>,
    ) -> Result<(usize, u64), BenchError>;

    /// Where the reading end stands, for a stall's error ("" when it has nothing to say).
    fn state(&self) -> String {
        String::new()
    }
}

/// What one phase offers.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// Events.
    pub events: u64,
    /// Offered rate; `None`: as fast as the sender takes them.
    pub rate_per_s: Option<u64>,
    /// Events without their decision, at most.
    pub window: u64,
    /// Longest wait with no event taken and no decision read.
    pub stall_timeout: Duration,
}

/// What one phase measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Hand-over → decision read, per event.
    pub latency: LatencySummary,
    /// Events / (last decision read − first event handed over).
    pub events_per_s: f64,
    /// Events / (last hand-over − first), the rate actually offered.
    pub offered_per_s: f64,
    /// Decisions of other rules, or of events of an earlier phase, skipped.
    pub skipped: u64,
    /// Milliseconds from the first hand-over (its due time when paced) to the last one.
    pub sent_ms: f64,
    /// Milliseconds from the first hand-over to the first decision read: with `sent_ms`,
    /// whether the way in overlaps its sender or waits for it.
    pub first_read_ms: f64,
}

/// The subscriber's end of the decision ring, reading only what it needs: the rule id
/// and the first evidence value of each record.
pub struct Decisions {
    reader: Reader,
    buf: Vec<u8>,
}

/// Offsets in a decision record (`rim_decision::layout`).
const MAGIC: &[u8; 4] = &rim_decision::layout::MAGIC;
const EVIDENCE_COUNT_OFF: usize = rim_decision::layout::EVIDENCE_COUNT;
const RULE_ID_OFF: usize = rim_decision::layout::RULE_ID;

/// The probe rule's id in [`crate::workload::rules`].
const PROBE_RULE: &[u8] = b"probe";

impl Decisions {
    /// Wraps an attached subscriber.
    pub fn new(reader: Reader) -> Self {
        let buf = vec![0u8; reader.slot_bytes()];
        Self { reader, buf }
    }
}

impl Completions for Decisions {
    /// Reads up to `max` records; calls `f(tag, read_ns)` for each probe decision and
    /// returns (probe decisions, other records).
    fn drain(
        &mut self,
        max: usize,
        f: &mut dyn FnMut(u64, u64) -> Result<(), BenchError>,
    ) -> Result<(usize, u64), BenchError> {
        let (mut probes, mut other) = (0, 0);
        for _ in 0..max {
            let len = match self.reader.read(&mut self.buf) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(ReadError::Lapped { missed }) => {
                    return Err(BenchError::Integrity {
                        what: format!("the decision reader was lapped ({missed} missed)"),
                    })
                }
                Err(e) => return Err(BenchError::transport("rim-ring", "read decision", e)),
            };
            let read_ns = monotonic_ns();
            match self.buf.get(..len).and_then(probe_tag) {
                Some(tag) => {
                    f(tag, read_ns)?;
                    probes += 1;
                }
                None => other += 1,
            }
        }
        Ok((probes, other))
    }

    /// The reader's position and the writer's, as the ring's header shows it: a reader
    /// behind the writer that reads nothing is stuck, one level with it waits for the
    /// daemon.
    fn state(&self) -> String {
        let at = self.reader.position();
        format!(
            "; the decision reader is at record {at}, the ring's writer at {}, {} missed",
            at.saturating_add(self.reader.lag()),
            self.reader.missed()
        )
    }
}

/// The tag of a probe decision: its first evidence value, a whole number ≥ 1; `None` for
/// any other record.
pub fn probe_tag(rec: &[u8]) -> Option<u64> {
    if rec.get(..4)? != MAGIC || u16_at(rec, EVIDENCE_COUNT_OFF)? == 0 {
        return None;
    }
    let (rule, at) = text_at(rec, RULE_ID_OFF)?;
    if rule != PROBE_RULE {
        return None;
    }
    let (_node, at) = text_at(rec, at)?;
    let (_label, at) = text_at(rec, at)?;
    let value = f64::from_le_bytes(rec.get(at..at + 8)?.try_into().ok()?);
    // 2^53: beyond it an f64 no longer holds every whole number.
    let whole = (1.0..9_007_199_254_740_992.0).contains(&value) && value.fract() == 0.0;
    whole.then_some(value as u64)
}

fn u16_at(rec: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(rec.get(at..at + 2)?.try_into().ok()?))
}

/// A u16-length-prefixed string at `at`: its bytes and the offset after it.
fn text_at(rec: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let len = usize::from(u16_at(rec, at)?);
    let start = at + 2;
    Some((rec.get(start..start + len)?, start + len))
}

/// Hands out the daemon-wide unique tags and picks nodes.
pub struct Tags {
    next: u64,
    x: u64,
    nodes: usize,
}

impl Tags {
    /// Tags from 1, nodes drawn from `0..nodes`.
    pub fn new(nodes: usize) -> Self {
        Self {
            next: 1,
            x: 0x2545_F491_4F6C_DD1D,
            nodes: nodes.max(1),
        }
    }

    /// Reserves `n` tags; returns the first.
    fn reserve(&mut self, n: u64) -> u64 {
        let base = self.next;
        self.next += n;
        base
    }

    /// A node drawn uniformly (xorshift: cheap and the same sequence every run).
    fn node(&mut self) -> usize {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        (self.x % self.nodes as u64) as usize
    }
}

/// The per-phase bookkeeping: when each event was handed over, what came back.
struct Ledger {
    base: u64,
    handed_ns: Vec<u64>,
    sent: u64,
    received: u64,
    skipped: u64,
    first_ns: u64,
    last_send_ns: u64,
    first_read_ns: u64,
    last_read_ns: u64,
    hist: LatencyRecorder,
}

impl Ledger {
    fn new(base: u64, events: u64) -> Self {
        Self {
            base,
            handed_ns: vec![0; events as usize],
            sent: 0,
            received: 0,
            skipped: 0,
            first_ns: 0,
            last_send_ns: 0,
            first_read_ns: 0,
            last_read_ns: 0,
            hist: LatencyRecorder::new(),
        }
    }

    /// The next event went out at `now_ns`; its latency counts from `from_ns` (its due
    /// time when paced, else `now_ns`).
    fn sent(&mut self, from_ns: u64, now_ns: u64) {
        self.handed_ns[self.sent as usize] = from_ns;
        if self.sent == 0 {
            self.first_ns = from_ns;
        }
        self.last_send_ns = now_ns;
        self.sent += 1;
    }

    /// Records the decision of tag `tag`, read at `read_ns`. Earlier phases' tags are
    /// skipped; a tag not handed over yet, or seen twice, is an integrity failure.
    fn decided(&mut self, tag: u64, read_ns: u64) -> Result<(), BenchError> {
        let Some(i) = tag.checked_sub(self.base) else {
            self.skipped += 1;
            return Ok(());
        };
        let handed = match self.handed_ns.get(i as usize) {
            Some(&t) if i < self.sent && t != 0 => t,
            _ => {
                return Err(BenchError::Integrity {
                    what: format!(
                        "a decision for event {tag}, not handed over yet or decided twice ({} sent from {})",
                        self.sent, self.base
                    ),
                })
            }
        };
        self.handed_ns[i as usize] = 0;
        self.hist.record(read_ns.saturating_sub(handed).max(1));
        if self.received == 0 {
            self.first_read_ns = read_ns;
        }
        self.received += 1;
        self.last_read_ns = read_ns;
        Ok(())
    }

    fn outcome(&self) -> Outcome {
        let secs = |a: u64, b: u64| (b.saturating_sub(a)).max(1) as f64 / 1e9;
        Outcome {
            latency: self.hist.summary(),
            events_per_s: self.received as f64 / secs(self.first_ns, self.last_read_ns),
            offered_per_s: self.sent as f64 / secs(self.first_ns, self.last_send_ns),
            skipped: self.skipped,
            sent_ms: self.last_send_ns.saturating_sub(self.first_ns) as f64 / 1e6,
            first_read_ms: self.first_read_ns.saturating_sub(self.first_ns) as f64 / 1e6,
        }
    }
}

/// Runs one phase: offers `phase.events` events through `sender` and waits for every
/// decision. A stall's error ends with `completions`' state and `stalled()` (what the
/// caller knows of the far end).
pub fn run(
    sender: &mut dyn Sender,
    completions: &mut dyn Completions,
    tags: &mut Tags,
    phase: &Phase,
    stalled: &dyn Fn() -> String,
) -> Result<Outcome, BenchError> {
    let mut ledger = Ledger::new(tags.reserve(phase.events), phase.events);
    let started = Instant::now();
    let started_ns = monotonic_ns();
    let mut last_progress = Instant::now();
    let mut timestamp_ms = crate::workload::unix_ms();
    while ledger.received < phase.events {
        let due = due(phase, started.elapsed());
        let limit = due.min(ledger.received + phase.window);
        let offered = offer_burst(sender, tags, &mut ledger, limit, &mut timestamp_ms, phase, started_ns)?;
        sender.service()?;
        let (read, other) = completions.drain(DRAIN_MAX, &mut |tag, at| ledger.decided(tag, at))?;
        ledger.skipped += other;
        if offered > 0 || read > 0 {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > phase.stall_timeout {
            return Err(BenchError::Integrity {
                what: format!(
                    "no progress for {:?}: {} of {} events handed over, {} decisions read{}{}",
                    phase.stall_timeout,
                    ledger.sent,
                    phase.events,
                    ledger.received,
                    completions.state(),
                    stalled()
                ),
            });
        } else {
            sender.idle();
        }
    }
    Ok(ledger.outcome())
}

/// Events that should have been offered by `elapsed`.
fn due(phase: &Phase, elapsed: Duration) -> u64 {
    match phase.rate_per_s {
        None => phase.events,
        Some(rate) => {
            let due = elapsed.as_nanos().saturating_mul(u128::from(rate)) / 1_000_000_000 + 1;
            u64::try_from(due).unwrap_or(u64::MAX).min(phase.events)
        }
    }
}

/// When event `i` of a paced phase is due: `i / rate` seconds after the start.
fn due_ns(phase: &Phase, started_ns: u64, i: u64) -> Option<u64> {
    let rate = phase.rate_per_s?;
    let offset = u128::from(i) * 1_000_000_000 / u128::from(rate.max(1));
    Some(started_ns.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX)))
}

/// Offers events until `limit` are out, a burst is done or the sender refuses one.
fn offer_burst(
    sender: &mut dyn Sender,
    tags: &mut Tags,
    ledger: &mut Ledger,
    limit: u64,
    timestamp_ms: &mut i64,
    phase: &Phase,
    started_ns: u64,
) -> Result<u64, BenchError> {
    let mut n = 0;
    if ledger.sent < limit {
        // Event time moves on per burst, never back (the daemon keeps per-node history).
        *timestamp_ms = (*timestamp_ms).max(crate::workload::unix_ms());
    }
    while ledger.sent < limit && n < BURST {
        let node = tags.node();
        let now_ns = monotonic_ns();
        if !sender.offer(node, ledger.base + ledger.sent, *timestamp_ms, now_ns)? {
            break;
        }
        let from_ns = due_ns(phase, started_ns, ledger.sent).unwrap_or(now_ns);
        ledger.sent(from_ns, now_ns);
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe decision as `rim_decision` lays it out (fixed head, rule id,
    /// node id, one evidence entry, hash).
    fn record(rule: &str, value: f64) -> Vec<u8> {
        let mut rec = vec![0u8; RULE_ID_OFF];
        rec[..4].copy_from_slice(MAGIC);
        rec[EVIDENCE_COUNT_OFF..EVIDENCE_COUNT_OFF + 2].copy_from_slice(&1u16.to_le_bytes());
        for text in [rule, "rim:bench:g01:n1", "metric.probe"] {
            rec.extend_from_slice(&(text.len() as u16).to_le_bytes());
            rec.extend_from_slice(text.as_bytes());
        }
        rec.extend_from_slice(&value.to_le_bytes());
        rec.extend_from_slice(&[0u8; 32]);
        rec
    }

    #[test]
    fn the_tag_is_the_probe_decisions_evidence() {
        assert_eq!(probe_tag(&record("probe", 12_345.0)), Some(12_345));
        assert_eq!(probe_tag(&record("group-01", 12_345.0)), None);
        assert_eq!(probe_tag(&record("probe", 0.5)), None);
        let rec = record("probe", 7.0);
        assert_eq!(probe_tag(&rec[..rec.len() - 40]), None, "truncated");
    }

    #[test]
    fn a_decision_counts_once_and_only_for_an_event_handed_over() {
        let mut ledger = Ledger::new(100, 3);
        ledger.sent(1_000, 1_000);
        assert!(ledger.decided(99, 2_000).is_ok(), "an earlier phase's tag is skipped");
        assert_eq!(ledger.skipped, 1);
        assert!(ledger.decided(100, 2_500).is_ok());
        assert!(ledger.decided(100, 2_600).is_err(), "twice");
        assert!(ledger.decided(101, 2_600).is_err(), "not handed over yet");
        assert_eq!(ledger.hist.summary().max_ns, 1_500);
    }

    #[test]
    fn a_paced_phase_is_due_its_rate() {
        let phase = Phase {
            events: 1_000,
            rate_per_s: Some(50_000),
            window: 10,
            stall_timeout: Duration::from_secs(1),
        };
        assert_eq!(due(&phase, Duration::ZERO), 1);
        assert_eq!(due(&phase, Duration::from_millis(1)), 51);
        assert_eq!(due(&phase, Duration::from_secs(1)), 1_000);
        // Event i is due i / rate after the start, whenever it was actually sent.
        assert_eq!(due_ns(&phase, 7, 0), Some(7));
        assert_eq!(due_ns(&phase, 7, 50_000), Some(7 + 1_000_000_000));
        let saturating = Phase {
            rate_per_s: None,
            ..phase
        };
        assert_eq!(due_ns(&saturating, 7, 3), None);
    }
}
