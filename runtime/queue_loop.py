"""An at-least-once queue consumer, shared by the worker and the notifier.

- A received message stays invisible while its handler runs: a background thread extends
  the lease (every third of the visibility timeout), so long work is not handed to a
  second consumer.
- The message is deleted last, only after the handler returned: a crash anywhere before
  leaves it to reappear, so handlers must be idempotent.
- Errors decide by type: PermanentError (and BadMessage) go to `<queue>-poison` at once;
  anything else is retried with growing delay, and poisoned after `max_tries` deliveries.
- Poisoned messages keep their original content, so `servicetags requeue` can put them back.
- A lost pop receipt (the visibility ran out while the handler ran, or storage restarted) is
  routine for an at-least-once consumer: the delete or extend that needed it is skipped, the
  event `receipt_lost` is logged and counted, and the message reappears to be handled again,
  idempotently. A storage call that fails (storage down, restarting) is logged as
  `queue_unavailable` and retried after a pause; neither ever stops the consumer.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

from core.errors import PermanentError, ServiceTagsError
from core.ports import LostReceipt, Message, Queue
from runtime.config import Env
from runtime.crash_points import crash_point
from runtime.logs import log_event

log = logging.getLogger(__name__)

POISON_SCHEMA = "servicetags.poisoned/v1"
Handler = Callable[[Message], None]
PoisonHook = Callable[[Message, str], None]


class LoopSettings(NamedTuple):
    max_tries: int = 5
    visibility_timeout: int = 120  # seconds; the lease is extended while the handler runs
    retry_delay: int = 10  # seconds before the first retry; doubles per try
    idle_sleep: float = 2.0  # at most this many seconds between polls of an empty queue

    @classmethod
    def from_env(cls, env: Env) -> LoopSettings:
        visibility = env.int("SERVICETAGS_VISIBILITY_TIMEOUT", 120, minimum=1, maximum=7 * 24 * 3600)
        return cls(
            max_tries=env.int("SERVICETAGS_MAX_TRIES", 5, minimum=1, maximum=100),
            visibility_timeout=visibility,
            retry_delay=env.int("SERVICETAGS_RETRY_DELAY", 10, minimum=0, maximum=visibility),
            idle_sleep=env.int("SERVICETAGS_IDLE_SLEEP", 2, minimum=0, maximum=300),
        )


class Stats(NamedTuple):
    processed: int = 0
    retried: int = 0
    poisoned: int = 0
    lost_receipts: int = 0  # a delete or extend whose receipt no longer held
    storage_errors: int = 0  # queue calls that failed and were retried after a pause


def poison_record(queue: str, message: Message, reason: str) -> str:
    return json.dumps(
        {
            "schema": POISON_SCHEMA,
            "queue": queue,
            "reason": reason,
            "dequeue_count": message.dequeue_count,
            "poisoned_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "message_id": message.id,
            "inserted_on": message.inserted_on,
            "content": message.content,
        },
        separators=(",", ":"),
    )


class _Lease:
    """Keeps a message invisible while it is worked on; tracks the newest pop receipt."""

    def __init__(self, queue: Queue, message: Message, timeout: int) -> None:
        self._queue, self.message, self._timeout = queue, message, timeout
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(max(1.0, self._timeout / 3)):
            try:
                with self._lock:
                    self.message = self._queue.extend(self.message, self._timeout)
            except LostReceipt as exc:
                # Another consumer may have it now: a duplicate later, not a failure now. No
                # later extend can succeed with this receipt.
                self.lost = True
                log_event(
                    log,
                    "receipt_lost",
                    f"lease not extended: {exc}",
                    level=logging.WARNING,
                    queue=self._queue.name,
                    message_id=self.message.id,
                    step="extend",
                )
                return
            except Exception as exc:  # storage unreachable for now: try again next period
                log_event(
                    log,
                    "queue_unavailable",
                    f"could not extend the lease of message {self.message.id}: {type(exc).__name__}",
                    level=logging.WARNING,
                    queue=self._queue.name,
                    message_id=self.message.id,
                )

    def current(self) -> Message:
        with self._lock:
            return self.message


class QueueConsumer:
    def __init__(
        self,
        queue: Queue,
        poison: Queue,
        handler: Handler,
        settings: LoopSettings,
        *,
        stop: threading.Event | None = None,
        on_poison: PoisonHook | None = None,
    ) -> None:
        self.queue, self.poison, self.handler, self.settings = queue, poison, handler, settings
        self.on_poison = on_poison
        self.stop = stop or threading.Event()
        self.stats = Stats()

    def _count(self, **deltas: int) -> None:
        self.stats = self.stats._replace(**{k: getattr(self.stats, k) + v for k, v in deltas.items()})

    def _receipt_lost(self, message: Message, step: str, exc: LostReceipt) -> None:
        self._count(lost_receipts=1)
        log_event(
            log,
            "receipt_lost",
            f"{step} skipped, the message will come again: {exc}",
            level=logging.WARNING,
            queue=self.queue.name,
            message_id=message.id,
            dequeue_count=message.dequeue_count,
            step=step,
        )

    def _delete(self, message: Message, step: str) -> bool:
        try:
            self.queue.delete(message)
        except LostReceipt as exc:
            self._receipt_lost(message, step, exc)
            return False
        return True

    def _to_poison(self, message: Message, reason: str) -> None:
        # Send first, delete second: a crash between them leaves a duplicate in poison, not a loss.
        # So does a lost receipt: the message comes again and is poisoned again.
        self.poison.send(poison_record(self.queue.name, message, reason))
        if self.on_poison is not None:  # before the delete: a crash here repeats it, never skips it
            self.on_poison(message, reason)
        self._delete(message, "delete after poisoning")
        self._count(poisoned=1)
        log_event(
            log,
            "message_poisoned",
            f"message moved to {self.poison.name}: {reason}",
            level=logging.WARNING,
            queue=self.queue.name,
            message_id=message.id,
            dequeue_count=message.dequeue_count,
            reason=reason,
        )

    def process(self, message: Message) -> None:
        """Handle one received message, deciding its fate. Never raises for a bad message."""
        max_tries = self.settings.max_tries
        if message.dequeue_count > max_tries:
            self._to_poison(
                message,
                f"delivered {message.dequeue_count} times without completing "
                "(the consumer crashed or timed out each time)",
            )
            return
        lease = _Lease(self.queue, message, self.settings.visibility_timeout)
        try:
            with lease:
                self.handler(message)
        except PermanentError as exc:  # BadMessage too
            self._to_poison(lease.current(), str(exc))
            return
        except Exception as exc:
            # The lease thread may have renewed the pop receipt: act on its newest copy.
            self._retry_later(lease.current(), exc)
            return
        message = lease.current()
        crash_point("before_delete")
        self._delete(message, "delete")
        self._count(processed=1)

    def _retry_later(self, message: Message, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        if message.dequeue_count >= self.settings.max_tries:
            self._to_poison(message, f"failed {message.dequeue_count} times; last error: {reason}")
            return
        delay = min(
            self.settings.retry_delay * 2 ** (message.dequeue_count - 1), self.settings.visibility_timeout
        )
        log_event(
            log,
            "message_retry",
            f"will retry in {delay}s: {reason}",
            level=logging.WARNING,
            queue=self.queue.name,
            message_id=message.id,
            dequeue_count=message.dequeue_count,
            reason=reason,
            retry_in=delay,
            exc_info=not isinstance(exc, ServiceTagsError),
        )
        self._count(retried=1)
        try:
            self.queue.extend(message, delay)  # come back after the delay, not the full lease
        except LostReceipt as lost:
            self._receipt_lost(message, "retry delay", lost)
        except Exception as failed:  # it comes back after its lease instead
            log_event(
                log,
                "queue_unavailable",
                f"could not shorten the retry delay of {message.id}: {type(failed).__name__}",
                level=logging.WARNING,
                queue=self.queue.name,
                message_id=message.id,
            )

    def run(self, *, until_empty: bool = False) -> Stats:
        """Consume until stopped; with `until_empty`, return once nothing is left, counting
        messages still invisible (being retried or held by another consumer). An empty queue
        is polled again after `idle_wait`: soon after a message, then less and less often."""
        pause = 0.0
        empty = 0  # empty receives in a row
        while not self.stop.is_set():
            try:
                message = self.queue.receive(self.settings.visibility_timeout)
                if message is not None:
                    self.process(message)
                    pause, empty = 0.0, 0
                    continue
                if until_empty and self.queue.depth() == 0:
                    break
                pause = 0.0
            except Exception as exc:
                # Storage down or restarting (the handler's own errors never get here): a
                # message being handled reappears after its lease. Back off, up to a minute.
                pause = min(max(1.0, pause * 2), UNAVAILABLE_PAUSE_MAX)
                self._count(storage_errors=1)
                log_event(
                    log,
                    "queue_unavailable",
                    f"queue {self.queue.name} unavailable "
                    f"({type(exc).__name__}: {_first_line(exc)}); trying again in {pause:.0f}s",
                    level=logging.WARNING,
                    queue=self.queue.name,
                    retry_in=pause,
                )
                self.stop.wait(pause)
                continue
            empty += 1
            self.stop.wait(idle_wait(empty, self.settings.idle_sleep))
        return self.stats


IDLE_FIRST_WAIT = 0.05  # seconds after the first empty receive that follows a message


def idle_wait(empty_polls: int, ceiling: float) -> float:
    """Seconds to wait after the `empty_polls`-th empty receive in a row: 0.05 s doubling up
    to `ceiling` (SERVICETAGS_IDLE_SLEEP), the queue-trigger polling of Azure Functions.
    Storage queues have no long poll; this keeps the wait for a message that follows others
    short (a run's complete event comes right after its last reports) and an idle consumer
    cheap (one receive per `ceiling` seconds), without busy polling in between."""
    wait: float = min(ceiling, IDLE_FIRST_WAIT * 2 ** min(max(empty_polls, 1) - 1, 20))
    return wait


UNAVAILABLE_PAUSE_MAX = 60.0


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0][:200]
