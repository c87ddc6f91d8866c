"""`servicetags doctor [--local]`: can each component do what it needs, with its own identity?

One line per check, `OK` or `FAIL` with what is missing (the role, the scope, the resource)
and how to fix it; `SKIP` for what is not configured here. Exit 1 when anything failed.

Every probe leaves the pipeline as it was:

- a queue send puts a probe message that is invisible until one second before it expires, and
  the sender (or, for the producer, the worker) deletes it at once with the send's receipt;
- "receive" is a peek (the same read permission): taking a real message would hide it and
  count a delivery against its poison limit;
- a container "create" is a conditional write (If-Match on a blob that does not exist): the
  service checks the identity's right and the container first, then refuses the condition
  with 412, so nothing is written and no BlobCreated event is raised;
- the service-tag read is one GET; the ACS probe asks for the status of an operation that
  does not exist (404 when the identity may send); SMTP gets EHLO and NOOP, no message.

In Azure it runs as the manually started doctor job (terraform/doctor.tf), which carries the
producer, worker and notifier identities and names them in SERVICETAGS_<COMPONENT>_CLIENT_ID;
`--local` checks the stack `servicetags local up` started, with the Azurite development key.
"""

from __future__ import annotations

import json
import logging
import os
import re
import smtplib
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from core.errors import ServiceTagsError
from core.layout import poison_name
from runtime.arguments import ArgumentParser, fail
from runtime.config import Env

PROBE_TTL = 60  # seconds a probe message could live if its delete were lost
ACS_API_VERSION = "2023-03-31"
EVENTGRID_API_VERSION = "2022-06-15"
COMPONENTS = ("producer", "worker", "notifier")

# What each component is granted (terraform/identity.tf), to name in a failure.
QUEUE_ROLES = {
    "producer": "Storage Queue Data Message Sender",
    "worker": "Storage Queue Data Contributor",
    "notifier": "Storage Queue Data Contributor",
}
READ_ROLE, WRITE_ROLE = "Storage Blob Data Reader", "Storage Blob Data Contributor"
TAG_READER_ROLE = "servicetags-watch service tag reader (Microsoft.Network/locations/serviceTags/read)"


class Check(NamedTuple):
    status: str  # OK | FAIL | SKIP
    name: str  # "worker: queue regions: send"
    detail: str = ""


def line(check: Check) -> str:
    return f"{check.status:<4} {check.name}" + (f": {check.detail}" if check.detail else "")


# ---------------------------------------------------------------------------------------
# Pure judgements
# ---------------------------------------------------------------------------------------


class Target(NamedTuple):
    component: str
    kind: str  # queue | container
    name: str
    role: str
    local: bool


def storage_failure(target: Target, status: int | None, code: str | None) -> str:
    """What a storage error means for this component, and the fix."""
    code = code or f"HTTP {status}"
    if code in {"QueueNotFound", "ContainerNotFound"} or (status == 404 and code == f"HTTP {status}"):
        fix = (
            "restart the stack so it is created again: servicetags local down; servicetags local up"
            if target.local
            else "terraform apply (terraform/storage.tf creates it)"
        )
        return f"{target.kind} {target.name!r} does not exist ({code}); fix: {fix}"
    if status == 403:
        service = (
            "queueServices/default/queues" if target.kind == "queue" else "blobServices/default/containers"
        )
        return (
            f"the {target.component} identity lacks {target.role!r} on {target.kind} {target.name!r} "
            f"({code}); fix: terraform apply (terraform/identity.tf grants it), or az role assignment "
            f"create --role {target.role!r} --assignee-object-id <{target.component} principal id> "
            "--assignee-principal-type ServicePrincipal "
            f"--scope <storage account id>/{service}/{target.name}"
        )
    return f"{code}: unexpected answer from storage"


def arm_failure(status: int, code: str | None, subscription: str) -> str:
    code = code or f"HTTP {status}"
    if status == 401:
        return (
            f"ARM refused the worker's token ({code}); fix: the token must come from the worker's "
            "managed identity in the deployment's tenant and cloud (SERVICETAGS_CLOUD, "
            "SERVICETAGS_WORKER_CLIENT_ID)"
        )
    if status == 403:
        return (
            f"the worker identity lacks {TAG_READER_ROLE} on /subscriptions/{subscription} ({code}); "
            "fix: terraform apply (terraform/identity.tf, worker_service_tag_reader)"
        )
    if status in {400, 404}:
        return f"{code}: is the location one of the cloud's (SERVICETAGS_REGIONS, SERVICETAGS_CLOUD)?"
    return f"{code}: ARM answered with an error; try again, and check Azure status if it persists"


