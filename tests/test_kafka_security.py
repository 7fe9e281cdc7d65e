"""``herald.kafka``: settings, secrets and masking; every client on a SASL_SSL (SCRAM-SHA-512)
broker; ``probe()`` and the CLI name why a client cannot connect, within seconds, in one line."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from app import redact
from actions import parse_config
from app.errors import ConfigError, KafkaConnectError
from app.kafka.client import client_config, consumer_config, probe, producer_config, validate
from app.devtools.kafka_local import LocalKafka, make_ca, make_server_cert
from tests.harness import ROOT, Herald, free_port

SECRET = "s3cr3t-Never-Printed"
PROBE_LIMIT_S = 15.0


def herald_cfg(kafka: dict[str, Any] | None = None, bootstrap: str = "127.0.0.1:9092", **herald: Any) -> dict[str, Any]:
    return {"herald": {"kafka-bootstrap-servers": bootstrap, **({"kafka": kafka} if kafka is not None else {}),
                       **herald}}


def problems_of(kafka: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(herald_cfg(kafka), "cfg.yaml", environ or {})
    return str(info.value)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_KAFKA", "KAFKA_BOOTSTRAP", "POSTEE_"))}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env={**environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a certificate/key pair signed by it (files for TLS settings; no broker involved)."""
    d = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key = make_ca("test CA")
    cert, key = make_server_cert(ca_cert, ca_key, ("herald-client",))
    for name, data in (("ca.pem", ca_cert), ("client.pem", cert), ("client.key", key)):
        (d / name).write_bytes(data)
    return {"ca": d / "ca.pem", "cert": d / "client.pem", "key": d / "client.key", "dir": d}


# -- settings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kafka", "expected"), [
    ({"security-protocol": "TLS"},
     ["herald.kafka.security-protocol: must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, got 'TLS'"]),
    ({"security-protocol": "SASL_SSL", "sasl-mechanism": "GSSAPI"},
     ["herald.kafka.sasl-mechanism: must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER, got 'GSSAPI'"]),
    ({"sasl-mechanism": "SCRAM-SHA-512", "sasl-username": "u", "sasl-password": "p"},
     ["herald.kafka.sasl-mechanism: SCRAM-SHA-512 needs security-protocol SASL_SSL or SASL_PLAINTEXT, got PLAINTEXT"]),
    ({"security-protocol": "SASL_SSL"}, ["herald.kafka.sasl-mechanism: required with security-protocol SASL_SSL"]),
    ({"security-protocol": "SASL_SSL", "sasl-mechanism": "SCRAM-SHA-256"},
     ["herald.kafka.sasl-username: required with sasl-mechanism SCRAM-SHA-256",
      "herald.kafka.sasl-password: required with sasl-mechanism SCRAM-SHA-256"]),
    ({"security-protocol": "SASL_PLAINTEXT", "sasl-mechanism": "PLAIN", "sasl-username": "u"},
     ["herald.kafka.sasl-password: required with sasl-mechanism PLAIN"]),
    ({"security-protocol": "SASL_SSL", "sasl-mechanism": "OAUTHBEARER", "oauthbearer-client-id": "herald"},
     ["herald.kafka.oauthbearer-client-secret: required with sasl-mechanism OAUTHBEARER",
      "herald.kafka.oauthbearer-token-endpoint-url: required with sasl-mechanism OAUTHBEARER"]),
    ({"security-protocol": "SSL", "ssl-ca-location": "/nonexistent/ca.pem"},
     ["herald.kafka.ssl-ca-location: no such file: '/nonexistent/ca.pem' (value: '/nonexistent/ca.pem')"]),
    ({"security-protocol": "SSL", "ssl-certificate-location": "/nonexistent/c.pem", "ssl-key-location": "/nonexistent/k"},
     ["herald.kafka.ssl-certificate-location: no such file: '/nonexistent/c.pem'",
      "herald.kafka.ssl-key-location: no such file: '/nonexistent/k'"]),
    ({"properties": {"security.protocol": "SSL"}},
     ["herald.kafka.properties: property 'security.protocol' is set by Herald; use herald.kafka.security-protocol"]),
    ({"properties": {"client.rack": ["a", "b"]}},
     ["herald.kafka.properties: property 'client.rack': expected a string, number or bool, got list"]),
    ({"security-protocol": "SASL_SSL", "sasl-mechanism": "PLAIN", "sasl-username": "u", "sasl-password": "p",
      "ssl-endpoint-identification": "maybe"},
     ["herald.kafka.ssl-endpoint-identification: Input should be a valid boolean"]),
])
def test_settings_errors_name_the_key_path_and_value(kafka: dict[str, Any], expected: list[str]) -> None:
    text = problems_of(kafka)
    for part in expected:
        assert part in text


