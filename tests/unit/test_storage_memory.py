"""Tests of the in-memory backend."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from results_service.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from results_service.settings import ServiceSettings
from results_service.storage import open_backend
from results_service.storage.memory import MemoryBackend

CHUNK = 64 * 1024


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


def pattern(size: int) -> bytes:
    """Return `size` bytes that differ at every offset modulo 251."""
    return bytes(i % 251 for i in range(size))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7])
def test_round_trip_keeps_bytes(backend: MemoryBackend, size: int) -> None:
    data = pattern(size)
    writer = backend.open_writer("sessions/s1/object")
    for start in range(0, size, CHUNK):
        writer.write(pa.py_buffer(data[start : start + CHUNK]))

    committed = writer.commit()
    read = backend.read_range(b"sessions/s1/object", 0, size + 10)

    assert committed == size
    assert read.to_pybytes() == data
    assert backend.sizes([b"sessions/s1/object"]) == {b"sessions/s1/object": size}


def test_object_invisible_before_commit(backend: MemoryBackend) -> None:
    writer = backend.open_writer("pending")
    writer.write(b"abc")

    assert backend.sizes([b"pending"]) == {b"pending": None}
    assert backend.list_ids() == []

    writer.commit()

    assert backend.list_ids() == [b"pending"]


def test_abort_leaves_nothing(backend: MemoryBackend) -> None:
    writer = backend.open_writer("aborted")
    writer.write(pattern(CHUNK + 1))

    writer.abort()

    assert backend.sizes([b"aborted"]) == {b"aborted": None}
    assert backend.list_ids() == []


def test_write_after_abort_rejected(backend: MemoryBackend) -> None:
    writer = backend.open_writer("aborted")
    writer.abort()

    with pytest.raises(FailedPreconditionError, match="'aborted'"):
        writer.write(b"late")


def test_commit_twice_rejected(backend: MemoryBackend) -> None:
    writer = backend.open_writer("done")
    writer.commit()

    with pytest.raises(FailedPreconditionError):
        writer.commit()


def test_read_range_returns_slice(backend: MemoryBackend) -> None:
    data = pattern(1000)
    backend.put("object", data)

    assert backend.read_range(b"object", 10, 20).to_pybytes() == data[10:30]
    assert backend.read_range(b"object", 990, 100).to_pybytes() == data[990:]


def test_read_range_at_end_returns_empty(backend: MemoryBackend) -> None:
    backend.put("object", b"abc")

    assert backend.read_range(b"object", 3, 10).size == 0


def test_read_range_past_end_rejected(backend: MemoryBackend) -> None:
    backend.put("object", b"abc")

    with pytest.raises(InvalidArgumentError, match="offset 4"):
        backend.read_range(b"object", 4, 1)


@pytest.mark.parametrize(("offset", "length"), [(-1, 1), (0, -1)])
def test_read_range_negative_rejected(
    backend: MemoryBackend, offset: int, length: int
) -> None:
    backend.put("object", b"abc")

    with pytest.raises(InvalidArgumentError):
        backend.read_range(b"object", offset, length)


def test_read_range_of_missing_object_names_id(backend: MemoryBackend) -> None:
    with pytest.raises(NotFoundError, match="sessions/s1/missing") as caught:
        backend.read_range(b"sessions/s1/missing", 0, 1)

    assert caught.value.ids == ("sessions/s1/missing",)


@settings(max_examples=60, deadline=None)
@given(offset=st.integers(0, 3000), length=st.integers(0, 3000))
def test_read_range_matches_slice(offset: int, length: int) -> None:
    backend = MemoryBackend()
    data = pattern(2500)
    backend.put("object", data)

    if offset > len(data):
        with pytest.raises(InvalidArgumentError):
            backend.read_range(b"object", offset, length)
    else:
        read = backend.read_range(b"object", offset, length)
        assert read.to_pybytes() == data[offset : offset + length]


def test_sizes_of_present_and_missing(backend: MemoryBackend) -> None:
    backend.put("a", b"12345")
    backend.put("b", b"")

    found = backend.sizes([b"a", b"b", b"missing"])

    assert found == {b"a": 5, b"b": 0, b"missing": None}


def test_delete_of_missing_object_tolerated(backend: MemoryBackend) -> None:
    backend.put("kept", b"1")

    backend.delete([b"missing", b"kept"])

    assert backend.list_ids() == []


def test_list_ids_filters_by_prefix(backend: MemoryBackend) -> None:
    for key in ["sessions/s1/a", "sessions/s1/b", "sessions/s10/c", "imports/d"]:
        backend.put(key, b"")

    assert backend.list_ids("sessions/s1/") == [b"sessions/s1/a", b"sessions/s1/b"]
    assert len(backend.list_ids()) == 4


def test_keys_normalized_on_write_and_read(backend: MemoryBackend) -> None:
    backend.put("./imports/./data.bin", b"abc")

    assert backend.list_ids() == [b"imports/data.bin"]
    assert backend.read_range(b"imports/./data.bin", 0, 3).to_pybytes() == b"abc"


BAD_IMPORT_IDS = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\xff\xfe", id="not-utf8"),
    pytest.param(b"/absolute", id="absolute"),
    pytest.param(b"../outside", id="leading-parent"),
    pytest.param(b"a/../../outside", id="inner-parent"),
    pytest.param(b"a\\b", id="backslash"),
    pytest.param(b"a\x00b", id="nul"),
    pytest.param(b"s3://bucket/key", id="s3-url"),
    pytest.param(b"file:///etc/passwd", id="file-url"),
    pytest.param(b"memory://key", id="memory-url"),
    pytest.param(b"a//b", id="empty-segment"),
    pytest.param(b"./", id="root"),
    pytest.param(b"k" * 1025, id="too-long"),
]


@pytest.mark.parametrize("opaque_id", BAD_IMPORT_IDS)
def test_validate_import_id_rejects(backend: MemoryBackend, opaque_id: bytes) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid"):
        backend.validate_import_id(opaque_id)


def test_validate_import_id_strips_dot_segments(backend: MemoryBackend) -> None:
    assert backend.validate_import_id(b"./imports/./data.bin") == b"imports/data.bin"


def test_inspect_imports_normalizes_and_sizes(backend: MemoryBackend) -> None:
    backend.put("imports/data.bin", b"imported")

    inspected = backend.inspect_imports([b"./imports/data.bin", b"imports/missing"])

    assert inspected == [(b"imports/data.bin", 8), (b"imports/missing", None)]


def test_inspect_imports_rejects_parent_key(backend: MemoryBackend) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid"):
        backend.inspect_imports([b"../secret"])


def test_concurrent_writers_keep_every_object(backend: MemoryBackend) -> None:
    def write_objects(thread: int) -> None:
        for index in range(50):
            backend.put(f"t{thread}/{index}", pattern(index))

    threads = [threading.Thread(target=write_objects, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(backend.list_ids()) == 8 * 50
    assert backend.sizes([b"t3/49"]) == {b"t3/49": 49}


def test_open_backend_builds_memory_backend() -> None:
    backend = open_backend(ServiceSettings(storage_url="memory://"))

    assert isinstance(backend, MemoryBackend)
