"""tansu 0.6 storage engines compared: SQLite (libsql) vs PostgreSQL, with confluent-kafka.

Run with the stack's venv, once per engine (each run starts its own private
tansu on a free port with fresh storage: a new temp dir for SQLite, a new
database for PostgreSQL, dropped afterwards):

    $VENV/bin/python benches/tansu/storage_engines.py --tansu "$TANSU_BIN" --engine sqlite
    $VENV/bin/python benches/tansu/storage_engines.py --tansu "$TANSU_BIN" --engine postgres \
        --pg-ddl 010-schema.sql

The tansu binary must be built with the engine's cargo feature (``libsql``,
``postgres``). ``--pg-ddl`` is tansu's PostgreSQL schema,
``etc/initdb.d/010-schema.sql`` at tag v0.6.0 of the tansu repository; the
crate does not ship it and the broker does not create it.

What it measures, in this order (one JSON line each):

1. ``produce``: ``--records`` records of ``--size`` bytes, acks=all, one
   partition, non-idempotent producer, compression none then lz4: records/s
   from the first produce() to the end of flush(), and delivery errors.
2. ``fetch``: the same records read back from offset 0 (assign, no group):
   records/s.
3. ``headers``: ``--header-records`` records with 0, 5 and 11 headers each,
   from a producer configured like the dead-letter one (non-idempotent,
   one request in flight, acks=all): records/s.
3b. ``concurrent`` (only when asked for): ``--readers`` consumers read the
   whole uncompressed topic at once while Metadata latency is sampled.
4. ``restart``: after ``--idle-s`` idle (CPU used meanwhile is the control),
   SIGKILL the idle broker, start it again on the same storage:
   seconds to the first Metadata answer and to the first record fetched, and
   whether every record written before the kill is still there.
5. ``crash_under_load``: SIGKILL the broker while a producer is writing,
   restart, and compare what was acknowledged with what is stored
   (acknowledged records lost must be 0).
5b. ``stall`` (only when asked for): an idempotent producer writes for 15 s
   while the broker is SIGSTOPped for 5 s of it (message.timeout.ms=3000, so
   batches expire and librdkafka bumps the epoch); then a probe and a search
   for a panic.
6. ``idempotent``: ``--idem-rounds`` bursts of ``--idem-records`` records as
   fast as possible, each from ``--idem-producers`` new enable.idempotence=true
   producers at once (over ``--idem-partitions`` partitions); after
   each burst a probe (produce + fetch from a plain producer) tells whether
   the broker still works, and the log is searched for a panic. If it is
   wedged the rounds stop and a SIGKILL + restart is tried.

``--tests`` picks a subset (the restart test stops the run when the broker
does not work afterwards, so the later tests then need their own run). The
last line is a summary of all of it.
"""

import argparse
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition  # noqa: E402

from tansu_harness import (Broker, PgDatabase, create_topic, emit, fetch_count, now, probe,  # noqa: E402
                           unique)

HEADER_NAMES = ["costsim.dlq.source.topic", "costsim.dlq.source.partition", "costsim.dlq.source.offset",
                "costsim.dlq.reason", "costsim.dlq.error", "costsim.dlq.consumer.group",
                "costsim.dlq.failed.at", "costsim.dlq.attempts", "costsim.dlq.schema.id",
                "costsim.dlq.key.format", "costsim.dlq.value.format"]


