"""rimd_client: publish RimFastEvents to rimd and read its decisions from Python.

A thin layer over rimd's C ABI (``librim_ring.so``, ``ring/include/rim_ring.h``) through
ctypes: the same shared-memory rings a C feed handler uses, no sockets per event, no
copies beyond the one into the ring. ``pip install`` from a rimd checkout builds the
library and ships it inside the package.

::

    import time
    from rimd_client import Producer, Subscriber

    with Subscriber("/dev/shm/rimd/rimd.sock", verify=True) as s, \\
         Producer("/dev/shm/rimd/rimd.sock", "py-feed") as p:
        p.publish("rim:sensor:lab:t1", int(time.time() * 1000), {"temp": 96.0})
        d = s.next(timeout=1.0)
        print(d.severity, d.rule_id, d.rim_node_id, d.evidence, d.latency_ns)
"""

from .errors import (
    ArgumentError,
    AttachError,
    ChainBroken,
    CorruptRecord,
    InternalError,
    InvalidEvent,
    Lapped,
    Quarantined,
    RecordTooLarge,
    RimError,
    RingClosed,
    RingFull,
)
from .producer import DEFAULT_SOCKET, Producer, Verdicts
from .subscriber import Decision, Subscriber

__all__ = [
    "ArgumentError",
    "AttachError",
    "ChainBroken",
    "CorruptRecord",
    "DEFAULT_SOCKET",
    "Decision",
    "InternalError",
    "InvalidEvent",
    "Lapped",
    "Producer",
    "Quarantined",
    "RecordTooLarge",
    "RimError",
    "RingClosed",
    "RingFull",
    "Subscriber",
    "Verdicts",
]
