"""Publishing RimFastEvents into rimd through a shared-memory producer ring."""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

from . import _native as n
from .errors import ArgumentError

DEFAULT_SOCKET = "/dev/shm/rimd/rimd.sock"


@dataclass(frozen=True)
class Verdicts:
    """What the daemon did not take from this producer's ring, per reason. An event's
    verdict is counted before :attr:`Producer.consumed_position` passes it, so once the
    daemon has read an event, whether it was refused, and why, is here."""

    rejected: int
    """Events and records refused for any reason but duplication (the sum of the
    reasons below but ``duplicates``)."""
    invalid: int
    """Records that failed the daemon's validation."""
    duplicates: int
    """Events dropped because their ``event_id`` was already taken for the node."""
    node_table_full: int
    """Events of new nodes refused because the daemon's node table is full."""
    event_time_ahead: int
    """Events whose time is too far ahead of the daemon's clock
    (``ingest.event_ahead_ms_max``)."""
    event_time_too_old: int
    """Events older than the daemon takes (``ingest.event_age_ms_max``)."""
    node_not_allowed: int
    """Events for a node this ring may not publish for (reserved: always 0 for now)."""


class Producer:
    """A producer ring attached to a running rimd.

    Strings (node ids, statuses, source topics, metric names) cross the ring once: the
    first event that uses one defines it, later ones refer to it by number. Publishing
    never blocks: a full ring raises :class:`~rimd_client.RingFull` and the caller decides
    whether to retry, drop or slow down. One producer is used by one thread at a time.

    Use it as a context manager, or call :meth:`close`::

        with Producer(socket, "py-feed") as p:
            p.publish("rim:sensor:lab:t1", timestamp_ms=now_ms, metrics={"temp": 21.5})
    """

    def __init__(self, socket: str = DEFAULT_SOCKET, name: str = "python", capacity: int = 1 << 20):
        """Attaches to the daemon's control socket and asks for a ring of ``capacity``
        bytes (a power of two within the daemon's limit). Raises
        :class:`~rimd_client.AttachError` when no daemon answers or it refuses."""
        handle = ctypes.c_void_p()
        n.check(n.lib.rim_producer_attach(socket.encode(), name.encode(), capacity, ctypes.byref(handle)))
        self._handle: Optional[int] = handle.value
        self._symbols: Dict[Tuple[int, str], int] = {}
        # Reused by every publish: no per-event allocation of the C structs.
        self._event = n.RimEvent()
        self._metrics = (n.RimMetric * n.METRICS_MAX)()

    def _live(self) -> int:
        """The C handle; :class:`~rimd_client.RingClosed` once closed."""
        if self._handle is None:
            raise n.closed_error("producer")
        return self._handle

    def intern(self, kind: int, text: str) -> int:
        """The ring's number for ``text`` as a symbol of ``kind`` (defined on first use).
        Raises :class:`~rimd_client.InvalidEvent` for a string the data model refuses
        (e.g. a node id that is not ``rim:{nodeType}:{namespace}:{localId}``)."""
        key = (kind, text)
        sym = self._symbols.get(key)
        if sym is None:
            raw = text.encode()
            out = ctypes.c_uint32()
            n.check(n.lib.rim_producer_intern(self._live(), kind, raw, len(raw), ctypes.byref(out)))
            sym = out.value
            self._symbols[key] = sym
        return sym

    def publish(
        self,
        rim_node_id: str,
        timestamp_ms: int,
        metrics: Optional[Mapping[str, float]] = None,
        *,
        status: str = "OK",
        price: Optional[float] = None,
        volume: Optional[float] = None,
        stress: Optional[float] = None,
        event_id: Optional[str] = None,
        source_topic: Optional[str] = None,
        publish_ns: int = 0,
    ) -> int:
        """Publishes one RimFastEvent; never blocks. ``timestamp_ms`` is the event time
        (epoch ms); ``publish_ns`` 0 lets the library stamp CLOCK_MONOTONIC. Returns the
        ring position just past the event (for :meth:`wait_durable`). Raises
        :class:`~rimd_client.RingFull`, :class:`~rimd_client.InvalidEvent`,
        :class:`~rimd_client.RecordTooLarge`, :class:`~rimd_client.Quarantined` or
        :class:`~rimd_client.RingClosed`."""
        handle = self._live()
        metrics = metrics or {}
        if len(metrics) > n.METRICS_MAX:
            raise ArgumentError(f"{len(metrics)} metrics; at most {n.METRICS_MAX}", 7)
        ev = self._event
        ev.node = self.intern(n.KIND_NODE_ID, rim_node_id)
        ev.status = self.intern(n.KIND_STATUS, status)
        flags = 0
        for i, (name, value) in enumerate(metrics.items()):
            self._metrics[i].name = self.intern(n.KIND_METRIC_NAME, name)
            self._metrics[i].value = value
        ev.metrics = self._metrics
        ev.metric_count = len(metrics)
        for flag, field, value in (
            (n.HAS_PRICE, "price", price),
            (n.HAS_VOLUME, "volume", volume),
            (n.HAS_STRESS, "stress", stress),
        ):
            setattr(ev, field, math.nan if value is None else value)
            flags |= 0 if value is None else flag
        if source_topic is not None:
            ev.source_topic = self.intern(n.KIND_SOURCE_TOPIC, source_topic)
            flags |= n.HAS_SOURCE_TOPIC
        raw_id = event_id.encode() if event_id is not None else None
        ev.event_id = raw_id
        ev.event_id_len = len(raw_id) if raw_id is not None else 0
        flags |= n.HAS_EVENT_ID if raw_id is not None else 0
        ev.flags = flags
        ev.timestamp = timestamp_ms
        ev.publish_ns = publish_ns
        n.check(n.lib.rim_producer_publish(handle, ctypes.byref(ev)))
        return n.lib.rim_producer_position(handle)

    @property
    def position(self) -> int:
        """Ring position just past the last record published."""
        return n.lib.rim_producer_position(self._live())

    @property
    def consumed_position(self) -> int:
        """How far the daemon has read this ring."""
        return n.lib.rim_producer_consumed_position(self._live())

    @property
    def durable_position(self) -> int:
        """How far the daemon has journaled and synced this ring's events."""
        return n.lib.rim_producer_durable_position(self._live())

    def verdicts(self) -> Verdicts:
        """What the daemon refused of this ring so far, per reason (see :class:`Verdicts`).
        Events it refuses still count as consumed: this is how the producer learns of
        them."""
        out = n.RimVerdicts()
        n.check(n.lib.rim_producer_verdicts(self._live(), ctypes.byref(out)))
        return Verdicts(**{name: getattr(out, name) for name, _ in n.RimVerdicts._fields_})

    def wait_durable(self, position: int, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds until every event before ``position`` (from
        :meth:`publish`) is durable in the daemon's journal. True when it is."""
        timeout_ns = max(0, int(timeout * 1e9))
        return n.lib.rim_producer_wait_durable(self._live(), position, timeout_ns) == 1

    def close(self) -> None:
        """Says no more events will come and frees the ring. Idempotent."""
        if getattr(self, "_handle", None) is not None:
            n.lib.rim_producer_close(self._handle)
            self._handle = None

    def __enter__(self) -> "Producer":
        """The producer itself; :meth:`close` runs when the block ends."""
        return self

    def __exit__(self, *exc) -> None:
        """Closes the producer, whether the block ended by an exception or not."""
        self.close()

    def __del__(self) -> None:
        """Frees the ring if the producer was never closed."""
        self.close()
