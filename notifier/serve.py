"""`servicetags notifier serve`: Event Grid push delivery to the notifier over HTTPS.

Put it behind TLS termination (Container Apps ingress, a reverse proxy); the subscription's
endpoint URL carries the shared secret (`?code=`), or Event Grid sends an Entra ID token
(the subscription's `azure_active_directory` delivery settings).
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from runtime.config import ConfigError, Env
from runtime.logs import log_event

log = logging.getLogger(__name__)
WEBHOOK_CLAIM_WAIT = 20  # seconds


def authenticator(env: Env) -> Any:
    from notifier.webhook import EntraTokenAuth, SharedSecretAuth

    secret = env.str("SERVICETAGS_WEBHOOK_SECRET")
    audience = env.str("SERVICETAGS_WEBHOOK_AUDIENCE")
    if secret and audience:
        raise ConfigError("set SERVICETAGS_WEBHOOK_SECRET or SERVICETAGS_WEBHOOK_AUDIENCE, not both")
    if secret:
        try:
            return SharedSecretAuth(secret)
        except ValueError as exc:
            raise ConfigError(f"SERVICETAGS_WEBHOOK_SECRET: {exc}") from None
    if audience:
        issuers = env.str("SERVICETAGS_WEBHOOK_ISSUER", required=True) or ""
        jwks = env.str("SERVICETAGS_WEBHOOK_JWKS_URL", required=True) or ""
        return EntraTokenAuth(jwks, [i.strip() for i in issuers.split(",")],
                              [a.strip() for a in audience.split(",")])
    raise ConfigError("the webhook refuses unauthenticated calls: set SERVICETAGS_WEBHOOK_SECRET, or "
                      "SERVICETAGS_WEBHOOK_AUDIENCE with _ISSUER and _JWKS_URL for Entra ID tokens")


def serve_webhook(wiring: Any, env: Env, stop: threading.Event) -> int:
    from notifier.webhook import make_app, serve

    host = env.str("SERVICETAGS_WEBHOOK_HOST", "0.0.0.0") or "0.0.0.0"
    port = env.int("SERVICETAGS_WEBHOOK_PORT", 8080, minimum=1, maximum=65535)
    # Event Grid waits 30 s for an answer: a claim held longer is a 503, retried for 24 hours.
    wait = timedelta(seconds=WEBHOOK_CLAIM_WAIT)
    app = make_app(lambda event: wiring.notifier.deliver(event.blob_name, event.url, claim_wait=wait),
                   auth=authenticator(env), expected_container=wiring.reports_container)
    log_event(log, "webhook_listening", f"webhook on {host}:{port}", host=host, port=port)
    serve(app, host, port)
    return 0
