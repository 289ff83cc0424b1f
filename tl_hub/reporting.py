"""How tl_hub reports: every message goes through the standard `logging` module, under the `tl_hub` logger.

The library only logs: a run's progress lines ("policy: ...", "epoch 3/10 ...", "pushed to the Hub: ...")
are INFO records, problems are WARNING records, each module logging under `tl_hub` or a child of it
(`tl_hub.hub`, ...). `use_console()` makes them visible the way `tl-hub` shows them:

- the `tl_hub` logger gets level INFO, unless a level was set on it already or the environment variable
  `TL_HUB_VERBOSITY` (debug, info, warning, error) asks for another;
- when nothing else would show the records (neither the `tl_hub` logger nor the root logger has a
  handler), a handler writes the bare message to stdout, warnings and errors to stderr.

The `tl-hub` command calls it first; `finetune()` and `push_to_hub()` call it too, so a Python user sees
what the command shows, while a program that configured `logging` itself keeps its own handlers.

Example:
    >>> import logging
    >>> use_console()
    >>> logging.getLogger("tl_hub").getEffectiveLevel() <= logging.INFO
    True
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["LOGGER_NAME", "logger", "main_process_reporter", "use_console"]

LOGGER_NAME = "tl_hub"
logger = logging.getLogger(LOGGER_NAME)

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _ConsoleHandler(logging.Handler):
    """The bare message to the *current* sys.stdout (warnings and errors to sys.stderr): streams are looked
    up when a record is written, so a redirection made later (a notebook, pytest's capture) is honoured."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never crash the run; the stdlib's own rule
            self.handleError(record)


def use_console() -> None:
    """Make tl_hub's INFO progress lines visible (see the module docstring); safe to call many times."""
    wanted = os.environ.get("TL_HUB_VERBOSITY", "").strip().lower()
    if wanted in _LEVELS:
        logger.setLevel(_LEVELS[wanted])
    elif logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = _ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)


def main_process_reporter(accelerator: Any) -> Callable[[str], None]:
    """`logger.info` on the main process, a no-op on the others (one line per run, not one per process).

    Example:
        >>> class Single:
        ...     is_main_process = True
        >>> main_process_reporter(Single()) == logger.info
        True
    """
    if accelerator.is_main_process:
        return logger.info
    return _silent


def _silent(message: str) -> None:
    return None
