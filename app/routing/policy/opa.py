"""The OPA server engine: the ``PolicyEngine`` interface over OPA's REST API (``engine: opa``).

Modules go in with the policy API (``PUT /v1/policies/<id>``), data with the data API
(``PATCH /v1/data``), and evaluation is ``POST /v1/data/<path>`` with the current input, all
through ``opa-python-client`` (one HTTP session per engine; synchronous, like regorus).

How it differs from the embedded engine, and why:

- Policy ids are derived from the module's package and source path, so a Herald that restarts
  against a long-running OPA replaces its modules instead of adding second copies (which would
  conflict: two ``default allow`` rules). Two Herald processes loading the same files converge.
- OPA type-checks a module against what is already loaded, while regorus resolves references
  when it evaluates. A module whose only errors are references to functions or rules not loaded
  yet (a template library loads ``lib/aqua.rego`` before the ``lib/text.rego`` it imports) is
  held back and uploaded again after each later module; if it still cannot compile when a
  query touches its package, that query fails with the compile error, as regorus would.
- Postee templates are Rego v0: the server must run with ``--v0-compatible`` (``OpaServer``
  does that unless ``v0=False``); an ``if``-keyword error from a v1 server says so.
- OPA needs the ``jsonformat`` built-in: build it with ``scripts/build-opa.sh`` (opa/main.go).

Securing the connection (``herald.opa-*``): a bearer token for OPA's ``--authentication=token``
(``opa-token``, from ``$ENV`` or ``file:``, a ``Secret`` so logs show ``***``), a CA bundle for an
``https://`` OPA (``opa-ca-file``), a client certificate and key for its ``--authentication=tls``
(``opa-cert-file``, ``opa-key-file``); the server certificate is verified unless
``opa-tls-verify: false``. ``make_engine`` checks access once per engine before any module is
uploaded (``OpaEngine.check_access``): a refused token, an untrusted certificate or a refused
client certificate is a ``ConfigError`` naming the setting, so Herald stops at start instead of
running with every template broken.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import requests
from opa_client import OpaClient
from opa_client.errors import DeleteDataError, DeletePolicyError, PatchDataError, RegoParseError

from app.errors import ConfigError, PolicyError

log = logging.getLogger("herald.opa")


_PACKAGE = re.compile(r"^\s*package\s+([^\s#]+)", re.MULTILINE)
_SIMPLE_PATH = re.compile(r"^data(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_LATE_BOUND = ("undefined function", "undefined ref")
_MISSING_REF = re.compile(r"undefined (?:function|ref):? (data(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
_V1_ONLY = ("`if` keyword is required", "`contains` keyword is required")


class _CompileError(PolicyError):
    """OPA rejected a module; ``late_bound`` when it only references things not loaded yet."""

    def __init__(self, message: str, source: str, late_bound: bool, missing: set[str]) -> None:
        super().__init__(message, source)
        self.detail = message
        self.late_bound = late_bound
        self.missing = missing  # the data.* names it could not resolve; empty when not all known

    def may_resolve(self, packages: list[str]) -> bool:
        """Whether loading these packages can help (always, when not all names are known)."""
        return not self.missing or any(m == p or m.startswith(p + ".") for m in self.missing for p in packages)


class _TlsOpaClient(OpaClient):  # type: ignore[misc]  # opa_client has no types: OpaClient is Any
    """``OpaClient`` whose session verifies with a CA bundle, or not at all.

    opa-python-client 3.0.0 takes ``ssl`` as a bool (https, verified with the system's CAs) and
    ``cert`` for the client certificate, but has no CA bundle or verify setting
    (Turall/OPA-python-client#32 asks for both); its session is made by ``_init_session``, the
    hook its ``BaseClient`` leaves to subclasses, so the verify setting is applied there."""

    def __init__(self, *args: Any, verify: bool | str = True, **kwargs: Any) -> None:
        self._herald_verify = verify
        super().__init__(*args, **kwargs)

    def _init_session(self) -> requests.Session:
        session: requests.Session = super()._init_session()
        session.verify = self._herald_verify
        session.trust_env = False  # REQUESTS_CA_BUNDLE / proxies of the environment do not apply
        return session


_SSL_REASON = re.compile(r"\[SSL: ([A-Z0-9_]+)\] ([^(')\]]+)")


class OpaEngine:
    """An OPA server behind the ``PolicyEngine`` interface."""

    kind = "opa"

    def __init__(self, url: str, v0: bool = True, *, id_prefix: str = "herald", timeout: float = 10.0,
                 token: str | None = None, ca_file: str = "", cert_file: str = "", key_file: str = "",
                 verify: bool = True) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise PolicyError(f"OPA URL must look like http://host:port, got {url!r}", "herald.opa-url")
        if (ca_file or cert_file) and parts.scheme != "https":
            setting = "herald.opa-ca-file" if ca_file else "herald.opa-cert-file"
            raise ConfigError(f"is set but herald.opa-url {url!r} is not https://", setting)
        if key_file and not cert_file:
            raise ConfigError("is set without herald.opa-cert-file", "herald.opa-key-file")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self.v0 = v0
        self.id_prefix = id_prefix.strip("/")
        self.ca_file, self.cert_file, self.verify, self.has_token = ca_file, cert_file, verify, bool(token)
        if token and parts.scheme == "http" and not _loopback(parts.hostname):
            log.warning("herald.opa-token is sent in clear text to %s; use https://", self.url)
        if parts.scheme == "https" and not verify:
            log.warning("herald.opa-tls-verify is false: the certificate of OPA at %s is not verified", self.url)
        # retries=0: OPA answers 500 for evaluation errors (conflicting rule values), and the
        # client would otherwise retry those with backoff before Herald sees the error.
        self._client = _TlsOpaClient(
            host=parts.hostname, port=parts.port or (443 if parts.scheme == "https" else 8181),
            ssl=parts.scheme == "https", token=token or None, retries=0, timeout=timeout,
            cert=(cert_file, key_file) if cert_file and key_file else (cert_file or None),
            verify=(ca_file or True) if verify else False)
        self._packages: list[str] = []
        self._ids: dict[str, str] = {}  # policy id -> source path, in upload order
        self._pending: dict[str, tuple[str, str, str, _CompileError]] = {}  # id -> (path, source, package, error)
        self._data: dict[str, Any] = {}  # what this engine put into data, merged
        self._input: Any = None

    def check_access(self) -> None:
        """One small request that needs the token and the TLS settings (a query of an undefined
        document, as evaluations are): raises a ``ConfigError`` naming the setting at fault when
        OPA cannot be reached, its certificate is not trusted, it refuses the client certificate
        or the token."""
        try:
            self._client.query_rule({}, "herald_access_check")
        except requests.exceptions.SSLError as exc:
            raise self._tls_error(exc) from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            try:
                body = exc.response.json() if exc.response is not None else {}
            except ValueError:
                body = {}
            said = f"{status} {body.get('code', '')}: {body.get('message', '')}".rstrip(": ")
            if status in (401, 403):
                what = "the token in herald.opa-token" if self.has_token else "no token (herald.opa-token is not set)"
                raise ConfigError(f"OPA at {self.url} refused {what}: {said}", "herald.opa-token") from None
            raise ConfigError(f"OPA at {self.url} answered {said}", "herald.opa-url") from None
        except (requests.RequestException, OSError, ValueError) as exc:
            if "PEM" in str(exc) or isinstance(exc, OSError) and not isinstance(exc, requests.RequestException):
                raise ConfigError(f"cannot load the client certificate or key: {exc}", "herald.opa-cert-file") from None
            raise ConfigError(f"cannot reach OPA at {self.url}: {_short(exc)}", "herald.opa-url") from None

    def _tls_error(self, exc: requests.exceptions.SSLError) -> ConfigError:
        text = str(exc)
        match = _SSL_REASON.search(text)
        code, reason = (match.group(1), match.group(2).strip()) if match else ("", _short(exc))
        if code == "CERTIFICATE_VERIFY_FAILED" and "mismatch" in reason.lower():
            return ConfigError(f"the certificate of OPA at {self.url} does not name its host: {reason}",
                               "herald.opa-url")
        if code == "CERTIFICATE_VERIFY_FAILED":
            trusted = f"the CA in herald.opa-ca-file {self.ca_file!r}" if self.ca_file else \
                "the system's CAs (herald.opa-ca-file is not set)"
            return ConfigError(f"the certificate of OPA at {self.url} is not trusted by {trusted}: {reason}",
                               "herald.opa-ca-file")
        # an alert from OPA about our certificate (required, unknown CA, bad), or ours unusable; with
        # TLS 1.3 the alert can lose the race with the request, which then meets a closed connection
        eof = "EOF occurred" in text or "SSLEOFError" in text
        if eof:
            reason = "it closed the TLS connection during the handshake"
        if eof or ("ALERT" in code and ("CERTIFICATE" in code or "UNKNOWN_CA" in code)) or "PEM lib" in text \
                or "KEY" in code:
            given = f"{self.cert_file!r}" if self.cert_file else "none (herald.opa-cert-file is not set)"
            return ConfigError(f"OPA at {self.url} refused the client certificate {given}: {reason}",
                               "herald.opa-cert-file")
        return ConfigError(f"TLS with OPA at {self.url} failed: {code + ': ' if code else ''}{reason}",
                           "herald.opa-url")

    # -- modules -----------------------------------------------------------------------------

    def policy_id(self, path: str, source: str) -> str:
        """Stable id for a module: prefix, package, readable path, and a hash of the raw path."""
        match = _PACKAGE.search(source)
        package = match.group(1) if match else "nopackage"
        readable = _ID_UNSAFE.sub("_", path).strip("_")[-80:]
        digest = hashlib.sha1(f"{package}\0{path}".encode()).hexdigest()[:10]
        return f"{self.id_prefix}/{_ID_UNSAFE.sub('_', package)}/{readable}-{digest}"

    def add_module(self, path: str, source: str) -> str:
        policy_id = self.policy_id(path, source)
        match = _PACKAGE.search(source)
        package = "data." + match.group(1) if match else ""
        try:
            self._put_policy(policy_id, path, source)
        except _CompileError as exc:
            if not package or not exc.late_bound:
                raise
            log.debug("holding back %s until what it references is loaded: %s", path, exc)
            self._pending[policy_id] = (path, source, package, exc)
        else:
            self._retry_pending([package])
        self._packages.append(package)
        return package

    def _put_policy(self, policy_id: str, path: str, source: str) -> None:
        self._ids[policy_id] = path
        try:
            self._client.update_policy_from_string(source, policy_id, rego_compat=False)
        except RegoParseError as exc:
            error = self._compile_error(path, exc)
            del self._ids[policy_id]
            raise error from None
        except (requests.RequestException, ValueError) as exc:
            del self._ids[policy_id]
            raise PolicyError(f"cannot upload the module to OPA at {self.url}: {exc}", path) from None

    def _compile_error(self, path: str, exc: RegoParseError) -> PolicyError:
        details = [e for e in exc.errors if isinstance(e, dict)] or [{"message": str(exc.message)}]
        lines = []
        for err in details:
            loc = err.get("location") or {}
            where = self._ids.get(loc.get("file", ""), path)
            text = self._name_files(str(err.get("message", "")))
            if self.v0 and any(marker in text for marker in _V1_ONLY):
                text += " (this OPA parses Rego v1; start it with --v0-compatible for Postee templates)"
            code = err.get("code", "")
            prefix = f"{where}:{loc['row']}:{loc.get('col', 0)}: " if "row" in loc else ""
            lines.append(f"{prefix}{code + ': ' if code else ''}{text}")
        # "error limit reached" hides the rest; whatever it hides shows up on the next upload
        messages = [str(e.get("message", "")) for e in details]
        late_bound = all(any(m in text for m in _LATE_BOUND + ("error limit reached",)) for text in messages)
        missing = {ref for text in messages for ref in _MISSING_REF.findall(text)}
        if any("error limit reached" in text for text in messages):
            missing = set()
        return _CompileError("; ".join(lines), path, late_bound, missing)

    def _name_files(self, text: str) -> str:
        """OPA names modules by policy id in its messages; Herald users know file paths."""
        for policy_id in sorted(self._ids, key=len, reverse=True):
            text = text.replace(policy_id, self._ids[policy_id])
        return text

    def _retry_pending(self, loaded: list[str] | None = None) -> None:
        """Upload held-back modules again: those waiting for one of the ``loaded`` packages (or
        all of them), then those waiting for what that loaded, until nothing more compiles."""
        progress = True
        while progress and self._pending:
            progress = False
            for policy_id, (path, source, package, error) in list(self._pending.items()):
                if loaded is not None and not error.may_resolve(loaded):
                    continue
                try:
                    self._put_policy(policy_id, path, source)
                except _CompileError as exc:
                    self._pending[policy_id] = (path, source, package, exc)
                    continue
                del self._pending[policy_id]
                if loaded is not None:
                    loaded.append(package)
                progress = True

    def packages(self) -> list[str]:
        return list(self._packages)

    # -- data and evaluation -----------------------------------------------------------------

    def add_data(self, data: dict[str, Any]) -> None:
        """Merged into what this engine added before, then written one top-level key at a time
        (a JSON patch on /v1/data itself is redirected by OPA, losing the body)."""
        _merge(self._data, data)
        for key in data:
            try:
                self._client.patch_data(quote(key, safe=""), [{"op": "add", "path": "", "value": self._data[key]}])
            except (PatchDataError, requests.RequestException, ValueError) as exc:
                raise PolicyError(f"OPA at {self.url} refused data.{key}: {_describe(exc)}", "data") from None

    def set_input_json(self, text: str) -> None:
        try:
            self._input = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise PolicyError(f"input is not JSON: {exc}", "input") from None

    def eval_path(self, path: str) -> Any:
        if self._pending:
            self._retry_pending()
            for mod_path, _, package, error in self._pending.values():
                if package.startswith(path + ".") or (path + ".").startswith(package + ".") or package == path:
                    raise PolicyError(error.detail, mod_path)
        try:
            # (the root goes through the query API too: OPA redirects POST /v1/data/ to a GET)
            if _SIMPLE_PATH.match(path) and path != "data":
                body = self._client.query_rule(self._input, path.removeprefix("data."))
                return body.get("result")
            # anything other than a plain ref goes through the query API, bound to a variable
            body = self._client.ad_hoc_query(f"herald_value := {path}", self._input)
            rows = body.get("result") or []
            return rows[0].get("herald_value") if rows else None
        except requests.HTTPError as exc:
            raise PolicyError(self._eval_error(exc), path) from None
        except (requests.RequestException, ValueError) as exc:
            raise PolicyError(f"cannot query OPA at {self.url}: {exc}", path) from None

    def _eval_error(self, exc: requests.HTTPError) -> str:
        try:
            body = exc.response.json() if exc.response is not None else {}
        except ValueError:
            body = {}
        errors = body.get("errors") or [{"message": body.get("message") or str(exc)}]
        out = []
        for err in errors:
            loc = err.get("location") or {}
            where = self._ids.get(loc.get("file", ""), loc.get("file", ""))
            prefix = f"{where}:{loc['row']}:{loc.get('col', 0)}: " if where and "row" in loc else ""
            out.append(prefix + self._name_files(str(err.get("message", ""))))
        return "; ".join(out)

    # -- lifecycle ---------------------------------------------------------------------------

    def policy_ids(self) -> list[str]:
        """Ids of the modules this engine uploaded, in upload order."""
        return list(self._ids)

    def server_policy_ids(self) -> list[str]:
        """Every module id the server holds, this engine's or not."""
        return list(self._client.get_policies_list())

    def remove_policies(self, ids: list[str]) -> list[str]:
        """Delete modules by id, newest first (OPA refuses to delete a module that others still
        use), in passes until none can go; returns the ids that could not be deleted."""
        left = list(dict.fromkeys(ids))
        while left:
            failed = []
            for policy_id in reversed(left):
                try:
                    self._client.delete_policy(policy_id)
                except DeletePolicyError as exc:
                    if exc.expression != "resource_not_found":
                        failed.append(policy_id)
                except requests.RequestException:
                    failed.append(policy_id)
            if len(failed) == len(left):
                break
            left = list(reversed(failed))
        return left

    def remove_all(self) -> list[str]:
        """Delete this engine's modules and data keys; returns modules that could not go.
        Herald does not call this at shutdown (another Herald may use the same modules); tests
        do, so one test's rules cannot break the next."""
        left = self.remove_policies(list(self._ids))
        self._ids = {i: p for i, p in self._ids.items() if i in left}
        self._pending.clear()
        for key in list(self._data):
            try:
                self._client.delete_data(quote(key, safe=""))
            except (DeleteDataError, requests.RequestException):
                pass  # already gone
        self._data.clear()
        return left

    def close(self) -> None:
        self._client.close_connection()


def _loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _short(exc: BaseException) -> str:
    """requests' connection errors nest urllib3's; the innermost reason is the useful part."""
    text = str(exc)
    inner = re.search(r"\(Caused by \w+\((.*)\)\)$", text)
    return inner.group(1).strip("'\"") if inner else text


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    return f"{getattr(exc, 'expression', '')}: {message}" if message else str(exc)
