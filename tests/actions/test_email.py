"""email action against a real SMTP server (aiosmtpd) and a real local DNS server for use-mx."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rrset
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from tests.actions.support import build_action, free_port, make_message, self_signed_cert, server_tls_context

from actions.email import OWNER_TOKEN, DnsMxResolver, EmailAction
from app.errors import ConfigError, PermanentActionError, RetryableActionError

PASSWORD = "s3cret-smtp-pass"


@dataclass
class Received:
    helo: str
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    login: bytes | None

    def parsed(self) -> EmailMessage:
        msg = message_from_bytes(self.data, policy=default_policy)
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass
class Handler:
    """Accepts mail like an MTA; some mailboxes answer 4xx/5xx as real servers do."""

    received: list[Received] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        local = address.split("@")[0]
        if local == "busy":
            return "451 4.2.1 Mailbox temporarily unavailable, try again later"
        if local == "nobody":
            return "550 5.1.1 User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        self.received.append(Received(
            helo=session.host_name, mail_from=envelope.mail_from, rcpt_tos=list(envelope.rcpt_tos),
            data=envelope.original_content, tls=session.ssl is not None, login=login,
        ))
        return "250 2.0.0 Ok: queued"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"alerts@herald.test" \
        and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@dataclass
class Smtp:
    handler: Handler
    port: int


def _start(**kwargs: Any) -> tuple[Controller, Smtp]:
    handler = Handler()
    port = free_port()
    ctl = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    ctl.start()
    return ctl, Smtp(handler, port)


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    ctl, server = _start()
    yield server
    ctl.stop()


@pytest.fixture
def smtp_auth() -> Iterator[Smtp]:
    ctl, server = _start(authenticator=_authenticator, auth_require_tls=False)
    yield server
    ctl.stop()


@pytest.fixture
def smtp_tls(tmp_path: Path) -> Iterator[Smtp]:
    cert, key = self_signed_cert(tmp_path)
    ctl, server = _start(tls_context=server_tls_context(cert, key), require_starttls=True,
                         authenticator=_authenticator)
    yield server
    ctl.stop()


def email_action(**cfg: Any) -> EmailAction:
    data = {"name": "mail", "type": "email", "enable": True, "host": "127.0.0.1",
            "sender": "herald@herald.test", "recipients": ["sec@corp.test"], **cfg}
    action = build_action(data)
    assert isinstance(action, EmailAction)
    return action


HTML = "<h1>Scan</h1><p>Found <b>2</b> critical &amp; 1 high</p><ul><li>CVE-1</li><li>CVE-2</li></ul>"


@pytest.mark.asyncio
async def test_sends_mime_message_with_ehlo_name_and_owner_expansion(smtp: Smtp) -> None:
    action = email_action(port=smtp.port, recipients=["sec@corp.test", OWNER_TOKEN],
                          **{"client-host-name": "herald.example"})
    msg = make_message(title="Critical image", description=HTML, owners="o1@apps.test; o2@apps.test;")
    await action.deliver(msg)

    [got] = smtp.handler.received
    assert got.helo == "herald.example"
    assert got.mail_from == "herald@herald.test"
    assert got.rcpt_tos == ["sec@corp.test", "o1@apps.test", "o2@apps.test"]
    assert not got.tls and got.login is None
    mail = got.parsed()
    assert mail["From"] == "herald@herald.test"
    assert mail["To"] == "sec@corp.test, o1@apps.test, o2@apps.test"
    assert mail["Subject"] == "Critical image"
    assert mail["MIME-Version"] == "1.0"
    assert mail["Date"] == "Thu, 01 Jan 2026 00:00:00 +0000"
    assert mail["Message-ID"].startswith("<") and mail["Message-ID"].endswith(".herald@herald.test>")
    assert mail.get_content_type() == "multipart/alternative"
    plain = mail.get_body(preferencelist=("plain",))
    html = mail.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    assert plain.get_content().replace("\r\n", "\n").strip() == (
        "Scan\n\nFound 2 critical & 1 high\n\n- CVE-1\n- CVE-2"
    )
    assert html.get_content().replace("\r\n", "\n").strip() == HTML


@pytest.mark.asyncio
async def test_message_id_is_stable_across_builds(smtp: Smtp) -> None:
    action = email_action(port=smtp.port)
    first = action.build_payload(make_message(description="x"))
    again = action.build_payload(make_message(description="x"))
    assert first.message["Message-ID"] == again.message["Message-ID"]


@pytest.mark.asyncio
async def test_title_cannot_inject_headers(smtp: Smtp) -> None:
    action = email_action(port=smtp.port)
    await action.deliver(make_message(title="Alert\r\nBcc: evil@attacker.test\r\n\r\nbody", description="<p>x</p>"))
    [got] = smtp.handler.received
    assert got.rcpt_tos == ["sec@corp.test"]
    mail = got.parsed()
    assert mail["Bcc"] is None
    assert mail["Subject"] == "Alert Bcc: evil@attacker.test body"
    headers = got.data.split(b"\r\n\r\n", 1)[0]
    assert not any(line.lower().startswith(b"bcc:") for line in headers.split(b"\r\n"))


@pytest.mark.asyncio
async def test_non_ascii_title_is_encoded(smtp: Smtp) -> None:
    action = email_action(port=smtp.port)
    await action.deliver(make_message(title="Schwachstelle gefunden: Größe ✓", description="ok"))
    raw_headers = smtp.handler.received[0].data.split(b"\r\n\r\n", 1)[0]
    assert raw_headers.isascii()
    assert smtp.handler.received[0].parsed()["Subject"] == "Schwachstelle gefunden: Größe ✓"


def test_owner_token_without_owners_is_an_error() -> None:
    action = email_action(port=25, recipients=[OWNER_TOKEN])
    with pytest.raises(PermanentActionError, match="there is no recipient"):
        action.build_payload(make_message(description="x", owners=""))


def test_owner_that_is_not_an_address_is_named() -> None:
    action = email_action(port=25, recipients=[OWNER_TOKEN])
    with pytest.raises(PermanentActionError, match="'bob\\\\r\\\\nBcc: x@y'"):
        action.build_payload(make_message(description="x", owners="bob\r\nBcc: x@y"))


@pytest.mark.asyncio
async def test_auth_plain_when_user_and_password_set(smtp_auth: Smtp) -> None:
    action = email_action(port=smtp_auth.port, user="alerts@herald.test", password=PASSWORD, sender="")
    await action.deliver(make_message(description="x"))
    [got] = smtp_auth.handler.received
    assert got.login == b"alerts@herald.test"
    assert got.mail_from == "alerts@herald.test"  # sender defaults to user


@pytest.mark.asyncio
async def test_wrong_password_is_permanent_and_hidden(smtp_auth: Smtp) -> None:
    action = email_action(port=smtp_auth.port, user="alerts@herald.test", password="wrong-password-x")
    with pytest.raises(PermanentActionError) as info:
        await action.deliver(make_message(description="x"))
    assert info.value.status == 535
    assert "wrong-password-x" not in str(info.value)
    assert smtp_auth.handler.received == []


@pytest.mark.asyncio
async def test_starttls_then_auth(smtp_tls: Smtp) -> None:
    action = email_action(port=smtp_tls.port, user="alerts@herald.test", password=PASSWORD,
                          **{"tls-verify": False})
    await action.deliver(make_message(description="x"))
    [got] = smtp_tls.handler.received
    assert got.tls and got.login == b"alerts@herald.test"


@pytest.mark.asyncio
async def test_starttls_verifies_certificates_by_default(smtp_tls: Smtp) -> None:
    action = email_action(port=smtp_tls.port)
    with pytest.raises(RetryableActionError, match="certificate"):
        await action.deliver(make_message(description="x"))
    assert smtp_tls.handler.received == []


@pytest.mark.asyncio
async def test_recipient_4xx_is_retryable(smtp: Smtp) -> None:
    action = email_action(port=smtp.port, recipients=["busy@corp.test"])
    with pytest.raises(RetryableActionError) as info:
        await action.deliver(make_message(description="x"))
    assert info.value.status == 451


@pytest.mark.asyncio
async def test_recipient_5xx_is_permanent(smtp: Smtp) -> None:
    action = email_action(port=smtp.port, recipients=["nobody@corp.test"])
    with pytest.raises(PermanentActionError) as info:
        await action.deliver(make_message(description="x"))
    assert info.value.status == 550


@pytest.mark.asyncio
async def test_partial_refusal_is_permanent_and_names_the_address(smtp: Smtp) -> None:
    action = email_action(port=smtp.port, recipients=["sec@corp.test", "nobody@corp.test"])
    with pytest.raises(PermanentActionError, match="nobody@corp.test: 550"):
        await action.deliver(make_message(description="x"))
    assert smtp.handler.received[0].rcpt_tos == ["sec@corp.test"]


@pytest.mark.asyncio
async def test_connection_refused_is_retryable() -> None:
    action = email_action(port=free_port())
    with pytest.raises(RetryableActionError, match="connection failed"):
        await action.deliver(make_message(description="x"))


def test_config_errors_never_show_the_password() -> None:
    data = {"name": "m", "type": "email", "recipients": ["a@b.test"], "user": "u@b.test",
            "password": "pw-in-config-0001", "port": 25}
    with pytest.raises(ConfigError, match=r"actions\[0\]\.host: host is required") as info:
        build_action(data)
    assert "pw-in-config-0001" not in str(info.value)


def test_config_rules() -> None:
    base = {"name": "m", "type": "email", "recipients": ["a@b.test"]}
    with pytest.raises(ConfigError, match="host is required unless use-mx"):
        build_action({**base, "port": 25, "sender": "s@b.test"})
    with pytest.raises(ConfigError, match="port is required unless use-mx"):
        build_action({**base, "host": "h", "sender": "s@b.test"})
    with pytest.raises(ConfigError, match="sender is required"):
        build_action({**base, "host": "h", "port": 25})
    with pytest.raises(ConfigError, match=r"actions\[0\]\.recipients: .*not an email address: 'bad'"):
        build_action({**base, "host": "h", "port": 25, "sender": "s@b.test", "recipients": ["bad"]})
    with pytest.raises(ConfigError, match=r"actions\[0\]\.port"):
        build_action({**base, "host": "h", "port": "587", "sender": "s@b.test"})
    with pytest.raises(ConfigError, match=r"actions\[0\]\.sender: not an email address: 'x'"):
        build_action({**base, "host": "h", "port": 25, "sender": "x"})
    mx = build_action({**base, "use-mx": True, "sender": "s@b.test"})
    assert mx.config.port is None  # 25 is used at send time


# --- use-mx: a real DNS server on loopback answers the MX queries ---------------------------

class _DnsServer(asyncio.DatagramProtocol):
    """Authoritative-style answers: MX records per zone, NOERROR without MX, else NXDOMAIN."""

    def __init__(self, mx: dict[str, list[str]], no_mx: set[str]) -> None:
        self.mx = mx
        self.no_mx = no_mx
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        qname = query.question[0].name
        zone = qname.to_text().rstrip(".")
        if zone in self.mx:
            response.answer.append(dns.rrset.from_text(qname, 60, "IN", "MX", *self.mx[zone]))
        elif zone not in self.no_mx:
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


async def _dns(mx: dict[str, list[str]], no_mx: set[str] = frozenset()) -> tuple[asyncio.DatagramTransport, int]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _DnsServer(mx, set(no_mx)), local_addr=("127.0.0.1", 0), family=socket.AF_INET
    )
    return transport, transport.get_extra_info("sockname")[1]


def mx_action(smtp: Smtp, recipients: list[str], dns_port: int) -> EmailAction:
    action = email_action(host="", port=smtp.port, recipients=recipients, **{"use-mx": True})
    action.resolver = DnsMxResolver(nameservers=["127.0.0.1"], port=dns_port, timeout=5)
    return action


@pytest.mark.asyncio
async def test_use_mx_tries_hosts_in_preference_order_per_domain(smtp: Smtp) -> None:
    # 127.0.0.2 has no SMTP server (connection refused); it has the best preference for a.test.
    transport, port = await _dns({"a.test": ["20 127.0.0.1.", "10 127.0.0.2."], "b.test": ["5 127.0.0.1."]})
    try:
        action = mx_action(smtp, ["x@a.test", "y@b.test", "z@a.test"], port)
        await action.deliver(make_message(description="x"))
    finally:
        transport.close()
    assert sorted(r.rcpt_tos for r in smtp.handler.received) == [["x@a.test", "z@a.test"], ["y@b.test"]]


@pytest.mark.asyncio
async def test_use_mx_reports_every_host_tried_in_preference_order(smtp: Smtp) -> None:
    transport, port = await _dns({"a.test": ["30 127.0.0.4.", "10 127.0.0.2.", "20 127.0.0.3."]})
    try:
        with pytest.raises(RetryableActionError) as info:
            await mx_action(smtp, ["x@a.test"], port).deliver(make_message(description="x"))
    finally:
        transport.close()
    text = str(info.value)
    assert text.index("127.0.0.2") < text.index("127.0.0.3") < text.index("127.0.0.4")
    assert smtp.handler.received == []


@pytest.mark.asyncio
async def test_use_mx_domain_without_mx_uses_the_domain_itself(smtp: Smtp) -> None:
    transport, port = await _dns({}, no_mx={"localhost"})
    try:
        await mx_action(smtp, ["ops@localhost"], port).deliver(make_message(description="x"))
    finally:
        transport.close()
    assert smtp.handler.received[0].rcpt_tos == ["ops@localhost"]


@pytest.mark.asyncio
async def test_use_mx_unknown_domain_is_permanent(smtp: Smtp) -> None:
    transport, port = await _dns({})
    try:
        with pytest.raises(PermanentActionError, match="NXDOMAIN"):
            await mx_action(smtp, ["x@missing.test"], port).deliver(make_message(description="x"))
    finally:
        transport.close()


@pytest.mark.asyncio
async def test_use_mx_failure_is_an_error_and_a_retry_skips_delivered_domains(smtp: Smtp) -> None:
    zones = {"a.test": ["10 127.0.0.2."], "b.test": ["10 127.0.0.1."]}
    transport, port = await _dns(zones)
    try:
        action = mx_action(smtp, ["x@a.test", "y@b.test"], port)
        message = make_message(description="x")
        with pytest.raises(RetryableActionError, match="127.0.0.2"):
            await action.deliver(message)  # what the runner calls on every attempt
        assert [r.rcpt_tos for r in smtp.handler.received] == [["y@b.test"]]
        zones["a.test"] = ["10 127.0.0.1."]  # a.test's MX is back
        await action.deliver(message)
    finally:
        transport.close()
    assert [r.rcpt_tos for r in smtp.handler.received] == [["y@b.test"], ["x@a.test"]]


@pytest.mark.asyncio
async def test_use_mx_accepts_an_injected_resolver(smtp: Smtp) -> None:
    async def resolver(domain: str) -> list[tuple[int, str]]:
        return [(10, "127.0.0.1")]

    action = email_action(host="", port=smtp.port, recipients=["x@corp.test"], **{"use-mx": True})
    action.resolver = resolver
    await action.deliver(make_message(description="x"))
    assert smtp.handler.received[0].rcpt_tos == ["x@corp.test"]
