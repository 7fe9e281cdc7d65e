"""email: send the rendered content as a MIME message over SMTP (aiosmtplib).

Postee-compatible keys; where Herald differs, on purpose:

- The message is proper MIME: Date, Message-ID (stable per event/route/action, so receivers can
  drop redeliveries), MIME-Version, an HTML part with a text/plain alternative. CR/LF and other
  control characters in the title are replaced by spaces, so a title can never inject headers.
- ``use-mx`` groups recipients by domain and delivers each domain's recipients to that domain's
  MX hosts (Postee sent every recipient to every domain's MX). MX hosts are tried in preference
  order; a domain without MX records falls back to the domain itself (RFC 5321). If a domain
  cannot be delivered, the send fails (Postee logged and reported success). Domains already
  delivered are remembered between the runner's retries of the message, so a retry does not
  mail them again (in memory; after a restart the message is sent whole).
- ``port`` defaults to 25 with ``use-mx`` (Postee used port 0).
- Verdicts: SMTP 4xx and connection problems retry, SMTP 5xx is permanent. If only some
  recipients are refused the mail went to the others; that is permanent (a retry would
  duplicate it), and the error names the refused addresses.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib
from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from actions._common import PendingRequests, Timeout, deliver_resumable, html_to_text, require_secret
from actions._config import SecretFile, key_error
from actions.base import Action, ActionConfig
from app.config.model import PStr, PStrList, Secret, SecretStr
from app.errors import ActionError, PermanentActionError, RetryableActionError
from app.messages import ActionMessage
from app.redact import redact

OWNER_TOKEN = "<%application_scope_owner%>"
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

# domain -> MX hosts as (preference, host); raises ActionError when the lookup fails.
MxResolver = Callable[[str], Awaitable[list[tuple[int, str]]]]


class EmailConfig(ActionConfig):
    host: PStr = Field("", description="SMTP server host name. Required unless use-mx is true.")
    port: StrictInt | None = Field(
        None, ge=1, le=65535, description="SMTP port. Required unless use-mx is true (then 25)."
    )
    user: PStr = Field("", description="SMTP user (AUTH is used when user and password are set).")
    password: SecretStr = Field(
        default_factory=lambda: Secret(""), description="SMTP password ($NAME reads an environment variable)."
    )
    password_file: SecretFile = Field(None, description="File holding the password (instead of password).")
    sender: PStr = Field("", description="From address. Defaults to user.")
    recipients: PStrList = Field(
        ..., description=f"Recipient addresses; {OWNER_TOKEN} expands to the application scope owners."
    )
    client_host_name: PStr = Field("", description="Name sent in EHLO (default: this host's name).")
    use_mx: StrictBool = Field(
        False, description="Deliver straight to each recipient domain's MX hosts, without AUTH."
    )
    tls_verify: StrictBool = Field(True, description="Verify the server certificate on STARTTLS.")
    timeout: Timeout = Field(30.0, description="Timeout of each SMTP step (duration).")

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one recipient is required")
        for address in value:
            if address != OWNER_TOKEN and not _ADDRESS.match(address):
                raise ValueError(f"not an email address: {address!r}")
        return value

    @model_validator(mode="after")
    def _transport(self) -> EmailConfig:
        # key_error, not ValueError: an error without a key path would print the whole action,
        # password included, as the offending value.
        require_secret(self, "password", required=False)
        if not self.sender:
            if not self.user:
                raise key_error(self, "sender", "sender is required (it defaults to user, which is empty)")
            self.sender = self.user
        if not _ADDRESS.match(self.sender):
            raise key_error(self, "sender", f"not an email address: {self.sender!r}")
        if not self.use_mx:
            if not self.host:
                raise key_error(self, "host", "host is required unless use-mx is true")
            if self.port is None:
                raise key_error(self, "port", "port is required unless use-mx is true")
        return self


@dataclass(slots=True)
class EmailRequest:
    message: EmailMessage
    sender: str
    recipients: list[str]
    # use-mx: domains already delivered, so a retry of this request skips them.
    delivered_domains: set[str] = field(default_factory=set)


def expand_recipients(configured: list[str], owners: str) -> list[str]:
    """Replace the owner token by the event's owners (';'-separated); keep order, drop repeats."""
    out: list[str] = []
    for item in configured:
        names = [o.strip() for o in owners.split(";")] if item == OWNER_TOKEN else [item]
        for name in names:
            if not name:
                continue
            if not _ADDRESS.match(name):
                raise PermanentActionError(f"email: application scope owner is not an address: {name!r}")
            if name not in out:
                out.append(name)
    if not out:
        raise PermanentActionError(
            "email: there is no recipient (the event has no application scope owners)"
        )
    return out


class DnsMxResolver:
    """MX lookups with dnspython; no MX record means the domain itself (RFC 5321 §5.1).

    ``nameservers``/``port`` override the system resolver configuration (tests use a local
    DNS server)."""

    def __init__(self, nameservers: list[str] | None = None, port: int = 53, timeout: float = 10.0) -> None:
        self.nameservers = nameservers
        self.port = port
        self.timeout = timeout

    async def __call__(self, domain: str) -> list[tuple[int, str]]:
        import dns.asyncresolver
        import dns.exception
        import dns.resolver

        try:
            resolver = dns.asyncresolver.Resolver(configure=self.nameservers is None)
            if self.nameservers is not None:
                resolver.nameservers = self.nameservers
                resolver.port = self.port
            resolver.lifetime = self.timeout
            answer = await resolver.resolve(domain, "MX")
        except dns.resolver.NoAnswer:
            return [(0, domain)]
        except dns.resolver.NXDOMAIN:
            raise PermanentActionError(f"email: domain {domain!r} does not exist (NXDOMAIN)") from None
        except dns.exception.DNSException as exc:
            raise RetryableActionError(f"email: MX lookup for {domain!r} failed: {exc}") from None
        return [(int(r.preference), str(r.exchange).rstrip(".")) for r in answer]


