"""`servicetags doctor --local` against the stack `servicetags local up` starts: every check
passes on a stack that has run once, and each breakage is named exactly (the one FAIL line,
what is missing and the fix), with nothing else failing."""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from devstack.arm_admin import ArmAdminClient
from tests.conftest import ROOT
from tests.integration.image_env import build_image_env

pytestmark = pytest.mark.integration


def servicetags(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servicetags", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


class Stack:
    def __init__(self, state: Path, env: dict[str, str]) -> None:
        self.state, self.env = state, env
        conn = env["SERVICETAGS_STORAGE_CONNECTION_STRING"]
        self.blobs = BlobServiceClient.from_connection_string(conn)
        self.queues = QueueServiceClient.from_connection_string(conn)
        self.arm = ArmAdminClient.from_state_dir(state / "arm")

    def doctor(self, executable: Path | None = None, **settings: str) -> tuple[int, list[str]]:
        # Only what the user's shell would hold: the stack's own values come from --state-dir.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SERVICETAGS_", "AZURE_")) and k not in {"PYTHONPATH", "VIRTUAL_ENV"}
        }
        env["SERVICETAGS_REGIONS"] = "westeurope"
        env.update(settings)
        args = ["doctor", "--local", "--state-dir", str(self.state)]
        if executable is None:
            result = servicetags(*args, env=env)
        else:  # the image's environment, run from outside the source tree
            result = subprocess.run(
                [str(executable), *args],
                cwd=self.state,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                env=env,
            )
        assert not result.stderr.strip(), result.stderr
        return result.returncode, result.stdout.splitlines()


def _decoded(content: str) -> bytes:
    try:
        return base64.b64decode(content, validate=True)
    except ValueError:
        return content.encode()


