"""ObjectStorage: the Ray actor that owns the stored bytes behind opaque ids."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import ray

from results_service.errors import (
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from results_service.ids import new_id
from results_service.settings import ServiceSettings
from results_service.storage import open_backend
from results_service.storage.base import LocalFile, LocalRoot, ObjectWriter

logger = logging.getLogger(__name__)

Chunk = pa.Buffer | bytes | ray.ObjectRef


class Upload:
    """An object being written, with what the control plane needs to finish it."""

    __slots__ = ("writer", "key", "context", "touched_at", "size", "busy", "idle")

    def __init__(self, writer: ObjectWriter, key: str, context: dict[str, Any]) -> None:
        self.writer = writer
        self.key = key
        self.context = context
        self.touched_at = time.monotonic()
        self.size = 0
        self.busy = False
        # Set while no write runs; commit and abort wait for it, because a writer
        # is not safe to use from two threads at once.
        self.idle = asyncio.Event()
        self.idle.set()


@ray.remote(num_cpus=0, max_restarts=0)
class ObjectStorage:
    """Streams bytes in and out of a storage backend with bounded memory.

    Backend calls run in worker threads so that transfers overlap. Uploads idle for
    longer than `upload_idle_seconds` are aborted and their partial object deleted.
    Downloads are stateless: `sign` makes a token for one object, and `read` serves
    ranges of the object named by a valid token, so an abandoned download holds
    nothing here.
    """

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.backend = open_backend(settings)
        self.uploads: dict[str, Upload] = {}
        self.secret = os.urandom(32)
        self.sweeper: asyncio.Task[None] | None = None
        logger.info("ObjectStorage started on %s", settings.storage_url)

    def ping(self) -> str:
        return self.settings.storage_url

    def _start_sweeper(self) -> None:
        if self.sweeper is None:
            self.sweeper = asyncio.get_running_loop().create_task(
                self._sweep_idle_uploads()
            )

    async def _sweep_idle_uploads(self) -> None:
        period = min(5.0, self.settings.upload_idle_seconds / 2)
        while True:
            await asyncio.sleep(period)
            limit = time.monotonic() - self.settings.upload_idle_seconds
            for upload_id, upload in list(self.uploads.items()):
                if upload.touched_at < limit and not upload.busy:
                    logger.warning(
                        "upload %s of %s was idle for %.0f s; aborting it",
                        upload_id,
                        upload.context,
                        self.settings.upload_idle_seconds,
                    )
                    await self.abort_upload(upload_id)

    # Uploads

    async def open_upload(self, key: str, context: dict[str, Any]) -> str:
        """Start writing an object under `key`; return the upload's id."""
        self._start_sweeper()
        if len(self.uploads) >= self.settings.limits.max_open_uploads:
            raise ResourceExhaustedError(
                f"{len(self.uploads)} uploads are open, the limit is "
                f"{self.settings.limits.max_open_uploads}; retry when some finish"
            )
        writer = await asyncio.to_thread(self.backend.open_writer, key)
        upload_id = new_id()
        self.uploads[upload_id] = Upload(writer, key, context)
        return upload_id

    def _upload(self, upload_id: str) -> Upload:
        upload = self.uploads.get(upload_id)
        if upload is None:
            raise NotFoundError(
                f"upload {upload_id} was not found: it finished, failed or was idle "
                f"for more than {self.settings.upload_idle_seconds:.0f} s; start a new "
                "upload",
                (upload_id,),
            )
        return upload

    async def write(self, upload_id: str, chunks: Sequence[Chunk]) -> int:
        """Append chunks in order and return the size written so far.

        Chunks may be ObjectRefs, which are fetched here so that their bytes do not
        pass through the caller.
        """
        upload = self._upload(upload_id)
        if upload.busy:
            raise InvalidArgumentError(
                f"upload {upload_id} got a write while another write was running; send "
                "the chunks of one upload one call after the other",
                (upload_id,),
            )
        upload.busy = True
        upload.idle.clear()
        try:
            buffers = [
                await chunk if isinstance(chunk, ray.ObjectRef) else chunk
                for chunk in chunks
            ]
            limit = self.settings.data_chunk_max_size
            for buffer in buffers:
                if len(buffer) > limit:
                    raise InvalidArgumentError(
                        f"a chunk of {len(buffer)} bytes exceeds data_chunk_max_size "
                        f"{limit}; split the data into chunks of at most {limit} bytes"
                    )
            await asyncio.to_thread(_write_all, upload.writer, buffers)
            upload.size += sum(len(buffer) for buffer in buffers)
        except BaseException:
            upload.idle.set()
            await self.abort_upload(upload_id)
            raise
        finally:
            upload.busy = False
            upload.idle.set()
            upload.touched_at = time.monotonic()
        return upload.size

    async def commit_upload(self, upload_id: str) -> tuple[dict[str, Any], bytes, int]:
        """Finish an upload; return its context, opaque id and size."""
        upload = self.uploads.pop(upload_id, None)
        if upload is None:
            self._upload(upload_id)
            raise AssertionError("unreachable")
        await upload.idle.wait()
        try:
            size = await asyncio.to_thread(upload.writer.commit)
        except BaseException:
            await asyncio.to_thread(upload.writer.abort)
            raise
        return upload.context, upload.key.encode(), size

    async def abort_upload(self, upload_id: str) -> None:
        """Discard an upload; an unknown id is skipped."""
        upload = self.uploads.pop(upload_id, None)
        if upload is not None:
            # A write still running in its thread could otherwise start an S3
            # multipart upload after the abort, which would then stay open.
            await upload.idle.wait()
            try:
                await asyncio.to_thread(upload.writer.abort)
            except Exception:
                logger.exception(
                    "aborting upload %s of %s failed", upload_id, upload.key
                )

    def open_uploads(self) -> int:
        return len(self.uploads)

    async def put_many(
        self, items: Sequence[tuple[str, bytes | pa.Buffer]]
    ) -> list[tuple[bytes, int]]:
        """Write whole objects in parallel; on any failure delete those written."""
        results = await asyncio.gather(
            *(asyncio.to_thread(self.backend.put, key, data) for key, data in items),
            return_exceptions=True,
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            written = [
                key.encode()
                for (key, _), result in zip(items, results, strict=True)
                if not isinstance(result, BaseException)
            ]
            await asyncio.to_thread(self.backend.delete, written)
            raise failures[0]
        return [
            (key.encode(), size) for (key, _), size in zip(items, results, strict=True)
        ]  # type: ignore[misc]

    # Uploads that clients wrote into the storage directory

    def local_root(self) -> LocalRoot | None:
        """Return the directory that clients on this machine may write uploads
        into, or None when local files are off or objects are not files."""
        if not self.settings.local_files:
            return None
        return self.backend.local_root()

    async def adopt(self, upload_name: str, key: str) -> tuple[bytes, int]:
        """Publish a client's upload file under `key`; return its id and size."""
        if not self.settings.local_files:
            raise InvalidArgumentError(
                f"client upload {upload_name!r} is invalid: local files are off in "
                "this service, so upload through the storage actor"
            )
        size = await asyncio.to_thread(self.backend.adopt, upload_name, key)
        return key.encode(), size

    async def discard(self, upload_name: str) -> None:
        """Delete a client's upload file that will not be adopted."""
        await asyncio.to_thread(self.backend.discard, upload_name)

    # Downloads

    def _signature(self, opaque_id: bytes) -> bytes:
        return hmac.new(self.secret, opaque_id, hashlib.sha256).digest()

    def sign(self, opaque_id: bytes) -> bytes:
        """Return a token that lets `read` serve this object."""
        return self._signature(opaque_id) + opaque_id

    async def open_reads(
        self, objects: Sequence[tuple[bytes, int]], inline_max: int
    ) -> list[tuple[bytes, pa.Buffer | None, LocalFile | None]]:
        """Return a read token for each (opaque id, size), the whole data of
        objects of at most `inline_max` bytes, and the file of larger ones when
        local files are on and the objects are files."""
        small = [index for index, (_, size) in enumerate(objects) if size <= inline_max]
        large = []
        if self.settings.local_files:
            large = [
                index for index, (_, size) in enumerate(objects) if size > inline_max
            ]
        buffers, files = await asyncio.gather(
            asyncio.gather(
                *(
                    asyncio.to_thread(
                        self.backend.read_range, objects[index][0], 0, objects[index][1]
                    )
                    for index in small
                )
            ),
            asyncio.gather(
                *(
                    asyncio.to_thread(self.backend.local_file, objects[index][0])
                    for index in large
                )
            ),
        )
        data: dict[int, pa.Buffer] = dict(zip(small, buffers, strict=True))
        local: dict[int, LocalFile | None] = dict(zip(large, files, strict=True))
        return [
            (self.sign(opaque_id), data.get(index), local.get(index))
            for index, (opaque_id, _) in enumerate(objects)
        ]

    async def read(self, token: bytes, offset: int, length: int) -> list[pa.Buffer]:
        """Return the bytes of [offset, offset + length) as chunks of at most
        data_chunk_max_size; fewer bytes at the end of the object."""
        signature, opaque_id = token[:32], token[32:]
        if not hmac.compare_digest(signature, self._signature(opaque_id)):
            raise InvalidArgumentError(
                "download token is invalid; call open_download again"
            )
        chunk = self.settings.data_chunk_max_size
        # One call holds the whole range in memory, so its length is bounded.
        limit = chunk * self.settings.transfer_window_chunks
        if (
            not isinstance(offset, int)
            or not isinstance(length, int)
            or offset < 0
            or not 0 <= length <= limit
        ):
            raise InvalidArgumentError(
                f"read at offset {offset!r} with length {length!r} is invalid: the "
                f"offset must be 0 or more and the length at most {limit} bytes "
                "(data_chunk_max_size times transfer_window_chunks); read larger "
                "ranges in several calls"
            )
        starts = range(offset, offset + length, chunk)
        buffers = await asyncio.gather(
            *(
                asyncio.to_thread(
                    self.backend.read_range,
                    opaque_id,
                    start,
                    min(chunk, offset + length - start),
                )
                for start in starts
            )
        )
        return [buffer for buffer in buffers if len(buffer) > 0]

    # Objects

    async def delete(self, opaque_ids: Sequence[bytes]) -> None:
        if opaque_ids:
            await asyncio.to_thread(self.backend.delete, opaque_ids)

    async def inspect_imports(
        self, opaque_ids: Sequence[bytes]
    ) -> list[tuple[bytes, int | None]]:
        return await asyncio.to_thread(self.backend.inspect_imports, opaque_ids)

    async def list_ids(self, prefix: str = "") -> list[bytes]:
        return await asyncio.to_thread(self.backend.list_ids, prefix)


def _write_all(writer: ObjectWriter, buffers: Sequence[pa.Buffer | bytes]) -> None:
    for buffer in buffers:
        writer.write(buffer)
