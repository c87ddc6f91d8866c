#!/usr/bin/env python3
"""Bootstrap and run servicetags-watch from a fresh clone.

    python3 dev.py demo     # the local demo on bundled real data
    python3 dev.py test     # the whole test suite (lint first)

Needs only Python >= 3.11, Node >= 20 and npm. It creates `.venv`, installs the
project with its extras, installs the pinned Node tools (Azurite) with `npm ci`,
and re-installs only when `pyproject.toml` or `package-lock.json` change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
EXTRAS = "local,test,tf"


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.read_bytes() if path.exists() else b"")
    return h.hexdigest()


def _run(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True)


def ensure_python_env() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py must explain itself on an old Python
        sys.exit(f"dev.py: Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
    stamp = VENV / ".installed"
    want = _digest(ROOT / "pyproject.toml") + EXTRAS + "compat"
    if stamp.exists() and stamp.read_text() == want:
        return
    if not (BIN / "python").exists():
        print("dev.py: creating .venv", file=sys.stderr)
        venv.create(VENV, with_pip=True)
    print(f"dev.py: installing the project with extras [{EXTRAS}]", file=sys.stderr)
    _run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    # Compat mode puts the tree on sys.path with a .pth file: the default editable finder
    # costs about 15 ms at every start, a tenth of `servicetags diff`'s budget.
    _run(
        BIN / "python",
        "-m",
        "pip",
        "install",
        "--quiet",
        "-e",
        f".[{EXTRAS}]",
        "--config-settings",
        "editable_mode=compat",
    )
    stamp.write_text(want)


def ensure_node_tools() -> None:
    stamp = ROOT / "node_modules" / ".installed"
    want = _digest(ROOT / "package.json", ROOT / "package-lock.json")
    if stamp.exists() and stamp.read_text() == want:
        return
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("dev.py: npm is needed for Azurite (the local storage emulator); install Node 20+")
    print("dev.py: installing Node tools (npm ci)", file=sys.stderr)
    _run(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
    stamp.write_text(want)


def ensure_browser() -> None:
    """Headless Chromium for the web-view tests, from Debian: installed when CI=true, or when
    it is missing and we are root (a CI container). Elsewhere those tests skip without it."""
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return
    ci = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    apt = shutil.which("apt-get")
    if not (ci or root) or apt is None:
        if ci:
            sys.exit("dev.py: CI needs chromium for the web-view tests and apt-get is not available")
        return
    print("dev.py: installing chromium (apt-get) for the web-view tests", file=sys.stderr)
    sudo = [] if root else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([*sudo, apt, "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, apt, "install", "-y", "-qq", "chromium"], check=True, env=env)


def lint(env: dict[str, str]) -> int:
    """ruff (lint, then the format check), then mypy in strict mode (settings and file list
    in pyproject.toml). `.pre-commit-config.yaml` runs the same three."""
    return (
        subprocess.call([BIN / "ruff", "check", "."], cwd=ROOT, env=env)
        or subprocess.call([BIN / "ruff", "format", "--check", "."], cwd=ROOT, env=env)
        or subprocess.call([BIN / "mypy"], cwd=ROOT, env=env)
    )


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "lint", "setup", "diff"}:
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_python_env()
    ensure_node_tools()
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if command == "setup":
        return 0
    if command == "lint":
        return lint(env)
    if command == "test":
        ensure_browser()
        return lint(env) or subprocess.call([BIN / "python", "-m", "pytest", *rest], cwd=ROOT, env=env)
    if command == "diff":
        return subprocess.call([BIN / "servicetags", "diff", *rest], cwd=ROOT, env=env)
    return subprocess.call([BIN / "servicetags", "demo", *rest], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
