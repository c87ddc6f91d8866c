"""Azure Storage adapters for the BlobStore and Queue ports, and the clients behind them.

Local mode uses a connection string (Azurite's published development account); in Azure,
account endpoints and DefaultAzureCredential (the component's managed identity): no key.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import suppress
from typing import Any, NamedTuple

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings
from azure.storage.queue import QueueClient, QueueServiceClient

from core.layout import poison_name
from core.ports import Blob, LostReceipt, Message
from runtime.config import ConfigError, Env


class StorageSettings(NamedTuple):
    connection_string: str | None
    blob_endpoint: str | None
    queue_endpoint: str | None
    regions_queue: str
    events_queue: str
    snapshots_container: str
    reports_container: str

    @classmethod
    def from_env(cls, env: Env) -> StorageSettings:
        conn = env.str("SERVICETAGS_STORAGE_CONNECTION_STRING")
        blob = env.str("SERVICETAGS_BLOB_ENDPOINT")
        queue = env.str("SERVICETAGS_QUEUE_ENDPOINT")
        if not conn and not (blob and queue):
            raise ConfigError(
                "set SERVICETAGS_BLOB_ENDPOINT and SERVICETAGS_QUEUE_ENDPOINT (Azure) or "
                "SERVICETAGS_STORAGE_CONNECTION_STRING (local mode)"
            )
        for name, value in (("SERVICETAGS_BLOB_ENDPOINT", blob), ("SERVICETAGS_QUEUE_ENDPOINT", queue)):
            if not conn and value and not value.startswith(("https://", "http://")):
                raise ConfigError(f"{name}={value!r} must be an https:// URL")
        return cls(
            connection_string=conn,
            blob_endpoint=blob,
            queue_endpoint=queue,
            regions_queue=env.str("SERVICETAGS_REGIONS_QUEUE", "regions") or "regions",
            events_queue=env.str("SERVICETAGS_EVENTS_QUEUE", "change-events") or "change-events",
            snapshots_container=env.str("SERVICETAGS_SNAPSHOTS_CONTAINER", "snapshots") or "snapshots",
            reports_container=env.str("SERVICETAGS_REPORTS_CONTAINER", "reports") or "reports",
        )

    @property
    def local(self) -> bool:
        return self.connection_string is not None


STORAGE_SCOPE = "https://storage.azure.com/.default"


def open_storage(
    settings: StorageSettings,
    cloud: str,
    *,
    containers: Iterable[str] = (),
    queues: Iterable[str] = (),
    identity_wait: int | None = None,
) -> StorageClients:
    """The one wiring of storage every command and component uses: the managed identity in
    Azure (waited for up to `identity_wait` seconds when given: a fresh job's identity may
    not be ready), or the local connection string; then, in local mode only, the containers
    and each queue with its poison queue created if missing (in Azure, Terraform owns them
    and the identities have no right to create them)."""
    from runtime.identity import azure_credential, wait_for_identity

    credential = None
    if not settings.local:
        credential = azure_credential(cloud)
        if identity_wait is not None:
            wait_for_identity(credential, STORAGE_SCOPE, max_wait=identity_wait)
    clients = StorageClients(settings, credential)
    if settings.local:
        clients.ensure(list(containers), [name for q in queues for name in (q, poison_name(q))])
    return clients


class StorageClients:
    """Builds service clients once per process; `credential` is only used without a
    connection string (and kept for the component's other Azure clients)."""

    def __init__(self, settings: StorageSettings, credential: Any = None) -> None:
        self.settings = settings
        self.credential = credential
        if settings.connection_string:
            try:
                self.blobs = BlobServiceClient.from_connection_string(settings.connection_string)
                self.queues = QueueServiceClient.from_connection_string(settings.connection_string)
            except ValueError as exc:  # the SDK's "malformed"; the value holds a key: never shown
                raise ConfigError(
                    "SERVICETAGS_STORAGE_CONNECTION_STRING is not a storage connection "
                    f"string ({_first_line(exc)})"
                ) from None
        else:
            self.blobs = BlobServiceClient(settings.blob_endpoint, credential=credential)  # type: ignore[arg-type]
            self.queues = QueueServiceClient(settings.queue_endpoint, credential=credential)  # type: ignore[arg-type]

    def container(self, name: str) -> AzureBlobStore:
        return AzureBlobStore(self.blobs.get_container_client(name))

    def queue(self, name: str) -> AzureQueue:
        return AzureQueue(self.queues.get_queue_client(name))

    def poison(self, name: str) -> AzureQueue:
        """The poison queue of queue `name`."""
        return self.queue(poison_name(name))

    def ensure(self, containers: list[str], queues: list[str]) -> None:
        """Create what is missing. Only in local mode: in Azure, Terraform owns the resources
        and the components' identities have no right to create them."""
        for name in containers:
            with suppress(ResourceExistsError):
                self.blobs.create_container(name)
        for name in queues:
            with suppress(ResourceExistsError):
                self.queues.create_queue(name)


class AzureBlobStore:
    def __init__(self, client: ContainerClient) -> None:
        self._client = client
        self.client = client  # for listings with properties (the local relay)
        self.name = client.container_name
        self.url = client.url

    def read(self, name: str) -> Blob | None:
        try:
            downloader = self._client.download_blob(name)
            return Blob(downloader.readall(), downloader.properties.etag)
        except ResourceNotFoundError:
            return None

    def create(
        self,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/json",
        metadata: dict[str, str] | None = None,
    ) -> bool:
        try:
            # overwrite=False sends If-None-Match: *, so the service refuses a second writer.
            self._client.upload_blob(
                name,
                data,
                overwrite=False,
                metadata=metadata,
                content_settings=ContentSettings(content_type=content_type),
            )
            return True
        except ResourceExistsError:
            return False

    def replace(
        self, name: str, data: bytes, *, etag: str | None, content_type: str = "application/json"
    ) -> str | None:
        settings = ContentSettings(content_type=content_type)
        blob = self._client.get_blob_client(name)  # its upload_blob returns the new etag
        try:
            if etag is None:
                result = blob.upload_blob(data, overwrite=False, content_settings=settings)
            else:
                result = blob.upload_blob(
                    data,
                    overwrite=True,
                    content_settings=settings,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ResourceExistsError, ResourceModifiedError):
            return None
        return str(result["etag"])

    def names(self, prefix: str = "") -> Iterator[str]:
        for item in self._client.list_blobs(name_starts_with=prefix or None):
            yield item.name

    def blob_url(self, name: str) -> str:
        return str(self._client.get_blob_client(name).url)


class AzureQueue:
    def __init__(self, client: QueueClient) -> None:
        self._client = client
        self.name = client.queue_name

    @staticmethod
    def _message(raw: Any) -> Message:
        inserted = raw.inserted_on.isoformat() if raw.inserted_on else ""
        return Message(raw.id, raw.pop_receipt or "", raw.content or "", raw.dequeue_count or 0, inserted)

    def receive(self, visibility_timeout: int) -> Message | None:
        raw = self._client.receive_message(visibility_timeout=visibility_timeout)
        return self._message(raw) if raw is not None else None

    def extend(self, message: Message, visibility_timeout: int) -> Message:
        try:
            updated = self._client.update_message(
                message.id, message.pop_receipt, visibility_timeout=visibility_timeout
            )
        except ResourceNotFoundError:  # deleted by whoever received it after us
            raise LostReceipt(f"message {message.id} is gone from {self.name}") from None
        except HttpResponseError as exc:
            _raise_lost_receipt(exc, message, self.name)
            raise
        if updated.pop_receipt is None:  # pragma: no cover - the service always hands out one
            raise LostReceipt(f"message {message.id}: the service returned no pop receipt")
        return message._replace(pop_receipt=updated.pop_receipt)

    def delete(self, message: Message) -> None:
        try:
            self._client.delete_message(message.id, message.pop_receipt)
        except ResourceNotFoundError:  # already gone: deleting is idempotent for us
            pass
        except HttpResponseError as exc:
            _raise_lost_receipt(exc, message, self.name)
            raise

    def send(self, content: str, *, delay: int = 0) -> None:
        # time_to_live=-1: a region or event message must not silently expire in a backlog.
        # A delay is the initial visibility timeout (a run's deadline), at most 7 days.
        self._client.send_message(content, time_to_live=-1, visibility_timeout=delay or None)

    def peek(self, count: int = 32) -> list[Message]:
        return [self._message(m) for m in self._client.peek_messages(max_messages=min(count, 32))]

    def depth(self) -> int:
        return int(self._client.get_queue_properties().approximate_message_count or 0)


def _raise_lost_receipt(exc: HttpResponseError, message: Message, queue: str) -> None:
    """LostReceipt for the service's "that receipt is stale" answer (400 PopReceiptMismatch)."""
    if getattr(exc, "error_code", None) == "PopReceiptMismatch":
        raise LostReceipt(
            f"message {message.id} in {queue}: its pop receipt no longer holds "
            "(its visibility ran out, or the service restarted)"
        ) from None


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
