"""Structured logging: one JSON object per line with a stable `event` name.

Log Analytics alerts match on these events (`change_report`, `region_checked`,
`message_poisoned`, ...), so their names and fields are part of the product's contract.
Only entry points call `configure`; modules log with `log_event(logger, "name", **fields)`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, NamedTuple

from runtime.config import Env

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or "log",
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _RESERVED and k != "event"})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = json.dumps(entry, default=str, ensure_ascii=False)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from outside: escaped, still one line
            line = json.dumps(entry, default=str)
        return line


def _escaped(value: object) -> str:
    """Text with its control characters escaped: a value from outside (a run_id, a reason, a
    subject) holding a newline cannot start a forged log line."""
    text = str(value)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


class TextFormatter(logging.Formatter):
    """One line per record (a traceback, when there is one, follows it)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _RESERVED and k != "event"}
        extra = " ".join(f"{_escaped(k)}={_escaped(v)}" for k, v in fields.items())
        line = f"{record.levelname.lower():7} {_escaped(getattr(record, 'event', '') or record.name)}: "
        line += _escaped(record.getMessage()) + (f" [{extra}]" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class LogSettings(NamedTuple):
    format: str = "json"
    level: str = "INFO"

    @classmethod
    def from_env(cls, env: Env) -> LogSettings:
        return cls(
            env.choice("SERVICETAGS_LOG_FORMAT", ("json", "text"), "json"),
            env.choice("SERVICETAGS_LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"),
        )


def configure(fmt: str = "json", level: str = "INFO", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The Azure SDKs log every HTTP request at INFO; keep our records readable.
    logging.getLogger("azure").setLevel(logging.WARNING)


def log_event(
    logger: logging.Logger,
    event: str,
    message: str = "",
    *,
    level: int = logging.INFO,
    exc_info: bool = False,
    **fields: Any,
) -> None:
    logger.log(level, message or event.replace("_", " "), exc_info=exc_info, extra={"event": event, **fields})