def test_tls_files_and_tls_keys_without_tls(pki: dict[str, Path]) -> None:
    assert "herald.kafka.ssl-ca-location: TLS settings need security-protocol SSL or SASL_SSL, got PLAINTEXT" in \
        problems_of({"ssl-ca-location": str(pki["ca"])})
    assert "herald.kafka.ssl-key-location: required with ssl-certificate-location" in \
        problems_of({"security-protocol": "SSL", "ssl-certificate-location": str(pki["cert"])})


def test_secrets_come_literal_from_env_or_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_TEST_KAFKA_PW", SECRET)
    (tmp_path / "pw").write_text(SECRET + "-file\n")
    scram = {"security-protocol": "SASL_SSL", "sasl-mechanism": "SCRAM-SHA-512", "sasl-username": "herald"}
    for given, resolved in (("$HERALD_TEST_KAFKA_PW", SECRET), ("${HERALD_TEST_KAFKA_PW}", SECRET),
                            (f"file:{tmp_path / 'pw'}", SECRET + "-file"), ("$$literal", "$literal"),
                            ("plain-text", "plain-text")):
        config = parse_config(herald_cfg({**scram, "sasl-password": given}), "cfg.yaml", {})
        assert client_config(config.herald)["sasl.password"] == resolved, given
    config = parse_config(herald_cfg({"properties": {"ssl.keystore.password": "${HERALD_TEST_KAFKA_PW}",
                                                     "client.rack": "r1"}}), "cfg.yaml", {})
    assert client_config(config.herald)["ssl.keystore.password"] == SECRET
    assert client_config(config.herald)["client.rack"] == "r1"


def test_a_missing_variable_or_file_is_an_error_naming_the_key_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HERALD_TEST_UNSET", raising=False)
    scram = {"security-protocol": "SASL_SSL", "sasl-mechanism": "SCRAM-SHA-512", "sasl-username": "herald"}
    text = problems_of({**scram, "sasl-password": "${HERALD_TEST_UNSET}"})
    assert "herald.kafka.sasl-password: environment variable HERALD_TEST_UNSET is not set (value: ***)" in text
    text = problems_of({**scram, "sasl-password": "file:/nonexistent/kafka-password"})
    assert "herald.kafka.sasl-password: cannot read secret file /nonexistent/kafka-password" in text
    text = problems_of({"properties": {"ssl.keystore.password": "$HERALD_TEST_UNSET"}})
    assert "property 'ssl.keystore.password': environment variable HERALD_TEST_UNSET is not set" in text


def test_secrets_never_appear_in_errors_repr_or_logs(pki: dict[str, Path]) -> None:
    base = {"security-protocol": "SASL_SSL", "sasl-mechanism": "SCRAM-SHA-512", "sasl-password": SECRET,
            "ssl-key-password": SECRET + "2", "properties": {"ssl.keystore.password": SECRET + "3"}}
    # errors about other keys, about the model as a whole, about a secret key, about properties
    for kafka in ({**base, "security-protocol": "bogus"}, base, {**base, "sasl-password": [SECRET]},
                  {**base, "properties": {"sasl.kerberos.password": SECRET, "client.rack": {"a": 1}}}):
        text = problems_of(kafka)
        assert SECRET not in text and "herald.kafka" in text
    config = parse_config(herald_cfg({**base, "sasl-username": "herald", "ssl-ca-location": str(pki["ca"])}),
                          "cfg.yaml", {})
    for shown in (repr(config.herald), str(config.herald), repr(config.herald.kafka), str(config.herald.kafka.described())):
        assert SECRET not in shown
    assert config.herald.kafka.described()["sasl-password"] == "***"
    assert redact.redact(f"connecting with {SECRET}3") == "connecting with ***"


