"""`servicetags produce`: enqueue one region message per region, plus `global`.

Tiny on purpose: it knows nothing about tags. With `all`, the regions are those the workers
recorded from the data (`<cloud>/regions.json`); before any run has recorded them, `global`
alone is enqueued and its worker fans out to every region it finds.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple

from core.errors import ServiceTagsError
from core.messages import RegionMessage
from runtime import logs
from runtime.arguments import ArgumentParser, fail
from runtime.config import ConfigError, Env
from runtime.logs import LogSettings, log_event

log = logging.getLogger("producer")
_LOCATION = re.compile(r"^[a-z0-9]{2,40}$")


class ProducerSettings(NamedTuple):
    storage: Any
    cloud: str
    regions: tuple[str, ...] | None  # None: all
    logging: LogSettings
    runs_container: str = "runs"
    deadlines_queue: str = "run-deadlines"
    digest_deadline: int = 3600  # seconds after the start when the run's digest goes out anyway
    identity_wait: int = 300

    @classmethod
    def from_env(cls, env: Env) -> ProducerSettings:
        from runtime.adapters.storage import StorageSettings

        text = (env.str("SERVICETAGS_REGIONS", "all") or "all").lower()
        regions: tuple[str, ...] | None = None
        if text != "all":
            names = [r.strip() for r in text.split(",") if r.strip()]
            bad = [r for r in names if not _LOCATION.match(r)]
            if bad or not names:
                raise ConfigError(
                    f"SERVICETAGS_REGIONS={text!r}: {', '.join(bad) or 'empty'} is not a "
                    "location name (use ARM names like francecentral, or 'all')"
                )
            regions = tuple(dict.fromkeys([*names, "global"]))
        return cls(
            StorageSettings.from_env(env),
            env.cloud(),
            regions,
            LogSettings.from_env(env),
            runs_container=env.str("SERVICETAGS_RUNS_CONTAINER", "runs") or "runs",
            deadlines_queue=env.str("SERVICETAGS_DEADLINES_QUEUE", "run-deadlines") or "run-deadlines",
            digest_deadline=env.int("SERVICETAGS_DIGEST_DEADLINE", 3600, minimum=1, maximum=7 * 24 * 3600),
            identity_wait=env.identity_wait(),
        )


def region_messages(
    cloud: str, regions: list[str], run_id: str, now: datetime, *, discover: bool
) -> list[RegionMessage]:
    stamp = now.isoformat(timespec="seconds")
    return [
        RegionMessage(cloud, r, run_id, stamp, discover=discover and r == "global")
        for r in dict.fromkeys([*regions, "global"])
    ]


def produce(settings: ProducerSettings, *, run_id: str | None = None) -> list[RegionMessage]:
    from core.layout import known_regions
    from runtime.adapters.storage import open_storage

    names = settings.storage
    clients = open_storage(
        names,
        settings.cloud,
        identity_wait=settings.identity_wait,
        containers=[names.snapshots_container, settings.runs_container],
        queues=[names.regions_queue, settings.deadlines_queue],
    )
    regions = (
        list(settings.regions)
        if settings.regions is not None
        else known_regions(clients.container(names.snapshots_container), settings.cloud)
    )
    run_id = run_id or f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    messages = region_messages(
        settings.cloud, regions, run_id, datetime.now(UTC), discover=settings.regions is None
    )
    _record_run(settings, clients, messages, run_id)
    queue = clients.queue(names.regions_queue)
    for message in messages:
        queue.send(message.to_json())
    log_event(
        log,
        "regions_enqueued",
        f"{len(messages)} region messages enqueued",
        cloud=settings.cloud,
        run_id=run_id,
        count=len(messages),
        queue=names.regions_queue,
        discovery=settings.regions is None and not regions,
    )
    return messages


def _record_run(settings: ProducerSettings, clients: Any, messages: list[RegionMessage], run_id: str) -> None:
    """The run's region list and its deadline, before any region message: the workers record
    outcomes against the list, the notifier sends the digest when all are in or at the deadline."""
    import json
    from datetime import timedelta

    from core import runs

    started = datetime.now(UTC)
    doc = runs.manifest(
        settings.cloud,
        run_id,
        [m.region for m in messages],
        started_at=started.isoformat(timespec="seconds"),
        deadline_at=(started + timedelta(seconds=settings.digest_deadline)).isoformat(timespec="seconds"),
        deadline_seconds=settings.digest_deadline,
        discover=any(m.discover for m in messages),
    )
    # Create-only (a rerun with the same id keeps the first list); the deadline always, since a
    # second one is harmless and a crash in between must not leave a run without one.
    clients.container(settings.runs_container).create(
        runs.manifest_name(settings.cloud, run_id), json.dumps(doc).encode()
    )
    clients.queue(settings.deadlines_queue).send(
        runs.Deadline(settings.cloud, run_id).to_json(), delay=settings.digest_deadline
    )


def main(argv: list[str], prog: str = "servicetags produce") -> int:
    parser = ArgumentParser(
        prog=prog,
        description="Enqueue one message per region (plus global). "
        "Configuration comes from SERVICETAGS_* environment variables.",
    )
    parser.add_argument("--run-id", help="tag the messages with this run id (default: time + random)")
    args = parser.parse_args(argv)
    try:
        settings = ProducerSettings.from_env(Env())
        logs.configure(*settings.logging)
        produce(settings, run_id=args.run_id)
    except ServiceTagsError as exc:
        return fail(prog, str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
