"""Push a tl_hub output folder to the Hugging Face Hub, pull it back, and predict with it.

- `push_to_hub(output_dir, repo_id)` re-renders the model card for the real repo id, pushes the
  folder's Hub files in ONE commit, then checks that the remote files equal the local ones (names,
  sizes, sha256 for LFS files, git blob ids for the others) and fails loudly if not.
  **Private by default:** a repo that does not exist yet is created private unless `private=False`
  (`tl-hub push --public`); an existing repo keeps its visibility (the log line says which).
  Never pushed: `checkpoints/`, caches, or any file not in the list below.
  A README.md that was edited on the Hub (or not written by tl_hub) is not overwritten unless
  `force=True` (`tl-hub push --force`); a README.md you edited in the output folder is pushed as it
  is (otherwise the card is re-rendered so its snippets name the real repo id).
  Under a distributed launch only the main process pushes; the others wait for it.
  **Faults:** 408/429/5xx answers and dropped connections are retried with exponential backoff
  (`Retry-After` and the `RateLimit` header's reset honoured; `TL_HUB_PUSH_RETRIES`, default 5, and `TL_HUB_PUSH_BACKOFF`, default 1 s).
  The commit itself carries the parent commit it was built on, so a retry can never add a second copy:
  when an answer is lost, tl_hub first checks whether the commit landed (files equal to the local ones
  on a new head, or in a new pull request) and adopts it. A 412 (someone else committed meanwhile) is
  retried on top of the new head after the edited-card check runs again; the repo always holds
  complete commits only, and a push that gives up leaves it unchanged.
- `load(repo_or_dir)` → (model, image processor); `predict(repo_or_dir, images)` → top-k labels.

The token comes only from the environment (`HF_TOKEN`) or the stored login (`hf auth login`); tl_hub
never logs, prints or writes it.

Example:
    >>> import tl_hub
    >>> url = tl_hub.push_to_hub("outputs/fashion", "me/fashion-lite0")  # doctest: +SKIP
    >>> tl_hub.predict("me/fashion-lite0", ["shoe.png"], top_k=2)  # doctest: +SKIP
    [[{'label': 'Sneaker', 'score': 0.93}, {'label': 'Sandal', 'score': 0.05}]]
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tl_hub.errors import DataError, HubError, TlHubError
from tl_hub.locations import locate, nearby
from tl_hub.output_folder import CARD_FILE, CONFIG_FILE, RUN_INFO_FILE, check_output_folder, hub_files
from tl_hub.reporting import quiet_library_chatter, use_console

logger = logging.getLogger(__name__)

LOGIN_HELP = "run `hf auth login` (or set the HF_TOKEN environment variable to a token with write access)"


# ---------------------------------------------------------------------------------------------------
# helpers
def _validate_repo_id(repo_id: Any) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or not repo_id:
        raise HubError(f"repo_id: got {repo_id!r}; expected 'user/name' (or 'name' for your own namespace)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise HubError(f"repo_id: {repo_id!r} is not a valid Hub repo id ({err}); use 'user/name' with letters, "
                       "digits, '-', '_' and '.' only") from err
    return repo_id


def _token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise HubError(f"no Hugging Face token found; {LOGIN_HELP}")
    return token


@contextlib.contextmanager
def _hub_errors(repo_id: str, action: str) -> Iterator[None]:
    """Turn huggingface_hub HTTP errors into HubError messages that say what to do."""
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    try:
        yield
    except TlHubError:
        raise
    except RevisionNotFoundError as err:
        raise HubError(f"{action} {repo_id!r}: revision not found; check the branch/tag/commit name") from err
    except RepositoryNotFoundError as err:
        raise HubError(f"{action} {repo_id!r}: repository not found (or private and your token cannot see it); "
                       f"check the repo id, or {LOGIN_HELP}") from err
    except EntryNotFoundError as err:
        raise HubError(f"{action} {repo_id!r}: a file is missing in the repo ({err})") from err
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status == 401:
            raise HubError(f"{action} {repo_id!r}: the Hub rejected your token (401 Unauthorized); it is invalid "
                           f"or expired: {LOGIN_HELP}") from err
        if status == 403:
            raise HubError(f"{action} {repo_id!r}: permission denied (403 Forbidden): your token has no write "
                           "access to this namespace; use a 'write' token, or push to your own namespace") from err
        if status == 412:
            raise HubError(f"{action} {repo_id!r}: the repo changed while pushing (412 Precondition Failed); "
                           "run the push again") from err
        raise HubError(f"{action} {repo_id!r}: the Hub answered HTTP {status}: {err}") from err


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _git_blob_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _check_no_token(files: dict[str, Path], token: str) -> None:
    """Refuse to push a file that contains the user's token (it would be public forever)."""
    needle = token.encode()
    for name, path in files.items():
        if name.endswith(".safetensors"):
            continue
        if needle in path.read_bytes():
            raise HubError(f"{path} contains your Hugging Face token; remove it from that file before pushing")


