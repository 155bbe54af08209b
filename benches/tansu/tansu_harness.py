"""Shared helpers for the tansu experiments in this folder (not run on its own).

Each experiment starts its own private tansu broker on a free local port, in a
fresh temporary directory, so it never touches the stack's broker on 9092.
The tansu binary comes from ``--tansu`` or the ``TANSU_BIN`` environment
variable. PostgreSQL storage uses a fresh database per broker, created with
``psql`` on ``PGHOST``/``PGPORT`` (default 127.0.0.1:5432, user postgres) and
loaded with tansu's PostgreSQL DDL (``--pg-ddl``; tansu 0.6 does not create
that schema itself).
"""

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def now():
    """Wall-clock seconds; every timestamp in these experiments uses it."""
    return time.time()


def free_port():
    """A TCP port that was free a moment ago (tansu cannot bind port 0 and report it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique(prefix):
    """A fresh topic, group or database name."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def median(values):
    """Median of the numbers in values, or None when there are none."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def emit(record, stream=None):
    """Print one JSON result line (the experiments' only output format)."""
    print(json.dumps(record, sort_keys=True), file=stream or sys.stdout, flush=True)


class PgDatabase:
    """A fresh PostgreSQL database holding tansu's schema."""

    def __init__(self, ddl_path):
        self.host = os.environ.get("PGHOST", "127.0.0.1")
        self.port = os.environ.get("PGPORT", "5432")
        self.user = os.environ.get("PGUSER", "postgres")
        self.name = unique("tansu_lab")
        self._psql("postgres", "-c", f'CREATE DATABASE "{self.name}"')
        self._psql(self.name, "-q", "-v", "ON_ERROR_STOP=1", "-f", ddl_path)

    def _psql(self, database, *args):
        subprocess.run(
            ["psql", "-X", "-h", self.host, "-p", self.port, "-U", self.user, "-d", database, *args],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def scalar(self, sql):
        """First column of the first row of sql, as text."""
        out = subprocess.run(
            ["psql", "-X", "-At", "-h", self.host, "-p", self.port, "-U", self.user, "-d", self.name, "-c", sql],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    @property
    def url(self):
        """The storage-engine URL tansu takes for this database."""
        # sslmode=disable: tansu verifies a server certificate against the system roots, and
        # a local server's self-signed one for "localhost" fails that check on 127.0.0.1.
        return f"postgres://{self.user}@{self.host}:{self.port}/{self.name}?sslmode=disable"

    def drop(self):
        """Drop the database (the broker must be stopped first)."""
        self._psql("postgres", "-c", f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class Broker:
    """A private tansu broker process; restartable on the same storage."""

    def __init__(self, tansu, storage_url, workdir=None, rust_log="warn"):
        self.tansu = tansu
        self.storage_url = storage_url
        self.owns_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="tansu-lab-")
        self.port = free_port()
        self.rust_log = rust_log
        self.proc = None
        self.starts = 0

    @property
    def bootstrap(self):
        """bootstrap.servers for clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self):
        """The current process's log file."""
        return os.path.join(self.workdir, f"tansu.{self.starts}.log")

    def start(self, wait=True, timeout=60):
        """Spawn tansu; with wait, return the seconds until Metadata answers."""
        self.starts += 1
        env = {k: v for k, v in os.environ.items()
               if k not in ("SCHEMA_REGISTRY", "CLUSTER_ID", "OTEL_EXPORTER_OTLP_ENDPOINT",
                            "STORAGE_ENGINE", "LISTENER_URL", "ADVERTISED_LISTENER_URL")}
        env["RUST_LOG"] = self.rust_log
        listener = f"tcp://127.0.0.1:{self.port}"
        started = now()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.tansu, "broker", "--listener-url", listener, "--advertised-listener-url", listener,
                 "--storage-engine", self.storage_url],
                cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        if not wait:
            return None
        self.wait_metadata(timeout)
        return now() - started

    def wait_metadata(self, timeout=60):
        """Block until a Metadata request succeeds (the port opens before storage answers)."""
        deadline = now() + timeout
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        while now() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}; see {self.log_path}")
            try:
                admin.list_topics(timeout=2)
                return
            except KafkaException:
                time.sleep(0.1)
        raise TimeoutError(f"tansu did not answer Metadata within {timeout}s; see {self.log_path}")

    def kill(self):
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        """SIGTERM and wait, then SIGKILL if it lingers."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def cpu_seconds(self):
        """User + system CPU seconds the current process has used (from /proc)."""
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)

    def log_text(self):
        """Everything the current process has logged."""
        with open(self.log_path, "rb") as log:
            return log.read().decode("utf-8", "replace")

    def cleanup(self):
        """Stop and remove the temporary directory this broker created."""
        self.stop()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def create_topic(bootstrap, name, partitions=1, timeout=30):
    """Create a topic with confluent-kafka's admin client (tansu creates none on first use)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                                  operation_timeout=timeout)
    futures[name].result(timeout)
    deadline = now() + timeout
    while now() < deadline:
        md = admin.list_topics(topic=name, timeout=5)
        topic = md.topics.get(name)
        if topic is not None and topic.error is None and len(topic.partitions) == partitions:
            return
        time.sleep(0.1)
    raise TimeoutError(f"topic {name} not visible after {timeout}s")


def probe(bootstrap, timeout=15):
    """True if the broker stores and serves one record (produce, then fetch it back).

    A port that accepts connections is not enough: a wedged tansu answers
    Metadata but fails every produce.
    """
    topic = unique("probe")
    try:
        create_topic(bootstrap, topic, 1, timeout=timeout)
        producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": str(timeout * 1000),
                             "enable.idempotence": "false", "acks": "all"})
        errors = []
        producer.produce(topic, b"probe", on_delivery=lambda err, _msg: err and errors.append(err))
        if producer.flush(timeout) != 0 or errors:
            return False
        return fetch_count(bootstrap, topic, 0, 1, timeout) >= 1
    except (KafkaException, TimeoutError, RuntimeError):
        return False


def fetch_count(bootstrap, topic, partition, want, timeout, extra=None):
    """Records read from offset 0 of one partition (assign, no group) until want or timeout."""
    config = {"bootstrap.servers": bootstrap, "group.id": unique("reader"), "enable.auto.commit": "false",
              "auto.offset.reset": "earliest", "fetch.wait.max.ms": "100"}
    config.update(extra or {})
    consumer = Consumer(config)
    consumer.assign([TopicPartition(topic, partition, 0)])
    got = 0
    deadline = now() + timeout
    try:
        while got < want and now() < deadline:
            # Never ask for more than is missing: consume() waits out its timeout otherwise.
            batch = consumer.consume(num_messages=min(10000, want - got), timeout=0.5)
            got += sum(1 for m in batch if m.error() is None)
    finally:
        consumer.close()
    return got