def _failures(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("FAIL")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("doctor") / "stack"
    up = servicetags("local", "up", "--state-dir", str(state))
    assert up.returncode == 0, up.stderr
    env = dict(line.split("=", 1) for line in shlex.split(up.stdout) if "=" in line)
    try:
        # One real run, so the freshness check has regions to judge.
        run_env = {**os.environ, **env, "SERVICETAGS_REGIONS": "westeurope", "SERVICETAGS_IDLE_SLEEP": "0"}
        for argv in (["producer"], ["worker", "--until-empty"]):
            done = subprocess.run(
                [sys.executable, "-m", *argv],
                cwd=ROOT,
                env=run_env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stderr
        yield Stack(state, env)
    finally:
        servicetags("local", "down", "--state-dir", str(state))


def test_doctor_passes_against_a_stack_that_has_run(stack: Stack) -> None:
    code, lines = stack.doctor()
    assert code == 0, "\n".join(lines)
    assert lines[-1] == "26 checks, all OK"
    assert any(line.startswith("OK   notifier: container impact: read") for line in lines), lines
    assert "OK   worker: read service tags (Public, westeurope): one GET, 2647 tags" in lines
    assert "OK   regions: checked recently: 2 regions within 30 h" in lines
    assert any(line.startswith("OK   notifier: mail sender (SMTP 127.0.0.1:") for line in lines)
    assert (
        "OK   events: blob-event relay (local Event Grid): BlobCreated in 'reports' -> queue 'change-events'"
    ) in lines
    # The probes left nothing behind: no message visible, no blob written.
    for name in ("regions", "regions-poison", "change-events", "change-events-poison"):
        left = stack.queues.get_queue_client(name).peek_messages(max_messages=32)
        # The run's own complete-marker event (its digest's trigger) is the pipeline's, not a probe's.
        left = [m for m in left if b"complete.json" not in _decoded(m.content)]
        assert left == [], name
    for name in ("snapshots", "reports", "notifications"):
        container = stack.blobs.get_container_client(name)
        assert [b.name for b in container.list_blobs(name_starts_with="doctor/")] == [], name


def test_doctor_passes_from_the_image_environment(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The image's contents (tests/integration/image_env.py) hold everything doctor needs."""
    image = build_image_env(tmp_path_factory.getbasetemp() / "image-env")
    code, lines = stack.doctor(image.servicetags)
    assert code == 0, "\n".join(lines)
    assert lines[-1] == "26 checks, all OK"


def test_a_deleted_queue_is_named_with_the_fix(stack: Stack) -> None:
    stack.queues.delete_queue("regions-poison")
    try:
        code, lines = stack.doctor()
    finally:
        stack.queues.create_queue("regions-poison")
    fix = (
        "queue 'regions-poison' does not exist (QueueNotFound); fix: restart the stack so it is created "
        "again: servicetags local down; servicetags local up"
    )
    assert code == 1
    assert _failures(lines) == [
        f"FAIL worker: queue regions-poison: {action}: {fix}" for action in ("send", "receive", "delete")
    ]


def test_a_deleted_container_is_named_with_the_fix(stack: Stack) -> None:
    stack.blobs.delete_container("notifications")
    try:
        code, lines = stack.doctor()
    finally:
        stack.blobs.create_container("notifications")
    fix = (
        "container 'notifications' does not exist (ContainerNotFound); fix: restart the stack so it is "
        "created again: servicetags local down; servicetags local up"
    )
    assert code == 1
    assert _failures(lines) == [
        f"FAIL notifier: container notifications: {action}: {fix}" for action in ("read", "create")
    ]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (
            "403",
            "the worker identity lacks servicetags-watch service tag reader "
            "(Microsoft.Network/locations/serviceTags/read) on "
            "/subscriptions/00000000-0000-0000-0000-00000000c0de "
            "(AuthorizationFailed); fix: terraform apply (terraform/identity.tf, worker_service_tag_reader)",
        ),
        (
            "401",
            "ARM refused the worker's token (InvalidAuthenticationToken); fix: the token must come from the "
            "worker's managed identity in the deployment's tenant and cloud (SERVICETAGS_CLOUD, "
            "SERVICETAGS_WORKER_CLIENT_ID)",
        ),
    ],
)
def test_the_arm_endpoint_refusing_the_token_is_named(stack: Stack, fault: str, expected: str) -> None:
    stack.arm.fail_always("westeurope", fault)
    try:
        code, lines = stack.doctor()
    finally:
        stack.arm.clear_faults()
    assert code == 1
    assert _failures(lines) == [f"FAIL worker: read service tags (Public, westeurope): {expected}"]


def test_a_worker_observing_the_download_center_gets_that_source_checked_too(stack: Stack) -> None:
    code, lines = stack.doctor(SERVICETAGS_OBSERVED_SOURCE="download-center")
    assert code == 0, lines
    [page] = [x for x in lines if "Download Center" in x]
    # The local stand-in publishes the stack's snapshot under Microsoft's file name.
    assert re.fullmatch(
        r"OK +worker: read the Download Center page \(Public\): one GET, the page links "
        r"ServiceTags_Public_\d{8}\.json",
        page,
    ), page
    assert any(x.startswith("OK") and "read service tags (Public, westeurope)" in x for x in lines)


def test_the_mail_server_down_is_named_last(stack: Stack) -> None:
    """Last in the module: the SMTP sink is not started again."""
    pid = json.loads((stack.state / "stack.json").read_text())["pids"]["smtp"]
    os.killpg(pid, signal.SIGTERM)
    for _ in range(200):  # the sink exits (and its port closes) within a moment
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    code, lines = stack.doctor()
    assert code == 1
    port = stack.env["SERVICETAGS_SMTP_PORT"]
    assert _failures(lines) == [
        f"FAIL notifier: mail sender (SMTP 127.0.0.1:{port}): cannot reach the SMTP server (Connection "
        "refused); fix: start it, or set SERVICETAGS_SMTP_HOST / SERVICETAGS_SMTP_PORT (local: servicetags "
        "local up)"
    ]


def test_doctor_without_a_running_stack_says_how_to_start_one(tmp_path: Path) -> None:
    result = servicetags("doctor", "--local", "--state-dir", str(tmp_path / "none"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "servicetags doctor: no local stack is running from "
        f"{tmp_path / 'none'}; start it with `servicetags local up`"
    )
