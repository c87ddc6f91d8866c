"""A local receiver for the notifier's channels: Teams Workflows, Slack and signed webhooks.

Real HTTP on loopback. Every POST is recorded (path, headers, body, what was checked) and its
body written, byte for byte as sent, to `<outbox>/<time>-<n>-<name>.<kind>.json`, where the
kind is the path's first segment (`/teams/<name>`, `/slack/<name>`, `/webhook/<name>`). It
answers like the real services, limits included:

- teams: 202; more than 4 requests a second on one URL: 429 with Retry-After. A body over
  28 KB is still answered 202, as Workflows do (the flow fails later), and recorded as
  `oversized`.
- slack: 200 `ok`; over 1 message a second: 429 with Retry-After; more than 50 blocks, a
  section over 3,000 characters or no `text`: 400 `invalid_blocks`, as Slack does.
- webhook: Standard Webhooks signature checked with the secrets given (any of them, for a
  rotation), timestamp within 5 minutes: 204, else 401.

On demand (`POST /_control` with {"path": "/slack/x", "answers": [500, 429, 200],
"delay": 1.5, "retry_after": 1}) the next requests to a path get the scripted answers, or are
answered slowly. `GET /_requests` lists what was recorded.

    python -m devstack.webhook_receiver --outbox DIR --state-file F [--port P]

with the signing secrets in WEBHOOK_RECEIVER_SECRETS (space-separated; not on the command line,
where `ps` would show them). It writes {"url", "port", "pid"} to the state file once listening.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import threading
import time
from collections import defaultdict, deque
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from devstack.smtp_sink import write_atomically
from devstack.tcp_ports import LOOPBACK
from notifier import signing

TEAMS_MAX_BYTES = 28 * 1024
RATES = {"teams": 4, "slack": 1}  # requests per second per URL before 429
KINDS = ("teams", "slack", "webhook")


def slack_problems(doc: Any) -> list[str]:
    """What Slack would refuse in an incoming-webhook body."""
    if not isinstance(doc, dict):
        return ["body is not an object"]
    problems = []
    if not isinstance(doc.get("text"), str) or not doc["text"]:
        problems.append("no fallback text")
    blocks = doc.get("blocks", [])
    if len(blocks) > 50:
        problems.append(f"{len(blocks)} blocks (at most 50)")
    for block in blocks:
        text = (block.get("text") or {}).get("text", "") if isinstance(block, dict) else ""
        if block.get("type") == "section" and len(text) > 3000:
            problems.append(f"a section of {len(text)} characters (at most 3000)")
    return problems


class Receiver:
    def __init__(self, outbox: Path, secrets: list[str], host: str = LOOPBACK, port: int = 0) -> None:
        self.outbox, self.secrets = outbox, list(secrets)
        outbox.mkdir(parents=True, exist_ok=True)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self._scripts: dict[str, deque[int]] = defaultdict(deque)
        self._delays: dict[str, float] = {}
        self._retry_after: dict[str, int] = {}
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet: the records are the log
                pass

            def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/_requests":
                    with receiver._lock:
                        body = json.dumps(receiver.requests).encode()
                    self._answer(200, body, {"Content-Type": "application/json"})
                else:
                    self._answer(404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path == "/_control":
                    receiver.script(**json.loads(body))
                    self._answer(204)
                    return
                status, reply, headers = receiver.handle(self.path, dict(self.headers.items()), body)
                self._answer(status, reply, headers)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://{host}:{self.port}"
        self._thread: threading.Thread | None = None

    def script(
        self,
        path: str,
        answers: list[int] | None = None,
        delay: float | None = None,
        retry_after: int | None = None,
    ) -> None:
        with self._lock:
            self._scripts[path].extend(answers or [])
            if delay is not None:
                self._delays[path] = delay
            if retry_after is not None:
                self._retry_after[path] = retry_after

    def _throttled(self, path: str, kind: str, now: float) -> bool:
        rate = RATES.get(kind)
        if rate is None:
            return False
        recent = self._recent[path]
        while recent and now - recent[0] >= 1.0:
            recent.popleft()
        if len(recent) >= rate:
            return True
        recent.append(now)
        return False

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict[str, str]]:
        parts = path.strip("/").split("/")
        kind = parts[0] if parts and parts[0] in KINDS else None
        if kind is None or len(parts) != 2 or not parts[1]:
            return 404, b"unknown path", {}
        name = parts[1]
        with self._lock:
            scripted = self._scripts[path].popleft() if self._scripts[path] else None
            delay = self._delays.get(path, 0.0)
            retry_after = self._retry_after.get(path, 1)
            throttled = scripted is None and self._throttled(path, kind, time.monotonic())
        if delay:
            time.sleep(delay)
        record: dict[str, Any] = {
            "kind": kind,
            "name": name,
            "path": path,
            "size": len(body),
            "headers": {k.lower(): v for k, v in headers.items()},
            "received_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        status, reply = self._check(kind, headers, body, record)
        if throttled:
            status, reply = 429, b"too many requests"
        if scripted is not None:
            status, reply = scripted, f"scripted {scripted}".encode()
        record["status"] = status
        extra = {"Retry-After": str(retry_after)} if status == 429 else {}
        if 200 <= status < 300:
            seq = next(self._counter)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            file = self.outbox / f"{stamp}-{seq:04d}-{name}.{kind}.json"
            write_atomically(file, body)
            record["file"] = str(file)
        with self._lock:
            self.requests.append(record)
        return status, reply, extra

    def _check(
        self, kind: str, headers: dict[str, str], body: bytes, record: dict[str, Any]
    ) -> tuple[int, bytes]:
        try:
            doc = json.loads(body)
        except ValueError:
            return 400, b"body is not JSON"
        if kind == "teams":
            record["oversized"] = len(body) > TEAMS_MAX_BYTES
            attachments = doc.get("attachments") if isinstance(doc, dict) else None
            if doc.get("type") != "message" or not attachments:
                return 400, b"expected a message with an Adaptive Card attachment"
            return 202, b""
        if kind == "slack":
            problems = slack_problems(doc)
            record["problems"] = problems
            return (400, b"invalid_blocks") if problems else (200, b"ok")
        try:
            record["webhook_id"] = signing.verify(self.secrets, headers, body, now=int(time.time()))
            record["verified"] = True
        except signing.SignatureError as exc:
            record["verified"] = False
            record["problem"] = str(exc)
            return 401, b"signature does not verify"
        return 204, b""

    def start(self) -> Receiver:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="webhook-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outbox", type=Path, required=True)
    parser.add_argument("--state-file", type=Path)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    secrets = os.environ.get("WEBHOOK_RECEIVER_SECRETS", "").split()
    receiver = Receiver(args.outbox, secrets, port=args.port).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.state_file:
        write_atomically(
            args.state_file,
            json.dumps({"url": receiver.url, "port": receiver.port, "pid": os.getpid()}).encode(),
        )
    stop.wait()
    receiver.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
