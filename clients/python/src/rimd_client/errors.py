"""Typed errors: one exception class per status code of rimd's C ABI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Type

if TYPE_CHECKING:
    from .subscriber import Decision


class RimError(Exception):
    """Any error reported by rimd's C ABI; ``status`` is its status code."""

    status: int = -1

    def __init__(self, message: str, status: Optional[int] = None):
        """``message`` says what went wrong; ``status`` overrides the class's code."""
        super().__init__(message)
        if status is not None:
            self.status = status


class RingFull(RimError):
    """The producer ring is full: the daemon has not caught up. Retry later."""

    status = 1


class RecordTooLarge(RimError):
    """The event is larger than the ring takes."""

    status = 2


class InvalidEvent(RimError):
    """The event or a string breaks a rule of the data model (node id pattern, limits,
    non-finite numbers, duplicate metric names)."""

    status = 3


class Quarantined(RimError):
    """The daemon quarantined this producer's ring."""

    status = 4


class RingClosed(RimError):
    """The daemon closed this ring, or the client object was closed."""

    status = 5


class AttachError(RimError):
    """Attaching to the daemon failed: no daemon at the socket, refused, or no such shard."""

    status = 6


class ArgumentError(RimError):
    """A bad argument reached the C ABI."""

    status = 7


class InternalError(RimError):
    """A bug in librim_ring (a caught panic)."""

    status = 8


class Lapped(RimError):
    """The subscriber fell a whole ring behind; ``missed`` decisions were lost to it.
    Reading goes on from the oldest decision still in the ring."""

    status = 17

    def __init__(self, missed: int):
        """``missed``: the decisions lost in this lap."""
        super().__init__(f"subscriber lapped: {missed} decisions missed")
        self.missed = missed


class CorruptRecord(RimError):
    """A record on the decision ring is not a valid decision; it was skipped."""

    status = 18


class ChainBroken(RimError):
    """A decision's hash or its link to the previous decision is wrong (``verify=True``).
    The decision is in ``decision``; checking goes on from it."""

    status = 19

    def __init__(self, decision: "Decision"):
        """``decision``: the decision that breaks the chain, as read."""
        super().__init__(f"decision {decision.chain_seq} of shard {decision.shard} breaks the hash chain")
        self.decision = decision


_BY_STATUS: Dict[int, Type[RimError]] = {
    cls.status: cls
    for cls in (RingFull, RecordTooLarge, InvalidEvent, Quarantined, RingClosed, AttachError, ArgumentError, InternalError)
}


def error_for(status: int, text: str) -> RimError:
    """The exception for a status code (``text`` is the library's description of it)."""
    cls = _BY_STATUS.get(status, RimError)
    return cls(text, status)
