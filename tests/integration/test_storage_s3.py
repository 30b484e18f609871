"""Tests of the S3 backend against a moto S3 server on 127.0.0.1.

The retry tests wrap the real filesystem in a subclass that cuts or fails scripted
GET responses; everything else runs unchanged against the server.
"""

from __future__ import annotations

import errno
from typing import Any

import aiohttp
import pyarrow as pa
import pytest
import s3fs

from results_service.errors import (
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from results_service.settings import ServiceSettings
from results_service.storage import open_backend
from results_service.storage.s3 import S3Backend, S3Writer, make_filesystem
from tests.s3_server import ACCESS_KEY_ID, REGION, S3_PREFIX, SECRET_ACCESS_KEY

# An exception in a finalizer, such as an s3fs file closed after its upload was
# discarded, fails the test instead of passing as a warning.
pytestmark = pytest.mark.filterwarnings(
    "error::pytest.PytestUnraisableExceptionWarning"
)

MiB = 1024 * 1024
CHUNK = 64 * 1024
PART = 5 * MiB


@pytest.fixture
def filesystem(s3_endpoint: str) -> s3fs.S3FileSystem:
    return make_filesystem(s3_endpoint, REGION, ACCESS_KEY_ID, SECRET_ACCESS_KEY)


@pytest.fixture
def backend(filesystem: s3fs.S3FileSystem, s3_bucket: str) -> S3Backend:
    return S3Backend(
        s3_bucket, S3_PREFIX, filesystem=filesystem, part_size=PART, retry_delay=0
    )


def pattern(size: int) -> bytes:
    """Return `size` bytes that differ at every offset modulo 251."""
    block = bytes(i % 251 for i in range(251 * 1024))
    return (block * (size // len(block) + 1))[:size]


def write_in_chunks(writer: S3Writer, data: bytes, chunk: int = CHUNK) -> None:
    view = memoryview(data)
    for start in range(0, len(data), chunk):
        writer.write(pa.py_buffer(view[start : start + chunk]))


def open_uploads(client: Any, bucket: str) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = client.list_multipart_uploads(Bucket=bucket).get(
        "Uploads", []
    )
    return uploads


def part_sizes(client: Any, bucket: str, key: str, upload_id: str) -> list[int]:
    reply = client.list_parts(
        Bucket=bucket, Key=f"{S3_PREFIX}/{key}", UploadId=upload_id
    )
    return [part["Size"] for part in reply.get("Parts", [])]


@pytest.mark.parametrize(
    "size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, PART - 1, PART, PART + 1]
)
def test_round_trip_keeps_bytes(backend: S3Backend, size: int) -> None:
    data = pattern(size)
    writer = backend.open_writer("sessions/s1/object")
    write_in_chunks(writer, data)

    committed = writer.commit()
    read = backend.read_range(b"sessions/s1/object", 0, size + 10)

    assert committed == size
    assert read.to_pybytes() == data
    assert backend.sizes([b"sessions/s1/object"]) == {b"sessions/s1/object": size}


def test_object_stored_under_prefix(
    backend: S3Backend, s3_client: Any, s3_bucket: str
) -> None:
    backend.put("sessions/s1/object", b"abc")

    reply = s3_client.get_object(Bucket=s3_bucket, Key="results/sessions/s1/object")

    assert reply["Body"].read() == b"abc"


def test_small_object_uses_single_put(
    backend: S3Backend, s3_client: Any, s3_bucket: str
) -> None:
    writer = backend.open_writer("small")
    write_in_chunks(writer, pattern(PART - 1))

    assert writer.upload_id is None
    assert open_uploads(s3_client, s3_bucket) == []

    writer.commit()

    assert backend.sizes([b"small"]) == {b"small": PART - 1}


def test_upload_sends_first_part_at_part_size(
    backend: S3Backend, s3_client: Any, s3_bucket: str
) -> None:
    writer = backend.open_writer("big")
    write_in_chunks(writer, pattern(PART + CHUNK))

    assert writer.upload_id is not None
    assert part_sizes(s3_client, s3_bucket, "big", writer.upload_id) == [PART]

    writer.abort()


@pytest.mark.parametrize("chunk", [CHUNK, MiB + 3, 7 * MiB], ids=["64k", "1m+3", "7m"])
def test_multipart_parts_reach_minimum(
    backend: S3Backend, s3_client: Any, s3_bucket: str, chunk: int
) -> None:
    data = pattern(12 * MiB)
    writer = backend.open_writer("sessions/s1/large")
    write_in_chunks(writer, data, chunk)

    assert writer.upload_id is not None
    sizes = part_sizes(s3_client, s3_bucket, "sessions/s1/large", writer.upload_id)
    assert len(sizes) == 2
    assert all(size >= PART for size in sizes)

    assert writer.commit() == len(data)
    assert backend.read_range(b"sessions/s1/large", 0, len(data)).to_pybytes() == data
    assert open_uploads(s3_client, s3_bucket) == []


def test_abort_of_multipart_upload_leaves_nothing(
    backend: S3Backend, s3_client: Any, s3_bucket: str
) -> None:
    writer = backend.open_writer("sessions/s1/aborted")
    write_in_chunks(writer, pattern(PART + MiB))
    assert writer.upload_id is not None

    writer.abort()

    assert open_uploads(s3_client, s3_bucket) == []
    assert backend.sizes([b"sessions/s1/aborted"]) == {b"sessions/s1/aborted": None}
    assert backend.list_ids() == []


def test_abort_before_first_part_leaves_nothing(
    backend: S3Backend, s3_client: Any, s3_bucket: str
) -> None:
    writer = backend.open_writer("aborted")
    write_in_chunks(writer, pattern(CHUNK))

    writer.abort()
    del writer  # closing the file on collection must upload nothing

    assert open_uploads(s3_client, s3_bucket) == []
    assert backend.list_ids() == []


def test_dropped_writer_aborts_upload(
    backend: S3Backend, s3_client: Any, s3_bucket: str
) -> None:
    writer = backend.open_writer("dropped")
    write_in_chunks(writer, pattern(PART + CHUNK))

    del writer

    assert open_uploads(s3_client, s3_bucket) == []
    assert backend.list_ids() == []


def test_abort_after_commit_keeps_object(backend: S3Backend) -> None:
    writer = backend.open_writer("kept")
    writer.write(b"x")
    writer.commit()

    writer.abort()

    assert backend.sizes([b"kept"]) == {b"kept": 1}


def test_read_range_returns_slice(backend: S3Backend) -> None:
    data = pattern(1000)
    backend.put("object", data)

    assert backend.read_range(b"object", 10, 20).to_pybytes() == data[10:30]
    assert backend.read_range(b"object", 990, 100).to_pybytes() == data[990:]


def test_read_range_at_end_returns_empty(backend: S3Backend) -> None:
    backend.put("object", b"abc")

    assert backend.read_range(b"object", 3, 10).size == 0
    assert backend.read_range(b"object", 3, 0).size == 0


def test_read_range_of_empty_object_returns_empty(backend: S3Backend) -> None:
    backend.put("empty", b"")

    assert backend.read_range(b"empty", 0, 10).size == 0


def test_read_range_past_end_rejected(backend: S3Backend) -> None:
    backend.put("object", b"abc")

    with pytest.raises(InvalidArgumentError, match="offset 4"):
        backend.read_range(b"object", 4, 1)
    with pytest.raises(InvalidArgumentError, match="offset 4"):
        backend.read_range(b"object", 4, 0)


def test_read_range_negative_rejected(backend: S3Backend) -> None:
    with pytest.raises(InvalidArgumentError):
        backend.read_range(b"object", -1, 1)


def test_read_range_of_missing_object_names_id(backend: S3Backend) -> None:
    with pytest.raises(NotFoundError, match="sessions/s1/missing") as caught:
        backend.read_range(b"sessions/s1/missing", 0, 1)

    assert caught.value.ids == ("sessions/s1/missing",)


def test_sizes_of_present_and_missing(backend: S3Backend) -> None:
    backend.put("a", b"12345")
    backend.put("folder/b", b"")

    found = backend.sizes([b"a", b"folder/b", b"missing", b"folder"])

    assert found == {b"a": 5, b"folder/b": 0, b"missing": None, b"folder": None}


def test_sizes_of_no_ids_is_empty(backend: S3Backend) -> None:
    assert backend.sizes([]) == {}


def test_delete_of_missing_object_tolerated(backend: S3Backend) -> None:
    backend.put("kept", b"1")

    backend.delete([b"missing", b"kept"])

    assert backend.list_ids() == []


def test_delete_over_one_batch(
    backend: S3Backend, s3_client: Any, s3_bucket: str
) -> None:
    keys = [f"many/{index:04d}" for index in range(1005)]
    for key in keys:
        s3_client.put_object(Bucket=s3_bucket, Key=f"{S3_PREFIX}/{key}", Body=b"")
    assert len(backend.list_ids("many/")) == 1005

    backend.delete(key.encode() for key in keys)

    assert backend.list_ids("many/") == []


def test_list_ids_filters_by_prefix(
    backend: S3Backend, s3_client: Any, s3_bucket: str
) -> None:
    for key in ["sessions/s1/a", "sessions/s1/b", "sessions/s10/c", "imports/d"]:
        backend.put(key, b"")
    s3_client.put_object(Bucket=s3_bucket, Key="elsewhere/e", Body=b"")

    assert backend.list_ids() == [
        b"imports/d",
        b"sessions/s1/a",
        b"sessions/s1/b",
        b"sessions/s10/c",
    ]
    assert backend.list_ids("sessions/s1/") == [b"sessions/s1/a", b"sessions/s1/b"]


def test_list_ids_with_parent_prefix_rejected(backend: S3Backend) -> None:
    with pytest.raises(InvalidArgumentError):
        backend.list_ids("../")


BAD_IMPORT_IDS = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\xff\xfe", id="not-utf8"),
    pytest.param(b"/results/key", id="leading-slash"),
    pytest.param(b"../key", id="leading-parent"),
    pytest.param(b"a/../../key", id="inner-parent"),
    pytest.param(b"a\\b", id="backslash"),
    pytest.param(b"a\x00b", id="nul"),
    pytest.param(b"s3://other-bucket/key", id="other-bucket-url"),
    pytest.param(b"https://127.0.0.1/bucket/key", id="https-url"),
    pytest.param(b"file:///etc/passwd", id="file-url"),
    pytest.param(b"a//b", id="empty-segment"),
    pytest.param(b"dir/", id="trailing-slash"),
    pytest.param(b"./", id="root"),
    pytest.param(b"k" * 1020, id="too-long-with-prefix"),
]


@pytest.mark.parametrize("opaque_id", BAD_IMPORT_IDS)
def test_validate_import_id_rejects(backend: S3Backend, opaque_id: bytes) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid"):
        backend.validate_import_id(opaque_id)


def test_id_naming_other_bucket_stays_in_bucket(
    backend: S3Backend, s3_client: Any, s3_bucket: str
) -> None:
    other = f"{s3_bucket}-other"
    s3_client.create_bucket(Bucket=other)
    s3_client.put_object(Bucket=other, Key="secret", Body=b"secret")
    try:
        opaque_id = backend.validate_import_id(f"{other}/secret".encode())

        assert opaque_id == f"{other}/secret".encode()
        assert backend.sizes([opaque_id]) == {opaque_id: None}
    finally:
        s3_client.delete_object(Bucket=other, Key="secret")
        s3_client.delete_bucket(Bucket=other)


def test_imported_object_readable(
    backend: S3Backend, s3_client: Any, s3_bucket: str
) -> None:
    s3_client.put_object(
        Bucket=s3_bucket, Key=f"{S3_PREFIX}/imports/data.bin", Body=b"imported"
    )

    opaque_id = backend.validate_import_id(b"./imports/./data.bin")

    assert opaque_id == b"imports/data.bin"
    assert backend.sizes([opaque_id]) == {opaque_id: 8}
    assert backend.read_range(opaque_id, 0, 100).to_pybytes() == b"imported"


def test_open_backend_builds_s3_backend(s3_settings: ServiceSettings) -> None:
    backend = open_backend(s3_settings)
    backend.put("sessions/s1/object", b"abc")

    assert isinstance(backend, S3Backend)
    assert backend.prefix == S3_PREFIX
    assert backend.part_size == s3_settings.s3_part_size
    assert backend.read_range(b"sessions/s1/object", 0, 3).to_pybytes() == b"abc"


def test_open_backend_without_bucket_rejected(s3_settings: ServiceSettings) -> None:
    with pytest.raises(InvalidArgumentError, match="bucket"):
        open_backend(s3_settings.replace(storage_url="s3:///prefix"))


def test_part_size_under_minimum_rejected(filesystem: s3fs.S3FileSystem) -> None:
    with pytest.raises(InvalidArgumentError, match="part size"):
        S3Backend("bucket", filesystem=filesystem, part_size=PART - 1)


class FaultyS3FileSystem(s3fs.S3FileSystem):  # type: ignore[misc]
    """An s3fs filesystem whose GETs fail as scripted, one fault per request.

    Faults are strings. "cut" returns the first third of the body, as a connection
    closed in the body that nothing detected would. "drop" raises the error that
    aiohttp raises for such a connection. "deny" raises PermissionError, and "ok"
    returns the body unchanged.
    """

    def __init__(self, *args: Any, faults: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.faults = list(faults)
        self.ranges: list[tuple[int | None, int | None]] = []
        self.failing_calls: set[str] = set()

    def call_s3(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Send an S3 request, or fail once for a method in `failing_calls`."""
        if method in self.failing_calls:
            self.failing_calls.discard(method)
            raise OSError(errno.EIO, f"{method} failed by the test")
        return super().call_s3(method, *args, **kwargs)

    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kw: Any
    ) -> bytes:
        self.ranges.append((start, end))
        data: bytes = await super()._cat_file(path, start=start, end=end, **kw)
        fault = self.faults.pop(0) if self.faults else "ok"
        if fault == "cut":
            return data[: len(data) // 3]
        if fault == "drop":
            raise aiohttp.ClientPayloadError("connection closed in the body")
        if fault == "deny":
            raise PermissionError("Access Denied")
        return data


@pytest.fixture
def faulty_backend(s3_endpoint: str, s3_bucket: str) -> S3Backend:
    filesystem = FaultyS3FileSystem(
        key=ACCESS_KEY_ID,
        secret=SECRET_ACCESS_KEY,
        endpoint_url=s3_endpoint,
        client_kwargs={"region_name": REGION},
        skip_instance_cache=True,
        use_listings_cache=False,
        faults=[],
    )
    return S3Backend(
        s3_bucket,
        S3_PREFIX,
        filesystem=filesystem,
        part_size=PART,
        read_attempts=3,
        retry_delay=0,
    )


def faults_of(backend: S3Backend) -> FaultyS3FileSystem:
    filesystem = backend._fs
    assert isinstance(filesystem, FaultyS3FileSystem)
    return filesystem


def test_cut_read_resumes_at_missing_bytes(faulty_backend: S3Backend) -> None:
    data = pattern(300_000)
    faulty_backend.put("object", data)
    filesystem = faults_of(faulty_backend)
    filesystem.faults = ["cut"]

    read = faulty_backend.read_range(b"object", 1000, 200_000)

    assert read.to_pybytes() == data[1000:201_000]
    assert filesystem.ranges == [(1000, 201_000), (1000 + 200_000 // 3, 201_000)]


def test_cut_read_near_end_resumes(faulty_backend: S3Backend) -> None:
    data = pattern(300_000)
    faulty_backend.put("object", data)
    filesystem = faults_of(faulty_backend)
    filesystem.faults = ["cut"]

    read = faulty_backend.read_range(b"object", 299_700, 1000)

    assert read.to_pybytes() == data[299_700:]
    assert filesystem.ranges == [(299_700, 300_700), (299_800, 300_000)]


def test_dropped_read_retried_from_start(faulty_backend: S3Backend) -> None:
    data = pattern(300_000)
    faulty_backend.put("object", data)
    filesystem = faults_of(faulty_backend)
    filesystem.faults = ["drop", "cut"]

    read = faulty_backend.read_range(b"object", 5, 90_000)

    assert read.to_pybytes() == data[5:90_005]
    assert filesystem.ranges == [(5, 90_005), (5, 90_005), (30_005, 90_005)]


def test_persistent_cut_raises_unavailable(faulty_backend: S3Backend) -> None:
    faulty_backend.put("object", pattern(300_000))
    filesystem = faults_of(faulty_backend)
    filesystem.faults = ["cut"] * 10

    with pytest.raises(UnavailableError, match="'object'") as caught:
        faulty_backend.read_range(b"object", 0, 270_000)

    assert caught.value.retryable
    assert filesystem.ranges == [
        (0, 270_000),
        (90_000, 270_000),
        (150_000, 270_000),
    ]


def test_persistent_drop_raises_unavailable(faulty_backend: S3Backend) -> None:
    faulty_backend.put("object", pattern(1000))
    filesystem = faults_of(faulty_backend)
    filesystem.faults = ["drop"] * 10

    with pytest.raises(UnavailableError) as caught:
        faulty_backend.read_range(b"object", 0, 1000)

    assert isinstance(caught.value.__cause__, aiohttp.ClientPayloadError)
    assert len(filesystem.ranges) == 3


def test_denied_read_not_retried(faulty_backend: S3Backend) -> None:
    faulty_backend.put("object", pattern(1000))
    filesystem = faults_of(faulty_backend)
    filesystem.faults = ["deny"]

    with pytest.raises(InternalError, match="access denied"):
        faulty_backend.read_range(b"object", 0, 1000)

    assert len(filesystem.ranges) == 1


def test_abort_after_failed_multipart_commit(
    faulty_backend: S3Backend, s3_client: Any, s3_bucket: str
) -> None:
    writer = faulty_backend.open_writer("sessions/s1/object")
    write_in_chunks(writer, pattern(PART + CHUNK))
    faults_of(faulty_backend).failing_calls = {"complete_multipart_upload"}

    with pytest.raises(UnavailableError, match="committing object"):
        writer.commit()
    with pytest.raises(FailedPreconditionError):
        writer.commit()
    writer.abort()

    assert open_uploads(s3_client, s3_bucket) == []
    assert faulty_backend.list_ids() == []


def test_abort_after_failed_single_put(
    faulty_backend: S3Backend, s3_client: Any, s3_bucket: str
) -> None:
    writer = faulty_backend.open_writer("sessions/s1/object")
    writer.write(b"small")
    faults_of(faulty_backend).failing_calls = {"put_object"}

    with pytest.raises(UnavailableError, match="committing object"):
        writer.commit()
    writer.abort()

    assert open_uploads(s3_client, s3_bucket) == []
    assert faulty_backend.list_ids() == []