def payload(i, size):
    """A record value of `size` bytes: a counter, then semi-random text (lz4 gets some, not all)."""
    head = f'{{"n":{i},"cost":{(i * 7919) % 100000},"pad":"'.encode()
    body = (f"{i * 2654435761 % 4294967296:08x}" * (size // 8 + 1)).encode()
    return (head + body)[: size - 2] + b'"}'


def produce_batch(bootstrap, topic, count, size, config, headers=None, partition=0):
    """Produce count records and flush; return (seconds, delivered, errors)."""
    base = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": "5",
            "queue.buffering.max.messages": "1000000", "queue.buffering.max.kbytes": "1048576",
            "message.timeout.ms": "120000"}
    base.update(config)
    producer = Producer(base)
    state = {"ok": 0, "err": 0, "first_error": None}

    def on_delivery(err, _msg):
        if err is None:
            state["ok"] += 1
        else:
            state["err"] += 1
            state["first_error"] = state["first_error"] or str(err)

    where = {} if partition is None else {"partition": partition}
    started = now()
    for i in range(count):
        value = payload(i, size)
        while True:
            try:
                producer.produce(topic, value, key=str(i).encode(), headers=headers, on_delivery=on_delivery,
                                 **where)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(180)
    took = now() - started
    return took, state["ok"], state["err"] + remaining, state["first_error"]


def watermark(bootstrap, topic, partition=0, timeout=10, isolation="read_uncommitted"):
    """(low, high) offsets of one partition.

    read_uncommitted by default: with read_committed (librdkafka's default)
    tansu 0.6's PostgreSQL engine runs list_latest_offset_committed.sql, whose
    subquery has no alias, which PostgreSQL before 16 rejects.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("wm"), "isolation.level": isolation})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
    finally:
        consumer.close()


def timed_fetch(bootstrap, topic, want, timeout=300):
    started = now()
    got = fetch_count(bootstrap, topic, 0, want, timeout)
    return now() - started, got


def first_fetch_after_restart(broker, topic, timeout=120):
    """Seconds from spawning tansu on the old storage to Metadata, and to the first fetched record."""
    spawned = now()
    broker.start(wait=False)
    broker.wait_metadata(timeout)
    metadata_at = now()
    while now() - spawned < timeout:
        try:
            if fetch_count(broker.bootstrap, topic, 0, 1, 3) >= 1:
                return metadata_at - spawned, now() - spawned
        except KafkaException:
            pass
        if broker.proc.poll() is not None:
            break
    return metadata_at - spawned, None


def crash_under_load(broker, size):
    """SIGKILL while a producer writes; count acknowledged records that are gone after restart."""
    topic = unique("crash")
    create_topic(broker.bootstrap, topic, 1)
    acked = []
    stop = threading.Event()

    def writer():
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": "5",
                             "message.timeout.ms": "15000", "enable.idempotence": "false",
                             "max.in.flight.requests.per.connection": "1", "retries": "0"})

        def on_delivery(err, msg):
            if err is None:
                acked.append(msg.offset())

        i = 0
        while not stop.is_set():
            try:
                producer.produce(topic, payload(i, size), partition=0, on_delivery=on_delivery)
                i += 1
            except BufferError:
                pass
            producer.poll(0.0005 if i % 100 else 0.01)
        producer.flush(20)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(4)
    acked_before_kill = len(acked)
    broker.kill()
    killed_acked = list(acked)
    stop.set()
    thread.join(30)
    to_metadata, to_fetch = first_fetch_after_restart(broker, topic)
    max_acked = max(killed_acked) if killed_acked else -1
    try:
        low, high = watermark(broker.bootstrap, topic)
        stored = fetch_count(broker.bootstrap, topic, 0, high, 120) if high > 0 else 0
    except KafkaException as err:
        return {"test": "crash_under_load", "acked_total": len(killed_acked), "acked_lost": None,
                "error_after": str(err), "broker_exit_code": broker.proc.poll(),
                "restart_to_metadata_s": round(to_metadata, 3), "restart_to_first_fetch_s": None,
                "panic_lines": [l[:200] for l in broker.log_text().splitlines() if "panicked" in l][:3],
                "probe_after": probe(broker.bootstrap)}
    return {"test": "crash_under_load", "acked_before_kill": acked_before_kill,
            "acked_total": len(killed_acked), "max_acked_offset": max_acked,
            "high_watermark_after": high, "low_watermark_after": low, "records_read_after": stored,
            "acked_lost": max(0, max_acked + 1 - stored) if killed_acked else 0,
            "restart_to_metadata_s": round(to_metadata, 3),
            "restart_to_first_fetch_s": round(to_fetch, 3) if to_fetch is not None else None,
            "probe_after": probe(broker.bootstrap)}


def concurrent_fetch(broker, topic, records, readers):
    """`readers` consumers read the whole topic at once; meanwhile Metadata latency is sampled every 0.5 s."""
    from concurrent.futures import ThreadPoolExecutor
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    latencies, failures = [], 0
    started = now()
    with ThreadPoolExecutor(max_workers=readers) as pool:
        futures = [pool.submit(fetch_count, broker.bootstrap, topic, 0, records, 300) for _ in range(readers)]
        while not all(f.done() for f in futures):
            t0 = now()
            try:
                admin.list_topics(timeout=10)
                latencies.append(now() - t0)
            except KafkaException:
                failures += 1
            time.sleep(0.5)
        got = [f.result() for f in futures]
    took = now() - started
    latencies.sort()
    return {"test": "concurrent_fetch", "readers": readers, "seconds": round(took, 3), "records_each": got,
            "all_complete": all(g == records for g in got), "aggregate_records_per_s": round(sum(got) / took),
            "metadata_samples": len(latencies), "metadata_failures": failures,
            "metadata_p50_s": round(latencies[len(latencies) // 2], 3) if latencies else None,
            "metadata_max_s": round(latencies[-1], 3) if latencies else None}


def idempotent_stall(broker, size, stall_s=5.0):
    """An idempotent producer whose batches time out: the broker is SIGSTOPped mid-burst.

    librdkafka then bumps the producer epoch (KIP-360) and carries on; tansu's
    SQLite idempotence check looks up the (producer, epoch, partition) row with
    a query that panics when it finds none.
    """
    topic = unique("stall")
    create_topic(broker.bootstrap, topic, 3)
    state = {"ok": 0, "err": 0, "errors": {}}

    def on_delivery(err, _msg):
        if err is None:
            state["ok"] += 1
        else:
            state["err"] += 1
            state["errors"][err.name()] = state["errors"].get(err.name(), 0) + 1

    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": "true", "linger.ms": "5",
                         "message.timeout.ms": "3000", "request.timeout.ms": "2000"})
    started = now()
    stopped = resumed = False
    i = 0
    while now() - started < 15:
        elapsed = now() - started
        if not stopped and elapsed > 2:
            broker.proc.send_signal(signal.SIGSTOP)
            stopped = True
        if stopped and not resumed and elapsed > 2 + stall_s:
            broker.proc.send_signal(signal.SIGCONT)
            resumed = True
        try:
            producer.produce(topic, payload(i, size), key=str(i).encode(), on_delivery=on_delivery)
            i += 1
        except BufferError:
            pass
        producer.poll(0.001)
    producer.flush(20)
    works = probe(broker.bootstrap)
    return {"test": "idempotent_stall", "stall_s": stall_s, "produced": i, "delivered": state["ok"],
            "failed": state["err"], "errors": state["errors"], "probe_after": works, "panic_in_log": panicked(broker),
            "panic_lines": [l[:200] for l in broker.log_text().splitlines() if "panicked" in l][:3]}


def panicked(broker):
    return "panicked" in broker.log_text()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tansu", default=os.environ.get("TANSU_BIN"))
    parser.add_argument("--engine", choices=["sqlite", "postgres"], required=True)
    parser.add_argument("--pg-ddl", help="tansu's PostgreSQL schema (etc/initdb.d/010-schema.sql at v0.6.0)")
    parser.add_argument("--records", type=int, default=200000)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--header-records", type=int, default=20000)
    parser.add_argument("--idem-records", type=int, default=50000)
    parser.add_argument("--idem-rounds", type=int, default=5)
    parser.add_argument("--readers", type=int, default=8, help="consumers in the concurrent-fetch test")
    parser.add_argument("--idem-producers", type=int, default=1, help="concurrent idempotent producers per burst")
    parser.add_argument("--idem-partitions", type=int, default=1)
    parser.add_argument("--idle-s", type=float, default=30, help="idle wait before the restart test's kill")
    parser.add_argument("--tests", default="produce,restart,crash,idempotent",
                        help="comma-separated subset of: produce (with fetch and headers), concurrent, restart, crash, "
                             "stall, idempotent")
    parser.add_argument("--keep", action="store_true", help="keep the database / temp dir afterwards")
    args = parser.parse_args()
    if not args.tansu:
        parser.error("--tansu or TANSU_BIN is required")
    if args.engine == "postgres" and not args.pg_ddl:
        parser.error("--pg-ddl is required for postgres")

    database = PgDatabase(args.pg_ddl) if args.engine == "postgres" else None
    storage = database.url if database else "sqlite://tansu.db?maintenance_interval=5s"
    broker = Broker(args.tansu, storage)
    summary = {"summary": True, "engine": args.engine, "storage": storage, "records": args.records,
               "size": args.size}
    try:
        summary["first_start_s"] = round(broker.start(), 3)
        tests = set(args.tests.split(","))
        summary["tests"] = sorted(tests)
        topics = {}
        for compression in ("none", "lz4") if tests & {"produce", "restart", "concurrent"} else ():
            topic = unique(f"produce_{compression}")
            create_topic(broker.bootstrap, topic, 1)
            took, ok, err, first_error = produce_batch(
                broker.bootstrap, topic, args.records, args.size,
                {"compression.type": compression, "enable.idempotence": "false"})
            topics[compression] = topic
            line = {"test": "produce", "compression": compression, "seconds": round(took, 3), "delivered": ok,
                    "errors": err, "first_error": first_error, "records_per_s": round(ok / took)}
            emit(line)
            summary[f"produce_{compression}_rps"] = line["records_per_s"]
            summary[f"produce_{compression}_errors"] = err
        for compression, topic in topics.items() if "produce" in tests else ():
            took, got = timed_fetch(broker.bootstrap, topic, args.records)
            line = {"test": "fetch", "compression": compression, "seconds": round(took, 3), "records": got,
                    "records_per_s": round(got / took)}
            emit(line)
            summary[f"fetch_{compression}_rps"] = line["records_per_s"]

        for count in (0, 5, 11) if "produce" in tests else ():
            topic = unique(f"headers{count}")
            create_topic(broker.bootstrap, topic, 1)
            headers = [(name, f"value-{j}-{name[-8:]}".encode()) for j, name in enumerate(HEADER_NAMES[:count])]
            took, ok, err, first_error = produce_batch(
                broker.bootstrap, topic, args.header_records, args.size,
                {"enable.idempotence": "false", "max.in.flight.requests.per.connection": "1"},
                headers=headers or None)
            line = {"test": "headers", "headers": count, "seconds": round(took, 3), "delivered": ok,
                    "errors": err, "first_error": first_error, "records_per_s": round(ok / took)}
            emit(line)
            summary[f"headers{count}_rps"] = line["records_per_s"]

        if "produce" in tests:
            try:
                watermark(broker.bootstrap, topics["none"], isolation="read_committed")
                summary["latest_offset_read_committed"] = "ok"
            except KafkaException as err:
                summary["latest_offset_read_committed"] = str(err)
            emit({"test": "list_offsets_latest_read_committed", "result": summary["latest_offset_read_committed"]})

        if "concurrent" in tests:
            line = concurrent_fetch(broker, topics["none"], args.records, args.readers)
            emit(line)
            summary.update({f"concurrent_{k}": v for k, v in line.items() if k != "test"})

        if "restart" in tests:
            before = {c: watermark(broker.bootstrap, t) for c, t in topics.items()}
            # An idle spell first: the same storage without a kill is the control for the restart.
            cpu_idle_start = broker.cpu_seconds()
            time.sleep(args.idle_s)
            line = {"test": "restart", "watermarks_before": before, "idle_s": args.idle_s,
                    "cpu_s_while_idle": round(broker.cpu_seconds() - cpu_idle_start, 2),
                    "probe_before_kill": probe(broker.bootstrap)}
            broker.kill()
            restarted_at = now()
            to_metadata, to_fetch = first_fetch_after_restart(broker, topics["none"])
            line["restart_to_metadata_s"] = round(to_metadata, 3)
            line["restart_to_first_fetch_s"] = round(to_fetch, 3) if to_fetch is not None else None
            try:
                line["watermarks_after"] = {c: watermark(broker.bootstrap, t) for c, t in topics.items()}
                line["records_read_after"] = {c: fetch_count(broker.bootstrap, t, 0, args.records, 120)
                                              for c, t in topics.items()}
                line["data_survived"] = all(v == args.records for v in line["records_read_after"].values())
            except KafkaException as err:
                line["error_after"] = str(err)
                line["data_survived"] = None
            line["probe_after"] = probe(broker.bootstrap)
            line["broker_exit_code"] = broker.proc.poll()
            line["cpu_s_since_restart"] = broker.cpu_seconds() if line["broker_exit_code"] is None else None
            line["s_since_restart"] = round(now() - restarted_at, 1)
            emit(line)
            summary.update({"restart_to_metadata_s": line["restart_to_metadata_s"],
                            "restart_to_first_fetch_s": line["restart_to_first_fetch_s"],
                            "restart_data_survived": line["data_survived"], "restart_probe_after": line["probe_after"]})
            if not line["probe_after"]:
                return  # the rest needs a working broker; run them on fresh storage with --tests

        if "crash" in tests:
            line = crash_under_load(broker, args.size)
            emit(line)
            summary.update({"crash_acked_lost": line["acked_lost"], "crash_acked_total": line["acked_total"],
                            "crash_restart_to_first_fetch_s": line["restart_to_first_fetch_s"],
                            "crash_probe_after": line["probe_after"]})

        if "stall" in tests:
            line = idempotent_stall(broker, args.size)
            emit(line)
            summary.update({"stall_failed": line["failed"], "stall_probe_after": line["probe_after"],
                            "stall_panic": line["panic_in_log"]})
            if not line["probe_after"]:
                # What the stack does with a wedged broker: SIGKILL and start it on the same storage.
                broker.kill()
                spawned = now()
                broker.start()
                summary["stall_restart_probe"] = probe(broker.bootstrap)
                summary["stall_restart_to_probe_s"] = round(now() - spawned, 3)

        if "idempotent" in tests:
            from concurrent.futures import ThreadPoolExecutor

            idem_topic = unique("idem")
            create_topic(broker.bootstrap, idem_topic, args.idem_partitions)
            summary["idem_producers"], summary["idem_partitions"] = args.idem_producers, args.idem_partitions
            rounds = []
            for rnd in range(args.idem_rounds):
                started = now()
                with ThreadPoolExecutor(max_workers=args.idem_producers) as pool:
                    parts = list(pool.map(lambda _: produce_batch(
                        broker.bootstrap, idem_topic, args.idem_records // args.idem_producers, args.size,
                        {"enable.idempotence": "true", "linger.ms": "0", "message.timeout.ms": "60000"},
                        partition=None if args.idem_partitions > 1 else 0), range(args.idem_producers)))
                took = now() - started
                ok = sum(p[1] for p in parts)
                err = sum(p[2] for p in parts)
                first_error = next((p[3] for p in parts if p[3]), None)
                works = probe(broker.bootstrap)
                line = {"test": "idempotent", "round": rnd, "seconds": round(took, 3), "delivered": ok, "errors": err,
                        "first_error": first_error, "records_per_s": round(ok / took), "probe_after": works,
                        "panic_in_log": panicked(broker)}
                emit(line)
                rounds.append(line)
                if not works:
                    break
            summary["idem_rounds"] = len(rounds)
            summary["idem_rps"] = [r["records_per_s"] for r in rounds]
            summary["idem_errors"] = [r["errors"] for r in rounds]
            summary["idem_wedged"] = not rounds[-1]["probe_after"]
            summary["idem_panic"] = panicked(broker)
            if summary["idem_wedged"]:
                broker.kill()
                to_metadata, to_fetch = first_fetch_after_restart(broker, idem_topic)
                summary["wedged_restart_to_first_fetch_s"] = round(to_fetch, 3) if to_fetch is not None else None
                summary["wedged_restart_probe"] = probe(broker.bootstrap)
        if database:
            summary["pg_record_rows"] = int(database.scalar("select count(*) from record"))
            summary["pg_database_size"] = database.scalar(
                "select pg_size_pretty(pg_database_size(current_database()))")
        else:
            summary["sqlite_file_bytes"] = sum(
                os.path.getsize(os.path.join(broker.workdir, f)) for f in os.listdir(broker.workdir)
                if f.startswith("tansu.db"))
    finally:
        emit(summary)
        if args.keep:
            print(f"kept: {broker.workdir} {database.name if database else ''}", file=sys.stderr)
            broker.stop()
        else:
            broker.cleanup()
            if database:
                database.drop()


if __name__ == "__main__":
    main()
