"""Finding the weekly service-tag file on Microsoft's Download Center details page. Pure.

There is no stable "latest" URL: the details page (`details.aspx?id=56519` for Public) links
the current `ServiceTags_<Cloud>_YYYYMMDD.json` on download.microsoft.com, and the name
changes every week. The page has changed shape before, so the patterns real tools use are
tried in their order (endgor/azure-hub `scripts/updateIpData.ts`): the page's
`AcOEt_DownloadUrl` variable; then the first download.microsoft.com `href`, preferring names
with "servicetags"; then any download.microsoft.com URL of a `.json`, the newest dated one first.
HTML escapes (`&amp;`) are decoded first.

The name only finds the file: versions are keyed on content and change number, never on it
(the same name has been re-published with new content).
"""

from __future__ import annotations

import html
import re
from typing import NamedTuple

# Download Center ids per cloud (azure-facts §2). Germany's was shut down.
DOWNLOAD_IDS = {"Public": 56519, "AzureGovernment": 57063, "AzureChina": 57062}
DETAILS_PATH = "/en-us/download/details.aspx?id={id}"
FILES_HOST = "https://download.microsoft.com"

_VARIABLE = re.compile(r'var\s+AcOEt_DownloadUrl\s*=\s*"([^"]+\.json)"')
_HREF = re.compile(r'href="([^"]*download\.microsoft\.com/download/[^"]+\.json)"', re.IGNORECASE)
_ANY = re.compile(r'https://download\.microsoft\.com/download/[^"\'\s<>]+?\.json', re.IGNORECASE)
_DATED = re.compile(r"ServiceTags_(?:Public|China|AzureGovernment)_(\d{8})\.json", re.IGNORECASE)

WHAT_IS_LOOKED_FOR = (
    'var AcOEt_DownloadUrl = "….json", href="…download.microsoft.com/download/….json", '
    "or any https://download.microsoft.com/download/….json"
)


class Link(NamedTuple):
    url: str
    form: str  # variable | href | any: which pattern found it


def _newest(urls: list[str]) -> str:
    """The newest dated ServiceTags file, else the alphabetically last URL."""
    dated = [(m.group(1), url) for url in urls if (m := _DATED.search(url))]
    return max(dated)[1] if dated else max(urls)


def find_file_link(page: str) -> Link | None:
    """The current file's URL on a details page, or None when the page yields none."""
    text = html.unescape(page)
    found = _VARIABLE.search(text)
    if found:
        return Link(found.group(1), "variable")
    hrefs = _HREF.findall(text)
    if hrefs:
        # The first, as real tools take it: the download button comes before older files.
        preferred = [u for u in hrefs if "servicetags" in u.lower()]
        return Link((preferred or hrefs)[0], "href")
    anywhere = _ANY.findall(text)
    if anywhere:
        return Link(_newest(anywhere), "any")
    return None


_CLOUD = re.compile(rb'"cloud"\s*:\s*"([^"]{1,40})"')


def declared_cloud(head: bytes) -> str | None:
    """The `cloud` a service-tag file declares, read from its first bytes (Microsoft writes
    `changeNumber`, then `cloud`, then `values`); None when not there."""
    found = _CLOUD.search(head[:4096])
    return found.group(1).decode("utf-8", "replace") if found else None