def test_check_config_prints_the_kafka_block_with_secrets_masked(tmp_path: Path, pki: dict[str, Path]) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(herald_cfg(
        {"security-protocol": "SASL_SSL", "sasl-mechanism": "SCRAM-SHA-512", "sasl-username": "herald",
         "sasl-password": "$HERALD_KAFKA_TEST_PW", "ssl-ca-location": str(pki["ca"]),
         "properties": {"client.rack": "r1", "ssl.keystore.password": SECRET + "-prop"}},
        bootstrap="broker-1:9096")))
    res = cli("check-config", str(cfg), env={"HERALD_KAFKA_TEST_PW": SECRET})
    assert res.returncode == 0, res.stdout + res.stderr
    assert SECRET not in res.stdout + res.stderr
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("kafka: ")]
    assert line == [f"kafka: broker-1:9096 security-protocol=SASL_SSL sasl-mechanism=SCRAM-SHA-512 "
                    f"sasl-username=herald sasl-password=*** ssl-ca-location={pki['ca']} "
                    f"ssl-endpoint-identification=true client.rack=r1 ssl.keystore.password=***"]
    # an environment override of a secret is masked the same way
    res = cli("check-config", str(cfg), env={"HERALD_KAFKA_TEST_PW": "x", "HERALD_KAFKA_SASL_PASSWORD": SECRET})
    assert res.returncode == 0 and SECRET not in res.stdout + res.stderr and "sasl-password=***" in res.stdout
    # a missing variable: exit 2, one problem naming the key and the variable
    res = cli("check-config", str(cfg))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "herald.kafka.sasl-password: environment variable HERALD_KAFKA_TEST_PW is not set" in res.stderr
    # librdkafka checks the passthrough properties, offline
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(herald_cfg({"properties": {"no.such.property": 1}})))
    res = cli("check-config", str(bad))
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        'config error: herald.kafka: invalid Kafka client configuration: No such configuration property: '
        '"no.such.property"']


def test_environment_overrides_win_per_key() -> None:
    environ = {
        "HERALD_KAFKA_SECURITY_PROTOCOL": "sasl_plaintext", "HERALD_KAFKA_SASL_MECHANISM": "plain",
        "HERALD_KAFKA_SASL_USERNAME": "env-user", "HERALD_KAFKA_SASL_PASSWORD": SECRET,
        "HERALD_KAFKA_OAUTHBEARER_SCOPE": "", "KAFKA_BOOTSTRAP_SERVERS": "env:9092",
    }
    config = parse_config(herald_cfg({"sasl-username": "file-user", "properties": {"client.id": "c1"}}),
                          "cfg.yaml", environ)
    conf = client_config(config.herald)
    assert conf == {"bootstrap.servers": "env:9092", "security.protocol": "sasl_plaintext", "sasl.mechanism": "PLAIN",
                    "sasl.username": "env-user", "sasl.password": SECRET, "client.id": "c1"}
    tls = {"HERALD_KAFKA_SECURITY_PROTOCOL": "SSL", "HERALD_KAFKA_SSL_ENDPOINT_IDENTIFICATION": "false"}
    assert client_config(parse_config({}, "cfg.yaml", tls).herald)["ssl.endpoint.identification.algorithm"] == "none"
    with pytest.raises(ConfigError, match="HERALD_KAFKA_SSL_ENDPOINT_IDENTIFICATION: expected true or false"):
        parse_config({}, "cfg.yaml", {**tls, "HERALD_KAFKA_SSL_ENDPOINT_IDENTIFICATION": "maybe"})


