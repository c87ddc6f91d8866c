"""An ARM pipeline client for the Service Tag Discovery API.

It is the pipeline `azure.mgmt.network.NetworkManagementClient` builds (same ARMPipelineClient,
same policies in the same order: ARM bearer-challenge authentication, retries honouring
Retry-After, redirects, ARM logging), without importing azure-mgmt-network itself: its
generated operations and models cost a worker 28 MB of memory at import, and the worker only
sends one GET whose raw body it parses (the SDK's model deserialisation costs ~0.7 s per reply).
The test suite still drives the local ARM endpoint with the real NetworkManagementClient.
"""

from __future__ import annotations

from typing import Any

from azure.core.pipeline import policies
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy, ARMHttpLoggingPolicy

USER_AGENT = "servicetags-watch/0.1"


def arm_pipeline_client(
    credential: Any, *, base_url: str, credential_scopes: list[str], **kwargs: Any
) -> ARMPipelineClient[Any, Any]:
    kwargs.setdefault("user_agent", USER_AGENT)
    redirect = policies.RedirectPolicy(**kwargs)
    chain = [
        policies.RequestIdPolicy(**kwargs),
        policies.HeadersPolicy(**kwargs),
        policies.UserAgentPolicy(**kwargs),
        policies.ProxyPolicy(**kwargs),
        policies.ContentDecodePolicy(**kwargs),
        redirect,
        policies.RetryPolicy(**kwargs),
        ARMChallengeAuthenticationPolicy(credential, *credential_scopes, **kwargs),
        policies.CustomHookPolicy(**kwargs),
        policies.NetworkTraceLoggingPolicy(**kwargs),
        policies.DistributedTracingPolicy(**kwargs),
        policies.SensitiveHeaderCleanupPolicy(**kwargs),
        ARMHttpLoggingPolicy(**kwargs),
    ]
    return ARMPipelineClient(base_url=base_url, policies=chain, **kwargs)
