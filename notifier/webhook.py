"""Event Grid push delivery: a small WSGI app served by waitress.

Routes: `POST /api/events` (or `/`) takes Event Grid schema (an array), a single CloudEvent
or a CloudEvents batch; `OPTIONS` answers the CloudEvents abuse-protection handshake. Blob
events of the reports container go to the report handler, those of the runs container (a
run's `complete.json`) to the run handler, anything else is acknowledged and ignored.
Every call, handshakes included, must carry the configured credential.

Status codes are chosen for Event Grid's retry policy, which retries everything but 400,
401, 403 and 413 (those are dead-lettered):
- 200 when every event was handled or ignored;
- 400 for what can never succeed: a malformed body (not JSON, too deeply nested, a number
  too long to read, a lone surrogate), an event whose report is gone or fails the schema,
  or whose URL is not the configured reports container's (the other events of the body are
  still handled);
- 413 for a body over MAX_BODY; 415 for a content type Event Grid does not send;
- 401 without a valid credential;
- 503 for what may succeed later: a transient failure of a handler (storage or mail down,
  another notifier sending) or a credential that cannot be checked now (JWKS unreachable);
- 500 only for a bug (an unexpected exception), logged with its traceback.
Every refusal is one log line.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, cast
from urllib.parse import parse_qs

import jwt
from waitress import wasyncore
from waitress.server import create_server

from core.errors import BadMessage, PermanentError, TransientError
from notifier.events import (
    IgnoredEvent,
    ReportEvent,
    SubscriptionValidation,
    UnsupportedMediaType,
    parse_webhook_body,
)
from runtime.logs import log_event

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # 1 MiB: Event Grid batches are at most 1 MB, one BlobCreated is ~1 KB
PATHS = frozenset({"/", "/api/events"})
SECRET_HEADER = "HTTP_X_SERVICETAGS_KEY"  # x-servicetags-key
MIN_SECRET_LENGTH = 16

Handler = Callable[[ReportEvent], None]
StartResponse = Callable[..., Any]


class Unauthorized(Exception):
    """The call lacks a valid credential (401). The message says why, for our log only."""


class AuthUnavailable(Exception):
    """The credential cannot be checked right now (503, so Event Grid retries)."""


class Authenticator(Protocol):
    def authenticate(self, environ: Mapping[str, Any]) -> None:
        """Return if the request carries a valid credential; raise Unauthorized or
        AuthUnavailable otherwise."""


class SharedSecretAuth:
    """A secret in the query (`?code=`, what an Event Grid subscription URL can carry) or in
    the `x-servicetags-key` header."""

    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"the webhook secret must have at least {MIN_SECRET_LENGTH} characters")
        self._secret = secret.encode("utf-8")

    def authenticate(self, environ: Mapping[str, Any]) -> None:
        offered = [*parse_qs(environ.get("QUERY_STRING", "")).get("code", [])]
        if environ.get(SECRET_HEADER):
            offered.append(environ[SECRET_HEADER])
        if not offered:
            raise Unauthorized("no secret (query parameter code or header x-servicetags-key)")
        # Every candidate is compared, in constant time, so timing tells nothing either way.
        matches = [hmac.compare_digest(value.encode("utf-8"), self._secret) for value in offered]
        if not any(matches):
            raise Unauthorized("wrong secret")


class EntraTokenAuth:
    """An Entra ID bearer token (Event Grid's Microsoft Entra webhook authentication):
    RS256 signature from the JWKS at `jwks_url`, issuer, audience, expiry."""

    def __init__(
        self,
        jwks_url: str,
        issuer: str | Sequence[str],
        audience: str | Sequence[str],
        *,
        leeway: float = 60.0,
        jwks_lifespan: float = 3600.0,
        timeout: float = 10.0,
    ) -> None:
        if not (jwks_url and issuer and audience):
            raise ValueError("Entra token authentication needs a JWKS URL, an issuer and an audience")
        self.issuer = issuer if isinstance(issuer, str) else list(issuer)
        self.audience = audience if isinstance(audience, str) else list(audience)
        self.leeway = leeway
        # Caches the key set for `jwks_lifespan`; an unknown kid refetches it at most once per
        # cooldown, so forged kids cannot turn us into a JWKS-fetching amplifier.
        self._jwks = jwt.PyJWKClient(jwks_url, cache_jwk_set=True, lifespan=jwks_lifespan, timeout=timeout)

    def authenticate(self, environ: Mapping[str, Any]) -> None:
        scheme, _, token = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("no bearer token")
        try:
            key = self._jwks.get_signing_key_from_jwt(token.strip())
        except jwt.PyJWKClientConnectionError as exc:
            raise AuthUnavailable(f"cannot fetch signing keys: {exc}") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"token refused: {exc}") from None
        try:
            jwt.decode(
                token.strip(),
                key.key,
                algorithms=["RS256"],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"token refused: {exc}") from None


class WebhookApp:
    """The WSGI application. `stats` counts outcomes (handled, ignored, refused, rejected, failed)."""

    def __init__(
        self,
        handle: Handler,
        *,
        auth: Authenticator,
        expected_container: str,
        max_body: int = MAX_BODY,
        runs_container: str | None = None,
        handle_run: Handler | None = None,
    ) -> None:
        self.handle, self.auth = handle, auth
        self.expected_container, self.max_body = expected_container, max_body
        # BlobCreated events of the runs container (a run's complete marker) go to `handle_run`,
        # as the queue mode hands them to the run's digest.
        self.runs_container, self.handle_run = runs_container, handle_run
        self.stats = {"handled": 0, "ignored": 0, "refused": 0, "rejected": 0, "failed": 0}
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            status, body, headers = self._respond(environ)
        except Exception:  # a bug: one JSON log record (traceback inside), never waitress's page
            self._count("failed")
            log_event(
                log,
                "webhook_error",
                "unexpected error answering a request",
                level=logging.ERROR,
                exc_info=True,
            )
            status, body, headers = "500 Internal Server Error", {"error": "internal error; retry later"}, []
        payload = json.dumps(body).encode("utf-8") if body is not None else b""
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload))), *headers]
        )
        return [payload]

    def _count(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self.stats[outcome] += n

    def _respond(self, environ: dict[str, Any]) -> tuple[str, Any, list[tuple[str, str]]]:
        if environ.get("PATH_INFO", "/") not in PATHS:
            return "404 Not Found", {"error": "not found; events go to POST /api/events"}, []
        method = environ.get("REQUEST_METHOD", "")
        if method not in ("POST", "OPTIONS"):
            allow = [("Allow", "POST, OPTIONS")]
            return "405 Method Not Allowed", {"error": f"{method} is not allowed"}, allow
        try:
            self.auth.authenticate(environ)
        except AuthUnavailable as exc:
            log_event(log, "webhook_auth_unavailable", str(exc), level=logging.ERROR)
            return "503 Service Unavailable", {"error": "cannot check credentials now; retry"}, []
        except Unauthorized as exc:
            self._count("refused")
            log_event(
                log,
                "webhook_refused",
                f"refused {method}: {exc}",
                level=logging.WARNING,
                reason=str(exc),
                remote_addr=environ.get("REMOTE_ADDR", ""),
            )
            return "401 Unauthorized", {"error": "missing or invalid credential"}, []
        if method == "OPTIONS":
            return self._abuse_protection(environ)
        return self._post(environ)

    def _abuse_protection(self, environ: Mapping[str, Any]) -> tuple[str, Any, list[tuple[str, str]]]:
        origin = environ.get("HTTP_WEBHOOK_REQUEST_ORIGIN", "")
        if not origin:
            return "400 Bad Request", {"error": "OPTIONS needs a WebHook-Request-Origin header"}, []
        log_event(log, "webhook_abuse_protection", f"allowed deliveries from {origin}", origin=origin)
        return "200 OK", None, [("WebHook-Allowed-Origin", origin), ("WebHook-Allowed-Rate", "*")]

    def _post(self, environ: dict[str, Any]) -> tuple[str, Any, list[tuple[str, str]]]:
        declared = environ.get("CONTENT_LENGTH") or ""
        if declared.isdigit() and int(declared) > self.max_body:
            return self._too_large()
        body = environ["wsgi.input"].read(self.max_body + 1)
        if len(body) > self.max_body:
            return self._too_large()
        try:
            items = parse_webhook_body(
                body, environ.get("CONTENT_TYPE", ""), expected_container=self.expected_container
            )
        except UnsupportedMediaType as exc:
            self._count("rejected")
            log_event(log, "webhook_bad_request", str(exc), level=logging.WARNING, reason=str(exc))
            return "415 Unsupported Media Type", {"error": str(exc)}, []
        except BadMessage as exc:
            self._count("rejected")
            log_event(log, "webhook_bad_request", str(exc), level=logging.WARNING, reason=str(exc))
            return "400 Bad Request", {"error": str(exc)}, []
        validations = [item for item in items if isinstance(item, SubscriptionValidation)]
        if validations:
            if len(items) != 1:
                self._count("rejected")
                return "400 Bad Request", {"error": "a validation event must come alone"}, []
            log_event(
                log,
                "webhook_validated",
                "answered the subscription validation handshake",
                event_id=validations[0].id,
            )
            return "200 OK", {"validationResponse": validations[0].code}, []
        try:
            routed = self._routed(items, body, environ.get("CONTENT_TYPE", ""))
        except BadMessage as exc:  # a runs-container event malformed beyond its container
            self._count("rejected")
            log_event(log, "webhook_bad_request", str(exc), level=logging.WARNING, reason=str(exc))
            return "400 Bad Request", {"error": str(exc)}, []
        return self._handle_all(routed)

    def _routed(self, items: list[Any], body: bytes, content_type: str) -> list[tuple[Any, Handler | None]]:
        """Each item with the handler it goes to: report events to `handle`; events ignored
        for the reports container that are blob events of the runs container to `handle_run`.
        The body parses the same way a second time, one item per event in the same order."""
        routed: list[tuple[Any, Handler | None]] = [(item, self.handle) for item in items]
        if (
            self.handle_run is None
            or self.runs_container is None
            or not any(isinstance(item, IgnoredEvent) for item in items)
        ):
            return routed
        runs = parse_webhook_body(body, content_type, expected_container=self.runs_container)
        return [
            (alt, self.handle_run)
            if isinstance(item, IgnoredEvent) and isinstance(alt, ReportEvent)
            else (item, handler)
            for (item, handler), alt in zip(routed, runs, strict=True)
        ]

    def _handle_all(self, items: list[tuple[Any, Handler | None]]) -> tuple[str, Any, list[tuple[str, str]]]:
        handled = ignored = 0
        rejected: list[str] = []
        for item, handle in items:
            if isinstance(item, IgnoredEvent) or handle is None:
                ignored += 1
                self._count("ignored")
                log_event(
                    log,
                    "event_ignored",
                    item.reason,
                    event_id=item.id,
                    event_type=item.event_type,
                    subject=item.subject,
                )
                continue
            try:
                handle(item)
            except (PermanentError, BadMessage) as exc:
                # Never succeeds: the others are still handled, then 400 dead-letters the body.
                self._count("rejected")
                rejected.append(f"event {item.id}: {exc}")
                log_event(
                    log,
                    "webhook_event_rejected",
                    str(exc),
                    level=logging.WARNING,
                    event_id=item.id,
                    blob=item.blob_name,
                    reason=str(exc),
                )
                continue
            except TransientError as exc:
                # The whole delivery is retried; events handled before this one come again,
                # which the handler's idempotence absorbs.
                self._count("failed")
                log_event(
                    log,
                    "webhook_handler_failed",
                    f"handling {item.blob_name} failed: {exc}",
                    level=logging.WARNING,
                    event_id=item.id,
                    blob=item.blob_name,
                    reason=str(exc),
                )
                return "503 Service Unavailable", {"error": "handling an event failed; retry later"}, []
            except Exception:
                self._count("failed")
                log_event(
                    log,
                    "webhook_handler_failed",
                    f"handling {item.blob_name} failed",
                    level=logging.ERROR,
                    exc_info=True,
                    event_id=item.id,
                    blob=item.blob_name,
                )
                return "500 Internal Server Error", {"error": "handling an event failed; retry later"}, []
            handled += 1
            self._count("handled")
        if rejected:
            return (
                "400 Bad Request",
                {"error": "; ".join(rejected)[:2000], "handled": handled, "ignored": ignored},
                [],
            )
        return "200 OK", {"handled": handled, "ignored": ignored}, []

    def _too_large(self) -> tuple[str, Any, list[tuple[str, str]]]:
        self._count("rejected")
        return "413 Content Too Large", {"error": f"body is over {self.max_body} bytes"}, []


def make_app(
    handle: Handler,
    *,
    auth: Authenticator,
    expected_container: str,
    runs_container: str | None = None,
    handle_run: Handler | None = None,
) -> WebhookApp:
    return WebhookApp(
        handle,
        auth=auth,
        expected_container=expected_container,
        runs_container=runs_container,
        handle_run=handle_run,
    )


class WebhookServer:
    """A waitress server that can be stopped from another thread (tests, SIGTERM)."""

    def __init__(self, app: Any, host: str, port: int, threads: int = 4) -> None:
        self._map: dict[int, Any] = {}
        # Waitress buffers the body before calling the app; its own cap sits above ours so
        # the app answers an oversized body with its JSON 413, and waitress stops worse ones.
        # Any: waitress types the result as a union of server kinds; ours is a single socket.
        self._server: Any = cast(
            Any,
            create_server(
                app,
                map=self._map,
                host=host,
                port=port,
                threads=threads,
                max_request_body_size=MAX_BODY + 64 * 1024,
                ident="servicetags-notifier",
                clear_untrusted_proxy_headers=True,
            ),
        )
        self.host, self.port = host, int(self._server.effective_port)

    def run(self) -> None:
        """Serve until close()."""
        self._server.run()

    def close(self, timeout: float = 5.0) -> None:
        # Let running handlers finish, then close every socket from the loop's own thread
        # (through waitress's trigger), which makes run() return.
        self._server.task_dispatcher.shutdown(timeout=timeout)
        self._server.trigger.pull_trigger(lambda: wasyncore.close_all(self._map))


def make_server(app: Any, host: str, port: int, threads: int = 4) -> WebhookServer:
    return WebhookServer(app, host, port, threads)


def serve(app: Any, host: str, port: int, *, stop: threading.Event, threads: int = 4) -> None:
    """Serve until `stop` is set, then let running handlers finish and return. The entry
    point owns the signals (SIGTERM sets `stop`, Ctrl-C interrupts), as in queue mode."""
    server = make_server(app, host, port, threads)

    def close_when_stopped() -> None:
        stop.wait()
        server.close()  # waits for running handlers, so not in a signal handler

    threading.Thread(target=close_when_stopped, name="webhook-stop", daemon=True).start()
    log_event(log, "webhook_listening", f"listening on {host}:{server.port}", host=host, port=server.port)
    server.run()
    log_event(log, "webhook_stopped", "webhook server stopped")
