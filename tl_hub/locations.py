"""Where a dataset or model source lives -- bundled, a local path or a Hub repo -- decided before any network call.

One rule for `tl_hub.load_data`, `tl_hub.load_backbone` / `load_image_processor` and `tl_hub.load` /
`tl_hub.predict`, checked in this order:

1. ``bundled:<name>`` is bundled (the caller knows the names);
2. an existing file or folder (``~`` expanded) is local;
3. something *path-shaped* that does not exist is an error, "no such local folder" (or file), naming the
   closest existing name in its parent folder. Path-shaped: a ``\\``, a trailing ``/``, two or more ``/``
   (a Hub id is ``name`` or ``org/name``), a leading ``.``, ``~`` or ``/``, a local-file suffix
   (`LOCAL_FILE_SUFFIXES`: ``.csv``, ``.jsonl``, ``.parquet``, ...), or a first component that names an
   existing local folder (``my_images/catt``);
4. a valid Hub repo id is a Hub source -- unless the Hub is switched off (``HF_HUB_OFFLINE``) or cannot be
   reached (a short TCP connect to ``huggingface_hub.constants.ENDPOINT``, or to the proxy that serves
   it) and the repo is not in the local cache: then one line says what was looked for, that it is not a
   local path (with the closest local name) and why the Hub cannot help. A cached repo is still used
   (`Location.local_only` tells the loader to stay off the network);
5. anything else is neither local nor a Hub id: an error.

Errors about the name are `DataError` for datasets and `ConfigError` for models; errors about the Hub
being off or out of reach are `HubError`.

Example:
    >>> locate("bundled:digits", "dataset").kind
    'bundled'
    >>> locate("tl_hub", "model").kind  # an existing folder (this repository's package)
    'local'
    >>> locate("tl_hbu/", "dataset")
    Traceback (most recent call last):
    ...
    tl_hub.errors.DataError: dataset: no such local folder: 'tl_hbu/' (did you mean 'tl_hub/'?); ...
"""

from __future__ import annotations

import difflib
import itertools
import os
import socket
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tl_hub.errors import ConfigError, DataError, HubError

__all__ = [
    "LOCAL_FILE_SUFFIXES", "Location", "locate", "looks_like_path", "closest_path", "nearby", "local_hint",
    "hub_offline_reason", "hub_unreachable_reason", "in_local_cache",
]

#: suffixes of files that are read locally (tables, archives, weights); a name ending so is a path
LOCAL_FILE_SUFFIXES = (
    ".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet", ".arrow", ".zip", ".tar", ".gz", ".tgz", ".txt",
    ".yaml", ".yml", ".npz", ".npy", ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx",
)
#: seconds the TCP probe of the Hub endpoint may take (name resolution included)
PROBE_TIMEOUT = 2.0
_TRUE = {"1", "ON", "YES", "TRUE"}
_KINDS = ("dataset", "model")


@dataclass(frozen=True)
class Location:
    """Where a source lives.

    Attributes:
        kind: ``"bundled"``, ``"local"`` or ``"hub"``.
        source: the source as given.
        path: the expanded local path (``kind == "local"``).
        local_only: a Hub repo to load from the local cache only (the Hub is off or out of reach).

    Example:
        >>> Location("hub", "org/name").local_only
        False
    """

    kind: str
    source: str
    path: Path | None = None
    local_only: bool = False


def locate(source: str | os.PathLike, what: str, *, revision: str | None = None) -> Location:
    """Classify `source` (a dataset or model, as `what` says) before anything touches the network.

    Raises DataError (datasets) / ConfigError (models) for a path that does not exist or a name that is
    neither local nor a Hub id, and HubError when a Hub id cannot be loaded because the Hub is off or
    unreachable and the repo is not cached.

    Example:
        >>> locate("tl_hub/locations.py", "dataset").path.name
        'locations.py'
        >>> locate("no such thing", "model")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        tl_hub.errors.ConfigError: model: 'no such thing' is neither a local folder (...) nor a valid Hub model id ...
    """
    if what not in _KINDS:
        raise ValueError(f"what: got {what!r}; use one of {_KINDS}")
    if not isinstance(source, (str, os.PathLike)) or not os.fspath(source):
        raise _name_error(what, f"{what}: got {source!r}; give a local path or a Hub {what} id ('org/name')")
    text = os.fspath(source)
    if text.startswith("bundled:"):
        return Location("bundled", text)
    path = Path(text).expanduser()
    if path.exists():
        return Location("local", text, path)
    noun = _noun(text, what)
    if looks_like_path(text):
        raise _name_error(what, f"{what}: no such local {noun}: {text!r} ({nearby(text)}); check the path")
    if not _valid_repo_id(text):
        raise _name_error(
            what, f"{what}: {text!r} is neither a local {noun} ({nearby(text)}) nor a valid Hub {what} id "
            "('name' or 'org/name': letters, digits, '-', '_', '.'); check the path or the id")
    return _hub_location(text, what, noun, revision)


