"""The local ARM service-tag endpoint, exercised over real HTTPS on loopback.

The SDK tests use azure-mgmt-network unmodified, pointed at the endpoint with `base_url`
and trusting its CA with `connection_verify`; the wire tests use http.client so that every
status, header and broken connection is seen exactly as sent.
"""

from __future__ import annotations

import gzip
import http.client
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.policies import RetryPolicy
from azure.mgmt.network import NetworkManagementClient

from devstack.arm_admin import ArmAdminClient, ArmEndpointAdmin
from devstack.arm_endpoint import ArmEndpoint, StaticTokenCredential
from devstack.arm_wire import arm_document, read_document

ROOT = Path(__file__).resolve().parents[2]
SUBSCRIPTION = "3f2a9c4e-1b7d-4e8a-9c55-0d6b2e7f1a30"
API_VERSION = "2026-03-01"  # what azure-mgmt-network 33.1.0 sends
ARM_CHALLENGE = (
    'Bearer authorization_uri="https://login.windows.net/", error="invalid_token", '
    "error_description=\"The authentication failed because of missing 'Authorization' header.\""
)


def service_tags_path(location: str, api_version: str | None = API_VERSION) -> str:
    path = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Network/locations/{location}"
    path += "/serviceTags"
    return path if api_version is None else f"{path}?api-version={api_version}"


def connect(endpoint: ArmEndpointAdmin) -> http.client.HTTPSConnection:
    host, port = endpoint.url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(endpoint.ca_path))
    return http.client.HTTPSConnection(host, int(port), context=context, timeout=10)