def event_subscription_checks(
    doc: Mapping[str, Any], *, queue: str, account: str | None, container: str
) -> list[Check]:
    """Does the Event Grid subscription (ARM GET body) deliver report BlobCreated events to `queue`?"""
    name = "events: Event Grid subscription"
    props = doc.get("properties") or {}
    destination = (
        (props.get("deliveryWithResourceIdentity") or {}).get("destination") or props.get("destination") or {}
    )
    dest = destination.get("properties") or {}
    problems = []
    if props.get("provisioningState") not in {None, "Succeeded"}:
        problems.append(f"provisioning state is {props.get('provisioningState')}")
    if destination.get("endpointType") != "StorageQueue":
        problems.append(f"delivers to {destination.get('endpointType') or 'nothing'}, not a storage queue")
    elif dest.get("queueName") != queue:
        problems.append(f"delivers to queue {dest.get('queueName')!r}, not {queue!r}")
    elif account and not str(dest.get("resourceId", "")).lower().endswith(
        f"/storageaccounts/{account.lower()}"
    ):
        problems.append(f"delivers to another account ({dest.get('resourceId')})")
    filt = props.get("filter") or {}
    if "Microsoft.Storage.BlobCreated" not in (filt.get("includedEventTypes") or []):
        problems.append("does not include Microsoft.Storage.BlobCreated")
    if f"/containers/{container}/" not in str(filt.get("subjectBeginsWith", "")):
        problems.append(f"its subject filter is not the {container!r} container")
    if problems:
        return [Check("FAIL", name, "; ".join(problems) + "; fix: terraform apply (terraform/eventgrid.tf)")]
    return [Check("OK", name, f"BlobCreated in {container!r} -> queue {queue!r}")]


def freshness_checks(
    states: Mapping[str, str | None],
    wanted: Iterable[str] | None,
    now: datetime,
    hours: int,
    *,
    local: bool = False,
) -> list[Check]:
    """Every wanted region (None: every region recorded) checked within `hours`?"""
    names = sorted(states) if wanted is None else list(wanted)
    fix = (
        "run the pipeline (servicetags produce; servicetags worker --until-empty)"
        if local
        else "start a run (Run now workflow, or az containerapp job start -n <producer job>)"
    )
    if not names:
        return [Check("FAIL", "regions: checked recently", f"no region has been checked yet; fix: {fix}")]
    stale, never = [], []
    for region in names:
        checked = states.get(region)
        if checked is None:
            never.append(region)
        elif now - datetime.fromisoformat(checked.replace("Z", "+00:00")) > timedelta(hours=hours):
            stale.append(f"{region} (last {checked})")
    if never or stale:
        parts = ([f"never checked: {', '.join(never)}"] if never else []) + (
            [f"older than {hours} h: {', '.join(stale)}"] if stale else []
        )
        return [
            Check(
                "FAIL",
                "regions: checked recently",
                "; ".join(parts) + f"; fix: {fix}, then look at the worker's executions and poison queue",
            )
        ]
    return [Check("OK", "regions: checked recently", f"{len(names)} regions within {hours} h")]


# ---------------------------------------------------------------------------------------
# Probes (the imperative shell)
# ---------------------------------------------------------------------------------------


def _first_line(message: object) -> str:
    return str(message or "").strip().splitlines()[0] if str(message or "").strip() else "no detail"


def _error(exc: Exception) -> tuple[int | None, str | None]:
    return getattr(exc, "status_code", None), (str(getattr(exc, "error_code", "") or "") or None)


def _storage_probe(target: Target, action: str, probe: Callable[[], str | None]) -> Check:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    name = f"{target.component}: {target.kind} {target.name}: {action}"
    try:
        note = probe()
    except ClientAuthenticationError as exc:
        return Check(
            "FAIL",
            name,
            f"no token for the {target.component} identity "
            f"({_first_line(exc.message)}); fix: attach the identity to this job and set "
            f"SERVICETAGS_{target.component.upper()}_CLIENT_ID",
        )
    except HttpResponseError as exc:
        status, code = _error(exc)
        if status == 403 and code is None:
            code = "AuthorizationPermissionMismatch"
        return Check("FAIL", name, storage_failure(target, status, code))
    except ServiceRequestError as exc:
        return Check(
            "FAIL",
            name,
            f"cannot reach the storage endpoint ({type(exc).__name__}); fix: check "
            "SERVICETAGS_BLOB_ENDPOINT / SERVICETAGS_QUEUE_ENDPOINT (local: is the stack running?)",
        )
    return Check("OK", name, note or "")


