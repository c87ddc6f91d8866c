"""Errors a user or operator can act on. `str(error)` is the whole one-line message."""

from __future__ import annotations


class ServiceTagsError(Exception):
    """Base class: a problem with input or configuration, reported without a traceback."""


class SnapshotError(ServiceTagsError):
    """A snapshot file or API reply that cannot be read as service tags."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class InvalidPrefixError(ValueError):
    """An address prefix that is not a valid CIDR network."""


class UnknownRegionError(ServiceTagsError):
    """A region name that the data does not know."""


class PermanentError(ServiceTagsError):
    """Processing this message can never succeed (bad content, unknown region): poison it now."""


class BadMessage(PermanentError):
    """A message that is not what its queue carries (not JSON, missing fields, a bad region
    name): it can never be processed, and goes to the poison queue with this reason."""


class TransientError(ServiceTagsError):
    """Processing failed for now (service down, throttled, truncated reply): try again later."""
