"""A real rimd for the client's tests: started from ``$RIMD_BIN`` (default: the
repository's ``target/debug/rimd``) in a private temporary run and data directory, with
the test rules, killed at the end. Nothing is shared with other test runs: no fixed path,
no port (the HTTP API is off)."""

import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 60.0

RULES = """
[[rule]]
id = "py-hot"
nodes = "rim:sensor:py:*"
when = "metric.temp > 80"
severity = "high"

[[rule]]
id = "py-lap"
nodes = "rim:sensor:pylap:*"
when = "metric.temp > 80"
severity = "low"
"""

# As the Rust integration tests run their daemons: tests share a 2-core machine.
SETS = [
    "topology.idle=backoff",
    "topology.pin=false",
    "reflex.nodes_max=1000",
    "ingest.reflex_ring_slots=4096",
    "decisions.slots=64",
    "reflex.cooldown_slots=1024",
    "stats.segment_bytes=262144",
    "persist.segment_bytes=1048576",
    "persist.journal_ring_bytes=1048576",
    "persist.reflex_ring_bytes=1048576",
    "api.enabled=false",
]
SLOTS = 64


class Rimd:
    def __init__(self, root: Path):
        self.root = root
        self.socket = str(root / "run" / "rimd.sock")
        self.log = root / "rimd.log"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_attachable(d: Rimd, deadline: float) -> None:
    """The socket file exists a moment before the daemon listens on it."""
    from rimd_client import AttachError, Subscriber

    while True:
        try:
            Subscriber(d.socket).close()
            return
        except AttachError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@pytest.fixture(scope="session")
def rimd(tmp_path_factory):
    """A running daemon; yields its socket path and log."""
    binary = os.environ.get("RIMD_BIN", str(REPO / "target" / "debug" / "rimd"))
    root = tmp_path_factory.mktemp("rimd")
    (root / "rules.toml").write_text(RULES)
    d = Rimd(root)
    args = [binary, "--run-dir", str(root / "run"), "--rules", str(root / "rules.toml")]
    args += ["--set", f"persist.data_dir={root / 'data'}"]
    for s in SETS:
        args += ["--set", s]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIMD_") and k != "RUST_LOG"}
    with open(d.log, "wb") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (os.path.exists(d.socket) and os.path.exists(root / "run" / "stats")):
            if proc.poll() is not None:
                pytest.fail(f"rimd exited with {proc.returncode} during start-up:\n{d.log_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"rimd did not come up in {START_TIMEOUT_S} s:\n{d.log_text()}")
            time.sleep(0.01)
        wait_attachable(d, deadline)
        yield d
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