class Storage(NamedTuple):
    blobs: Any  # BlobServiceClient
    queues: Any  # QueueServiceClient


def queue_checks(
    component: str, storage: Storage, queue: str, *, local: bool, deleter: Storage | None
) -> list[Check]:
    """send (and delete the probe), receive (peek), and delete where the role allows it."""
    target = Target(component, "queue", queue, QUEUE_ROLES[component], local)
    client = storage.queues.get_queue_client(queue)
    content = json.dumps({"servicetags_doctor_probe": str(uuid.uuid4())})
    sent: dict[str, Any] = {}

    def send() -> str:
        # Invisible for all but its last second: no consumer sees it even if the delete is lost.
        sent["message"] = client.send_message(
            content, visibility_timeout=PROBE_TTL - 1, time_to_live=PROBE_TTL
        )
        return "probe message sent (invisible)"

    checks = [_storage_probe(target, "send", send)]
    if component == "producer":  # a sender only: the worker's identity removes the probe
        if "message" in sent and deleter is not None:
            message = sent["message"]
            try:
                deleter.queues.get_queue_client(queue).delete_message(message.id, message.pop_receipt)
            except Exception:  # it expires unseen within PROBE_TTL anyway
                sent.clear()
        return checks

    def peek() -> str:
        client.peek_messages(max_messages=1)
        return "peek allowed (a real receive would hide a message)"

    def delete() -> str:
        message = sent.get("message")
        if message is not None:
            client.delete_message(message.id, message.pop_receipt)
            return "probe message deleted"
        # No probe to delete: a made-up message id still tells authorisation from absence.
        try:
            client.delete_message(str(uuid.uuid4()), "AgAAAAMAAAAAAAAAAAAAAAAAAAA=")
        except Exception as exc:
            if _error(exc)[1] != "MessageNotFound":
                raise
        return "delete allowed"

    return [*checks, _storage_probe(target, "receive", peek), _storage_probe(target, "delete", delete)]


def container_checks(
    component: str, storage: Storage, container: str, *, write: bool, local: bool
) -> list[Check]:
    from azure.core import MatchConditions
    from azure.core.exceptions import HttpResponseError

    target = Target(component, "container", container, WRITE_ROLE if write else READ_ROLE, local)
    client = storage.blobs.get_container_client(container)

    def read() -> str:
        next(iter(client.list_blobs(results_per_page=1).by_page()), None)
        return "list allowed"

    def create() -> str:
        blob = client.get_blob_client(f"doctor/{uuid.uuid4()}.probe")
        try:
            blob.upload_blob(
                b"", overwrite=True, etag='"0x0DOCTOR"', match_condition=MatchConditions.IfNotModified
            )
        except HttpResponseError as exc:
            if exc.status_code == 412:
                return "create allowed (probe refused by its condition, nothing written)"
            raise
        blob.delete_blob()  # a service that ignored the condition: take the probe back
        return "create allowed"

    checks = [_storage_probe(target, "read", read)]
    return [*checks, _storage_probe(target, "create", create)] if write else checks


def arm_check(
    credential: Any,
    *,
    subscription: str,
    cloud: str,
    location: str,
    endpoint: str | None,
    ca_bundle: str | None,
) -> Check:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
    from azure.core.rest import HttpRequest

    from worker.sources import DEFAULT_API_VERSION, arm_clients

    name = f"worker: read service tags ({cloud}, {location})"
    client = arm_clients(
        subscription_id=subscription,
        credential_for=lambda _: credential,
        endpoint=endpoint,
        ca_bundle=ca_bundle,
        retry_total=1,
        retry_backoff=0.2,
    )[cloud]
    path = f"/subscriptions/{subscription}/providers/Microsoft.Network/locations/{location}/serviceTags"
    try:
        response = client.send_request(
            HttpRequest("GET", client.format_url(path), params={"api-version": DEFAULT_API_VERSION})
        )
        response.raise_for_status()
        count = len(response.json().get("values", []))
    except ClientAuthenticationError as exc:
        if exc.status_code:
            return Check("FAIL", name, arm_failure(exc.status_code, _arm_code(exc), subscription))
        return Check(
            "FAIL",
            name,
            f"no token for the worker identity ({_first_line(exc.message)}); fix: "
            "attach it and set SERVICETAGS_WORKER_CLIENT_ID",
        )
    except HttpResponseError as exc:
        return Check("FAIL", name, arm_failure(exc.status_code or 0, _arm_code(exc), subscription))
    except ServiceRequestError as exc:
        return Check(
            "FAIL",
            name,
            f"cannot reach ARM ({type(exc).__name__}); fix: check the network "
            "(local: SERVICETAGS_ARM_ENDPOINT, is the stack running?)",
        )
    return Check("OK", name, f"one GET, {count} tags")


