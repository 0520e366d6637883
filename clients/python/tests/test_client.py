"""The Python client against a real rimd: events in through a producer ring, decisions
back from the broadcast ring, every refusal as a typed error, laps counted, durability
awaited. Waits have generous bounds (watchdogs); nothing asserts on timing."""

import ast
import math
import time
from pathlib import Path

import pytest

from conftest import SLOTS
from rimd_client import (
    ArgumentError,
    AttachError,
    Decision,
    InvalidEvent,
    Lapped,
    Producer,
    RimError,
    RingClosed,
    RingFull,
    Subscriber,
    Verdicts,
)

WAIT_S = 30.0


def now_ms() -> int:
    return int(time.time() * 1000)


def publish(p: Producer, *args, **kwargs) -> int:
    """Publishes, retrying while the ring is full (bounded)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return p.publish(*args, **kwargs)
        except RingFull:
            assert time.monotonic() < deadline, "the ring stayed full"
            time.sleep(0.001)


def test_decisions_come_back_with_every_field(rimd):
    t0 = now_ms()
    with Subscriber(rimd.socket, verify=True) as s, Producer(rimd.socket, "py-fields") as p:
        for i in range(5):
            publish(p, "rim:sensor:py:t1", t0 + i, {"temp": 90.0 + i, "load": 0.5}, price=10.25, event_id=f"e{i}")
        got = [s.next(timeout=WAIT_S) for _ in range(5)]
        assert s.poll() is None
    assert all(isinstance(d, Decision) for d in got), got
    for i, d in enumerate(got):
        assert (d.rule_id, d.rim_node_id, d.severity, d.sweep, d.resumed) == ("py-hot", "rim:sensor:py:t1", "high", False, False)
        assert d.event_timestamp_ms == t0 + i
        assert d.evidence == (("metric.temp", 90.0 + i),)
        assert d.publish_ns > 0 and d.latency_ns == d.decided_ns - d.publish_ns
        assert len(d.hash) == 64 and d.shard == 0
    for before, after in zip(got, got[1:]):
        assert after.chain_seq == before.chain_seq + 1
        assert after.prev_hash == before.hash


def test_iterating_stops_after_a_quiet_timeout(rimd):
    with Subscriber(rimd.socket) as s, Producer(rimd.socket, "py-iter") as p:
        publish(p, "rim:sensor:py:t2", now_ms(), {"temp": 99.0})
        seen = list(s.decisions(timeout=1.0))
    assert [d.rim_node_id for d in seen] == ["rim:sensor:py:t2"]


def test_a_late_subscriber_can_start_from_the_oldest_decision(rimd):
    with Producer(rimd.socket, "py-oldest") as p, Subscriber(rimd.socket) as marker:
        publish(p, "rim:sensor:py:t3", now_ms(), {"temp": 85.0})
        assert marker.next(timeout=WAIT_S) is not None
    with Subscriber(rimd.socket, from_oldest=True) as late:
        nodes = [d.rim_node_id for d in late.decisions(timeout=0.2)]
    assert "rim:sensor:py:t3" in nodes


def test_refusals_are_typed_errors(rimd, tmp_path):
    with pytest.raises(AttachError):
        Producer(str(tmp_path / "no-daemon.sock"), "x")
    with pytest.raises(AttachError):
        Subscriber(rimd.socket, shard=5)
    with Producer(rimd.socket, "py-refusals") as p:
        with pytest.raises(InvalidEvent):
            p.publish("not-a-node-id", now_ms(), {"temp": 1.0})
        with pytest.raises(InvalidEvent):
            p.publish("rim:sensor:py:t4", now_ms(), {"temp": math.inf})
        with pytest.raises(ArgumentError):
            p.publish("rim:sensor:py:t4", now_ms(), {f"m{i}": 1.0 for i in range(65)})
        assert issubclass(InvalidEvent, RimError)
    with pytest.raises(RingClosed):
        p.publish("rim:sensor:py:t4", now_ms())
    s = Subscriber(rimd.socket)
    s.close()
    s.close()
    with pytest.raises(RingClosed):
        s.poll()


def test_a_lapped_subscriber_learns_how_many_it_missed(rimd):
    events = 3 * SLOTS
    t0 = now_ms()
    with Subscriber(rimd.socket) as s, Producer(rimd.socket, "py-lap") as p:
        for i in range(events):
            publish(p, "rim:sensor:pylap:t1", t0 + i, {"temp": 81.0 + i})
        deadline = time.monotonic() + WAIT_S
        while s.lag < events:
            assert time.monotonic() < deadline, f"only {s.lag} of {events} decisions published"
            time.sleep(0.001)
        with pytest.raises(Lapped) as lapped:
            s.poll()
        read = [d.event_timestamp_ms for d in iter(s.poll, None)]
        assert lapped.value.missed == s.missed
    assert lapped.value.missed + len(read) == events
    assert read == list(range(t0 + events - len(read), t0 + events))


def test_a_producer_can_wait_until_its_events_are_durable(rimd):
    with Producer(rimd.socket, "py-durable") as p:
        pos = publish(p, "rim:sensor:py:t5", now_ms(), {"temp": 20.0}, event_id="durable-1")
        assert pos == p.position > 0
        assert p.wait_durable(pos, timeout=WAIT_S)
        assert p.durable_position >= pos and p.consumed_position >= pos
        assert not p.wait_durable(pos + (1 << 20), timeout=0.001)


def test_every_refusal_reaches_the_producer_per_reason(rimd):
    """Events the daemon reads but does not take are counted where the producer reads them
    (its ring's verdicts), per reason, once its consumed position has passed them."""
    hour_ms = 3_600_000
    with Producer(rimd.socket, "py-verdicts") as p:
        assert p.verdicts() == Verdicts(0, 0, 0, 0, 0, 0, 0)
        now = now_ms()
        publish(p, "rim:sensor:py:v1", now, {"temp": 1.0}, event_id="v-1")
        publish(p, "rim:sensor:py:v1", now, {"temp": 1.0}, event_id="v-1")
        publish(p, "rim:sensor:py:v1", now + 100 * 365 * 24 * hour_ms, {"temp": 1.0})
        publish(p, "rim:sensor:py:v1", now - 30 * 24 * hour_ms, {"temp": 1.0})
        last = publish(p, "rim:sensor:py:v1", now_ms(), {"temp": 1.0})
        deadline = time.monotonic() + WAIT_S
        while p.consumed_position < last:
            assert time.monotonic() < deadline, "the daemon did not read the ring"
            time.sleep(0.001)
        v = p.verdicts()
    assert (v.duplicates, v.event_time_ahead, v.event_time_too_old) == (1, 1, 1), v
    assert (v.rejected, v.invalid, v.node_table_full, v.node_not_allowed) == (2, 0, 0, 0), v
    with pytest.raises(RingClosed):
        p.verdicts()


def test_every_function_and_class_has_a_docstring():
    """The package documents each of its functions, methods and classes."""
    import rimd_client

    missing = []
    for path in sorted(Path(rimd_client.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and ast.get_docstring(node) is None:
                missing.append(f"{path.name}:{node.lineno} {node.name}")
    assert not missing, missing