def test_client_config_for_scram_mtls_oidc_and_plain(pki: dict[str, Path]) -> None:
    def conf(kafka: dict[str, Any]) -> dict[str, Any]:
        return client_config(parse_config(herald_cfg(kafka, bootstrap="b:9096"), "cfg.yaml", {}).herald)

    scram = conf({"security-protocol": "SASL_SSL", "sasl-mechanism": "SCRAM-SHA-512", "sasl-username": "herald",
                  "sasl-password": SECRET, "ssl-ca-location": str(pki["ca"])})
    assert scram == {"bootstrap.servers": "b:9096", "security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-512",
                     "sasl.username": "herald", "sasl.password": SECRET, "ssl.ca.location": str(pki["ca"]),
                     "ssl.endpoint.identification.algorithm": "https"}
    mtls = conf({"security-protocol": "SSL", "ssl-ca-location": str(pki["ca"]),
                 "ssl-certificate-location": str(pki["cert"]), "ssl-key-location": str(pki["key"]),
                 "ssl-endpoint-identification": False})
    assert mtls == {"bootstrap.servers": "b:9096", "security.protocol": "ssl", "ssl.ca.location": str(pki["ca"]),
                    "ssl.certificate.location": str(pki["cert"]), "ssl.key.location": str(pki["key"]),
                    "ssl.endpoint.identification.algorithm": "none"}
    oidc = conf({"security-protocol": "SASL_SSL", "sasl-mechanism": "OAUTHBEARER", "oauthbearer-client-id": "herald",
                 "oauthbearer-client-secret": SECRET, "oauthbearer-scope": "kafka",
                 "oauthbearer-token-endpoint-url": "http://127.0.0.1:1/oauth2/token"})
    assert oidc == {"bootstrap.servers": "b:9096", "security.protocol": "sasl_ssl", "sasl.mechanism": "OAUTHBEARER",
                    "sasl.oauthbearer.method": "oidc", "sasl.oauthbearer.client.id": "herald",
                    "sasl.oauthbearer.client.secret": SECRET, "sasl.oauthbearer.scope": "kafka",
                    "sasl.oauthbearer.token.endpoint.url": "http://127.0.0.1:1/oauth2/token",
                    "ssl.endpoint.identification.algorithm": "https"}
    plain = conf({"security-protocol": "SASL_SSL", "sasl-mechanism": "PLAIN", "sasl-username": "KEY",
                  "sasl-password": SECRET})  # Confluent Cloud: API key and secret, the system's CAs
    assert plain["sasl.mechanism"] == "PLAIN" and "ssl.ca.location" not in plain
    for c in (scram, mtls, oidc, plain):
        validate(c)  # librdkafka accepts every property (no connection is made)
    with socket.socket() as idp:  # validate() does not fetch an OIDC token
        idp.bind(("127.0.0.1", 0))
        idp.listen(1)
        idp.settimeout(1.0)
        validate({**oidc, "sasl.oauthbearer.token.endpoint.url": f"http://127.0.0.1:{idp.getsockname()[1]}/t"})
        with pytest.raises(TimeoutError):
            idp.accept()
    with pytest.raises(ConfigError, match='No such configuration property: "no.such.property"'):
        validate({**plain, "no.such.property": 1})

    producer = producer_config(scram, **{"linger.ms": 5}, error_cb=print)
    assert producer["linger.ms"] == 5 and producer["error_cb"] is print and producer["acks"] == "all"
    assert producer["enable.idempotence"] is True and producer["partitioner"] == "murmur2_random"
    consumer = consumer_config(scram, "g1", **{"enable.auto.commit": True})
    assert consumer["group.id"] == "g1" and consumer["enable.auto.commit"] is True
    assert consumer["sasl.password"] == SECRET


def test_probe_nothing_listening_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(KafkaConnectError, match=r"nothing is listening at 127\.0\.0\.1:\d+ \(connection refused\)"):
        probe({"bootstrap.servers": f"127.0.0.1:{free_port()}"})
    assert time.monotonic() - started < PROBE_LIMIT_S


# -- on a SASL_SSL broker ------------------------------------------------------------------------------