def download_center_check(pages: str, cloud: str) -> Check:
    """The worker's `download-center` source: one GET of the cloud's details page, which must
    link the current weekly file (the file itself is not downloaded)."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError
    from azure.core.rest import HttpRequest

    from core.download_page import find_file_link
    from worker.download_center import DownloadCenterSource, download_pipeline_client

    name = f"worker: read the Download Center page ({cloud})"
    try:
        url = DownloadCenterSource(None, pages_base=pages).page_url(cloud)
    except ServiceTagsError as exc:
        return Check("FAIL", name, str(exc))
    client = download_pipeline_client(pages, retry_total=1, retry_backoff=0.2, timeout=30)
    try:
        response = client.send_request(HttpRequest("GET", url))
        response.raise_for_status()
        link = find_file_link(response.text())
    except HttpResponseError as exc:
        return Check(
            "FAIL",
            name,
            f"HTTP {exc.status_code} from {url}; fix: check "
            "SERVICETAGS_DOWNLOAD_CENTER_URL and the worker's outbound network",
        )
    except ServiceRequestError as exc:
        return Check(
            "FAIL",
            name,
            f"cannot reach {url} ({type(exc).__name__}); fix: check the network "
            "(local: is the stack running?)",
        )
    if link is None:
        return Check(
            "FAIL",
            name,
            f"{url} links no service-tags file (the page changed?); the worker "
            "would poison every region: switch SERVICETAGS_SOURCE to arm meanwhile",
        )
    return Check("OK", name, f"one GET, the page links {link.url.rsplit('/', 1)[-1]}")


def _arm_code(exc: Any) -> str | None:
    error = getattr(exc, "error", None)
    if error is not None and getattr(error, "code", None):
        return str(error.code)
    try:
        return str(exc.response.json()["error"]["code"])
    except Exception:
        return None


def smtp_check(smtp: Mapping[str, Any]) -> Check:
    host, port = smtp["host"], smtp["port"]
    name = f"notifier: mail sender (SMTP {host}:{port})"
    try:
        with smtplib.SMTP(host, port, timeout=10) as server:
            server.ehlo()
            if smtp.get("starttls"):
                import ssl

                server.starttls(context=ssl.create_default_context())
                server.ehlo()
            if smtp.get("username"):
                server.login(smtp["username"], smtp.get("password") or "")
            code, _ = server.noop()
            if code != 250:
                return Check("FAIL", name, f"NOOP answered {code}; fix: check the server's logs")
    except smtplib.SMTPAuthenticationError as exc:
        return Check(
            "FAIL",
            name,
            f"login refused ({exc.smtp_code}); fix: SERVICETAGS_SMTP_USERNAME / SERVICETAGS_SMTP_PASSWORD",
        )
    except (OSError, smtplib.SMTPException) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        return Check(
            "FAIL",
            name,
            f"cannot reach the SMTP server ({reason}); fix: start it, or set "
            "SERVICETAGS_SMTP_HOST / SERVICETAGS_SMTP_PORT (local: servicetags local up)",
        )
    return Check("OK", name, "EHLO and NOOP answered")


def acs_check(credential: Any, endpoint: str) -> Check:
    from azure.core import PipelineClient
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
    from azure.core.pipeline.policies import BearerTokenCredentialPolicy, RetryPolicy
    from azure.core.rest import HttpRequest

    name = f"notifier: mail sender (ACS {endpoint})"
    client: PipelineClient[Any, Any] = PipelineClient(
        endpoint,
        policies=[
            RetryPolicy(retry_total=1),
            BearerTokenCredentialPolicy(credential, "https://communication.azure.com//.default"),
        ],
    )
    url = f"{endpoint.rstrip('/')}/emails/operations/{uuid.uuid4()}"
    try:
        response = client.send_request(HttpRequest("GET", url, params={"api-version": ACS_API_VERSION}))
    except ClientAuthenticationError as exc:
        return Check("FAIL", name, f"no token for the notifier identity ({_first_line(exc.message)})")
    except ServiceRequestError as exc:
        return Check("FAIL", name, f"cannot reach ACS ({type(exc).__name__}); fix: SERVICETAGS_ACS_ENDPOINT")
    if response.status_code == 404:
        return Check("OK", name, "authorised (status of an unknown operation: 404)")
    if response.status_code in {401, 403}:
        return Check(
            "FAIL",
            name,
            f"HTTP {response.status_code}: the notifier identity lacks 'Communication "
            "and Email Service Owner' on the Communication Service; fix: terraform apply "
            "(terraform/identity.tf, notifier_email)",
        )
    return Check("FAIL", name, f"HTTP {response.status_code}: unexpected answer")


def event_grid_check(credential: Any, subscription_id: str, **expected: Any) -> list[Check]:
    from azure.core.exceptions import HttpResponseError, ServiceRequestError
    from azure.core.rest import HttpRequest

    from worker.arm_client import arm_pipeline_client
    from worker.sources import ARM_ENDPOINTS

    base = ARM_ENDPOINTS[expected.pop("cloud")]
    client = arm_pipeline_client(
        credential, base_url=base, credential_scopes=[f"{base}/.default"], retry_total=1
    )
    try:
        response = client.send_request(
            HttpRequest("GET", f"{base}{subscription_id}", params={"api-version": EVENTGRID_API_VERSION})
        )
        response.raise_for_status()
    except HttpResponseError as exc:
        if exc.status_code == 404:
            detail = "the subscription does not exist; fix: terraform apply (terraform/eventgrid.tf)"
        elif exc.status_code == 403:
            detail = (
                "the notifier identity lacks 'EventGrid EventSubscription Reader' on the system "
                "topic; fix: terraform apply (terraform/doctor.tf)"
            )
        elif exc.status_code:
            detail = f"HTTP {exc.status_code} {_arm_code(exc) or ''}".rstrip()
        else:
            detail = f"no answer ({_first_line(exc.message)})"
        return [Check("FAIL", "events: Event Grid subscription", detail)]
    except ServiceRequestError as exc:
        return [Check("FAIL", "events: Event Grid subscription", f"cannot reach ARM ({type(exc).__name__})")]
    return event_subscription_checks(response.json(), **expected)


def relay_check(state_dir: Path, *, queue: str, container: str) -> Check:
    """Local mode: the relay stands in for the Event Grid subscription."""
    name = "events: blob-event relay (local Event Grid)"
    info_path = state_dir / "relay" / "relay.json"
    fix = "fix: servicetags local down; servicetags local up"
    if not info_path.exists():
        return Check("FAIL", name, f"the relay is not running ({info_path} is missing); {fix}")
    info = json.loads(info_path.read_text())
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return Check("FAIL", name, f"the relay (pid {info['pid']}) is gone; {fix}")
    except PermissionError:
        pass
    if info.get("container") != container or info.get("target") != f"queue {queue}":
        return Check(
            "FAIL",
            name,
            f"relays {info.get('container')!r} to {info.get('target')!r}, not "
            f"{container!r} to queue {queue!r}; {fix}",
        )
    return Check("OK", name, f"BlobCreated in {container!r} -> queue {queue!r}")


def region_states(storage: Storage, container: str, cloud: str) -> dict[str, str | None]:
    client = storage.blobs.get_container_client(container)
    states: dict[str, str | None] = {}
    for item in client.list_blobs(name_starts_with=f"{cloud}/"):
        if item.name.endswith("/latest.json"):
            doc = json.loads(client.download_blob(item.name).readall())
            states[str(doc.get("region") or item.name.split("/")[1])] = doc.get("last_checked_at")
    return states


def _known_regions(storage: Storage, container: str, cloud: str) -> list[str] | None:
    """`all`: the regions the workers recorded, plus global; None before the first run."""
    from azure.core.exceptions import ResourceNotFoundError

    from core.layout import regions_name

    try:
        data = storage.blobs.get_container_client(container).download_blob(regions_name(cloud)).readall()
    except ResourceNotFoundError:
        return None
    return [*json.loads(data)["regions"], "global"]


# ---------------------------------------------------------------------------------------
# Wiring
# ---------------------------------------------------------------------------------------


class Settings(NamedTuple):
    env: Env
    storage: Any  # StorageSettings
    cloud: str
    local: bool
    client_ids: dict[str, str | None]
    regions: tuple[str, ...] | None  # None: all


def _settings(environ: Mapping[str, str]) -> Settings:
    from runtime.adapters.storage import StorageSettings

    env = Env(environ)
    storage = StorageSettings.from_env(env)
    text = (env.str("SERVICETAGS_REGIONS", "all") or "all").lower()
    regions = (
        None
        if text == "all"
        else tuple(dict.fromkeys([r.strip() for r in text.split(",") if r.strip()] + ["global"]))
    )
    return Settings(
        env,
        storage,
        env.cloud(),
        storage.local,
        {c: env.str(f"SERVICETAGS_{c.upper()}_CLIENT_ID") for c in COMPONENTS},
        regions,
    )


def _storage(settings: Settings, credential: Any) -> Storage:
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    # One retry and a short connect timeout: a doctor should answer, not wait out an outage.
    s = settings.storage
    options: dict[str, Any] = {"retry_total": 1, "connection_timeout": 10}
    if s.connection_string:
        return Storage(
            BlobServiceClient.from_connection_string(s.connection_string, **options),
            QueueServiceClient.from_connection_string(s.connection_string, **options),
        )
    return Storage(
        BlobServiceClient(s.blob_endpoint, credential=credential, **options),
        QueueServiceClient(s.queue_endpoint, credential=credential, **options),
    )


def _identities(settings: Settings) -> tuple[dict[str, Any], list[Check]]:
    """Each component's managed identity, with one token fetched first: without it every probe
    would fail the same way, slowly. The managed identity itself, not DefaultAzureCredential's
    chain: a check must never pass with someone else's login."""
    from azure.identity import ManagedIdentityCredential

    credentials: dict[str, Any] = {}
    checks: list[Check] = []
    for component, client_id in settings.client_ids.items():
        variable = f"SERVICETAGS_{component.upper()}_CLIENT_ID"
        if not client_id:
            checks.append(Check("SKIP", f"{component}: all checks", f"{variable} is not set"))
            continue
        credential = ManagedIdentityCredential(client_id=client_id)
        try:
            credential.get_token("https://storage.azure.com/.default")
        except Exception as exc:
            checks.append(
                Check(
                    "FAIL",
                    f"{component}: identity",
                    f"no token for client id {client_id} "
                    f"({_first_line(exc)}); fix: attach the {component} identity to this "
                    f"job (terraform/doctor.tf) and check {variable}",
                )
            )
            continue
        checks.append(Check("OK", f"{component}: identity", f"token for client id {client_id}"))
        credentials[component] = credential
    return credentials, checks