def _hub_location(text: str, what: str, noun: str, revision: str | None) -> Location:
    offline = hub_offline_reason(what)
    why = f"the Hub is disabled ({offline})" if offline else None
    if why is None:
        endpoint, failure = hub_unreachable_reason()
        why = None if failure is None else f"the Hub cannot be reached at {endpoint} ({failure})"
    if why is None:
        return Location("hub", text)
    if in_local_cache(text, what, revision):
        return Location("hub", text, local_only=True)
    fix = (f"unset {offline.split('=')[0]} to download it" if offline
           else "check your network, HF_ENDPOINT or proxy settings to download it")
    raise HubError(
        f"{what}: {text!r} is neither a local {noun} ({nearby(text)}) nor a Hub {what} in the local cache, and "
        f"{why}; check the name, or {fix}"
    )


def _name_error(what: str, message: str) -> Exception:
    return DataError(message) if what == "dataset" else ConfigError(message)


def _noun(text: str, what: str) -> str:
    if Path(text).suffix.lower() in LOCAL_FILE_SUFFIXES:
        return "file"
    return "folder or file" if what == "dataset" and not text.endswith(("/", "\\")) else "folder"


def nearby(text: str) -> str:
    """A few words for an error: "did you mean '<closest existing path>'?", else the folder that holds
    nothing of that name.

    Example:
        >>> nearby("tl_hbu"), nearby("tl_hub/zzzz-qqqq").startswith("nothing of that name in ")
        ("did you mean 'tl_hub/'?", True)
    """
    match = closest_path(text)
    if match is not None:
        return f"did you mean {match!r}?"
    folder = _first_missing(text.replace("\\", "/").split("/"))[0]
    where = Path(os.path.expanduser(folder or "."))
    return f"nothing of that name in {os.path.abspath(where) if where.is_dir() else where}"


def local_hint(source: str) -> str:
    """" (did you mean the local '<path>'?)" when an existing local path is close to `source`, else "" --
    for errors about a Hub id that may have been meant as a local path.

    Example:
        >>> local_hint("tl_hbu"), local_hint("org/zzzz-qqqq")
        (" (did you mean the local 'tl_hub/'?)", '')
    """
    close = closest_path(source)
    return f" (did you mean the local {close!r}?)" if close else ""


def looks_like_path(text: str) -> bool:
    """True when `text` can only mean a local path (see the module docstring for the rule).

    Example:
        >>> [looks_like_path(t) for t in ("my_imagse/", "org/name", "a/b/c", "~/x", "data.csv", "beans")]
        [True, False, True, True, True, False]
    """
    if "\\" in text or text.endswith("/") or text.count("/") >= 2 or text.startswith((".", "~", "/")):
        return True
    if Path(text).suffix.lower() in LOCAL_FILE_SUFFIXES:
        return True
    return "/" in text and Path(text.split("/")[0]).expanduser().is_dir()


