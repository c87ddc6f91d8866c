"""A local stand-in for Azure Resource Graph (and the one ARM list it cannot answer), over HTTPS.

Routes, as ARM serves them:

    POST /providers/Microsoft.ResourceGraph/resources?api-version=...
        {"subscriptions" | "managementGroups", "query", "options": {"$top", "$skipToken",
         "resultFormat", ...}}  ->  {"totalRecords", "count", "data", "facets",
         "resultTruncated", "$skipToken"?}
    GET  /subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.Network/firewallPolicies/{p}
         /ruleCollectionGroups?api-version=...  ->  {"value": [...], "nextLink"?}

Resource Graph's `resources` table holds firewall policies but not their rule collection
groups (child resources), so a reader lists those per policy through ARM, as the second route.

It serves ARM JSON files (any listing shape core/rules.py reads): rows get the table's
extra columns (`subscriptionId`, `resourceGroup`, lower-case `type`) and are filtered by the
subscriptions asked for and the types named in the query's `type in~ (...)`; it does not run
KQL. Pages are `$top` rows (at most 1000, and at most `page_size`), chained by an opaque
`$skipToken`. Faults are scripted per request, in order: `ok` (answer normally), `429[:s]`
(throttled, with Retry-After), `500`, `503`, `reset`, `truncate`, `slow[:s]`, `403` (the
identity lacks Reader). The TLS server, its certificate (trustme) and ARM's bearer challenge
are the local ARM endpoint's own (devstack/arm_endpoint.py).

    python -m devstack.resource_graph --rules DIR --state-dir DIR [--page-size N]

writes `DIR/resource-graph.json` ({"url", "ca_path", "pid"}) once it listens.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from devstack.arm_endpoint import (
    _API_VERSION,
    _CHALLENGE,
    _INVALID_HEADER_CHALLENGE,
    LOOPBACK,
    _Handler,
    _is_guid,
    _Server,
    _server_context,
    arm_error,
)
from devstack.arm_faults import Fault
from runtime.logs import log_event

log = logging.getLogger(__name__)

STATE_FILE = "resource-graph.json"
CA_FILE = "resource-graph-ca.pem"
MAX_TOP = 1000  # Resource Graph's own cap on `$top`
DEFAULT_TOP = 100  # what it returns without `$top`
_QUERY_PATH = re.compile(r"^/providers/Microsoft\.ResourceGraph/resources/?$", re.IGNORECASE)
_GROUPS_PATH = re.compile(
    r"^(?P<policy>/subscriptions/(?P<subscription>[^/]+)/resourceGroups/[^/]+/providers/"
    r"Microsoft\.Network/firewallPolicies/[^/]+)/ruleCollectionGroups/?$",
    re.IGNORECASE,
)
_TYPES_IN_QUERY = re.compile(r"\btype\s+in~?\s*\(([^)]*)\)", re.IGNORECASE)
_RCG_TYPE = "microsoft.network/firewallpolicies/rulecollectiongroups"


def _row(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource as a row of the `resources` table."""
    rid = str(resource.get("id", ""))
    parts = rid.split("/")
    lowered = [p.lower() for p in parts]
    subscription = parts[lowered.index("subscriptions") + 1] if "subscriptions" in lowered else ""
    group = parts[lowered.index("resourcegroups") + 1].lower() if "resourcegroups" in lowered else ""
    return {
        "id": rid,
        "name": resource.get("name", parts[-1]),
        "type": str(resource.get("type", "")).lower(),
        "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "kind": resource.get("kind", ""),
        "location": resource.get("location", ""),
        "resourceGroup": group,
        "subscriptionId": subscription,
        "managedBy": "",
        "sku": resource.get("sku"),
        "plan": None,
        "properties": resource.get("properties", {}),
        "tags": resource.get("tags"),
        "identity": resource.get("identity"),
        "zones": resource.get("zones"),
        "extendedLocation": None,
    }