def run_checks(settings: Settings) -> list[Check]:
    env, s = settings.env, settings.storage
    credentials, checks = ({}, []) if settings.local else _identities(settings)
    storages = {
        c: _storage(settings, credentials.get(c)) for c in COMPONENTS if settings.local or c in credentials
    }
    if "producer" in storages:
        checks += _producer_checks(settings, storages["producer"], storages.get("worker"))
    if "worker" in storages:
        checks += _worker_checks(settings, storages["worker"], credentials.get("worker"))
    if "notifier" in storages:
        checks += _notifier_checks(settings, storages["notifier"], credentials.get("notifier"))
    checks += _events_checks(settings, credentials.get("notifier"))
    reader = storages.get("producer") or storages.get("worker")
    if reader is not None:
        try:
            states = region_states(reader, s.snapshots_container, settings.cloud)
            wanted = (
                settings.regions
                if settings.regions is not None
                else _known_regions(reader, s.snapshots_container, settings.cloud)
            )
        except Exception as exc:
            checks.append(
                Check(
                    "FAIL",
                    "regions: checked recently",
                    f"cannot read {s.snapshots_container!r} "
                    f"({_error(exc)[1] or type(exc).__name__}); see the read check above",
                )
            )
        else:
            hours = env.int("SERVICETAGS_STALENESS_HOURS", 30, minimum=1)
            checks += freshness_checks(states, wanted, datetime.now(UTC), hours, local=settings.local)
    return checks


