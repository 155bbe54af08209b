#!/usr/bin/env python3
"""Send simulation results to costsim-breaker's results topic from Python, with fastavro and confluent-kafka.

Each line of standard input is one SimulationResult as JSON, in the shape fastavro takes: `occurred_at` in
milliseconds since the epoch, enums as their symbols, optional fields as null or their value. Records are keyed
by tenant.

Framing (--framing):
  single-object  Avro single-object encoding as the specification defines it: C3 01, the little-endian
                 CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form, then the Avro body. No
                 registry is needed; the processor knows the writer by its fingerprint (schemas/ and
                 COSTSIM_SCHEMA_DIR).
  confluent      Confluent's wire format (magic 0, the 4-byte schema id, the body) through a Schema Registry,
                 with confluent_kafka.schema_registry's AvroSerializer (subject <topic>-value).

Usage:
  producer.py --brokers HOST:PORT --topic TOPIC --schema schemas/simulation_result.avsc < events.jsonl
  producer.py ... --framing confluent --registry http://registry:8081 [--registry-auth USER:PASSWORD]
"""

import argparse
import io
import json
import sys

import fastavro
from confluent_kafka import Producer
from fastavro.schema import fingerprint, to_parsing_canonical_form


def single_object_encoder(schema_json):
    """A function from a record to its single-object encoding under the given writer schema."""
    parsed = fastavro.parse_schema(schema_json)
    # fastavro gives the fingerprint's bytes in the order the header carries them (little-endian).
    header = b"\xc3\x01" + bytes.fromhex(fingerprint(to_parsing_canonical_form(schema_json), "CRC-64-AVRO"))

    def encode(record, _topic):
        body = io.BytesIO()
        fastavro.schemaless_writer(body, parsed, record)
        return header + body.getvalue()

    return encode


def confluent_encoder(schema_json, registry_url, auth):
    """A function from a record to Confluent's framing, registering the schema under <topic>-value."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    conf = {"url": registry_url}
    if auth:
        conf["basic.auth.user.info"] = auth
    serializer = AvroSerializer(SchemaRegistryClient(conf), json.dumps(schema_json))

    def encode(record, topic):
        return serializer(record, SerializationContext(topic, MessageField.VALUE))

    return encode


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--schema", required=True, help="the writer schema (.avsc)")
    parser.add_argument("--framing", choices=["single-object", "confluent"], default="single-object")
    parser.add_argument("--registry", help="Schema Registry URL (confluent framing)")
    parser.add_argument("--registry-auth", help="USER:PASSWORD for the registry's basic auth")
    args = parser.parse_args()

    with open(args.schema, encoding="utf-8") as f:
        schema_json = json.load(f)
    if args.framing == "confluent":
        if not args.registry:
            parser.error("--framing confluent needs --registry")
        encode = confluent_encoder(schema_json, args.registry, args.registry_auth)
    else:
        encode = single_object_encoder(schema_json)

    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(str(err))

    # Without idempotence and compression: the defaults every broker accepts.
    producer = Producer({"bootstrap.servers": args.brokers, "enable.idempotence": False, "linger.ms": 5})
    sent = 0
    for line in sys.stdin:
        if not line.strip():
            continue
        record = json.loads(line)
        value = encode(record, args.topic)
        producer.produce(args.topic, key=record["tenant_id"].encode(), value=value, on_delivery=delivered)
        producer.poll(0)
        sent += 1
    remaining = producer.flush(30)
    if remaining or failures:
        print(f"{len(failures)} failed, {remaining} undelivered: {failures[:3]}", file=sys.stderr)
        return 1
    print(f"sent {sent} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
