"""Standard Webhooks signatures (standard-webhooks spec, v1: HMAC-SHA256). Pure.

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the `webhook-signature`
header is a space-separated list of `v1,<base64 signature>`, one per secret, so a receiver
holding either the old or the new secret accepts during a rotation. Secrets are
`whsec_<base64 key>`. The id stays the same for every attempt of one delivery (receivers use
it to de-duplicate); the timestamp is the attempt's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

PREFIX = "whsec_"
DEFAULT_TOLERANCE = 5 * 60  # seconds of clock skew a receiver accepts, as the spec's libraries do


class SignatureError(ValueError):
    """A secret that is not `whsec_<base64>`, or a request whose signature does not verify."""


def secret_key(secret: str) -> bytes:
    if not secret.startswith(PREFIX):
        raise SignatureError("a signing secret must start with whsec_")
    try:
        key = base64.b64decode(secret[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("a signing secret must be whsec_ followed by base64") from None
    if len(key) < 24:
        raise SignatureError("a signing secret must hold at least 24 bytes (192 bits)")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    if not secrets:
        raise SignatureError("no signing secret")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets),
    }


def verify(
    secrets: Sequence[str],
    request_headers: dict[str, str],
    body: bytes,
    *,
    now: int,
    tolerance: int = DEFAULT_TOLERANCE,
) -> str:
    """The webhook-id of a request signed with any of `secrets`; SignatureError otherwise."""
    lower = {k.lower(): v for k, v in request_headers.items()}
    msg_id, stamp, signatures = (
        lower.get("webhook-id"),
        lower.get("webhook-timestamp"),
        lower.get("webhook-signature"),
    )
    if not msg_id or not stamp or not signatures:
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureError("webhook-timestamp is not a number") from None
    if abs(now - timestamp) > tolerance:
        raise SignatureError("webhook-timestamp too far from now")
    given = [s.partition(",")[2] for s in signatures.split() if s.startswith("v1,")]
    for secret in secrets:
        expected = sign(secret, msg_id, timestamp, body).partition(",")[2]
        if any(hmac.compare_digest(expected, g) for g in given):
            return msg_id
    raise SignatureError("no signature matches")
