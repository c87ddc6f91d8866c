"""Headless Chromium for page tests: found, or installed from Debian when CI needs it.

Idempotent: `apt-get install -y chromium` is run only when no browser is found, and only
under CI=true (or as root with SERVICETAGS_INSTALL_CHROMIUM=1); otherwise the test is skipped,
which is allowed outside CI only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _find() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium() -> str:
    found = _find()
    if found:
        return found
    in_ci = os.environ.get("CI", "").lower() == "true"
    if in_ci or os.environ.get("SERVICETAGS_INSTALL_CHROMIUM") == "1":
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "update", "-q"], check=True, env=env, capture_output=True)
        subprocess.run(
            [*sudo, "apt-get", "install", "-y", "-q", "chromium"], check=True, env=env, capture_output=True
        )
        found = _find()
        if found:
            return found
        pytest.fail("apt-get installed chromium but no chromium binary is on PATH")
    pytest.skip("no chromium (Debian package `chromium`); CI installs it")


def dump_dom(page: Path, *, timeout: float = 90) -> str:
    """The page's DOM after its scripts ran, from a fresh headless Chromium profile."""
    with tempfile.TemporaryDirectory(prefix="servicetags-chromium-") as profile:
        result = subprocess.run(
            [
                chromium(),
                *FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=5000",
                "--dump-dom",
                page.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout
