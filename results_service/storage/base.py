"""The interface every object storage backend implements.

Backends are synchronous and thread-safe; the ObjectStorage actor runs their calls in
worker threads. Opaque ids are bytes: the key of the object relative to the
backend's root (a directory or an S3 bucket prefix), in UTF-8.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable, Sequence

import pyarrow as pa

from results_service.errors import FailedPreconditionError, InvalidArgumentError

logger = logging.getLogger(__name__)


class ObjectWriter(abc.ABC):
    """An object being written in order, chunk by chunk, with bounded memory.

    Attributes:
        key: the object's key under the backend's root.
        state: "open" until the writer commits ("committed"), aborts ("aborted") or,
            for some backends, fails to commit ("failed").
    """

    key: str
    state: str

    def __del__(self) -> None:
        # Subclasses set `state` last in __init__, so only a writer built whole aborts.
        if getattr(self, "state", None) == "open":
            logger.warning("writer of object %s dropped while open; aborting", self.key)
            self.abort()

    def _require_open(self, action: str) -> None:
        """Raise FailedPreconditionError unless the writer is still open."""
        if self.state != "open":
            raise FailedPreconditionError(
                f"cannot {action} object {self.key!r}: its writer is {self.state}; "
                "open a new writer",
                (self.key,),
            )

    @abc.abstractmethod
    def write(self, chunk: pa.Buffer | bytes) -> None:
        """Append a chunk. Memory held stays under one S3 part or one chunk."""

    @abc.abstractmethod
    def commit(self) -> int:
        """Make the object visible under its key and return its size in bytes."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Discard everything written; no object or partial upload remains."""


# An object's file on the storage's machine: its path, device, inode, size and
# modification time in nanoseconds, which a client there checks before reading it.
LocalFile = tuple[str, int, int, int, int]
# The storage directory: its path, device and inode, which a client checks before
# writing an upload into it.
LocalRoot = tuple[str, int, int]


class StorageBackend(abc.ABC):
    """Bytes behind opaque ids, in a local directory, S3 or memory."""

    @abc.abstractmethod
    def open_writer(self, key: str) -> ObjectWriter:
        """Start writing a new object under a service-made key."""

    @abc.abstractmethod
    def read_range(self, opaque_id: bytes, offset: int, length: int) -> pa.Buffer:
        """Return up to `length` bytes from `offset`; NotFoundError if absent."""

    @abc.abstractmethod
    def sizes(self, opaque_ids: Iterable[bytes]) -> dict[bytes, int | None]:
        """Return each object's size, or None for an object that does not exist."""

    @abc.abstractmethod
    def delete(self, opaque_ids: Iterable[bytes]) -> None:
        """Delete objects; ids that do not exist are skipped."""

    @abc.abstractmethod
    def validate_import_id(self, opaque_id: bytes) -> bytes:
        """Return the normalized id, or raise InvalidArgumentError for an id outside
        the root: absolute paths, `..`, symbolic links out of the root, URL schemes
        and other buckets."""

    def inspect_imports(
        self, opaque_ids: Sequence[bytes]
    ) -> list[tuple[bytes, int | None]]:
        """Return each id normalized with the size of its object, or None when the
        object does not exist; raise as validate_import_id does."""
        normalized = [self.validate_import_id(opaque_id) for opaque_id in opaque_ids]
        sizes = self.sizes(normalized)
        return [(opaque_id, sizes[opaque_id]) for opaque_id in normalized]

    @abc.abstractmethod
    def list_ids(self, prefix: str = "") -> list[bytes]:
        """Return the ids of the stored objects under a key prefix, for purges and
        tests."""

    def local_file(self, opaque_id: bytes) -> LocalFile | None:
        """Return the file of an object, or None when objects are not files."""
        return None

    def local_root(self) -> LocalRoot | None:
        """Return the directory that clients may write uploads into, or None when
        objects are not files."""
        return None

    def adopt(self, upload_name: str, key: str) -> int:
        """Publish a file that a client wrote into the upload directory under
        `key`, and return its size."""
        raise InvalidArgumentError(
            f"client upload {upload_name!r} is invalid: this storage takes uploads "
            "through the storage actor only"
        )

    def discard(self, upload_name: str) -> None:  # noqa: B027 - no files to delete
        """Delete a client's upload file that will not be adopted."""

    def put(self, key: str, data: pa.Buffer | bytes) -> int:
        """Write a whole object and return its size."""
        writer = self.open_writer(key)
        try:
            writer.write(data)
            return writer.commit()
        except BaseException:
            writer.abort()
            raise

    def close(self) -> None:  # noqa: B027 - a no-op for backends without resources
        """Release connections and files."""
