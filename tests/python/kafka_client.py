"""A Kafka client the tests did not write: confluent-kafka, with its own build of librdkafka.

    kafka_client.py produce CONFIG_JSON TOPIC   < records   # stdin: one "KEY_HEX VALUE_HEX" per line
    kafka_client.py consume CONFIG_JSON TOPIC COUNT SECONDS # stdout: one "KEY_HEX VALUE_HEX" per record

CONFIG_JSON is a JSON object of librdkafka properties (bootstrap.servers, compression.type, security settings).
`produce` flushes, then prints {"delivered": n, "failed": n, "errors": [...]} and exits 1 if any record failed.
`consume` reads the topic from its beginning in a group of its own until COUNT records or SECONDS have passed,
then exits 0 if it got COUNT records and 1 otherwise. Errors the client reports go to stderr.
"""

import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, Producer


def produce(config, topic):
    summary = {"delivered": 0, "failed": 0, "errors": []}

    def on_delivery(err, _msg):
        if err is None:
            summary["delivered"] += 1
        else:
            summary["failed"] += 1
            if len(summary["errors"]) < 5:
                summary["errors"].append(str(err))

    producer = Producer({**config, "error_cb": lambda err: print(f"client error: {err}", file=sys.stderr)})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        key, value = line.split(" ")
        while True:
            try:
                producer.produce(topic, key=bytes.fromhex(key), value=bytes.fromhex(value), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(60)
    summary["failed"] += left
    print(json.dumps(summary))
    return 0 if summary["failed"] == 0 else 1


def consume(config, topic, count, seconds):
    consumer = Consumer(
        {
            **config,
            "group.id": f"independent-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "error_cb": lambda err: print(f"client error: {err}", file=sys.stderr),
        }
    )
    consumer.subscribe([topic])
    got = 0
    deadline = time.monotonic() + seconds
    while got < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                print(f"consume error: {msg.error()}", file=sys.stderr)
            continue
        print(f"{(msg.key() or b'').hex()} {(msg.value() or b'').hex()}", flush=True)
        got += 1
    consumer.close()
    return 0 if got >= count else 1


def main(argv):
    if len(argv) < 4 or argv[1] not in ("produce", "consume"):
        print(__doc__, file=sys.stderr)
        return 2
    config = json.loads(argv[2])
    if argv[1] == "produce":
        return produce(config, argv[3])
    return consume(config, argv[3], int(argv[4]), float(argv[5]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
