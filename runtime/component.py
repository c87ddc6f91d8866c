"""The shell every long-running component shares: settings (one clear line on error),
logging, SIGTERM as "finish the current message, then stop", Ctrl-C as exit 130."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import TypeVar

from core.errors import ServiceTagsError
from runtime import logs
from runtime.arguments import fail

S = TypeVar("S")


def run_component(prog: str, load: Callable[[], S], body: Callable[[S, threading.Event], int]) -> int:
    try:
        settings = load()
    except ServiceTagsError as exc:
        return fail(prog, str(exc))
    logs.configure(*settings.logging)  # type: ignore[attr-defined]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        return body(settings, stop)
    except KeyboardInterrupt:
        return 130
    except ServiceTagsError as exc:
        return fail(prog, str(exc))