def raw_get(
    endpoint: ArmEndpointAdmin,
    path: str,
    *,
    token: str | None = "dev-token",
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One GET on a fresh connection: (status, headers, body)."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    connection = connect(endpoint)
    try:
        connection.request("GET", path, headers=all_headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def change_number_of(endpoint: ArmEndpointAdmin, location: str) -> str:
    status, _, body = raw_get(endpoint, service_tags_path(location))
    assert status == 200
    return json.loads(body)["changeNumber"]


def download_file(path: Path) -> dict[str, Any]:
    return json.loads(gzip.decompress(path.read_bytes()))


@pytest.fixture
def network_client(arm_endpoint: ArmEndpoint) -> Iterator[NetworkManagementClient]:
    # Small backoff keeps retry tests fast; the retry policy itself is azure-core's own.
    retry = RetryPolicy(retry_backoff_factor=0.05, retry_backoff_max=0.5)
    with NetworkManagementClient(
        StaticTokenCredential(),
        SUBSCRIPTION,
        base_url=arm_endpoint.url,
        connection_verify=str(arm_endpoint.ca_path),
        retry_policy=retry,
    ) as client:
        yield client


def raw_body(pipeline_response: Any, deserialized: Any, headers: Any) -> bytes:
    """`cls=` hook that skips the SDK models and returns the body (azure-facts §11)."""
    return pipeline_response.http_response.body()


@pytest.fixture(params=["in-process", "admin-http"])
def controls(request: pytest.FixtureRequest, arm_endpoint: ArmEndpoint) -> ArmEndpointAdmin:
    """The same endpoint, driven directly or through its /_admin/ routes."""
    if request.param == "in-process":
        return arm_endpoint
    return ArmAdminClient(arm_endpoint.url, arm_endpoint.ca_path)


# ---------------------------------------------------------------------------------------
# The real SDK client


def test_sdk_client_reads_the_real_snapshot_in_arm_shape(
    network_client: NetworkManagementClient, snapshot_file: Callable[[int], Path]
):
    source = download_file(snapshot_file(361))
    source_tag = next(v for v in source["values"] if v["name"] == "AzureCloud.centralfrance")

    result = network_client.service_tags.list("francecentral")

    assert result.change_number == "361"
    assert result.name == "Public"
    assert result.cloud == "Public"
    assert result.type == "Microsoft.Network/serviceTags"
    assert result.id == f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Network/serviceTags/Public"
    assert len(result.values_property) == len(source["values"]) == 2965
    tag = next(v for v in result.values_property if v.name == "AzureCloud.centralfrance")
    assert tag.id == "AzureCloud.centralfrance"
    assert tag.properties.region == "centralfrance"
    assert tag.properties.change_number == str(source_tag["properties"]["changeNumber"])
    assert isinstance(tag.properties.change_number, str)
    assert tag.properties.system_service == ""
    assert tag.properties.address_prefixes == source_tag["properties"]["addressPrefixes"]
    assert tag.properties["networkFeatures"] == source_tag["properties"]["networkFeatures"]
    assert "regionId" not in tag.properties
    assert "platform" not in tag.properties


def test_sdk_raw_body_is_arm_wire_json(
    network_client: NetworkManagementClient, snapshot_file: Callable[[int], Path]
):
    body = network_client.service_tags.list("francecentral", cls=raw_body)

    answer = json.loads(body)
    assert list(answer) == ["name", "id", "type", "changeNumber", "cloud", "values"]
    assert answer["changeNumber"] == "361"
    assert len(answer["values"]) == 2965
    for tag in answer["values"]:
        assert isinstance(tag["properties"]["changeNumber"], str)
        assert not {"regionId", "platform"} & tag["properties"].keys()
    first = answer["values"][0]["properties"]
    assert list(first) == [
        "changeNumber",
        "region",
        "systemService",
        "addressPrefixes",
        "networkFeatures",
    ]
    # The served body is exactly the pure conversion of the download file.
    assert answer == arm_document(read_document(snapshot_file(361)), SUBSCRIPTION)


@pytest.mark.parametrize(
    "faults",
    [
        # azure-core counts 429/500/503 *and* a truncated body (IncompleteReadError) against
        # its status budget (3 by default) and a reset against its read budget (3), so one
        # call survives at most three of the former: the faults are spread over two calls.
        ["429", "reset", "500", "truncate"],
        ["503", "reset", "slow:0.1"],  # a slow answer is still an answer: last
    ],
)
def test_sdk_client_gets_the_right_answer_after_retryable_faults(
    arm_endpoint: ArmEndpoint, network_client: NetworkManagementClient, faults: list[str]
):
    arm_endpoint.add_faults(faults, location="francecentral")
    expected_requests = len(faults) + (0 if faults[-1].startswith("slow") else 1)

    started = time.monotonic()
    body = network_client.service_tags.list("francecentral", cls=raw_body)

    assert json.loads(body)["changeNumber"] == "361"
    assert arm_endpoint.request_count("francecentral") == expected_requests
    assert arm_endpoint.stats()["pending_faults"] == []
    if "429" in faults:
        assert time.monotonic() - started >= 1.0  # honoured Retry-After: 1


def test_sdk_client_surfaces_the_arm_error_when_a_location_always_fails(
    arm_endpoint: ArmEndpoint,
):
    arm_endpoint.fail_always("japaneast", "503")
    with (
        NetworkManagementClient(
            StaticTokenCredential(),
            SUBSCRIPTION,
            base_url=arm_endpoint.url,
            connection_verify=str(arm_endpoint.ca_path),
            retry_policy=RetryPolicy(retry_total=2, retry_backoff_factor=0.01),
        ) as client,
        pytest.raises(HttpResponseError) as raised,
    ):
        client.service_tags.list("japaneast", cls=raw_body)
    assert raised.value.status_code == 503
    assert raised.value.error is not None
    assert raised.value.error.code == "ServiceUnavailable"
    assert arm_endpoint.request_count("japaneast") == 3


# ---------------------------------------------------------------------------------------
# Wire details: headers, auth, errors


def test_answer_carries_arm_headers(arm_endpoint: ArmEndpoint):
    correlation = str(uuid.uuid4())
    status, headers, _ = raw_get(
        arm_endpoint,
        service_tags_path("francecentral"),
        headers={"x-ms-correlation-request-id": correlation},
    )
    assert status == 200
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert uuid.UUID(headers["x-ms-request-id"])
    assert headers["x-ms-correlation-request-id"] == correlation


def test_request_without_token_gets_arms_401_challenge(arm_endpoint: ArmEndpoint):
    status, headers, body = raw_get(arm_endpoint, service_tags_path("francecentral"), token=None)

    assert status == 401
    assert headers["WWW-Authenticate"] == ARM_CHALLENGE
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert json.loads(body) == {
        "error": {
            "code": "AuthenticationFailed",
            "message": "Authentication failed. The 'Authorization' header is missing.",
        }
    }
    assert arm_endpoint.request_count("francecentral") == 0


def test_non_bearer_authorization_is_rejected(arm_endpoint: ArmEndpoint):
    status, headers, body = raw_get(
        arm_endpoint,
        service_tags_path("francecentral"),
        token=None,
        headers={"Authorization": "Basic dXNlcjpwYXNz"},
    )
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer authorization_uri=")
    assert json.loads(body)["error"]["code"] == "AuthenticationFailedInvalidHeader"


def test_missing_api_version_is_an_arm_400(arm_endpoint: ArmEndpoint):
    status, _, body = raw_get(arm_endpoint, service_tags_path("francecentral", api_version=None))
    assert status == 400
    assert json.loads(body) == {
        "error": {
            "code": "MissingApiVersionParameter",
            "message": "The api-version query parameter (?api-version=) is required for all requests.",
        }
    }


def test_unknown_path_is_an_arm_404(arm_endpoint: ArmEndpoint):
    path = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Network/virtualNetworks"
    status, _, body = raw_get(arm_endpoint, f"{path}?api-version={API_VERSION}")
    assert status == 404
    assert json.loads(body)["error"]["code"] == "NotFound"


def test_malformed_subscription_id_is_an_arm_400(arm_endpoint: ArmEndpoint):
    path = service_tags_path("francecentral").replace(SUBSCRIPTION, "not-a-guid")
    status, _, body = raw_get(arm_endpoint, path)
    assert status == 400
    assert json.loads(body)["error"]["code"] == "InvalidSubscriptionId"


# ---------------------------------------------------------------------------------------
# Snapshots: switching and per-location lag


def test_switching_snapshot_changes_the_answer(
    controls: ArmEndpointAdmin, snapshot_file: Callable[[int], Path]
):
    assert change_number_of(controls, "francecentral") == "361"

    controls.set_snapshot(snapshot_file(360))

    status, _, body = raw_get(controls, service_tags_path("francecentral"))
    assert status == 200
    answer = json.loads(body)
    assert answer["changeNumber"] == "360"
    assert len(answer["values"]) == 2968
    assert controls.stats()["snapshot"]["changeNumber"] == "360"


def test_location_override_serves_another_snapshot_to_that_location_only(
    controls: ArmEndpointAdmin, snapshot_file: Callable[[int], Path]
):
    controls.set_snapshot(snapshot_file(347), locations=["westeurope"])

    assert change_number_of(controls, "westeurope") == "347"
    assert change_number_of(controls, "WestEurope") == "347"  # ARM locations ignore case
    assert change_number_of(controls, "francecentral") == "361"

    controls.clear_location_overrides()
    assert change_number_of(controls, "westeurope") == "361"


# ---------------------------------------------------------------------------------------
# Faults, as seen on the wire


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        ("429", 429, "TooManyRequests"),
        ("500", 500, "InternalServerError"),
        ("503", 503, "ServiceUnavailable"),
    ],
)
def test_error_faults_answer_like_arm(arm_endpoint: ArmEndpoint, kind: str, status: int, code: str):
    arm_endpoint.add_faults([kind])

    got_status, headers, body = raw_get(arm_endpoint, service_tags_path("francecentral"))

    assert got_status == status
    assert json.loads(body)["error"]["code"] == code
    assert uuid.UUID(headers["x-ms-request-id"])
    if kind == "429":
        assert headers["Retry-After"] == "1"
    # The fault was used up: the next request gets the snapshot.
    assert change_number_of(arm_endpoint, "francecentral") == "361"


