"""The consumer's idle polling: soon after a message, less and less often on an empty queue,
never more often than every 0.05 s, never less than every SERVICETAGS_IDLE_SLEEP seconds."""

from __future__ import annotations

import threading

from runtime.adapters.memory import MemoryQueue
from runtime.queue_loop import LoopSettings, QueueConsumer, idle_wait


def test_idle_wait_doubles_from_50_ms_up_to_the_idle_sleep():
    assert [idle_wait(n, 2) for n in range(1, 9)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2, 2]
    assert idle_wait(10_000, 2) == 2
    assert idle_wait(1, 0) == 0  # SERVICETAGS_IDLE_SLEEP=0: poll again at once (tests, the demo)


class _RecordedStop(threading.Event):
    """Records each wait instead of sleeping; a message arrives during the fourth one."""

    def __init__(self, queue: MemoryQueue, stop_after: int) -> None:
        super().__init__()
        self.queue, self.stop_after, self.waits = queue, stop_after, []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if len(self.waits) == 4:
            self.queue.send("a run's complete event")
        if len(self.waits) == self.stop_after:
            self.set()
        return self.is_set()


def test_a_message_resets_the_backoff():
    queue, handled = MemoryQueue("change-events"), []
    stop = _RecordedStop(queue, stop_after=7)
    consumer = QueueConsumer(
        queue,
        MemoryQueue("change-events-poison"),
        lambda m: handled.append(m.content),
        LoopSettings(idle_sleep=2),
        stop=stop,
    )
    consumer.run()
    assert handled == ["a run's complete event"]
    assert stop.waits == [0.05, 0.1, 0.2, 0.4, 0.05, 0.1, 0.2]
