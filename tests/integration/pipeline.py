"""A test harness around one isolated pipeline: its own queues and containers (on the shared
Azurite, or in memory: see the `stores` fixture), the shared local ARM endpoint, and workers
run in-process or (Azurite only) as real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from typing import Any

from runtime.adapters.storage import StorageClients, StorageSettings
from runtime.config import Env
from runtime.queue_loop import Stats
from tests.conftest import ROOT
from tests.integration.conftest import Stores

SUBSCRIPTION = "00000000-0000-0000-0000-0000000000aa"


class Pipeline:
    def __init__(self, stores: Stores | str, arm_url: str, arm_ca: str, **overrides: str) -> None:
        """`stores`: the `stores` fixture, or an Azurite connection string."""
        suffix = uuid.uuid4().hex[:10]
        if isinstance(stores, str):
            stores = Stores("azurite", stores, StorageClients)
        self.stores = stores
        self.env: dict[str, str] = {
            "SERVICETAGS_STORAGE_CONNECTION_STRING": stores.connection_string,
            "SERVICETAGS_REGIONS_QUEUE": f"regions-{suffix}",
            "SERVICETAGS_EVENTS_QUEUE": f"events-{suffix}",
            "SERVICETAGS_SNAPSHOTS_CONTAINER": f"snapshots-{suffix}",
            "SERVICETAGS_REPORTS_CONTAINER": f"reports-{suffix}",
            "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION,
            "SERVICETAGS_ARM_ENDPOINT": arm_url,
            "SERVICETAGS_ARM_CA_BUNDLE": arm_ca,
            "SERVICETAGS_DEV_CREDENTIAL": "1",
            "SERVICETAGS_RETRY_DELAY": "0",
            "SERVICETAGS_IDLE_SLEEP": "0",
            "SERVICETAGS_VISIBILITY_TIMEOUT": "5",
            "SERVICETAGS_MAX_TRIES": "3",
            "SERVICETAGS_ARM_RETRY_BACKOFF_MS": "20",
            "SERVICETAGS_LOG_FORMAT": "json",
            **overrides,
        }
        self.settings = StorageSettings.from_env(Env(self.env))
        self.clients = stores.clients(self.settings)
        s = self.settings
        self.clients.ensure(
            [s.snapshots_container, s.reports_container], [s.regions_queue, f"{s.regions_queue}-poison"]
        )
        self.queue = self.clients.queue(s.regions_queue)
        self.poison = self.clients.queue(f"{s.regions_queue}-poison")
        self.snapshots = self.clients.container(s.snapshots_container)
        self.reports_store = self.clients.container(s.reports_container)

    def produce(self, regions: str = "all", run_id: str = "run") -> int:
        from producer.main import ProducerSettings, produce

        settings = ProducerSettings.from_env(Env({**self.env, "SERVICETAGS_REGIONS": regions}))
        return len(produce(settings, run_id=run_id))

    def produce_messages(self, regions: str = "all", run_id: str = "run") -> list[Any]:
        from producer.main import ProducerSettings, produce

        return produce(
            ProducerSettings.from_env(Env({**self.env, "SERVICETAGS_REGIONS": regions})), run_id=run_id
        )

    def cloud(self, cloud: str = "Public") -> dict[str, Any] | None:
        """The cloud document (`<cloud>/regions.json`): watched, first seen, retired regions."""
        blob = self.snapshots.read(f"{cloud}/regions.json")
        return json.loads(blob.data) if blob else None

    def work(self, **overrides: str) -> Stats:
        """Drain the regions queue with an in-process worker."""
        from worker.main import WorkerSettings, build_consumer

        settings = WorkerSettings.from_env(Env({**self.env, **overrides}))
        return build_consumer(settings, threading.Event()).run(until_empty=True)

    def spawn_worker(self, **overrides: str) -> subprocess.Popen[str]:
        assert self.stores.kind == "azurite", "a worker process shares no memory with the test"
        env = {**os.environ, **self.env, **overrides}
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "--until-empty"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def reports(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name in self.reports_store.names():
            blob = self.reports_store.read(name)
            assert blob is not None
            out[name] = json.loads(blob.data)
        return out

    def state(self, region: str, cloud: str = "Public") -> dict[str, Any] | None:
        blob = self.snapshots.read(f"{cloud}/{region}/latest.json")
        return json.loads(blob.data) if blob else None

    def poisoned(self) -> list[dict[str, Any]]:
        return [json.loads(m.content) for m in self.poison.peek(32)]

    def cleanup(self) -> None:
        s = self.settings
        self.stores.drop(
            self.clients,
            [s.snapshots_container, s.reports_container],
            [s.regions_queue, f"{s.regions_queue}-poison"],
        )
