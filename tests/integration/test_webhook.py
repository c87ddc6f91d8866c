"""The notifier's webhook over real HTTP: waitress on a loopback port, recorded Event Grid
payloads, a shared secret or Entra-style tokens signed by a key made here."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.tcp_ports import free_port, port_is_open
from notifier.events import ReportEvent
from notifier.webhook import (
    MAX_BODY,
    Authenticator,
    EntraTokenAuth,
    SharedSecretAuth,
    WebhookApp,
    make_app,
    make_server,
)
from tests.conftest import ROOT, wait_until

pytestmark = pytest.mark.integration

SAMPLES = ROOT / "tests" / "samples"
SECRET = "correct-horse-battery-staple"
CONTAINER = "test-container"  # the recorded samples' container, so they are posted verbatim
ISSUER = "https://login.microsoftonline.com/00000000-0000-0000-0000-00000000abcd/v2.0"
AUDIENCE = "api://servicetags-notifier"


def sample_bytes(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


class Webhook:
    """A running webhook server and a tiny HTTP client for it."""

    def __init__(self, app: WebhookApp, port: int) -> None:
        self.app, self.port = app, port
        self.handled: list[ReportEvent] = []

    def call(
        self,
        method: str,
        path: str = "/api/events",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            headers = {name.lower(): value for name, value in response.getheaders()}
            return Response(response.status, headers, response.read())
        finally:
            connection.close()

    def post(
        self,
        body: bytes,
        *,
        path: str = f"/api/events?code={SECRET}",
        content_type: str = "application/json",
        **headers: str,
    ) -> Response:
        return self.call("POST", path, body, {"Content-Type": content_type, **headers})


Starter = Callable[..., Webhook]


@pytest.fixture
def start_webhook() -> Iterator[Starter]:
    """start_webhook(auth=..., handle=...) -> a Webhook served by waitress in a thread."""
    running: list[tuple[Any, threading.Thread]] = []

    def start(
        auth: Authenticator | None = None, handle: Callable[[ReportEvent], None] | None = None
    ) -> Webhook:
        holder: list[Webhook] = []

        def default_handle(event: ReportEvent) -> None:
            holder[0].handled.append(event)

        app = make_app(
            handle or default_handle, auth=auth or SharedSecretAuth(SECRET), expected_container=CONTAINER
        )
        server = make_server(app, "127.0.0.1", 0, threads=2)
        webhook = Webhook(app, server.port)
        holder.append(webhook)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        running.append((server, thread))
        return webhook

    yield start
    for server, thread in running:
        server.close()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the webhook server did not stop"


@pytest.fixture
def webhook(start_webhook: Starter) -> Webhook:
    return start_webhook()


# --- handshakes --------------------------------------------------------------------------


def test_subscription_validation_handshake_returns_the_code(webhook):
    response = webhook.post(
        sample_bytes("eventgrid-subscription-validation.sdk-net.json"),
        **{"aeg-event-type": "SubscriptionValidation"},
    )

    assert response.status == 200
    assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert webhook.handled == []


def test_subscription_validation_needs_the_credential_too(webhook):
    response = webhook.post(
        sample_bytes("eventgrid-subscription-validation.sdk-net.json"),
        path="/api/events",
        **{"aeg-event-type": "SubscriptionValidation"},
    )

    assert response.status == 401
    assert b"512d38b6" not in response.body


def test_cloudevents_abuse_protection_handshake(webhook):
    response = webhook.call(
        "OPTIONS", f"/api/events?code={SECRET}", headers={"WebHook-Request-Origin": "eventgrid.azure.net"}
    )

    assert response.status == 200
    assert response.headers["webhook-allowed-origin"] == "eventgrid.azure.net"
    assert response.headers["webhook-allowed-rate"] == "*"


def test_abuse_protection_needs_the_credential(webhook):
    response = webhook.call("OPTIONS", headers={"WebHook-Request-Origin": "eventgrid.azure.net"})

    assert response.status == 401
    assert "webhook-allowed-origin" not in response.headers


# --- shared secret -----------------------------------------------------------------------


def test_a_post_without_credential_is_refused(webhook):
    response = webhook.post(sample_bytes("eventgrid-blobcreated.docs.json"), path="/api/events")

    assert response.status == 401
    assert response.json() == {"error": "missing or invalid credential"}
    assert webhook.handled == []
    assert webhook.app.stats["refused"] == 1


@pytest.mark.parametrize("where", ["query", "header"])
def test_a_wrong_secret_is_refused(webhook, where):
    body = sample_bytes("eventgrid-blobcreated.docs.json")
    if where == "query":
        response = webhook.post(body, path="/api/events?code=guess-guess-guess")
    else:
        response = webhook.post(body, path="/api/events", **{"x-servicetags-key": "guess-guess-guess"})

    assert response.status == 401
    assert webhook.handled == []


@pytest.mark.parametrize("where", ["query", "header"])
def test_a_recorded_blob_created_event_with_the_secret_is_handled_once(webhook, where):
    body = sample_bytes("eventgrid-blobcreated.docs.json")
    if where == "query":
        response = webhook.post(body, **{"aeg-event-type": "Notification"})
    else:
        response = webhook.post(body, path="/", **{"x-servicetags-key": SECRET})

    assert response.status == 200
    assert response.json() == {"handled": 1, "ignored": 0}
    (event,) = webhook.handled
    assert event == ReportEvent(
        id="831e1650-001e-001b-66ab-eeb76e069631",
        event_type="Microsoft.Storage.BlobCreated",
        subject="/blobServices/default/containers/test-container/blobs/new-file.txt",
        container="test-container",
        blob_name="new-file.txt",
        url="https://my-storage-account.blob.core.windows.net/testcontainer/new-file.txt",
        etag="0x8D4BCC2E4835CD0",
        sequencer="00000000000004420000000000028963",
        event_time=event.event_time,
        schema="eventgrid",
    )


def test_cloudevents_single_and_batch_are_handled(webhook):
    cloud = json.loads(sample_bytes("cloudevents-blobcreated.docs.json"))[0]

    single = webhook.post(
        json.dumps(cloud).encode(), content_type="application/cloudevents+json; charset=utf-8"
    )
    batch = webhook.post(
        json.dumps([cloud, cloud]).encode(), content_type="application/cloudevents-batch+json; charset=utf-8"
    )

    assert (single.status, batch.status) == (200, 200)
    assert [event.schema for event in webhook.handled] == ["cloudevents"] * 3


def test_an_event_not_for_us_is_acknowledged_and_ignored(webhook):
    response = webhook.post(sample_bytes("eventgrid-blobdeleted.docs.json"))

    assert response.status == 200
    assert response.json() == {"handled": 0, "ignored": 1}
    assert webhook.handled == []
    assert webhook.app.stats["ignored"] == 1


# --- bad requests ------------------------------------------------------------------------


def test_an_oversized_body_is_refused_with_413(webhook):
    body = b"[" + b" " * MAX_BODY + b"]"

    response = webhook.post(body)

    assert response.status == 413
    assert "over" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b'[{"id": "x"}]', "no 'eventType'"),
        (
            json.dumps(
                [{**json.loads(sample_bytes("eventgrid-blobcreated.docs.json"))[0], "data": None}]
            ).encode(),
            "no data object",
        ),
    ],
    ids=["json", "no-type", "no-data"],
)
def test_a_malformed_body_is_a_400_naming_the_problem(webhook, body, problem):
    response = webhook.post(body)

    assert response.status == 400
    assert problem in response.json()["error"]
    assert webhook.handled == []


def test_a_failing_handler_is_a_500_so_event_grid_retries(start_webhook):
    def fail(event: ReportEvent) -> None:
        raise RuntimeError("mail server down")

    webhook = start_webhook(handle=fail)

    response = webhook.post(sample_bytes("eventgrid-blobcreated.docs.json"))

    assert response.status == 500
    assert "mail server" not in response.body.decode()  # no internals to the caller
    assert webhook.app.stats["failed"] == 1


def webhook_records(caplog) -> list:
    return [r for r in caplog.records if r.name.startswith(("notifier", "waitress")) and r.levelno >= 30]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'[{"id": "x", "n": ' + b"9" * 5000 + b"}]", "4300 digits"),
        (b"[" * 100_000 + b"]" * 100_000, "nests arrays or objects too deeply"),
        (b'[{"id": "\\ud800"}]', "lone UTF-16 surrogate"),
        (b"[NaN]", "NaN is not a JSON value"),
    ],
    ids=["5000-digits", "100k-nesting", "surrogate", "nan"],
)
def test_hostile_json_is_a_400_with_one_log_line_not_waitress_500(webhook, caplog, body, problem):
    """Issue 16 item 5: the first two reached waitress's own 500 with a traceback."""
    with caplog.at_level("INFO"):
        response = webhook.post(body)

    assert response.status == 400, response.body[:300]
    assert problem in response.json()["error"]
    [record] = webhook_records(caplog)
    assert record.event == "webhook_bad_request" and not record.exc_info
    assert webhook.handled == []


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", "", "application/jsonp", "multipart/form-data; boundary=x"],
)
def test_content_types_event_grid_does_not_send_are_415(webhook, content_type):
    response = webhook.post(sample_bytes("eventgrid-blobcreated.docs.json"), content_type=content_type)

    assert response.status == 415
    assert "application/cloudevents-batch+json" in response.json()["error"]
    assert webhook.handled == []


