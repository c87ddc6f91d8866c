"""Mail senders: SMTP (smtplib) and Azure Communication Services Email.

Adapters only: they send one rendered `EmailMessage` and translate every failure into one of
two types, decided by exception type or status code (never by message text):

- `TransientMailError`: try again later (server down, connection reset, timeout, SMTP 4xx,
  HTTP 408/429/5xx). The event stays on its queue and comes back.
- `PermanentMailError`: retrying cannot help (SMTP 5xx, HTTP 4xx, an ACS send that ended
  Failed, STARTTLS refused, a certificate that does not verify). The event is poisoned with
  the reason.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import uuid
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from core.errors import ServiceTagsError
from notifier.email_render import to_acs_message
from runtime.logs import log_event

if TYPE_CHECKING:  # only for annotations: the SDK is imported when an ACS sender is built
    from azure.communication.email import EmailClient
    from azure.core.credentials import AzureKeyCredential, TokenCredential

log = logging.getLogger(__name__)

# Operation ids derived from our Message-ID, so a re-send of the same e-mail reuses the ACS
# operation id (the service's idempotency key for a send) instead of creating a second send.
_OPERATION_NAMESPACE = uuid.UUID("6f1d3c0e-5b7a-4c1e-9a52-2f0d8c7e4b11")


class MailError(ServiceTagsError):
    """A send that did not succeed."""


class TransientMailError(MailError):
    """The send may succeed later: leave the event to be retried."""


class PermanentMailError(MailError):
    """The send will not succeed by retrying: poison the event with this reason."""


class MailConfigError(ServiceTagsError):
    """A mail sender that cannot be built from the given settings."""


def _by_code(code: int, what: str) -> MailError:
    # RFC 5321: 4yz is a transient negative reply, 5yz a permanent one. Anything else (a server
    # that hung up without a reply gives -1) is treated as transient.
    if 500 <= code < 600:
        return PermanentMailError(what)
    return TransientMailError(what)


class SmtpSender:
    """One SMTP connection per message: reports are rare, and a kept-open connection would
    be dropped by the server between them anyway."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        starttls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.starttls = starttls
        self.username, self.password = username, password
        self.timeout = timeout
        self._ssl_context = ssl_context

    def __repr__(self) -> str:
        return f"SmtpSender({self.host!r}, {self.port}, starttls={self.starttls})"  # never the password

    def send(self, msg: EmailMessage) -> str:
        where = f"SMTP {self.host}:{self.port}"
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=self._ssl_context or ssl.create_default_context())
                if self.username:
                    smtp.login(self.username, self.password or "")
                refused = smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            # Every recipient refused; transient only if every refusal was a 4xx.
            codes = [code for code, _ in exc.recipients.values()]
            detail = ", ".join(f"{addr} ({code})" for addr, (code, _) in exc.recipients.items())
            if all(400 <= c < 500 for c in codes):
                raise TransientMailError(f"{where}: recipients deferred: {detail}") from exc
            raise PermanentMailError(f"{where}: recipients refused: {detail}") from exc
        except smtplib.SMTPNotSupportedError as exc:  # e.g. STARTTLS or AUTH not offered
            raise PermanentMailError(f"{where}: {exc}") from exc
        except smtplib.SMTPServerDisconnected as exc:
            raise TransientMailError(f"{where}: server disconnected: {exc}") from exc
        except smtplib.SMTPResponseException as exc:  # sender refused, DATA refused, auth failed…
            raise _by_code(exc.smtp_code, f"{where}: {exc.smtp_code} {exc.smtp_error!r}") from exc
        except smtplib.SMTPException as exc:  # other protocol errors: a later try may do better
            raise TransientMailError(f"{where}: {type(exc).__name__}: {exc}") from exc
        except ssl.SSLCertVerificationError as exc:  # misconfiguration: retrying cannot help
            raise PermanentMailError(f"{where}: TLS certificate not trusted: {exc}") from exc
        except OSError as exc:  # refused, reset, unreachable, timed out (TimeoutError is an OSError)
            raise TransientMailError(f"{where}: {type(exc).__name__}: {exc}") from exc
        if refused:
            # Some recipients took it and some did not; we send one recipient per message, so
            # this only happens with hand-built messages. Retrying would duplicate the others.
            log_event(
                log,
                "smtp_recipients_refused",
                "the SMTP server refused some recipients",
                level=logging.WARNING,
                refused=sorted(refused),
            )
        return str(msg["Message-ID"] or "")


