"""terraform/ held to the azurerm provider's own schema, at the pinned floor and the newest 4.x
read (tests/terraform/schemas/, see provider_schema.py). New .tf files are found by the
directory walk, so what later changes add is checked without touching this file."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from provider_schema import check_tree, schemas

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "terraform"


def test_both_schema_exports_are_in_the_project() -> None:
    assert [s.version for s in schemas()] == ["4.73.0", "4.81.0"]
    for schema in schemas():
        assert "azurerm_storage_account" in schema.resources
        assert "features" in schema.provider


def test_terraform_matches_the_provider_schema_at_both_versions() -> None:
    report = check_tree(TF)
    assert not report.problems, "\n".join(report.problems)
    # Every azurerm block was checked, and what was not is exactly the other providers' part.
    text = "\n".join(p.read_text() for p in TF.rglob("*.tf"))
    declared = len(re.findall(r'^(?:resource|data) "azurerm_', text, re.M))
    assert len([c for c in report.checked if c != "provider azurerm"]) == declared
    assert "provider azurerm" in report.checked
    assert all(
        u.split()[1].startswith(("github_", "terraform_")) or u == "provider github" for u in report.unchecked
    ), report.unchecked


# Each mutation: (file, old text, new text, the problem it must produce).
BREAKAGES = [
    (
        "storage.tf",
        "  shared_access_key_enabled        = false\n",
        "  shared_access_key_enabled        = false\n  shared_key_access_enabled        = false\n",
        "azurerm_storage_account.main (azurerm 4.73.0): unknown argument or block 'shared_key_access_enabled'",  # noqa: E501 - the message as printed
    ),
    (
        "storage.tf",
        '  account_tier             = "Standard"\n',
        "",
        "azurerm_storage_account.main (azurerm 4.81.0): missing required argument 'account_tier'",
    ),
    (
        "identity.tf",
        '  name                = "id-${var.name_prefix}-producer"\n',
        '  name                = "id-${var.name_prefix}-producer"\n  principal_id        = "x"\n',
        "azurerm_user_assigned_identity.producer (azurerm 4.73.0): 'principal_id' is computed",
    ),
    (
        "storage.tf",
        '  sas_policy {\n    expiration_period = "00.01:00:00"\n  }\n',
        '  sas_policy {\n    expiration_period = "00.01:00:00"\n  }\n'
        '  sas_policy {\n    expiration_period = "00.02:00:00"\n  }\n',
        "azurerm_storage_account.main (azurerm 4.73.0): 2 'sas_policy' blocks, at most 1 allowed",
    ),
    (
        "eventgrid.tf",
        "    max_delivery_attempts = 30\n",
        '    max_delivery_attempts = "thirty"\n',
        "retry_policy: 'max_delivery_attempts': 'thirty' is not a number (schema type TypeInt)",
    ),
    (
        "eventgrid.tf",
        "    event_time_to_live    = 1440\n",
        "    event_time_to_live    = 14.5\n",
        "'event_time_to_live': 14.5 is not a whole number",
    ),
    (
        "storage.tf",
        "    delete_retention_policy {\n",
        "    versioning {\n      enabled = true\n    }\n    delete_retention_policy {\n",
        "azurerm_storage_account.main (azurerm 4.73.0).blob_properties: unknown argument or block 'versioning'",  # noqa: E501 - the message as printed
    ),
    (
        "storage.tf",
        '  container_access_type = "private"\n}\n\nresource "azurerm_storage_container" "reports"',
        '  container_access_type = ["private"]\n}\n\nresource "azurerm_storage_container" "reports"',
        "azurerm_storage_container.snapshots (azurerm 4.73.0): 'container_access_type': "
        "a list cannot be a string",
    ),
    (
        "eventgrid.tf",
        '  identity {\n    type         = "UserAssigned"\n',
        '  identity = {\n    type         = "UserAssigned"\n',
        "'identity' is a block; write `identity { ... }`",
    ),
    (
        "storage.tf",
        'resource "azurerm_storage_queue" "regions" {',
        'resource "azurerm_storage_queues" "regions" {',
        "azurerm_storage_queues.regions (azurerm 4.73.0): unknown resource type",
    ),
    (
        "versions.tf",
        "      data_plane_available = false\n",
        "      data_plane_availabel = false\n",
        "provider azurerm (azurerm 4.73.0).features.storage: unknown argument or block 'data_plane_availabel'",  # noqa: E501 - the message as printed
    ),
    (
        "main.tf",
        'data "azurerm_client_config" "current" {}',
        'data "azurerm_client_config" "current" {\n  tenant_id = "x"\n}',
        "data.azurerm_client_config.current (azurerm 4.73.0): 'tenant_id' is computed",
    ),
    (
        "monitoring.tf",
        None,
        'resource "azapi_resource" "x" {\n  type = "Microsoft.X/y@2024-01-01"\n}\n',
        "no provider schema for 'azapi_resource'",
    ),
]


# Applied to a copy of its own: it removes the block the typo above is made in.
_FEATURES = re.search(r"^  features \{.*?^  \}\n", (TF / "versions.tf").read_text(), re.M | re.S)
NO_FEATURES = (
    "versions.tf",
    _FEATURES.group(0) if _FEATURES else "  features {}\n",
    "",
    "provider azurerm (azurerm 4.81.0): missing required block 'features'",
)


def _broken_copy(base: Path, breakages: list[tuple]) -> list[str]:
    copy = base / "terraform"
    shutil.copytree(TF, copy, ignore=shutil.ignore_patterns(".terraform*"))
    for name, old, new, _ in breakages:
        path = copy / name
        text = path.read_text()
        assert old is None or old in text, f"{name}: {old!r} not found; update BREAKAGES"
        path.write_text(text + "\n" + new if old is None else text.replace(old, new, 1))
    return check_tree(copy).problems


@pytest.fixture(scope="module")
def broken_report(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return _broken_copy(tmp_path_factory.mktemp("broken"), BREAKAGES) + _broken_copy(
        tmp_path_factory.mktemp("no-features"), [NO_FEATURES]
    )


@pytest.mark.parametrize("breakage", [*BREAKAGES, NO_FEATURES], ids=lambda b: b[3][:70])
def test_a_broken_copy_fails_with_the_exact_problem(broken_report: list[str], breakage: tuple) -> None:
    expected = breakage[3]
    assert any(expected in p for p in broken_report), f"{expected!r} not in:\n" + "\n".join(broken_report)


def test_the_broken_copies_report_nothing_but_the_breakages(broken_report: list[str]) -> None:
    # Each breakage is reported once per schema version (the unknown provider once), and
    # nothing else: the checker has no false positives on the untouched rest.
    def matches(problem: str, breakage: tuple) -> bool:
        key = re.sub(r"\(azurerm [0-9.]+\)", "", breakage[3])
        return key in re.sub(r"\(azurerm [0-9.]+\)", "", problem)

    for problem in broken_report:
        assert any(matches(problem, b) for b in [*BREAKAGES, NO_FEATURES]), problem
    assert len(broken_report) == 2 * (len(BREAKAGES) + 1) - 1


def test_attribute_mode_blocks_are_checked_in_either_syntax(tmp_path: Path) -> None:
    """`access_policy` is an SDKv2 attribute-as-block: `= [{...}]` is valid Terraform, and
    its contents are still held to the schema (what a Key Vault file would use)."""
    module = tmp_path / "terraform"
    module.mkdir()
    vault = """resource "azurerm_key_vault" "main" {
  name                = "kv"
  location            = "westeurope"
  resource_group_name = "rg"
  tenant_id           = "t"
  sku_name            = "standard"
  access_policy = [{
    tenant_id          = "t"
    object_id          = "o"
    secret_permissions = ["Get", "List"]
  }]
  network_acls = [{ default_action = "Deny", bypass = "AzureServices" }]
}
"""
    (module / "kv.tf").write_text(vault)
    assert check_tree(module).problems == [
        "terraform/kv.tf:1 azurerm_key_vault.main (azurerm 4.73.0): 'network_acls' is a block; write "
        "`network_acls { ... }`, not `network_acls = [...]`",
        "terraform/kv.tf:1 azurerm_key_vault.main (azurerm 4.81.0): 'network_acls' is a block; write "
        "`network_acls { ... }`, not `network_acls = [...]`",
    ]
    (module / "kv.tf").write_text(vault.replace('    object_id          = "o"\n', '    object_idd = "o"\n'))
    problems = check_tree(module).problems
    assert "access_policy: unknown argument or block 'object_idd'" in problems[0]
    assert "access_policy: missing required argument 'object_id'" in problems[1]
