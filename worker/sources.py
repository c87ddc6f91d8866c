"""Where a worker gets service tags: the ARM Service Tag Discovery API, or a download file.

Sources return the raw reply bytes; parsing is the core's job.

The ARM source must skip the SDK's model deserialisation, which costs ~0.7 s of CPU and
~150 MB per full reply. In azure-mgmt-network 33 passing `cls=` to `service_tags.list` does
not skip it (the models are built before `cls` is called), so the source sends the same GET
through the client's public `send_request`: the same pipeline (bearer token and ARM challenge
handling, retries with Retry-After, the client's TLS settings), and the raw body back.
See worker/arm_client.py for why that client is built without azure-mgmt-network.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from typing import Any

from core.errors import PermanentError, SnapshotError, TransientError
from core.ports import Fetched
from core.snapshot import DEFAULT_MAX_BYTES, MAX_BYTES_VARIABLE, decompress

log = logging.getLogger(__name__)

# ARM endpoints per cloud (Entra authorities are in runtime.identity).
ARM_ENDPOINTS = {
    "Public": "https://management.azure.com",
    "AzureGovernment": "https://management.usgovcloudapi.net",
    "AzureChina": "https://management.chinacloudapi.cn",
}
# The location asked for region-less (`global`) tags: any location returns the whole cloud.
DEFAULT_LOCATIONS = {"Public": "westeurope", "AzureGovernment": "usgovvirginia", "AzureChina": "chinanorth3"}


class UnknownLocation(PermanentError):
    """The source does not know this location (ARM answers 400/404 for it)."""


# A GA version every cloud serves (sovereign clouds lag behind the newest).
DEFAULT_API_VERSION = "2024-05-01"


class ArmSource:
    """The Service Tag Discovery API through an ARM pipeline client, one per cloud."""

    def __init__(
        self,
        clients: dict[str, Any],
        subscription_id: str,
        api_version: str = DEFAULT_API_VERSION,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._clients = clients
        self._subscription = subscription_id
        self._api_version = api_version
        self._max_bytes = max_bytes

    def fetch(self, cloud: str, location: str) -> Fetched:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            IncompleteReadError,
            ServiceRequestError,
            ServiceResponseError,
        )
        from azure.core.rest import HttpRequest

        client = self._clients.get(cloud)
        if client is None:
            raise PermanentError(f"no ARM client configured for cloud {cloud!r}")
        origin = f"{cloud} ARM serviceTags at {location}"
        path = (
            f"/subscriptions/{self._subscription}/providers/Microsoft.Network/locations/"
            f"{location}/serviceTags"
        )
        try:
            # format_url joins the path to the client's base URL, as generated clients do.
            request = HttpRequest("GET", client.format_url(path), params={"api-version": self._api_version})
            # Streamed into one buffer: reading it whole keeps the chunks and the joined copy
            # alive together, a 17 MB peak for a 3 MB reply.
            response = client.send_request(request, stream=True)
            try:
                response.raise_for_status()
                buffer = bytearray()
                for chunk in response.iter_bytes():
                    buffer += chunk
                    if len(buffer) > self._max_bytes:
                        raise _too_large(origin, self._max_bytes)
                body = bytes(buffer)
            finally:
                response.close()
        except ClientAuthenticationError as exc:
            # Also what a managed identity that is not ready yet looks like: retry.
            raise TransientError(f"{origin}: authentication failed ({exc.message})") from None
        except (ServiceRequestError, ServiceResponseError, IncompleteReadError) as exc:
            raise TransientError(f"{origin}: connection failed ({type(exc).__name__})") from None
        except HttpResponseError as exc:
            status = exc.status_code or 0
            code = getattr(exc.error, "code", None) if exc.error else None
            detail = f"HTTP {status}" + (f" {code}" if code else "")
            if status in (400, 404):
                raise UnknownLocation(
                    f"{origin}: {detail} (is {location!r} a location of {cloud}?)"
                ) from None
            if status == 403:
                raise PermanentError(
                    f"{origin}: {detail}; the identity lacks Microsoft.Network/locations/serviceTags/read"
                ) from None
            raise TransientError(f"{origin}: {detail}") from None
        return Fetched(body, origin)


class FileSource:
    """A download file (either shape, gzipped or not) from a path or an https URL."""

    def __init__(self, location: str, timeout: float = 60.0, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._location = location
        self._timeout = timeout
        self._max_bytes = max_bytes

    def fetch(self, cloud: str, location: str) -> Fetched:
        fetched = self._fetch()
        try:  # un-gzipped here, where the bound is known
            return fetched._replace(body=decompress(fetched.body, fetched.origin, limit=self._max_bytes))
        except SnapshotError as exc:
            raise PermanentError(str(exc)) from None

    def _fetch(self) -> Fetched:
        if self._location.startswith(("https://", "http://")):
            try:
                with urllib.request.urlopen(self._location, timeout=self._timeout) as reply:
                    return Fetched(self._bounded(reply.read(self._max_bytes + 1)), self._location)
            except urllib.error.HTTPError as exc:
                kind = PermanentError if exc.code in (400, 401, 403, 404, 410) else TransientError
                raise kind(f"{self._location}: HTTP {exc.code}") from None
            except (urllib.error.URLError, OSError) as exc:
                raise TransientError(f"{self._location}: {exc}") from None
        try:
            with open(self._location, "rb") as f:
                return Fetched(self._bounded(f.read(self._max_bytes + 1)), self._location)
        except FileNotFoundError:
            raise PermanentError(f"{self._location}: no such file") from None
        except OSError as exc:
            raise TransientError(f"{self._location}: {exc.strerror}") from None

    def _bounded(self, body: bytes) -> bytes:
        if len(body) > self._max_bytes:
            raise _too_large(self._location, self._max_bytes)
        return body


def _too_large(origin: str, limit: int) -> PermanentError:
    # Permanent: the same source gives the same size; an operator raises the limit and requeues.
    return PermanentError(
        f"{origin}: reply is over the {limit:,}-byte limit for a snapshot "
        f"(set {MAX_BYTES_VARIABLE} to allow more)"
    )


def arm_clients(
    *,
    subscription_id: str,
    credential_for: Any,
    endpoint: str | None = None,
    ca_bundle: str | None = None,
    retry_total: int = 3,
    retry_backoff: float = 0.8,
) -> dict[str, Any]:
    """ARM pipeline clients for every cloud. `credential_for(cloud)` gives the credential
    (its authority must match the cloud); `endpoint` overrides ARM (the local stack)."""
    from worker.arm_client import arm_pipeline_client

    clients = {}
    for cloud, default in ARM_ENDPOINTS.items():
        base = endpoint or default
        # azure-core's retry policy honours Retry-After on 429/503 and retries 5xx and resets;
        # what it gives up on comes back through the queue with the message.
        kwargs: dict[str, Any] = {"retry_total": retry_total, "retry_backoff_factor": retry_backoff}
        if ca_bundle:
            kwargs["connection_verify"] = ca_bundle
        clients[cloud] = arm_pipeline_client(
            credential_for(cloud), base_url=base, credential_scopes=[f"{default}/.default"], **kwargs
        )
    return clients
