"""Reads topics from the beginning with a fresh consumer group (an independent consumer)
and prints one JSON line per message: topic, partition, offset, key, value (text when
UTF-8, else value_b64), headers. Stops after --count messages or --timeout seconds.

    consume.py --brokers H:P --topic T [--topic T2] --count N --timeout S
"""
import argparse
import base64
import json
import sys
import time
import uuid

from confluent_kafka import Consumer


def text(b):
    if b is None:
        return None, None
    try:
        return b.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, base64.b64encode(b).decode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", action="append", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()
    c = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": "test-" + uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    c.subscribe(args.topic)
    got = 0
    deadline = time.time() + args.timeout
    while got < args.count and time.time() < deadline:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        value, value_b64 = text(m.value())
        key, _ = text(m.key())
        headers = {}
        for k, v in m.headers() or []:
            headers[k] = text(v)[0] if v is not None else None
        out = {"topic": m.topic(), "partition": m.partition(), "offset": m.offset(), "key": key, "headers": headers}
        if value_b64 is None:
            out["value"] = value
        else:
            out["value_b64"] = value_b64
        print(json.dumps(out), flush=True)
        got += 1
    c.close()
    print(f"CONSUMED={got}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
