"""Xet hashes in pure Python, for the test CAS (helpers.xet_cas) to check what the client uploads.

BLAKE3 in keyed-hash mode (the standard library has no blake3), and on top of it the Xet protocol's
hashes (public spec: huggingface/hub-docs docs/xet/hashing.md; tree shape as in xet-core's
merklehash/aggregated_hashes.rs):

- chunk hash: blake3 keyed with DATA_KEY over the chunk's bytes;
- xorb hash: the root of an aggregated Merkle tree over (chunk hash, chunk size) pairs; an internal
  node hashes the lines "{hash hex} : {size}\\n" of its children, keyed with INTERNAL_NODE_KEY; a node
  takes children up to and including the first one (from the 3rd on) whose hash % 4 == 0 (the last u64
  of the hash, little-endian), at most 9 children, at least 2;
- file hash: that root over all the file's chunks, blake3-keyed again with 32 zero bytes;
- term verification hash: blake3 keyed with VERIFICATION_KEY over the raw chunk hashes of the term.

Pure Python is slow (~ tens of microseconds per 64-byte block), so the CAS only hashes hashes (shards),
never the megabytes of chunk data.

Example:
    >>> from helpers.xet_hashing import blake3_keyed
    >>> len(blake3_keyed(bytes(32), b"abc"))
    32
"""

from __future__ import annotations

import struct

DATA_KEY = bytes([102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28, 157, 228, 33, 16,
                  155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41])
INTERNAL_NODE_KEY = bytes([1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230, 93, 221, 83,
                           111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63])
VERIFICATION_KEY = bytes([127, 24, 87, 214, 206, 86, 237, 102, 18, 127, 249, 19, 231, 165, 195, 243, 164, 205, 38,
                          213, 181, 219, 73, 230, 65, 36, 152, 127, 40, 251, 148, 195])

_IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)
_PERM = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
CHUNK_START, CHUNK_END, PARENT, ROOT, KEYED_HASH = 1, 2, 4, 8, 16
_M = 0xFFFFFFFF
_CHUNK_LEN = 1024


def _g(s: list[int], a: int, b: int, c: int, d: int, x: int, y: int) -> None:
    s[a] = (s[a] + s[b] + x) & _M
    v = s[d] ^ s[a]
    s[d] = ((v >> 16) | (v << 16)) & _M
    s[c] = (s[c] + s[d]) & _M
    v = s[b] ^ s[c]
    s[b] = ((v >> 12) | (v << 20)) & _M
    s[a] = (s[a] + s[b] + y) & _M
    v = s[d] ^ s[a]
    s[d] = ((v >> 8) | (v << 24)) & _M
    s[c] = (s[c] + s[d]) & _M
    v = s[b] ^ s[c]
    s[b] = ((v >> 7) | (v << 25)) & _M


def _compress(cv: tuple[int, ...], block: bytes, counter: int, block_len: int, flags: int) -> list[int]:
    """The BLAKE3 compression function: 16 output words (the first 8 are the chaining value)."""
    m = list(struct.unpack("<16I", block.ljust(64, b"\0")))
    s = [*cv, *_IV[:4], counter & _M, (counter >> 32) & _M, block_len, flags]
    for round_index in range(7):
        _g(s, 0, 4, 8, 12, m[0], m[1])
        _g(s, 1, 5, 9, 13, m[2], m[3])
        _g(s, 2, 6, 10, 14, m[4], m[5])
        _g(s, 3, 7, 11, 15, m[6], m[7])
        _g(s, 0, 5, 10, 15, m[8], m[9])
        _g(s, 1, 6, 11, 12, m[10], m[11])
        _g(s, 2, 7, 8, 13, m[12], m[13])
        _g(s, 3, 4, 9, 14, m[14], m[15])
        if round_index < 6:
            m = [m[i] for i in _PERM]
    return [s[i] ^ s[i + 8] for i in range(8)] + [s[i + 8] ^ cv[i] for i in range(8)]


def _chunk_cv(key: tuple[int, ...], data: bytes, counter: int, flags: int, root: bool) -> tuple[int, ...]:
    """Chaining value of one <= 1024-byte chunk (ROOT on its last block when it is the whole input)."""
    cv = key
    blocks = [data[i:i + 64] for i in range(0, len(data), 64)] or [b""]
    for index, block in enumerate(blocks):
        block_flags = flags | (CHUNK_START if index == 0 else 0)
        if index == len(blocks) - 1:
            block_flags |= CHUNK_END | (ROOT if root else 0)
        cv = tuple(_compress(cv, block, counter, len(block), block_flags)[:8])
    return cv


def _node_cv(key: tuple[int, ...], data: bytes, counter: int, flags: int, root: bool) -> tuple[int, ...]:
    """Chaining value of a subtree: the left side takes the largest power-of-two number of chunks."""
    if len(data) <= _CHUNK_LEN:
        return _chunk_cv(key, data, counter, flags, root)
    chunks = -(-len(data) // _CHUNK_LEN)
    left_chunks = 1 << ((chunks - 1).bit_length() - 1)
    left = _node_cv(key, data[:left_chunks * _CHUNK_LEN], counter, flags, False)
    right = _node_cv(key, data[left_chunks * _CHUNK_LEN:], counter + left_chunks, flags, False)
    block = struct.pack("<16I", *left, *right)
    return tuple(_compress(key, block, 0, 64, flags | PARENT | (ROOT if root else 0))[:8])


def blake3_keyed(key: bytes, data: bytes) -> bytes:
    """BLAKE3 keyed hash (32-byte key) of `data`: the 32-byte digest."""
    words = struct.unpack("<8I", key)
    return struct.pack("<8I", *_node_cv(words, data, 0, KEYED_HASH, True))


def chunk_hash(data: bytes) -> bytes:
    """The Xet hash of one chunk's bytes."""
    return blake3_keyed(DATA_KEY, data)


def _hex(raw: bytes) -> str:
    return "".join(f"{v:016x}" for v in struct.unpack("<4Q", raw))


def aggregated_hash(entries: list[tuple[bytes, int]]) -> bytes:
    """Root of the Xet aggregated Merkle tree over (32-byte hash, size) pairs (the xorb hash)."""
    if not entries:
        return bytes(32)
    level = list(entries)
    while len(level) > 1:
        merged, pos = [], 0
        while pos < len(level):
            rest = level[pos:]
            cut = len(rest)
            if len(rest) > 2:
                cut = min(9, len(rest))
                for i in range(2, cut):
                    if struct.unpack_from("<Q", rest[i][0], 24)[0] % 4 == 0:
                        cut = i + 1
                        break
            group = rest[:cut]
            text = "".join(f"{_hex(h)} : {size}\n" for h, size in group).encode()
            merged.append((blake3_keyed(INTERNAL_NODE_KEY, text), sum(size for _h, size in group)))
            pos += cut
        level = merged
    return level[0][0]


def file_hash(entries: list[tuple[bytes, int]]) -> bytes:
    """The Xet file hash from the (chunk hash, size) pairs of all its chunks, in order."""
    return blake3_keyed(bytes(32), aggregated_hash(entries)) if entries else bytes(32)


def verification_hash(chunk_hashes: list[bytes]) -> bytes:
    """The shard's verification hash of one term: keyed blake3 of the raw chunk hashes."""
    return blake3_keyed(VERIFICATION_KEY, b"".join(chunk_hashes))
