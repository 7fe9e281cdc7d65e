"""Console access: users and roles, login sessions (cookie) and CSRF tokens.

- A user has a role, ``viewer`` or ``operator``, and logs in with a token or a password
  (``herald.console.users``). API clients may send a token as ``Authorization: Bearer``.
- A login makes a session: a random id in an HttpOnly, SameSite=Strict cookie (Secure on TLS),
  and a per-session CSRF token that every state-changing request must echo (form field
  ``csrf`` or header ``X-CSRF-Token``). Bearer requests carry no cookie and need no CSRF token.
- Without users the console is open to local users as ``operator`` (it binds loopback only,
  see ``exposure_problem``); every browser still gets a session and its CSRF token.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from app.config.settings import ConsoleSettings
from app.ingest.bridge import is_loopback

ROLES = ("viewer", "operator")
COOKIE = "herald_console"
LOGIN_COOKIE = "herald_console_login"


def exposure_problem(settings: ConsoleSettings) -> str | None:
    """Why the console must not start: a non-loopback address and no users to log in."""
    host = settings.listen.rpartition(":")[0] or "0.0.0.0"
    if settings.users or is_loopback(host):
        return None
    return (f"herald.console.listen {settings.listen} is not a loopback address and herald.console.users "
            "configures no login; add users (tokens or passwords), or listen on 127.0.0.1")


@dataclass
class Session:
    user: str
    role: str
    csrf: str
    expires: float
    created: float = field(default_factory=time.time)

    @property
    def operator(self) -> bool:
        return self.role == "operator"


class Access:
    """Credential checks and the session table (in memory: a restart logs everyone out)."""

    def __init__(self, settings: ConsoleSettings, clock: object = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self.sessions: dict[str, Session] = {}
        self.open = not settings.users  # no users: local operator access

    def now(self) -> float:
        clock = self._clock
        assert callable(clock)
        return float(clock())

    def check_password(self, name: str, password: str) -> str | None:
        """The user's role when ``password`` is one of ``name``'s passwords."""
        found: str | None = None
        given = password.encode()
        for user in self.settings.users:
            for secret in user.password:  # every one compared: the time does not tell which matched
                if hmac.compare_digest(given, secret.reveal().encode()) and hmac.compare_digest(
                        name.encode(), user.name.encode()):
                    found = user.role
        return found

    def check_token(self, token: str) -> tuple[str, str] | None:
        """(user, role) of the user holding ``token``."""
        found: tuple[str, str] | None = None
        given = token.encode()
        for user in self.settings.users:
            for secret in user.tokens:
                if hmac.compare_digest(given, secret.reveal().encode()):
                    found = (user.name, user.role)
        return found

    def login(self, user: str, role: str) -> tuple[str, Session]:
        if role not in ROLES:
            raise ValueError(f"role must be viewer or operator, got {role!r}")
        self._expire()
        sid = secrets.token_urlsafe(32)
        session = Session(user, role, secrets.token_urlsafe(32), self.now() + self.settings.session_ttl)
        self.sessions[sid] = session
        return sid, session

    def session(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self.sessions.get(sid)
        if session is None:
            return None
        if session.expires <= self.now():
            del self.sessions[sid]
            return None
        return session

    def logout(self, sid: str | None) -> None:
        if sid:
            self.sessions.pop(sid, None)

    def _expire(self) -> None:
        now = self.now()
        for sid in [s for s, v in self.sessions.items() if v.expires <= now]:
            del self.sessions[sid]

    @staticmethod
    def csrf_ok(session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(session.csrf.encode(), (given or "").encode())


def cookie_flags(secure: bool) -> dict[str, object]:
    """The attributes of every console cookie."""
    return {"httponly": True, "samesite": "Strict", "secure": secure, "path": "/"}
