"""Consumer-group recovery after a SIGKILLed consumer on tansu, static vs dynamic membership.

Run with the stack's venv (confluent-kafka), against a private tansu it starts:

    $VENV/bin/python benches/tansu/static_membership.py --tansu "$TANSU_BIN" \
        --scenario single --membership static --session-ms 10000 --runs 5

What it measures, per run (fresh topic with 2 partitions and a fresh group on
one private tansu with SQLite storage; a producer thread writes one record per
partition every 100 ms throughout):

* ``single``: one consumer owns both partitions; it is SIGKILLed and at once
  restarted (same ``group.instance.id`` when static). Reported: seconds from
  the kill to the restarted consumer's first non-empty assignment
  (``kill_to_assign_s``) and to its first record (``kill_to_msg_s``), and
  whether it first got an empty assignment.
* ``pair``: two consumers share the partitions; one is SIGKILLed and
  restarted. Reported as above for the restarted one, plus the survivor's
  last assignment and whether the two together own every partition at the end.
* ``orphan``: two consumers; one is SIGKILLed and not restarted. Reported:
  seconds until the survivor owns both partitions (``kill_to_takeover_s``).

``None`` means it did not happen within ``--cap-s`` (default ``2 * session + 30``) seconds. Each
run prints one JSON line; the last line is a summary with medians.
Consumers are child processes of this script (``child`` subcommand) so they
can be SIGKILLed. Runs go one after another unless ``--parallel`` > 1 (then
they share the broker, each with its own topic and group).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from confluent_kafka import Consumer, Producer  # noqa: E402

from tansu_harness import Broker, create_topic, emit, median, now, unique  # noqa: E402

PARTITIONS = 2


def child(args):
    """A consumer that reports assignments and the first record per partition after each assignment."""
    config = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "session.timeout.ms": str(args.session_ms),
        "auto.offset.reset": "earliest",
        "enable.auto.commit": "true",
        "auto.commit.interval.ms": "500",
        "fetch.wait.max.ms": "100",
    }
    if args.instance:
        config["group.instance.id"] = args.instance
    consumer = Consumer(config)
    seen = set()

    def on_assign(_consumer, partitions):
        seen.clear()
        emit({"ev": "assign", "t": now(), "parts": sorted(p.partition for p in partitions)})

    def on_revoke(_consumer, partitions):
        emit({"ev": "revoke", "t": now(), "parts": sorted(p.partition for p in partitions)})

    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke)
    emit({"ev": "started", "t": now()})
    while True:
        msg = consumer.poll(0.1)
        if msg is not None and msg.error() is None and msg.partition() not in seen:
            seen.add(msg.partition())
            emit({"ev": "msg", "t": now(), "part": msg.partition(), "offset": msg.offset()})


class Member:
    """One consumer child process and the events it has reported."""

    def __init__(self, bootstrap, topic, group, session_ms, instance):
        self.events = []
        self.lock = threading.Lock()
        cmd = [sys.executable, os.path.abspath(__file__), "child", "--bootstrap", bootstrap, "--topic", topic,
               "--group", group, "--session-ms", str(session_ms)]
        if instance:
            cmd += ["--instance", instance]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.events.append(event)

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def assignment(self):
        """Partitions of the latest assign event (eager protocol: it replaces the previous one)."""
        assigns = [e for e in self.snapshot() if e["ev"] == "assign"]
        return assigns[-1]["parts"] if assigns else None

    def first(self, kind, after, nonempty=False):
        """Time of the first event of kind at or after `after`."""
        for event in self.snapshot():
            if event["ev"] == kind and event["t"] >= after and (not nonempty or event.get("parts")):
                return event["t"]
        return None

    def had_empty_assign(self):
        return any(e["ev"] == "assign" and not e["parts"] for e in self.snapshot())

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def wait_for(predicate, timeout, step=0.05):
    """Poll predicate until true or timeout; return whether it became true."""
    deadline = now() + timeout
    while now() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def produce_forever(bootstrap, topic, stop):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": "0", "enable.idempotence": "false"})
    n = 0
    while not stop.is_set():
        for partition in range(PARTITIONS):
            producer.produce(topic, str(n).encode(), partition=partition)
        n += 1
        producer.poll(0)
        time.sleep(0.1)
    producer.flush(5)


def one_run(broker, scenario, static, session_ms, run, cap=None):
    topic, group = unique("static_lab"), unique("group")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    stop = threading.Event()
    producer = threading.Thread(target=produce_forever, args=(broker.bootstrap, topic, stop), daemon=True)
    producer.start()
    cap = cap or 2 * session_ms / 1000 + 30
    names = ["a"] if scenario == "single" else ["a", "b"]
    members = {n: Member(broker.bootstrap, topic, group, session_ms, f"{group}-{n}" if static else None)
               for n in names}
    result = {"scenario": scenario, "membership": "static" if static else "dynamic", "session_ms": session_ms,
              "run": run}
    try:
        started = now()

        def formed():
            owned = [members[n].assignment() or [] for n in names]
            return (sorted(p for parts in owned for p in parts) == list(range(PARTITIONS))
                    and all(owned) and all(members[n].first("msg", started) for n in names))

        if not wait_for(formed, 120):
            result["error"] = "group never formed with every member owning a partition"
            result["assignments"] = {n: members[n].assignment() for n in names}
            return result
        result["formed_s"] = round(now() - started, 3)
        time.sleep(2)  # let auto-commit record positions before the crash
        victim = names[-1]
        result["before_kill"] = {n: members[n].assignment() for n in names}
        killed_at = now()
        members[victim].kill()
        if scenario == "orphan":
            survivor = members["a"]
            wait_for(lambda: sorted(survivor.assignment() or []) == list(range(PARTITIONS)), cap)
            took = [e["t"] for e in survivor.snapshot() if e["ev"] == "assign" and e["t"] >= killed_at
                    and sorted(e["parts"]) == list(range(PARTITIONS))]
            result["kill_to_takeover_s"] = round(took[0] - killed_at, 3) if took else None
            result["survivor_final"] = survivor.assignment()
            return result
        restarted = Member(broker.bootstrap, topic, group, session_ms, f"{group}-{victim}" if static else None)
        members[victim] = restarted
        wait_for(lambda: restarted.first("msg", killed_at) is not None, cap)
        assign_t = restarted.first("assign", killed_at, nonempty=True)
        msg_t = restarted.first("msg", killed_at)
        result["kill_to_assign_s"] = round(assign_t - killed_at, 3) if assign_t else None
        result["kill_to_msg_s"] = round(msg_t - killed_at, 3) if msg_t else None
        result["restarted_empty_assign"] = restarted.had_empty_assign()
        result["restarted_assignments"] = [e["parts"] for e in restarted.snapshot() if e["ev"] == "assign"]
        if scenario == "pair":
            time.sleep(1)
            final = {n: members[n].assignment() for n in names}
            result["final"] = final
            result["all_partitions_owned"] = sorted(p for parts in final.values() for p in (parts or [])) == list(
                range(PARTITIONS))
        return result
    finally:
        for member in members.values():
            member.kill()
        stop.set()
        producer.join(10)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    kid = sub.add_parser("child")
    kid.add_argument("--bootstrap", required=True)
    kid.add_argument("--topic", required=True)
    kid.add_argument("--group", required=True)
    kid.add_argument("--session-ms", type=int, required=True)
    kid.add_argument("--instance")
    parser.add_argument("--tansu", default=os.environ.get("TANSU_BIN"))
    parser.add_argument("--scenario", choices=["single", "pair", "orphan"], default="single")
    parser.add_argument("--membership", choices=["static", "dynamic"], default="static")
    parser.add_argument("--session-ms", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--rust-log", default="warn", help="RUST_LOG for tansu, e.g. tansu_broker=debug")
    parser.add_argument("--copy-log", help="copy tansu's log here before the temp dir is removed")
    parser.add_argument("--cap-s", type=float, help="how long to wait after the kill (default 2 * session + 30 s)")
    args = parser.parse_args()
    if args.cmd == "child":
        child(args)
        return
    if not args.tansu:
        parser.error("--tansu or TANSU_BIN is required")
    broker = Broker(args.tansu, "sqlite://tansu.db?maintenance_interval=5s", rust_log=args.rust_log)
    broker.start()
    try:
        static = args.membership == "static"
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            results = list(pool.map(lambda r: one_run(broker, args.scenario, static, args.session_ms, r, args.cap_s),
                                    range(args.runs)))
        for result in results:
            emit(result)
        summary = {"summary": True, "scenario": args.scenario, "membership": args.membership,
                   "session_ms": args.session_ms, "runs": len(results), "parallel": args.parallel}
        for key in ("kill_to_assign_s", "kill_to_msg_s", "kill_to_takeover_s"):
            values = [r.get(key) for r in results if key in r]
            if values:
                summary[f"median_{key}"] = median(values)
                summary[f"{key}_all"] = values
        emit(summary)
    finally:
        broker.stop()
        if args.copy_log:
            shutil.copyfile(broker.log_path, args.copy_log)
        broker.cleanup()


if __name__ == "__main__":
    main()