def test_a_permanent_failure_is_a_400_and_the_other_events_are_still_handled(start_webhook, caplog):
    """A report that is gone or fails the schema can never succeed: 400, so Event Grid
    dead-letters it instead of retrying for 24 hours."""
    from core.errors import PermanentError

    handled = []

    def handle(event: ReportEvent) -> None:
        if event.id == "gone":
            raise PermanentError("report blob 'x' is gone (deleted after its event was sent)")
        handled.append(event.id)

    webhook = start_webhook(handle=handle)
    event = json.loads(sample_bytes("eventgrid-blobcreated.docs.json"))[0]
    body = json.dumps([{**event, "id": "gone"}, {**event, "id": "fine"}]).encode()
    with caplog.at_level("INFO"):
        response = webhook.post(body)

    assert response.status == 400
    assert "is gone" in response.json()["error"] and response.json()["handled"] == 1
    assert handled == ["fine"]
    [record] = webhook_records(caplog)
    assert record.event == "webhook_event_rejected" and not record.exc_info


def test_a_transient_failure_is_a_503_with_one_line(start_webhook, caplog):
    from core.errors import TransientError

    def handle(event: ReportEvent) -> None:
        raise TransientError("another notifier is sending new-file.txt to a recipient")

    webhook = start_webhook(handle=handle)
    with caplog.at_level("INFO"):
        response = webhook.post(sample_bytes("eventgrid-blobcreated.docs.json"))

    assert response.status == 503
    [record] = webhook_records(caplog)
    assert record.event == "webhook_handler_failed" and not record.exc_info


