"""A local stand-in for the ARM Service Tag Discovery API, over HTTPS.

It answers the one route the project uses,

    GET /subscriptions/{sub}/providers/Microsoft.Network/locations/{location}/serviceTags
        ?api-version=...

in ARM's wire shape (string change numbers, `id`, `type`, `values`; no `regionId` or
`platform`), with ARM-style JSON errors and ARM's bearer challenge, so the real
`azure-mgmt-network` client runs against it unmodified. The TLS certificate comes from a CA
made at start by `trustme`; clients trust it through `connection_verify=<ca_path>` or
REQUESTS_CA_BUNDLE.

It serves real snapshot files (download-file or ARM shape, gzipped or not), can switch
snapshot while running, can serve another snapshot to chosen locations (in Azure, locations
lag each other), and injects faults: 429 with Retry-After, 500, 503, connection reset,
truncated body, slow answer, and a refused token (401 or 403, scripted only). Faults come
from a script (`add_faults`, `fail_always`) or at a random rate. The same controls are
reachable over HTTP under `/_admin/` (loopback only, no token), for when the endpoint runs as its own process:

    python -m devstack.arm_endpoint --snapshot FILE --state-dir DIR [--port P] [--fault-rate F]

which writes `DIR/arm.json` ({"url", "ca_path", "pid", ...}) once it listens and runs until
SIGTERM. `ArmAdminClient.from_state_dir(DIR)` drives it from another process.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

from devstack.arm_admin import STATE_FILE
from devstack.arm_faults import (
    AUTH_FAULT_KINDS,
    DEFAULT_RETRY_AFTER,
    DEFAULT_SLOW_SECONDS,
    EndpointState,
    Fault,
)
from runtime.logs import log_event

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

CA_FILE = "arm-ca.pem"

JSON_CONTENT_TYPE = "application/json; charset=utf-8"

# ARM paths are case-insensitive; the trailing slash is tolerated like ARM does.
_SERVICE_TAGS_PATH = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)/providers/Microsoft\.Network"
    r"/locations/(?P<location>[^/]+)/serviceTags/?$",
    re.IGNORECASE,
)

_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")

# ARM's own challenge and message for a request without a token (as recorded in the Azure
# SDKs' challenge-parsing tests and in real 401 answers quoted in public issues).
_CHALLENGE = (
    'Bearer authorization_uri="https://login.windows.net/", error="invalid_token", '
    "error_description=\"The authentication failed because of missing 'Authorization' header.\""
)

_INVALID_HEADER_CHALLENGE = (
    'Bearer authorization_uri="https://login.windows.net/", error="invalid_token", '
    "error_description=\"The authentication failed because of invalid 'Authorization' header.\""
)

_INVALID_TOKEN_CHALLENGE = (
    'Bearer authorization_uri="https://login.windows.net/", error="invalid_token", '
    'error_description="The access token is invalid."'
)

_LOCAL_PRINCIPAL = "00000000-0000-0000-0000-0000000d0c70"

_MAX_ADMIN_BODY = 1 << 20


# --------------------------------------------------------------------------------------
# HTTP handling


def arm_error(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


class _Server(ThreadingHTTPServer):
    """Threaded HTTPS server that knows its live connections, so stop() can cut them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext, state: EndpointState) -> None:
        super().__init__(address, _Handler)
        self.context = context
        self.state = state
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        # The TLS handshake happens on first read, in the connection's own thread, so a
        # slow or broken client cannot hold up the accept loop.
        tls = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return tls, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that drop, fail the handshake or get cut by stop() are normal here.
        log.debug("arm_endpoint.connection_error client=%s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like ARM
    server_version = "servicetags-watch-local-arm"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are closed after this many seconds
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("arm_endpoint.request %s", format % args)

    # -- routing

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path.startswith("/_admin/"):
            self._admin("GET", url.path)
        else:
            self._service_tags(url.path, parse_qs(url.query))

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith("/_admin/"):
            self._admin("POST", path)
        else:
            self._method_not_allowed()

    do_PUT = do_PATCH = do_DELETE = do_POST

    def _method_not_allowed(self) -> None:
        self._discard_body()
        message = f"The HTTP method '{self.command}' is not supported at '{self.path}'."
        self._send_json(405, arm_error("HttpMethodNotAllowed", message))

    # -- the service-tag route

    def _service_tags(self, path: str, query: dict[str, list[str]]) -> None:
        authorization = self.headers.get("Authorization")
        if authorization is None:
            self._unauthorized(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
                _CHALLENGE,
            )
            return
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self._unauthorized(
                "AuthenticationFailedInvalidHeader",
                "Authentication failed. The 'Authorization' header is provided in an invalid format.",
                _INVALID_HEADER_CHALLENGE,
            )
            return
        match = _SERVICE_TAGS_PATH.match(path)
        if match is None:
            message = f"The requested resource '{path}' was not found."
            self._send_json(404, arm_error("NotFound", message))
            return
        subscription, location = match["subscription"], match["location"]
        if not _is_guid(subscription):
            message = f"The provided subscription identifier '{subscription}' is malformed or invalid."
            self._send_json(400, arm_error("InvalidSubscriptionId", message))
            return
        api_version = query.get("api-version", [""])[0]
        if not api_version:
            message = "The api-version query parameter (?api-version=) is required for all requests."
            self._send_json(400, arm_error("MissingApiVersionParameter", message))
            return
        if not _API_VERSION.match(api_version):
            message = f"The api-version '{api_version}' is invalid."
            self._send_json(400, arm_error("InvalidApiVersionParameter", message))
            return

        state = self.server.state
        state.record_request(location)
        snapshot = state.snapshot_for(location)
        fault = state.next_fault(location)
        if fault is not None:
            log_event(
                log, "arm_endpoint_fault", f"injected {fault} for {location}", kind=fault, location=location
            )
        if fault is not None and fault.kind in AUTH_FAULT_KINDS:
            self._refuse_token(fault.kind, subscription)
            return
        self._answer(snapshot.body_parts(subscription), fault)

    def _answer(self, body: list[bytes], fault: Fault | None) -> None:
        """Send the snapshot, or fail the way `fault` says."""
        state = self.server.state
        kind = fault.kind if fault else None
        if kind == "slow":
            delay = fault.arg if fault and fault.arg is not None else state.slow_seconds
            if self.server.stopping.wait(delay):
                return
        if kind == "429":
            seconds = int(fault.arg) if fault and fault.arg is not None else state.retry_after
            message = f"The request is being throttled. Retry after {seconds} seconds."
            self._send_json(429, arm_error("TooManyRequests", message), {"Retry-After": str(seconds)})
        elif kind == "500":
            message = (
                f"Encountered internal server error. Diagnostic information: tracking id '{uuid.uuid4()}'."
            )
            self._send_json(500, arm_error("InternalServerError", message))
        elif kind == "503":
            message = "The service is temporarily unavailable. Please try again later."
            self._send_json(503, arm_error("ServiceUnavailable", message))
        elif kind == "400":
            # What ARM answers for a location the provider does not serve (a retired region's).
            message = (
                "No registered resource provider found for location and API version for type "
                "'locations/serviceTags'."
            )
            self._send_json(400, arm_error("NoRegisteredProviderFound", message))
        elif kind == "reset":
            self._reset_connection()
        elif kind == "truncate":
            self._send_truncated(body)
        else:
            self._send_json(200, body)

    def _reset_connection(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN; closing
        # rfile first drops its reference so close() really closes the socket now.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.rfile.close()
        self.connection.close()

    def _send_truncated(self, body: list[bytes]) -> None:
        # Announce the full length, send about half, then close: the client sees EOF early.
        total = sum(len(part) for part in body)
        self._send_head(200, total, {})
        self.wfile.write(b"".join(body)[: total // 2])
        self.close_connection = True

    def _refuse_token(self, kind: str, subscription: str) -> None:
        # ARM's answers (as quoted in public issues): an unacceptable token, or a valid one
        # whose principal holds no role with the action at the scope.
        if kind == "401":
            self._unauthorized(
                "InvalidAuthenticationToken", "The access token is invalid.", _INVALID_TOKEN_CHALLENGE
            )
            return
        message = (
            f"The client '{_LOCAL_PRINCIPAL}' with object id '{_LOCAL_PRINCIPAL}' does not have "
            "authorization to perform action 'Microsoft.Network/locations/serviceTags/read' "
            f"over scope '/subscriptions/{subscription}' or the scope is invalid. If access was "
            "recently granted, please refresh your credentials."
        )
        self._send_json(403, arm_error("AuthorizationFailed", message))

    def _unauthorized(self, code: str, message: str, challenge: str) -> None:
        self._send_json(401, arm_error(code, message), {"WWW-Authenticate": challenge})

    # -- admin routes

    def _admin(self, method: str, path: str) -> None:
        body = self._read_body()
        if not _is_loopback(self.client_address[0]):
            message = "Admin routes only answer requests from loopback."
            self._send_json(403, arm_error("Forbidden", message))
            return
        state = self.server.state
        try:
            payload = json.loads(body) if body else {}
            if not isinstance(payload, dict):
                raise ValueError("the body must be a JSON object")
            handled = _admin_action(state, method, path, payload)
        except (ValueError, KeyError, TypeError, OSError) as error:
            self._send_json(400, arm_error("InvalidRequest", f"{type(error).__name__}: {error}"))
            return
        if not handled:
            self._send_json(404, arm_error("NotFound", f"No admin route {method} {path}."))
            return
        self._send_json(200, json.dumps(state.stats()).encode())

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_ADMIN_BODY:
            self.close_connection = True
            return b""
        return self.rfile.read(length) if length else b""

    def _discard_body(self) -> None:
        self._read_body()

    # -- writing

    def _send_head(self, status: int, length: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", JSON_CONTENT_TYPE)
        self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        # ARM echoes the caller's correlation id and makes one up otherwise.
        correlation = self.headers.get("x-ms-correlation-request-id") or str(uuid.uuid4())
        self.send_header("x-ms-correlation-request-id", correlation)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_json(
        self, status: int, body: bytes | list[bytes], headers: dict[str, str] | None = None
    ) -> None:
        parts = body if isinstance(body, list) else [body]
        self._send_head(status, sum(len(part) for part in parts), headers or {})
        for part in parts:
            self.wfile.write(part)


def _admin_action(state: EndpointState, method: str, path: str, payload: dict[str, Any]) -> bool:
    """Apply one admin request to the state; False when the route does not exist."""
    route = (method, path.rstrip("/"))
    if route == ("GET", "/_admin/stats"):
        return True
    if route == ("POST", "/_admin/snapshot"):
        locations = payload.get("locations")
        state.set_snapshot(Path(payload["path"]), list(locations) if locations else None)
    elif route == ("POST", "/_admin/overrides/clear"):
        state.clear_location_overrides()
    elif route == ("POST", "/_admin/faults"):
        state.add_faults(list(payload["kinds"]), payload.get("location"))
    elif route == ("POST", "/_admin/fail-always"):
        state.fail_always(str(payload["location"]), str(payload["kind"]))
    elif route == ("POST", "/_admin/faults/clear"):
        state.clear_faults()
    elif route == ("POST", "/_admin/fault-rate"):
        state.set_fault_rate(float(payload["rate"]), payload.get("seed"))
    elif route == ("POST", "/_admin/counts/reset"):
        state.reset_counts()
    else:
        return False
    return True


def _is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


# --------------------------------------------------------------------------------------
# The endpoint and its controls


class ArmEndpoint:
    """The endpoint running in this process (threads). Use as a context manager or start/stop.

    state_dir: where the CA certificate is written (kept after stop); by default a private
    temporary directory removed by stop().
    """

    def __init__(
        self,
        snapshot: Path,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        state_dir: Path | None = None,
        fault_rate: float = 0.0,
        seed: int | None = None,
        retry_after: int = DEFAULT_RETRY_AFTER,
        slow_seconds: float = DEFAULT_SLOW_SECONDS,
        cert_names: list[str] | None = None,
    ) -> None:
        self.state = EndpointState(
            snapshot,
            fault_rate=fault_rate,
            seed=seed,
            retry_after=retry_after,
            slow_seconds=slow_seconds,
        )
        self.host = host
        self.cert_names = list(cert_names or [])
        self._requested_port = port
        self._own_state_dir = state_dir is None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="arm-endpoint-"))
        self.ca_path = self.state_dir / CA_FILE
        self.port = 0
        self.url = ""
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ArmEndpoint:
        if self._server is not None:
            raise RuntimeError("the endpoint is already running")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        context = _server_context(self.host, self.ca_path, self.cert_names)
        self._server = _Server((self.host, self._requested_port), context, self.state)
        self.port = int(self._server.server_address[1])
        url_host = LOOPBACK if self.host in {"0.0.0.0", ""} else self.host
        self.url = f"https://{url_host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"arm-endpoint-{self.port}",
            daemon=True,
        )
        self._thread.start()
        log_event(
            log, "arm_endpoint_listening", f"ARM endpoint on {self.url}", url=self.url, ca=str(self.ca_path)
        )
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections, release the port. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.stopping.set()
            server.shutdown()
            server.close_connections()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> ArmEndpoint:
        return self if self._server is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Controls, delegated to the state so they work the same in-process and over HTTP.

    def set_snapshot(self, path: Path, locations: list[str] | None = None) -> None:
        self.state.set_snapshot(path, locations)

    def clear_location_overrides(self) -> None:
        self.state.clear_location_overrides()

    def add_faults(self, kinds: list[str], location: str | None = None) -> None:
        self.state.add_faults(kinds, location)

    def fail_always(self, location: str, kind: str) -> None:
        self.state.fail_always(location, kind)

    def clear_faults(self) -> None:
        self.state.clear_faults()

    def set_fault_rate(self, rate: float, seed: int | None = None) -> None:
        self.state.set_fault_rate(rate, seed)

    def request_count(self, location: str) -> int:
        return self.state.request_count(location)

    def reset_counts(self) -> None:
        self.state.reset_counts()

    def stats(self) -> dict[str, Any]:
        return self.state.stats()


def _server_context(host: str, ca_path: Path, extra_names: list[str]) -> ssl.SSLContext:
    """A TLS server context with a certificate from a CA made now; the CA PEM goes to disk.

    The certificate covers loopback, the bound host and `extra_names` (e.g. a compose
    service name other containers use to reach the endpoint).
    """
    ca = trustme.CA(organization_name="servicetags-watch local ARM endpoint")
    names = ["127.0.0.1", "localhost", "::1"]
    for name in [host, *extra_names]:
        if name not in {*names, "0.0.0.0", ""}:
            names.append(name)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    ca.issue_cert(*names).configure_cert(context)
    ca.cert_pem.write_to_path(str(ca_path))
    return context


class StaticTokenCredential:
    """A credential for the local endpoint: one fixed bearer token, valid for a year.

    The endpoint only checks that a bearer token is present, like ARM's first gate. Both
    token methods exist because azure-core 1.41 prefers `get_token_info` when present.
    """

    def __init__(self, token: str = "dev-token") -> None:
        self.token = token

    def _expires_on(self) -> int:
        return int(time.time()) + 365 * 24 * 3600

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self.token, self._expires_on())

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        return AccessTokenInfo(self.token, self._expires_on())


# --------------------------------------------------------------------------------------
# Running as a background process


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.arm_endpoint",
        description="Local HTTPS stand-in for the ARM Service Tag Discovery API.",
    )
    parser.add_argument("--snapshot", type=Path, required=True, help="service-tag JSON file")
    parser.add_argument("--state-dir", type=Path, required=True, help=f"gets {STATE_FILE}")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None, help="seed for random faults")
    parser.add_argument("--retry-after", type=int, default=DEFAULT_RETRY_AFTER)
    parser.add_argument("--slow-seconds", type=float, default=DEFAULT_SLOW_SECONDS)
    parser.add_argument(
        "--cert-name",
        action="append",
        default=[],
        help="extra DNS name or IP for the TLS certificate (repeatable)",
    )
    return parser.parse_args(argv)


def _write_state_file(path: Path, info: dict[str, Any]) -> None:
    # Written atomically: a launcher polls for this file to know the endpoint is up.
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(info, indent=2) + "\n")
    temporary.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    state_file = args.state_dir / STATE_FILE
    state_file.unlink(missing_ok=True)  # a stale file would announce a dead endpoint
    try:
        endpoint = ArmEndpoint(
            args.snapshot,
            host=args.host,
            port=args.port,
            state_dir=args.state_dir,
            fault_rate=args.fault_rate,
            seed=args.seed,
            retry_after=args.retry_after,
            slow_seconds=args.slow_seconds,
            cert_names=args.cert_name,
        )
        endpoint.start()
    except (OSError, ValueError) as error:
        print(f"arm_endpoint: cannot start: {error}", file=sys.stderr)
        return 1

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    info = {
        "url": endpoint.url,
        "ca_path": str(endpoint.ca_path.resolve()),
        "pid": os.getpid(),
        "port": endpoint.port,
        "snapshot": str(args.snapshot.resolve()),
    }
    _write_state_file(state_file, info)
    print(json.dumps(info), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        endpoint.stop()
        state_file.unlink(missing_ok=True)
        log_event(log, "arm_endpoint_stopped", "ARM endpoint stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
