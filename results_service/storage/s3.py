"""Object storage in an S3 bucket under a key prefix, through s3fs.

An object under key `a/b` is `s3://<bucket>/<prefix>/a/b`. Writers buffer up to one
part and upload it, so S3 only receives parts of at least the part size (except the
last) and memory stays near one part. An object smaller than one part takes a single
PUT.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import aiohttp
import botocore.exceptions
import botocore.parsers
import pyarrow as pa
import s3fs
from fsspec.asyn import sync

from results_service.errors import (
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    ServiceError,
    UnavailableError,
)
from results_service.settings import S3_MAX_PARTS, S3_MIN_PART_SIZE
from results_service.storage import (
    MAX_KEY_BYTES,
    check_offset,
    check_prefix,
    check_range,
    describe_id,
    normalize_key,
)
from results_service.storage.base import ObjectWriter, StorageBackend

if TYPE_CHECKING:
    from results_service.settings import ServiceSettings

logger = logging.getLogger(__name__)

S3_MAX_PART_SIZE = 5 * 1024**3  # also the S3 limit of a single PUT
DEFAULT_PART_SIZE = 8 * 1024**2
_CONCURRENT_HEADS = 32  # HEAD requests in flight for one sizes() call
_DELETE_BATCH = 1000  # S3 limit of keys in one DeleteObjects request
_MAX_RETRY_DELAY = 2.0  # seconds

# Errors that s3fs, botocore or aiohttp raise once s3fs has used its own retries.
S3_ERRORS = (
    OSError,
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    botocore.parsers.ResponseParserError,
    aiohttp.ClientError,
)
_TRANSIENT_ERRORS = (
    ConnectionError,
    TimeoutError,
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.IncompleteReadError,
    botocore.parsers.ResponseParserError,
    aiohttp.ClientError,
)
# s3fs turns 5xx replies, SlowDown and unknown error codes into OSError with these.
_TRANSIENT_ERRNOS = {errno.EBUSY, errno.EIO, errno.EREMOTEIO, errno.ETIMEDOUT}


def make_filesystem(
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
) -> s3fs.S3FileSystem:
    """Build an s3fs filesystem. A None argument comes from the AWS default chain.

    The filesystem is not shared with other callers, and it caches no listings, so a
    size read after a write is never stale.
    """
    client_kwargs: dict[str, Any] = {}
    if region is not None:
        client_kwargs["region_name"] = region
    return s3fs.S3FileSystem(
        key=access_key_id,
        secret=secret_access_key,
        endpoint_url=endpoint_url,
        client_kwargs=client_kwargs,
        skip_instance_cache=True,
        use_listings_cache=False,
    )


def is_transient(error: BaseException) -> bool:
    """Return whether an S3 error may go away when the request is sent again."""
    if isinstance(error, FileNotFoundError | PermissionError):
        return False
    if isinstance(error, _TRANSIENT_ERRORS):
        return True
    return isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS


def map_s3_error(error: BaseException, action: str, key: str) -> ServiceError:
    """Return the service error for an S3 error raised by `action` on object `key`.

    `action` is a phrase such as "reading object 'a/b'".
    """
    if isinstance(error, FileNotFoundError):
        return NotFoundError(
            f"{action} failed: object {key!r} not found ({error}); check the opaque "
            "id, or whether the data was deleted",
            (key,),
        )
    if isinstance(error, PermissionError):
        return InternalError(
            f"{action} failed: access denied ({error}); check the S3 credentials and "
            "the bucket policy",
            (key,),
        )
    if is_transient(error):
        return UnavailableError(
            f"{action} failed: S3 is unreachable or busy ({error}); retry later",
            (key,),
        )
    return InternalError(f"{action} failed: {error}", (key,))


def _is_invalid_range(error: BaseException) -> bool:
    """Return whether S3 rejected a ranged GET because it starts past the end."""
    cause = error.__cause__ if isinstance(error, OSError) else error
    if not isinstance(cause, botocore.exceptions.ClientError):
        return False
    code = cause.response.get("Error", {}).get("Code")
    status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return bool(code == "InvalidRange" or status == 416)


class S3Writer(ObjectWriter):
    """An object uploaded through an s3fs file in "wb" mode.

    s3fs buffers writes and uploads the buffer as one part each time it reaches the
    part size, so every part but the last is at least that size. On close, an object
    still under one part goes up in a single PUT.

    Attributes:
        key: the key the object gets on commit, relative to the backend's prefix.
        state: "open", then "committed", "failed" (commit raised, abort cleans up)
            or "aborted".
    """

    def __init__(self, fs: s3fs.S3FileSystem, path: str, key: str, part_size: int):
        self.key = key
        self._fs = fs
        self._path = path
        self._max_size = part_size * S3_MAX_PARTS
        self._size = 0
        self._file = fs.open(path, "wb", block_size=part_size)
        self.state = "open"  # set last: __del__ aborts only a writer built whole

    @property
    def upload_id(self) -> str | None:
        """Id of the multipart upload once the first part is sent, else None."""
        upload = self._file.mpu
        return None if upload is None else str(upload["UploadId"])

    def write(self, chunk: pa.Buffer | bytes) -> None:
        self._require_open("write to")
        view = memoryview(chunk)
        if self._size + view.nbytes > self._max_size:
            raise ResourceExhaustedError(
                f"object {self.key!r} is over {self._max_size} bytes, the maximum of "
                f"{S3_MAX_PARTS} parts; raise s3_part_size to store larger objects",
                (self.key,),
            )
        try:
            self._file.write(view)
        except S3_ERRORS as error:
            raise map_s3_error(
                error, f"writing object {self.key!r}", self.key
            ) from error
        self._size += view.nbytes

    def commit(self) -> int:
        self._require_open("commit")
        try:
            self._file.close()
        except S3_ERRORS as error:
            self.state = "failed"
            action = f"committing object {self.key!r}"
            raise map_s3_error(error, action, self.key) from error

        self.state = "committed"
        logger.debug("committed object %s of %d bytes", self.key, self._size)
        return self._size

    def abort(self) -> None:
        if self.state not in ("open", "failed"):
            return
        commit_failed = self.state == "failed"
        self.state = "aborted"

        # An upload that was never aborted costs storage until a bucket lifecycle
        # rule for incomplete multipart uploads removes it, so failures are logged.
        upload_id = self.upload_id
        try:
            self._file.discard()
        except Exception as error:  # noqa: BLE001 - abort runs in error paths
            logger.warning(
                "aborting multipart upload %s of object %s failed: %s",
                upload_id,
                self.key,
                error,
            )
        finally:
            self._file.closed = True  # otherwise closing the file would upload it

        # A commit that raised may still have created the object, whose key is the
        # service's own, so it is deleted.
        if commit_failed:
            try:
                self._fs.rm_file(self._path)
            except Exception as error:  # noqa: BLE001 - abort runs in error paths
                logger.warning(
                    "deleting object %s after a failed commit failed: %s",
                    self.key,
                    error,
                )


class S3Backend(StorageBackend):
    """Objects in an S3 bucket under a key prefix.

    Args:
        bucket: the bucket, which must exist.
        prefix: key prefix of every object, without leading or trailing `/`.
        filesystem: the s3fs filesystem to use, or None to build one from the AWS
            default chain.
        part_size: bytes per multipart part, between 5 MiB and 5 GiB.
        read_attempts: GET requests a read_range makes before it raises
            UnavailableError, counting the first.
        retry_delay: seconds before the first retry of a read, doubled after each
            further failure, up to 2 seconds.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        filesystem: s3fs.S3FileSystem | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        read_attempts: int = 4,
        retry_delay: float = 0.1,
    ) -> None:
        if not S3_MIN_PART_SIZE <= part_size <= S3_MAX_PART_SIZE:
            raise InvalidArgumentError(
                f"S3 part size {part_size} is invalid: it must be between "
                f"{S3_MIN_PART_SIZE} and {S3_MAX_PART_SIZE} bytes"
            )
        if read_attempts < 1:
            raise InvalidArgumentError(
                f"read_attempts={read_attempts} is invalid: it must be at least 1"
            )
        self.bucket = bucket
        self.prefix = check_prefix(prefix.strip("/")).rstrip("/")
        self.part_size = part_size
        self._key_prefix = f"{self.prefix}/" if self.prefix else ""
        self._fs = make_filesystem() if filesystem is None else filesystem
        self._read_attempts = read_attempts
        self._retry_delay = retry_delay
        logger.info(
            "S3 object storage opened at s3://%s/%s (endpoint %s)",
            bucket,
            self.prefix,
            getattr(self._fs, "endpoint_url", None) or "default",
        )

    @classmethod
    def from_settings(
        cls, bucket: str, prefix: str, settings: ServiceSettings
    ) -> S3Backend:
        """Build a backend with the endpoint, region, credentials and part size of
        `settings`."""
        filesystem = make_filesystem(
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
        )
        return cls(
            bucket, prefix, filesystem=filesystem, part_size=settings.s3_part_size
        )

    def open_writer(self, key: str) -> S3Writer:
        checked = self._checked_key(key.encode("utf-8", errors="surrogatepass"))
        path = f"{self.bucket}/{self._key_prefix}{checked}"
        return S3Writer(self._fs, path, checked, self.part_size)

    def read_range(self, opaque_id: bytes, offset: int, length: int) -> pa.Buffer:
        key = self._checked_key(opaque_id)
        check_range(opaque_id, offset, length)
        if length == 0:
            check_offset(opaque_id, offset, self._head_size(key))
            return pa.py_buffer(b"")
        return pa.py_buffer(self._read_exact(key, offset, length))

    def sizes(self, opaque_ids: Iterable[bytes]) -> dict[bytes, int | None]:
        keys = {opaque_id: self._checked_key(opaque_id) for opaque_id in opaque_ids}
        if not keys:
            return {}
        results = sync(self._fs.loop, self._head_sizes, list(keys.values()))
        found: dict[bytes, int | None] = {}
        for (opaque_id, key), result in zip(keys.items(), results, strict=True):
            if isinstance(result, BaseException):
                action = f"reading the size of object {key!r}"
                raise map_s3_error(result, action, key) from result
            found[opaque_id] = result
        return found

    def delete(self, opaque_ids: Iterable[bytes]) -> None:
        keys = [self._checked_key(opaque_id) for opaque_id in opaque_ids]
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            objects = [{"Key": self._key_prefix + key} for key in batch]
            try:
                reply = self._fs.call_s3(
                    "delete_objects",
                    Bucket=self.bucket,
                    Delete={"Objects": objects, "Quiet": True},
                )
            except S3_ERRORS as error:
                action = f"deleting {len(batch)} objects from {batch[0]!r}"
                raise map_s3_error(error, action, batch[0]) from error
            _raise_delete_errors(reply.get("Errors", []))

    def validate_import_id(self, opaque_id: bytes) -> bytes:
        return self._checked_key(opaque_id).encode("utf-8")

    def list_ids(self, prefix: str = "") -> list[bytes]:
        listed = self._key_prefix + check_prefix(prefix)
        keys: list[str] = []
        token: dict[str, str] = {}
        while True:
            try:
                reply = self._fs.call_s3(
                    "list_objects_v2", Bucket=self.bucket, Prefix=listed, **token
                )
            except S3_ERRORS as error:
                action = f"listing objects under {listed!r}"
                raise map_s3_error(error, action, listed) from error
            keys.extend(item["Key"] for item in reply.get("Contents", []))
            if not reply.get("IsTruncated"):
                break
            token = {"ContinuationToken": reply["NextContinuationToken"]}
        cut = len(self._key_prefix)
        return sorted(key[cut:].encode("utf-8") for key in keys)

    def _checked_key(self, opaque_id: bytes) -> str:
        key = normalize_key(opaque_id)
        if len((self._key_prefix + key).encode("utf-8")) > MAX_KEY_BYTES:
            id_text = describe_id(opaque_id)
            raise InvalidArgumentError(
                f"opaque id {id_text!r} is invalid: with the prefix {self.prefix!r} "
                f"its S3 key is over {MAX_KEY_BYTES} bytes; give a shorter key",
                (id_text,),
            )
        return key

    def _head_size(self, key: str) -> int:
        try:
            reply = self._fs.call_s3(
                "head_object", Bucket=self.bucket, Key=self._key_prefix + key
            )
        except S3_ERRORS as error:
            action = f"reading the size of object {key!r}"
            raise map_s3_error(error, action, key) from error
        return int(reply["ContentLength"])

    async def _head_sizes(self, keys: list[str]) -> list[int | None | BaseException]:
        limit = asyncio.Semaphore(_CONCURRENT_HEADS)

        async def head(key: str) -> int | None:
            async with limit:
                try:
                    reply = await self._fs._call_s3(
                        "head_object", Bucket=self.bucket, Key=self._key_prefix + key
                    )
                except FileNotFoundError:
                    return None
            return int(reply["ContentLength"])

        return await asyncio.gather(
            *(head(key) for key in keys), return_exceptions=True
        )

    def _read_exact(self, key: str, offset: int, length: int) -> bytes:
        """Read `length` bytes from `offset`, or up to the end of the object.

        A GET that returns fewer bytes than requested, or fails with a transient
        error, is retried for the missing bytes only, so the result is never short
        or duplicated. The size of the object is read only after a short GET, to
        tell the end of the object from a cut connection.
        """
        path = f"{self.bucket}/{self._key_prefix}{key}"
        pieces: list[bytes] = []
        received = 0
        expected = length  # lowered to the bytes left once the size is known
        size_known = False
        failures = 0
        while True:
            start = offset + received
            try:
                piece = self._fs.cat_file(path, start=start, end=offset + expected)
            except S3_ERRORS as error:
                if not _is_invalid_range(error):
                    failures += 1
                    action = f"reading object {key!r} at offset {start}"
                    if not is_transient(error) or failures >= self._read_attempts:
                        raise map_s3_error(error, action, key) from error
                    self._wait_before_retry(action, error, failures)
                    continue
                piece = b""  # the range starts at or past the end of the object

            if len(piece) > expected - received:
                raise InternalError(
                    f"reading object {key!r} at offset {start} returned "
                    f"{len(piece)} bytes for a range of {expected - received}",
                    (key,),
                )
            if piece:
                pieces.append(piece)
                received += len(piece)
            if received == expected:
                break

            if not size_known:
                size = self._head_size(key)
                check_offset(key.encode("utf-8"), offset, size)
                expected = min(length, size - offset)
                size_known = True
                if received > expected:
                    raise InternalError(
                        f"object {key!r} shrank to {size} bytes during a read; "
                        "retry the download",
                        (key,),
                    )
                if received == expected:
                    break

            failures += 1
            action = f"reading object {key!r} at offset {offset}"
            if failures >= self._read_attempts:
                raise UnavailableError(
                    f"{action} failed: S3 returned {received} of {expected} bytes "
                    f"after {failures} attempts; retry later",
                    (key,),
                )
            self._wait_before_retry(action, "short response", failures)

        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def _wait_before_retry(
        self, action: str, reason: BaseException | str, failures: int
    ) -> None:
        delay = min(self._retry_delay * 2 ** (failures - 1), _MAX_RETRY_DELAY)
        logger.warning(
            "%s: attempt %d of %d failed (%s); retrying in %.2f s",
            action,
            failures,
            self._read_attempts,
            reason,
            delay,
        )
        time.sleep(delay)


def _raise_delete_errors(errors: list[dict[str, str]]) -> None:
    """Raise for the keys that a DeleteObjects request failed to delete."""
    if not errors:
        return
    first = errors[0]
    key = first.get("Key", "")
    raise InternalError(
        f"deleting {len(errors)} objects failed, the first {key!r} with "
        f"{first.get('Code')}: {first.get('Message')}; retry the delete",
        tuple(error.get("Key", "") for error in errors),
    )
