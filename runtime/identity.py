"""Credentials: DefaultAzureCredential in Azure (managed identity, no secret), a static
development token in local mode only."""

from __future__ import annotations

import logging
import time
from typing import Any

from runtime.logs import log_event

log = logging.getLogger(__name__)

AUTHORITIES = {
    "Public": "login.microsoftonline.com",
    "AzureGovernment": "login.microsoftonline.us",
    "AzureChina": "login.chinacloudapi.cn",
}


class DevTokenCredential:
    """Local mode only: the local ARM endpoint wants a bearer token, not a real one."""

    TOKEN = "servicetags-local-development-token"

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self.TOKEN, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo(self.TOKEN, int(time.time()) + 3600)

    def close(self) -> None:
        """Nothing to release."""


def azure_credential(cloud: str) -> Any:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(authority=AUTHORITIES[cloud])


def wait_for_identity(credential: Any, scope: str, *, max_wait: float, sleep: Any = time.sleep) -> None:
    """A managed identity endpoint can lag a container's start: retry with backoff and say so,
    instead of crash-looping. Raises the last error after `max_wait` seconds."""
    delay, waited = 2.0, 0.0
    while True:
        try:
            credential.get_token(scope)
            if waited:
                log_event(log, "identity_ready", f"managed identity answered after {waited:.0f}s")
            return
        except Exception as exc:
            if waited >= max_wait:
                raise
            log_event(
                log,
                "identity_not_ready",
                f"no token yet ({type(exc).__name__}); retrying in {delay:.0f}s",
                level=logging.WARNING,
                waited=waited,
            )
            sleep(delay)
            waited += delay
            delay = min(delay * 2, 30.0)
