"""ctypes bindings of librim_ring (ring/include/rim_ring.h): the structs and prototypes,
and how the library is found.

The library is looked for, in order: ``$RIM_RING_LIB``; the copy shipped inside this
package (``pip install`` builds one); ``librim_ring.so`` on the system's library path
(``scripts/install.sh`` installs it into ``PREFIX/lib``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path
from typing import Optional

from .errors import RimError, error_for

RIM_OK = 0
RIM_ERR_EMPTY = 16
RIM_ERR_LAPPED = 17
RIM_ERR_CORRUPT = 18
RIM_ERR_CHAIN = 19
RIM_ERR_TIMEOUT = 20

KIND_NODE_ID = 1
KIND_METRIC_NAME = 2
KIND_STATUS = 3
KIND_SOURCE_TOPIC = 4

HAS_EVENT_ID = 1 << 0
HAS_PRICE = 1 << 1
HAS_VOLUME = 1 << 2
HAS_STRESS = 1 << 3
HAS_SOURCE_TOPIC = 1 << 4

SUB_FROM_OLDEST = 1 << 0
SUB_VERIFY = 1 << 1

METRICS_MAX = 64
RULE_ID_MAX = 64
NODE_ID_MAX = 256
LABEL_MAX = 80
EVIDENCE_MAX = 16
DECISION_SWEEP = 1
DECISION_RESUMED = 2
DECISION_BYTES = 2008


class RimMetric(ctypes.Structure):
    """``rim_metric``: one metric of an event, its name a metric-name symbol."""

    _fields_ = [("name", ctypes.c_uint32), ("value", ctypes.c_double)]


class RimEvent(ctypes.Structure):
    """``rim_event``: an event made of symbols and numbers, as ``rim_producer_publish`` takes it."""

    _fields_ = [
        ("node", ctypes.c_uint32),
        ("status", ctypes.c_uint32),
        ("source_topic", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("timestamp", ctypes.c_int64),
        ("price", ctypes.c_double),
        ("volume", ctypes.c_double),
        ("stress", ctypes.c_double),
        ("publish_ns", ctypes.c_uint64),
        ("event_id", ctypes.c_char_p),
        ("event_id_len", ctypes.c_size_t),
        ("metrics", ctypes.POINTER(RimMetric)),
        ("metric_count", ctypes.c_size_t),
    ]


class RimVerdicts(ctypes.Structure):
    """``rim_verdicts``: what the daemon did not take from a producer's ring, per reason."""

    _fields_ = [
        ("rejected", ctypes.c_uint64),
        ("invalid", ctypes.c_uint64),
        ("duplicates", ctypes.c_uint64),
        ("node_table_full", ctypes.c_uint64),
        ("event_time_ahead", ctypes.c_uint64),
        ("event_time_too_old", ctypes.c_uint64),
        ("node_not_allowed", ctypes.c_uint64),
    ]


class RimEvidence(ctypes.Structure):
    """``rim_evidence``: one input a rule read, with its value (NaN when unknown)."""

    _fields_ = [("label", ctypes.c_char * (LABEL_MAX + 1)), ("value", ctypes.c_double)]


class RimDecision(ctypes.Structure):
    """``rim_decision``: a decision copied out of the ring (2008 bytes, as the header asserts)."""

    _fields_ = [
        ("chain_seq", ctypes.c_uint64),
        ("epoch_ns", ctypes.c_uint64),
        ("rule_generation", ctypes.c_uint64),
        ("event_seq", ctypes.c_uint64),
        ("event_timestamp_ms", ctypes.c_int64),
        ("publish_ns", ctypes.c_uint64),
        ("decided_ns", ctypes.c_uint64),
        ("latency_ns", ctypes.c_uint64),
        ("shard", ctypes.c_uint32),
        ("rule_version", ctypes.c_uint32),
        ("node_index", ctypes.c_uint32),
        ("severity", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("evidence_count", ctypes.c_uint16),
        ("prev_hash", ctypes.c_uint8 * 32),
        ("hash", ctypes.c_uint8 * 32),
        ("rule_id", ctypes.c_char * (RULE_ID_MAX + 1)),
        ("node_id", ctypes.c_char * (NODE_ID_MAX + 1)),
        ("evidence", RimEvidence * EVIDENCE_MAX),
    ]


# A mismatch here means the bindings and the header disagree: fail at import, not later.
assert ctypes.sizeof(RimDecision) == DECISION_BYTES, ctypes.sizeof(RimDecision)

_P = ctypes.c_void_p
_PROTOTYPES = {
    "rim_producer_attach": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(_P)]),
    "rim_producer_intern": (
        ctypes.c_int,
        [_P, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint32)],
    ),
    "rim_producer_publish": (ctypes.c_int, [_P, ctypes.POINTER(RimEvent)]),
    "rim_producer_position": (ctypes.c_uint64, [_P]),
    "rim_producer_consumed_position": (ctypes.c_uint64, [_P]),
    "rim_producer_durable_position": (ctypes.c_uint64, [_P]),
    "rim_producer_verdicts": (ctypes.c_int, [_P, ctypes.POINTER(RimVerdicts)]),
    "rim_producer_wait_durable": (ctypes.c_int, [_P, ctypes.c_uint64, ctypes.c_uint64]),
    "rim_producer_close": (None, [_P]),
    "rim_status_text": (ctypes.c_char_p, [ctypes.c_int]),
    "rim_subscriber_attach": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(_P)]),
    "rim_subscriber_poll": (ctypes.c_int, [_P, ctypes.POINTER(RimDecision)]),
    "rim_subscriber_next": (ctypes.c_int, [_P, ctypes.POINTER(RimDecision), ctypes.c_uint64]),
    "rim_subscriber_missed": (ctypes.c_uint64, [_P]),
    "rim_subscriber_lag": (ctypes.c_uint64, [_P]),
    "rim_subscriber_position": (ctypes.c_uint64, [_P]),
    "rim_subscriber_close": (None, [_P]),
    "rim_severity_text": (ctypes.c_char_p, [ctypes.c_uint8]),
}


def _candidates():
    """Paths to try for the library, in the order the module docstring gives."""
    given = os.environ.get("RIM_RING_LIB")
    if given:
        yield given
        return
    shipped = Path(__file__).resolve().parent / "librim_ring.so"
    if shipped.exists():
        yield str(shipped)
    found = ctypes.util.find_library("rim_ring")
    if found:
        yield found


def _load() -> ctypes.CDLL:
    """Loads the first library that opens and declares every prototype used; ImportError
    naming what was tried when none does."""
    tried = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"{path}: {e}")
            continue
        for name, (restype, argtypes) in _PROTOTYPES.items():
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        return lib
    raise ImportError(
        "rimd_client: librim_ring.so not found (set RIM_RING_LIB, or install the package with pip "
        "from a rimd checkout, which builds it): " + ("; ".join(tried) or "no candidate")
    )


lib = _load()


def status_text(status: int) -> str:
    """The library's description of a status code."""
    text: Optional[bytes] = lib.rim_status_text(status)
    return text.decode() if text else f"status {status}"


def check(status: int) -> None:
    """Raises the typed error for a status other than RIM_OK."""
    if status != RIM_OK:
        raise error_for(status, status_text(status))


def closed_error(what: str) -> RimError:
    """The error for using a closed client object."""
    return error_for(5, f"{what} is closed")