def _valid_repo_id(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


# -- did you mean ----------------------------------------------------------------------------------
def closest_path(text: str) -> str | None:
    """The existing path closest to `text`, written as the user wrote it (``/`` after a folder), or None.

    The first component that does not exist is compared with the names in its (existing) parent folder.

    Example:
        >>> closest_path("tl_hub/locatoins.py"), closest_path("tl_hbu/"), closest_path("zzzz-qqqq")
        ('tl_hub/locations.py', 'tl_hub/', None)
    """
    prefix, part, rest = _first_missing(text.replace("\\", "/").split("/"))
    match = None if part is None else _closest_name(part, Path(os.path.expanduser(prefix or ".")))
    if match is None:
        return None
    fixed = prefix + match + ("/" + rest if rest else "")
    if rest and not Path(os.path.expanduser(fixed)).exists():
        fixed = prefix + match
    return fixed + ("/" if Path(os.path.expanduser(fixed)).is_dir() else "")


def _first_missing(parts: list[str]) -> tuple[str, str | None, str]:
    """(existing prefix ending in '/', or ''; the first component that does not exist; the components after it)."""
    for i, part in enumerate(parts):
        if part in ("", ".", "..", "~"):
            continue
        prefix = "/".join(parts[:i]) + "/" if i else ""
        if not Path(os.path.expanduser(prefix + part)).exists():
            return prefix, part, "/".join(p for p in parts[i + 1:] if p)
    return "/".join(parts), None, ""


def _closest_name(name: str, folder: Path) -> str | None:
    """The entry of `folder` closest to `name` (case-insensitive; hidden entries only for hidden names)."""
    if not folder.is_dir():
        return None
    try:
        entries = [p.name for p in itertools.islice(folder.iterdir(), 5000)]
    except OSError:
        return None
    entries = [e for e in entries if name.startswith(".") or not e.startswith(".")]
    by_lower = {e.lower(): e for e in sorted(entries)}
    match = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[match[0]] if match else None


# -- the Hub: off, out of reach, cached -------------------------------------------------------------
def hub_offline_reason(what: str = "model") -> str | None:
    """``"HF_HUB_OFFLINE=1"`` (the variable that switches the Hub off for `what`, as set) or None.

    Read at call time, so a change of the environment after import counts too.

    Example:
        >>> import os
        >>> os.environ["HF_HUB_OFFLINE"] = "1"; hub_offline_reason(); del os.environ["HF_HUB_OFFLINE"]
        'HF_HUB_OFFLINE=1'
    """
    names = ("HF_DATASETS_OFFLINE",) if what == "dataset" and "HF_DATASETS_OFFLINE" in os.environ else (
        "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    for name in names:
        value = os.environ.get(name, "")
        if value.strip().upper() in _TRUE:
            return f"{name}={value}"
    if names != ("HF_DATASETS_OFFLINE",):
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return "HF_HUB_OFFLINE=1"
    return None


def hub_unreachable_reason(endpoint: str | None = None, timeout: float = PROBE_TIMEOUT) -> tuple[str, str | None]:
    """(endpoint, None) when a TCP connection to the Hub endpoint opens within `timeout` seconds, else
    (endpoint, why not). Through a proxy (``HTTPS_PROXY``/``HTTP_PROXY`` and ``NO_PROXY``) the proxy is probed.

    Example:
        >>> hub_unreachable_reason("http://127.0.0.1:9")
        ('http://127.0.0.1:9', 'connection refused')
    """
    if endpoint is None:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    url = urllib.parse.urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    via = ""
    if proxy and not urllib.request.proxy_bypass(host):
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port, via = parsed.hostname or "", parsed.port or 80, f" through the proxy {proxy}"
    failure = _tcp_probe(host, port, timeout)
    return endpoint, None if failure is None else failure + via


def _tcp_probe(host: str, port: int, timeout: float) -> str | None:
    """None if a TCP connection opens; else a few words. Run in a thread: name lookups have no timeout."""
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except ConnectionRefusedError:
            outcome.append("connection refused")
        except socket.gaierror:
            outcome.append(f"cannot resolve the host name {host!r}")
        except TimeoutError:
            outcome.append(f"no answer within {timeout:g} s")
        except OSError as exc:
            outcome.append(exc.strerror or type(exc).__name__)

    probe = threading.Thread(target=connect, name="tl_hub-hub-probe", daemon=True)
    probe.start()
    probe.join(timeout + 0.5)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def in_local_cache(repo_id: str, what: str, revision: str | None = None) -> bool:
    """True when the Hub `what` (model/dataset) `repo_id` can load from the local cache without the Hub.

    Models: its config.json is in the huggingface_hub cache. Datasets: `datasets` prepared it before (its
    cache folder ``<org>___<name>``) or its files are in the huggingface_hub cache.

    Example:
        >>> in_local_cache("tester/never-downloaded-xyz", "model")
        False
    """
    from huggingface_hub import constants

    if what == "model":
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    hub_folder = Path(constants.HF_HUB_CACHE) / f"datasets--{repo_id.replace('/', '--')}" / "snapshots"
    if hub_folder.is_dir() and any(hub_folder.iterdir()):
        return True
    datasets_cache = os.environ.get("HF_DATASETS_CACHE") or os.path.join(constants.HF_HOME, "datasets")
    prepared = Path(os.path.expanduser(datasets_cache)) / repo_id.replace("/", "___")
    return prepared.is_dir() and any(p.is_dir() for p in prepared.glob("*/*/*"))
