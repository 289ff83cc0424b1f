"""A local Hugging Face Hub-compatible HTTP server for the tests (standard library only).

The unmodified huggingface_hub / transformers / datasets / timm clients talk to it when
`HF_ENDPOINT` points at it (set before they are imported). It speaks the subset of the Hub API those
clients use: accounts (whoami), repos (create/delete/info/settings), listings (tree, paths-info, refs,
commits), downloads (`resolve` with HEAD, ETag, Range), uploads (preupload, LFS "basic" batch transfer,
ndjson commits with a stale-parent check, pull requests), branches and tags, and `validate-yaml`.

Xet: with `HF_HUB_DISABLE_XET` unset and hf_xet installed, the client uploads "lfs" files through Xet
instead of the LFS batch API. The Hub side lives here (`xet-write-token` / `xet-read-token`, and the
`X-Xet-Hash` + `Link: <...xet-read-token...>; rel="xet-auth"` headers / `xetHash` tree field that mark a
Xet-backed file); the CAS service itself is helpers.xet_cas, served under `/xet-cas` (its module
docstring lists what the client calls). A file the CAS registered becomes an ordinary blob here, so a
commit's `lfsFile` (sha256) is accepted and every download path serves it.

Storage: blobs are content-addressed by sha256 on disk; each repo keeps branches, tags, pull-request
refs and commits in memory, every commit holding its full tree. Errors carry `X-Error-Code`
(`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) because the client maps errors by that header.

Fault injection (for reliability tests): `server.faults.add(method, path_regex, status=503,
retry_after=1, times=1)` answers matching requests with that status, or `drop=True` closes the
connection without an answer; `server.requests` records every request (method, path, user; never the
token). For the reliability tests a fault can also let the request take effect and then drop the answer
(`drop_after=True`: "the commit landed but the client never heard"), rewrite the request body first
(`mutate=callable`: e.g. lose a file from a commit), or hold matching requests until `barrier=N` of them
are waiting (two racing pushes that read the same parent commit).

Example:
    >>> server = HubServer(tokens={"hf_secret": "alice"}).start()
    >>> # os.environ["HF_ENDPOINT"] = server.url  (before importing huggingface_hub)
    >>> server.stop()
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from helpers.xet_cas import XetCAS

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
LFS_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".parquet", ".arrow",
    ".png", ".jpg", ".jpeg", ".gif", ".webp", ".zip", ".gz", ".tar", ".npy", ".npz", ".pkl", ".model",
)
LFS_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file with this content (what the Hub calls a regular file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that git stores for an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class HubHTTPError(Exception):
    """An error answer: status, message, and the X-Error-Code the client maps to an exception."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass
class FileEntry:
    """One file of a commit's tree."""

    sha256: str
    size: int
    lfs: bool
    oid: str = ""  # git object id: of the pointer for LFS files, of the content otherwise
    xet_hash: str | None = None  # the Xet file hash when the content came through the Xet CAS

    def __post_init__(self) -> None:
        if not self.oid and self.lfs:
            self.oid = git_blob_sha1(lfs_pointer(self.sha256, self.size))


@dataclass
class Commit:
    """A commit: its full tree (path -> FileEntry), parent, message, author and date."""

    sha: str
    parent: str | None
    tree: dict[str, FileEntry]
    title: str
    message: str
    author: str
    date: str


