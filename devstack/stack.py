"""The local stack as background processes: Azurite, the ARM service-tag endpoint, the
Download Center stand-in, the blob-event relay and the SMTP sink. What `servicetags local
up/down` and the demo run.

State lives in one directory: `stack.json` (the PIDs started and the environment the
components need), each service's log under `logs/`, Azurite's data, the relay's
delivered-events record and the SMTP outbox. `down` stops exactly the PIDs in `stack.json`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common.errors import ServiceTagsError
from devstack.azurite import start_azurite, stop_process_group

SUBSCRIPTION_ID = "00000000-0000-0000-0000-00000000c0de"
DEFAULT_RECIPIENTS = json.dumps([{"address": "network-team@example.com", "name": "Network team"}])
CONTAINERS = ("snapshots", "reports", "notifications")
QUEUES = ("regions", "regions-poison", "change-events", "change-events-poison")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SNAPSHOT = ROOT / "data" / "snapshots" / "ServiceTags_Public_2025-01-12_cn340.json.gz"


class StackError(ServiceTagsError):
    """The local stack could not be started or stopped."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / "stack.json"
    if not path.exists():
        return None
    return dict(json.loads(path.read_text()))


def running(state_dir: Path) -> dict[str, Any] | None:
    """The stack's state if all of its processes are alive."""
    state = read_state(state_dir)
    if state and all(_alive(pid) for pid in state["pids"].values()):
        return state
    return None


# Handles of the services this process started: a dropped Popen of a running child warns, and
# `down` in the same process (the demo, tests) reaps through them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _spawn(name: str, argv: list[str], state_dir: Path) -> subprocess.Popen[bytes]:
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   cwd=ROOT, start_new_session=True)
    _CHILDREN[process.pid] = process
    return process


def _wait_for_file(path: Path, process: subprocess.Popen[bytes], name: str, state_dir: Path,
                   timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return dict(json.loads(path.read_text()))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    tail = (state_dir / "logs" / f"{name}.log").read_text(errors="replace")[-1500:]
    raise StackError(f"{name} did not start (see {state_dir / 'logs' / (name + '.log')}):\n{tail}")


def up(state_dir: Path, *, snapshot: Path = DEFAULT_SNAPSHOT, fault_rate: float = 0.0,
       event_schema: str = "eventgrid", recipients: str = DEFAULT_RECIPIENTS,
       persistent: bool = True, outbox: Path | None = None) -> dict[str, str]:
    """Start everything and return the environment the components need.

    A stack already running from `state_dir` is reused (its environment is returned); one
    left behind half-dead is stopped first.
    """
    state_dir = state_dir.resolve()
    existing = running(state_dir)
    if existing is not None:
        return dict(existing["env"])
    if read_state(state_dir) is not None:
        down(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    pids: dict[str, int] = {}
    try:
        azurite = start_azurite(location=state_dir / "azurite" if persistent else None,
                                log_path=state_dir / "logs" / "azurite.log")
        pids["azurite"] = azurite.pid
        handle = getattr(azurite, "_process", None)  # the launcher's own Popen of Azurite
        if handle is not None:
            _CHILDREN[azurite.pid] = handle
        _ensure_resources(azurite.connection_string)

        for stale in ("arm/arm.json", "smtp.json", "download/download.json"):
            (state_dir / stale).unlink(missing_ok=True)
        arm = _spawn("arm", [sys.executable, "-m", "devstack.arm_endpoint", "--snapshot", str(snapshot),
                             "--state-dir", str(state_dir / "arm"), "--fault-rate", str(fault_rate)],
                     state_dir)
        pids["arm"] = arm.pid
        arm_info = _wait_for_file(state_dir / "arm" / "arm.json", arm, "arm", state_dir)

        # The Download Center stand-in, publishing the same file (the `download-center` source).
        download = _spawn("download", [sys.executable, "-m", "devstack.download_center", "--snapshot",
                                       str(snapshot), "--state-dir", str(state_dir / "download")], state_dir)
        pids["download"] = download.pid
        download_info = _wait_for_file(state_dir / "download" / "download.json", download, "download",
                                       state_dir)

        smtp = _spawn("smtp", [sys.executable, "-m", "devstack.smtp_sink", "--outbox",
                               str(outbox or state_dir / "outbox"),
                               "--state-file", str(state_dir / "smtp.json")],
                      state_dir)
        pids["smtp"] = smtp.pid
        smtp_info = _wait_for_file(state_dir / "smtp.json", smtp, "smtp", state_dir)

        relay = _spawn("relay", [sys.executable, "-m", "devstack.relay", "--connection-string",
                                 azurite.connection_string, "--container", "reports",
                                 "--queue", "change-events", "--schema", event_schema,
                                 "--interval", "0.2", "--state-dir", str(state_dir / "relay")], state_dir)
        pids["relay"] = relay.pid
        time.sleep(0.3)
        if relay.poll() is not None:
            tail = (state_dir / "logs" / "relay.log").read_text(errors="replace")[-1500:]
            raise StackError(f"relay did not start:\n{tail}")
    except BaseException:
        for pid in pids.values():
            stop_process_group(pid, timeout=5)
        raise

    env = {
        "SERVICETAGS_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION_ID,
        "SERVICETAGS_ARM_ENDPOINT": arm_info["url"],
        "SERVICETAGS_ARM_CA_BUNDLE": arm_info["ca_path"],
        "SERVICETAGS_DEV_CREDENTIAL": "1",
        "SERVICETAGS_DOWNLOAD_CENTER_URL": download_info["url"],
        "SERVICETAGS_DOWNLOAD_FILES_URL": download_info["url"],
        "SERVICETAGS_MAIL_BACKEND": "smtp",
        "SERVICETAGS_SMTP_HOST": smtp_info["host"],
        "SERVICETAGS_SMTP_PORT": str(smtp_info["port"]),
        "SERVICETAGS_MAIL_FROM": "servicetags-watch@localhost",
        "SERVICETAGS_RECIPIENTS": recipients,
        "SERVICETAGS_LOCAL_STATE_DIR": str(state_dir),
        "SERVICETAGS_LOCAL_OUTBOX": smtp_info["outbox"],
    }
    (state_dir / "stack.json").write_text(json.dumps({"pids": pids, "env": env}, indent=1))
    return env


def _ensure_resources(connection_string: str) -> None:
    from common.adapters.storage import StorageClients, StorageSettings
    from common.config import Env

    settings = StorageSettings.from_env(Env({"SERVICETAGS_STORAGE_CONNECTION_STRING": connection_string}))
    StorageClients(settings).ensure(list(CONTAINERS), list(QUEUES))


def down(state_dir: Path) -> list[str]:
    """Stop what `up` started from this directory; the names of what was stopped."""
    state = read_state(state_dir.resolve())
    if state is None:
        return []
    stopped = []
    # Reverse start order: the relay first, Azurite last (a relay polling a stopped Azurite sits
    # in the storage SDK's retry backoff and answers SIGTERM only after it).
    for name, pid in reversed(state["pids"].items()):
        if _alive(pid):
            stop_process_group(pid, timeout=10)
            stopped.append(name)
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            child.wait(timeout=5)
    (state_dir / "stack.json").unlink(missing_ok=True)
    return stopped
