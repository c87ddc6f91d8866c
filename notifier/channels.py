"""Channels beside e-mail: Microsoft Teams, Slack and signed webhooks.

`SERVICETAGS_CHANNELS` is a JSON list; each entry is configured like a recipient (a name, the
same filters, a delivery mode) and names the *secrets* holding its URL and signing keys, never
the values:

    [{"name": "network-teams", "type": "teams", "url_secret": "teams-network-url"},
     {"name": "noc-slack", "type": "slack", "url_secret": "slack-noc-url", "regions": ["westeurope"]},
     {"name": "cmdb", "type": "webhook", "url_secret": "cmdb-url",
      "signing_secrets": ["cmdb-signing", "cmdb-signing-previous"], "delivery": "report"}]

A webhook URL is itself a credential (whoever has it can post), so URLs and signing secrets
are read at start from Key Vault with the notifier's managed identity, or locally from the
environment or a directory (`secrets.py`), and never logged: a Channel's repr and every log
line name the channel only.

Sending (`ChannelPoster`): per webhook at most `RATE[type]` requests a second, in-process
retries with exponential backoff and full jitter on 429 (at least its Retry-After) and 5xx;
another 4xx is permanent. What is still failing after the tries goes back to the queue.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from core.errors import PermanentError, ServiceTagsError, TransientError
from notifier import signing
from notifier.recipients import FILTER_KEYS, RecipientsError, filter_fields, tag_matches
from runtime.logs import log_event

log = logging.getLogger(__name__)
SETTING = "SERVICETAGS_CHANNELS"
KINDS = ("teams", "slack", "webhook")
RATE = {"teams": 4.0, "slack": 1.0, "webhook": 10.0}  # requests per second per webhook URL
_KEYS = ("name", "type", "url_secret", "signing_secrets", "delivery", *FILTER_KEYS)


class ChannelsError(ServiceTagsError):
    """An invalid SERVICETAGS_CHANNELS value, or a secret it names that cannot be read."""


@dataclass(frozen=True)
class Channel:
    name: str
    kind: str  # teams | slack | webhook
    url_secret: str
    signing_secret_names: tuple[str, ...] = ()
    delivery: str = "digest"
    regions: frozenset[str] | None = None
    tags: tuple[str, ...] | None = None
    services: tuple[str, ...] | None = None
    min_addresses: int = 0
    family: str | None = None
    url: str = field(default="", repr=False, compare=False)  # a credential
    signing_secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)  # credentials

    def wants_region(self, region: str) -> bool:
        return self.regions is None or region.lower() in self.regions

    def wants_tag(self, tag: dict[str, Any]) -> bool:
        return tag_matches(tag, services=self.services, tags=self.tags)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"


def _fail(where: str, problem: str) -> ChannelsError:
    return ChannelsError(f"{SETTING}: {where}: {problem}")


def _secret_name(value: object, key: str, where: str) -> str:
    # Key Vault secret names: 1-127 of letters, digits and dashes.
    if (
        not isinstance(value, str)
        or not value
        or len(value) > 127
        or not all(c.isascii() and (c.isalnum() or c == "-") for c in value)
    ):
        raise _fail(where, f"{key!r} must name a secret (letters, digits and dashes), not its value")
    return value


def parse_channels(text: str) -> list[Channel]:
    """The channels named by the setting (their secrets not yet read); [] when empty."""
    text = text.strip()
    if not text:
        return []
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChannelsError(f"{SETTING}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(items, list):
        raise ChannelsError(f"{SETTING}: expected a JSON list of channels, got {type(items).__name__}")
    channels = [_channel(item, index) for index, item in enumerate(items)]
    seen: set[str] = set()
    for channel in channels:
        if channel.name.lower() in seen:
            raise _fail(channel.name, "listed twice; give each channel its own name")
        seen.add(channel.name.lower())
    return channels


def _channel(item: object, index: int) -> Channel:
    where = f"entry {index + 1}"
    if not isinstance(item, dict):
        raise _fail(where, "expected an object with a name, a type and a url_secret")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 64 or "\n" in name:
        raise _fail(where, "'name' must be a one-line string of at most 64 characters")
    where = f"entry {index + 1} ({name})"
    unknown = sorted(set(item) - set(_KEYS))
    if unknown:
        raise _fail(where, f"unknown key {unknown[0]!r} (allowed: {', '.join(_KEYS)})")
    kind = item.get("type")
    if kind not in KINDS:
        raise _fail(where, f"'type' must be one of {', '.join(KINDS)}, not {kind!r}")
    url_secret = _secret_name(item.get("url_secret"), "url_secret", where)
    signing_names: tuple[str, ...] = ()
    if kind == "webhook":
        names = item.get("signing_secrets")
        if not isinstance(names, list) or not 1 <= len(names) <= 2:
            raise _fail(where, "a webhook needs 'signing_secrets': one secret name, or two while rotating")
        signing_names = tuple(_secret_name(n, "signing_secrets", where) for n in names)
    elif "signing_secrets" in item:
        raise _fail(where, f"'signing_secrets' is for type webhook, not {kind}")
    try:
        fields = filter_fields(item, where)
    except RecipientsError as exc:
        raise ChannelsError(str(exc).replace("SERVICETAGS_RECIPIENTS", SETTING, 1)) from None
    return Channel(
        name=name.strip(), kind=kind, url_secret=url_secret, signing_secret_names=signing_names, **fields
    )


def with_secrets(channels: list[Channel], read: Callable[[str], str]) -> list[Channel]:
    """The channels with their URL and signing secrets read (through `read`, by name)."""
    out = []
    for channel in channels:
        url = read(channel.url_secret).strip()
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            # The value is not repeated: it may be a credential pasted into the wrong secret.
            raise ChannelsError(
                f"channel {channel.name}: secret {channel.url_secret!r} does not hold an http(s) URL"
            )
        secrets = tuple(read(n).strip() for n in channel.signing_secret_names)
        for secret_name, secret in zip(channel.signing_secret_names, secrets, strict=True):
            try:
                signing.secret_key(secret)
            except signing.SignatureError as exc:
                raise ChannelsError(f"channel {channel.name}: secret {secret_name!r}: {exc}") from None
        out.append(Channel(**{**channel.__dict__, "url": url, "signing_secrets": secrets}))
    return out


# ---- sending -------------------------------------------------------------------------------------


class Answer(NamedTuple):
    status: int  # 0: no HTTP answer (connection refused, reset, timeout)
    retry_after: float | None
    detail: str  # the start of the body, or the connection error


Post = Callable[[str, bytes, Mapping[str, str], float], Answer]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def http_post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Answer:
    request = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, None, response.read(300).decode(errors="replace"))
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode(errors="replace") if exc.fp else ""
        return Answer(exc.code, _retry_after(exc.headers.get("Retry-After")), detail)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Answer(0, None, f"{type(reason).__name__}")  # no URL in the text: it is a credential


class RateLimiter:
    """At most `rate` starts a second per key (a webhook), across this process's threads."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock, self._sleep = clock, sleep

    def wait(self, key: str, rate: float) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next.get(key, now))
            self._next[key] = start + 1.0 / rate
        if start > now:
            self._sleep(start - now)