def verify_remote(api: Any, repo_id: str, revision: str, files: dict[str, Path]) -> None:
    """Raise HubError unless every local file exists remotely at `revision` with the same size and hash.

    Example:
        >>> verify_remote(HfApi(), "me/model", commit_sha, hub_files(out))  # doctest: +SKIP
    """
    from huggingface_hub.hf_api import RepoFile

    remote = {e.path: e for e in api.list_repo_tree(repo_id, revision=revision, recursive=True)
              if isinstance(e, RepoFile)}
    problems = []
    for name, path in sorted(files.items()):
        entry = remote.get(name)
        if entry is None:
            problems.append(f"{name}: missing on the Hub")
            continue
        size = path.stat().st_size
        if entry.size != size:
            problems.append(f"{name}: {entry.size} bytes on the Hub, {size} locally")
        elif entry.lfs is not None:
            if entry.lfs.sha256 != _sha256(path):
                problems.append(f"{name}: sha256 differs (Hub {entry.lfs.sha256[:12]}…)")
        elif entry.blob_id != _git_blob_sha1(path):
            problems.append(f"{name}: content differs (git blob {entry.blob_id[:12]}… on the Hub)")
    if problems:
        raise HubError(f"push to {repo_id!r} at {revision} is incomplete: " + "; ".join(problems)
                       + ". Check the repo's .gitattributes/.gitignore and push again")


# ---------------------------------------------------------------------------------------------------
# retries (transient Hub faults)
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
MAX_RETRY_WAIT_S = 60.0


def _retry_settings() -> tuple[int, float]:
    """(retries, base backoff seconds) from TL_HUB_PUSH_RETRIES / TL_HUB_PUSH_BACKOFF (defaults 5, 1.0)."""
    try:
        retries = max(0, int(os.environ.get("TL_HUB_PUSH_RETRIES", "5")))
        backoff = max(0.0, float(os.environ.get("TL_HUB_PUSH_BACKOFF", "1.0")))
    except ValueError as err:
        raise HubError(f"TL_HUB_PUSH_RETRIES / TL_HUB_PUSH_BACKOFF: {err}; expected an integer / a number of "
                       "seconds") from err
    return retries, backoff


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def _transient_wait(err: BaseException) -> float | None:
    """None if `err` is not worth retrying; else the server's Retry-After (0.0 when it gave none)."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(err, HfHubHTTPError):
        if _status(err) not in RETRY_STATUSES:
            return None
        return server_wait(err.response.headers) if err.response is not None else 0.0
    if isinstance(err, _network_errors()):
        return 0.0
    return None


def server_wait(headers: Any) -> float:
    """Seconds the Hub asks a client to wait before trying again: its `Retry-After` (seconds), or -- when its
    `RateLimit` header says no request is left in the window -- the window's reset time (parsed by
    huggingface_hub's own `parse_ratelimit_headers`), whichever is longer; 0.0 when it says neither.

    Example:
        >>> server_wait({"Retry-After": "2"}), server_wait({"RateLimit": '"api";r=0;t=55'}), server_wait({})
        (2.0, 55.0, 0.0)
        >>> server_wait({"RateLimit": '"api";r=12;t=55'})  # requests left: no need to wait for the reset
        0.0
    """
    wait = 0.0
    value = str(headers.get("Retry-After") or "").strip()
    with contextlib.suppress(ValueError):
        wait = max(0.0, float(value))
    try:
        from huggingface_hub.utils import parse_ratelimit_headers
    except ImportError:  # an older huggingface_hub: Retry-After only
        return wait
    info = parse_ratelimit_headers(headers)
    if info is not None and info.remaining == 0:
        wait = max(wait, float(info.reset_in_seconds))
    return wait


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of a connection that failed or was cut (the HTTP client's own, which are no OSError)."""
    errors: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    for module in ("httpx2", "httpx"):  # huggingface_hub 2.x uses httpx2, 1.x httpx
        with contextlib.suppress(ImportError):
            errors += (importlib.import_module(module).TransportError,)
    return errors


