"""Produces RimFastEvents to Kafka with an independent encoder: confluent-kafka's
AvroSerializer (fastavro underneath) registering the writer schema with a registry, so the
Confluent wire format rimd reads is someone else's.

    produce.py --brokers H:P --registry URL --topic T [--schema FILE.avsc] < lines

Each stdin line is JSON, one of:
    {"event": {...RimFastEvent fields...}, "headers": {"k": "v"}}    Avro, key = rim_node_id
    {"raw_b64": "...", "key": "k", "headers": {...}}                  these bytes as they are
Prints PRODUCED=<n> when every message is acknowledged (exit 1 on a delivery error).
"""
import argparse
import base64
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--schema", required=True)
    args = ap.parse_args()

    with open(args.schema) as f:
        schema_text = f.read()
    registry = SchemaRegistryClient({"url": args.registry})
    serializer = AvroSerializer(registry, schema_text, conf={"auto.register.schemas": True})
    # murmur2 as the platform's Java producers partition (and as rimd assigns shards).
    producer = Producer(
        {
            "bootstrap.servers": args.brokers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",
        }
    )
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))

    n = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        item = json.loads(line)
        headers = [(k, v.encode()) for k, v in (item.get("headers") or {}).items()]
        if "event" in item:
            ev = item["event"]
            value = serializer(ev, SerializationContext(args.topic, MessageField.VALUE))
            key = ev["rim_node_id"].encode()
        else:
            value = base64.b64decode(item["raw_b64"])
            key = item.get("key", "").encode() or None
        producer.produce(args.topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
        producer.poll(0)
        n += 1
    left = producer.flush(60)
    if left or errors:
        print(f"delivery failed: {left} left, errors {errors}", file=sys.stderr)
        sys.exit(1)
    print(f"PRODUCED={n}", flush=True)


if __name__ == "__main__":
    main()