def _smtp_error(where: str, exc: Exception) -> ActionError:
    """Translate an aiosmtplib/OS error into Herald's verdict (4xx retry, 5xx permanent)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        msg = redact(f"{where}: all recipients refused: {text}")
        if any(400 <= c < 500 for c in codes):
            return RetryableActionError(msg, status=min(codes))
        return PermanentActionError(msg, status=min(codes) if codes else None)
    if isinstance(exc, (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError,
                        aiosmtplib.SMTPServerDisconnected, OSError, TimeoutError)):
        return RetryableActionError(redact(f"{where}: connection failed: {exc}"))
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        msg = redact(f"{where}: server answered {exc.code} {exc.message}")
        if 400 <= exc.code < 500:
            return RetryableActionError(msg, status=exc.code)
        return PermanentActionError(msg, status=exc.code)
    if isinstance(exc, ssl.SSLError):
        return RetryableActionError(redact(f"{where}: TLS error: {exc}"))
    # e.g. SMTPNotSupported: AUTH configured but not offered: retrying cannot help.
    return PermanentActionError(redact(f"{where}: {exc}"))


class EmailAction(Action[EmailConfig, EmailRequest]):
    type_name = "email"
    config_model = EmailConfig

    def __init__(self, config: EmailConfig) -> None:
        super().__init__(config)
        # Injectable so tests (and exotic setups) can answer MX lookups themselves.
        self.resolver: MxResolver = DnsMxResolver()
        self._pending: PendingRequests[EmailRequest] = PendingRequests()

    async def deliver(self, message: ActionMessage) -> None:
        # use-mx may deliver some domains before failing on another: resume, don't repeat.
        await deliver_resumable(self._pending, message, self.build_payload, self.send)

    def build_payload(self, message: ActionMessage) -> EmailRequest:
        cfg = self.config
        content = message.content
        recipients = expand_recipients(cfg.recipients, content.owners)
        msg = EmailMessage()
        msg["From"] = cfg.sender
        msg["To"] = ", ".join(recipients)
        msg["Subject"] = _CONTROL.sub(" ", content.title).strip()
        when = message.received_at or message.routed_at
        msg["Date"] = format_datetime(datetime.fromtimestamp(when, UTC))
        digest = hashlib.sha256(message.idempotency_key.encode()).hexdigest()[:32]
        msg["Message-ID"] = f"<{digest}.herald@{cfg.sender.rpartition('@')[2]}>"
        # set_content adds MIME-Version; the plain part first, the preferred HTML part last.
        msg.set_content(html_to_text(content.description) or " ", charset="utf-8")
        msg.add_alternative(content.description, subtype="html", charset="utf-8")
        return EmailRequest(msg, cfg.sender, recipients)

    async def send(self, request: EmailRequest) -> None:
        if not self.config.use_mx:
            assert self.config.port is not None
            await self._deliver(self.config.host, self.config.port, request.recipients, request, auth=True)
            return
        await self._send_via_mx(request)

    async def _send_via_mx(self, request: EmailRequest) -> None:
        by_domain: dict[str, list[str]] = {}
        for rcpt in request.recipients:
            by_domain.setdefault(rcpt.rpartition("@")[2].lower(), []).append(rcpt)
        port = self.config.port or 25
        failures: list[ActionError] = []
        for domain, rcpts in by_domain.items():
            if domain in request.delivered_domains:
                continue
            try:
                hosts = sorted(await self.resolver(domain))
                if not hosts:
                    raise PermanentActionError(f"email: no MX host for {domain!r}")
            except ActionError as exc:
                failures.append(exc)
                continue
            attempts: list[ActionError] = []
            for _, host in hosts:
                try:
                    await self._deliver(host, port, rcpts, request, auth=False)
                except ActionError as exc:
                    attempts.append(exc)
                    continue
                request.delivered_domains.add(domain)
                attempts = []
                break
            if attempts:
                # Report every MX tried, in the order tried; retry if any of them might recover.
                cls = RetryableActionError if any(a.retryable for a in attempts) else PermanentActionError
                failures.append(cls(f"{domain}: " + "; ".join(str(a) for a in attempts)))
        if failures:
            text = "; ".join(str(f) for f in failures)
            if any(f.retryable for f in failures):
                raise RetryableActionError(f"email (use-mx): {text}")
            raise PermanentActionError(f"email (use-mx): {text}")

    async def _deliver(
        self, host: str, port: int, rcpts: list[str], request: EmailRequest, auth: bool
    ) -> None:
        cfg = self.config
        where = f"email {self.name} via {host}:{port}"
        login = auth and bool(cfg.user) and bool(cfg.password)
        client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            local_hostname=cfg.client_host_name or None,
            timeout=cfg.timeout,
            start_tls=None,  # STARTTLS when the server offers it
            validate_certs=cfg.tls_verify,
            username=cfg.user if login else None,
            password=cfg.password.reveal() if login else None,
        )
        try:
            async with client:
                errors, _ = await client.send_message(request.message, sender=request.sender, recipients=rcpts)
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
            raise _smtp_error(where, exc) from None
        if errors:
            refused = ", ".join(f"{r}: {resp.code} {resp.message}" for r, resp in errors.items())
            raise PermanentActionError(redact(f"{where}: delivered, but these recipients were refused: {refused}"))