def _producer_checks(settings: Settings, producer: Storage, worker: Storage | None) -> list[Check]:
    s, local = settings.storage, settings.local
    return [
        *queue_checks("producer", producer, s.regions_queue, local=local, deleter=worker),
        *container_checks("producer", producer, s.snapshots_container, write=False, local=local),
    ]


def _worker_checks(settings: Settings, worker: Storage, credential: Any) -> list[Check]:
    from runtime.identity import DevTokenCredential
    from worker.sources import DEFAULT_LOCATIONS

    env, s, local = settings.env, settings.storage, settings.local
    checks: list[Check] = []
    for queue in (s.regions_queue, poison_name(s.regions_queue)):
        checks += queue_checks("worker", worker, queue, local=local, deleter=None)
    for container in (s.snapshots_container, s.reports_container):
        checks += container_checks("worker", worker, container, write=True, local=local)
    # Each source the worker reads (the primary and the observed one), checked as it reads it.
    sources = {
        env.str("SERVICETAGS_SOURCE", "arm") or "arm",
        env.str("SERVICETAGS_OBSERVED_SOURCE") or "none",
    }
    if "download-center" in sources:
        checks.append(
            download_center_check(
                env.str("SERVICETAGS_DOWNLOAD_CENTER_URL") or "https://www.microsoft.com", settings.cloud
            )
        )
    if "arm" not in sources:
        return checks
    subscription = env.str("AZURE_SUBSCRIPTION_ID")
    if not subscription:
        return [*checks, Check("FAIL", "worker: read service tags", "AZURE_SUBSCRIPTION_ID is not set")]
    if local or env.bool("SERVICETAGS_DEV_CREDENTIAL"):
        credential = DevTokenCredential()
    location = next((r for r in settings.regions or () if r != "global"), DEFAULT_LOCATIONS[settings.cloud])
    return [
        *checks,
        arm_check(
            credential,
            subscription=subscription,
            cloud=settings.cloud,
            location=location,
            endpoint=env.str("SERVICETAGS_ARM_ENDPOINT"),
            ca_bundle=env.str("SERVICETAGS_ARM_CA_BUNDLE"),
        ),
    ]