@dataclass
class Repo:
    """One repository: type, id, visibility, refs and commits."""

    repo_type: str
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prs: dict[int, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    created: str = field(default_factory=_now)


@dataclass
class Fault:
    """An injected failure for requests whose method and path match."""

    method: str
    path_regex: str
    status: int = 503
    retry_after: float | None = None
    drop: bool = False
    times: int = 1
    hits: int = 0
    delay: float = 0.0  # seconds to sleep before answering (timeouts); with status=None the real answer follows
    truncate: bool = False  # send the real answer's headers but only half its body, then close
    drop_after: bool = False  # process the request normally, then close the connection instead of answering
    cut: bool = False  # read only half of the request body, then close the connection (dropped mid-upload)
    mutate: Any = None  # callable(bytes) -> bytes applied to the request body before it is processed
    barrier: threading.Barrier | None = None  # hold matching requests until this many are waiting
    headers: dict[str, str] | None = None  # extra headers of an injected status answer (e.g. RateLimit)

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and self.method in ("*", method) and re.search(self.path_regex, path) is not None


class FaultQueue:
    """Thread-safe list of injected faults; each fault fires `times` times, then is spent.

    Example:
        >>> faults = FaultQueue()
        >>> f = faults.add("POST", r"/commit/", status=500, times=2)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, method: str, path_regex: str, *, status: int | None = 503, retry_after: float | None = None,
            drop: bool = False, times: int = 1, delay: float = 0.0, truncate: bool = False,
            drop_after: bool = False, mutate: Any = None, barrier: int = 0, cut: bool = False,
            headers: dict[str, str] | None = None) -> Fault:
        """Make the next `times` requests matching method (or "*") and path regex misbehave.

        status: answer this HTTP status (with Retry-After if given); None = answer normally (after
        `delay`, or truncated with `truncate=True`). drop: close the connection without an answer.
        drop_after / mutate / barrier (use with status=None): see the module docstring; a barrier
        gives up after 60 s. cut: read half of the request body, then close (an upload cut mid-way).
        """
        fault = Fault(method.upper() if method != "*" else "*", path_regex, status, retry_after, drop, times,
                      delay=delay, truncate=truncate, drop_after=drop_after, mutate=mutate,
                      barrier=threading.Barrier(barrier, timeout=60) if barrier else None, cut=cut, headers=headers)
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, method: str, path: str) -> Fault | None:
        """The fault to apply to this request (consuming one of its uses), or None."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    fault.hits += 1
                    return fault
        return None

    def clear(self) -> None:
        """Remove every pending fault."""
        with self._lock:
            self._faults.clear()


@dataclass
class RequestRecord:
    """What the server saw of one request (the token itself is never recorded)."""

    method: str
    path: str
    user: str | None
    has_auth: bool
    status: int = 0
    range: str | None = None
    at: float = field(default_factory=time.monotonic)  # when the request arrived (time.monotonic())
    dropped: bool = False  # the answer was never sent (drop / drop_after faults)


class HubState:
    """Repos, blobs and accounts; all mutations go through one lock."""

    def __init__(self, root: Path, tokens: dict[str, str], read_only_tokens: dict[str, str]):
        self.root = root
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        self.tokens = dict(tokens)
        self.read_only_tokens = dict(read_only_tokens)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.xet_hashes: dict[str, str] = {}  # sha256 -> Xet file hash, for files uploaded through Xet
        self.lock = threading.RLock()
        self._counter = 0

    # ---- blobs
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha)
        if not path.exists():
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(data)
            tmp.replace(path)
        return sha

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        path = self.blob_path(sha256)
        return path.exists() and (size is None or path.stat().st_size == size)

    def add_xet_file(self, sha256: str, xet_hash: str, data: bytes) -> None:
        """Record a file the Xet CAS registered (its content becomes a blob; commits may use it)."""
        self.put_blob(data)
        with self.lock:
            self.xet_hashes[sha256] = xet_hash

    def read_blob(self, sha256: str) -> bytes:
        return self.blob_path(sha256).read_bytes()

    def entry(self, data: bytes, lfs: bool) -> FileEntry:
        return FileEntry(self.put_blob(data), len(data), lfs, "" if lfs else git_blob_sha1(data))

    # ---- repos
    def new_commit(self, repo: Repo, parent: str | None, tree: dict[str, FileEntry], title: str,
                   message: str, author: str) -> Commit:
        with self.lock:
            self._counter += 1
            seed = json.dumps([repo.repo_id, parent, sorted((p, e.sha256) for p, e in tree.items()), title,
                               self._counter, time.time()])
            sha = hashlib.sha1(seed.encode()).hexdigest()
            commit = Commit(sha, parent, tree, title, message, author, _now())
            repo.commits[sha] = commit
            return commit

    def get_repo(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and user != repo_id.split("/")[0]):
            raise HubHTTPError(404 if user else 401, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def resolve(self, repo: Repo, revision: str) -> Commit:
        rev = revision
        if rev in repo.branches:
            return repo.commits[repo.branches[rev]]
        if rev in repo.tags:
            return repo.commits[repo.tags[rev]]
        match = re.fullmatch(r"refs/pr/(\d+)", rev)
        if match and int(match.group(1)) in repo.prs:
            return repo.commits[repo.prs[int(match.group(1))]]
        if rev.startswith("refs/heads/") and rev[len("refs/heads/"):] in repo.branches:
            return repo.commits[repo.branches[rev[len("refs/heads/"):]]]
        if re.fullmatch(r"[0-9a-f]{40}", rev) and rev in repo.commits:
            return repo.commits[rev]
        raise HubHTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    # ---- test helpers
    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """Every file of a repo at a revision: path -> content (LFS files resolved to their content)."""
        with self.lock:
            repo = self.repos[(repo_type, repo_id)]
            commit = self.resolve(repo, revision)
            return {p: self.read_blob(e.sha256) for p, e in commit.tree.items()}

    def history(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> list[Commit]:
        """Commits reachable from a revision, newest first."""
        with self.lock:
            repo = self.repos[(repo_type, repo_id)]
            commit: Commit | None = self.resolve(repo, revision)
            out = []
            while commit is not None:
                out.append(commit)
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return out


def _parse_yaml_header(text: str) -> dict | None:
    """The YAML metadata block of a card, parsed if PyYAML is importable (else None)."""
    match = re.match(r"^\s*---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not match:
        return None
    try:
        import yaml  # optional: only for validate-yaml / cardData
    except ImportError:
        return None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def validate_card_metadata(content: str) -> list[str]:
    """A light version of the Hub's README metadata validation: returns error strings."""
    if not re.match(r"^\s*---\s*\n", content):
        return []
    if not re.match(r"^\s*---\s*\n(.*?)\n---\s*(\n|$)", content, re.S):
        return ["metadata block is not closed by '---'"]
    try:
        import yaml
    except ImportError:
        return []
    block = re.match(r"^\s*---\s*\n(.*?)\n---\s*(\n|$)", content, re.S).group(1)
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError as err:
        return [f"invalid YAML: {err}"]
    if data is None:
        return []
    if not isinstance(data, dict):
        return ["metadata must be a mapping"]
    errors = []
    for key in ("license", "library_name", "pipeline_tag"):
        if key in data and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string')
    for key in ("tags", "datasets", "metrics"):
        if key in data and not (isinstance(data[key], list) and all(isinstance(v, str) for v in data[key])):
            if not isinstance(data[key], str):
                errors.append(f'"{key}" must be a list of strings')
    if "base_model" in data and not isinstance(data["base_model"], (str, list)):
        errors.append('"base_model" must be a string or a list of strings')
    for model in data.get("model-index", []) or []:
        if not isinstance(model, dict) or "name" not in model:
            errors.append('"model-index[].name" is required')
            continue
        for result in model.get("results", []) or []:
            if not isinstance(result, dict) or "task" not in result or "dataset" not in result:
                errors.append('"model-index[].results[]" needs "task" and "dataset"')
                continue
            for metric in result.get("metrics", []) or []:
                if not isinstance(metric, dict) or "type" not in metric or "value" not in metric:
                    errors.append('"model-index[].results[].metrics[]" needs "type" and "value"')
    return errors


class HubServer:
    """A local Hub: `start()` serves on 127.0.0.1:`port` (0 = any free port) in a background thread.

    Args:
        port: TCP port (0 picks a free one).
        tokens: token -> user name (write access to that user's namespace).
        read_only_tokens: token -> user name (reads only; writes answer 403).
        root: folder for blobs (a temporary one by default, removed by `stop()`).

    Example:
        >>> server = HubServer(tokens={"hf_x": "tester"}).start()
        >>> server.url.startswith("http://127.0.0.1:")
        True
        >>> server.stop()
    """

    def __init__(self, port: int = 0, tokens: dict[str, str] | None = None,
                 read_only_tokens: dict[str, str] | None = None, root: str | Path | None = None):
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="tl_hub_local_hub_"))
        self.state = HubState(self.root, tokens or {}, read_only_tokens or {})
        self.cas = XetCAS(self.root / "xet", on_file=self.state.add_xet_file)
        self.faults = FaultQueue()
        self.requests: list[RequestRecord] = []
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:PORT (use it as HF_ENDPOINT)."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> HubServer:
        """Bind and serve in a daemon thread; returns self."""
        handler = type("BoundHandler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        self.cas.url = f"{self.url}/xet-cas"
        return self

    def stop(self) -> None:
        """Stop serving and remove the temporary storage."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # ---- raw state for assertions
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        """The stored Repo object (branches, tags, prs, commits, private)."""
        return self.state.repos[(repo_type, repo_id)]

    def has_repo(self, repo_id: str, repo_type: str = "model") -> bool:
        return (repo_type, repo_id) in self.state.repos

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """Path -> content of every file of a repo at a revision."""
        return self.state.files(repo_id, repo_type, revision)

    def history(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> list[Commit]:
        """Commits reachable from revision, newest first."""
        return self.state.history(repo_id, repo_type, revision)

    def tree(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, FileEntry]:
        """Path -> FileEntry (sha256, size, lfs) at a revision."""
        with self.state.lock:
            return dict(self.state.resolve(self.repo(repo_id, repo_type), revision).tree)


_CHUNK = 1 << 16


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer  # set on the bound subclass
    server_version = "tl-hub-local-hub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # quiet; requests are recorded in hub.requests

    # ---- plumbing
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                line = self.rfile.readline(65537).strip()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if getattr(self, "_drop_answer", False):  # the request took effect; the client never hears back
            self._record.status, self._record.dropped = status, True
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if not head and self.command != "HEAD" and body:
            if getattr(self, "_truncate", False):
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
            else:
                self.wfile.write(body)
        self._record.status = status

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _auth(self) -> tuple[str | None, bool]:
        """(user, can_write) from the Authorization header; a bad token answers 401."""
        header = self.headers.get("Authorization", "")
        if not header:
            return None, False
        token = header.split(" ", 1)[1].strip() if " " in header else header
        state = self.hub.state
        if token in state.tokens:
            return state.tokens[token], True
        if token in state.read_only_tokens:
            return state.read_only_tokens[token], False
        raise HubHTTPError(401, "Invalid credentials in Authorization header")

    def _dispatch(self, method: str) -> None:
        split = urllib.parse.urlsplit(self.path)
        self._record = RequestRecord(method, split.path, None, bool(self.headers.get("Authorization")),
                                     range=self.headers.get("Range"))
        self.hub.requests.append(self._record)
        fault = self.hub.faults.take(method, split.path)
        self._truncate = False
        self._drop_answer = fault is not None and fault.drop_after
        if fault is not None and fault.barrier is not None:
            try:
                fault.barrier.wait()
            except threading.BrokenBarrierError:
                pass
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.truncate:
            self._truncate = True
        elif fault is not None and fault.cut:
            self.rfile.read(int(self.headers.get("Content-Length") or 0) // 2)
            self._record.dropped = True
            self.close_connection = True
            self.connection.shutdown(2)
            return
        elif fault is not None and (fault.drop or fault.status is not None):
            if method in ("POST", "PUT"):
                self._read_body()
            if fault.drop:
                self._record.dropped = True
                self.close_connection = True
                self.connection.shutdown(2)
                return
            extra = {"X-Error-Message": f"injected fault {fault.status}"}
            if fault.retry_after is not None:
                extra["Retry-After"] = str(fault.retry_after)
            extra.update(fault.headers or {})
            self._json(fault.status, {"error": f"injected fault {fault.status}"}, extra)
            return
        try:
            body = self._read_body() if method in ("POST", "PUT", "DELETE", "PATCH") else b""
            if fault is not None and fault.mutate is not None:
                body = fault.mutate(body)
            user, can_write = self._auth() if not split.path.startswith("/xet-cas/") else (None, False)
            self._record.user = user
            segments = [urllib.parse.unquote(s) for s in split.path.split("/")[1:]]
            query = urllib.parse.parse_qs(split.query)
            self._route(method, segments, query, body, user, can_write)
        except HubHTTPError as err:
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._json(err.status, {"error": err.message}, headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # a server bug must answer 500, not hang the client
            self._json(500, {"error": f"{type(err).__name__}: {err}"}, {"X-Error-Message": str(err)})

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    # ---- routing
    def _route(self, method: str, seg: list[str], query: dict, body: bytes, user: str | None,
               can_write: bool) -> None:
        st = self.hub.state
        if seg[:2] == ["api", "whoami-v2"]:
            if user is None:
                raise HubHTTPError(401, "Invalid credentials in Authorization header")
            return self._json(200, {"type": "user", "name": user, "fullname": user, "orgs": [],
                                    "auth": {"type": "access_token",
                                             "accessToken": {"role": "write" if can_write else "read",
                                                             "displayName": "tests"}}})
        if seg[:2] == ["api", "validate-yaml"] and method == "POST":
            payload = json.loads(body or b"{}")
            errors = validate_card_metadata(payload.get("content", ""))
            if errors:
                return self._json(400, {"errors": errors, "warnings": [], "error": "; ".join(errors)},
                                  {"X-Error-Message": "; ".join(errors)})
            return self._json(200, {"errors": [], "warnings": []})
        if seg[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo(json.loads(body or b"{}"), user, can_write)
        if seg[:3] == ["api", "repos", "delete"] and method == "DELETE":
            return self._delete_repo(json.loads(body or b"{}"), user, can_write)
        if seg[:1] == ["api"] and len(seg) >= 4 and seg[1] in REPO_TYPES:
            repo_type = REPO_TYPES[seg[1]]
            repo_id = f"{seg[2]}/{seg[3]}"
            return self._api_repo(method, repo_type, repo_id, seg[4:], query, body, user, can_write)
        if seg and seg[0] == "xet-cas":
            return self._xet_cas(method, "/" + "/".join(seg[1:]), body)
        if seg and seg[0] in ("lfs-upload", "lfs-verify") and len(seg) == 2:
            return self._lfs_transfer(method, seg[0], seg[1], query, body)
        # /{p}{repo}.git/info/lfs/objects/batch and /{p}{repo}/resolve/{rev}/{path}
        repo_type = "model"
        rest = seg
        if rest and rest[0] in ("datasets", "spaces"):
            repo_type, rest = REPO_TYPES[rest[0]], rest[1:]
        if len(rest) >= 6 and rest[1].endswith(".git") and rest[2:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(repo_type, f"{rest[0]}/{rest[1][:-4]}", body, user, can_write)
        if len(rest) >= 5 and rest[2] == "resolve":
            repo = st.get_repo(repo_type, f"{rest[0]}/{rest[1]}", user)
            return self._resolve(method, repo, rest[3], "/".join(rest[4:]))
        raise HubHTTPError(404, f"no route for {method} /{'/'.join(seg)}")

    def _require_write(self, user: str | None, can_write: bool, namespace: str) -> None:
        if user is None:
            raise HubHTTPError(401, "You must be authenticated to write (no token sent)")
        if not can_write or namespace != user:
            raise HubHTTPError(403, f"You don't have the rights to write to namespace {namespace!r}")

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.hub.url}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    def _create_repo(self, payload: dict, user: str | None, can_write: bool) -> None:
        st = self.hub.state
        name = payload.get("name", "")
        namespace = payload.get("organization") or user
        if namespace is None:
            raise HubHTTPError(401, "You must be authenticated to create a repo")
        self._require_write(user, can_write, namespace)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name or ""):
            raise HubHTTPError(400, f"Invalid repo name {name!r}")
        repo_type = payload.get("type") or "model"
        private = bool(payload.get("private", payload.get("visibility") == "private"))
        repo_id = f"{namespace}/{name}"
        with st.lock:
            existing = st.repos.get((repo_type, repo_id))
            repo = existing or Repo(repo_type, repo_id, private)
            url = self._repo_url(repo)
            if existing is not None:
                return self._json(409, {"error": "You already created this repo", "url": url},
                                  {"X-Error-Message": "You already created this repo"})
            tree = {".gitattributes": st.entry(GITATTRIBUTES, lfs=False)}
            commit = st.new_commit(repo, None, tree, "initial commit", "", user)
            repo.branches["main"] = commit.sha
            st.repos[(repo_type, repo_id)] = repo
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self, payload: dict, user: str | None, can_write: bool) -> None:
        st = self.hub.state
        namespace = payload.get("organization") or user
        repo_id = f"{namespace}/{payload.get('name', '')}"
        repo_type = payload.get("type") or "model"
        with st.lock:
            st.get_repo(repo_type, repo_id, user)
            self._require_write(user, can_write, namespace or "")
            del st.repos[(repo_type, repo_id)]
        self._json(200, {})

    # ---- /api/{t}/{ns}/{name}/...
    def _api_repo(self, method: str, repo_type: str, repo_id: str, rest: list[str], query: dict, body: bytes,
                  user: str | None, can_write: bool) -> None:
        st = self.hub.state
        repo = st.get_repo(repo_type, repo_id, user)
        ns = repo_id.split("/")[0]
        if method == "GET" and (not rest or rest[0] == "revision"):
            revision = rest[1] if len(rest) > 1 else "main"
            return self._info(repo, revision, query)
        action = rest[0]
        if action == "tree" and method == "GET":
            return self._tree(repo, rest[1], "/".join(rest[2:]), query)
        if action == "paths-info" and method == "POST":
            return self._paths_info(repo, rest[1], body)
        if action == "refs" and method == "GET":
            return self._refs(repo)
        if action == "commits" and method == "GET":
            return self._commits(repo, rest[1] if len(rest) > 1 else "main")
        if action == "settings" and method == "PUT":
            self._require_write(user, can_write, ns)
            payload = json.loads(body or b"{}")
            if "private" in payload or "visibility" in payload:
                repo.private = bool(payload.get("private", payload.get("visibility") == "private"))
            return self._json(200, {})
        if action in ("xet-write-token", "xet-read-token") and method == "GET":
            return self._xet_token(repo, action, user, can_write)
        if action == "preupload" and method == "POST":
            self._require_write(user, can_write, ns)
            return self._preupload(repo, rest[1], body)
        if action == "commit" and method == "POST":
            self._require_write(user, can_write, ns)
            return self._commit(repo, rest[1], query, body, user)
        if action == "branch" and len(rest) >= 2:
            self._require_write(user, can_write, ns)
            return self._branch(method, repo, "/".join(rest[1:]), body)
        if action == "tag" and len(rest) >= 2:
            self._require_write(user, can_write, ns)
            return self._tag(method, repo, "/".join(rest[1:]), body)
        raise HubHTTPError(404, f"no route for {method} /api/{repo_type}s/{repo_id}/{'/'.join(rest)}")

    def _xet_token(self, repo: Repo, action: str, user: str | None, can_write: bool) -> None:
        """`xet-read-token` / `xet-write-token`: a CAS token for this repo (write needs write access), as JSON
        {accessToken, exp, casUrl} and as the X-Xet-* headers huggingface_hub reads."""
        scope = "write" if action == "xet-write-token" else "read"
        if scope == "write":
            self._require_write(user, can_write, repo.repo_id.split("/")[0])
        token, exp = self.hub.cas.issue_token(scope, f"{repo.repo_type}/{repo.repo_id}")
        cas_url = f"{self.hub.url}/xet-cas"
        self._json(200, {"accessToken": token, "exp": exp, "casUrl": cas_url},
                   {"X-Xet-Cas-Url": cas_url, "X-Xet-Access-Token": token, "X-Xet-Token-Expiration": str(exp)})

    def _xet_cas(self, method: str, path: str, body: bytes) -> None:
        """Hand a request under /xet-cas to the CAS service (helpers.xet_cas), which checks its own tokens."""
        status, headers, data = self.hub.cas.handle(method, path, self.headers, body)
        content_type = headers.pop("Content-Type", "application/json")
        if method == "HEAD":
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            headers.setdefault("Content-Length", "0")
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self._record.status = status
            return
        self._send(status, data, headers, content_type)

    def _sibling(self, path: str, entry: FileEntry) -> dict:
        out: dict[str, Any] = {"rfilename": path, "size": entry.size, "blobId": entry.oid}
        if entry.lfs:
            out["lfs"] = {"size": entry.size, "sha256": entry.sha256,
                          "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
        return out

    def _info(self, repo: Repo, revision: str, query: dict) -> None:
        st = self.hub.state
        with st.lock:
            commit = st.resolve(repo, revision)
            siblings = [self._sibling(p, e) for p, e in sorted(commit.tree.items())]
            card = commit.tree.get("README.md")
            card_data = _parse_yaml_header(st.read_blob(card.sha256).decode("utf-8", "replace")) if card else None
        tags = list((card_data or {}).get("tags") or []) if isinstance((card_data or {}).get("tags"), list) else []
        info = {"_id": repo.repo_id, "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0],
                "sha": commit.sha, "private": repo.private, "disabled": False, "gated": False,
                "lastModified": commit.date, "createdAt": repo.created, "siblings": siblings, "tags": tags,
                "downloads": 0, "likes": 0, "usedStorage": sum(e.size for e in commit.tree.values())}
        if card_data is not None:
            info["cardData"] = card_data
            if repo.repo_type == "model":
                for key in ("library_name", "pipeline_tag"):
                    if isinstance(card_data.get(key), str):
                        info[key] = card_data[key]
        self._json(200, info)

    def _tree_entry(self, repo: Repo, commit: Commit, path: str, entry: FileEntry, expand: bool) -> dict:
        out: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
        if entry.lfs:
            out["lfs"] = {"oid": entry.sha256, "size": entry.size,
                          "pointerSize": len(lfs_pointer(entry.sha256, entry.size))}
        if entry.xet_hash:
            out["xetHash"] = entry.xet_hash
        if expand:
            last = commit
            cur = commit
            while cur.parent:
                parent = repo.commits[cur.parent]
                prev = parent.tree.get(path)
                if prev is None or prev.sha256 != entry.sha256:
                    break
                last = cur = parent
            out["lastCommit"] = {"id": last.sha, "title": last.title, "date": last.date}
        return out

    def _dir_entry(self, commit: Commit, path: str) -> dict:
        inner = sorted((p, e.oid) for p, e in commit.tree.items() if p.startswith(path + "/"))
        return {"type": "directory", "oid": hashlib.sha1(json.dumps(inner).encode()).hexdigest(), "size": 0,
                "path": path}

    def _tree(self, repo: Repo, revision: str, path: str, query: dict) -> None:
        st = self.hub.state
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        expand = query.get("expand", ["false"])[0].lower() in ("1", "true")
        path = path.strip("/")
        with st.lock:
            commit = st.resolve(repo, revision)
            prefix = path + "/" if path else ""
            files = {p: e for p, e in commit.tree.items() if p.startswith(prefix)}
            if path and not files:
                raise HubHTTPError(404, f"{path} does not exist on {revision}", "EntryNotFound",
                                   {"X-Repo-Commit": commit.sha})
            out: list[dict] = []
            dirs: set[str] = set()
            for p, e in sorted(files.items()):
                rel = p[len(prefix):]
                parts = rel.split("/")
                for i in range(1, len(parts)):
                    if recursive or i == 1:
                        dirs.add(prefix + "/".join(parts[:i]))
                if recursive or len(parts) == 1:
                    out.append(self._tree_entry(repo, commit, p, e, expand))
            out = [self._dir_entry(commit, d) for d in sorted(dirs)] + out
        self._json(200, out)

    def _paths_info(self, repo: Repo, revision: str, body: bytes) -> None:
        st = self.hub.state
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            payload = json.loads(body or b"{}")
            paths = payload.get("paths", [])
            expand = bool(payload.get("expand"))
        else:
            form = urllib.parse.parse_qs(body.decode())
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[0].lower() in ("1", "true")
        with st.lock:
            commit = st.resolve(repo, revision)
            out = []
            for raw in paths:
                p = raw.strip("/")
                if p in commit.tree:
                    out.append(self._tree_entry(repo, commit, p, commit.tree[p], expand))
                elif any(k.startswith(p + "/") for k in commit.tree) or p == "":
                    out.append(self._dir_entry(commit, p))
        self._json(200, out)

    def _refs(self, repo: Repo) -> None:
        def ref(kind: str, name: str, sha: str) -> dict:
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}

        with self.hub.state.lock:
            self._json(200, {
                "branches": [ref("heads", n, s) for n, s in sorted(repo.branches.items())],
                "tags": [ref("tags", n, s) for n, s in sorted(repo.tags.items())],
                "converts": [],
                "pullRequests": [{"name": str(n), "ref": f"refs/pr/{n}", "targetCommit": s}
                                 for n, s in sorted(repo.prs.items())],
            })

    def _commits(self, repo: Repo, revision: str) -> None:
        st = self.hub.state
        with st.lock:
            commit: Commit | None = st.resolve(repo, revision)
            out = []
            while commit is not None:
                out.append({"id": commit.sha, "title": commit.title, "message": commit.message,
                            "authors": [{"user": commit.author or "unknown", "avatar": None}],
                            "date": commit.date})
                commit = repo.commits.get(commit.parent) if commit.parent else None
        self._json(200, out)

    def _branch(self, method: str, repo: Repo, name: str, body: bytes) -> None:
        st = self.hub.state
        with st.lock:
            if method == "POST":
                payload = json.loads(body or b"{}")
                if name in repo.branches:
                    raise HubHTTPError(409, f"Branch {name} already exists")
                start = st.resolve(repo, payload.get("startingPoint") or "main")
                repo.branches[name] = start.sha
                return self._json(200, {})
            if method == "DELETE":
                if name not in repo.branches:
                    raise HubHTTPError(404, f"Branch {name} not found", "RevisionNotFound")
                del repo.branches[name]
                return self._json(200, {})
        raise HubHTTPError(405, "method not allowed")

    def _tag(self, method: str, repo: Repo, name: str, body: bytes) -> None:
        st = self.hub.state
        with st.lock:
            if method == "POST":  # POST /tag/{revision} {tag, message}
                payload = json.loads(body or b"{}")
                tag = payload.get("tag", "")
                if tag in repo.tags:
                    raise HubHTTPError(409, f"Tag {tag} already exists")
                repo.tags[tag] = st.resolve(repo, name).sha
                return self._json(200, {})
            if method == "DELETE":
                if name not in repo.tags:
                    raise HubHTTPError(404, f"Tag {name} not found", "RevisionNotFound")
                del repo.tags[name]
                return self._json(200, {})
        raise HubHTTPError(405, "method not allowed")

    # ---- downloads
    def _resolve(self, method: str, repo: Repo, revision: str, path: str) -> None:
        st = self.hub.state
        with st.lock:
            commit = st.resolve(repo, revision)
            entry = commit.tree.get(path)
        if entry is None:
            raise HubHTTPError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        etag = entry.sha256 if entry.lfs else entry.oid
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(entry.size)
        if entry.xet_hash:
            refresh = f"{self.hub.url}/api/{repo.repo_type}s/{repo.repo_id}/xet-read-token/{commit.sha}"
            headers["X-Xet-Hash"] = entry.xet_hash
            headers["Link"] = f'<{refresh}>; rel="xet-auth"'
        data = st.read_blob(entry.sha256) if method == "GET" else b""
        status = 200
        range_header = self.headers.get("Range")
        if range_header and method in ("GET", "HEAD"):
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
            if match:
                start_s, end_s = match.groups()
                size = entry.size
                if start_s == "":
                    start, end = max(0, size - int(end_s)), size - 1
                else:
                    start, end = int(start_s), min(int(end_s) if end_s else size - 1, size - 1)
                if start >= size and size > 0:
                    headers["Content-Range"] = f"bytes */{size}"
                    return self._send(416, b"", headers, "application/octet-stream", head=method == "HEAD")
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                if method == "GET":
                    data = data[start:end + 1]
                else:
                    headers["X-Range-Length"] = str(end - start + 1)
        if method == "HEAD":
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            for key, value in headers.items():
                self.send_header(key, value)
            length = entry.size if status == 200 else int(headers.pop("X-Range-Length", 0))
            self.send_header("Content-Length", str(length))
            self.end_headers()
            self._record.status = status
            return
        self._send(status, data, headers, "application/octet-stream")

    # ---- uploads
    def _should_lfs(self, path: str, size: int, sample: bytes) -> bool:
        return path.lower().endswith(LFS_SUFFIXES) or size > LFS_THRESHOLD or b"\0" in sample

    def _preupload(self, repo: Repo, revision: str, body: bytes) -> None:
        st = self.hub.state
        payload = json.loads(body or b"{}")
        with st.lock:
            try:
                commit = st.resolve(repo, revision)
            except HubHTTPError:
                commit = st.resolve(repo, "main")
            out = []
            for item in payload.get("files", []):
                sample = base64.b64decode(item.get("sample", ""))
                lfs = self._should_lfs(item["path"], int(item.get("size", 0)), sample)
                existing = commit.tree.get(item["path"])
                oid = None
                if existing is not None and existing.lfs == lfs:
                    oid = existing.sha256 if lfs else existing.oid
                out.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                            "shouldIgnore": False, "oid": oid})
        self._json(200, {"files": out, "commitOid": commit.sha})

    def _lfs_batch(self, repo_type: str, repo_id: str, body: bytes, user: str | None, can_write: bool) -> None:
        st = self.hub.state
        repo = st.get_repo(repo_type, repo_id, user)
        payload = json.loads(body or b"{}")
        operation = payload.get("operation", "upload")
        if operation == "upload":
            self._require_write(user, can_write, repo_id.split("/")[0])
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if operation == "upload" and not st.has_blob(oid, size):
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.url}/lfs-upload/{oid}?size={size}", "expires_in": 3600},
                    "verify": {"href": f"{self.hub.url}/lfs-verify/{oid}", "expires_in": 3600},
                }
            elif operation == "download":
                entry["actions"] = {"download": {"href": f"{self.hub.url}/lfs-upload/{oid}"}}
            objects.append(entry)
        del repo
        self._send(200, json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _lfs_transfer(self, method: str, kind: str, oid: str, query: dict, body: bytes) -> None:
        st = self.hub.state
        if kind == "lfs-upload" and method == "PUT":
            if hashlib.sha256(body).hexdigest() != oid:
                raise HubHTTPError(400, f"uploaded content does not match oid {oid}")
            st.put_blob(body)
            return self._json(200, {})
        if kind == "lfs-upload" and method == "GET":
            if not st.has_blob(oid):
                raise HubHTTPError(404, "object not found")
            return self._send(200, st.read_blob(oid), content_type="application/octet-stream")
        if kind == "lfs-verify" and method == "POST":
            payload = json.loads(body or b"{}")
            if not st.has_blob(oid, int(payload.get("size", -1))):
                raise HubHTTPError(422, f"object {oid} was not uploaded")
            return self._json(200, {"message": "verified"})
        raise HubHTTPError(405, "method not allowed")

    def _commit(self, repo: Repo, revision: str, query: dict, body: bytes, user: str | None) -> None:
        st = self.hub.state
        create_pr = query.get("create_pr", ["0"])[0].lower() in ("1", "true")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next((x["value"] for x in lines if x.get("key") == "header"), {})
        with st.lock:
            base = st.resolve(repo, revision)
            parent_commit = header.get("parentCommit")
            if parent_commit and parent_commit != base.sha:
                raise HubHTTPError(412, f"A commit has happened since. Please refresh and try again. "
                                   f"(parentCommit {parent_commit} is not the head {base.sha} of {revision})")
            tree = dict(base.tree)
            for item in lines:
                key, value = item.get("key"), item.get("value", {})
                if key == "file":
                    content = value.get("content", "")
                    data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                    tree[value["path"]] = st.entry(data, lfs=False)
                elif key == "lfsFile":
                    if not st.has_blob(value["oid"], int(value["size"])):
                        raise HubHTTPError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                    tree[value["path"]] = FileEntry(value["oid"], int(value["size"]), True,
                                                    xet_hash=st.xet_hashes.get(value["oid"]))
                elif key == "deletedFile":
                    if value["path"] not in tree:
                        raise HubHTTPError(404, f"cannot delete {value['path']}: not found", "EntryNotFound")
                    del tree[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for p in [p for p in tree if p.startswith(prefix)]:
                        del tree[p]
            commit = st.new_commit(repo, base.sha, tree, header.get("summary", "commit"),
                                   header.get("description", ""), user or "")
            answer: dict[str, Any] = {"commitOid": commit.sha, "success": True,
                                      "commitUrl": f"{self._repo_url(repo)}/commit/{commit.sha}"}
            if create_pr:
                number = max(repo.prs, default=0) + 1
                repo.prs[number] = commit.sha
                answer["pullRequestUrl"] = f"{self._repo_url(repo)}/discussions/{number}"
            else:
                if revision in repo.branches:
                    repo.branches[revision] = commit.sha
                elif re.fullmatch(r"refs/pr/\d+", revision) and int(revision.split("/")[-1]) in repo.prs:
                    repo.prs[int(revision.split("/")[-1])] = commit.sha
                else:
                    raise HubHTTPError(400, f"Invalid rev id: {revision} is not a branch", "RevisionNotFound")
        self._json(200, answer)
