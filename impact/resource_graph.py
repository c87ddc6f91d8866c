"""Reading the user's rules from Azure Resource Graph, with Reader only.

One paged query over the configured subscriptions or management groups returns the NSGs,
classic firewalls, firewall policies, IP Groups, route tables, storage accounts and key vaults;
the `resources` table does not hold firewall policies' rule collection groups (child
resources), so those are listed per policy through ARM (the same Reader right:
Microsoft.Network/firewallPolicies/ruleCollectionGroups/read).

It sends raw requests through an ARM pipeline client (worker/arm_client.py: bearer challenge,
retries honouring Retry-After on 429 and 5xx, resets), the same wire calls
`azure-mgmt-resourcegraph`'s `ResourceGraphClient.resources` makes, without its models.
What the pipeline gives up on becomes a TransientError (the queue retries the message, then
poisons it with the reason); what can never succeed (no Reader right, a bad scope) a
PermanentError.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from core.errors import PermanentError, TransientError
from core.rules import RESOURCE_TYPES, RULE_COLLECTION_GROUP, RuleSet, parse_rules

# The version azure-mgmt-resourcegraph 8.0.1 pins for `resources`.
RESOURCE_GRAPH_API_VERSION = "2021-03-01"
# Firewall policy rule collection groups: a GA version every cloud serves.
NETWORK_API_VERSION = "2024-05-01"
PAGE_SIZE = 1000  # Resource Graph's maximum `$top`
ORIGIN = "Azure Resource Graph"

QUERY = (
    "resources | where type in~ ("
    + ", ".join(f"'{t.lower()}'" for t in RESOURCE_TYPES if t.count("/") == 1)
    + ")"
    " | project id, name, type, location, subscriptionId, resourceGroup, properties"
)


class ResourceGraphSource:
    def __init__(
        self,
        client: Any,
        *,
        subscriptions: list[str],
        management_groups: list[str] | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        if not subscriptions and not management_groups:
            raise ValueError("Resource Graph needs at least one subscription or management group")
        self._client = client
        self._scope: dict[str, list[str]] = (
            {"managementGroups": list(management_groups)}
            if management_groups
            else {"subscriptions": subscriptions}
        )
        self._page_size = page_size

    @property
    def scope(self) -> str:
        ((kind, names),) = self._scope.items()
        return f"{kind} {', '.join(names)}"

    def resources(self) -> list[dict[str, Any]]:
        """Every row of the query, all pages, then each policy's rule collection groups."""
        rows: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            options: dict[str, Any] = {"$top": self._page_size, "resultFormat": "objectArray"}
            if token:
                options["$skipToken"] = token
            page = self._call(
                "POST",
                "/providers/Microsoft.ResourceGraph/resources",
                RESOURCE_GRAPH_API_VERSION,
                {**self._scope, "query": QUERY, "options": options},
            )
            data = page.get("data")
            if not isinstance(data, list):
                raise TransientError(f"{ORIGIN}: reply without a data list (keys: {sorted(page)})")
            rows += data
            token = page.get("$skipToken") or page.get("skipToken")
            if not token:
                break
        for policy in [
            r["id"] for r in rows if str(r.get("type", "")).lower() == "microsoft.network/firewallpolicies"
        ]:
            rows += self._list(f"{policy}/ruleCollectionGroups", NETWORK_API_VERSION)
        return rows

    def fetch(self) -> RuleSet:
        return parse_rules([(ORIGIN, self.resources())])

    def _list(self, path: str, api_version: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = self._call("GET", path, api_version, None)
        while True:
            out += [{"type": RULE_COLLECTION_GROUP, **item} for item in page.get("value", [])]
            if not page.get("nextLink"):
                return out
            page = self._call("GET", page["nextLink"], None, None)

    def _call(self, method: str, path: str, api_version: str | None, body: Any) -> dict[str, Any]:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            IncompleteReadError,
            ServiceRequestError,
            ServiceResponseError,
        )
        from azure.core.rest import HttpRequest

        where = f"{ORIGIN} ({self.scope})"
        url = path if path.startswith("https://") else self._client.format_url(path)
        try:
            request = HttpRequest(
                method, url, params={"api-version": api_version} if api_version else None, json=body
            )
            response = self._client.send_request(request)
            response.raise_for_status()
            doc = json.loads(response.read())
        except ClientAuthenticationError as exc:
            raise TransientError(f"{where}: authentication failed ({exc.message})") from None
        except (ServiceRequestError, ServiceResponseError, IncompleteReadError) as exc:
            raise TransientError(f"{where}: connection failed ({type(exc).__name__})") from None
        except HttpResponseError as exc:
            status = exc.status_code or 0
            code = getattr(exc.error, "code", None) if exc.error else None
            detail = f"HTTP {status}" + (f" {code}" if code else "")
            if status == 403:
                raise PermanentError(f"{where}: {detail}; the identity needs Reader on the scope") from None
            if status in (400, 404):
                raise PermanentError(f"{where}: {detail} for {method} {path.partition('?')[0]}") from None
            raise TransientError(f"{where}: {detail}") from None
        except ValueError as exc:  # not JSON: a truncated or garbled reply
            raise TransientError(f"{where}: unusable reply ({exc})") from None
        if not isinstance(doc, dict):
            raise TransientError(f"{where}: reply is not a JSON object")
        return doc


def resource_graph_client(
    *,
    credential: Any,
    endpoint: str,
    ca_bundle: str | None = None,
    retries: int = 3,
    backoff: float = 0.8,
    scope: str | None = None,
) -> Any:
    from worker.arm_client import arm_pipeline_client

    kwargs: dict[str, Any] = {"retry_total": retries, "retry_backoff_factor": backoff}
    if ca_bundle:
        kwargs["connection_verify"] = ca_bundle
    return arm_pipeline_client(
        credential, base_url=endpoint, credential_scopes=[scope or f"{endpoint}/.default"], **kwargs
    )


Fetch = Callable[[], RuleSet]
