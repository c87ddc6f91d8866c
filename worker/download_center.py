"""The `download-center` source: Microsoft's weekly file, found on its details page.

Per cloud: GET the details page, find the current file link (core/download_page.py), GET
the file, check that it declares the cloud asked for (a CDN once served the Public payload
at the China URL). HTTP goes through an azure-core pipeline: retries with backoff on 5xx,
429 and resets, Retry-After honoured, timeouts, a browser-like User-Agent (the page is
served to browsers). The file is fetched with `If-None-Match` against the last copy, so the
70 region checks of a run download it once while a re-published file (same name, new
content) is always seen.

`files_base` replaces https://download.microsoft.com in the links found (the local stand-in),
as SERVICETAGS_ARM_ENDPOINT does for ARM: the page itself is read exactly as published.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from core.download_page import (
    DETAILS_PATH,
    DOWNLOAD_IDS,
    FILES_HOST,
    WHAT_IS_LOOKED_FOR,
    declared_cloud,
    find_file_link,
)
from core.errors import PermanentError, TransientError
from core.ports import Fetched
from runtime.logs import log_event

log = logging.getLogger(__name__)

DEFAULT_PAGES = "https://www.microsoft.com"
# Real tools send a browser's User-Agent: the page is made for browsers.
BROWSER_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36 servicetags-watch/0.1"
)
MAX_FILE_BYTES = 64 * 1024 * 1024  # the real files are ~4 MB


def download_pipeline_client(
    base_url: str, *, retry_total: int = 3, retry_backoff: float = 0.8, timeout: float = 60.0, **kwargs: Any
) -> Any:
    from azure.core import PipelineClient
    from azure.core.pipeline import policies

    kwargs.setdefault("user_agent", BROWSER_USER_AGENT)
    kwargs.setdefault("user_agent_overwrite", True)
    chain = [
        policies.HeadersPolicy(**kwargs),
        policies.UserAgentPolicy(**kwargs),
        policies.ProxyPolicy(**kwargs),
        policies.RedirectPolicy(**kwargs),
        policies.RetryPolicy(
            retry_total=retry_total, retry_backoff_factor=retry_backoff, timeout=timeout * 4, **kwargs
        ),
        policies.NetworkTraceLoggingPolicy(**kwargs),
        policies.HttpLoggingPolicy(**kwargs),
    ]
    return PipelineClient(
        base_url=base_url,
        policies=chain,
        connection_timeout=min(timeout, 20.0),
        read_timeout=timeout,
        **kwargs,
    )


class DownloadCenterSource:
    def __init__(
        self,
        client: Any,
        *,
        pages_base: str = DEFAULT_PAGES,
        files_base: str | None = None,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        self._client = client
        self._max_bytes = max_bytes
        self._pages = pages_base.rstrip("/")
        self._files = files_base.rstrip("/") if files_base else None
        self._lock = threading.Lock()
        self._last: dict[str, tuple[str, bytes]] = {}  # file URL -> (ETag, body)

    def page_url(self, cloud: str) -> str:
        if cloud not in DOWNLOAD_IDS:
            raise PermanentError(f"no Download Center page is known for cloud {cloud!r}")
        return self._pages + DETAILS_PATH.format(id=DOWNLOAD_IDS[cloud])

    def fetch(self, cloud: str, location: str) -> Fetched:
        page_url = self.page_url(cloud)
        _, _, raw = self._get(page_url, what="details page")
        page = raw.decode("utf-8", "replace")
        link = find_file_link(page)
        if link is None:
            log_event(
                log,
                "download_link_missing",
                f"{page_url}: no file link",
                level=logging.ERROR,
                cloud=cloud,
                page=page_url,
            )
            # The page has broken before and come back: retried, then poisoned with this reason.
            raise TransientError(
                f"{page_url}: the details page yields no file link (looked for {WHAT_IS_LOOKED_FOR})"
            )
        url = link.url
        if self._files and url.lower().startswith(FILES_HOST):
            url = self._files + url[len(FILES_HOST) :]
        body = self._file(url)
        declared = declared_cloud(body)
        if declared is not None and declared != cloud:
            raise TransientError(
                f"{url} (linked from {page_url}) is a file of cloud {declared!r}, not {cloud!r}"
            )
        return Fetched(body, url)

    def _file(self, url: str) -> bytes:
        with self._lock:
            last = self._last.get(url)
        headers = {"If-None-Match": last[0]} if last else {}
        status, response_headers, body = self._get(url, what="file", headers=headers, allow={304})
        if status == 304 and last is not None:
            return last[1]
        etag = response_headers.get("ETag")
        with self._lock:
            self._last = {url: (etag, body)} if etag else {}
        return body

    def _get(
        self,
        url: str,
        *,
        what: str,
        headers: dict[str, str] | None = None,
        allow: frozenset[int] | set[int] = frozenset(),
    ) -> tuple[int, Any, bytes]:
        """Status, headers and body (read up to the limit, whatever the server claims)."""
        from azure.core.exceptions import (
            HttpResponseError,
            IncompleteReadError,
            ServiceRequestError,
            ServiceResponseError,
        )
        from azure.core.rest import HttpRequest

        try:
            response = self._client.send_request(HttpRequest("GET", url, headers=headers or {}), stream=True)
            try:
                if response.status_code not in allow:
                    response.raise_for_status()
                buffer = bytearray()
                for chunk in response.iter_bytes():
                    buffer += chunk
                    if len(buffer) > self._max_bytes:
                        raise PermanentError(f"{url}: {what} is over the {self._max_bytes:,} bytes allowed")
                return response.status_code, response.headers, bytes(buffer)
            finally:
                response.close()
        except (ServiceRequestError, ServiceResponseError, IncompleteReadError) as exc:
            raise TransientError(f"{url}: {what} not fetched ({type(exc).__name__})") from None
        except HttpResponseError as exc:
            raise TransientError(f"{url}: {what} answered HTTP {exc.status_code}") from None
