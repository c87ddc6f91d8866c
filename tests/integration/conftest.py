"""Fixtures for integration tests: a real Azurite and the local ARM service-tag endpoint.

- `azurite` (session): one in-memory Azurite for the whole run; tests isolate themselves
  with uniquely named containers and queues (see `storage`).
- `storage` (function): makes uniquely named containers and queues on that Azurite and
  deletes them afterwards.
- `arm_endpoint` (function): the local ARM endpoint, serving cn361 to every location with no
  faults and zeroed request counts; one server per session, reset before each test.
- `snapshot_file(cn)`: path of the real download file with that change number.
- `stores` (function, params memory/azurite): where a pipeline or notifier test keeps its
  containers and queues. The same test code runs over the in-memory account and over Azurite,
  so the fake cannot drift; the memory variant starts no Azurite (it runs without Node).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient

from devstack.arm_endpoint import ArmEndpoint
from devstack.arm_faults import DEFAULT_RETRY_AFTER, DEFAULT_SLOW_SECONDS
from devstack.azurite import Azurite, start_azurite
from runtime.adapters.memory import MemoryAccount
from runtime.adapters.storage import StorageClients

DEFAULT_SNAPSHOT_CN = 361


@pytest.fixture(scope="session")
def snapshot_file(shared_data: Path) -> Callable[[int], Path]:
    """cn -> the real download file whose top-level changeNumber is cn."""

    def find(cn: int) -> Path:
        matches = sorted(shared_data.glob(f"ServiceTags_Public_*_cn{cn}.json.gz"))
        if not matches:
            raise FileNotFoundError(f"no snapshot cn{cn} under {shared_data}")
        return matches[0]

    return find


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One in-memory Azurite (blob + queue on free loopback ports) for the whole session."""
    handle = start_azurite()
    try:
        yield handle
    finally:
        handle.stop()


def unique_name(prefix: str) -> str:
    """A container/queue name no other test uses: lowercase letters, digits and hyphens."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Storage:
    """Creates uniquely named containers and queues on Azurite; `cleanup()` removes them."""

    def __init__(self, azurite: Azurite) -> None:
        self.connection_string = azurite.connection_string
        self._blob_service = BlobServiceClient.from_connection_string(self.connection_string)
        self._containers: list[ContainerClient] = []
        self._queues: list[QueueClient] = []

    def container(self, prefix: str = "test") -> ContainerClient:
        client = self._blob_service.create_container(unique_name(prefix))
        self._containers.append(client)
        return client

    def queue(self, prefix: str = "test") -> QueueClient:
        client = QueueClient.from_connection_string(self.connection_string, unique_name(prefix))
        client.create_queue()
        self._queues.append(client)
        return client

    def cleanup(self) -> None:
        for container in self._containers:
            with contextlib.suppress(ResourceNotFoundError):
                container.delete_container()
            container.close()
        for queue in self._queues:
            with contextlib.suppress(ResourceNotFoundError):
                queue.delete_queue()
            queue.close()
        self._blob_service.close()


@pytest.fixture
def storage(azurite: Azurite) -> Iterator[Storage]:
    helper = Storage(azurite)
    try:
        yield helper
    finally:
        helper.cleanup()


# Parsed by StorageSettings (it selects local mode) and never connected to: no Azurite listens.
MEMORY_CONNECTION_STRING = "UseMemoryStorage=true"


class Stores:
    """A test's storage account: `clients(settings)` is what the components build for themselves."""

    def __init__(self, kind: str, connection_string: str, clients: Callable[[Any], Any]) -> None:
        self.kind = kind
        self.connection_string = connection_string
        self.clients = clients

    def drop(self, clients: Any, containers: list[str], queues: list[str]) -> None:
        """Delete what a test made (Azurite is shared by the session; memory goes with the test)."""
        if self.kind != "azurite":
            return
        for name in containers:
            with contextlib.suppress(ResourceNotFoundError):
                clients.blobs.delete_container(name)
        for name in queues:
            with contextlib.suppress(ResourceNotFoundError):
                clients.queues.delete_queue(name)


@pytest.fixture(params=["memory", "azurite"])
def stores(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Stores:
    if request.param == "memory":
        account = MemoryAccount()
        # The components build their clients at their wiring points through this one name,
        # imported there when called: the in-memory account takes its place for this test.
        monkeypatch.setattr("runtime.adapters.storage.StorageClients", account.clients)
        return Stores("memory", MEMORY_CONNECTION_STRING, account.clients)
    azurite: Azurite = request.getfixturevalue("azurite")
    return Stores("azurite", azurite.connection_string, StorageClients)


@pytest.fixture(scope="session")
def _arm_endpoint_server(snapshot_file: Callable[[int], Path]) -> Iterator[ArmEndpoint]:
    with ArmEndpoint(snapshot_file(DEFAULT_SNAPSHOT_CN)) as endpoint:
        yield endpoint


@pytest.fixture
def arm_endpoint(
    _arm_endpoint_server: ArmEndpoint, snapshot_file: Callable[[int], Path]
) -> Iterator[ArmEndpoint]:
    """The local ARM endpoint, reset: cn361 everywhere, no faults, zero request counts."""
    endpoint = _arm_endpoint_server
    endpoint.set_snapshot(snapshot_file(DEFAULT_SNAPSHOT_CN))
    endpoint.clear_location_overrides()
    endpoint.clear_faults()
    endpoint.reset_counts()
    endpoint.state.retry_after = DEFAULT_RETRY_AFTER
    endpoint.state.slow_seconds = DEFAULT_SLOW_SECONDS
    yield endpoint
    endpoint.clear_faults()
