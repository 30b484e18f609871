"""Object storage in the memory of one process, for tests and small embedded runs.

Objects live as long as the backend object: under Ray, as long as the actor that
owns it. A writer keeps the whole object in memory until it commits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import pyarrow as pa

from results_service.errors import NotFoundError
from results_service.storage import (
    check_offset,
    check_prefix,
    check_range,
    describe_id,
    normalize_key,
)
from results_service.storage.base import ObjectWriter, StorageBackend

logger = logging.getLogger(__name__)


class MemoryWriter(ObjectWriter):
    """An object collected chunk by chunk and stored whole on commit.

    Attributes:
        key: the key the object gets on commit.
        state: "open", then "committed" or "aborted".
    """

    def __init__(self, backend: MemoryBackend, key: str) -> None:
        self.key = key
        self.state = "open"
        self._backend = backend
        self._chunks: list[bytes] = []

    def write(self, chunk: pa.Buffer | bytes) -> None:
        self._require_open("write to")
        self._chunks.append(bytes(memoryview(chunk)))

    def commit(self) -> int:
        self._require_open("commit")
        data = b"".join(self._chunks)
        self._chunks = []
        self._backend.store(self.key, data)
        self.state = "committed"
        return len(data)

    def abort(self) -> None:
        if self.state == "open":
            self._chunks = []
            self.state = "aborted"


class MemoryBackend(StorageBackend):
    """Objects as bytes in a dict guarded by a lock, so threads can share it."""

    def __init__(self) -> None:
        self._objects: dict[str, bytes] = {}
        self._lock = threading.Lock()
        logger.info("in-memory object storage opened")

    def open_writer(self, key: str) -> MemoryWriter:
        checked = normalize_key(key.encode("utf-8", errors="surrogatepass"))
        return MemoryWriter(self, checked)

    def store(self, key: str, data: bytes) -> None:
        """Store a whole object under a checked key, replacing any previous one."""
        with self._lock:
            self._objects[key] = data

    def read_range(self, opaque_id: bytes, offset: int, length: int) -> pa.Buffer:
        key = normalize_key(opaque_id)
        check_range(opaque_id, offset, length)
        with self._lock:
            data = self._objects.get(key)
        if data is None:
            id_text = describe_id(opaque_id)
            raise NotFoundError(
                f"object {id_text!r} not found in memory storage; check the opaque id, "
                "or whether the data was deleted",
                (id_text,),
            )

        check_offset(opaque_id, offset, len(data))
        # Slicing a memoryview of immutable bytes shares them without a copy.
        return pa.py_buffer(memoryview(data)[offset : offset + length])

    def sizes(self, opaque_ids: Iterable[bytes]) -> dict[bytes, int | None]:
        keys = {opaque_id: normalize_key(opaque_id) for opaque_id in opaque_ids}
        with self._lock:
            found = {
                opaque_id: self._objects.get(key) for opaque_id, key in keys.items()
            }
        return {
            opaque_id: None if data is None else len(data)
            for opaque_id, data in found.items()
        }

    def delete(self, opaque_ids: Iterable[bytes]) -> None:
        keys = [normalize_key(opaque_id) for opaque_id in opaque_ids]
        with self._lock:
            for key in keys:
                self._objects.pop(key, None)

    def validate_import_id(self, opaque_id: bytes) -> bytes:
        return normalize_key(opaque_id).encode("utf-8")

    def list_ids(self, prefix: str = "") -> list[bytes]:
        checked = check_prefix(prefix)
        with self._lock:
            keys = [key for key in self._objects if key.startswith(checked)]
        return sorted(key.encode("utf-8") for key in keys)

    def close(self) -> None:
        with self._lock:
            self._objects.clear()
