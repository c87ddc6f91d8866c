"""The local stack as background processes: Azurite, the ARM service-tag endpoint, the
Download Center stand-in, the blob-event relay, the SMTP sink and the static website server
($web), and the impact step (its own relay, the report events' second "subscription", and an
impact worker over the bundled rules in `data/rules/`). What `servicetags local up/down` and
the demo run.

State lives in one directory: `stack.json` (the PIDs started and the environment the
components need), each service's log under `logs/`, Azurite's data, the relay's
delivered-events record and the SMTP outbox. `down` stops exactly the PIDs in `stack.json`.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.errors import ServiceTagsError
from devstack.azurite import start_azurite, stop_process_group

SUBSCRIPTION_ID = "00000000-0000-0000-0000-00000000c0de"
DEFAULT_RECIPIENTS = json.dumps([{"address": "network-team@example.com", "name": "Network team"}])
CONTAINERS = ("snapshots", "reports", "notifications", "runs", "history", "$web", "impact")
QUEUES = (
    "regions",
    "regions-poison",
    "change-events",
    "change-events-poison",
    "run-deadlines",
    "run-deadlines-poison",
    "impact",
    "impact-poison",
)
ROOT = Path(__file__).resolve().parents[1]
# ARM JSON of NSGs, firewall policies, IP Groups, routes, storage and key vault ACLs, made from
# real tag names and prefixes (a copy of tests/fixtures/rules/arm/): what the local impact
# worker matches reports against.
DEFAULT_RULES = ROOT / "data" / "rules"
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


def _spawn(
    name: str, argv: list[str], state_dir: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
            env=env,
        )
    _CHILDREN[process.pid] = process
    return process


def _wait_for_file(
    path: Path, process: subprocess.Popen[bytes], name: str, state_dir: Path, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return dict(json.loads(path.read_text()))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    tail = (state_dir / "logs" / f"{name}.log").read_text(errors="replace")[-1500:]
    raise StackError(f"{name} did not start (see {state_dir / 'logs' / (name + '.log')}):\n{tail}")


def up(
    state_dir: Path,
    *,
    snapshot: Path = DEFAULT_SNAPSHOT,
    fault_rate: float = 0.0,
    event_schema: str = "eventgrid",
    recipients: str = DEFAULT_RECIPIENTS,
    persistent: bool = True,
    outbox: Path | None = None,
    rules: Path | None = DEFAULT_RULES,
) -> dict[str, str]:
    """Start everything and return the environment the components need.

    A stack already running from `state_dir` is reused (its environment is returned); one
    left behind half-dead is stopped first. `rules`: what the impact worker reads (None: no
    impact step).
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
        azurite = start_azurite(
            location=state_dir / "azurite" if persistent else None,
            log_path=state_dir / "logs" / "azurite.log",
        )
        pids["azurite"] = azurite.pid
        handle = getattr(azurite, "_process", None)  # the launcher's own Popen of Azurite
        if handle is not None:
            _CHILDREN[azurite.pid] = handle
        _ensure_resources(azurite.connection_string)

        for stale in ("arm/arm.json", "smtp.json", "webhooks.json", "download/download.json"):
            (state_dir / stale).unlink(missing_ok=True)
        arm = _spawn(
            "arm",
            [
                sys.executable,
                "-m",
                "devstack.arm_endpoint",
                "--snapshot",
                str(snapshot),
                "--state-dir",
                str(state_dir / "arm"),
                "--fault-rate",
                str(fault_rate),
            ],
            state_dir,
        )
        pids["arm"] = arm.pid
        arm_info = _wait_for_file(state_dir / "arm" / "arm.json", arm, "arm", state_dir)

        # The Download Center stand-in, publishing the same file (the `download-center` source).
        download = _spawn(
            "download",
            [
                sys.executable,
                "-m",
                "devstack.download_center",
                "--snapshot",
                str(snapshot),
                "--state-dir",
                str(state_dir / "download"),
            ],
            state_dir,
        )
        pids["download"] = download.pid
        download_info = _wait_for_file(
            state_dir / "download" / "download.json", download, "download", state_dir
        )

        smtp = _spawn(
            "smtp",
            [
                sys.executable,
                "-m",
                "devstack.smtp_sink",
                "--outbox",
                str(outbox or state_dir / "outbox"),
                "--state-file",
                str(state_dir / "smtp.json"),
            ],
            state_dir,
        )
        pids["smtp"] = smtp.pid
        smtp_info = _wait_for_file(state_dir / "smtp.json", smtp, "smtp", state_dir)

        relay = _spawn(
            "relay",
            [
                sys.executable,
                "-m",
                "devstack.relay",
                "--connection-string",
                azurite.connection_string,
                "--container",
                "reports",
                "--queue",
                "change-events",
                "--schema",
                event_schema,
                "--interval",
                "0.2",
                "--state-dir",
                str(state_dir / "relay"),
            ],
            state_dir,
        )
        pids["relay"] = relay.pid
        # A run's complete marker raises an event too: it is what closes the run's digest.
        runs_relay = _spawn(
            "relay-runs",
            [
                sys.executable,
                "-m",
                "devstack.runs_relay",
                "--connection-string",
                azurite.connection_string,
                "--container",
                "runs",
                "--queue",
                "change-events",
                "--schema",
                event_schema,
                "--interval",
                "0.2",
                "--state-dir",
                str(state_dir / "relay-runs"),
            ],
            state_dir,
        )
        pids["relay-runs"] = runs_relay.pid
        relays = [("relay", relay), ("relay-runs", runs_relay)]
        if rules is not None:
            for name, process in _impact_step(state_dir, azurite.connection_string, event_schema, rules):
                pids[name] = process.pid
                relays.append((name, process))
        signing_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        receiver = _spawn(
            "webhooks",
            [
                sys.executable,
                "-m",
                "devstack.webhook_receiver",
                "--outbox",
                str(outbox or state_dir / "outbox"),
                "--state-file",
                str(state_dir / "webhooks.json"),
            ],
            state_dir,
            env={**os.environ, "WEBHOOK_RECEIVER_SECRETS": signing_secret},
        )
        pids["webhooks"] = receiver.pid
        webhooks_info = _wait_for_file(state_dir / "webhooks.json", receiver, "webhooks", state_dir)
        time.sleep(0.3)
        for name, process in relays:
            if process.poll() is not None:
                tail = (state_dir / "logs" / f"{name}.log").read_text(errors="replace")[-1500:]
                raise StackError(f"{name} did not start:\n{tail}")
        (state_dir / "web.json").unlink(missing_ok=True)
        web = _spawn(
            "web",
            [
                sys.executable,
                "-m",
                "devstack.web_server",
                "--connection-string",
                azurite.connection_string,
                "--container",
                "$web",
                "--state-file",
                str(state_dir / "web.json"),
            ],
            state_dir,
        )
        pids["web"] = web.pid
        web_info = _wait_for_file(state_dir / "web.json", web, "web", state_dir)
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
        # The static website ($web), served from Azurite by devstack/web_server.py.
        "SERVICETAGS_LOCAL_WEB_URL": web_info["url"],
        # The local webhook receiver: channels point at <url>/teams/<name> (or slack, webhook);
        # signed webhooks use this dev secret (a local value, like Azurite's key).
        "SERVICETAGS_LOCAL_WEBHOOKS_URL": webhooks_info["url"],
        "SERVICETAGS_LOCAL_SIGNING_SECRET": signing_secret,
        # What the local impact worker matches reports against (`none`: no impact step).
        "SERVICETAGS_LOCAL_RULES": str(rules) if rules is not None else "none",
        # Without the impact step, messages carry no impact section (not "not yet computed").
        **({"SERVICETAGS_IMPACT_CONTAINER": "none"} if rules is None else {}),
    }
    (state_dir / "stack.json").write_text(json.dumps({"pids": pids, "env": env}, indent=1))
    return env


