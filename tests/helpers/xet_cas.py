"""A small Xet CAS (content-addressed storage) service for the local test Hub (standard library only).

The local Hub (helpers.hub_server) serves it under `{hub url}/xet-cas`; the Hub's
`/api/{type}s/{repo}/xet-{read,write}-token/{rev}` endpoints hand out its tokens. It speaks what the
installed clients (huggingface_hub 2.4.0 + hf_xet 1.8.0) were seen to ask for, following the public
Xet protocol spec (huggingface/hub-docs, docs/xet: api, xorb, shard, download-protocol).

What the client calls (observed by logging every request of a real upload and download):

Upload (`HfApi.upload_folder` / `create_commit`, files the preupload answer marks "lfs"):
  1. Hub `GET /api/models/{repo}/xet-write-token/{rev}` (Hub token) -> JSON {accessToken, exp, casUrl}
     and the same as headers X-Xet-Access-Token / X-Xet-Token-Expiration / X-Xet-Cas-Url.
  2. CAS `GET /v1/chunks/default/{chunk hash}` (global dedup query) -> 404 here (nothing to share).
  3. CAS `POST /v1/xorb-grants/default/{xorb hash}` (JSON body): a newer "upload grant" flow; this
     service answers 404, and the client falls back to the direct upload:
  4. CAS `POST /v1/xorbs/default/{xorb hash}`, body = serialized xorb -> {"was_inserted": bool}.
  5. CAS `POST /v2/shards` (streaming answer, ndjson events) or `/v1/shards`, body = shard without
     footer -> {"result": 1}. A shard lists file reconstructions (terms over xorb chunk ranges, one
     verification hash per term, the file's sha256 in the metadata extension) and the new xorbs.
  6. Hub `POST /api/models/{repo}/commit/{rev}`: the file appears as an ordinary `lfsFile` (sha256 oid);
     the Hub accepts it because the shard made that sha256 known.
Download (`hf_hub_download` / `from_pretrained`):
  1. Hub `HEAD /{repo}/resolve/{rev}/{path}` -> `X-Xet-Hash: {file hash}` and
     `Link: <{hub}/api/models/{repo}/xet-read-token/{commit}>; rel="xet-auth"` mark a Xet-backed file
     (tree / paths-info entries carry `xetHash` as well).
  2. Hub `GET .../xet-read-token/{commit}` -> token + CAS url (as for writes).
  3. CAS `GET /v2/reconstructions/{file hash}` (falls back to `/v1/...` on 404) -> terms + where to
     fetch each xorb's byte ranges.
  4. `GET {url from step 3}` with `Range: bytes=a-b[,c-d]` -> the serialized xorb bytes (206).

Validation: xorb bodies must parse (chunk headers; LZ4 *frame* / byte-grouped LZ4 payloads that decompress
to the announced sizes). Shards must parse; each xorb a shard declares must be stored, with the chunk
offsets / sizes the shard lists, its hash must be the Merkle root of the declared chunk hashes, and its
smallest chunk must hash (blake3, helpers.xet_hashing) to the declared value; each file's terms must
reference known chunk ranges with matching `unpacked_segment_bytes` and verification hashes, its Xet
hash must be the file hash of its chunks, and the reassembled bytes must match the sha256 the shard
declares (uploads without one are refused: the Hub's git side needs it). Not checked: the hashes of the
other chunks' bytes (pure-Python blake3 takes ~0.3 s per 64 KiB; the sha256 covers the content anyway)
and a xorb's hash at its own upload (only the shard carries chunk hashes). Tokens are checked (known,
unexpired, write scope for uploads; not which repo they were issued for).

Storage under `root`: xorbs/{hash} (as uploaded), shards/{sha256 of body}, chunk_hashes/{xorb}.json
(declared by a shard and checked), files/{file hash}.json (reconstruction terms, size, sha256).
`on_file(sha256, file_hash, data)` tells the Hub about each file a shard registers. `uploads` counts
accepted xorbs, shards and files, for tests.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from helpers.xet_hashing import aggregated_hash, chunk_hash, file_hash, verification_hash

SHARD_HEADER_SIZE = 48
ENTRY = 48
BOOKEND = b"\xff" * 32
FLAG_VERIFICATION = 1 << 31
FLAG_METADATA_EXT = 1 << 30
_HASH_RE = re.compile(r"[0-9a-f]{64}")


class CASError(Exception):
    """An error answer of the CAS service: HTTP status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def hash_to_hex(raw: bytes) -> str:
    """The string form of a 32-byte Xet hash: each 8-byte group read as a little-endian u64."""
    return "".join(f"{v:016x}" for v in struct.unpack("<4Q", raw))


