"""A real Security Hub emulator for the awssecurityhub tests: moto in server mode on 127.0.0.1.

``MotoServer`` runs moto's HTTP server (``moto.server.ThreadedMotoServer``) on a free loopback
port; clients reach it through ``AWS_ENDPOINT_URL`` like any endpoint. ``aws_env`` is the
environment an AWS client (this process, or a Herald subprocess) needs for it: the endpoint, a
region and dummy credentials, and no shared config or credentials files (a developer's ~/.aws
must not leak into a test). If the server cannot start, the test fails.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's default account


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def start(self) -> MotoServer:
        self._server.start()
        deadline = time.monotonic() + 30
        while True:  # up when its reset endpoint answers
            try:
                self.reset()
                return self
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"moto server on {self.url} did not start: {exc}") from exc
                time.sleep(0.1)

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        """Forget every stored finding (moto's /moto-api/reset)."""
        req = urllib.request.Request(f"{self.url}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

    def aws_env(self, tmp: Path) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing-key-id",
            "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
            "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        }

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "securityhub", region_name=REGION, endpoint_url=self.url,
            aws_access_key_id="testing-key-id", aws_secret_access_key="testing-secret-key",
        )

    def findings(self) -> list[dict[str, Any]]:
        """Every stored finding, read back with GetFindings (all pages)."""
        client = self.client()
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"MaxResults": 100}
        while True:
            page = client.get_findings(**kwargs)
            out.extend(page["Findings"])
            if not page.get("NextToken"):
                return out
            kwargs["NextToken"] = page["NextToken"]

    def by_id(self) -> dict[str, dict[str, Any]]:
        return {f["Id"]: json.loads(json.dumps(f, default=str)) for f in self.findings()}
