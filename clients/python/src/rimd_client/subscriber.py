"""Reading rimd's decisions from a reflex shard's broadcast ring."""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

from . import _native as n
from .errors import ChainBroken, CorruptRecord, Lapped
from .producer import DEFAULT_SOCKET


@dataclass(frozen=True)
class Decision:
    """What a rule fired: one record of a reflex shard's hash chain."""

    chain_seq: int
    """Position in the shard's chain (1, 2, … per epoch)."""
    epoch_ns: int
    """When the chain began, unix ns."""
    shard: int
    """The reflex shard (one chain per shard)."""
    rule_id: str
    rule_version: int
    rule_generation: int
    severity: str
    """``info``, ``low``, ``medium``, ``high`` or ``critical``."""
    rim_node_id: str
    event_seq: int
    """Ingest's sequence number of the triggering event."""
    event_timestamp_ms: int
    sweep: bool
    """Fired by the staleness sweep rather than by an event."""
    resumed: bool
    """The first decision after its chain resumed at a daemon restart (its ``chain_seq``
    may jump past the previous one)."""
    evidence: Tuple[Tuple[str, Optional[float]], ...]
    """What the rule read: (label, value), the value None when it was unknown."""
    publish_ns: int
    decided_ns: int
    latency_ns: int
    """Publish (or ingest) → decision, ns."""
    prev_hash: str
    """Hex SHA-256 of the previous decision of the chain."""
    hash: str
    """Hex SHA-256 of this decision's record."""
    node_index: int
    """Dense node index, for this run of the daemon."""

    @classmethod
    def _from_c(cls, d: n.RimDecision) -> "Decision":
        """The decision the C struct holds, copied into Python values."""
        evidence = tuple(
            (e.label.decode(), None if math.isnan(e.value) else e.value) for e in d.evidence[: d.evidence_count]
        )
        return cls(
            chain_seq=d.chain_seq,
            epoch_ns=d.epoch_ns,
            shard=d.shard,
            rule_id=d.rule_id.decode(),
            rule_version=d.rule_version,
            rule_generation=d.rule_generation,
            severity=n.lib.rim_severity_text(d.severity).decode(),
            rim_node_id=d.node_id.decode(),
            event_seq=d.event_seq,
            event_timestamp_ms=d.event_timestamp_ms,
            sweep=bool(d.flags & n.DECISION_SWEEP),
            resumed=bool(d.flags & n.DECISION_RESUMED),
            evidence=evidence,
            publish_ns=d.publish_ns,
            decided_ns=d.decided_ns,
            latency_ns=d.latency_ns,
            prev_hash=bytes(d.prev_hash).hex(),
            hash=bytes(d.hash).hex(),
            node_index=d.node_index,
        )


class Subscriber:
    """A reader of one reflex shard's decisions, mapped read-only: it cannot slow the
    daemon or other subscribers. If it falls a whole ring behind, :meth:`poll` raises
    :class:`~rimd_client.Lapped` with the number lost, once, and reading goes on.

    ::

        with Subscriber(socket, verify=True) as s:
            for d in s.decisions(timeout=5.0):
                print(d.severity, d.rule_id, d.rim_node_id)
    """

    def __init__(
        self,
        socket: str = DEFAULT_SOCKET,
        shard: int = 0,
        *,
        verify: bool = False,
        from_oldest: bool = False,
    ):
        """Attaches to shard ``shard``'s decision ring. ``verify`` checks every
        decision's SHA-256 and its link to the one before (:class:`~rimd_client.ChainBroken`);
        ``from_oldest`` starts with the oldest decision still in the ring instead of the
        next one published. Raises :class:`~rimd_client.AttachError`."""
        flags = (n.SUB_VERIFY if verify else 0) | (n.SUB_FROM_OLDEST if from_oldest else 0)
        handle = ctypes.c_void_p()
        n.check(n.lib.rim_subscriber_attach(socket.encode(), shard, flags, ctypes.byref(handle)))
        self._handle: Optional[int] = handle.value
        self._decision = n.RimDecision()
        self._missed_reported = 0

    def _live(self) -> int:
        """The C handle; :class:`~rimd_client.RingClosed` once closed."""
        if self._handle is None:
            raise n.closed_error("subscriber")
        return self._handle

    def _outcome(self, status: int) -> Optional[Decision]:
        """The decision a poll filled in, None for nothing yet, or the typed error."""
        if status in (n.RIM_ERR_EMPTY, n.RIM_ERR_TIMEOUT):
            return None
        if status == n.RIM_ERR_LAPPED:
            raise Lapped(self._newly_missed())
        if status == n.RIM_ERR_CORRUPT:
            raise CorruptRecord(n.status_text(status), status)
        if status == n.RIM_ERR_CHAIN:
            raise ChainBroken(Decision._from_c(self._decision))
        n.check(status)
        return Decision._from_c(self._decision)

    def poll(self) -> Optional[Decision]:
        """The next decision, or None when there is none yet; never waits."""
        return self._outcome(n.lib.rim_subscriber_poll(self._live(), ctypes.byref(self._decision)))

    def next(self, timeout: float) -> Optional[Decision]:
        """The next decision, waiting up to ``timeout`` seconds; None when none came."""
        timeout_ns = max(0, int(timeout * 1e9))
        return self._outcome(n.lib.rim_subscriber_next(self._live(), ctypes.byref(self._decision), timeout_ns))

    def decisions(self, timeout: Optional[float] = None) -> Iterator[Decision]:
        """Decisions as they come; stops after ``timeout`` seconds without one (never,
        when None). :class:`~rimd_client.Lapped` ends the iteration like any error:
        call again to go on."""
        while True:
            d = self.next(1.0 if timeout is None else timeout)
            if d is not None:
                yield d
            elif timeout is not None:
                return

    def _newly_missed(self) -> int:
        """Decisions lost since the last lap reported."""
        total = self.missed
        lost = total - self._missed_reported
        self._missed_reported = total
        return lost

    @property
    def missed(self) -> int:
        """Decisions lost to laps, in total."""
        return n.lib.rim_subscriber_missed(self._live())

    @property
    def lag(self) -> int:
        """Decisions published but not yet read."""
        return n.lib.rim_subscriber_lag(self._live())

    @property
    def position(self) -> int:
        """Ring sequence number of the next decision this subscriber reads."""
        return n.lib.rim_subscriber_position(self._live())

    def close(self) -> None:
        """Detaches from the ring. Idempotent."""
        if getattr(self, "_handle", None) is not None:
            n.lib.rim_subscriber_close(self._handle)
            self._handle = None

    def __enter__(self) -> "Subscriber":
        """The subscriber itself; :meth:`close` runs when the block ends."""
        return self

    def __exit__(self, *exc) -> None:
        """Detaches, whether the block ended by an exception or not."""
        self.close()

    def __del__(self) -> None:
        """Detaches if the subscriber was never closed."""
        self.close()

    def __iter__(self) -> Iterator[Decision]:
        """Decisions as they come, without end (:meth:`decisions` with no timeout)."""
        return self.decisions()
