"""`servicetags impact-worker`: report BlobCreated events from the `impact` queue to impact
blobs and `rule_impact` log records. The one wiring point of the impact step.

Rules come from Azure Resource Graph with the component's managed identity (Reader on the
configured subscriptions or management groups), or from files (`SERVICETAGS_RULES_SOURCE=file`).
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

log = logging.getLogger("impact")

ARM_ENDPOINTS = {
    "Public": "https://management.azure.com",
    "AzureGovernment": "https://management.usgovcloudapi.net",
    "AzureChina": "https://management.chinacloudapi.cn",
}


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (text or "").split(",") if n.strip())


class ImpactSettings(NamedTuple):
    storage: Any  # runtime.adapters.storage.StorageSettings
    cloud: str
    queue: str
    container: str
    source: str  # resource-graph | file
    rules_paths: tuple[str, ...]
    subscriptions: tuple[str, ...]
    management_groups: tuple[str, ...]
    endpoint: str
    ca_bundle: str | None
    dev_credential: bool
    retries: int
    retry_backoff: float
    loop: LoopSettings
    logging: LogSettings
    identity_wait: int = 300

    @classmethod
    def from_env(cls, env: Env) -> ImpactSettings:
        from runtime.adapters.storage import StorageSettings

        cloud = env.cloud()
        source = env.choice("SERVICETAGS_RULES_SOURCE", ("resource-graph", "file"), "resource-graph")
        paths = _names(env.str("SERVICETAGS_RULES_PATH", required=source == "file"))
        groups = _names(env.str("SERVICETAGS_IMPACT_MANAGEMENT_GROUPS"))
        subscriptions = _names(
            env.str("SERVICETAGS_IMPACT_SUBSCRIPTIONS") or env.str("AZURE_SUBSCRIPTION_ID")
        )
        if source == "resource-graph" and not (subscriptions or groups):
            raise ConfigError(
                "set SERVICETAGS_IMPACT_SUBSCRIPTIONS (or AZURE_SUBSCRIPTION_ID) or "
                "SERVICETAGS_IMPACT_MANAGEMENT_GROUPS: the scopes whose rules are read"
            )
        endpoint = env.str("SERVICETAGS_RESOURCE_GRAPH_ENDPOINT")
        dev_credential = env.bool("SERVICETAGS_DEV_CREDENTIAL")
        if dev_credential and source == "resource-graph" and not endpoint:
            raise ConfigError(
                "SERVICETAGS_DEV_CREDENTIAL=1 is for the local Resource Graph stand-in only; set "
                "SERVICETAGS_RESOURCE_GRAPH_ENDPOINT too, or unset it to use the managed identity"
            )
        return cls(
            storage=StorageSettings.from_env(env),
            cloud=cloud,
            queue=env.str("SERVICETAGS_IMPACT_QUEUE", "impact") or "impact",
            container=env.str("SERVICETAGS_IMPACT_CONTAINER", "impact") or "impact",
            source=source,
            rules_paths=paths,
            subscriptions=subscriptions,
            management_groups=groups,
            endpoint=endpoint or ARM_ENDPOINTS[cloud],
            ca_bundle=env.str("SERVICETAGS_RESOURCE_GRAPH_CA_BUNDLE"),
            dev_credential=dev_credential,
            retries=env.int("SERVICETAGS_ARM_RETRIES", 3, minimum=0, maximum=10),
            retry_backoff=env.int("SERVICETAGS_ARM_RETRY_BACKOFF_MS", 800, minimum=0) / 1000,
            loop=LoopSettings.from_env(env),
            logging=LogSettings.from_env(env),
            identity_wait=env.identity_wait(),
        )


def rules_reader(settings: ImpactSettings, credential: Any) -> Any:
    """A function that reads the rule set afresh (each report sees the rules of its time)."""
    if settings.source == "file":
        from impact.rule_files import read_rules

        return lambda: read_rules(settings.rules_paths)
    from impact.resource_graph import ResourceGraphSource, resource_graph_client

    client = resource_graph_client(
        credential=credential,
        endpoint=settings.endpoint,
        ca_bundle=settings.ca_bundle,
        retries=settings.retries,
        backoff=settings.retry_backoff,
        scope=f"{ARM_ENDPOINTS[settings.cloud]}/.default",
    )
    return ResourceGraphSource(
        client, subscriptions=list(settings.subscriptions), management_groups=list(settings.management_groups)
    ).fetch


def build_consumer(settings: ImpactSettings, stop: threading.Event) -> QueueConsumer:
    from impact.handler import handle_report
    from notifier.events import NotAReportEvent, parse_queue_message
    from runtime.adapters.storage import open_storage
    from runtime.identity import DevTokenCredential, azure_credential

    s = settings.storage
    clients = open_storage(
        s,
        settings.cloud,
        identity_wait=settings.identity_wait,
        containers=[s.reports_container, s.snapshots_container, settings.container],
        queues=[settings.queue],
    )
    storage_credential = clients.credential
    reports, snapshots = clients.container(s.reports_container), clients.container(s.snapshots_container)
    results = clients.container(settings.container)
    graph_credential = None
    if settings.source == "resource-graph":
        graph_credential = (
            DevTokenCredential()
            if settings.dev_credential
            else (storage_credential or azure_credential(settings.cloud))
        )
    rules = rules_reader(settings, graph_credential)
    ignored = 0

    def handle(message: Message) -> None:
        nonlocal ignored
        try:
            event = parse_queue_message(message.content, expected_container=s.reports_container)
        except NotAReportEvent as exc:
            ignored += 1
            log_event(log, "event_ignored", str(exc), message_id=message.id, ignored_total=ignored)
            return
        handle_report(event.blob_name, reports=reports, snapshots=snapshots, results=results, rules=rules)

    queue, poison = clients.queue(settings.queue), clients.poison(settings.queue)
    return QueueConsumer(queue, poison, handle, settings.loop, stop=stop)


def main(argv: list[str], prog: str = "servicetags impact-worker") -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Match each new change report against your rules (Azure "
        "Resource Graph or files). Configuration comes from SERVICETAGS_* environment variables.",
    )
    parser.add_argument("--until-empty", action="store_true", help="return once the queue is drained")
    args = parser.parse_args(argv)

    def body(settings: ImpactSettings, stop: threading.Event) -> int:
        stats = build_consumer(settings, stop).run(until_empty=args.until_empty)
        log_event(log, "impact_stopped", "impact worker stopped", **stats._asdict())
        return 0

    return run_component(prog, lambda: ImpactSettings.from_env(Env()), body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
