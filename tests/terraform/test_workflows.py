"""The GitHub Actions workflows (.github/workflows/), parsed with PyYAML: OIDC logins only, no
stored secrets, the README's test command in CI, plan on pull requests and apply from the
protected environment, run-now (the producer or the doctor). Moved out of test_terraform.py,
whose HCL helpers they share."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.terraform.test_terraform import TF, TF_GITHUB, _attr, _blocks, _module, _one, _resources

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"


def _workflows() -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(WORKFLOWS.glob("*.yml"))}


def _triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True))
    return on if isinstance(on, dict) else {name: None for name in ([on] if isinstance(on, str) else on)}


def _steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job.get("steps", [])


def _logs_in_to_azure(workflow: dict[str, Any], job: dict[str, Any]) -> bool:
    env = {**workflow.get("env", {}), **job.get("env", {})}
    uses_login = any(str(s.get("uses", "")).startswith("azure/login") for s in _steps(job))
    return uses_login or str(env.get("ARM_USE_OIDC", "")).lower() == "true"


def test_workflows_exist() -> None:
    assert set(_workflows()) == {"ci.yml", "build-push.yml", "terraform.yml", "run-now.yml"}


def test_jobs_that_use_azure_request_an_oidc_token() -> None:
    using_azure = 0
    for name, workflow in _workflows().items():
        for job_name, job in workflow["jobs"].items():
            if not _logs_in_to_azure(workflow, job):
                continue
            using_azure += 1
            permissions = job.get("permissions", workflow.get("permissions", {}))
            assert permissions.get("id-token") == "write", f"{name}:{job_name}"
    assert using_azure == 5  # build-push, terraform plan and apply, run-now (run, doctor)


def test_no_long_lived_azure_credentials_in_workflows() -> None:
    for path in sorted(WORKFLOWS.glob("*.yml")):
        text = path.read_text()
        # No GitHub secret is read at all: Azure logins use OIDC, values are variables.
        assert "secrets." not in text, path.name
        assert not re.search(r"client[-_]secret|ARM_ACCESS_KEY|creds\s*:", text, re.I), path.name
    for name, workflow in _workflows().items():
        for job in workflow["jobs"].values():
            for step in _steps(job):
                if str(step.get("uses", "")).startswith("azure/login"):
                    assert set(step["with"]) == {"client-id", "tenant-id", "subscription-id"}, name


def test_ci_runs_the_readme_test_command_on_push_and_pull_request() -> None:
    ci = _workflows()["ci.yml"]
    assert {"push", "pull_request"} <= set(_triggers(ci))
    steps = [s for job in ci["jobs"].values() for s in _steps(job)]
    assert any(s.get("run") == "python3 dev.py test" for s in steps)
    with_python = [s["with"] for s in steps if "setup-python" in str(s.get("uses", ""))]
    with_node = [s["with"] for s in steps if "setup-node" in str(s.get("uses", ""))]
    assert with_python == [{"python-version": "3.11"}]
    assert with_node == [{"node-version": "20"}]


def test_build_push_publishes_version_tags_from_the_protected_environment() -> None:
    workflow = _workflows()["build-push.yml"]
    assert _triggers(workflow) == {"push": {"tags": ["v*.*.*"]}}
    (job,) = workflow["jobs"].values()
    assert job["environment"] == "production"
    runs = "\n".join(s.get("run", "") for s in _steps(job))
    assert "az acr login" in runs and "docker push" in runs
    assert "/servicetags-watch:${{ github.ref_name }}" in job["steps"][-1]["env"]["IMAGE"]


def test_terraform_workflow_plans_on_pull_requests_and_applies_main_in_an_environment() -> None:
    workflow = _workflows()["terraform.yml"]
    assert {"pull_request", "push"} <= set(_triggers(workflow))
    assert _triggers(workflow)["push"]["branches"] == ["main"]
    assert workflow["env"]["ARM_USE_OIDC"] == "true"
    plan, apply = workflow["jobs"]["plan"], workflow["jobs"]["apply"]
    plan_runs = [s.get("run", "") for s in _steps(plan)]
    for command in ("terraform fmt -check", "terraform validate", "terraform plan"):
        assert any(r.startswith(command) for r in plan_runs), command
    assert "environment" not in plan, "plan must use the read-only identity"
    assert plan["env"]["ARM_CLIENT_ID"] == "${{ vars.AZURE_CI_CLIENT_ID }}"
    assert apply["environment"] == "production"
    assert apply["env"]["ARM_CLIENT_ID"] == "${{ vars.AZURE_CLIENT_ID }}"
    assert "refs/heads/main" in apply["if"] and "push" in apply["if"]
    assert any(s.get("run", "").startswith("terraform apply") for s in _steps(apply))


def test_run_now_starts_the_producer_job_on_demand() -> None:
    workflow = _workflows()["run-now.yml"]
    assert set(_triggers(workflow)) == {"workflow_dispatch"}
    runs = "\n".join(s.get("run", "") for j in workflow["jobs"].values() for s in _steps(j))
    assert "az containerapp job start" in runs and "PRODUCER_JOB_NAME" in str(workflow)


def test_run_now_can_start_the_doctor_and_fails_with_it() -> None:
    workflow = _workflows()["run-now.yml"]
    what = _triggers(workflow)["workflow_dispatch"]["inputs"]["what"]
    assert what["options"] == ["run", "doctor"] and what["default"] == "run"
    doctor = workflow["jobs"]["doctor"]
    assert doctor["if"] == "inputs.what == 'doctor'"
    assert workflow["jobs"]["start-producer"]["if"] == "inputs.what != 'doctor'"
    (step,) = [s for s in _steps(doctor) if "run" in s]
    assert step["env"]["JOB"] == "${{ vars.DOCTOR_JOB_NAME }}"
    assert "az containerapp job start" in step["run"] and step["run"].rstrip().endswith(
        'test "$status" = Succeeded'
    )
    # The deploy identity may start exactly this job (and the producer).
    gh = _resources(_module(TF_GITHUB))
    assert "DOCTOR_JOB_NAME" in _attr(gh["github_actions_variable"]["settings"], "for_each")


def test_workflow_environments_match_the_federated_credential_subject() -> None:
    (default,) = [
        _one(b["default"]) for n, b in _blocks(_module(TF), "variable") if n == "github_environment"
    ]
    for workflow in _workflows().values():
        for job in workflow["jobs"].values():
            if "environment" in job:
                assert job["environment"] == default
