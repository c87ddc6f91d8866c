"""Azurite as the project starts it: real process, real storage SDK clients, real ports."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from devstack.azurite import (
    Azurite,
    AzuriteError,
    AzuriteNotInstalledError,
    azurite_binary,
    start_azurite,
)
from devstack.tcp_ports import port_is_open

pytestmark = pytest.mark.azurite  # several tests start their own Azurite, not the fixture's


def test_blob_round_trip(storage):
    container = storage.container("blobs")
    payload = b'{"changeNumber": "361"}'

    container.upload_blob("snapshots/francecentral/latest.json", payload)

    blob = container.download_blob("snapshots/francecentral/latest.json")
    assert blob.readall() == payload


def test_queue_round_trip(storage):
    queue = storage.queue("regions")

    queue.send_message('{"cloud": "Public", "region": "francecentral", "run": "r1"}')

    message = queue.receive_message(visibility_timeout=5)
    assert message is not None
    assert message.content == '{"cloud": "Public", "region": "francecentral", "run": "r1"}'
    assert message.dequeue_count == 1
    queue.delete_message(message)
    assert queue.receive_message() is None


def test_connection_string_names_both_endpoints(azurite: Azurite):
    parts = dict(part.split("=", 1) for part in azurite.connection_string.rstrip(";").split(";"))
    assert parts["AccountName"] == "devstoreaccount1"
    assert parts["BlobEndpoint"] == f"http://127.0.0.1:{azurite.blob_port}/devstoreaccount1"
    assert parts["QueueEndpoint"] == f"http://127.0.0.1:{azurite.queue_port}/devstoreaccount1"


def test_location_mode_keeps_data_across_a_restart(tmp_path: Path):
    location = tmp_path / "azurite-data"
    first = start_azurite(location=location)
    try:
        with BlobServiceClient.from_connection_string(first.connection_string) as service:
            service.create_container("kept").upload_blob("a.txt", b"still here")
        with QueueClient.from_connection_string(first.connection_string, "kept") as queue:
            queue.create_queue()
            queue.send_message("still queued")
    finally:
        first.stop()

    second = start_azurite(location=location)
    try:
        with BlobServiceClient.from_connection_string(second.connection_string) as service:
            blob = service.get_blob_client("kept", "a.txt")
            assert blob.download_blob().readall() == b"still here"
        with QueueClient.from_connection_string(second.connection_string, "kept") as queue:
            message = queue.receive_message()
            assert message is not None
            assert message.content == "still queued"
    finally:
        second.stop()


def test_stop_leaves_no_process_and_frees_the_ports():
    handle = start_azurite()
    assert handle.is_running()
    assert port_is_open(handle.host, handle.blob_port)

    handle.stop()
    handle.stop()  # idempotent

    with pytest.raises(ProcessLookupError):
        os.kill(handle.pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(handle.pid, 0)
    assert not handle.is_running()
    for port in (handle.blob_port, handle.queue_port):
        assert not port_is_open(handle.host, port)
    assert handle._scratch is not None
    assert not handle._scratch.exists()


def test_azurite_that_dies_at_start_reports_its_output():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(AzuriteError, match="EADDRINUSE"):
            start_azurite(blob_port=port, timeout=15)


def test_missing_node_modules_says_how_to_install(tmp_path: Path):
    with pytest.raises(AzuriteNotInstalledError, match=r"python3 dev\.py setup"):
        azurite_binary(root=tmp_path)
