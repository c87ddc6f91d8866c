"""The local Resource Graph stand-in over real HTTPS, read by the real SDK client
(azure-mgmt-resourcegraph, unmodified) and by the impact step's own reader."""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

from core.errors import PermanentError, TransientError
from devstack.arm_endpoint import StaticTokenCredential
from devstack.resource_graph import ResourceGraphEndpoint
from impact.resource_graph import (
    QUERY,
    RESOURCE_GRAPH_API_VERSION,
    ResourceGraphSource,
    resource_graph_client,
)
from impact.rule_files import read_rules

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[1] / "fixtures" / "rules" / "arm"
SUB_A, SUB_B = "0b1f6471-1bf0-4dda-aec3-cb9272f09590", "7d2a4c31-5e8f-4b6a-9c0d-1e2f3a4b5c6d"


@pytest.fixture(scope="module")
def graph() -> Iterator[ResourceGraphEndpoint]:
    with ResourceGraphEndpoint.from_files([RULES], page_size=4) as endpoint:
        yield endpoint


@pytest.fixture(autouse=True)
def _clean(graph: ResourceGraphEndpoint) -> Iterator[None]:
    graph.state.fail_always(None)
    graph.state.requests.clear()
    yield
    graph.state.fail_always(None)
    graph.state.add_faults([])


def source(graph: ResourceGraphEndpoint, **kwargs: object) -> ResourceGraphSource:
    client = resource_graph_client(
        credential=StaticTokenCredential(),
        endpoint=graph.url,
        ca_bundle=str(graph.ca_path),
        retries=3,
        backoff=0.01,
    )
    return ResourceGraphSource(client, subscriptions=[SUB_A, SUB_B], **kwargs)  # type: ignore[arg-type]


def comparable(rules: object) -> set[tuple[str, str, object]]:
    return {(r.resource_id, r.rule, r.fields) for r in rules.rules}  # type: ignore[attr-defined]


def test_the_real_sdk_client_pages_through_with_skip_tokens(graph: ResourceGraphEndpoint) -> None:
    client = ResourceGraphClient(
        StaticTokenCredential(), base_url=graph.url, connection_verify=str(graph.ca_path)
    )
    rows, token, pages = [], None, 0
    while True:
        reply = client.resources(
            QueryRequest(
                subscriptions=[SUB_A, SUB_B],
                query=QUERY,
                options=QueryRequestOptions(top=4, skip_token=token, result_format="objectArray"),
            )
        )
        pages += 1
        assert reply.total_records == 17 and reply.count == len(reply.data) <= 4
        rows += reply.data
        token = reply.skip_token
        if not token:
            break
    assert pages == 5 and len(rows) == 17
    assert {r["type"] for r in rows} >= {
        "microsoft.network/networksecuritygroups",
        "microsoft.network/ipgroups",
        "microsoft.network/firewallpolicies",
        "microsoft.keyvault/vaults",
    }
    assert all(r["subscriptionId"] in (SUB_A, SUB_B) and r["resourceGroup"] for r in rows)
    # Scoped to one subscription: only its resources.
    one = client.resources(
        QueryRequest(subscriptions=[SUB_B], query=QUERY, options=QueryRequestOptions(top=100))
    )
    # (the stand-in serves at most 4 rows a page here, whatever $top asks)
    assert (one.total_records, len(one.data)) == (9, 4) and {r["subscriptionId"] for r in one.data} == {SUB_B}
    assert graph.state.requests[0]["path"] == "/providers/Microsoft.ResourceGraph/resources"
    assert graph.state.requests[0]["body"]["options"] == {
        "$top": 4,
        "resultFormat": "objectArray",
        "allowPartialScopes": False,
    }


def test_without_a_token_the_arm_bearer_challenge(graph: ResourceGraphEndpoint) -> None:
    host, port = graph.url.removeprefix("https://").split(":")
    connection = http.client.HTTPSConnection(
        host, int(port), context=ssl.create_default_context(cafile=str(graph.ca_path))
    )
    connection.request(
        "POST",
        f"/providers/Microsoft.ResourceGraph/resources?api-version={RESOURCE_GRAPH_API_VERSION}",
        body=json.dumps({"query": QUERY}),
        headers={"Content-Type": "application/json"},
    )
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()
    assert response.status == 401 and body["error"]["code"] == "AuthenticationFailed"
    assert response.getheader("WWW-Authenticate", "").startswith(
        'Bearer authorization_uri="https://login.windows.net/"'
    )


def test_throttled_then_three_pages_then_a_failure_is_retried_and_complete(
    graph: ResourceGraphEndpoint,
) -> None:
    graph.state.add_faults(["429:1", "ok", "ok", "ok", "500"])
    started = time.monotonic()
    rules = source(graph).fetch()
    assert time.monotonic() - started >= 1.0  # Retry-After was honoured
    assert comparable(rules) == comparable(read_rules([RULES]))  # every rule, rule collection groups too
    assert len(rules.rules) == 57 and rules.resources == 18
    methods = [
        (r["method"], r["body"]["options"].get("$skipToken") is not None if r["body"] else None)
        for r in graph.state.requests
    ]
    # 429, page 1, pages 2-3, the 500, page 4 again, page 5; then the policy's groups.
    assert methods == [
        ("POST", False),
        ("POST", False),
        ("POST", True),
        ("POST", True),
        ("POST", True),
        ("POST", True),
        ("POST", True),
        ("GET", None),
    ]
    assert graph.state.requests[4]["body"] == graph.state.requests[5]["body"]


def test_permanent_and_exhausted_failures_say_why(graph: ResourceGraphEndpoint) -> None:
    graph.state.fail_always("403")
    with pytest.raises(
        PermanentError, match=r"HTTP 403 AuthorizationFailed; the identity needs Reader on the scope"
    ):
        source(graph).fetch()
    graph.state.fail_always("503")
    with pytest.raises(TransientError, match=r"Azure Resource Graph \(subscriptions .*\): HTTP 503"):
        source(graph).fetch()
    assert len(graph.state.requests) == 1 + 4  # one refused; one tried, then three retries


def test_the_stand_in_runs_as_its_own_process(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT, wait_until

    state = tmp_path / "graph"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devstack.resource_graph",
            "--rules",
            str(RULES),
            "--state-dir",
            str(state),
            "--fault",
            "429:1",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until((state / "resource-graph.json").exists, timeout=30), process.stderr
        info = json.loads((state / "resource-graph.json").read_text())
        client = resource_graph_client(
            credential=StaticTokenCredential(),
            endpoint=info["url"],
            ca_bundle=info["ca_path"],
            retries=2,
            backoff=0.01,
        )
        rules = ResourceGraphSource(client, subscriptions=[SUB_A, SUB_B]).fetch()
        assert comparable(rules) == comparable(read_rules([RULES]))
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        process.stderr.close()  # type: ignore[union-attr]
    assert not (state / "resource-graph.json").exists()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "devstack.resource_graph",
            "--rules",
            str(tmp_path / "none"),
            "--state-dir",
            str(state),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (bad.returncode, bad.stderr) == (
        1,
        f"resource_graph: cannot start: {tmp_path / 'none'}: no such file or folder\n",
    )
