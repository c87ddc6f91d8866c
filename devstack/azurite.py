"""Start and stop Azurite (blob + queue storage emulator) as one plain process.

Azurite is started from `node_modules/.bin/azurite` directly, never through `npx`: killing
an npx parent leaves the `node` child listening. The process gets its own session (so its
process group id is its pid) and stopping it signals the whole group, so nothing it might
spawn outlives it.

Ports: by default Azurite binds port 0 for every service and we read the ports it got from
its own "successfully listening at" lines. That has no race with other processes, unlike
picking a free port first and passing it in.

The `azurite` binary also starts the Table service; we do not use it, but one process for
all services is simpler to own than three.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from devstack.tcp_ports import LOOPBACK, port_is_open

# The published development account of the storage emulators; not a secret.
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

# --skipApiVersionCheck: the storage SDKs send a newer x-ms-version than Azurite 3.35 knows.
# --disableTelemetry: otherwise Azurite tries to reach an outside host.
# --loose: ignore headers and parameters Azurite does not implement instead of failing.
AZURITE_FLAGS = ("--skipApiVersionCheck", "--disableTelemetry", "--loose")

_LISTENING = re.compile(
    r"Azurite (?P<service>Blob|Queue|Table) service is successfully listening at "
    r"https?://[^\s]+:(?P<port>\d+)"
)
_SETUP_HINT = "run `python3 dev.py setup` (it runs `npm ci`) in the project root"


class AzuriteError(RuntimeError):
    """Azurite could not be started or stopped."""


class AzuriteNotInstalledError(AzuriteError):
    """node_modules has no Azurite: the Node tools were never installed."""


def project_root() -> Path:
    """The project root: the parent of the `devstack/` package."""
    return Path(__file__).resolve().parents[1]


def azurite_binary(root: Path | None = None) -> Path:
    """Path of `node_modules/.bin/azurite`, or a clear error saying how to install it."""
    root = root or project_root()
    binary = root / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        raise AzuriteNotInstalledError(f"Azurite is not installed at {binary}: {_SETUP_HINT}")
    if shutil.which("node") is None:
        raise AzuriteNotInstalledError("Azurite needs Node.js 20 or newer on PATH (`node`)")
    return binary


@dataclass(frozen=True)
class Azurite:
    """A running Azurite process and how to reach it."""

    pid: int
    host: str
    blob_port: int
    queue_port: int
    table_port: int | None
    location: Path | None
    log_path: Path
    # Only the process that started Azurite holds these; stop() needs them to reap the
    # child and remove the scratch directory. Another process can stop it by pid alone.
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    _scratch: Path | None = field(default=None, repr=False, compare=False)

    @property
    def blob_endpoint(self) -> str:
        return f"http://{self.host}:{self.blob_port}/{ACCOUNT_NAME}"

    @property
    def queue_endpoint(self) -> str:
        return f"http://{self.host}:{self.queue_port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        """Storage connection string with explicit endpoints (the ports are not the defaults)."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};QueueEndpoint={self.queue_endpoint};"
        )

    def is_running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return _group_alive(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate Azurite's process group, kill it after `timeout` seconds. Idempotent."""
        try:
            if self._process is not None:
                _stop_child(self._process, timeout)
            else:
                stop_process_group(self.pid, timeout)
        finally:
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_azurite(
    *,
    location: Path | None = None,
    host: str = LOOPBACK,
    blob_port: int = 0,
    queue_port: int = 0,
    table_port: int = 0,
    log_path: Path | None = None,
    timeout: float = 30.0,
    root: Path | None = None,
) -> Azurite:
    """Start Azurite and return once its blob and queue services answer.

    location: keep data in this directory (survives a restart); None keeps it in memory.
    log_path: where Azurite's output goes; by default a scratch file removed by stop().
    Raises AzuriteError with the tail of Azurite's output if it exits or does not answer
    within `timeout` seconds.
    """
    binary = azurite_binary(root)
    scratch = Path(tempfile.mkdtemp(prefix="azurite-"))
    log_path = log_path or scratch / "azurite.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Azurite refuses --inMemoryPersistence together with --location: exactly one of them.
    if location is not None:
        location.mkdir(parents=True, exist_ok=True)
        storage_flags = ["--location", str(location)]
    else:
        storage_flags = ["--inMemoryPersistence"]
    command = [
        str(binary),
        *("--blobHost", host, "--queueHost", host, "--tableHost", host),
        *("--blobPort", str(blob_port), "--queuePort", str(queue_port)),
        *("--tablePort", str(table_port)),
        *storage_flags,
        *AZURITE_FLAGS,
    ]
    # AZURITE_ACCOUNTS would replace the well-known account our connection string uses.
    env = {k: v for k, v in os.environ.items() if k != "AZURITE_ACCOUNTS"}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=location or scratch,  # anything Azurite writes by default lands here
            env=env,
            start_new_session=True,  # own process group: stop() signals all of it
        )
    try:
        ports = _wait_until_listening(process, host, log_path, timeout)
    except BaseException:
        _stop_child(process, timeout=5.0)
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Azurite(
        pid=process.pid,
        host=host,
        blob_port=ports["Blob"],
        queue_port=ports["Queue"],
        table_port=ports.get("Table"),
        location=location,
        log_path=log_path,
        _process=process,
        _scratch=scratch,
    )


def stop_process_group(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by `pid`, SIGKILL it if still alive after `timeout`.

    Works for groups started by another process (an orphaned group is reaped by init) and
    for this process's own children, which are reaped here: a dead child not yet reaped is a
    zombie, and a zombie still answers `killpg(pgid, 0)`.
    """
    if not _signal_group(pid, signal.SIGTERM):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not _group_alive(pid):
            return
        time.sleep(0.05)
    _signal_group(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child: init reaps it
        os.waitpid(pid, os.WNOHANG)


def log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def _wait_until_listening(
    process: subprocess.Popen[bytes], host: str, log_path: Path, timeout: float
) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AzuriteError(
                f"Azurite exited with code {process.returncode} before it was ready; "
                f"its output ends with:\n{log_tail(log_path)}"
            )
        ports = _listening_ports(log_path)
        if {"Blob", "Queue"} <= ports.keys() and _answers(host, ports["Blob"], ports["Queue"]):
            return ports
        if time.monotonic() > deadline:
            raise AzuriteError(
                f"Azurite did not answer on blob and queue within {timeout:.0f} s; "
                f"its output ends with:\n{log_tail(log_path)}"
            )
        time.sleep(0.05)


def _listening_ports(log_path: Path) -> dict[str, int]:
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    return {m["service"]: int(m["port"]) for m in _LISTENING.finditer(text)}


def _answers(host: str, blob_port: int, queue_port: int) -> bool:
    """Both ports accept connections and the blob service answers HTTP (any status)."""
    if not (port_is_open(host, blob_port) and port_is_open(host, queue_port)):
        return False
    connection = http.client.HTTPConnection(host, blob_port, timeout=2.0)
    try:
        connection.request("GET", f"/{ACCOUNT_NAME}?comp=list")
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return True


def _stop_child(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Stop a child we started: TERM the group, KILL after timeout, always reap it."""
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
    # The leader is gone; make sure nothing else in its group survives it.
    _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send `sig` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Our group id was reused by someone else's process: not ours to signal.
        return False
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