def _describe(err: BaseException) -> str:
    status = _status(err)
    return f"HTTP {status}" if status else f"{type(err).__name__}: {err}"


class _Backoff:
    """Counts attempts and sleeps between them (exponential, Retry-After honoured)."""

    def __init__(self, repo_id: str) -> None:
        self.repo_id = repo_id
        self.retries, self.wait = _retry_settings()
        self.attempt = 0

    def sleep_or_raise(self, what: str, err: BaseException, hint: float) -> None:
        """Sleep before the next attempt, or raise HubError when no attempt is left."""
        self.attempt += 1
        if hint > MAX_RETRY_WAIT_S:
            raise HubError(f"push to {self.repo_id!r}: {what}: the Hub asks to wait {hint:.0f} s ({_describe(err)}); "
                           "the repo is unchanged, run the push again later") from err
        if self.attempt > self.retries:
            raise HubError(f"push to {self.repo_id!r}: {what} failed {self.attempt} times ({_describe(err)}); "
                           "nothing was committed, run the push again (it commits the same files once)") from err
        delay = max(hint, min(self.wait * 2 ** (self.attempt - 1), MAX_RETRY_WAIT_S))
        logger.warning("push to %s: %s failed (%s); retry %d/%d in %.1f s", self.repo_id, what, _describe(err),
                       self.attempt, self.retries, delay)
        time.sleep(delay)


