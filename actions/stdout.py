"""stdout: write the rendered description to standard output (Postee: no trailing newline).

Herald ends each message with a newline so consecutive events stay readable and line-based
tools (``jq``, ``grep``) work; the bytes before it are exactly Postee's.
"""

from __future__ import annotations

import sys

from actions.base import Action, ActionConfig
from app.errors import RetryableActionError
from app.messages import ActionMessage


class StdoutConfig(ActionConfig):
    concurrency: int = 1


class StdoutAction(Action[StdoutConfig, bytes]):
    type_name = "stdout"
    config_model = StdoutConfig

    def build_payload(self, message: ActionMessage) -> bytes:
        return message.content.description.encode() + b"\n"

    async def send(self, request: bytes) -> None:
        try:
            sys.stdout.buffer.write(request)
            sys.stdout.buffer.flush()
        except OSError as exc:
            raise RetryableActionError(f"stdout: {exc.strerror}") from None
