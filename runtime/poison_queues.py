"""Operator actions on queues: put poisoned messages back, and describe what is poisoned."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from core.errors import BadMessage
from core.layout import poison_name
from core.messages import decode_json_message
from core.ports import Message, Queue


def with_poison(queues: Iterable[str]) -> list[str]:
    """Each queue followed by its `<queue>-poison`, once each, in the given order."""
    out: list[str] = []
    for name in queues:
        for q in (name, poison_name(name)):
            if q not in out:
                out.append(q)
    return out


def poisoned(message: Message) -> dict[str, Any]:
    """A poison record; messages someone put there by hand are shown as they are."""
    try:
        record = json.loads(message.content)
    except (ValueError, RecursionError):  # not JSON, or hostile JSON
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("content"), str):
        return {
            "reason": "not a servicetags poison record",
            "content": message.content,
            "dequeue_count": None,
            "poisoned_at": None,
        }
    if not isinstance(record.get("reason"), str):
        record = {**record, "reason": str(record.get("reason"))}
    return record


def message_region(content: str) -> str | None:
    try:
        doc = decode_json_message(content)
    except BadMessage:
        return None
    region = doc.get("region") if isinstance(doc, dict) else None
    # Any JSON may sit in poison: a list here was unhashable in `requeue --region`'s set test.
    return region.lower() if isinstance(region, str) else None


def requeue(
    poison: Queue,
    target: Queue,
    *,
    keep: Callable[[str], bool] = lambda _: True,
    visibility_timeout: int = 30,
) -> int:
    """Move poisoned messages whose original content `keep` accepts back to `target`.

    Each poisoned message is received once (invisible while this runs), so the loop ends;
    the original is sent before the poison copy is deleted: a crash leaves a duplicate, which
    the consumers tolerate, never a loss. Messages not kept reappear in poison afterwards.
    """
    moved = 0
    seen: set[str] = set()
    while True:
        message = poison.receive(visibility_timeout)
        if message is None or message.id in seen:
            break
        seen.add(message.id)
        original = poisoned(message)["content"]
        if not keep(original):
            continue
        target.send(original)
        poison.delete(message)
        moved += 1
    return moved