def _retrying(backoff: _Backoff, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call an idempotent Hub function, retrying transient failures."""
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            hint = _transient_wait(err)
            if hint is None:
                raise
            backoff.sleep_or_raise(what, err, hint)


def _distributed_state() -> Any:
    """accelerate's PartialState when a multi-process run is initialised, else None."""
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    from accelerate import PartialState

    return PartialState()


# ---------------------------------------------------------------------------------------------------
# push
def push_to_hub(output_dir: str | Path, repo_id: str, *, private: bool | None = None, revision: str | None = None,
                commit_message: str | None = None, create_pr: bool = False, force: bool = False) -> str:
    """Push a tl_hub output folder to the Hub as one commit and verify it; returns the commit URL.

    Args:
        output_dir: folder written by a tl_hub training run (run_info.json, config.json, model.safetensors).
        repo_id: "user/name" (or "name": your namespace).
        private: visibility of a NEW repo; None (default) = private. An existing repo keeps its visibility.
        revision: branch to push to (created from main if missing); default main.
        commit_message: default "Upload <name> fine-tuned with tl_hub".
        create_pr: open a pull request instead of committing to the branch.
        force: overwrite a README.md that was edited on the Hub.

    Pushed: model.safetensors, config.json, preprocessor_config.json, README.md (re-rendered for
    repo_id), recipe.yaml, metrics.json, run_info.json and the PNG plots; never checkpoints/.

    Example:
        >>> push_to_hub("outputs/fashion", "me/fashion-lite0")  # doctest: +SKIP
        'https://huggingface.co/me/fashion-lite0/commit/1a2b...'
    """
    use_console()
    state = _distributed_state()
    if state is None:
        return _push(output_dir, repo_id, private=private, revision=revision, commit_message=commit_message,
                     create_pr=create_pr, force=force)
    from accelerate.utils import broadcast_object_list

    outcome: list[Any] = [None]
    error: BaseException | None = None
    if state.is_main_process:
        try:
            outcome = [("ok", _push(output_dir, repo_id, private=private, revision=revision,
                                    commit_message=commit_message, create_pr=create_pr, force=force))]
        except Exception as err:  # every rank must learn the outcome, or the others would hang
            error = err
            outcome = [("error", str(err))]
    broadcast_object_list(outcome, from_process=0)
    state.wait_for_everyone()
    if error is not None:
        raise error
    status, value = outcome[0]
    if status != "ok":
        raise HubError(f"push failed on the main process: {value}")
    return value


def _push(output_dir: str | Path, repo_id: str, *, private: bool | None, revision: str | None,
          commit_message: str | None, create_pr: bool, force: bool) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    from tl_hub.card import card_was_edited, write_model_card, write_plots

    out = check_output_folder(output_dir)
    repo_id = _validate_repo_id(repo_id)
    token = _token()
    api = HfApi(token=token)
    backoff = _Backoff(repo_id)
    with _hub_errors(repo_id, "push to"):
        if "/" not in repo_id:
            repo_id = f"{_retrying(backoff, 'whoami', api.whoami)['name']}/{repo_id}"
        readme = out / CARD_FILE
        if readme.is_file() and card_was_edited(readme.read_text(encoding="utf-8")):
            logger.warning("%s was edited after tl_hub wrote it: pushing it as it is (not re-rendered for %s)",
                           readme, repo_id)
            write_plots(out)
        else:
            write_model_card(out, repo_id=repo_id)
        files = hub_files(out)
        _check_no_token(files, token)  # before anything is created on the Hub
        try:
            existing = _retrying(backoff, "reading the repo", api.model_info, repo_id)
            is_new, is_private = False, bool(existing.private)
            if private is not None and private != is_private:
                logger.warning("repo %s already exists and is %s; its visibility is left unchanged (private=%s "
                               "only applies to new repos)", repo_id, "private" if is_private else "public", private)
        except RepositoryNotFoundError:
            is_new, is_private = True, True if private is None else bool(private)
            _retrying(backoff, "creating the repo", api.create_repo, repo_id, private=is_private, exist_ok=True)
        branch = revision or "main"
        if branch != "main":
            branches = {b.name for b in _retrying(backoff, "listing branches", api.list_repo_refs, repo_id).branches}
            if branch not in branches:
                _retrying(backoff, "creating the branch", api.create_branch, repo_id, branch=branch, exist_ok=True)

        def check_card(head: Any) -> None:
            remote_names = {s.rfilename for s in head.siblings or []}
            if CARD_FILE in remote_names and not force:
                remote_card = Path(_retrying(backoff, "reading README.md", api.hf_hub_download, repo_id, CARD_FILE,
                                             revision=head.sha)).read_text(encoding="utf-8")
                local_card = (out / CARD_FILE).read_text(encoding="utf-8")
                if remote_card != local_card and card_was_edited(remote_card):
                    raise HubError(f"README.md of {repo_id!r} on the Hub was edited there (or was not written by "
                                   "tl_hub); pushing would overwrite it. Pass force=True (`tl-hub push --force`) to "
                                   "overwrite it, or download it and merge your edits into the output folder first")

        message = commit_message or f"Upload {repo_id.split('/')[-1]} fine-tuned with tl_hub"
        info, head = _commit_once(api, backoff, repo_id, branch, files, message, create_pr, check_card)
        _retrying(backoff, "verifying the push", verify_remote, api, repo_id, info.oid, files)
    where = f"pull request {info.pr_url}" if create_pr and info.pr_url else f"branch {branch}"
    visibility = ("private" if is_private else "public", "created" if is_new else "existing, visibility unchanged")
    if info.oid == head.sha:
        logger.info("%s (%s repo, %s) on %s already has these %d files: nothing to commit (%s)", repo_id,
                    *visibility, where, len(files), info.commit_url)
    else:
        logger.info("pushed %d files to %s (%s repo, %s) on %s: %s", len(files), repo_id, *visibility, where,
                    info.commit_url)
    return info.commit_url


def _landed(api: Any, repo_id: str, files: dict[str, Path], sha: str) -> bool:
    """True if the repo at commit `sha` holds exactly these local files (names, sizes, hashes)."""
    try:
        verify_remote(api, repo_id, sha, files)
    except HubError:
        return False
    return True


def _commit_once(api: Any, backoff: _Backoff, repo_id: str, branch: str, files: dict[str, Path], message: str,
                 create_pr: bool, check_card: Any) -> tuple[Any, Any]:
    """Create the commit exactly once despite lost answers, transient errors and racing pushes.

    Every attempt names the head it was built on (`parent_commit`): the Hub refuses it with 412 if the
    branch moved, so a retry can never stack a duplicate on top of a commit that landed unnoticed.
    After a failure whose outcome is unknown, the commit is looked for (new head / new pull request
    holding exactly these files) before anything is sent again. Returns (CommitInfo, head it was built on).
    """
    from huggingface_hub import CommitInfo, CommitOperationAdd

    def find_landed(head_sha: str, known_prs: set[str]) -> Any:
        if create_pr:
            refs = _retrying(backoff, "listing pull requests", api.list_repo_refs, repo_id, include_pull_requests=True)
            for ref in refs.pull_requests or []:
                if ref.ref not in known_prs and _landed(api, repo_id, files, ref.target_commit):
                    number = ref.ref.rsplit("/", 1)[-1]
                    return CommitInfo(commit_url=f"{api.endpoint}/{repo_id}/commit/{ref.target_commit}",
                                      commit_message=message, commit_description="", oid=ref.target_commit,
                                      _endpoint=api.endpoint, pr_url=f"{api.endpoint}/{repo_id}/discussions/{number}")
            return None
        now = _retrying(backoff, "reading the branch head", api.model_info, repo_id, revision=branch)
        if now.sha != head_sha and _landed(api, repo_id, files, now.sha):
            return CommitInfo(commit_url=f"{api.endpoint}/{repo_id}/commit/{now.sha}", commit_message=message,
                              commit_description="", oid=now.sha, _endpoint=api.endpoint)
        return None

    while True:
        head = _retrying(backoff, "reading the branch head", api.model_info, repo_id, revision=branch)
        check_card(head)
        known_prs: set[str] = set()
        if create_pr:
            refs = _retrying(backoff, "listing pull requests", api.list_repo_refs, repo_id, include_pull_requests=True)
            known_prs = {ref.ref for ref in refs.pull_requests or []}
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files.items()]
        try:
            return api.create_commit(repo_id, operations, commit_message=message, revision=branch,
                                     create_pr=create_pr, parent_commit=head.sha), head
        except Exception as err:
            hint = _transient_wait(err)
            if _status(err) == 412:
                landed = find_landed(head.sha, known_prs)
                if landed is not None:
                    logger.warning("push to %s: the commit had already landed (its answer was lost); not committing "
                                   "again", repo_id)
                    return landed, head
                now = _retrying(backoff, "reading the branch head", api.model_info, repo_id, revision=branch)
                if now.sha == head.sha:
                    raise  # 412 without any visible change: do not loop; _hub_errors explains it
                backoff.sleep_or_raise("the commit (the branch moved: another push?)", err, 0.0)
                continue
            if hint is None:
                raise
            landed = find_landed(head.sha, known_prs)
            if landed is not None:
                logger.warning("push to %s: the commit landed although its answer was lost (%s); not committing again",
                               repo_id, _describe(err))
                return landed, head
            backoff.sleep_or_raise("the commit", err, hint)