def _notifier_checks(settings: Settings, notifier: Storage, credential: Any) -> list[Check]:
    s, local = settings.storage, settings.local
    notifications = (
        settings.env.str("SERVICETAGS_NOTIFICATIONS_CONTAINER", "notifications") or "notifications"
    )
    checks: list[Check] = []
    for queue in (s.events_queue, poison_name(s.events_queue)):
        checks += queue_checks("notifier", notifier, queue, local=local, deleter=None)
    checks += container_checks("notifier", notifier, s.reports_container, write=False, local=local)
    checks += container_checks("notifier", notifier, notifications, write=True, local=local)
    # The impact step's results, read into every message (terraform/impact.tf, notifier_impact).
    impact = settings.env.str("SERVICETAGS_IMPACT_CONTAINER", "impact") or "impact"
    if impact.lower() != "none":
        checks += container_checks("notifier", notifier, impact, write=False, local=local)
    return [
        *checks,
        _mail_check(settings, credential),
        *channel_secret_checks(settings.env.mapping, credential),
    ]


def channel_secret_checks(environ: Mapping[str, str], credential: Any) -> list[Check]:
    """Each configured channel's secrets (webhook URL, signing keys) can be read, from Key Vault
    with the notifier's identity or locally from the environment or a folder. Values are never
    shown: a URL is a credential."""
    from core.errors import ServiceTagsError
    from notifier.channels import parse_channels
    from notifier.secrets import reader_from_env

    text = environ.get("SERVICETAGS_CHANNELS", "")
    if not text.strip():
        return []
    try:
        channels = parse_channels(text)
        read = reader_from_env(environ, credential)
    except ServiceTagsError as exc:
        return [Check("FAIL", "notifier: channels", f"{exc}; fix: correct SERVICETAGS_CHANNELS")]
    checks = []
    vault = environ.get("SERVICETAGS_KEYVAULT_URL")
    fix = (
        "fix: grant the notifier Key Vault Secrets User on the vault (terraform/keyvault.tf) and set "
        "the secret"
        if vault
        else "fix: set the secret"
    )
    for channel in channels:
        for secret in (channel.url_secret, *channel.signing_secret_names):
            name = f"notifier: channel {channel.key}: secret {secret}"
            try:
                read(secret)
            except ServiceTagsError as exc:
                checks.append(Check("FAIL", name, f"{exc}; {fix}"))
                continue
            checks.append(Check("OK", name, "readable (value not shown)"))
    return checks