def test_429_retry_after_can_be_chosen_per_fault(arm_endpoint: ArmEndpoint):
    arm_endpoint.add_faults(["429:7"])
    status, headers, _ = raw_get(arm_endpoint, service_tags_path("francecentral"))
    assert (status, headers["Retry-After"]) == (429, "7")


def test_reset_fault_resets_the_connection(arm_endpoint: ArmEndpoint):
    arm_endpoint.add_faults(["reset"])
    connection = connect(arm_endpoint)
    try:
        connection.request("GET", service_tags_path("francecentral"), headers=_auth())
        with pytest.raises(ConnectionResetError):
            connection.getresponse()
    finally:
        connection.close()


def test_truncate_fault_announces_the_full_length_and_sends_part(arm_endpoint: ArmEndpoint):
    _, _, full = raw_get(arm_endpoint, service_tags_path("francecentral"))
    arm_endpoint.add_faults(["truncate"])
    connection = connect(arm_endpoint)
    try:
        connection.request("GET", service_tags_path("francecentral"), headers=_auth())
        response = connection.getresponse()
        assert response.status == 200
        assert int(response.headers["Content-Length"]) == len(full)
        with pytest.raises(http.client.IncompleteRead) as raised:
            response.read()
    finally:
        connection.close()
    assert raised.value.partial == full[: len(full) // 2]


def test_slow_fault_delays_a_correct_answer(arm_endpoint: ArmEndpoint):
    arm_endpoint.add_faults(["slow:0.4"])
    started = time.monotonic()
    assert change_number_of(arm_endpoint, "francecentral") == "361"
    assert time.monotonic() - started >= 0.4


def test_scripted_faults_are_consumed_in_order_by_matching_locations(arm_endpoint: ArmEndpoint):
    arm_endpoint.add_faults(["500", "503"], location="westeurope")

    assert change_number_of(arm_endpoint, "francecentral") == "361"
    assert raw_get(arm_endpoint, service_tags_path("westeurope"))[0] == 500
    assert raw_get(arm_endpoint, service_tags_path("westeurope"))[0] == 503
    assert change_number_of(arm_endpoint, "westeurope") == "361"
    assert arm_endpoint.request_count("westeurope") == 3
    assert arm_endpoint.request_count("francecentral") == 1


def test_fail_always_fails_one_location_until_cleared(arm_endpoint: ArmEndpoint):
    arm_endpoint.fail_always("japaneast", "500")

    statuses = [raw_get(arm_endpoint, service_tags_path("japaneast"))[0] for _ in range(3)]
    assert statuses == [500, 500, 500]
    assert change_number_of(arm_endpoint, "francecentral") == "361"

    arm_endpoint.clear_faults()
    assert change_number_of(arm_endpoint, "japaneast") == "361"


def test_unknown_fault_kind_is_refused(arm_endpoint: ArmEndpoint):
    with pytest.raises(ValueError, match="unknown fault"):
        arm_endpoint.add_faults(["500", "teapot"])
    assert arm_endpoint.stats()["pending_faults"] == []  # nothing half-queued
    control = ArmAdminClient(arm_endpoint.url, arm_endpoint.ca_path)
    with pytest.raises(RuntimeError, match="400"):
        control.add_faults(["teapot"])


def test_random_faults_follow_the_seed(arm_endpoint: ArmEndpoint):
    arm_endpoint.state.slow_seconds = 0.2

    def outcomes() -> list[str]:
        return [_outcome(arm_endpoint, "francecentral") for _ in range(12)]

    arm_endpoint.set_fault_rate(1.0, seed=3)
    first = outcomes()
    arm_endpoint.set_fault_rate(1.0, seed=3)
    second = outcomes()
    arm_endpoint.set_fault_rate(0.0)

    assert first == second
    assert "ok" not in first
    assert len(set(first)) >= 3
    assert _outcome(arm_endpoint, "francecentral") == "ok"


def _auth() -> dict[str, str]:
    return {"Authorization": "Bearer dev-token"}


def _outcome(endpoint: ArmEndpoint, location: str) -> str:
    """What a single request saw: 'ok', 'slow', a status code, 'reset' or 'truncate'."""
    started = time.monotonic()
    try:
        status, _, _ = raw_get(endpoint, service_tags_path(location))
    except ConnectionResetError:
        return "reset"
    except http.client.IncompleteRead:
        return "truncate"
    if status != 200:
        return str(status)
    return "slow" if time.monotonic() - started >= endpoint.state.slow_seconds else "ok"


# ---------------------------------------------------------------------------------------
# As a background process, controlled over HTTP


def test_background_process_is_controlled_over_http_and_stops_on_sigterm(
    tmp_path: Path, snapshot_file: Callable[[int], Path]
):
    state_dir = tmp_path / "state"
    command = [
        sys.executable,
        "-m",
        "devstack.arm_endpoint",
        "--snapshot",
        str(snapshot_file(360)),
        "--state-dir",
        str(state_dir),
        "--port",
        "0",
    ]
    with (tmp_path / "arm.log").open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
    try:
        info = _wait_for_state_file(process, state_dir / "arm.json", tmp_path / "arm.log")
        assert info["pid"] == process.pid
        control = ArmAdminClient.from_state_dir(state_dir)
        assert Path(info["ca_path"]).is_file()

        assert change_number_of(control, "francecentral") == "360"
        control.set_snapshot(snapshot_file(361))
        assert change_number_of(control, "francecentral") == "361"
        control.add_faults(["503"], location="francecentral")
        assert raw_get(control, service_tags_path("francecentral"))[0] == 503
        assert control.request_count("francecentral") == 3
        assert raw_get(control, service_tags_path("francecentral"), token=None)[0] == 401

        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    assert process.returncode == 0
    assert json.loads(stdout.decode().splitlines()[0])["url"] == info["url"]
    assert not (state_dir / "arm.json").exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", info["port"]), timeout=2).close()


def _wait_for_state_file(
    process: subprocess.Popen[bytes], path: Path, log: Path, timeout: float = 20.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"endpoint exited with {process.returncode}: {log.read_text()}")
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.05)
    pytest.fail(f"endpoint did not write {path} within {timeout} s: {log.read_text()}")