def tl_hub_parent(source: str, revision: str | None = None) -> str | None:
    """`source` if it is a model tl_hub trained (a folder or Hub repo with run_info.json), else None.

    Training code records the result as run_info.json "parent_model", and the card then names the parent.

    Example:
        >>> tl_hub_parent("bundled:efficientnet_lite0") is None
        True
    """
    from tl_hub.locations import locate

    if not isinstance(source, str) or source.startswith("bundled:"):
        return None
    local = Path(source).expanduser()
    if local.is_dir():
        return source if (local / RUN_INFO_FILE).is_file() else None
    from huggingface_hub import file_exists, try_to_load_from_cache
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import HFValidationError

    try:
        if locate(source, "model", revision=revision).local_only:  # loaded from the cache: stay off the network
            return source if isinstance(try_to_load_from_cache(source, RUN_INFO_FILE, revision=revision), str) else None
        return source if file_exists(source, RUN_INFO_FILE, revision=revision) else None
    except (TlHubError, HfHubHTTPError, HFValidationError, OSError, *_network_errors()):
        return None  # not reachable / not a repo: the backbone loader reports that itself


# ---------------------------------------------------------------------------------------------------
# pull and predict
def load(repo_or_dir: str | Path, revision: str | None = None) -> tuple[Any, Any]:
    """Load a fine-tuned classifier and its image processor from a Hub repo id or a local folder.

    Example:
        >>> model, processor = load("me/fashion-lite0")  # doctest: +SKIP
        >>> model.config.id2label[0]  # doctest: +SKIP
        'T-shirt/top'
    """
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    location = locate(repo_or_dir, "model", revision=revision)  # before any network call
    if location.kind == "local":
        if not (location.path / CONFIG_FILE).is_file():
            what = "folder has no config.json" if location.path.is_dir() else "is a file, not a folder"
            raise HubError(f"{str(repo_or_dir)!r}: {what}; pass a tl_hub output folder or a Hub repo id")
        source = str(location.path)
    else:
        source = _validate_repo_id(location.source)
    with _hub_errors(source, "load"), quiet_library_chatter():  # no "Loading weights" bar, no spurious warning
        try:
            only_cache = {"local_files_only": True} if location.local_only else {}
            model = AutoModelForImageClassification.from_pretrained(source, revision=revision, use_safetensors=True,
                                                                    **only_cache)  # never a pickled .bin
            processor = AutoImageProcessor.from_pretrained(source, revision=revision, **only_cache)
        except OSError as err:
            cause = _hub_cause(err)
            if cause is not None:
                raise cause from err  # mapped to a HubError by _hub_errors
            if "safetensors" in str(err):
                raise HubError(f"load {source!r}: no model.safetensors there; tl_hub loads safetensors weights only "
                               "(a pickled .bin can run code when loaded). Re-save the model with "
                               "save_pretrained(..., safe_serialization=True), or push it again with tl-hub push") from err
            raise HubError(f"load {source!r}: {err}") from err
    return model.eval(), processor