class GraphState:
    """Resources served, scripted faults and what was asked. Thread-safe."""

    def __init__(
        self,
        resources: Iterable[dict[str, Any]],
        *,
        page_size: int = MAX_TOP,
        management_groups: dict[str, list[str]] | None = None,
        retry_after: int = 1,
    ) -> None:
        self.rows: list[dict[str, Any]] = []
        self.groups: dict[str, list[dict[str, Any]]] = {}  # policy id (lower case) -> its groups
        for resource in resources:
            if str(resource.get("type", "")).lower() == _RCG_TYPE:
                policy = str(resource["id"]).rsplit("/ruleCollectionGroups/", 1)[0].lower()
                self.groups.setdefault(policy, []).append(resource)
            else:
                self.rows.append(_row(resource))
        self.page_size = page_size
        self.management_groups = management_groups  # None: every group holds every subscription
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._faults: deque[str] = deque()
        self._always: str | None = None
        self.requests: list[dict[str, Any]] = []  # {"method", "path", "body"} in order

    def add_faults(self, kinds: list[str]) -> None:
        for kind in kinds:
            _check_fault(kind)
        with self._lock:
            self._faults.extend(kinds)

    def fail_always(self, kind: str | None) -> None:
        if kind is not None:
            _check_fault(kind)
        with self._lock:
            self._always = kind

    def next_fault(self) -> str | None:
        with self._lock:
            if self._always:
                return self._always
            kind = self._faults.popleft() if self._faults else None
        return None if kind == "ok" else kind

    def record(self, method: str, path: str, body: Any) -> None:
        with self._lock:
            self.requests.append({"method": method, "path": path, "body": body})

    def subscriptions_of(self, body: dict[str, Any]) -> set[str] | None:
        """The subscriptions in scope (lower case); None: all of them."""
        if body.get("subscriptions"):
            return {str(s).lower() for s in body["subscriptions"]}
        groups = body.get("managementGroups") or []
        if groups and self.management_groups is not None:
            return {s.lower() for g in groups for s in self.management_groups.get(str(g), [])}
        return None


def _check_fault(kind: str) -> None:
    if kind not in {"ok", "403"}:
        Fault.parse(kind)  # raises ValueError naming the known kinds


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"$offset": offset}).encode()).decode()


def _offset(token: str) -> int:
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["$offset"])
    except (ValueError, KeyError, TypeError):
        raise ValueError("invalid $skipToken") from None


