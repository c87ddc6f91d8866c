"""A loopback stand-in for a storage account's static website endpoint.

Azurite keeps the `$web` container but serves no website, so this answers GET and HEAD from
that container the way the static website endpoint does: `/` and `/dir/` serve the index
document (`index.html`), the blob's content type comes back as stored, a missing blob is a
404 with the error document (`404.html`) when there is one. Read-only.

    python -m devstack.web_server --connection-string CS [--container '$web'] [--port 0]
        [--state-file FILE]

writes FILE ({"pid", "url"}) once listening and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

INDEX_DOCUMENT = "index.html"
ERROR_DOCUMENT = "404.html"


def blob_for(path: str) -> str | None:
    """The blob a URL path names, or None for a path that cannot name one."""
    name = unquote(urlsplit(path).path).lstrip("/")
    if ".." in name.split("/"):
        return None
    return name + INDEX_DOCUMENT if name == "" or name.endswith("/") else name


def make_server(container: Any, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """`container` is an azure.storage.blob ContainerClient."""
    from azure.core.exceptions import ResourceNotFoundError

    class Handler(BaseHTTPRequestHandler):
        def _fetch(self, name: str) -> tuple[bytes, str] | None:
            try:
                downloader = container.download_blob(name)
                data = downloader.readall()
                settings = downloader.properties.content_settings
                return data, settings.content_type or "application/octet-stream"
            except ResourceNotFoundError:
                return None

        def _answer(self, body: bool) -> None:
            name = blob_for(self.path)
            found = self._fetch(name) if name else None
            status = 200
            if found is None:
                status = 404
                found = self._fetch(ERROR_DOCUMENT) or (
                    b"The requested content does not exist.",
                    "text/plain; charset=utf-8",
                )
            data, content_type = found
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer(True)

        def do_HEAD(self) -> None:
            self._answer(False)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer((host, port), Handler)


def serve_in_thread(container: Any) -> tuple[ThreadingHTTPServer, str]:
    """Start on a free loopback port; (server, base URL ending with /). `server.shutdown()`."""
    server = make_server(container)
    threading.Thread(target=server.serve_forever, daemon=True, name="web-server").start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def main(argv: list[str] | None = None) -> int:
    from azure.storage.blob import ContainerClient

    parser = argparse.ArgumentParser(prog="python -m devstack.web_server", description=__doc__.split("\n")[0])
    parser.add_argument("--connection-string", required=True)
    parser.add_argument("--container", default="$web")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state-file", type=Path)
    args = parser.parse_args(argv)
    container = ContainerClient.from_connection_string(args.connection_string, args.container)
    server = make_server(container, port=args.port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    if args.state_file:
        tmp = args.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "url": url}))
        tmp.replace(args.state_file)
    print(f"serving {args.container} at {url}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
