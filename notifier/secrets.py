"""Where channel URLs and signing secrets come from, by name.

- Azure: Key Vault (`SERVICETAGS_KEYVAULT_URL`), read with the notifier's managed identity
  through `DefaultAzureCredential`; the identity holds `Key Vault Secrets User` on that vault
  only (terraform/keyvault.tf).
- Locally: the environment variable `SERVICETAGS_SECRET_<NAME>` (the name upper-cased, dashes
  as underscores), else the file `<SERVICETAGS_SECRETS_DIR>/<name>`.

Values are returned to the caller only; errors name the secret, never its value.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from notifier.channels import ChannelsError

Reader = Callable[[str], str]


def env_name(secret: str) -> str:
    return "SERVICETAGS_SECRET_" + secret.upper().replace("-", "_")


def local_reader(environ: Mapping[str, str], directory: str | None) -> Reader:
    def read(name: str) -> str:
        value = environ.get(env_name(name))
        if value:
            return value
        if directory:
            path = Path(directory) / name
            if path.is_file():
                return path.read_text().strip()
        where = f" or {Path(directory) / name}" if directory else ""
        raise ChannelsError(f"secret {name!r} not found: set {env_name(name)}{where}")

    return read


def keyvault_reader(vault_url: str, credential: Any) -> Reader:
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
    from azure.keyvault.secrets import SecretClient

    client = SecretClient(vault_url=vault_url, credential=credential)

    def read(name: str) -> str:
        try:
            value = client.get_secret(name).value
        except ResourceNotFoundError:
            raise ChannelsError(f"secret {name!r} is not in the key vault {vault_url}") from None
        except HttpResponseError as exc:
            raise ChannelsError(
                f"secret {name!r} could not be read from {vault_url}: HTTP {exc.status_code} "
                "(does the notifier hold Key Vault Secrets User?)"
            ) from None
        if not value:
            raise ChannelsError(f"secret {name!r} in {vault_url} is empty")
        return value

    return read


def reader_from_env(environ: Mapping[str, str] | None = None, credential: Any = None) -> Reader:
    environ = os.environ if environ is None else environ
    vault = environ.get("SERVICETAGS_KEYVAULT_URL")
    if vault:
        if credential is None:
            from runtime.identity import azure_credential

            credential = azure_credential(environ.get("SERVICETAGS_CLOUD", "Public"))
        return keyvault_reader(vault, credential)
    return local_reader(environ, environ.get("SERVICETAGS_SECRETS_DIR"))
