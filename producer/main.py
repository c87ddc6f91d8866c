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

from common import logs
from common.config import ConfigError, Env
from common.errors import ServiceTagsError
from common.logs import LogSettings, log_event
from common.messages import RegionMessage
from servicetags.argparsing import ArgumentParser, fail

log = logging.getLogger("producer")
_LOCATION = re.compile(r"^[a-z0-9]{2,40}$")


class ProducerSettings(NamedTuple):
    storage: Any
    cloud: str
    regions: tuple[str, ...] | None   # None: all
    logging: LogSettings

    @classmethod
    def from_env(cls, env: Env) -> ProducerSettings:
        from common.adapters.storage import StorageSettings

        text = (env.str("SERVICETAGS_REGIONS", "all") or "all").lower()
        regions: tuple[str, ...] | None = None
        if text != "all":
            names = [r.strip() for r in text.split(",") if r.strip()]
            bad = [r for r in names if not _LOCATION.match(r)]
            if bad or not names:
                raise ConfigError(f"SERVICETAGS_REGIONS={text!r}: {', '.join(bad) or 'empty'} is not a "
                                  "location name (use ARM names like francecentral, or 'all')")
            regions = tuple(dict.fromkeys([*names, "global"]))
        return cls(StorageSettings.from_env(env), env.cloud(), regions,
                   LogSettings.from_env(env))


def region_messages(cloud: str, regions: list[str], run_id: str, now: datetime, *,
                    discover: bool) -> list[RegionMessage]:
    stamp = now.isoformat(timespec="seconds")
    return [RegionMessage(cloud, r, run_id, stamp, discover=discover and r == "global")
            for r in dict.fromkeys([*regions, "global"])]


def produce(settings: ProducerSettings, *, run_id: str | None = None) -> list[RegionMessage]:
    from common.adapters.storage import StorageClients
    from common.identity import azure_credential
    from common.layout import known_regions

    credential = None if settings.storage.local else azure_credential(settings.cloud)
    clients = StorageClients(settings.storage, credential)
    names = settings.storage
    if names.local:
        clients.ensure([names.snapshots_container], [names.regions_queue, f"{names.regions_queue}-poison"])
    regions = list(settings.regions) if settings.regions is not None else known_regions(
        clients.container(names.snapshots_container), settings.cloud)
    run_id = run_id or f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    messages = region_messages(settings.cloud, regions, run_id, datetime.now(UTC),
                               discover=settings.regions is None)
    queue = clients.queue(names.regions_queue)
    for message in messages:
        queue.send(message.to_json())
    log_event(log, "regions_enqueued", f"{len(messages)} region messages enqueued", cloud=settings.cloud,
              run_id=run_id, count=len(messages), queue=names.regions_queue,
              discovery=settings.regions is None and not regions)
    return messages


def main(argv: list[str], prog: str = "servicetags produce") -> int:
    parser = ArgumentParser(prog=prog, description="Enqueue one message per region (plus global). "
                            "Configuration comes from SERVICETAGS_* environment variables.")
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
