"""The local ARM endpoint's injected faults and control state: what it serves to which
location, scripted and random faults, request counts. Shared by its HTTP handler and the
local Resource Graph stand-in."""

from __future__ import annotations

import random
import threading
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.arm_wire import Snapshot

FAULT_KINDS = ("429", "500", "503", "reset", "truncate", "slow", "400")

# The token refused: 401 (not accepted at all) or 403 (valid, but no role for the action).
# Scripted only, never drawn at random: no retry makes them pass.
AUTH_FAULT_KINDS = ("401", "403")

DEFAULT_RETRY_AFTER = 1  # seconds; small so retries in tests stay fast

DEFAULT_SLOW_SECONDS = 2.0


# --------------------------------------------------------------------------------------
# Faults and control state


@dataclass(frozen=True)
class Fault:
    """One injected failure. `arg` is Retry-After seconds (429) or the delay (slow)."""

    kind: str
    arg: float | None = None

    @classmethod
    def parse(cls, text: str) -> Fault:
        """'429', '429:5', 'slow:0.5', 'reset', ... -> Fault; ValueError when unknown."""
        kind, _, arg = str(text).partition(":")
        if kind not in FAULT_KINDS + AUTH_FAULT_KINDS:
            known = ", ".join(FAULT_KINDS + AUTH_FAULT_KINDS)
            raise ValueError(f"unknown fault {text!r}; known kinds: {known}")
        if arg and kind not in {"429", "slow"}:
            raise ValueError(f"fault {kind!r} takes no argument (got {text!r})")
        try:
            value = float(arg) if arg else None
        except ValueError:
            raise ValueError(f"fault argument must be a number: {text!r}") from None
        if value is not None and value < 0:
            raise ValueError(f"fault argument must not be negative: {text!r}")
        return cls(kind, value)

    def __str__(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}:{self.arg:g}"


def location_key(location: str) -> str:
    # ARM treats location names case-insensitively.
    return location.strip().lower()


class EndpointState:
    """What the endpoint serves and which faults it injects; safe to use from any thread."""

    def __init__(
        self,
        snapshot: Path,
        *,
        fault_rate: float = 0.0,
        seed: int | None = None,
        retry_after: int = DEFAULT_RETRY_AFTER,
        slow_seconds: float = DEFAULT_SLOW_SECONDS,
    ) -> None:
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self._lock = threading.Lock()
        self._cache: dict[Path, Snapshot] = {}
        self._default = self._load(snapshot)
        self._overrides: dict[str, Snapshot] = {}
        self._script: deque[tuple[Fault, str | None]] = deque()
        self._always: dict[str, Fault] = {}
        self._fault_rate = 0.0
        self._rng = random.Random(seed)
        self._counts: Counter[str] = Counter()
        self.set_fault_rate(fault_rate, seed)

    def _load(self, path: Path) -> Snapshot:
        # Parsing a full snapshot takes ~0.1 s; cached so switching back and forth is free.
        key = Path(path).resolve()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        snapshot = Snapshot.load(key)
        with self._lock:
            return self._cache.setdefault(key, snapshot)

    def set_snapshot(self, path: Path, locations: list[str] | None = None) -> None:
        """Serve `path` to every location, or only to `locations` (an override)."""
        snapshot = self._load(path)
        with self._lock:
            if locations is None:
                self._default = snapshot
            else:
                for location in locations:
                    self._overrides[location_key(location)] = snapshot

    def clear_location_overrides(self) -> None:
        with self._lock:
            self._overrides.clear()

    def snapshot_for(self, location: str) -> Snapshot:
        with self._lock:
            return self._overrides.get(location_key(location), self._default)

    def add_faults(self, kinds: list[str], location: str | None = None) -> None:
        """Queue faults, each consumed by the next request for `location` (None: any)."""
        faults = [Fault.parse(kind) for kind in kinds]  # validate all before queueing any
        key = None if location is None else location_key(location)
        with self._lock:
            self._script.extend((fault, key) for fault in faults)

    def fail_always(self, location: str, kind: str) -> None:
        fault = Fault.parse(kind)
        with self._lock:
            self._always[location_key(location)] = fault

    def clear_faults(self) -> None:
        """Drop scripted and permanent faults and set the random fault rate to 0."""
        with self._lock:
            self._script.clear()
            self._always.clear()
            self._fault_rate = 0.0

    def set_fault_rate(self, rate: float, seed: int | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be between 0 and 1, got {rate}")
        with self._lock:
            self._fault_rate = rate
            if seed is not None:
                self._rng = random.Random(seed)

    def record_request(self, location: str) -> None:
        with self._lock:
            self._counts[location_key(location)] += 1

    def request_count(self, location: str) -> int:
        with self._lock:
            return self._counts[location_key(location)]

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()

    def next_fault(self, location: str) -> Fault | None:
        """The fault for this request: permanent first, then scripted, then random."""
        key = location_key(location)
        with self._lock:
            if key in self._always:
                return self._always[key]
            for index, (fault, wanted) in enumerate(self._script):
                if wanted is None or wanted == key:
                    del self._script[index]
                    return fault
            if self._fault_rate and self._rng.random() < self._fault_rate:
                return Fault(self._rng.choice(FAULT_KINDS))
        return None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "snapshot": self._default.describe(),
                "overrides": {loc: snap.describe() for loc, snap in self._overrides.items()},
                "requests": dict(self._counts),
                "pending_faults": [{"kind": str(fault), "location": loc} for fault, loc in self._script],
                "fail_always": {loc: str(fault) for loc, fault in self._always.items()},
                "fault_rate": self._fault_rate,
            }