def test_produce_and_consume_on_sasl_ssl(secure_kafka: LocalKafka) -> None:
    from confluent_kafka import Consumer, Producer

    from app.kafka.delivered import DeliveredKeys
    from app.kafka.admin import ensure_topics
    from app.kafka.window import WindowReader

    conf = secure_kafka.client_config()
    assert conf["security.protocol"] == "sasl_ssl" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
    probe(conf)
    topic = f"sec-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(conf, [topic], 3, 1) == [topic]
    producer = Producer(producer_config(conf, **{"linger.ms": 1}))
    for i in range(30):
        producer.produce(topic, key=f"k{i}".encode(), value=json.dumps({"n": i}).encode())
    assert producer.flush(30) == 0
    assert sorted(json.loads(r.value)["n"] for r in WindowReader(conf, topic, None, None)) == list(range(30))

    consumer = Consumer(consumer_config(conf, f"g-{topic}"))
    consumer.subscribe([topic])
    got: list[int] = []
    deadline = time.time() + 60
    try:
        while len(got) < 30 and time.time() < deadline:
            for msg in consumer.consume(100, timeout=1.0):
                assert msg.error() is None, msg.error()
                got.append(json.loads(msg.value())["n"])
    finally:
        consumer.close()
    assert sorted(got) == list(range(30))

    keys = DeliveredKeys(conf, topic)
    assert keys.load([0, 1, 2]) == 30 and sum(keys.seen(p, "k7") for p in range(3)) == 1


def _wrong_password(k: LocalKafka, tmp: Path) -> dict[str, Any]:
    return {**k.client_config(), "sasl.password": "not-the-password"}


def _unknown_ca(k: LocalKafka, tmp: Path) -> dict[str, Any]:
    other = tmp / "other-ca.pem"
    other.write_bytes(make_ca("some other CA")[0])
    return {**k.client_config(), "ssl.ca.location": str(other)}


def _plaintext(k: LocalKafka, tmp: Path) -> dict[str, Any]:
    return {"bootstrap.servers": k.bootstrap}


@pytest.mark.parametrize(("make", "cause"), [
    (_wrong_password, r"^Kafka authentication failed at 127\.0\.0\.1:\d+ \(SASL SCRAM-SHA-512 as 'herald'\).*"
                      r"invalid credentials"),
    (_unknown_ca, r"^TLS handshake with Kafka at 127\.0\.0\.1:\d+ failed; set herald\.kafka\.ssl-ca-location .*"
                  r"certificate verify failed"),
    (_plaintext, r"^no broker reachable at 127\.0\.0\.1:\d+; if the listener uses TLS or SASL, set "
                 r"herald\.kafka\.security-protocol"),
], ids=["wrong-password", "unknown-ca", "plaintext-client"])
def test_probe_names_the_cause_within_seconds(secure_kafka: LocalKafka, tmp_path: Path, make: Any, cause: str) -> None:
    conf = make(secure_kafka, tmp_path)
    started = time.monotonic()
    with pytest.raises(KafkaConnectError) as info:
        probe(conf, timeout=10)
    elapsed = time.monotonic() - started
    assert elapsed < PROBE_LIMIT_S
    assert re.search(cause, str(info.value)), str(info.value)
    assert secure_kafka.scram_password() not in str(info.value)
    print(f"probe {make.__name__}: {elapsed:.2f}s: {info.value}")


def _secured_cfg(k: LocalKafka, tmp_path: Path, password: str) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(herald_cfg({**k.client_settings(), "sasl-password": password},
                                             bootstrap=k.bootstrap, **{"topic-prefix": "sec-cli."})))
    return cfg


@pytest.mark.parametrize("command", [
    ("check-config", "--connect", "{cfg}"), ("bridge", "--config", "{cfg}"), ("dlq", "list", "--config", "{cfg}"),
    ("timeline", "--since", "1h", "--config", "{cfg}"),
], ids=lambda c: c[0])
def test_a_wrong_password_exits_non_zero_with_one_line(secure_kafka: LocalKafka, tmp_path: Path,
                                                       command: tuple[str, ...]) -> None:
    cfg = _secured_cfg(secure_kafka, tmp_path, SECRET)
    started = time.monotonic()
    res = cli(*(a.format(cfg=cfg) for a in command), timeout=60)
    elapsed = time.monotonic() - started
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and SECRET not in res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Kafka authentication failed at "), res.stderr
    assert "ok (" not in res.stdout
    assert elapsed < PROBE_LIMIT_S + 5  # the interpreter's start included
    print(f"herald {command[0]} with a wrong password: exit 1 after {elapsed:.2f}s: {lines[0]}")


def test_check_config_connect_with_the_right_settings(secure_kafka: LocalKafka, tmp_path: Path) -> None:
    cfg = _secured_cfg(secure_kafka, tmp_path, f"file:{secure_kafka.password_file}")
    res = cli("check-config", "--connect", str(cfg))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "sasl-password=*** " in res.stdout and res.stdout.rstrip().endswith("(connected)")
    assert secure_kafka.scram_password() not in res.stdout + res.stderr