def test_wrong_method_and_path(webhook):
    assert webhook.call("GET", f"/api/events?code={SECRET}").status == 405
    assert webhook.call("PUT", f"/api/events?code={SECRET}").headers["allow"] == "POST, OPTIONS"
    assert webhook.call("POST", "/elsewhere").status == 404


# --- Entra ID bearer tokens --------------------------------------------------------------


class Signer:
    """An RSA key with a kid, and tokens signed by it."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        return {
            **jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True),
            "kid": self.kid,
            "use": "sig",
            "alg": "RS256",
        }

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "sub": "eventgrid",
            **claims,
        }
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid})


class _JwksHandler(BaseHTTPRequestHandler):
    server: Any

    def do_GET(self) -> None:
        body = json.dumps({"keys": self.server.keys}).encode()
        self.server.fetches += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(kid=uuid.uuid4().hex)


@pytest.fixture(scope="module")
def jwks_url(signer: Signer) -> Iterator[str]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _JwksHandler)
    server.keys, server.fetches = [signer.jwk()], 0
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/discovery/v2.0/keys"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def entra_webhook(start_webhook: Starter, jwks_url: str) -> Webhook:
    return start_webhook(auth=EntraTokenAuth(jwks_url, ISSUER, AUDIENCE))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_entra_token_signed_by_the_published_key_is_accepted(entra_webhook, signer):
    body = sample_bytes("eventgrid-blobcreated.docs.json")

    response = entra_webhook.post(body, path="/api/events", **bearer(signer.token()))
    again = entra_webhook.post(body, path="/api/events", **bearer(signer.token()))

    assert (response.status, again.status) == (200, 200)
    assert len(entra_webhook.handled) == 2


def test_entra_validation_handshake_with_a_token(entra_webhook, signer):
    response = entra_webhook.post(
        sample_bytes("eventgrid-subscription-validation.sdk-net.json"),
        path="/api/events",
        **bearer(signer.token()),
    )

    assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}


def _forged(signer: Signer) -> str:
    # Same kid as the published key, different private key: only the signature is wrong.
    return Signer(kid=signer.kid).token()


@pytest.mark.parametrize(
    "make_token",
    [
        _forged,
        lambda s: Signer(kid="unknown-kid").token(),
        lambda s: s.token(aud="api://someone-else"),
        lambda s: s.token(iss="https://sts.windows.net/another-tenant/"),
        lambda s: s.token(
            exp=int(time.time()) - 3600, iat=int(time.time()) - 7200, nbf=int(time.time()) - 7200
        ),
        lambda s: jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 600},
            "k" * 32,
            algorithm="HS256",
            headers={"kid": s.kid},
        ),
    ],
    ids=["other-key", "unknown-kid", "wrong-audience", "wrong-issuer", "expired", "hs256"],
)
def test_entra_bad_tokens_are_refused(entra_webhook, signer, make_token):
    response = entra_webhook.post(
        sample_bytes("eventgrid-blobcreated.docs.json"), path="/api/events", **bearer(make_token(signer))
    )

    assert response.status == 401
    assert entra_webhook.handled == []


def test_entra_without_a_token_or_with_the_shared_secret_is_refused(entra_webhook):
    body = sample_bytes("eventgrid-blobcreated.docs.json")

    assert entra_webhook.post(body, path="/api/events").status == 401
    assert entra_webhook.post(body).status == 401  # ?code= means nothing in Entra mode
    assert entra_webhook.post(body, path="/api/events", Authorization="Basic abc").status == 401


def test_entra_with_the_key_set_unreachable_is_a_503_so_event_grid_retries(start_webhook, signer):
    webhook = start_webhook(
        auth=EntraTokenAuth(f"http://127.0.0.1:{free_port()}/keys", ISSUER, AUDIENCE, timeout=2)
    )

    response = webhook.post(
        sample_bytes("eventgrid-blobcreated.docs.json"), path="/api/events", **bearer(signer.token())
    )

    assert response.status == 503
    assert webhook.handled == []


def test_a_short_shared_secret_is_refused_at_start():
    with pytest.raises(ValueError, match="at least 16"):
        SharedSecretAuth("hunter2")


SERVE_SCRIPT = """
import signal, sys, threading
from notifier.webhook import SharedSecretAuth, make_app, serve
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())  # as runtime.component does
serve(make_app(print, auth=SharedSecretAuth(sys.argv[2]), expected_container="reports"),
      "127.0.0.1", int(sys.argv[1]), stop=stop, threads=2)