class _GraphHandler(_Handler):
    server_version = "servicetags-watch-local-resource-graph"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if not self._authorized():
            return
        match = _GROUPS_PATH.match(url.path)
        if match is None:
            self._send_json(404, arm_error("NotFound", f"The requested resource '{url.path}' was not found."))
            return
        query = parse_qs(url.query)
        if not self._api_version(query):
            return
        if not _is_guid(match["subscription"]):
            message = (
                f"The provided subscription identifier '{match['subscription']}' is malformed or invalid."
            )
            self._send_json(400, arm_error("InvalidSubscriptionId", message))
            return
        self.graph.record("GET", url.path, None)
        if self._fault():
            return
        groups = self.graph.groups.get(match["policy"].lower(), [])
        start = int(query.get("$skipToken", ["0"])[0] or 0)
        page = groups[start : start + self.graph.page_size]
        body: dict[str, Any] = {"value": page}
        if start + len(page) < len(groups):
            params = {"api-version": query["api-version"][0], "$skipToken": str(start + len(page))}
            host = self.headers.get("Host", f"{LOOPBACK}:{self.server.server_address[1]}")
            body["nextLink"] = f"https://{host}{url.path}?{urlencode(params)}"
        self._send_json(200, json.dumps(body).encode())

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        raw = self._read_body()
        if not self._authorized():
            return
        if _QUERY_PATH.match(url.path) is None:
            self._method_not_allowed()
            return
        if not self._api_version(parse_qs(url.query)):
            return
        try:
            body = json.loads(raw or b"null")
            if (
                not isinstance(body, dict)
                or not isinstance(body.get("query"), str)
                or not body["query"].strip()
            ):
                raise ValueError("the body must be a JSON object with a query")
            options = body.get("options") or {}
            top = int(options.get("$top") or DEFAULT_TOP)
            if not 1 <= top <= MAX_TOP:
                raise ValueError(f"$top must be between 1 and {MAX_TOP}")
            offset = (
                _offset(options["$skipToken"])
                if options.get("$skipToken")
                else int(options.get("$skip") or 0)
            )
        except (ValueError, TypeError) as exc:
            self._send_json(400, arm_error("BadRequest", f"Please provide a valid query: {exc}"))
            return
        self.graph.record("POST", url.path, body)
        if self._fault():
            return
        rows = self._select(body)
        page = rows[offset : offset + min(top, self.graph.page_size)]
        reply: dict[str, Any] = {
            "totalRecords": len(rows),
            "count": len(page),
            "data": page,
            "facets": [],
            "resultTruncated": "false",
        }
        if offset + len(page) < len(rows):
            reply["$skipToken"] = _token(offset + len(page))
        self._send_json(200, json.dumps(reply).encode())

    def _refuse(self) -> None:
        self._method_not_allowed()

    do_PUT = do_PATCH = do_DELETE = _refuse

    # -- helpers

    @property
    def graph(self) -> GraphState:
        return self.server.state  # type: ignore[return-value]

    def _select(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        scope = self.graph.subscriptions_of(body)
        match = _TYPES_IN_QUERY.search(body["query"])
        types = {t.strip().strip("'\"").lower() for t in match[1].split(",")} if match else None
        return [
            row
            for row in self.graph.rows
            if (scope is None or row["subscriptionId"].lower() in scope)
            and (types is None or row["type"] in types)
        ]

    def _authorized(self) -> bool:
        authorization = self.headers.get("Authorization")
        if authorization is None:
            self._unauthorized(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
                _CHALLENGE,
            )
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self._unauthorized(
                "AuthenticationFailedInvalidHeader",
                "Authentication failed. The 'Authorization' header is provided in an invalid format.",
                _INVALID_HEADER_CHALLENGE,
            )
            return False
        return True

    def _api_version(self, query: dict[str, list[str]]) -> bool:
        version = query.get("api-version", [""])[0]
        if not version:
            message = "The api-version query parameter (?api-version=) is required for all requests."
            self._send_json(400, arm_error("MissingApiVersionParameter", message))
            return False
        if not _API_VERSION.match(version):
            self._send_json(
                400, arm_error("InvalidApiVersionParameter", f"The api-version '{version}' is invalid.")
            )
            return False
        return True

    def _fault(self) -> bool:
        """Fail this request as scripted; True when it was answered so."""
        kind = self.graph.next_fault()
        if kind is None:
            return False
        log_event(log, "resource_graph_fault", f"injected {kind} for {self.path}", kind=kind, path=self.path)
        if kind == "403":
            message = (
                "The client does not have authorization to perform action "
                "'Microsoft.ResourceGraph/resources/read' over the scope."
            )
            self._send_json(403, arm_error("AuthorizationFailed", message))
            return True
        fault = Fault.parse(kind)
        if fault.kind == "slow":
            return bool(self.server.stopping.wait(fault.arg if fault.arg is not None else 2.0))
        if fault.kind == "429":
            seconds = int(fault.arg) if fault.arg is not None else self.graph.retry_after
            self._send_json(
                429,
                arm_error(
                    "RateLimiting",
                    "Please provide below info when asking for support: "
                    f"timestamp, correlation id. Retry after {seconds} seconds.",
                ),
                {"Retry-After": str(seconds)},
            )
        elif fault.kind in ("500", "503"):
            code = "InternalServerError" if fault.kind == "500" else "ServiceUnavailable"
            self._send_json(int(fault.kind), arm_error(code, "Encountered internal server error."))
        elif fault.kind == "reset":
            self._reset_connection()
        elif fault.kind == "truncate":
            self._send_truncated([json.dumps({"totalRecords": 1, "count": 1, "data": [{}] * 64}).encode()])
        return True


class ResourceGraphEndpoint:
    """The stand-in running in this process (threads); a context manager."""

    def __init__(
        self,
        resources: Iterable[dict[str, Any]],
        *,
        host: str = LOOPBACK,
        port: int = 0,
        state_dir: Path | None = None,
        page_size: int = MAX_TOP,
        management_groups: dict[str, list[str]] | None = None,
        retry_after: int = 1,
    ) -> None:
        self.state = GraphState(
            resources, page_size=page_size, management_groups=management_groups, retry_after=retry_after
        )
        self.host, self._port = host, port
        self._own_state_dir = state_dir is None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="resource-graph-"))
        self.ca_path = self.state_dir / CA_FILE
        self.url = ""
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_files(cls, paths: Iterable[str | os.PathLike[str]], **kwargs: Any) -> ResourceGraphEndpoint:
        from core.rules import resources_of
        from impact.rule_files import read_json, rule_files

        resources = [r for p in rule_files(paths) for r in resources_of(read_json(p), str(p))]
        return cls(resources, **kwargs)

    def start(self) -> ResourceGraphEndpoint:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        context = _server_context(self.host, self.ca_path, [])
        self._server = _Server((self.host, self._port), context, self.state)  # type: ignore[arg-type]
        self._server.RequestHandlerClass = _GraphHandler
        host = LOOPBACK if self.host in {"", "0.0.0.0"} else self.host
        self.url = f"https://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="resource-graph",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
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

    def __enter__(self) -> ResourceGraphEndpoint:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.resource_graph", description="Local HTTPS stand-in for Azure Resource Graph."
    )
    parser.add_argument(
        "--rules", action="append", required=True, help="ARM JSON file or folder (repeatable)"
    )
    parser.add_argument("--state-dir", type=Path, required=True, help=f"gets {STATE_FILE}")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=MAX_TOP)
    parser.add_argument("--fault", action="append", default=[], help="scripted fault, in order (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    state_file = args.state_dir / STATE_FILE
    state_file.unlink(missing_ok=True)
    try:
        endpoint = ResourceGraphEndpoint.from_files(
            args.rules, port=args.port, state_dir=args.state_dir, page_size=args.page_size
        )
        endpoint.state.add_faults(args.fault)
        endpoint.start()
    except Exception as exc:  # a bad rules file or a port in use: one line, no traceback
        print(f"resource_graph: cannot start: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    info = {"url": endpoint.url, "ca_path": str(endpoint.ca_path.resolve()), "pid": os.getpid()}
    temporary = state_file.with_suffix(".tmp")
    temporary.write_text(json.dumps(info, indent=2) + "\n")
    temporary.replace(state_file)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        endpoint.stop()
        state_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
