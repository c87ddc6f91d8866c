"""A local stand-in for Microsoft's Download Center: the details pages and the files they link.

What the `download-center` source reads, as Microsoft serves it (azure-facts §2 and §13):

- `GET /en-us/download/details.aspx?id=56519` (57063 Government, 57062 China): an HTML page
  linking the current `ServiceTags_<Cloud>_YYYYMMDD.json` under a fixed folder on
  `https://download.microsoft.com/download/…`. The page is written in one of the forms real
  tools have met: `variable` (the page script's `var AcOEt_DownloadUrl = "…"`, with older dated
  links beside it), `href` (a download button's `href`, several dated links, `&amp;` escapes),
  `any` (only bare URLs inside a script's JSON, several dates), or `none` (a page that yields
  no file link at all: the failure the source must report).
- `GET /download/<folder>/<name>`: the file, plain JSON (the bundled `.gz` files are
  decompressed), with an `ETag` over its content and `If-None-Match` answered with 304.

Links name `https://download.microsoft.com`; the worker maps that host to this server with
SERVICETAGS_DOWNLOAD_FILES_URL, as SERVICETAGS_ARM_ENDPOINT maps ARM, so the page is parsed
exactly as the real one would be. Plain HTTP on loopback (no credential crosses it).

Control: in-process through `DownloadCenter`, from another process through the admin routes
(`DownloadCenterControl.from_state_dir(dir)`), or the command line
`python -m devstack.download_center --snapshot FILE --state-dir DIR [--mode variable|href|any|none]`.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import re
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("devstack.download_center")

STATE_FILE = "download.json"
MODES = ("variable", "href", "any", "none")
IDS = {56519: "Public", 57063: "AzureGovernment", 57062: "AzureChina"}
FILE_CLOUD = {"Public": "Public", "AzureGovernment": "AzureGovernment", "AzureChina": "China"}
# Fixed per cloud, as Microsoft's have been for a year; only the file name changes weekly.
FOLDERS = {
    "Public": "7/1/d/71d86715-5596-4529-9b13-da13a5de5b63",
    "AzureGovernment": "6/4/d/64d495f9-3b4c-4a1d-9d7c-5c9b7e2b3c20",
    "AzureChina": "9/d/0/9d0b7a1e-8c52-4b6e-a0b6-3c3d4a1e9f11",
}
_DATE_IN_NAME = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")


def _file_date(path: Path) -> str:
    found = _DATE_IN_NAME.search(path.name)
    return "".join(found.groups()) if found else "20250101"


def read_file_bytes(path: Path) -> bytes:
    raw = Path(path).read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


class Published:
    """One file as published: its name, its bytes, its ETag."""

    def __init__(self, cloud: str, body: bytes, name: str) -> None:
        self.cloud, self.body, self.name = cloud, body, name
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

    @property
    def path(self) -> str:
        return f"/download/{FOLDERS[self.cloud]}/{self.name}"

    @property
    def url(self) -> str:
        return "https://download.microsoft.com" + self.path


def details_page(cloud: str, mode: str, current: Published | None, older: list[str]) -> str:
    """The details page in one of the forms real tools have met (see the module docstring)."""
    download_id = next(i for i, c in IDS.items() if c == cloud)
    title = {
        "Public": "Azure IP Ranges and Service Tags \u2013 Public Cloud",
        "AzureGovernment": "Azure IP Ranges and Service Tags \u2013 US Government Cloud",
        "AzureChina": "Azure IP Ranges and Service Tags \u2013 China Cloud",
    }[cloud]
    head = (
        f'<!DOCTYPE html>\n<html lang="en-us"><head><meta charset="utf-8"><title>Download {title} '
        "from Official Microsoft Download Center</title></head>\n<body>\n"
        f'<h1 class="heading">{title}</h1>\n'
        f'<a href="https://www.microsoft.com/en-us/download/confirmation.aspx?id={download_id}&amp;'
        'lang=en">Download</a>\n'
        '<h3 class="h6">Version:</h3><p style="overflow-wrap:break-word">2025.01.12</p>\n'
    )
    tail = "</body></html>\n"
    if mode == "none" or current is None:
        return head + "<p>This download is no longer available.</p>\n" + tail
    dated = [f"https://download.microsoft.com/download/{FOLDERS[cloud]}/{name}" for name in older]
    if mode == "variable":
        links = "".join(f'<li><a href="{u}">{u.rpartition("/")[2]}</a></li>' for u in dated)
        return (
            head + f'<script>var AcOEt_DownloadUrl = "{current.url}"; var AcOEt_Locale = "en-us";'
            "</script>\n"
            f"<ul>{links}</ul>\n" + tail
        )
    if mode == "href":
        # The download button, older files as links, and the tracking query escaped as &amp;.
        links = "".join(f'<a href="{u}" data-bi-cN="older">{u.rpartition("/")[2]}</a>\n' for u in dated)
        return (
            head + f'<a class="mscom-link download-button dl-button" href="{current.url}" '
            'data-bi-id="download&amp;type=json">Download</a>\n'
            '<a href="https://download.microsoft.com/download/0/1/8/018e208d/PowerShell_Readme.json" '
            'data-x="a&amp;b">readme</a>\n' + links + tail
        )
    # any: bare URLs only, inside a script's JSON, the current one not first.
    blob = json.dumps({"downloadFiles": [{"url": u} for u in [*dated, current.url, *dated[:1]]]})
    return head + f"<script>window.__DLCDetails__ = {blob.replace('&', '&amp;')};</script>\n" + tail


class DownloadCenterState:
    def __init__(self, snapshot: Path | None = None, *, mode: str = "variable") -> None:
        self._lock = threading.Lock()
        self.mode = mode
        self._current: dict[str, Published] = {}
        self._history: dict[str, Published] = {}  # path -> every file published
        self._faults: deque[int] = deque()
        self.requests: dict[str, int] = {"page": 0, "file": 0, "not_modified": 0}
        if snapshot is not None:
            self.set_file(snapshot)

    def set_file(self, path: Path, *, cloud: str | None = None, name: str | None = None) -> Published:
        """Publish `path` as the cloud's current file (named after its date unless `name`)."""
        body = read_file_bytes(path)
        cloud = cloud or _declared(body) or "Public"
        if cloud not in FOLDERS:
            raise ValueError(f"unknown cloud {cloud!r}; known: {', '.join(FOLDERS)}")
        default_name = f"ServiceTags_{FILE_CLOUD[cloud]}_{_file_date(Path(path))}.json"
        published = Published(cloud, body, name or default_name)
        with self._lock:
            self._current[cloud] = published
            self._history[published.path] = published
        return published

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown page mode {mode!r}; known: {', '.join(MODES)}")
        self.mode = mode

    def add_faults(self, statuses: list[int]) -> None:
        with self._lock:
            self._faults.extend(int(s) for s in statuses)

    def next_fault(self) -> int | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def page(self, cloud: str) -> str:
        with self._lock:
            current = self._current.get(cloud)
            # Earlier files stay listed, as on the real page; never one dated after the current.
            older = sorted(
                p.name
                for p in self._history.values()
                if p.cloud == cloud and current is not None and p.name < current.name
            )
        return details_page(cloud, self.mode, current, older)

    def file(self, path: str) -> Published | None:
        with self._lock:
            for published in self._current.values():
                if published.path == path:
                    return published  # a re-published name serves its newest content
            return self._history.get(path)


