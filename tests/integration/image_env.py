"""The production image's Python environment, built without a container engine.

The same steps as the Dockerfile's builder stage, in a fresh virtual environment:

    python -m venv --without-pip VENV
    pip --python VENV install --no-deps --only-binary=:all: -r docker/requirements.lock
    pip wheel --no-deps .            # the project's own wheel, with its build backend
    pip --python VENV install --no-deps <that wheel>
    pip --python VENV check

Wheels come from a local cache (SERVICETAGS_WHEEL_CACHE, default ~/.cache/servicetags-watch/
wheels) filled from the package index only with what it lacks, so a warm run installs offline.
The environment is built once per test process, whichever test asks first.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from functools import cache
from pathlib import Path
from typing import NamedTuple

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "docker" / "requirements.lock"
# What the Dockerfile's builder stage copies in before `pip wheel .` (held to it by a test).
PACKAGES = ("core", "runtime", "producer", "worker", "notifier", "devstack", "servicetags", "impact", "web")
# What [build-system].requires allows, fetched into the cache so the isolated build is offline.
BUILD_REQUIREMENT = "setuptools>=77,<85"


class ImageEnv(NamedTuple):
    venv: Path
    python: Path
    servicetags: Path
    check: subprocess.CompletedProcess[str]  # `pip check` of the finished environment


def wheel_cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    default = base / "servicetags-watch" / "wheels"
    path = Path(os.environ.get("SERVICETAGS_WHEEL_CACHE") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def lock_pins(text: str) -> dict[str, str]:
    pins = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def _cached(cache_dir: Path) -> set[tuple[str, str]]:
    found = set()
    for wheel in cache_dir.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        found.add((canonicalize_name(name), version))
    return found


def pip(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_REQUIRE")}
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def fill_cache(cache_dir: Path) -> None:
    pins = lock_pins(LOCK.read_text())
    have = _cached(cache_dir)
    missing = [f"{n}=={v}" for n, v in pins.items() if (n, v) not in have]
    if missing:
        done = pip("download", "--only-binary=:all:", "--no-deps", "--dest", str(cache_dir), *missing)
        assert done.returncode == 0, done.stderr[-3000:]
    if not any(canonicalize_name(w.name.split("-")[0]) == "setuptools" for w in cache_dir.glob("*.whl")):
        done = pip(
            "download", "--only-binary=:all:", "--no-deps", "--dest", str(cache_dir), BUILD_REQUIREMENT
        )
        assert done.returncode == 0, done.stderr[-3000:]


def make_venv(path: Path) -> Path:
    """A venv with no pip of its own, as the Dockerfile makes it; its python."""
    venv.EnvBuilder(with_pip=False, clear=True, symlinks=True).create(path)
    return path / "bin" / "python"


@cache
def build_image_env(base: Path) -> ImageEnv:
    cache_dir = wheel_cache()
    fill_cache(cache_dir)
    python = make_venv(base / "venv")
    offline = ["--no-index", "--find-links", str(cache_dir)]
    done = pip(
        "--python",
        str(python),
        "install",
        "--no-deps",
        "--only-binary=:all:",
        *offline,
        "--requirement",
        str(LOCK),
    )
    assert done.returncode == 0, done.stderr[-3000:]

    # The wheel from a copy of what the Dockerfile copies in, so no build output lands in the tree.
    source = base / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = base / "wheels"
    done = pip("wheel", "--no-deps", *offline, "--wheel-dir", str(wheels), str(source))
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = wheels.glob("servicetags_watch-*.whl")
    done = pip("--python", str(python), "install", "--no-deps", *offline, str(wheel))
    assert done.returncode == 0, done.stderr[-3000:]
    check = pip("--python", str(python), "check")
    return ImageEnv(base / "venv", python, base / "venv" / "bin" / "servicetags", check)


def metadata_env(env: ImageEnv, target: Path, lock_text: str) -> Path:
    """A venv holding the package metadata of what `lock_text` pins plus the project, copied
    from the built image env: what `pip check` reads, for the cost of a few kilobytes instead
    of an install. Its python."""
    keep = {*lock_pins(lock_text), "servicetags-watch"}
    python = make_venv(target)
    source = next(env.venv.glob("lib/python*/site-packages"))
    site = next(target.glob("lib/python*/site-packages"))
    for info in source.glob("*.dist-info"):
        name = re.split(r"-\d", info.name, maxsplit=1)[0]
        if canonicalize_name(name) in keep:
            shutil.copytree(info, site / info.name)
    return python
