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

Other libraries' chatter is kept out of that output where it says nothing: `quiet_library_chatter()`
around a model load or save hides transformers' own progress bars and one spurious warning (every other
warning still shows), and `progress_bars_for(stream)` turns every progress bar off for a command whose
output is not a terminal (a log file, a pipe, CI), where a bar is a stream of carriage-return lines.

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
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

__all__ = ["LOGGER_NAME", "SPURIOUS_WARNINGS", "logger", "main_process_reporter", "progress_bars_for",
           "quiet_library_chatter", "use_console"]

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


#: (logger, start of the message) of library warnings that report no problem; `quiet_library_chatter` drops
#: them. transformers 5 maps timm checkpoints (TimmWrapper) to an image processor that exists only in its PIL
#: backend, and warns that the torchvision backend "is not available" whether torchvision is installed or not.
SPURIOUS_WARNINGS = (
    ("transformers.models.auto.image_processing_auto", "Requested torchvision backend is not available"),
)


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefix)


@contextmanager
def quiet_library_chatter() -> Iterator[None]:
    """Around a model load or save: transformers' own progress bars ("Loading weights", "Writing model
    shards", instant for the models tl_hub writes) stay hidden and `SPURIOUS_WARNINGS` are dropped; every
    other log record shows as usual, and huggingface_hub's download and upload bars keep their own setting.
    Everything is restored afterwards.

    Example:
        >>> with quiet_library_chatter():
        ...     pass
    """
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    bars_on, hub_bars_off = hf_logging.is_progress_bar_enabled(), hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # switches huggingface_hub's bars off too: put those back as they were
    _set_hub_bars(hub_utils, off=hub_bars_off)
    filters = [(logging.getLogger(name), _DropMessages(prefix)) for name, prefix in SPURIOUS_WARNINGS]
    for target, drop in filters:
        target.addFilter(drop)
    try:
        yield
    finally:
        for target, drop in filters:
            target.removeFilter(drop)
        if bars_on:
            hf_logging.enable_progress_bar()
        _set_hub_bars(hub_utils, off=hub_bars_off)


def _set_hub_bars(hub_utils: Any, *, off: bool) -> None:
    if off:
        hub_utils.disable_progress_bars()
    elif hub_utils.are_progress_bars_disabled():
        hub_utils.enable_progress_bars()


def progress_bars_for(stream: Any, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Switch every tqdm progress bar of this process off (`TQDM_DISABLE=1`, which tqdm, huggingface_hub,
    transformers and datasets all honour) when `stream` is not a terminal; call it before the libraries
    draw anything. A `TQDM_DISABLE` the user set is kept. Returns what it set.

    Example:
        >>> import io
        >>> progress_bars_for(io.StringIO(), {}), progress_bars_for(io.StringIO(), {"TQDM_DISABLE": "0"})
        ({'TQDM_DISABLE': '1'}, {})
    """
    environ = os.environ if environ is None else environ
    isatty = getattr(stream, "isatty", None)
    if "TQDM_DISABLE" in environ or (callable(isatty) and isatty()):
        return {}
    environ["TQDM_DISABLE"] = "1"
    return {"TQDM_DISABLE": "1"}
