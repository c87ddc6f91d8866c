"""`servicetags local up|down`: background processes, reuse, and nothing left behind."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def servicetags(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servicetags", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in shlex.split(text, posix=True) if "=" in line)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.azurite  # `servicetags local up` starts Azurite
def test_up_prints_the_environment_reuses_a_running_stack_and_down_stops_everything(tmp_path):
    state = tmp_path / "stack"
    first = servicetags("local", "up", "--state-dir", str(state))
    assert first.returncode == 0, first.stderr
    env = parse_env(first.stdout)
    try:
        assert env["SERVICETAGS_ARM_ENDPOINT"].startswith("https://127.0.0.1:")
        assert env["SERVICETAGS_DEV_CREDENTIAL"] == "1"
        assert "AccountName=devstoreaccount1" in env["SERVICETAGS_STORAGE_CONNECTION_STRING"]
        pids = json.loads((state / "stack.json").read_text())["pids"]
        assert sorted(pids) == [
            "arm",
            "azurite",
            "download",
            "impact",
            "relay",
            "relay-impact",
            "relay-runs",
            "smtp",
            "web",
            "webhooks",
        ]
        # The impact step: a second relay of report events and a worker over the bundled rules.
        assert env["SERVICETAGS_LOCAL_RULES"] == str(ROOT / "data" / "rules")
        # The webhook receiver answers on loopback, as the channels' URLs will point at it.
        assert env["SERVICETAGS_LOCAL_WEBHOOKS_URL"].startswith("http://127.0.0.1:")
        assert env["SERVICETAGS_LOCAL_SIGNING_SECRET"].startswith("whsec_")
        with urllib.request.urlopen(env["SERVICETAGS_LOCAL_WEBHOOKS_URL"] + "/_requests", timeout=10) as r:
            assert json.loads(r.read()) == []
        assert all(alive(pid) for pid in pids.values())

        # The printed lines work with `set -a; eval "$(servicetags local up)"`.
        (tmp_path / "env.txt").write_text(first.stdout)
        script = f'set -a; eval "$(cat {tmp_path}/env.txt)"; echo "$SERVICETAGS_RECIPIENTS"'
        shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
        assert shell.stdout.strip() == env["SERVICETAGS_RECIPIENTS"]

        # A worker runs against it, as configured by those lines alone.
        worker_env = {
            **os.environ,
            **env,
            "SERVICETAGS_REGIONS": "francecentral",
            "SERVICETAGS_IDLE_SLEEP": "0",
        }
        produced = subprocess.run(
            [sys.executable, "-m", "producer"],
            cwd=ROOT,
            env=worker_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert produced.returncode == 0, produced.stderr
        worked = subprocess.run(
            [sys.executable, "-m", "worker", "--until-empty"],
            cwd=ROOT,
            env=worker_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert worked.returncode == 0, worked.stderr
        assert '"outcome": "baseline"' in worked.stdout

        # The static website: `servicetags publish` writes $web, the local endpoint serves it.
        published = subprocess.run(
            [sys.executable, "-m", "servicetags.cli", "publish"],
            cwd=ROOT,
            env=worker_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert published.returncode == 0, published.stderr
        site = env["SERVICETAGS_LOCAL_WEB_URL"]
        with urllib.request.urlopen(site + "Public/index.html", timeout=10) as page:
            assert page.headers["Content-Type"].startswith("text/html")
            assert "francecentral" in page.read().decode()

        second = servicetags("local", "up", "--state-dir", str(state))
        assert second.returncode == 0 and parse_env(second.stdout) == env  # reused, not restarted
        assert json.loads((state / "stack.json").read_text())["pids"] == pids
    finally:
        down = servicetags("local", "down", "--state-dir", str(state))
    assert down.returncode == 0
    assert down.stdout.startswith("stopped ")
    assert not any(alive(pid) for pid in pids.values())
    assert servicetags("local", "down", "--state-dir", str(state)).stdout.strip() == "nothing was running"


def test_up_rejects_bad_arguments_in_one_line(tmp_path):
    bad = servicetags("local", "up", "--state-dir", str(tmp_path), "--api-fault-rate", "2")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "servicetags local: --api-fault-rate 2.0 must be between 0 and 1"
    missing = servicetags("local", "up", "--state-dir", str(tmp_path), "--snapshot", str(tmp_path / "x.json"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
