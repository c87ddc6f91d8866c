"""The pure core (`core/`) imports no Azure SDK, HTTP client, smtplib, threading, subprocess,
clock or file system access: ruff's banned-api rule (TID251, configured in pyproject.toml for
`core/` only) sees every import, lazy ones inside functions included. These tests prove the
rule holds on the tree and fails on a deliberate violation; calls that are not imports (the
builtin `open`) are checked here on the syntax tree."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "core"

LAZY_SDK_IMPORT = """
def credential() -> object:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()
"""


def ruff(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--select",
            "TID251",
            "--output-format",
            "concise",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_tree_keeps_the_boundary() -> None:
    result = ruff(".", cwd=ROOT)
    assert result.returncode == 0, result.stdout


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The project's lint configuration with a copy of the core and one runtime package."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(CORE, tmp_path / "core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "runtime", tmp_path / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_a_lazy_azure_import_inside_a_core_function_fails_the_rule(project_copy: Path) -> None:
    diff = project_copy / "core" / "diff.py"
    diff.write_text(diff.read_text() + LAZY_SDK_IMPORT)
    result = ruff(".", cwd=project_copy)
    assert result.returncode == 1
    [finding] = result.stdout.strip().splitlines()[:-1] or [result.stdout]
    assert finding.startswith("core/diff.py:") and "TID251 `azure` is banned" in finding


@pytest.mark.parametrize(
    "statement, banned",
    [
        ("import threading", "threading"),
        ("import subprocess", "subprocess"),
        ("import smtplib", "smtplib"),
        ("from pathlib import Path", "pathlib"),
        ("import os.path", "os"),
        ("import time", "time"),
        ("import urllib.request", "urllib.request"),
    ],
)
def test_each_banned_kind_of_import_fails_in_the_core(
    project_copy: Path, statement: str, banned: str
) -> None:
    probe = project_copy / "core" / "probe.py"
    probe.write_text(f"def f() -> None:\n    {statement}  # noqa: F401\n")
    result = ruff("core/probe.py", cwd=project_copy)
    assert result.returncode == 1 and f"`{banned}` is banned" in result.stdout


def test_the_same_import_is_allowed_in_the_runtime(project_copy: Path) -> None:
    identity = project_copy / "runtime" / "probe.py"
    identity.write_text(LAZY_SDK_IMPORT)
    assert ruff(".", cwd=project_copy).returncode == 0


def _builtin_file_calls(tree: ast.AST) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in {"open", "__import__", "exec", "eval", "print", "input"}
    ]


def test_no_core_module_calls_open_or_imports_dynamically() -> None:
    found = {
        path.name: lines
        for path in sorted(CORE.glob("*.py"))
        if (lines := _builtin_file_calls(ast.parse(path.read_text())))
    }
    assert found == {}
    assert _builtin_file_calls(ast.parse("def f():\n    return open('x').read()\n")) == [2]
