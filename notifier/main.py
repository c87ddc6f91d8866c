"""`servicetags notifier`: BlobCreated events for report blobs to log records and e-mail.

Queue mode (default) consumes `change-events`, where the storage account's Event Grid
subscription (locally: the relay) puts one event per message; `serve` answers Event Grid
webhook deliveries instead. The one wiring point of the notifier.
"""

from __future__ import annotations

import logging
import sys
import threading
from datetime import timedelta
from typing import Any, NamedTuple

from core.ports import Message
from runtime.arguments import ArgumentParser
from runtime.component import run_component
from runtime.config import ConfigError, Env
from runtime.logs import LogSettings, log_event
from runtime.queue_loop import LoopSettings, QueueConsumer

log = logging.getLogger("notifier")


class NotifierSettings(NamedTuple):
    storage: Any
    cloud: str
    notifications_container: str
    backend: str
    mail_from: str
    recipients: tuple[Any, ...]
    smtp: dict[str, Any]
    acs_endpoint: str | None
    acs_connection_string: str | None
    claim_timeout: int
    loop: LoopSettings
    logging: LogSettings
    channels: tuple[Any, ...] = ()  # notifier.channels.Channel, secrets not yet read
    runs_container: str = "runs"
    deadlines_queue: str = "run-deadlines"
    impact_container: str | None = "impact"  # the impact step's results; None: not deployed
    # credential -> secret reader, over this environment (a closure: its repr shows no value)
    secret_reader: Any = None
    identity_wait: int = 300

    @classmethod
    def from_env(cls, env: Env) -> NotifierSettings:
        from notifier.channels import parse_channels
        from notifier.recipients import parse_recipients
        from notifier.secrets import reader_from_env
        from runtime.adapters.storage import StorageSettings

        backend = env.choice("SERVICETAGS_MAIL_BACKEND", ("smtp", "acs"), "smtp")
        recipients_text = env.str("SERVICETAGS_RECIPIENTS", "") or ""
        channels = tuple(parse_channels(env.str("SERVICETAGS_CHANNELS", "") or ""))
        # Channels alone are a valid setup: then nobody is e-mailed.
        recipients = (
            tuple(parse_recipients(recipients_text)) if recipients_text.strip() or not channels else ()
        )
        mail_from = env.str("SERVICETAGS_MAIL_FROM", required=bool(recipients)) or ""
        acs_endpoint = env.str("SERVICETAGS_ACS_ENDPOINT")
        acs_connection = env.str("SERVICETAGS_ACS_CONNECTION_STRING")
        if backend == "acs" and not (acs_endpoint or acs_connection):
            raise ConfigError(
                "SERVICETAGS_MAIL_BACKEND=acs needs SERVICETAGS_ACS_ENDPOINT "
                "(managed identity) or SERVICETAGS_ACS_CONNECTION_STRING"
            )
        return cls(
            storage=StorageSettings.from_env(env),
            cloud=env.cloud(),
            notifications_container=env.str("SERVICETAGS_NOTIFICATIONS_CONTAINER", "notifications")
            or "notifications",
            backend=backend,
            mail_from=mail_from,
            recipients=recipients,
            smtp={
                "host": env.str("SERVICETAGS_SMTP_HOST", "localhost"),
                "port": env.int("SERVICETAGS_SMTP_PORT", 25, minimum=1, maximum=65535),
                "starttls": env.bool("SERVICETAGS_SMTP_STARTTLS"),
                "username": env.str("SERVICETAGS_SMTP_USERNAME"),
                "password": env.str("SERVICETAGS_SMTP_PASSWORD"),
            },
            acs_endpoint=acs_endpoint,
            acs_connection_string=acs_connection,
            claim_timeout=env.int("SERVICETAGS_CLAIM_TIMEOUT", 600, minimum=1),
            loop=LoopSettings.from_env(env),
            logging=LogSettings.from_env(env),
            identity_wait=env.identity_wait(),
            channels=channels,
            runs_container=env.str("SERVICETAGS_RUNS_CONTAINER", "runs") or "runs",
            deadlines_queue=env.str("SERVICETAGS_DEADLINES_QUEUE", "run-deadlines") or "run-deadlines",
            impact_container=impact_container(env),
            secret_reader=lambda credential: reader_from_env(env.mapping, credential),
        )


def impact_container(env: Env) -> str | None:
    """SERVICETAGS_IMPACT_CONTAINER (default `impact`, as the impact step writes it); `none`
    where the impact step is not deployed, so messages carry no impact section."""
    name = env.str("SERVICETAGS_IMPACT_CONTAINER", "impact") or "impact"
    return None if name.lower() == "none" else name


class Wiring(NamedTuple):
    notifier: Any  # notifier.delivery.Notifier
    clients: Any  # runtime.adapters.storage.StorageClients
    reports_container: str
    digests: Any = None  # notifier.digest_delivery.Digests


