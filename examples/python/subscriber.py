#!/usr/bin/env python3
"""Follow costsim-breaker's breaker-state topic from Python and answer "is V2 disabled?", failing open.

Records are Avro single-object encoded (C3 01, the little-endian CRC-64-AVRO fingerprint of the Parsing Canonical
Form of schemas/breaker_state_changed.avsc, then the body). This subscriber:
  - checks the header against the fingerprint fastavro computes for the schema, and skips (with a warning) a
    record whose header names another schema;
  - decodes the body with fastavro;
  - keeps, per breaker, only a version greater than every one seen (the relay publishes at least once, so
    duplicates happen);
  - fails open: a breaker is "disabled" only when its newest state is `open` and the subscriber has heard from the
    topic within --max-age seconds; an unknown breaker or a stale view answers "enabled" (V2 is shadow-only: a
    wrong "enabled" costs work, a wrong "disabled" silently stops the comparison).

It reads every partition from the beginning (the topic is compacted by breaker name), prints each accepted change
as one JSON line, and once it has read up to the end of every partition prints
{"caught_up": true, "disabled": {breaker: bool}}. With --follow it then keeps following.

Usage:
  subscriber.py --brokers HOST:PORT --topic costsim.breaker-state --schema schemas/breaker_state_changed.avsc
"""

import argparse
import io
import json
import sys
import time

import fastavro
from confluent_kafka import Consumer, TopicPartition
from fastavro.schema import fingerprint, to_parsing_canonical_form


class BreakerStates:
    """The newest known state per breaker, and the fail-open answer."""

    def __init__(self, max_age_seconds):
        self.latest = {}
        self.max_age = max_age_seconds
        self.heard_at = None

    def offer(self, change):
        """Keeps `change` if its version is new for its breaker; returns whether it was kept."""
        seen = self.latest.get(change["breaker"])
        if seen is not None and change["version"] <= seen["version"]:
            return False
        self.latest[change["breaker"]] = change
        return True

    def heard(self):
        self.heard_at = time.monotonic()

    def is_disabled(self, breaker):
        """True only for a breaker known to be open by a fresh view: everything else fails open."""
        fresh = self.heard_at is not None and time.monotonic() - self.heard_at <= self.max_age
        change = self.latest.get(breaker)
        return bool(fresh and change is not None and change["to_state"] == "open")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--schema", required=True, help="schemas/breaker_state_changed.avsc")
    parser.add_argument("--max-age", type=float, default=60.0, help="seconds a view stays fresh without news")
    parser.add_argument("--follow", action="store_true", help="keep following after catching up")
    parser.add_argument("--timeout", type=float, default=30.0, help="give up catching up after this many seconds")
    args = parser.parse_args()

    with open(args.schema, encoding="utf-8") as f:
        schema_json = json.load(f)
    parsed = fastavro.parse_schema(schema_json)
    header = b"\xc3\x01" + bytes.fromhex(fingerprint(to_parsing_canonical_form(schema_json), "CRC-64-AVRO"))

    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": "unused", "enable.auto.commit": False})
    metadata = consumer.list_topics(args.topic, timeout=10)
    partitions = sorted(metadata.topics[args.topic].partitions)
    ends = {p: consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=10)[1] for p in partitions}
    consumer.assign([TopicPartition(args.topic, p, 0) for p in partitions])
    states = BreakerStates(args.max_age)
    position = {p: 0 for p in partitions}
    caught_up = False
    deadline = time.monotonic() + args.timeout
    while True:
        if not caught_up and all(position[p] >= ends[p] for p in partitions):
            caught_up = True
            states.heard()
            disabled = {b: states.is_disabled(b) for b in sorted(states.latest)}
            print(json.dumps({"caught_up": True, "disabled": disabled}), flush=True)
            if not args.follow:
                return 0
        if not caught_up and time.monotonic() > deadline:
            print(f"not caught up within {args.timeout} s", file=sys.stderr)
            return 1
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            # Fail open: a broker error leaves the answers to age into "enabled".
            print(f"warning: {message.error()}", file=sys.stderr)
            continue
        position[message.partition()] = message.offset() + 1
        states.heard()
        value = message.value() or b""
        if value[:10] != header:
            print(f"warning: skipped a record of another schema (header {value[:10].hex()})", file=sys.stderr)
            continue
        change = fastavro.schemaless_reader(io.BytesIO(value[10:]), parsed)
        if states.offer(change):
            for key in ("occurred_at", "disabled_until"):
                if change.get(key) is not None:
                    change[key] = change[key].isoformat()
            print(json.dumps(change), flush=True)


if __name__ == "__main__":
    sys.exit(main())