class AcsSender:
    """Azure Communication Services Email through the real `EmailClient`."""

    def __init__(self, client: EmailClient, *, timeout: float = 120) -> None:
        self._client = client
        self.timeout = timeout  # how long to poll for a terminal status before giving up

    @staticmethod
    def operation_id_for(msg: EmailMessage) -> str:
        """The ACS operation id (a GUID) for `msg`: derived from its Message-ID when it has one."""
        key = str(msg["Message-ID"] or "") or str(uuid.uuid4())
        return str(uuid.uuid5(_OPERATION_NAMESPACE, key))

    def send(self, msg: EmailMessage) -> str:
        from azure.core.exceptions import (
            AzureError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        message = to_acs_message(msg)
        operation_id = self.operation_id_for(msg)
        try:
            poller = self._client.begin_send(message, operation_id=operation_id)
            result = poller.result(timeout=self.timeout)
        except (ServiceRequestError, ServiceResponseError) as exc:  # never reached / no reply
            raise TransientMailError(f"ACS: {type(exc).__name__}: {exc}") from exc
        except HttpResponseError as exc:
            code = exc.status_code
            if code == 409:
                # The operation id is already known: an earlier try of this very e-mail was
                # accepted (we derive the id from the Message-ID), so it is sent, not failed.
                log_event(
                    log,
                    "acs_send_already_accepted",
                    "ACS had already accepted this e-mail",
                    operation_id=operation_id,
                )
                return operation_id
            what = f"ACS: HTTP {code} {exc.error.code if exc.error else exc.reason}"
            if code is None or code in (408, 429) or code >= 500:
                raise TransientMailError(what) from exc
            if code < 400:
                # The LRO poller raises with the (2xx) poll response when the send ended Failed.
                raise PermanentMailError(f"ACS: send operation {operation_id} failed") from exc
            raise PermanentMailError(what) from exc
        except AzureError as exc:  # e.g. a credential that could not get a token (no status code)
            raise TransientMailError(f"ACS: {type(exc).__name__}: {exc}") from exc
        if not poller.done() or not isinstance(result, dict):
            # Still running: re-sending later reuses the operation id, so nothing doubles.
            raise TransientMailError(f"ACS: send operation {operation_id} not finished in {self.timeout}s")
        if result.get("status") != "Succeeded":
            error = result.get("error") or {}
            raise PermanentMailError(
                f"ACS: send operation {operation_id} ended {result.get('status')}: "
                f"{error.get('code', '')} {error.get('message', '')}".rstrip()
            )
        return str(result.get("id") or operation_id)

    def close(self) -> None:
        self._client.close()


def acs_sender_from(
    endpoint: str | None = None,
    connection_string: str | None = None,
    credential: TokenCredential | AzureKeyCredential | None = None,
    **client_kwargs: Any,
) -> AcsSender:
    """An AcsSender from a connection string, or an endpoint with a credential (by default
    `DefaultAzureCredential`, the managed identity in Azure). `client_kwargs` go to EmailClient
    (retry settings, polling_interval, transport)."""
    from azure.communication.email import EmailClient

    if connection_string:
        return AcsSender(EmailClient.from_connection_string(connection_string, **client_kwargs))
    if not endpoint:
        raise MailConfigError("ACS e-mail needs an endpoint or a connection string")
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return AcsSender(EmailClient(endpoint, credential, **client_kwargs))
