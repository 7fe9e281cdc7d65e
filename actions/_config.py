"""Config helpers for the ticketing/SBOM actions: ``$ENV`` user names, ``<key>-file`` secrets,
cross-key errors that keep their key path, and a redacted Basic auth header.

Postee expands a leading ``$NAME`` in ``user``, ``password`` and ``token``; ``SecretStr``
(app.config.model) does it for secrets and ``EnvPStr`` here does it for ``user``. Herald adds a
``<key>-file`` companion for each secret so that a mounted Kubernetes Secret can be used without
putting the value in the config file or the environment.
"""

from __future__ import annotations

import base64
import os
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationError, WithJsonSchema
from pydantic_core import InitErrorDetails, PydanticCustomError

from app import redact
from app.config.model import PosteeModel, Secret, _to_str, read_secret_file, yaml_kind
from app.errors import ConfigError


def _expand_env(value: Any) -> str:
    text: str = _to_str(value)
    if text.startswith("$") and len(text) > 1:
        return os.environ.get(text[1:].strip("{}"), "")
    return text


def _read_secret_file(value: Any) -> Secret | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        # ValueError, not TypeError: pydantic only turns ValueError into a key-path error
        raise ValueError(f"expected a file path, got {yaml_kind(value)}")  # noqa: TRY004
    try:
        # key "" keeps the message free of a second key prefix; pydantic adds the key path.
        return read_secret_file(value, "")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


# A plain string that expands a leading $NAME from the environment (Postee does it for `user`).
EnvPStr = Annotated[str, BeforeValidator(_expand_env)]
# A file path whose trimmed contents become a secret (read once, when the config is loaded).
SecretFile = Annotated[Secret | None, BeforeValidator(_read_secret_file), WithJsonSchema({"type": "string"})]


def key_error(model: PosteeModel, key: str, message: str) -> ValidationError:
    """An error about ``key`` raised from a model validator.

    A plain ValueError there would carry an empty key path, and the config loader would print
    the whole action (secrets included) as the offending value.
    """
    detail = InitErrorDetails(type=PydanticCustomError("herald_config", message), loc=(key,), input=None)
    return ValidationError.from_exception_data(type(model).__name__, [detail])


def merge_secret_file(model: PosteeModel, key: str) -> None:
    """Move ``<key>-file``'s secret into ``<key>``; both given is ambiguous, hence an error."""
    attr = key.replace("-", "_")
    from_file: Secret | None = getattr(model, f"{attr}_file")
    if from_file is None:
        return
    if getattr(model, attr):
        raise key_error(model, f"{key}-file", f"both {key} and {key}-file are set; give only one")
    setattr(model, attr, from_file)


def basic_auth_header(user: str, password: Secret) -> str:
    """``Basic base64(user:password)``, registered for redaction: the encoded form is a secret too."""
    token = base64.b64encode(f"{user}:{password.reveal()}".encode()).decode()
    redact.register(token)
    return f"Basic {token}"