print("stopped", flush=True)
"""


def test_serve_stops_cleanly_on_sigterm():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_SCRIPT, str(port), SECRET],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_until(lambda: port_is_open("127.0.0.1", port), timeout=20)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert b"stopped" in output


def test_run_markers_go_to_the_run_handler_and_other_runs_blobs_are_ignored():
    from notifier.serve import run_complete_handler

    closed: list[tuple[str, str, str]] = []

    class Digests:
        def deliver_run(self, cloud: str, run_id: str, *, closed_by: str) -> None:
            closed.append((cloud, run_id, closed_by))

    class Wiring:
        digests = Digests()

    reports: list[str] = []
    app = make_app(
        lambda e: reports.append(e.blob_name),
        auth=SharedSecretAuth(SECRET),
        expected_container=CONTAINER,
        runs_container="runs",
        handle_run=run_complete_handler(Wiring()),
    )
    server = make_server(app, "127.0.0.1", 0, threads=2)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        hook = Webhook(app, server.port)
        [recorded] = json.loads(sample_bytes("eventgrid-blobcreated.docs.json"))

        def event(container: str, name: str, **data: Any) -> dict[str, Any]:
            return {
                **recorded,
                "id": str(uuid.uuid4()),
                "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
                "data": {**recorded["data"], "url": f"http://127.0.0.1/a/{container}/{name}", **data},
            }

        body = [
            event(CONTAINER, "Public/japaneast/1-2.json"),
            event("runs", "Public/weekly-7/complete.json"),
            event("runs", "Public/weekly-7/regions/japaneast.json"),
            event("other", "x.json"),
        ]
        answer = hook.post(json.dumps(body).encode())
        assert (answer.status, answer.json()) == (200, {"handled": 3, "ignored": 1})
        assert reports == ["Public/japaneast/1-2.json"]
        assert closed == [("Public", "weekly-7", "complete")]  # the outcome blob closed nothing
        # A runs event malformed past its container is a 400 like any other, not a 500.
        broken = hook.post(json.dumps([event("runs", "Public/weekly-8/complete.json", url=None)]).encode())
        assert broken.status == 400 and "has no data.url" in broken.json()["error"]
        assert closed == [("Public", "weekly-7", "complete")]
    finally:
        server.close()
        thread.join(timeout=10)
