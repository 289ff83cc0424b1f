"""Errors that tl_hub raises for bad input: each names the value it received and how to fix it."""

from __future__ import annotations


class TlHubError(ValueError):
    """A user-facing error: the message says what was wrong, the value received, and the fix.

    Example:
        >>> raise TlHubError("labels: got ['cat'] (1 label); an image classifier needs at least 2")
        Traceback (most recent call last):
        ...
        tl_hub.errors.TlHubError: labels: got ['cat'] (1 label); an image classifier needs at least 2
    """


class ConfigError(TlHubError):
    """A recipe/config key is unknown, misspelled, or has a value of the wrong type."""


class DataError(TlHubError):
    """A dataset, file, column or label problem."""


class HubError(TlHubError):
    """A problem talking to the Hub: unknown repo or revision, missing login, refused push."""


class CheckpointError(TlHubError):
    """A checkpoint is missing, incomplete or corrupt; resuming from it would lose state."""


class StopRequested(Exception):
    """Raised by a loop callback that stops a run on purpose (a search pruning a trial, its time budget): not an
    error, so the run ends without the "how to resume" advice. The run's checkpoints stay.

    Example:
        >>> issubclass(StopRequested, TlHubError)
        False
    """
