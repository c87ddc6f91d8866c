"""The image's contents without a container engine (see image_env.py): the locks install
wheels-only with no dependency resolution, `pip check` passes, and the entry point runs from
that environment alone. `doctor --local` from it is in test_doctor.py (it needs the stack)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.image_env import (
    LOCK,
    PACKAGES,
    ROOT,
    ImageEnv,
    build_image_env,
    lock_pins,
    metadata_env,
    pip,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> ImageEnv:
    return build_image_env(tmp_path_factory.getbasetemp() / "image-env")


def _clean_env() -> dict[str, str]:
    # Nothing from the test run's own environment may help: no PYTHONPATH, no venv, cwd elsewhere.
    return {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "VIRTUAL_ENV"} and not k.startswith(("SERVICETAGS_", "AZURE_"))
    }


def test_the_locked_environment_is_complete(image_env: ImageEnv) -> None:
    assert image_env.check.returncode == 0, image_env.check.stdout + image_env.check.stderr
    assert image_env.check.stdout.strip() == "No broken requirements found."
    listed = pip("--python", str(image_env.python), "list", "--format=freeze")
    installed = lock_pins(listed.stdout)
    # Exactly the lock and the project: nothing resolved on the side.
    assert installed == {**lock_pins(LOCK.read_text()), "servicetags-watch": "0.1.0"}


def test_the_entry_point_runs_from_the_image_environment_alone(image_env: ImageEnv, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(image_env.servicetags), "--help"],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: servicetags COMMAND [ARGS...]")
    assert "doctor" in result.stdout
    # Each component's own parser, and the SDK imports behind `doctor`, load from it too.
    for command in (
        ["produce", "--help"],
        ["worker", "--help"],
        ["notifier", "--help"],
        ["doctor", "--help"],
    ):
        ran = subprocess.run(
            [str(image_env.servicetags), *command],
            cwd=tmp_path,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert ran.returncode == 0, f"{command}: {ran.stderr}"
    probe = subprocess.run(
        [
            str(image_env.python),
            "-c",
            "import servicetags.doctor, worker.sources, "
            "azure.identity, azure.storage.queue, azure.communication.email, jwt, "
            "jsonschema",
        ],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr


@pytest.mark.parametrize("removed", ["isodate", "azure-core", "cryptography"])
def test_a_lock_missing_a_runtime_dependency_fails_pip_check(
    image_env: ImageEnv, tmp_path: Path, removed: str
) -> None:
    lines = LOCK.read_text().splitlines()
    broken = "\n".join(line for line in lines if not line.startswith(f"{removed}=="))
    assert broken != "\n".join(lines), f"{removed} is not in the lock"
    python = metadata_env(image_env, tmp_path / "venv", broken)
    check = pip("--python", str(python), "check")
    assert check.returncode == 1
    assert f"requires {removed}, which is not installed." in check.stdout, check.stdout


def test_these_steps_are_the_dockerfiles() -> None:
    """The builder stage as image_env.py repeats it: same lock, flags and copied packages."""
    builder = (ROOT / "Dockerfile").read_text().split("FROM ${PYTHON_IMAGE} AS runtime")[0]
    assert "python -m venv --without-pip /opt/venv" in builder
    assert re.search(
        r"install --no-deps --only-binary=:all: \\\n\s+--requirement docker/requirements.lock", builder
    )
    assert "pip wheel --no-deps --wheel-dir /wheels ." in builder
    assert "pip --python /opt/venv/bin/python check" in builder
    copied = re.findall(r"^COPY (\w+)/ \1/$", builder, re.M)
    assert tuple(copied) == PACKAGES