# -- the CLI tools and the bridge on both brokers ---------------------------------------------------------------


@pytest.fixture(params=["kafka", "secure_kafka"])
def broker(request: pytest.FixtureRequest) -> LocalKafka:
    return request.getfixturevalue(request.param)


def _bridge_cfg() -> dict[str, Any]:
    return {
        "routes": [{"name": "all", "input": "true", "actions": ["hook"], "template": "raw-json"}],
        "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": "hook", "type": "webhook", "enable": True, "url": "http://127.0.0.1:9/hook"}],
    }


def _herald_cli(herald: Herald, *args: str) -> Any:
    res = subprocess.run([sys.executable, "-m", "app.cli", *args, "--config", str(herald.cfg_path)],
                         cwd=ROOT, env=herald.env, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_bridge_timeline_and_dlq_round_trip(broker: LocalKafka, tmp_path: Path) -> None:
    """The bridge writes to the events topic, ``herald timeline`` reads it back, ``herald dlq``
    lists, shows, redrives and purges dead letters: on the plain and on the SASL_SSL broker."""
    from confluent_kafka import Producer

    from app.kafka.admin import ensure_topics

    with Herald(broker, _bridge_cfg(), tmp_path, workers=0) as herald:
        if broker.secured:
            assert yaml.safe_load(herald.cfg_path.read_text())["herald"]["kafka"] == broker.client_settings()
        posted = {}
        for i in range(12):
            status, body = herald.post({"hostname": f"host-{i % 3}", "n": i})
            assert status == 200, body
            posted[body["event_id"]] = i
        events = herald.read_topic("events", min_count=12)
        assert sorted(e["n"] for e in events) == list(range(12))

        rows = [json.loads(line) for line in _herald_cli(herald, "timeline", "--since", "1h", "--by", "hostname",
                                                         "--with-decisions").splitlines()]
        assert {r["event_id"]: r["event"]["n"] for r in rows} == posted
        assert [r["entity"] for r in rows] == sorted(r["entity"] for r in rows)

        conf = broker.client_config()
        dlq = herald.prefix + "dlq.hook"
        ensure_topics(conf, [dlq, herald.prefix + "action.hook"], 3, 1)
        producer = Producer(producer_config(conf))
        now = time.time()
        for event_id, n in list(posted.items())[:4]:
            original = {"event_id": event_id, "route": "all", "action": "hook", "content": {"description": str(n)},
                        "idempotency_key": f"{event_id}:all:hook"}
            producer.produce(dlq, key=event_id.encode(), value=json.dumps({
                "stage": "hook", "event_id": event_id, "error": "HTTP 503", "error_type": "RetryableActionError",
                "status": 503, "attempts": 5, "first_attempt_at": now - 10, "last_attempt_at": now,
                "source_topic": herald.prefix + "action.hook", "source_partition": 0, "source_offset": n,
                "original": original}).encode())
        assert producer.flush(30) == 0

        assert json.loads(_herald_cli(herald, "dlq", "list", "hook")) == {
            "hook": {"total": 4, "reasons": {"RetryableActionError HTTP 503": 4}}}
        records = json.loads(_herald_cli(herald, "dlq", "list", "hook", "-v"))["records"]
        shown = json.loads(_herald_cli(herald, "dlq", "show", records[0]["id"]))
        assert shown["event_id"] == records[0]["event_id"] and shown["original"]["action"] == "hook"
        assert json.loads(_herald_cli(herald, "dlq", "redrive", "hook")) == {"redriven": 4, "skipped": 0}
        redriven = herald.read_topic("action.hook", min_count=4)
        assert sorted(m["event_id"] for m in redriven) == sorted(r["event_id"] for r in records)
        assert {m["redrive"] for m in redriven} == {1}
        assert json.loads(_herald_cli(herald, "dlq", "purge", "hook", "--yes")) == {"hook": 4}
        assert json.loads(_herald_cli(herald, "dlq", "list", "hook")) == {"hook": {"total": 0, "reasons": {}}}