def _mail_check(settings: Settings, credential: Any) -> Check:
    env = settings.env
    backend = env.choice("SERVICETAGS_MAIL_BACKEND", ("smtp", "acs"), "smtp")
    if backend == "smtp":
        return smtp_check(
            {
                "host": env.str("SERVICETAGS_SMTP_HOST", "localhost"),
                "port": env.int("SERVICETAGS_SMTP_PORT", 25, minimum=1, maximum=65535),
                "starttls": env.bool("SERVICETAGS_SMTP_STARTTLS"),
                "username": env.str("SERVICETAGS_SMTP_USERNAME"),
                "password": env.str("SERVICETAGS_SMTP_PASSWORD"),
            }
        )
    endpoint = env.str("SERVICETAGS_ACS_ENDPOINT")
    if not endpoint or credential is None:
        return Check(
            "SKIP",
            "notifier: mail sender (ACS)",
            "no endpoint with a managed identity to probe "
            "(a connection string is not checked: it holds a key)",
        )
    return acs_check(credential, endpoint)


def _events_checks(settings: Settings, credential: Any) -> list[Check]:
    s = settings.storage
    if settings.local:
        state_dir = settings.env.str("SERVICETAGS_LOCAL_STATE_DIR")
        if not state_dir:
            return [Check("SKIP", "events: blob-event relay", "SERVICETAGS_LOCAL_STATE_DIR is not set")]
        return [relay_check(Path(state_dir), queue=s.events_queue, container=s.reports_container)]
    subscription_id = settings.env.str("SERVICETAGS_EVENT_SUBSCRIPTION_ID")
    if not subscription_id or credential is None:
        return [
            Check(
                "SKIP",
                "events: Event Grid subscription",
                "SERVICETAGS_EVENT_SUBSCRIPTION_ID or the notifier identity is not set",
            )
        ]
    account = re.match(r"https?://([^.]+)\.", s.queue_endpoint or "")
    return event_grid_check(
        credential,
        subscription_id,
        queue=s.events_queue,
        container=s.reports_container,
        account=account.group(1) if account else None,
        cloud=settings.cloud,
    )


def _local_environ(state_dir: Path) -> dict[str, str]:
    from devstack.stack import read_state

    # Not `running()`: a stack with a dead service is exactly what the checks should name.
    state = read_state(state_dir.resolve())
    if state is None:
        raise ServiceTagsError(
            f"no local stack is running from {state_dir}; start it with `servicetags local up`"
        )
    return dict(state["env"])


def main(argv: list[str], prog: str = "servicetags doctor") -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Check that each component can do what it needs, "
        "with its own identity: one line per check, exit 1 when any fails.",
    )
    parser.add_argument(
        "--local", action="store_true", help="check the local stack started by `servicetags local up`"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="with --local: the stack's directory (default: $SERVICETAGS_LOCAL_STATE_DIR or ./.local)",
    )
    args = parser.parse_args(argv)
    # The SDKs log every failed attempt; the check lines already say what failed and why.
    logging.getLogger("azure").setLevel(logging.CRITICAL)
    try:
        environ: Mapping[str, str] = os.environ
        if args.local:
            state_dir = args.state_dir or Path(os.environ.get("SERVICETAGS_LOCAL_STATE_DIR") or ".local")
            # The stack's values first; explicit SERVICETAGS_* settings in the environment win.
            environ = {
                **_local_environ(state_dir),
                **{
                    k: v
                    for k, v in os.environ.items()
                    if k.startswith("SERVICETAGS_") and k not in {"SERVICETAGS_STORAGE_CONNECTION_STRING"}
                },
            }
        settings = _settings(environ)
        if args.local and not settings.local:
            return fail(prog, "--local needs the stack's connection string")
        checks = run_checks(settings)
    except ServiceTagsError as exc:
        return fail(prog, str(exc))
    for check in checks:
        print(line(check), flush=True)
    failed = sum(c.status == "FAIL" for c in checks)
    print(f"{len(checks)} checks, {failed} failed" if failed else f"{len(checks)} checks, all OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
