"""SMTP sink for the local stack: accepts every message and keeps it as an `.eml` file.

Each message is written exactly as received (the DATA bytes) to
`<outbox>/<UTC timestamp>-<counter>-<sha256 prefix>.eml`, atomically (temp file, then rename),
so a watcher never sees half a message. The sink can be stopped and started again on the same
port, which is how tests make the mail server "go down for a while".

    python -m devstack.smtp_sink --outbox DIR [--port P] [--state-file F]

runs it until SIGTERM or SIGINT and writes {"host", "port", "outbox", "pid"} to the state file.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import hashlib
import itertools
import json
import logging
import os
import signal
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from aiosmtpd.controller import Controller

from devstack.tcp_ports import LOOPBACK, free_port
from runtime.logs import log_event

log = logging.getLogger(__name__)

_PORT_ATTEMPTS = 5


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see either nothing or the whole file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class OutboxHandler:
    """aiosmtpd handler: one `.eml` file per message."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def store(self, data: bytes) -> Path:
        with self._lock:  # the counter orders files written in the same microsecond
            number = next(self._counter)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        digest = hashlib.sha256(data).hexdigest()[:12]
        path = self.outbox / f"{stamp}-{number:06d}-{digest}.eml"
        write_atomically(path, data)
        return path

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        path = self.store(data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape"))
        log_event(log, "smtp_sink_stored", f"stored {path.name}", file=path.name, rcpt=envelope.rcpt_tos)
        return f"250 OK queued as {path.stem}"


class SmtpSink:
    """An aiosmtpd server on loopback writing every message into `outbox`.

    With no port, a free one is picked on the first start (aiosmtpd cannot bind port 0) and
    kept for later starts, so clients configured with `port` reach the restarted sink.
    """

    def __init__(self, outbox: Path | str, *, port: int | None = None, host: str = LOOPBACK) -> None:
        self.outbox = Path(outbox)
        self.host = host
        self._port = port
        self.handler = OutboxHandler(self.outbox)
        self._controller: Controller | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("SmtpSink has no port until it is started")
        return self._port

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> SmtpSink:
        if self._controller is not None:
            return self
        self.outbox.mkdir(parents=True, exist_ok=True)
        fixed = self._port is not None
        for attempt in range(_PORT_ATTEMPTS):
            port = self._port if self._port is not None else free_port(self.host)
            # A new Controller and loop per start; aiosmtpd never closes the loop it creates
            # itself (a ResourceWarning per start), so we own the loop and close it in stop().
            loop = asyncio.new_event_loop()
            controller = Controller(self.handler, loop=loop, hostname=self.host, port=port)
            try:
                controller.start()
            except OSError as exc:
                controller.stop(no_assert=True)
                loop.close()
                if exc.errno != errno.EADDRINUSE or fixed or attempt == _PORT_ATTEMPTS - 1:
                    raise
                continue  # someone took the free port between our probe and the bind
            self._port, self._controller = port, controller
            log_event(
                log, "smtp_sink_started", f"SMTP sink on port {port}", port=port, outbox=str(self.outbox)
            )
            return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller.loop.close()
            self._controller = None

    def messages(self) -> list[Path]:
        """The stored `.eml` files, oldest first."""
        return sorted(self.outbox.glob("*.eml"))

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.smtp_sink", description=__doc__.splitlines()[0])
    parser.add_argument("--outbox", required=True, type=Path, help="directory for the .eml files")
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--state-file", type=Path, help="write host, port, outbox and pid here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sink = SmtpSink(args.outbox, port=args.port).start()
    try:
        if args.state_file:
            state = {
                "host": sink.host,
                "port": sink.port,
                "outbox": str(sink.outbox.resolve()),
                "pid": os.getpid(),
            }
            args.state_file.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(args.state_file, json.dumps(state).encode("utf-8"))
        log.info("smtp sink on %s:%d writing to %s", sink.host, sink.port, sink.outbox)
        while not stop.wait(0.5):  # short waits so the signal handler gets to run promptly
            pass
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