def _impact_step(
    state_dir: Path, connection_string: str, event_schema: str, rules: Path
) -> list[tuple[str, subprocess.Popen[bytes]]]:
    """The impact step's own "Event Grid subscription" on the same report events (a second
    relay) and its worker over `rules`: a report never waits for it (docs/architecture.md)."""
    relay = _spawn(
        "relay-impact",
        [
            sys.executable,
            "-m",
            "devstack.relay",
            "--connection-string",
            connection_string,
            "--container",
            "reports",
            "--queue",
            "impact",
            "--schema",
            event_schema,
            "--interval",
            "0.2",
            "--state-dir",
            str(state_dir / "relay-impact"),
        ],
        state_dir,
    )
    env = {
        **os.environ,
        "SERVICETAGS_STORAGE_CONNECTION_STRING": connection_string,
        "SERVICETAGS_RULES_SOURCE": "file",
        "SERVICETAGS_RULES_PATH": str(rules),
        "SERVICETAGS_IMPACT_QUEUE": "impact",
        "SERVICETAGS_IMPACT_CONTAINER": "impact",
        "SERVICETAGS_IDLE_SLEEP": "1",
        "SERVICETAGS_RETRY_DELAY": "1",
    }
    worker = _spawn("impact", [sys.executable, "-m", "impact"], state_dir, env=env)
    return [("relay-impact", relay), ("impact", worker)]


def _ensure_resources(connection_string: str) -> None:
    from runtime.adapters.storage import StorageClients, StorageSettings
    from runtime.config import Env

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


def restart_azurite(state_dir: Path, *, pause: float = 0.0) -> None:
    """Stop the stack's Azurite and start it again on the same ports and data directory, as
    a storage restart (chaos tests). Needs a persistent stack: in-memory data would be lost."""
    from devstack.azurite import ACCOUNT_NAME

    state_dir = state_dir.resolve()
    state = read_state(state_dir)
    if state is None:
        raise StackError(f"no stack in {state_dir}")
    location = state_dir / "azurite"
    if not location.is_dir():
        raise StackError("restarting Azurite needs a persistent stack (its data would be lost)")
    connection = state["env"]["SERVICETAGS_STORAGE_CONNECTION_STRING"]
    ports = {
        kind: int(connection.split(f"{kind}Endpoint=http://")[1].split(":")[1].split("/")[0])
        for kind in ("Blob", "Queue")
    }
    assert connection.count(ACCOUNT_NAME) >= 2  # the dev account, on explicit endpoints
    pid = state["pids"]["azurite"]
    stop_process_group(pid, timeout=10)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=5)
    time.sleep(pause)
    azurite = start_azurite(
        location=location,
        blob_port=ports["Blob"],
        queue_port=ports["Queue"],
        log_path=state_dir / "logs" / "azurite.log",
    )
    handle = getattr(azurite, "_process", None)
    if handle is not None:
        _CHILDREN[azurite.pid] = handle
    state["pids"]["azurite"] = azurite.pid
    (state_dir / "stack.json").write_text(json.dumps(state, indent=1))
