"""``herald kafka-local``: a single-node KRaft Apache Kafka on 127.0.0.1 for development and tests.

The broker's jars come from Maven Central (``scripts/kafka/pom.xml``, resolved by ``mvn`` into
``.cache/kafka/<version>/libs``); the data directory, logs and PID file live under a state
directory (default ``.herald/kafka``). ``stop`` signals only the PID this tool recorded, after
checking that the process is that broker.

``secured=True`` (``herald kafka-local start --secured``) puts the client listener on SASL_SSL with
SCRAM-SHA-512: a CA and a broker certificate for 127.0.0.1/localhost are generated with
``cryptography`` into ``<state>/secured/`` (once; kept across restarts so running clients keep
trusting the broker), the broker's keystore is PEM, and the SCRAM user ``herald`` is created when
the storage is formatted. Inter-broker and controller traffic stay PLAINTEXT on loopback (the
inter-broker listener is ``internal_port``). ``client_settings()`` is the ``herald.kafka`` block
for cfg.yaml, ``client_config()`` the librdkafka configuration.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import HeraldError

ROOT = Path(__file__).resolve().parents[2]
KAFKA_VERSION = "4.4.0"
POM = ROOT / "scripts" / "kafka" / "pom.xml"
CACHE = Path(os.environ.get("HERALD_CACHE_DIR") or ROOT / ".cache")  # the one cache variable, as in scripts/build-opa.sh

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


# Brokers this process started, until stop() or kill() reaps them (a Popen dropped while its
# process runs warns "subprocess ... is still running", and an unreaped one stays a zombie).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap(pid: int) -> None:
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        proc.wait(10)


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


SCRAM_USER = "herald"
SCRAM_MECHANISM = "SCRAM-SHA-512"


def _write_private(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def make_ca(common_name: str = "Herald local Kafka CA", days: int = 825) -> tuple[bytes, bytes]:
    """A self-signed CA: (certificate PEM, unencrypted PKCS#8 key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def make_server_cert(ca_cert_pem: bytes, ca_key_pem: bytes, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
                     days: int = 825) -> tuple[bytes, bytes]:
    """A TLS server certificate for ``hosts`` (DNS names and IP addresses) signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, rsa.RSAPrivateKey):  # make_ca's keys are RSA
        raise KafkaLocalError(f"the CA key is a {type(ca_key).__name__}, not an RSA private key")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def _expires_within(cert_pem: bytes, days: int) -> bool:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.not_valid_after_utc < datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)


def _prop_value(text: str) -> str:
    """A multi-line value (PEM) as one line of a Java properties file."""
    return text.strip().replace("\\", "\\\\").replace("\n", "\\n")


@dataclass
class LocalKafka:
    state_dir: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"
    secured: bool = False  # port is SASL_SSL (SCRAM-SHA-512); inter-broker PLAINTEXT on internal_port
    internal_port: int | None = None  # secured mode; default port + 2

    @property
    def bootstrap(self) -> str:
        """Where clients connect (the SASL_SSL listener in secured mode)."""
        return f"127.0.0.1:{self.port}"

    @property
    def plain_port(self) -> int:
        """The PLAINTEXT listener (the client port, or the loopback inter-broker one when secured)."""
        if not self.secured:
            return self.port
        return self.internal_port if self.internal_port is not None else self.port + 2

    @property
    def plain_bootstrap(self) -> str:
        return f"127.0.0.1:{self.plain_port}"

    @property
    def tls_dir(self) -> Path:
        return self.state_dir / "secured"

    @property
    def ca_file(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def password_file(self) -> Path:
        return self.tls_dir / "scram-password"

    def scram_password(self) -> str:
        return self.password_file.read_text().strip()

    def client_settings(self) -> dict[str, Any]:
        """The ``herald.kafka`` block of cfg.yaml for this broker (empty in plain mode)."""
        if not self.secured:
            return {}
        return {"security-protocol": "SASL_SSL", "sasl-mechanism": SCRAM_MECHANISM, "sasl-username": SCRAM_USER,
                "sasl-password": self.scram_password(), "ssl-ca-location": str(self.ca_file)}

    def client_config(self) -> dict[str, Any]:
        """The librdkafka configuration of a client of this broker (built by app.kafka.client)."""
        from app.kafka.client import client_config
        from app.config.settings import HeraldSettings

        return client_config(HeraldSettings.model_validate(
            {"kafka-bootstrap-servers": self.bootstrap, "kafka": self.client_settings()}))

    def _ensure_tls(self) -> None:
        """CA, broker certificate and SCRAM password: made once, renewed when about to expire."""
        ca_key_file, cert_file, key_file = (self.tls_dir / "ca.key", self.tls_dir / "broker.pem",
                                            self.tls_dir / "broker.key")
        if not self.ca_file.exists() or not ca_key_file.exists() or _expires_within(self.ca_file.read_bytes(), 30):
            ca_cert, ca_key = make_ca()
            _write_private(ca_key_file, ca_key)
            self.ca_file.write_bytes(ca_cert)
            cert_file.unlink(missing_ok=True)
        if not cert_file.exists() or not key_file.exists() or _expires_within(cert_file.read_bytes(), 30):
            cert, key = make_server_cert(self.ca_file.read_bytes(), ca_key_file.read_bytes())
            _write_private(key_file, key)
            cert_file.write_bytes(cert)
        if not self.password_file.exists():
            _write_private(self.password_file, secrets.token_hex(16))

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
        mode = f" SASL_SSL/{SCRAM_MECHANISM} user={SCRAM_USER} ca={self.ca_file}" if self.secured else ""
        return f"running pid={pid} bootstrap={self.bootstrap}{mode} ready={_port_open(self.port)}"

    def _listeners(self) -> list[str]:
        if not self.secured:
            return [
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
            ]
        self._ensure_tls()
        cert = (self.tls_dir / "broker.pem").read_text() + self.ca_file.read_text()
        key = (self.tls_dir / "broker.key").read_text()
        lsn = "listener.name.sasl_ssl."
        return [
            f"listeners=SASL_SSL://127.0.0.1:{self.port},PLAINTEXT://127.0.0.1:{self.plain_port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{self.port},PLAINTEXT://127.0.0.1:{self.plain_port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"{lsn}sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"{lsn}{SCRAM_MECHANISM.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"{lsn}ssl.keystore.type=PEM",
            f"{lsn}ssl.keystore.certificate.chain={_prop_value(cert)}",
            f"{lsn}ssl.keystore.key={_prop_value(key)}",
            f"{lsn}ssl.client.auth=none",
        ]

    def _write_config(self) -> None:
        data = self.state_dir / "data"
        _write_private(
            self.properties,
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    *self._listeners(),
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
            ),
        )
        (self.state_dir / "log4j2.xml").write_text(_LOG4J.format(log=self.state_dir / "server.log"))

    def start(self, timeout: float = 90.0) -> int:
        existing = self.pid()
        if existing is not None:
            return existing
        for port in dict.fromkeys((self.port, self.plain_port)):
            if _port_open(port):
                raise KafkaLocalError(f"port {port} is already in use by another process")
        libs = ensure_jars()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        classpath = f"{libs}/*"
        java = ["java", f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
                f"-Dlog4j2.configurationFile={self.state_dir / 'log4j2.xml'}", "-cp", classpath]
        scram_marker = self.state_dir / "data" / ".herald-scram"
        if not (self.state_dir / "data" / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            scram = (["--add-scram", f"{SCRAM_MECHANISM}=[name={SCRAM_USER},password={self.scram_password()}]"]
                     if self.secured else [])
            fmt = subprocess.run(
                java + ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(self.properties),
                        *scram],
                check=False, capture_output=True, text=True,
            )
            if fmt.returncode != 0:
                out = fmt.stderr.strip() or fmt.stdout.strip()
                if self.secured:
                    out = out.replace(self.scram_password(), "***")
                raise KafkaLocalError(f"formatting the KRaft storage failed: {out}")
            if self.secured:
                scram_marker.write_text(SCRAM_USER)
        with open(self.log_file, "ab") as log_out:
            proc = subprocess.Popen(
                java + ["kafka.Kafka", str(self.properties)],
                stdout=log_out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        self.pid_file.write_text(str(proc.pid))
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                _CHILDREN.pop(proc.pid, None)
                raise KafkaLocalError(
                    f"the broker exited with code {proc.returncode}; see {self.log_file} and {self.state_dir / 'server.log'}"
                )
            if _port_open(self.plain_port) and self._metadata_ok():
                if self.secured and not scram_marker.exists():  # formatted in plain mode: add the user now
                    self._upsert_scram_user()
                    scram_marker.write_text(SCRAM_USER)
                if not self.secured or self._metadata_ok(self.client_config()):
                    return proc.pid
            time.sleep(0.3)
        self.stop()
        raise KafkaLocalError(f"the broker did not become ready within {timeout:.0f}s; see {self.log_file}")

    def _metadata_ok(self, conf: dict[str, Any] | None = None) -> bool:
        from app.kafka.client import make_admin

        try:
            md = make_admin(conf or self.plain_bootstrap, log_level=0).list_topics(timeout=2)
        except Exception:  # noqa: BLE001 - not ready yet
            return False
        return bool(md.brokers)

    def _upsert_scram_user(self) -> None:
        from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

        from app.kafka.client import make_admin

        admin = make_admin(self.plain_bootstrap)
        upsert = UserScramCredentialUpsertion(SCRAM_USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                              self.scram_password().encode())
        for fut in admin.alter_user_scram_credentials([upsert]).values():
            fut.result(30)

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
        _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL (tests of broker outages)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
            _reap(pid)