def _declared(body: bytes) -> str | None:
    found = re.search(rb'"cloud"\s*:\s*"([^"]+)"', body[:4096])
    return found.group(1).decode() if found else None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        if url.path.lower().endswith("/download/details.aspx"):
            state.requests["page"] += 1
            fault = state.next_fault()
            if fault is not None:
                self._send(fault, b"<html><body>Service Unavailable</body></html>", "text/html")
                return
            ids = parse_qs(url.query).get("id", [""])
            cloud = IDS.get(int(ids[0])) if ids[0].isdigit() else None
            if cloud is None:
                self._send(
                    404,
                    b"<html><body>We're sorry, this download is no longer available.</body></html>",
                    "text/html",
                )
                return
            self._send(200, state.page(cloud).encode(), "text/html; charset=utf-8")
            return
        if url.path == "/_admin/stats":
            self._send(200, json.dumps(state.requests).encode(), "application/json")
            return
        published = state.file(url.path)
        if published is None:
            self._send(404, b"Not Found", "text/plain")
            return
        if self.headers.get("If-None-Match") == published.etag:
            state.requests["not_modified"] += 1
            self._send(304, b"", "application/octet-stream", etag=published.etag)
            return
        state.requests["file"] += 1
        self._send(200, published.body, "application/octet-stream", etag=published.etag)

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        try:
            payload = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/_admin/file":
                published = state.set_file(
                    Path(payload["path"]), cloud=payload.get("cloud"), name=payload.get("name")
                )
                answer: dict[str, Any] = {"url": published.url, "name": published.name}
            elif self.path == "/_admin/mode":
                state.set_mode(payload["mode"])
                answer = {"mode": state.mode}
            elif self.path == "/_admin/faults":
                state.add_faults(payload["statuses"])
                answer = {"queued": len(payload["statuses"])}
            else:
                self._send(404, b"{}", "application/json")
                return
        except (KeyError, ValueError, OSError) as exc:
            self._send(400, json.dumps({"error": str(exc)}).encode(), "application/json")
            return
        self._send(200, json.dumps(answer).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str, *, etag: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if etag:
            self.send_header("ETag", etag)
        self.send_header("Content-Length", str(0 if status == 304 else len(body)))
        self.end_headers()
        if status != 304:
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: DownloadCenterState) -> None:
        super().__init__(address, _Handler)
        self.state = state