def build(settings: NotifierSettings) -> Wiring:
    from core.ports import MailSender
    from notifier.delivery import Notifier
    from notifier.mail import SmtpSender, acs_sender_from
    from runtime.adapters.storage import open_storage

    s = settings.storage
    clients = open_storage(
        s,
        settings.cloud,
        identity_wait=settings.identity_wait,
        containers=[
            s.reports_container,
            settings.notifications_container,
            settings.runs_container,
            *([settings.impact_container] if settings.impact_container else []),
        ],
        queues=[s.events_queue, settings.deadlines_queue],
    )
    credential = clients.credential
    sender: MailSender
    if settings.backend == "acs":
        sender = acs_sender_from(
            endpoint=settings.acs_endpoint,
            connection_string=settings.acs_connection_string,
            credential=credential,
        )
    else:
        sender = SmtpSender(
            settings.smtp["host"],
            settings.smtp["port"],
            starttls=settings.smtp["starttls"],
            username=settings.smtp["username"],
            password=settings.smtp["password"],
        )
    if not settings.recipients and not settings.channels:
        log_event(
            log,
            "no_recipients",
            "SERVICETAGS_RECIPIENTS is empty: reports are logged but nobody is e-mailed",
            level=logging.WARNING,
        )
    from notifier.channels import ChannelPoster, with_secrets
    from notifier.digest_delivery import Digests

    channels = (
        with_secrets(list(settings.channels), settings.secret_reader(credential)) if settings.channels else []
    )
    reports = clients.container(s.reports_container)
    markers = clients.container(settings.notifications_container)
    impacts = clients.container(settings.impact_container) if settings.impact_container else None
    digests = Digests(
        runs_store=clients.container(settings.runs_container),
        reports=reports,
        markers=markers,
        report_url=reports.blob_url,
        sender=sender,
        mail_from=settings.mail_from,
        recipients=settings.recipients,
        channels=channels,
        poster=ChannelPoster(),
        claim_timeout=timedelta(seconds=settings.claim_timeout),
        impacts=impacts,
    )
    notifier = Notifier(
        reports=reports,
        markers=markers,
        sender=sender,
        mail_from=settings.mail_from,
        recipients=settings.recipients,
        claim_timeout=timedelta(seconds=settings.claim_timeout),
        digests=digests,
        impacts=impacts,
    )
    return Wiring(notifier, clients, s.reports_container, digests)


def queue_consumer(settings: NotifierSettings, wiring: Wiring, stop: threading.Event) -> QueueConsumer:
    from core.runs import parse_complete_name
    from notifier.events import NotAReportEvent, parse_queue_message

    ignored = 0

    def run_completed(content: str) -> tuple[str, str] | None:
        """(cloud, run) when the message is the BlobCreated event of a run's complete marker."""
        try:
            event = parse_queue_message(content, expected_container=settings.runs_container)
        except NotAReportEvent:
            return None
        return parse_complete_name(event.blob_name)

    def handle(message: Message) -> None:
        nonlocal ignored
        try:
            event = parse_queue_message(message.content, expected_container=wiring.reports_container)
        except NotAReportEvent as exc:
            completed = run_completed(message.content)
            if completed is not None and wiring.digests is not None:
                wiring.digests.deliver_run(*completed, closed_by="complete")
                return
            ignored += 1
            log_event(log, "event_ignored", str(exc), message_id=message.id, ignored_total=ignored)
            return
        wiring.notifier.deliver(event.blob_name, event.url)

    s = settings.storage
    queue, poison = wiring.clients.queue(s.events_queue), wiring.clients.poison(s.events_queue)
    return QueueConsumer(queue, poison, handle, settings.loop, stop=stop)


def deadline_consumer(settings: NotifierSettings, wiring: Wiring, stop: threading.Event) -> QueueConsumer:
    """Run deadlines: each message turns visible when its run's time is up."""
    from core.errors import BadMessage
    from core.messages import decode_json_message
    from core.runs import RunError, parse_deadline

    def handle(message: Message) -> None:
        try:
            deadline = parse_deadline(decode_json_message(message.content))
        except RunError as exc:
            raise BadMessage(str(exc)) from None
        if deadline is None:
            raise BadMessage(
                f"not a run deadline message (schema servicetags.run-deadline/v1) on "
                f"{settings.deadlines_queue}"
            )
        wiring.digests.deliver_run(deadline.cloud, deadline.run_id, closed_by="deadline")

    queue = wiring.clients.queue(settings.deadlines_queue)
    return QueueConsumer(
        queue, wiring.clients.poison(settings.deadlines_queue), handle, settings.loop, stop=stop
    )


def run_queues(
    settings: NotifierSettings, wiring: Wiring, stop: threading.Event, *, until_empty: bool
) -> Any:
    """Both queues: change events, and run deadlines beside them. With `until_empty`, the
    deadlines still invisible (runs whose time is not up) are left for a later start."""
    events = queue_consumer(settings, wiring, stop)
    deadlines = deadline_consumer(settings, wiring, stop)
    if until_empty:
        stats = events.run(until_empty=True)
        while not stop.is_set() and (message := deadlines.queue.receive(settings.loop.visibility_timeout)):
            deadlines.process(message)
        return stats
    thread = threading.Thread(target=deadlines.run, name="deadlines", daemon=True)
    thread.start()
    stats = events.run()
    thread.join(timeout=10)
    return stats


def main(argv: list[str], prog: str = "servicetags notifier") -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Turn report BlobCreated events into a log record and "
        "e-mails. Configuration comes from SERVICETAGS_* environment variables.",
    )
    parser.add_argument(
        "mode",
        nargs="?",
        choices=["queue", "serve"],
        default="queue",
        help="queue: consume change-events (default); serve: Event Grid webhook",
    )
    parser.add_argument(
        "--until-empty", action="store_true", help="queue mode: return once the queue is drained"
    )
    args = parser.parse_args(argv)

    def body(settings: NotifierSettings, stop: threading.Event) -> int:
        wiring = build(settings)
        if args.mode == "serve":
            from notifier.serve import serve_webhook

            return serve_webhook(
                wiring,
                Env(),
                stop,
                runs_container=settings.runs_container,
                deadlines=deadline_consumer(settings, wiring, stop),
            )
        stats = run_queues(settings, wiring, stop, until_empty=args.until_empty)
        log_event(log, "notifier_stopped", "notifier stopped", **stats._asdict())
        return 0

    return run_component(prog, lambda: NotifierSettings.from_env(Env()), body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