def hex_to_hash(text: str) -> bytes:
    """The 32 raw bytes of a Xet hash given in its string form (inverse of hash_to_hex)."""
    return struct.pack("<4Q", *(int(text[i:i + 16], 16) for i in range(0, 64, 16)))


def _extended_length(src: bytes, i: int, length: int) -> tuple[int, int]:
    """An LZ4 literal or match length: a nibble of 15 is continued by bytes until one is not 255."""
    if length == 15:
        while True:
            b = src[i]
            i += 1
            length += b
            if b != 255:
                break
    return length, i


def _lz4_block_into(src: bytes, out: bytearray) -> None:
    """Decode one raw LZ4 block, appending to `out` (matches may reach into earlier output)."""
    i, n = 0, len(src)
    while i < n:
        token = src[i]
        i += 1
        lit, i = _extended_length(src, i, token >> 4)
        out += src[i:i + lit]
        i += lit
        if i >= n:
            break
        offset = src[i] | (src[i + 1] << 8)
        i += 2
        if offset == 0 or offset > len(out):
            raise CASError(400, "corrupt LZ4 data: bad match offset")
        mlen, i = _extended_length(src, i, token & 15)
        mlen += 4
        start = len(out) - offset
        if offset >= mlen:
            out += out[start:start + mlen]
        else:
            pattern = bytes(out[start:])
            out += (pattern * (mlen // offset + 1))[:mlen]


def lz4_frame_decompress(src: bytes, size: int) -> bytes:
    """Decompress LZ4 frame-format data (what hf_xet writes for chunk compression 1 and 2).

    Frame: magic 04 22 4D 18, FLG, BD, [content size], [dict id], header checksum, then blocks
    (u32 size, high bit = stored uncompressed, [u32 block checksum]) up to a zero end mark. Checksums
    (xxhash32) are skipped, not verified. Raises CASError (400) if the output is not `size` bytes.
    """
    if src[:4] != b"\x04\x22\x4d\x18" or len(src) < 7:
        raise CASError(400, "LZ4 chunk is not an LZ4 frame")
    flg = src[4]
    pos = 6 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0) + 1
    out = bytearray()
    try:
        while True:
            block_size = int.from_bytes(src[pos:pos + 4], "little")
            pos += 4
            if block_size == 0:
                break
            stored, block_size = block_size & 0x80000000, block_size & 0x7FFFFFFF
            block = src[pos:pos + block_size]
            if len(block) != block_size:
                raise CASError(400, "truncated LZ4 frame")
            if stored:
                out += block
            else:
                _lz4_block_into(block, out)
            pos += block_size + (4 if flg & 0x10 else 0)
    except IndexError as err:
        raise CASError(400, "truncated LZ4 data") from err
    if len(out) != size:
        raise CASError(400, f"LZ4 data decompressed to {len(out)} bytes, header says {size}")
    return bytes(out)


def bg4_ungroup(data: bytes) -> bytes:
    """Undo the 4-byte byte grouping (ByteGrouping4LZ4): groups 1..4 back to interleaved bytes."""
    n = len(data)
    sizes = [n // 4 + (1 if k < n % 4 else 0) for k in range(4)]
    out = bytearray(n)
    pos = 0
    for k in range(4):
        out[k::4] = data[pos:pos + sizes[k]]
        pos += sizes[k]
    return bytes(out)


@dataclass
class XorbChunk:
    """One chunk of a xorb: where its serialized form sits, and its uncompressed length."""

    start: int  # byte offset of the chunk header in the xorb
    end: int  # byte offset just past the compressed data
    size: int  # uncompressed length


def parse_xorb(body: bytes) -> list[XorbChunk]:
    """The chunks of a serialized xorb; raises CASError (400) on a malformed one.

    A serialized xorb may end with a footer (xorb metadata) that starts with the bytes "XETBLOB";
    parsing stops there.
    """
    chunks: list[XorbChunk] = []
    pos = 0
    while pos < len(body):
        if body[pos:pos + 7] == b"XETBLOB":
            break
        if pos + 8 > len(body):
            raise CASError(400, "truncated xorb chunk header")
        version, csize, scheme, usize = (body[pos], int.from_bytes(body[pos + 1:pos + 4], "little"),
                                         body[pos + 4], int.from_bytes(body[pos + 5:pos + 8], "little"))
        end = pos + 8 + csize
        if version != 0 or scheme not in (0, 1, 2) or end > len(body) or usize > 1 << 20:
            raise CASError(400, f"malformed xorb chunk header at byte {pos}")
        chunks.append(XorbChunk(pos, end, usize))
        pos = end
    if not chunks:
        raise CASError(400, "empty xorb")
    return chunks


def chunk_data(body: bytes, chunk: XorbChunk) -> bytes:
    """The uncompressed data of one xorb chunk."""
    payload = body[chunk.start + 8:chunk.end]
    scheme = body[chunk.start + 4]
    if scheme == 0:
        data = payload
    elif scheme == 1:
        data = lz4_frame_decompress(payload, chunk.size)
    else:
        data = bg4_ungroup(lz4_frame_decompress(payload, chunk.size))
    if len(data) != chunk.size:
        raise CASError(400, "xorb chunk has the wrong uncompressed size")
    return data


@dataclass
class Term:
    """One reconstruction term: chunks [start, end) of a xorb, `size` bytes once unpacked."""

    xorb: str
    start: int
    end: int
    size: int


@dataclass
class ShardFile:
    """One file a shard registers: its Xet hash, terms, and sha256 (None when the shard omits it)."""

    file_hash: str
    terms: list[Term] = field(default_factory=list)
    sha256: str | None = None
    verifications: list[bytes] = field(default_factory=list)  # one raw hash per term, when present


@dataclass
class ShardXorb:
    """One xorb a shard declares: its hash and its chunks as (raw chunk hash, offset, size); the offset
    counts uncompressed bytes from the xorb's first chunk."""

    xorb: str
    chunks: list[tuple[bytes, int, int]] = field(default_factory=list)


def parse_shard(body: bytes) -> tuple[list[ShardFile], list[ShardXorb]]:
    """(files, declared xorbs) of an uploaded shard (header, file info section, CAS info section)."""
    if len(body) < SHARD_HEADER_SIZE + 2 * ENTRY:
        raise CASError(400, "shard too short")
    version = struct.unpack_from("<Q", body, 32)[0]
    if version != 2:
        raise CASError(400, f"unsupported shard header version {version}")
    pos, files = SHARD_HEADER_SIZE, []
    while True:
        if pos + ENTRY > len(body):
            raise CASError(400, "shard file info section has no bookend")
        raw_hash, flags, count = body[pos:pos + 32], *struct.unpack_from("<II", body, pos + 32)
        pos += ENTRY
        if raw_hash == BOOKEND:
            break
        record = ShardFile(hash_to_hex(raw_hash))
        for _ in range(count):
            xorb, _cas_flags, size, start, end = (hash_to_hex(body[pos:pos + 32]),
                                                   *struct.unpack_from("<IIII", body, pos + 32))
            record.terms.append(Term(xorb, start, end, size))
            pos += ENTRY
        if flags & FLAG_VERIFICATION:
            record.verifications = [body[pos + i * ENTRY:pos + i * ENTRY + 32] for i in range(count)]
            pos += count * ENTRY
        if flags & FLAG_METADATA_EXT:
            record.sha256 = hash_to_hex(body[pos:pos + 32])  # stored like a Xet hash (u64 groups)
            pos += ENTRY
        if pos > len(body):
            raise CASError(400, "truncated shard file info")
        files.append(record)
    xorbs = []
    while pos + ENTRY <= len(body):
        raw_hash = body[pos:pos + 32]
        count = struct.unpack_from("<I", body, pos + 36)[0]
        pos += ENTRY
        if raw_hash == BOOKEND:
            break
        declared = ShardXorb(hash_to_hex(raw_hash))
        for i in range(count):
            start, size = struct.unpack_from("<II", body, pos + i * ENTRY + 32)
            declared.chunks.append((body[pos + i * ENTRY:pos + i * ENTRY + 32], start, size))
        xorbs.append(declared)
        pos += count * ENTRY
    return files, xorbs


def _parse_ranges(header: str | None, size: int) -> list[tuple[int, int]] | None:
    """Inclusive byte ranges of a `Range: bytes=a-b[,c-d]` header, clamped to `size`; None if absent."""
    if not header:
        return None
    match = re.fullmatch(r"\s*bytes=(.+)", header)
    if not match:
        raise CASError(400, f"bad Range header {header!r}")
    out = []
    for part in match.group(1).split(","):
        start_s, _, end_s = part.strip().partition("-")
        if start_s == "":
            start, end = max(0, size - int(end_s)), size - 1
        else:
            start, end = int(start_s), min(int(end_s) if end_s else size - 1, size - 1)
        if start >= size or start > end:
            raise CASError(416, f"range {part} not satisfiable (size {size})")
        out.append((start, end))
    return out


class XetCAS:
    """The CAS service: tokens, xorb / shard uploads, reconstructions and xorb byte ranges.

    Example:
        >>> cas = XetCAS(Path(tempfile.mkdtemp()))           # doctest: +SKIP
        >>> cas.url = "http://127.0.0.1:8000/xet-cas"         # set by the Hub server when it starts
        >>> token, exp = cas.issue_token("write", "model/alice/demo")
    """

    def __init__(self, root: Path, on_file: Callable[[str, str, bytes], None] | None = None) -> None:
        self.root = root
        for sub in ("xorbs", "shards", "files", "chunk_hashes"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.url = ""
        self.on_file = on_file
        self.tokens: dict[str, tuple[str, str, int]] = {}
        self.uploads = {"xorbs": 0, "shards": 0, "files": 0}
        self.lock = threading.Lock()
        self._chunks: dict[str, list[XorbChunk]] = {}

    # ---- tokens
    def issue_token(self, scope: str, repo_key: str, ttl: int = 3600) -> tuple[str, int]:
        """A new CAS access token for `scope` ("read" / "write") and its expiry (unix seconds)."""
        token, exp = "xet_" + secrets.token_hex(16), int(time.time()) + ttl
        with self.lock:
            self.tokens[token] = (scope, repo_key, exp)
        return token, exp

    def _check_token(self, headers, scope: str) -> None:
        auth = headers.get("Authorization", "")
        token = auth.split(" ", 1)[1].strip() if " " in auth else auth
        known = self.tokens.get(token)
        if known is None or known[2] < time.time():
            raise CASError(401, "missing, unknown or expired Xet token")
        if scope == "write" and known[0] != "write":
            raise CASError(403, "this Xet token has read scope only")

    # ---- dispatch
    def handle(self, method: str, path: str, headers, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Answer one request under the CAS root: (status, headers, body); errors answer JSON."""
        try:
            return self._route(method, [urllib.parse.unquote(s) for s in path.strip("/").split("/")],
                               headers, body)
        except CASError as err:
            return err.status, {}, json.dumps({"error": err.message}).encode()

    def _route(self, method: str, seg: list[str], headers, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if len(seg) == 3 and seg[0] == "xorb-data" and method in ("GET", "HEAD"):
            return self._xorb_data(self._hash(seg[2]), headers.get("Range"))
        if len(seg) < 2 or seg[0] not in ("v1", "v2"):
            raise CASError(404, f"no CAS route for {method} /{'/'.join(seg)}")
        version, kind, rest = seg[0], seg[1], seg[2:]
        if kind == "xorbs" and len(rest) == 2 and method == "POST":
            self._check_token(headers, "write")
            return self._put_xorb(self._hash(rest[1]), body)
        if kind == "xorbs" and len(rest) == 2 and method == "HEAD":
            self._check_token(headers, "read")
            path = self.root / "xorbs" / self._hash(rest[1])
            if not path.exists():
                raise CASError(404, "xorb not found")
            return 200, {"Content-Length": str(path.stat().st_size)}, b""
        if kind == "shards" and not rest and method == "POST":
            self._check_token(headers, "write")
            return self._put_shard(body, streaming=version == "v2")
        if kind == "reconstructions" and len(rest) == 1 and method == "GET":
            self._check_token(headers, "read")
            return self._reconstruction(self._hash(rest[0]), headers.get("Range"), v2=version == "v2")
        if kind == "files" and len(rest) == 1 and method == "HEAD":
            self._check_token(headers, "read")
            return 200, {"Content-Length": str(self._file(self._hash(rest[0]))["size"])}, b""
        if kind == "chunks" and method == "GET":
            self._check_token(headers, "read")
            raise CASError(404, "chunk not tracked by global deduplication")
        raise CASError(404, f"no CAS route for {method} /{'/'.join(seg)}")

    @staticmethod
    def _hash(text: str) -> str:
        if not _HASH_RE.fullmatch(text):
            raise CASError(400, f"malformed hash {text!r}")
        return text

    # ---- uploads
    def _put_xorb(self, xorb_hash: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        chunks = parse_xorb(body)
        for chunk in chunks:
            chunk_data(body, chunk)  # every chunk must decompress to its announced size
        path = self.root / "xorbs" / xorb_hash
        inserted = not path.exists()
        if inserted:
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(body)
            tmp.replace(path)
        with self.lock:
            self._chunks[xorb_hash] = chunks
            self.uploads["xorbs"] += 1
        return 200, {}, json.dumps({"was_inserted": inserted}).encode()

    def _xorb(self, xorb_hash: str) -> tuple[bytes, list[XorbChunk]]:
        path = self.root / "xorbs" / xorb_hash
        if not path.exists():
            raise CASError(400, f"xorb {xorb_hash} was never uploaded")
        body = path.read_bytes()
        with self.lock:
            chunks = self._chunks.get(xorb_hash)
        return body, chunks if chunks is not None else parse_xorb(body)

    def _assemble(self, record: ShardFile) -> bytes:
        """The content of a file a shard describes, from stored xorbs; raises CASError if inconsistent."""
        parts = []
        for term in record.terms:
            body, chunks = self._xorb(term.xorb)
            if not 0 <= term.start < term.end <= len(chunks):
                raise CASError(400, f"term chunks [{term.start}, {term.end}) outside xorb {term.xorb}")
            data = b"".join(chunk_data(body, c) for c in chunks[term.start:term.end])
            if len(data) != term.size:
                raise CASError(400, f"term of xorb {term.xorb} unpacks to {len(data)} bytes, not {term.size}")
            parts.append(data)
        return b"".join(parts)

    def _check_declared_xorb(self, declared: ShardXorb) -> list[tuple[bytes, int]]:
        """A xorb a shard declares must be stored, its chunk list must match the stored bytes, its hash
        must be the Merkle root of the declared chunk hashes, and its smallest chunk must hash to what the
        shard says (one chunk only: pure-Python blake3 is slow). Returns its (chunk hash, size) list."""
        body, chunks = self._xorb(declared.xorb)
        layout = [(start, size) for _raw, start, size in declared.chunks]
        offsets = list(itertools.accumulate((c.size for c in chunks[:-1]), initial=0))  # uncompressed
        if layout != [(offset, c.size) for offset, c in zip(offsets, chunks)]:
            raise CASError(400, f"shard's chunk list for xorb {declared.xorb} does not match the uploaded xorb")
        entries = [(raw, size) for raw, _start, size in declared.chunks]
        if hash_to_hex(aggregated_hash(entries)) != declared.xorb:
            raise CASError(400, f"xorb {declared.xorb}: not the Merkle root of the chunk hashes declared")
        smallest = min(range(len(chunks)), key=lambda i: chunks[i].size)
        if chunk_hash(chunk_data(body, chunks[smallest])) != entries[smallest][0]:
            raise CASError(400, f"xorb {declared.xorb}: chunk {smallest} does not match its declared hash")
        path = self.root / "chunk_hashes" / f"{declared.xorb}.json"
        path.write_text(json.dumps([[raw.hex(), size] for raw, size in entries]))
        return entries

    def _chunk_hashes(self, xorb: str, known: dict[str, list[tuple[bytes, int]]]) -> list[tuple[bytes, int]]:
        if xorb in known:
            return known[xorb]
        path = self.root / "chunk_hashes" / f"{xorb}.json"
        if not path.exists():
            raise CASError(400, f"xorb {xorb} was never declared in a shard (its chunk hashes are unknown)")
        return [(bytes.fromhex(raw), size) for raw, size in json.loads(path.read_text())]

    def _check_file_hashes(self, record: ShardFile, known: dict[str, list[tuple[bytes, int]]]) -> None:
        """The file hash must be the Xet file hash of its chunks; each term's verification hash must match."""
        if record.verifications and len(record.verifications) != len(record.terms):
            raise CASError(400, f"file {record.file_hash}: verification entries do not match its terms")
        entries: list[tuple[bytes, int]] = []
        for index, term in enumerate(record.terms):
            hashes = self._chunk_hashes(term.xorb, known)
            if not 0 <= term.start < term.end <= len(hashes):
                raise CASError(400, f"term chunks [{term.start}, {term.end}) outside xorb {term.xorb}")
            part = hashes[term.start:term.end]
            if record.verifications and verification_hash([h for h, _ in part]) != record.verifications[index]:
                raise CASError(400, f"file {record.file_hash}: wrong verification hash for term {index}")
            entries.extend(part)
        if hash_to_hex(file_hash(entries)) != record.file_hash:
            raise CASError(400, f"file {record.file_hash}: not the Xet hash of its chunks")

    def _put_shard(self, body: bytes, streaming: bool) -> tuple[int, dict[str, str], bytes]:
        files, xorbs = parse_shard(body)
        known = {declared.xorb: self._check_declared_xorb(declared) for declared in xorbs}
        for record in files:
            self._check_file_hashes(record, known)
        assembled = []
        for record in files:
            data = self._assemble(record)
            if record.sha256 is None:
                raise CASError(400, f"file {record.file_hash}: shard has no sha256 (metadata extension)")
            if hashlib.sha256(data).hexdigest() != record.sha256:
                raise CASError(400, f"file {record.file_hash}: content does not match its sha256")
            assembled.append((record, data))
        shard_path = self.root / "shards" / hashlib.sha256(body).hexdigest()
        existed = shard_path.exists()
        shard_path.write_bytes(body)
        for record, data in assembled:
            info = {"size": len(data), "sha256": record.sha256,
                    "terms": [[t.xorb, t.start, t.end, t.size] for t in record.terms]}
            (self.root / "files" / f"{record.file_hash}.json").write_text(json.dumps(info))
            if self.on_file is not None:
                self.on_file(record.sha256, record.file_hash, data)
        with self.lock:
            self.uploads["shards"] += 1
            self.uploads["files"] += len(assembled)
        result = 0 if existed else 1
        if streaming:
            events = [{"type": "validating", "verified": len(files), "total": len(files)},
                      {"type": "committing", "stage": "uploading"}, {"type": "result", "result": result}]
            text = "".join(json.dumps(e) + "\n" for e in events)
            return 200, {"Content-Type": "application/x-ndjson"}, text.encode()
        return 200, {}, json.dumps({"result": result}).encode()

    # ---- downloads
    def _file(self, file_hash: str) -> dict:
        path = self.root / "files" / f"{file_hash}.json"
        if not path.exists():
            raise CASError(404, f"file {file_hash} not found")
        return json.loads(path.read_text())

    def _select(self, info: dict, wanted: tuple[int, int] | None) -> tuple[list[Term], int, dict]:
        """Terms (trimmed to whole chunks) covering byte range `wanted` (inclusive; None = all), the
        offset into the first kept chunk, and per xorb the chunk span [start, end) to fetch."""
        first, last = wanted if wanted is not None else (0, info["size"] - 1)
        kept: list[Term] = []
        offset_into_first, spans, pos = 0, {}, 0
        for xorb, start, end, _size in info["terms"]:
            _body, chunks = self._xorb(xorb)
            lo = hi = None
            kept_size = 0
            for index in range(start, end):
                size = chunks[index].size
                if pos + size > first and pos <= last:
                    if not kept and lo is None:
                        offset_into_first = first - pos
                    lo = index if lo is None else lo
                    hi = index + 1
                    kept_size += size
                pos += size
            if lo is not None:
                kept.append(Term(xorb, lo, hi, kept_size))
                old = spans.get(xorb, (lo, hi))
                spans[xorb] = (min(old[0], lo), max(old[1], hi))
        return kept, offset_into_first, spans

    def _reconstruction(self, file_hash: str, range_header: str | None, v2: bool) -> tuple[int, dict, bytes]:
        info = self._file(file_hash)
        ranges = _parse_ranges(range_header, info["size"])
        terms, offset, spans = self._select(info, ranges[0] if ranges else None)
        answer: dict = {"offset_into_first_range": offset,
                        "terms": [{"hash": t.xorb, "unpacked_length": t.size,
                                   "range": {"start": t.start, "end": t.end}} for t in terms]}
        fetch: dict[str, list] = {}
        for xorb, (lo, hi) in spans.items():
            _body, chunks = self._xorb(xorb)
            byte_range = {"start": chunks[lo].start, "end": chunks[hi - 1].end - 1}
            url = f"{self.url}/xorb-data/default/{xorb}"
            if v2:
                fetch[xorb] = [{"url": url, "ranges": [{"chunks": {"start": lo, "end": hi}, "bytes": byte_range}]}]
            else:
                fetch[xorb] = [{"range": {"start": lo, "end": hi}, "url": url, "url_range": byte_range}]
        answer["xorbs" if v2 else "fetch_info"] = fetch
        return 200, {}, json.dumps(answer).encode()

    def _xorb_data(self, xorb_hash: str, range_header: str | None) -> tuple[int, dict, bytes]:
        path = self.root / "xorbs" / xorb_hash
        if not path.exists():
            raise CASError(404, "xorb not found")
        body = path.read_bytes()
        ranges = _parse_ranges(range_header, len(body))
        octet = {"Content-Type": "application/octet-stream"}
        if ranges is None:
            return 200, octet, body
        if len(ranges) == 1:
            start, end = ranges[0]
            return 206, {**octet, "Content-Range": f"bytes {start}-{end}/{len(body)}"}, body[start:end + 1]
        boundary = secrets.token_hex(8)
        parts = []
        for start, end in ranges:
            head = (f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                    f"Content-Range: bytes {start}-{end}/{len(body)}\r\n\r\n")
            parts.append(head.encode() + body[start:end + 1] + b"\r\n")
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return 206, {"Content-Type": f"multipart/byteranges; boundary={boundary}"}, data
