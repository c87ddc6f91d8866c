"""`servicetags notifier serve`: Event Grid push delivery to the notifier over HTTPS.

Put it behind TLS termination (Container Apps ingress, a reverse proxy); the subscription's
endpoint URL carries the shared secret (`?code=`), or Event Grid sends an Entra ID token
(the subscription's `azure_active_directory` delivery settings). Report events and runs'
`complete.json` events come over HTTP; run deadlines stay a queue (`run-deadlines`, a
visibility delay no push delivery has), consumed beside the server.
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
        return EntraTokenAuth(
            jwks, [i.strip() for i in issuers.split(",")], [a.strip() for a in audience.split(",")]
        )
    raise ConfigError(
        "the webhook refuses unauthenticated calls: set SERVICETAGS_WEBHOOK_SECRET, or "
        "SERVICETAGS_WEBHOOK_AUDIENCE with _ISSUER and _JWKS_URL for Entra ID tokens"
    )


def run_complete_handler(wiring: Any) -> Any:
    """The webhook's handler for blob events of the runs container: a run's complete marker
    sends its digest, as in queue mode; any other blob there (a manifest, an outcome, when
    the subscription is not filtered) is ignored."""
    from core.runs import parse_complete_name

    def handle(event: Any) -> None:
        completed = parse_complete_name(event.blob_name)
        if completed is None or wiring.digests is None:
            log_event(
                log,
                "event_ignored",
                f"{event.blob_name} is not a run's complete marker",
                event_id=event.id,
                blob=event.blob_name,
            )
            return
        wiring.digests.deliver_run(*completed, closed_by="complete")

    return handle


def serve_webhook(
    wiring: Any, env: Env, stop: threading.Event, *, runs_container: str = "runs", deadlines: Any = None
) -> int:
    """Serve until SIGTERM. `deadlines` (a QueueConsumer of `run-deadlines`) runs beside the
    server: a run that never completes is closed by its deadline in this mode too."""
    from notifier.webhook import make_app, serve

    host = env.str("SERVICETAGS_WEBHOOK_HOST", "0.0.0.0") or "0.0.0.0"
    port = env.int("SERVICETAGS_WEBHOOK_PORT", 8080, minimum=1, maximum=65535)
    # Event Grid waits 30 s for an answer: a claim held longer is a 503, retried for 24 hours.
    wait = timedelta(seconds=WEBHOOK_CLAIM_WAIT)
    app = make_app(
        lambda event: wiring.notifier.deliver(event.blob_name, event.url, claim_wait=wait),
        auth=authenticator(env),
        expected_container=wiring.reports_container,
        runs_container=runs_container,
        handle_run=run_complete_handler(wiring),
    )
    thread = None
    if deadlines is not None:
        thread = threading.Thread(target=deadlines.run, name="deadlines", daemon=True)
        thread.start()
    try:
        serve(app, host, port, stop=stop)
    finally:
        stop.set()  # the deadlines consumer shares it
        if thread is not None:
            thread.join(timeout=10)
    return 0
