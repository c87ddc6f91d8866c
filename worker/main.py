"""`servicetags worker`: take region messages from the queue and check each region.

The one wiring point of the worker: it reads settings, builds clients and hands them to
plain functions. Nothing connects at import time.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, NamedTuple

from core.ports import Message
from runtime.arguments import ArgumentParser
from runtime.component import run_component
from runtime.config import ConfigError, Env
from runtime.logs import LogSettings, log_event
from runtime.queue_loop import LoopSettings, QueueConsumer

log = logging.getLogger("worker")
SOURCES = ("arm", "file", "download-center")


class WorkerSettings(NamedTuple):
    storage: Any  # runtime.adapters.storage.StorageSettings
    cloud: str  # the deployment's cloud (storage and identity)
    source: str  # arm | file | download-center: what reports are made from
    source_file: str | None
    subscription_id: str | None
    arm_endpoint: str | None
    arm_ca_bundle: str | None
    dev_credential: bool
    arm_retries: int
    arm_retry_backoff: float
    loop: LoopSettings
    identity_wait: int
    logging: LogSettings
    runs_container: str = "runs"
    max_reply_bytes: int = 64 * 1024 * 1024  # SERVICETAGS_MAX_SNAPSHOT_BYTES
    observed: str | None = None  # a second source recorded beside the primary (lag), or None
    download_pages: str = "https://www.microsoft.com"
    download_files: str | None = None
    download_retries: int = 3
    download_timeout: float = 60.0

    @classmethod
    def from_env(cls, env: Env) -> WorkerSettings:
        from runtime.adapters.storage import StorageSettings

        source = env.choice("SERVICETAGS_SOURCE", SOURCES, "arm")
        observed_choice = env.choice("SERVICETAGS_OBSERVED_SOURCE", ("none", *SOURCES), "none")
        observed = None if observed_choice == "none" else observed_choice
        if observed == source:
            raise ConfigError(
                f"SERVICETAGS_OBSERVED_SOURCE={observed!r} is the primary source too; "
                "observe a different one (or none)"
            )
        uses = {source, observed}
        source_file = env.str("SERVICETAGS_SOURCE_FILE", required="file" in uses)
        subscription = env.str("AZURE_SUBSCRIPTION_ID", required="arm" in uses)
        arm_endpoint = env.str("SERVICETAGS_ARM_ENDPOINT")
        dev_credential = env.bool("SERVICETAGS_DEV_CREDENTIAL")
        if dev_credential and not arm_endpoint:
            raise ConfigError(
                "SERVICETAGS_DEV_CREDENTIAL=1 is for the local ARM endpoint only; "
                "set SERVICETAGS_ARM_ENDPOINT too, or unset it to use the managed identity"
            )
        return cls(
            storage=StorageSettings.from_env(env),
            cloud=env.cloud(),
            source=source,
            source_file=source_file,
            subscription_id=subscription,
            arm_endpoint=arm_endpoint,
            arm_ca_bundle=env.str("SERVICETAGS_ARM_CA_BUNDLE"),
            dev_credential=dev_credential,
            arm_retries=env.int("SERVICETAGS_ARM_RETRIES", 3, minimum=0, maximum=10),
            arm_retry_backoff=env.int("SERVICETAGS_ARM_RETRY_BACKOFF_MS", 800, minimum=0) / 1000,
            loop=LoopSettings.from_env(env),
            identity_wait=env.identity_wait(),
            logging=LogSettings.from_env(env),
            runs_container=env.str("SERVICETAGS_RUNS_CONTAINER", "runs") or "runs",
            max_reply_bytes=env.int("SERVICETAGS_MAX_SNAPSHOT_BYTES", 64 * 1024 * 1024, minimum=1024),
            observed=observed,
            download_pages=env.str("SERVICETAGS_DOWNLOAD_CENTER_URL") or "https://www.microsoft.com",
            download_files=env.str("SERVICETAGS_DOWNLOAD_FILES_URL"),
            download_retries=env.int("SERVICETAGS_DOWNLOAD_RETRIES", 3, minimum=0, maximum=10),
            download_timeout=float(env.int("SERVICETAGS_DOWNLOAD_TIMEOUT", 60, minimum=1, maximum=600)),
        )


def build_source(settings: WorkerSettings, kind: str) -> Any:
    """One TagSource: the ARM API, a file, or the Download Center's weekly file."""
    from runtime.identity import DevTokenCredential, azure_credential
    from worker.sources import ArmSource, FileSource, arm_clients

    if kind == "file":
        assert settings.source_file is not None
        return FileSource(settings.source_file)
    if kind == "download-center":
        from worker.download_center import DownloadCenterSource, download_pipeline_client

        client = download_pipeline_client(
            settings.download_pages,
            retry_total=settings.download_retries,
            retry_backoff=settings.arm_retry_backoff,
            timeout=settings.download_timeout,
        )
        return DownloadCenterSource(
            client, pages_base=settings.download_pages, files_base=settings.download_files
        )
    assert settings.subscription_id is not None
    credentials: dict[str, Any] = {}

    def credential_for(cloud: str) -> Any:
        if settings.dev_credential:
            return DevTokenCredential()
        return credentials.setdefault(cloud, azure_credential(cloud))

    clients_by_cloud = arm_clients(
        subscription_id=settings.subscription_id,
        credential_for=credential_for,
        endpoint=settings.arm_endpoint,
        ca_bundle=settings.arm_ca_bundle,
        retry_total=settings.arm_retries,
        retry_backoff=settings.arm_retry_backoff,
    )
    return ArmSource(clients_by_cloud, settings.subscription_id)


def build_consumer(settings: WorkerSettings, stop: threading.Event) -> QueueConsumer:
    from runtime.adapters.storage import open_storage
    from worker import run_progress
    from worker.handler import ParsedReplies, handle_message

    names = settings.storage
    clients = open_storage(
        names,
        settings.cloud,
        identity_wait=settings.identity_wait,
        containers=[names.snapshots_container, names.reports_container, settings.runs_container],
        queues=[names.regions_queue],
    )
    runs = clients.container(settings.runs_container)
    snapshots = clients.container(names.snapshots_container)
    reports = clients.container(names.reports_container)
    queue = clients.queue(names.regions_queue)
    poison = clients.poison(names.regions_queue)

    source = build_source(settings, settings.source)
    observed = build_source(settings, settings.observed) if settings.observed else None
    replies = ParsedReplies()

    def handle(message: Message) -> None:
        handle_message(
            message.content,
            source=source,
            snapshots=snapshots,
            reports=reports,
            runs=runs,
            enqueue=queue.send,
            replies=replies,
            observed=observed,
        )

    return QueueConsumer(
        queue,
        poison,
        handle,
        settings.loop,
        stop=stop,
        on_poison=lambda m, reason: run_progress.record_poisoned(m, reason, store=runs),
    )


def main(argv: list[str], prog: str = "servicetags worker") -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Check regions taken from the regions queue; "
        "configuration comes from SERVICETAGS_* environment variables.",
    )
    parser.add_argument(
        "--until-empty", action="store_true", help="return once the queue is drained (for jobs and tests)"
    )
    args = parser.parse_args(argv)

    def body(settings: WorkerSettings, stop: threading.Event) -> int:
        stats = build_consumer(settings, stop).run(until_empty=args.until_empty)
        log_event(log, "worker_stopped", "worker stopped", **stats._asdict())
        return 0

    return run_component(prog, lambda: WorkerSettings.from_env(Env()), body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
