"""Driving a local ARM endpoint: what tests and the local stack can do to it, in this process
(`ArmEndpoint`) or in another one through its `/_admin/` routes (`ArmAdminClient`)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from devstack.arm_faults import location_key

STATE_FILE = "arm.json"


# --------------------------------------------------------------------------------------
# Controls


class ArmEndpointAdmin(Protocol):
    """What tests and the local stack can do to a running endpoint, in or out of process."""

    url: str
    ca_path: Path

    def set_snapshot(self, path: Path, locations: list[str] | None = None) -> None: ...
    def clear_location_overrides(self) -> None: ...
    def add_faults(self, kinds: list[str], location: str | None = None) -> None: ...
    def fail_always(self, location: str, kind: str) -> None: ...
    def clear_faults(self) -> None: ...
    def set_fault_rate(self, rate: float, seed: int | None = None) -> None: ...
    def request_count(self, location: str) -> int: ...
    def reset_counts(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class ArmAdminClient:
    """Drives an endpoint running in another process through its `/_admin/` routes."""

    def __init__(self, url: str, ca_path: Path | str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.ca_path = Path(ca_path)
        self.timeout = timeout
        self._context = ssl.create_default_context(cafile=str(self.ca_path))

    @classmethod
    def from_state_dir(cls, state_dir: Path) -> ArmAdminClient:
        info = json.loads((state_dir / STATE_FILE).read_text())
        return cls(info["url"], info["ca_path"])

    def _call(self, method: str, route: str, payload: dict[str, Any] | None = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}/_admin/{route}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=self._context, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise RuntimeError(f"admin {method} {route} failed: {error.code} {detail}") from None

    def set_snapshot(self, path: Path, locations: list[str] | None = None) -> None:
        self._call("POST", "snapshot", {"path": str(Path(path).resolve()), "locations": locations})

    def clear_location_overrides(self) -> None:
        self._call("POST", "overrides/clear", {})

    def add_faults(self, kinds: list[str], location: str | None = None) -> None:
        self._call("POST", "faults", {"kinds": list(kinds), "location": location})

    def fail_always(self, location: str, kind: str) -> None:
        self._call("POST", "fail-always", {"location": location, "kind": kind})

    def clear_faults(self) -> None:
        self._call("POST", "faults/clear", {})

    def set_fault_rate(self, rate: float, seed: int | None = None) -> None:
        self._call("POST", "fault-rate", {"rate": rate, "seed": seed})

    def request_count(self, location: str) -> int:
        return int(self.stats()["requests"].get(location_key(location), 0))

    def reset_counts(self) -> None:
        self._call("POST", "counts/reset", {})

    def stats(self) -> dict[str, Any]:
        return dict(self._call("GET", "stats"))
