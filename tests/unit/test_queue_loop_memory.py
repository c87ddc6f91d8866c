"""The queue loop's decisions over the in-memory queue, time moved by a test clock: retries and
their delays, poison with reasons, a lost receipt. No Azurite, no sockets, no sleeps."""

from __future__ import annotations

import json

from core.errors import BadMessage, PermanentError
from core.ports import Message
from runtime.adapters.memory import MemoryQueue
from runtime.queue_loop import POISON_SCHEMA, LoopSettings, QueueConsumer

SETTINGS = LoopSettings(max_tries=3, visibility_timeout=120, retry_delay=10, idle_sleep=0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def consumer(handler, clock: Clock) -> QueueConsumer:
    return QueueConsumer(
        MemoryQueue("work", clock=clock), MemoryQueue("work-poison", clock=clock), handler, SETTINGS
    )


def deliver(c: QueueConsumer) -> Message | None:
    """One receive and its handling, as `run` does; the message handled, or None."""
    message = c.queue.receive(SETTINGS.visibility_timeout)
    if message is not None:
        c.process(message)
    return message


def test_a_failing_message_comes_back_after_doubling_delays_then_is_poisoned_with_its_reason():
    clock = Clock()
    tries: list[int] = []

    def handler(message: Message) -> None:
        tries.append(message.dequeue_count)
        raise ConnectionError("mail server refused")

    c = consumer(handler, clock)
    c.queue.send('{"region": "francecentral"}')
    for delay in (10, 20):  # retry_delay, doubled per try
        assert deliver(c) is not None
        clock.now += delay - 1
        assert deliver(c) is None  # not back yet
        clock.now += 1
    assert deliver(c) is not None
    assert tries == [1, 2, 3]
    assert c.stats.retried == 2 and c.stats.poisoned == 1 and c.stats.processed == 0
    assert c.queue.depth() == 0
    [record] = [json.loads(m.content) for m in c.poison.peek()]
    assert record["schema"] == POISON_SCHEMA and record["queue"] == "work"
    assert record["dequeue_count"] == 3 and record["content"] == '{"region": "francecentral"}'
    assert record["reason"] == "failed 3 times; last error: ConnectionError: mail server refused"


def test_a_bad_message_is_poisoned_at_its_first_delivery_and_the_good_one_behind_it_is_handled():
    clock = Clock()
    handled: list[str] = []

    def handler(message: Message) -> None:
        if message.content == "bad":
            raise BadMessage("message is not valid JSON")
        if message.content == "gone":
            raise PermanentError("report blob 'x.json' is gone")
        handled.append(message.content)

    c = consumer(handler, clock)
    for content in ("bad", "gone", "good"):
        c.queue.send(content)
    while deliver(c) is not None:
        pass
    assert handled == ["good"]
    assert c.stats.poisoned == 2 and c.stats.processed == 1 and c.stats.retried == 0
    reasons = {json.loads(m.content)["content"]: json.loads(m.content) for m in c.poison.peek()}
    assert reasons["bad"]["reason"] == "message is not valid JSON" and reasons["bad"]["dequeue_count"] == 1
    assert reasons["gone"]["reason"] == "report blob 'x.json' is gone"
    assert c.queue.depth() == 0


def test_a_receipt_taken_while_handling_is_counted_and_the_message_is_handled_again():
    clock = Clock()
    taken: list[Message] = []

    def handler(message: Message) -> None:
        if message.dequeue_count == 1:
            clock.now += SETTINGS.visibility_timeout  # the lease ran out: another consumer has it
            other = c.queue.receive(SETTINGS.visibility_timeout)
            assert other is not None
            taken.append(other)

    c = consumer(handler, clock)
    c.queue.send("work")
    assert deliver(c) is not None
    assert c.stats.lost_receipts == 1 and c.stats.processed == 1  # handled; its delete skipped
    assert c.queue.depth() == 1  # not lost: it is the other consumer's now
    clock.now += SETTINGS.visibility_timeout  # the other consumer died too
    again = deliver(c)
    assert again is not None and again.id == taken[0].id and again.dequeue_count == 3
    assert c.queue.depth() == 0 and c.stats.lost_receipts == 1


def test_a_message_delivered_past_max_tries_is_poisoned_without_calling_the_handler():
    clock = Clock()
    called: list[Message] = []
    c = consumer(called.append, clock)
    c.queue.send("crashes the consumer")
    for _ in range(SETTINGS.max_tries):  # each consumer died holding it
        assert c.queue.receive(SETTINGS.visibility_timeout) is not None
        clock.now += SETTINGS.visibility_timeout
    assert deliver(c) is not None
    assert called == [] and c.stats.poisoned == 1
    [record] = [json.loads(m.content) for m in c.poison.peek()]
    assert record["reason"] == (
        "delivered 4 times without completing (the consumer crashed or timed out each time)"
    )