class DownloadCenter:
    """The stand-in in a background thread (tests); `url` is its base URL."""

    def __init__(
        self, snapshot: Path | None = None, *, mode: str = "variable", host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.state = DownloadCenterState(snapshot, mode=mode)
        self._server = _Server((host, port), self.state)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> DownloadCenter:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set_file(self, path: Path, *, cloud: str | None = None, name: str | None = None) -> Published:
        return self.state.set_file(path, cloud=cloud, name=name)


class DownloadCenterControl:
    """Drives a stand-in running in another process."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    @classmethod
    def from_state_dir(cls, state_dir: Path) -> DownloadCenterControl:
        return cls(json.loads((state_dir / STATE_FILE).read_text())["url"])

    def _post(self, route: str, payload: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.url}/_admin/{route}",
            data=json.dumps(payload).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise RuntimeError(f"admin {route} failed: {error.code} {detail}") from None

    def set_file(self, path: Path, *, cloud: str | None = None, name: str | None = None) -> Any:
        return self._post("file", {"path": str(Path(path).resolve()), "cloud": cloud, "name": name})

    def set_mode(self, mode: str) -> Any:
        return self._post("mode", {"mode": mode})

    def add_faults(self, statuses: list[int]) -> Any:
        return self._post("faults", {"statuses": statuses})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.download_center",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--snapshot",
        type=Path,
        action="append",
        default=[],
        help="a file to publish (repeatable: one per cloud)",
    )
    parser.add_argument("--mode", choices=MODES, default="variable", help="the page form (default variable)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state-dir", type=Path, required=True, help=f"where {STATE_FILE} is written")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args.state_dir.mkdir(parents=True, exist_ok=True)
    state_file = args.state_dir / STATE_FILE
    state_file.unlink(missing_ok=True)
    try:
        center = DownloadCenter(None, mode=args.mode, host=args.host, port=args.port)
        for path in args.snapshot:
            center.set_file(path)
    except (OSError, ValueError) as error:
        print(f"download_center: cannot start: {error}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with center:
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"url": center.url}))
        tmp.replace(state_file)
        print(json.dumps({"url": center.url}), flush=True)
        while not stop.wait(0.5):
            pass
    state_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