class ChannelPoster:
    def __init__(
        self,
        *,
        post: Post = http_post,
        attempts: int = 4,
        backoff: float = 0.5,
        max_delay: float = 30.0,
        timeout: float = 20.0,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.post, self.attempts, self.backoff, self.max_delay = post, attempts, backoff, max_delay
        self.timeout, self.limiter = timeout, limiter or RateLimiter()
        self.sleep, self.jitter, self.now = sleep, jitter, now

    def send(self, channel: Channel, body: bytes, msg_id: str) -> int:
        """POST `body`; the HTTP status of the accepted answer. TransientError when the tries
        are used up on 429/5xx/no answer, or a Retry-After longer than `max_delay` (the queue
        brings the event back), PermanentError on any other 4xx."""
        last = ""
        for attempt in range(self.attempts):
            self.limiter.wait(channel.url, RATE[channel.kind])
            headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "servicetags-watch"}
            if channel.kind == "webhook":
                headers.update(signing.headers(channel.signing_secrets, msg_id, int(self.now()), body))
            answer = self.post(channel.url, body, headers, self.timeout)
            if 200 <= answer.status < 300:
                return answer.status
            retryable = answer.status in (0, 408, 429) or answer.status >= 500
            what = f"HTTP {answer.status}" if answer.status else f"no answer ({answer.detail})"
            if not retryable:
                raise PermanentError(f"channel {channel.name}: {what}: {answer.detail[:200]!r}")
            last = what
            if attempt + 1 == self.attempts:
                break
            delay = self.jitter() * min(self.max_delay, self.backoff * 2**attempt)
            if answer.retry_after is not None:
                if answer.retry_after > self.max_delay:
                    raise TransientError(
                        f"channel {channel.name}: {what}, Retry-After "
                        f"{answer.retry_after:.0f}s; trying again later"
                    )
                delay = max(delay, answer.retry_after)
            log_event(
                log,
                "channel_retry",
                f"channel {channel.name}: {what}; retrying in {delay:.2f}s",
                channel=channel.name,
                reason=what,
                delay=round(delay, 3),
            )
            self.sleep(delay)
        raise TransientError(f"channel {channel.name}: {last} after {self.attempts} tries")
