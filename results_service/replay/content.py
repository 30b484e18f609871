"""Deterministic file content for replays, so that any reader can check its bytes.

The bytes of a file depend only on its id and the offset, never on its size, so a
truncated copy is a prefix of the full one. The content is built from 1 MiB blocks:

- A per-file pattern of 1 MiB comes from SHAKE-256 (an extendable-output hash in
  `hashlib`) of the file id, so that different files get different bytes.
- Block n is that pattern with its first 16 bytes replaced by a BLAKE2b digest of the
  file id and n. A block copied to the wrong offset, even a whole MiB away, therefore
  fails the check.

Only the pattern costs hashing: `hashlib.shake_256(...).digest(1 MiB)` took about
1.7 ms on a 2-core development VM with Python 3.11. Each later block costs one 1 MiB
copy, at memory speed.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Iterator

from results_service.settings import MiB

BLOCK_SIZE = MiB
STAMP_SIZE = 16
_DOMAIN = b"results-service/replay/content/v1\x00"


def file_bytes(file_id: str, size: int) -> bytes:
    """Return the whole content of a file. Read large files with `iter_file_chunks`."""
    _check_size(size)
    return _FileContent(file_id, size).read(0, size)


def iter_file_chunks(file_id: str, size: int, chunk_size: int) -> Iterator[bytes]:
    """Yield a file's content in chunks of `chunk_size` bytes, the last one shorter.

    A zero-byte file yields no chunk, as a download of empty data streams none.
    Memory stays at one block plus one chunk, whatever the size.
    """
    _check_size(size)
    if chunk_size <= 0:
        raise ValueError(
            f"chunk_size must be a positive number of bytes, got {chunk_size}"
        )

    content = _FileContent(file_id, size)
    for offset in range(0, size, chunk_size):
        yield content.read(offset, min(chunk_size, size - offset))


def check_content(
    file_id: str, size: int, chunks: Iterable[bytes | bytearray | memoryview]
) -> str | None:
    """Compare received chunks with the expected content, returning the first mismatch.

    `chunks` may be any objects that support the buffer protocol, such as
    `pyarrow.Buffer`. Returns None when the chunks contain exactly the `size` expected
    bytes, and otherwise a message with the offset of the first difference. Reading
    stops at a byte mismatch or once there are more bytes than `size`.
    """
    _check_size(size)
    content = _FileContent(file_id, size)
    offset = 0
    for chunk in chunks:
        data = chunk if isinstance(chunk, bytes) else bytes(memoryview(chunk))
        if offset + len(data) > size:
            return (
                f"file '{file_id}': received more than the expected {size} bytes "
                f"(at least {offset + len(data)})"
            )

        expected = content.read(offset, len(data))
        if data != expected:
            position = offset + _first_difference(data, expected)
            got = data[position - offset]
            want = expected[position - offset]
            return (
                f"file '{file_id}': byte mismatch at offset {position}: "
                f"expected 0x{want:02x}, got 0x{got:02x}"
            )
        offset += len(data)

    if offset != size:
        return f"file '{file_id}': received {offset} bytes, expected {size}"
    return None


class _FileContent:
    """Random access to the first `size` bytes of a file, keeping the last block built.

    A file smaller than a block only hashes as many pattern bytes as it needs, which
    SHAKE-256 allows because a shorter output is a prefix of a longer one.
    """

    def __init__(self, file_id: str, size: int) -> None:
        self._key = _file_key(file_id)
        self._pattern_size = min(size, BLOCK_SIZE)
        self._block_index = -1
        self._block = b""

    def read(self, offset: int, length: int) -> bytes:
        """Return `length` bytes of content from `offset`, within the first `size`."""
        parts = []
        while length > 0:
            index, start = divmod(offset, BLOCK_SIZE)
            block = self._get_block(index)
            part = block[start : start + length]
            parts.append(part)
            offset += len(part)
            length -= len(part)

        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def _get_block(self, index: int) -> bytes:
        if index != self._block_index:
            stamp = hashlib.blake2b(
                index.to_bytes(8, "little"), digest_size=STAMP_SIZE, key=self._key
            ).digest()
            pattern = _pattern(self._key, self._pattern_size)
            self._block = stamp + pattern[STAMP_SIZE:]
            self._block_index = index
        return self._block


@functools.lru_cache(maxsize=1024)
def _file_key(file_id: str) -> bytes:
    return hashlib.blake2b(_DOMAIN + file_id.encode("utf-8"), digest_size=32).digest()


def _pattern(key: bytes, size: int) -> bytes:
    """Return the first `size` bytes of the pattern of the file with this key."""
    if size >= BLOCK_SIZE:
        return _full_pattern(key)
    return hashlib.shake_256(key).digest(size)


@functools.lru_cache(maxsize=8)
def _full_pattern(key: bytes) -> bytes:
    """Return the whole 1 MiB pattern, cached for the last 8 large files."""
    return hashlib.shake_256(key).digest(BLOCK_SIZE)


def _first_difference(data: bytes, expected: bytes) -> int:
    """Return the index of the first byte that differs, narrowing by 4 KiB pages."""
    page = 4096
    start = 0
    while data[start : start + page] == expected[start : start + page]:
        start += page
    for index in range(start, min(start + page, len(data))):
        if data[index] != expected[index]:
            return index
    return start


def _check_size(size: int) -> None:
    if size < 0:
        raise ValueError(f"file size must be >= 0 bytes, got {size}")
