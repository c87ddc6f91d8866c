"""Reading settings from the environment: one clear error per missing or invalid value."""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping

from core.errors import ServiceTagsError

CLOUDS = ("Public", "AzureGovernment", "AzureChina")


class ConfigError(ServiceTagsError):
    """A missing or invalid setting; the message names the variable."""


class Env:
    """Typed access to an environment mapping (os.environ by default, a dict in tests)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if environ is None else environ

    @property
    def mapping(self) -> Mapping[str, str]:
        """The environment itself, for settings read by name at run time (secrets by name)."""
        return self._env

    def int(self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        text = self.str(name)
        if text is None:
            return default
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{name}={text!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ConfigError(f"{name}={value} must be at least {minimum}{upper}")
        return value

    def bool(self, name: str, default: bool = False) -> bool:
        text = self.str(name)
        if text is None:
            return default
        lowered = text.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name}={text!r} must be 1/true/yes or 0/false/no")

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        text = self.str(name, default)
        assert text is not None
        for choice in choices:
            if text.lower() == choice.lower():
                return choice
        raise ConfigError(f"{name}={text!r} must be one of {', '.join(choices)}")

    def identity_wait(self) -> builtins.int:
        """SERVICETAGS_IDENTITY_WAIT: seconds every component waits for its managed identity."""
        return self.int("SERVICETAGS_IDENTITY_WAIT", 300, minimum=0)

    def cloud(self, name: str = "SERVICETAGS_CLOUD") -> str:
        return self.choice(name, CLOUDS, "Public")

    # Last in the class: methods named like types shadow them in later annotations.
    def str(self, name: str, default: str | None = None, *, required: builtins.bool = False) -> str | None:
        value = self._env.get(name, "").strip()
        if value:
            return value
        if required:
            raise ConfigError(f"{name} is not set")
        return default
