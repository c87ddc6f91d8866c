"""A local fake of the Azure Communication Services Email REST API (data plane, 2025-09-01).

Just enough for the real `azure.communication.email.EmailClient(endpoint, AzureKeyCredential)`
pointed at `http://127.0.0.1:<port>`:

- `POST /emails:send?api-version=…` with the message JSON → 202, `Operation-Location` and a
  body `{"id", "status": "Running"}`. An `Operation-Id` header names the operation; a repeated
  one answers with the existing operation and stores nothing new (the idempotent behaviour the
  header exists for; how the real service treats a repeat is not verified here).
- `GET /emails/operations/{id}?api-version=…` → 200 `{"id", "status": "Succeeded"}` (or
  `"Failed"` with an error when told to).

Every request must carry the client's HMAC-SHA256 signature (`Authorization`, `x-ms-date`,
`x-ms-content-sha256`); the fake checks the content hash and, knowing the access key, the
signature itself, so a client that signs wrongly fails here as it would in Azure.

Fault injection: `fail_next(n, status)` answers the next n sends with that status (429, 500,
400, …) before looking at them; `fail_operations_next(n)` lets the next n accepted sends end
with status Failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devstack.tcp_ports import LOOPBACK

log = logging.getLogger(__name__)

API_VERSION = "2025-09-01"
_OPERATION_PATH = re.compile(r"^/emails/operations/([^/]+)$")
_SIGNED = re.compile(r"^HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=(.+)$")


@dataclass
class _Operation:
    id: str
    status: str
    error: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class FakeState:
    """What the fake has seen and what it is told to do; guarded by `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    messages: list[dict[str, Any]] = field(default_factory=list)  # accepted sends, as received
    operations: dict[str, _Operation] = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status)
    faults: list[int] = field(default_factory=list)  # statuses for the next sends
    failing_operations: int = 0


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's requests transport expects

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("acs_fake " + format, *args)

    # -- plumbing -------------------------------------------------------------------------
    def _reply(
        self, status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode("utf-8") if body is not None else b""
        # Recorded before answering, so a client that has its answer always finds it recorded.
        with self.server.state.lock:
            self.server.state.requests.append((self.command, urlsplit(self.path).path, status))
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        self._reply(status, {"error": {"code": code, "message": message}}, {"x-ms-error-code": code})

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authentic(self, body: bytes) -> str | None:
        """None when the request is signed correctly, otherwise the reason it is not."""
        auth = self.headers.get("Authorization", "")
        match = _SIGNED.match(auth)
        if not match:
            return "Authorization must be an HMAC-SHA256 signature"
        date, content_hash = self.headers.get("x-ms-date"), self.headers.get("x-ms-content-sha256")
        if not date or not content_hash:
            return "x-ms-date and x-ms-content-sha256 are required"
        if content_hash != base64.b64encode(hashlib.sha256(body).digest()).decode("ascii"):
            return "x-ms-content-sha256 does not match the body"
        to_sign = f"{self.command}\n{self.path}\n{date};{self.headers.get('Host', '')};{content_hash}"
        digest = hmac.new(self.server.key, to_sign.encode("utf-8"), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode("ascii"), match.group(1)):
            return "signature does not match"
        return None

    def _api_version_ok(self) -> bool:
        versions = parse_qs(urlsplit(self.path).query).get("api-version")
        if not versions:
            self._error(400, "MissingApiVersionParameter", "The api-version query parameter is required.")
            return False
        return True

    # -- endpoints ------------------------------------------------------------------------
    def do_POST(self) -> None:
        body = self._read_body()
        if urlsplit(self.path).path != "/emails:send":
            self._error(404, "NotFound", f"No such resource: {self.path}")
            return
        problem = self._authentic(body)
        if problem:
            self._error(401, "Unauthorized", problem)
            return
        if not self._api_version_ok():
            return
        state = self.server.state
        with state.lock:
            fault = state.faults.pop(0) if state.faults else None
        if fault is not None:
            # Like the service, throttling and unavailability say when to come back. The SDK's
            # retry policy retries a POST on 429 only when Retry-After is present.
            headers = {"Retry-After": "0"} if fault in (429, 503) else {}
            code = HTTPStatus(fault).phrase.replace(" ", "")
            self._reply(
                fault,
                {"error": {"code": code, "message": "injected fault"}},
                {"x-ms-error-code": code, **headers},
            )
            return
        try:
            message = json.loads(body)
            problem = _message_problem(message)
        except (json.JSONDecodeError, UnicodeDecodeError):
            problem = "the body is not JSON"
        if problem:
            self._error(400, "BadRequest", problem)
            return
        operation_id = self.headers.get("Operation-Id") or str(uuid.uuid4())
        with state.lock:
            operation = state.operations.get(operation_id)
            if operation is None:
                failed = state.failing_operations > 0
                state.failing_operations -= int(failed)
                operation = _Operation(
                    operation_id,
                    "Failed" if failed else "Succeeded",
                    {"code": "InjectedFailure", "message": "injected failure"} if failed else None,
                )
                state.operations[operation_id] = operation
                if not failed:
                    state.messages.append(message)
                    self.server.save(len(state.messages), operation_id, body)
        location = f"{self.server.url}/emails/operations/{operation_id}?api-version={API_VERSION}"
        # retry-after 0: the SDK's poller waits that long (its default would be 30 s).
        self._reply(
            202,
            {"id": operation_id, "status": "Running"},
            {"Operation-Location": location, "retry-after": "0"},
        )

    def do_GET(self) -> None:
        body = self._read_body()
        match = _OPERATION_PATH.match(urlsplit(self.path).path)
        if not match:
            self._error(404, "NotFound", f"No such resource: {self.path}")
            return
        problem = self._authentic(body)
        if problem:
            self._error(401, "Unauthorized", problem)
            return
        if not self._api_version_ok():
            return
        with self.server.state.lock:
            operation = self.server.state.operations.get(match.group(1))
        if operation is None:
            self._error(404, "NotFound", f"No operation {match.group(1)}")
            return
        self._reply(200, operation.body())


def _message_problem(message: object) -> str | None:
    """What the service would reject about a message body, roughly; None when acceptable."""
    if not isinstance(message, dict):
        return "the message must be a JSON object"
    if not isinstance(message.get("senderAddress"), str) or "@" not in message["senderAddress"]:
        return "senderAddress is required"
    recipients = message.get("recipients")
    to = recipients.get("to") if isinstance(recipients, dict) else None
    if not isinstance(to, list) or not to or not all(isinstance(r, dict) and r.get("address") for r in to):
        return "recipients.to needs at least one address"
    content = message.get("content")
    if not isinstance(content, dict) or not content.get("subject"):
        return "content.subject is required"
    if not (content.get("plainText") or content.get("html")):
        return "content needs plainText or html"
    for attachment in message.get("attachments") or []:
        try:
            base64.b64decode(attachment["contentInBase64"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            return "every attachment needs valid contentInBase64"
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, key: bytes, directory: Path | None) -> None:
        super().__init__((host, 0), _Handler)
        self.key = key
        self.directory = directory
        self.state = FakeState()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients drop idle keep-alive connections when they close; that is not an error.
        log.debug("acs_fake connection from %s ended", client_address, exc_info=True)

    def save(self, number: int, operation_id: str, body: bytes) -> None:
        if self.directory is not None:
            (self.directory / f"{number:06d}-{operation_id}.json").write_bytes(body)


class AcsFake:
    """The fake on a free loopback port. Use `url` and `access_key` with the real client:
    `EmailClient(fake.url, AzureKeyCredential(fake.access_key))`."""

    def __init__(self, directory: Path | str | None = None, *, host: str = LOOPBACK) -> None:
        self.access_key = base64.b64encode(os.urandom(32)).decode("ascii")
        self.directory = Path(directory) if directory is not None else None
        self._host = host
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def _running(self) -> _Server:
        if self._server is None:
            raise RuntimeError("AcsFake is not started")
        return self._server

    @property
    def url(self) -> str:
        return self._running.url

    @property
    def connection_string(self) -> str:
        # Only useful for parsing tests: from_connection_string forces https.
        return f"endpoint={self.url}/;accesskey={self.access_key}"

    @property
    def messages(self) -> list[dict[str, Any]]:
        with self._running.state.lock:
            return list(self._running.state.messages)

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        with self._running.state.lock:
            return list(self._running.state.requests)

    def fail_next(self, count: int = 1, status: int = 429) -> None:
        with self._running.state.lock:
            self._running.state.faults.extend([status] * count)

    def fail_operations_next(self, count: int = 1) -> None:
        with self._running.state.lock:
            self._running.state.failing_operations += count

    def reset(self) -> None:
        with self._running.state.lock:
            state = self._running.state
            state.messages.clear()
            state.operations.clear()
            state.requests.clear()
            state.faults.clear()
            state.failing_operations = 0

    def start(self) -> AcsFake:
        if self._server is None:
            if self.directory is not None:
                self.directory.mkdir(parents=True, exist_ok=True)
            self._server = _Server(self._host, base64.b64decode(self.access_key), self.directory)
            self._thread = threading.Thread(target=self._server.serve_forever, name="acs-fake", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> AcsFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