def _hub_cause(err: BaseException) -> BaseException | None:
    """The huggingface_hub HTTP error behind an OSError that transformers raised, if any."""
    from huggingface_hub.errors import HfHubHTTPError

    seen = err.__cause__ or err.__context__
    while seen is not None:
        if isinstance(seen, HfHubHTTPError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _image_items(images: Any) -> list[Any]:
    """The images as a list, each a file that exists or a PIL image (checked up front, before any inference)."""
    from PIL import Image

    items = [images] if isinstance(images, (str, Path, Image.Image)) else list(images)
    for i, item in enumerate(items):
        if isinstance(item, (str, Path)):
            if not Path(item).expanduser().is_file():
                hint = nearby(str(item)) if not Path(item).expanduser().exists() else "a folder"
                raise DataError(f"images[{i}]: {str(item)!r} is not a file ({hint}); pass image paths or PIL images")
        elif not isinstance(item, Image.Image):
            raise DataError(f"images[{i}]: got {type(item).__name__}; pass a file path or a PIL.Image")
    return items


def _open_image(i: int, item: Any) -> Any:
    """One image decoded as pipeline() decodes it."""
    from transformers.image_utils import load_image  # the same decoding as pipeline()

    if not isinstance(item, (str, Path)):
        return load_image(item)
    try:
        return load_image(str(Path(item).expanduser()))
    except (OSError, ValueError) as err:
        raise DataError(f"images[{i}]: cannot read {str(item)!r} as an image ({err})") from err


#: images per forward pass of `predict`; a progress bar shows above this many batches' worth
PREDICT_BATCH = 16


def predict(repo_or_dir: str | Path | tuple[Any, Any], images: Any, top_k: int = 5,
            revision: str | None = None, *, progress: bool = True,
            threshold: float | None = None) -> list[list[dict[str, Any]]]:
    """Classify images; per image a list of {"label", "score"}, best first (scores as pipeline() gives).

    Args:
        repo_or_dir: Hub repo id, local output folder, or a (model, processor) pair from `load`.
        images: a path / PIL image, or a list of them.
        top_k: how many labels per image (capped at the number of labels). A multi-label model
            (``problem_type: multi_label_classification``) instead returns *every* label whose sigmoid
            score is at least ``threshold`` (possibly none), best first.
        threshold: multi-label only; default: the model's ``multi_label_threshold`` (config.json), else 0.5.
        progress: a progress bar over more than 4 batches of images (tqdm; also off with TQDM_DISABLE=1).
            Images are decoded a batch at a time, so memory does not grow with their number.

    Example:
        >>> predict("me/fashion-lite0", ["shoe.png"], top_k=1)  # doctest: +SKIP
        [[{'label': 'Sneaker', 'score': 0.93}]]
    """
    import torch

    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise DataError(f"top_k: got {top_k!r}; expected a positive integer")
    model, processor = repo_or_dir if isinstance(repo_or_dir, tuple) else load(repo_or_dir, revision=revision)
    items = _image_items(images)
    id2label = model.config.id2label
    k = min(top_k, len(id2label))
    multi = getattr(model.config, "problem_type", None) == "multi_label_classification" or model.config.num_labels == 1
    if threshold is not None and not multi:
        raise DataError(f"threshold: got {threshold!r}, but this model is single-label (softmax over its labels); "
                        "a threshold applies to multi-label models only: use top_k to choose how many labels to show")
    cut = _threshold(model.config, threshold) if multi else None
    results: list[list[dict[str, Any]]] = []
    device = next(model.parameters()).device
    from tqdm.auto import tqdm

    starts = range(0, len(items), PREDICT_BATCH)
    quiet = {"disable": True} if not progress or len(starts) <= 4 else {}  # never disable=False: TQDM_DISABLE=1 wins
    for start in tqdm(starts, desc="predict", unit="batch", leave=False, **quiet):
        opened = [_open_image(i, items[i]) for i in range(start, min(start + PREDICT_BATCH, len(items)))]
        batch = processor(images=opened, return_tensors="pt")
        pixel_values = batch["pixel_values"].to(device=device, dtype=next(model.parameters()).dtype)
        with torch.no_grad():
            logits = model(pixel_values=pixel_values).logits.float()
        scores = logits.sigmoid() if multi else logits.softmax(-1)
        values, indices = scores.topk(scores.shape[-1] if cut is not None else k, dim=-1)
        for row_v, row_i in zip(values.tolist(), indices.tolist(), strict=True):
            results.append([{"label": id2label[i], "score": v} for v, i in zip(row_v, row_i, strict=True)
                            if cut is None or v >= cut])
    return results


def _threshold(config: Any, threshold: float | None) -> float:
    """A multi-label model's decision threshold: the caller's, else its config's, else 0.5."""
    value = threshold if threshold is not None else getattr(config, "multi_label_threshold", 0.5)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise DataError(f"threshold: got {value!r}; give a probability between 0 and 1 (exclusive), e.g. 0.5")
    return float(value)
