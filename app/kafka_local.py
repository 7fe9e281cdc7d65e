"""``herald kafka-local``: a single-node KRaft Apache Kafka on 127.0.0.1 for development and tests.

The broker's jars come from Maven Central (``scripts/kafka/pom.xml``, resolved by ``mvn`` into
``.cache/kafka/<version>/libs``); the data directory, logs and PID file live under a state
directory (default ``.herald/kafka``). ``stop`` signals only the PID this tool recorded, after
checking that the process is that broker.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from app.errors import HeraldError

ROOT = Path(__file__).resolve().parent.parent
KAFKA_VERSION = "4.4.0"
POM = ROOT / "scripts" / "kafka" / "pom.xml"
CACHE = Path(os.environ.get("HERALD_CACHE", ROOT / ".cache"))

_LOG4J = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{log}"><PatternLayout pattern="[%d] %p %m (%c)%n"/></File>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Root level="WARN"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


class KafkaLocalError(HeraldError):
    pass


def libs_dir() -> Path:
    return CACHE / "kafka" / KAFKA_VERSION / "libs"


def ensure_jars(quiet: bool = False) -> Path:
    """Resolve the broker jars once; later runs use the cache."""
    libs = libs_dir()
    marker = libs / ".complete"
    if marker.exists():
        return libs
    libs.mkdir(parents=True, exist_ok=True)
    cmd = [
        "mvn", "-q", "-B", "-f", str(POM), f"-Dmaven.repo.local={CACHE / 'm2'}",
        f"-Dkafka.version={KAFKA_VERSION}", "dependency:copy-dependencies",
        f"-DoutputDirectory={libs}", "-DincludeScope=runtime",
    ]
    if not quiet:
        print(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {libs} ...", file=sys.stderr)
    try:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL if quiet else None)
    except FileNotFoundError:
        raise KafkaLocalError("mvn is not on PATH; it is needed once to fetch the Kafka jars") from None
    except subprocess.CalledProcessError as exc:
        raise KafkaLocalError(f"mvn failed with exit code {exc.returncode} fetching the Kafka jars") from None
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise KafkaLocalError(f"mvn finished but no kafka_2.13 jar is in {libs}")
    marker.write_text(KAFKA_VERSION)
    return libs


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class LocalKafka:
    state_dir: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "kafka.log"

    @property
    def properties(self) -> Path:
        return self.state_dir / "server.properties"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if not _alive(pid):
            return None
        try:  # only a process that is this broker counts
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return None
        return pid if "kafka.Kafka" in cmdline and str(self.properties) in cmdline else None

    def status(self) -> str:
        pid = self.pid()
        if pid is None:
            return "stopped"
        return f"running pid={pid} bootstrap={self.bootstrap} ready={_port_open(self.port)}"

    def _write_config(self) -> None:
        data = self.state_dir / "data"
        self.properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={data}",
                    "num.partitions=1",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=6",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "log.retention.hours=168",
                    "",
                ]
            )
        )
        (self.state_dir / "log4j2.xml").write_text(_LOG4J.format(log=self.state_dir / "server.log"))

    def start(self, timeout: float = 90.0) -> int:
        existing = self.pid()
        if existing is not None:
            return existing
        if _port_open(self.port):
            raise KafkaLocalError(f"port {self.port} is already in use by another process")
        libs = ensure_jars()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        classpath = f"{libs}/*"
        java = ["java", f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
                f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.xml'}", "-cp", classpath]
        if not (self.state_dir / "data" / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            fmt = subprocess.run(
                java + ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(self.properties)],
                check=False, capture_output=True, text=True,
            )
            if fmt.returncode != 0:
                raise KafkaLocalError(f"formatting the KRaft storage failed: {fmt.stderr.strip() or fmt.stdout.strip()}")
        with open(self.log_file, "ab") as out:
            proc = subprocess.Popen(
                java + ["kafka.Kafka", str(self.properties)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                raise KafkaLocalError(
                    f"the broker exited with code {proc.returncode}; see {self.log_file} and {self.state_dir / 'server.log'}"
                )
            if _port_open(self.port) and self._metadata_ok():
                return proc.pid
            time.sleep(0.3)
        self.stop()
        raise KafkaLocalError(f"the broker did not become ready within {timeout:.0f}s; see {self.log_file}")

    def _metadata_ok(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            md = AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
        except Exception:  # noqa: BLE001 - not ready yet
            return False
        return bool(md.brokers)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker this tool started (SIGTERM, then SIGKILL after ``timeout``)."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + timeout
        while time.time() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL (tests of broker outages)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
