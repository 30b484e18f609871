"""Integration tests of the data path on a real local Ray: upload, download, delete
and import of result data, against the local directory backend and a moto S3 server.

Data sizes are a few MiB, so that transfers cross the default 4 MiB chunks and
4-chunk windows. `rpc` drives the upload steps one by one to reproduce races.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import ray

from results_service.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ServiceError,
    unwrap_ray_error,
)
from results_service.ids import shard_of
from results_service.records import (
    ResultCreate,
    ResultStatus,
    TaskDefinition,
    TaskStatus,
)
from results_service.settings import ServiceSettings
from tests.s3_server import (
    ACCESS_KEY_ID,
    REGION,
    S3_PREFIX,
    SECRET_ACCESS_KEY,
    empty_bucket,
)
from tests.service import rpc, session_objects

KiB = 1024
MiB = 1024 * KiB


def storage_root(client: Any) -> Path:
    """Return the directory behind a client's `file://` storage URL."""
    url = client.settings.storage_url
    assert url.startswith("file://")
    return Path(url.removeprefix("file://"))


def write_object(client: Any, data: bytes, folder: str = "imports") -> str:
    """Write a file under the storage root and return its key."""
    key = f"{folder}/{uuid.uuid4().hex}.bin"
    path = storage_root(client) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return key


def new_result(client: Any, session_id: str, **options: Any) -> str:
    (record,) = client.create_results_metadata(
        session_id, [ResultCreate("r", **options)]
    )
    return record.result_id


def download(client: Any, session_id: str, result_id: str) -> list[pa.Buffer]:
    return list(client.download_result_data(session_id, result_id))


def failing_chunks(good_chunks: int, chunk_size: int) -> Iterator[bytes]:
    """Yield some chunks, then raise as a reader of a broken source would."""
    for _ in range(good_chunks):
        yield os.urandom(chunk_size)
    raise OSError("source read failed")


# Uploads from each kind of source


def test_upload_bytes_round_trip(client: Any, session_id: str) -> None:
    result_id = new_result(client, session_id)
    data = os.urandom(9 * MiB + 3)

    record = client.upload_result_data(session_id, result_id, data)

    assert record.status == ResultStatus.COMPLETED
    assert record.size == len(data)
    assert record.opaque_id.startswith(f"sessions/{session_id}/".encode())
    assert client.read_result_data(session_id, result_id) == data


def test_upload_completes_stored_record(client: Any, session_id: str) -> None:
    result_id = new_result(client, session_id)

    uploaded = client.upload_result_data(session_id, result_id, b"abc")

    assert client.get_result(session_id, result_id) == uploaded
    assert uploaded.completed_at is not None
    assert uploaded.opaque_id in session_objects(client, session_id)


@pytest.mark.parametrize("as_path", [str, Path], ids=["str", "pathlike"])
def test_upload_file_path_round_trip(
    client: Any, session_id: str, tmp_path: Path, as_path: Any
) -> None:
    result_id = new_result(client, session_id)
    data = os.urandom(5 * MiB + 17)
    source = tmp_path / "input.bin"
    source.write_bytes(data)

    record = client.upload_result_data(session_id, result_id, as_path(source))

    assert record.size == len(data)
    assert client.read_result_data(session_id, result_id) == data


def test_upload_binary_file_round_trip(
    client: Any, session_id: str, tmp_path: Path
) -> None:
    result_id = new_result(client, session_id)
    data = os.urandom(6 * MiB + 1)
    source = tmp_path / "input.bin"
    source.write_bytes(data)

    with open(source, "rb") as file:
        record = client.upload_result_data(session_id, result_id, file)

    assert record.size == len(data)
    assert client.read_result_data(session_id, result_id) == data


def test_upload_bytes_io_round_trip(client: Any, session_id: str) -> None:
    result_id = new_result(client, session_id)
    data = os.urandom(3 * MiB + 5)

    record = client.upload_result_data(session_id, result_id, io.BytesIO(data))

    assert record.size == len(data)
    assert client.read_result_data(session_id, result_id) == data


def test_upload_iterable_of_odd_chunks_round_trip(client: Any, session_id: str) -> None:
    result_id = new_result(client, session_id)
    sizes = [1, 4 * MiB + 1, 0, 3, MiB - 1, 9 * MiB + 7, 5, 4 * MiB]
    chunks = [os.urandom(size) for size in sizes]
    kinds = [bytes, bytearray, memoryview, pa.py_buffer]
    mixed = [kinds[i % len(kinds)](chunk) for i, chunk in enumerate(chunks)]
    data = b"".join(chunks)

    record = client.upload_result_data(session_id, result_id, iter(mixed))

    assert record.size == len(data)
    assert client.read_result_data(session_id, result_id) == data


def test_upload_zero_bytes_completes_empty(client: Any, session_id: str) -> None:
    result_id = new_result(client, session_id)

    record = client.upload_result_data(session_id, result_id, b"")

    assert record.status == ResultStatus.COMPLETED
    assert record.size == 0
    assert download(client, session_id, result_id) == []


def test_upload_empty_iterable_completes_empty(client: Any, session_id: str) -> None:
    result_id = new_result(client, session_id)

    record = client.upload_result_data(session_id, result_id, iter([]))

    assert record.size == 0
    assert client.read_result_data(session_id, result_id) == b""


def test_upload_queues_dependent_task(client: Any, task_session: str) -> None:
    dependency, output = client.create_results_metadata(task_session, ["in", "out"])
    (payload,) = client.create_results(task_session, {"payload": b"{}"})
    (task,) = client.submit_tasks(
        task_session,
        [
            TaskDefinition(
                payload.result_id, (dependency.result_id,), (output.result_id,)
            )
        ],
    )

    client.upload_result_data(task_session, dependency.result_id, b"input")

    assert client.get_task(task_session, task.task_id).status == TaskStatus.SUBMITTED


# Downloads


def test_download_chunks_within_max_size(client: Any, session_id: str) -> None:
    chunk_size = client.get_service_configuration().data_chunk_max_size
    window = client.get_service_configuration().transfer_window_chunks
    # Spans two read windows and ends with a partial chunk.
    data = os.urandom(chunk_size * (window + 1) + 5)
    (record,) = client.create_results(session_id, {"r": data})

    chunks = download(client, session_id, record.result_id)

    assert all(len(chunk) <= chunk_size for chunk in chunks)
    assert len(chunks) == math.ceil(len(data) / chunk_size)
    assert b"".join(chunk.to_pybytes() for chunk in chunks) == data


def test_download_chunks_are_arrow_buffers(client: Any, session_id: str) -> None:
    (record,) = client.create_results(session_id, {"r": b"xyz"})

    chunks = download(client, session_id, record.result_id)

    assert [type(chunk) for chunk in chunks] == [pa.Buffer]


def test_download_exact_multiple_of_chunk_size(client: Any, session_id: str) -> None:
    chunk_size = client.get_service_configuration().data_chunk_max_size
    result_id = new_result(client, session_id)
    client.upload_result_data(session_id, result_id, os.urandom(2 * chunk_size))

    chunks = download(client, session_id, result_id)

    assert [len(chunk) for chunk in chunks] == [chunk_size, chunk_size]


def test_download_zero_bytes_yields_no_chunk(client: Any, session_id: str) -> None:
    (record,) = client.create_results(session_id, {"empty": b""})

    assert download(client, session_id, record.result_id) == []


def test_download_to_file_writes_data(
    client: Any, session_id: str, tmp_path: Path
) -> None:
    data = os.urandom(MiB + 1)
    (record,) = client.create_results(session_id, {"r": data})
    target = tmp_path / "out.bin"

    size = client.download_to_file(session_id, record.result_id, target)

    assert size == len(data)
    assert target.read_bytes() == data


def test_download_created_result_rejected(client: Any, session_id: str) -> None:
    result_id = new_result(client, session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        download(client, session_id, result_id)

    assert result_id in caught.value.message
    assert "CREATED" in caught.value.message


def test_download_deleted_result_rejected(client: Any, session_id: str) -> None:
    (record,) = client.create_results(session_id, {"r": b"data"})
    client.delete_results_data(session_id, [record.result_id])

    with pytest.raises(FailedPreconditionError) as caught:
        download(client, session_id, record.result_id)

    assert record.result_id in caught.value.message
    assert "DELETED" in caught.value.message


def test_download_aborted_result_rejected(client: Any, session_id: str) -> None:
    result_id = new_result(client, session_id)
    client.cancel_session(session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        download(client, session_id, result_id)

    assert result_id in caught.value.message
    assert "ABORTED" in caught.value.message


def test_download_result_of_another_session_not_found(client: Any) -> None:
    owner = client.create_session()
    other = client.create_session()
    (record,) = client.create_results(owner, {"r": b"data"})

    with pytest.raises(NotFoundError) as caught:
        download(client, other, record.result_id)

    assert record.result_id in caught.value.message


def test_storage_read_forged_token_rejected(client: Any, session_id: str) -> None:
    (record,) = client.create_results(session_id, {"r": b"secret"})
    forged = b"\0" * 32 + record.opaque_id

    with pytest.raises(InvalidArgumentError) as caught:
        try:
            ray.get(client.actors.storage.read.remote(forged, 0, 6))
        except ServiceError as error:
            raise unwrap_ray_error(error) from None

    assert "token" in caught.value.message


# Rejected uploads


def test_upload_to_completed_result_rejected(client: Any, session_id: str) -> None:
    (record,) = client.create_results(session_id, {"r": b"first"})
    before = session_objects(client, session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        client.upload_result_data(session_id, record.result_id, b"second")

    assert record.result_id in caught.value.message
    assert session_objects(client, session_id) == before
    assert client.read_result_data(session_id, record.result_id) == b"first"


def test_upload_finished_after_completion_deletes_its_object(
    client: Any, session_id: str
) -> None:
    result_id = new_result(client, session_id)
    first = rpc(client, "open_upload", session_id, result_id)
    second = rpc(client, "open_upload", session_id, result_id)
    rpc(client, "write_upload", first, [b"first"])
    rpc(client, "write_upload", second, [b"second"])
    completed = rpc(client, "finish_upload", first)

    with pytest.raises(FailedPreconditionError) as caught:
        rpc(client, "finish_upload", second)

    assert result_id in caught.value.message
    assert session_objects(client, session_id) == [completed.opaque_id]
    assert client.open_uploads() == 0
    assert client.read_result_data(session_id, result_id) == b"first"


def test_upload_to_unknown_result_not_found(client: Any, session_id: str) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.upload_result_data(session_id, "no-such-result", b"data")

    assert "no-such-result" in caught.value.message
    assert client.open_uploads() == 0


def test_upload_to_result_of_another_session_not_found(client: Any) -> None:
    owner = client.create_session()
    other = client.create_session()
    result_id = new_result(client, owner)

    with pytest.raises(NotFoundError) as caught:
        client.upload_result_data(other, result_id, b"data")

    assert result_id in caught.value.message
    assert client.get_result(owner, result_id).status == ResultStatus.CREATED
    assert session_objects(client, other) == []


def test_upload_to_unknown_session_not_found(client: Any) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.upload_result_data("no-such-session", "no-such-result", b"data")

    assert "no-such-session" in caught.value.message


def test_upload_into_cancelled_session_rejected(client: Any, session_id: str) -> None:
    result_id = new_result(client, session_id)
    client.cancel_session(session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        client.upload_result_data(session_id, result_id, b"data")

    assert session_id in caught.value.message
    assert session_objects(client, session_id) == []


def test_upload_into_closed_session_accepted(client: Any, session_id: str) -> None:
    result_id = new_result(client, session_id)
    client.close_session(session_id)

    record = client.upload_result_data(session_id, result_id, b"late data")

    assert record.status == ResultStatus.COMPLETED


def test_upload_cancelled_while_open_deletes_its_object(
    client: Any, session_id: str
) -> None:
    result_id = new_result(client, session_id)
    upload_id = rpc(client, "open_upload", session_id, result_id)
    rpc(client, "write_upload", upload_id, [b"data"])
    client.cancel_session(session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        rpc(client, "finish_upload", upload_id)

    assert result_id in caught.value.message
    assert session_objects(client, session_id) == []


def test_upload_finished_after_purge_deletes_its_object(
    client: Any, session_id: str
) -> None:
    result_id = new_result(client, session_id)
    client.close_session(session_id)
    upload_id = rpc(client, "open_upload", session_id, result_id)
    rpc(client, "write_upload", upload_id, [b"data"])
    client.purge_session(session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        rpc(client, "finish_upload", upload_id)

    assert session_id in caught.value.message
    assert session_objects(client, session_id) == []
    assert client.get_result(session_id, result_id).status == ResultStatus.CREATED


def test_upload_finished_after_session_deletion_deletes_its_object(
    client: Any, session_id: str
) -> None:
    result_id = new_result(client, session_id)
    upload_id = rpc(client, "open_upload", session_id, result_id)
    rpc(client, "write_upload", upload_id, [b"data"])
    client.delete_session(session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        rpc(client, "finish_upload", upload_id)

    assert session_id in caught.value.message
    assert session_objects(client, session_id) == []


def test_upload_iterable_raising_midway_leaves_nothing(
    client: Any, session_id: str
) -> None:
    result_id = new_result(client, session_id)
    chunk_size = client.get_service_configuration().data_chunk_max_size

    with pytest.raises(OSError, match="source read failed"):
        client.upload_result_data(session_id, result_id, failing_chunks(9, chunk_size))

    assert client.get_result(session_id, result_id).status == ResultStatus.CREATED
    assert client.open_uploads() == 0
    assert session_objects(client, session_id) == []
    assert os.listdir(storage_root(client) / ".partial") == []


def test_upload_invalid_chunk_type_leaves_nothing(client: Any, session_id: str) -> None:
    result_id = new_result(client, session_id)

    with pytest.raises(TypeError) as caught:
        client.upload_result_data(session_id, result_id, [b"ok", 42])

    assert "int" in str(caught.value)
    assert client.open_uploads() == 0
    assert session_objects(client, session_id) == []


def test_upload_after_failed_upload_completes(client: Any, session_id: str) -> None:
    result_id = new_result(client, session_id)
    with pytest.raises(OSError):
        client.upload_result_data(session_id, result_id, failing_chunks(1, 1024))

    record = client.upload_result_data(session_id, result_id, b"retried")

    assert record.status == ResultStatus.COMPLETED
    assert client.read_result_data(session_id, result_id) == b"retried"


def test_write_upload_oversized_chunk_aborts_upload(
    client: Any, session_id: str
) -> None:
    chunk_size = client.get_service_configuration().data_chunk_max_size
    result_id = new_result(client, session_id)
    upload_id = rpc(client, "open_upload", session_id, result_id)

    with pytest.raises(InvalidArgumentError) as caught:
        rpc(client, "write_upload", upload_id, [b"x" * (chunk_size + 1)])

    assert str(chunk_size) in caught.value.message
    assert client.open_uploads() == 0
    assert session_objects(client, session_id) == []


# Task outputs


def outputs_on_two_shards(client: Any, session_id: str) -> list[str]:
    """Create CREATED results until two of them live on different shards."""
    shards = client.settings.results_shards
    first = new_result(client, session_id)
    while True:
        second = new_result(client, session_id)
        if shard_of(second, shards) != shard_of(first, shards):
            return [first, second]


def test_complete_task_rejected_keeps_completed_output_data(
    client: Any, task_session: str
) -> None:
    kept, taken = outputs_on_two_shards(client, task_session)
    (payload,) = client.create_results(task_session, {"payload": b"{}"})
    (task,) = client.submit_tasks(
        task_session,
        [TaskDefinition(payload.result_id, (), (kept, taken), {"priority": 99})],
    )
    # The highest priority puts this task ahead of any other in the shared queue.
    (lease,) = client.acquire_tasks("default", "worker")
    assert lease.task_id == task.task_id
    client.upload_result_data(task_session, taken, b"from the client")

    # The shard of `kept` completes its part; the shard of `taken` rejects its part.
    with pytest.raises(FailedPreconditionError) as caught:
        client.complete_task(
            task_session, task.task_id, lease.lease_id, {kept: b"out", taken: b"late"}
        )

    assert taken in caught.value.message
    assert client.get_result(task_session, kept).status == ResultStatus.COMPLETED
    assert client.read_result_data(task_session, kept) == b"out"
    assert client.read_result_data(task_session, taken) == b"from the client"


# delete_results_data


def test_delete_results_data_marks_deleted(client: Any, session_id: str) -> None:
    (record,) = client.create_results(session_id, {"r": b"data"})

    deleted = client.delete_results_data(session_id, [record.result_id])

    after = client.get_result(session_id, record.result_id)
    assert deleted == [record.result_id]
    assert after.status == ResultStatus.DELETED
    assert after.opaque_id == b""
    assert record.opaque_id not in session_objects(client, session_id)


def test_delete_results_data_manual_deletion_keeps_object(
    client: Any, session_id: str
) -> None:
    (record,) = client.create_results(
        session_id, [ResultCreate("kept", manual_deletion=True, data=b"mine")]
    )

    client.delete_results_data(session_id, [record.result_id])

    assert (
        client.get_result(session_id, record.result_id).status == ResultStatus.DELETED
    )
    assert record.opaque_id in session_objects(client, session_id)


def test_delete_results_data_created_result_rejected(
    client: Any, session_id: str
) -> None:
    result_id = new_result(client, session_id)
    (completed,) = client.create_results(session_id, {"r": b"data"})

    with pytest.raises(FailedPreconditionError) as caught:
        client.delete_results_data(session_id, [completed.result_id, result_id])

    assert result_id in caught.value.message
    assert client.get_result(session_id, result_id).status == ResultStatus.CREATED
    assert client.get_result(session_id, completed.result_id).status == (
        ResultStatus.COMPLETED
    )
    assert completed.opaque_id in session_objects(client, session_id)


def test_delete_results_data_twice_returns_nothing(
    client: Any, session_id: str
) -> None:
    (record,) = client.create_results(session_id, {"r": b"data"})
    client.delete_results_data(session_id, [record.result_id])

    deleted = client.delete_results_data(session_id, [record.result_id])

    assert deleted == []


def test_delete_results_data_unknown_result_not_found(
    client: Any, session_id: str
) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.delete_results_data(session_id, ["no-such-result"])

    assert "no-such-result" in caught.value.message


# import_results_data


def test_import_results_data_sizes_from_storage(client: Any, session_id: str) -> None:
    data = os.urandom(12345)
    key = write_object(client, data)
    result_id = new_result(client, session_id)

    (record,) = client.import_results_data(session_id, [(result_id, key.encode())])

    assert record.status == ResultStatus.COMPLETED
    assert record.size == len(data)
    assert record.opaque_id == key.encode()
    assert client.read_result_data(session_id, result_id) == data


def test_import_results_data_accepts_text_ids(client: Any, session_id: str) -> None:
    key = write_object(client, b"abc")
    result_id = new_result(client, session_id)

    (record,) = client.import_results_data(session_id, [(result_id, key)])

    assert record.size == 3


def test_import_results_data_normalizes_dot_segments(
    client: Any, session_id: str
) -> None:
    key = write_object(client, b"abc")
    result_id = new_result(client, session_id)

    (record,) = client.import_results_data(session_id, [(result_id, f"./{key}")])

    assert record.opaque_id == key.encode()


def test_import_results_data_queues_dependent_task(
    client: Any, task_session: str
) -> None:
    dependency, output = client.create_results_metadata(task_session, ["in", "out"])
    (payload,) = client.create_results(task_session, {"payload": b"{}"})
    (task,) = client.submit_tasks(
        task_session,
        [
            TaskDefinition(
                payload.result_id, (dependency.result_id,), (output.result_id,)
            )
        ],
    )

    client.import_results_data(
        task_session, [(dependency.result_id, write_object(client, b"in"))]
    )

    assert client.get_task(task_session, task.task_id).status == TaskStatus.SUBMITTED


def test_import_results_data_missing_object_not_found(
    client: Any, session_id: str
) -> None:
    result_id = new_result(client, session_id)

    with pytest.raises(NotFoundError) as caught:
        client.import_results_data(session_id, [(result_id, b"imports/missing.bin")])

    assert "imports/missing.bin" in caught.value.message
    assert client.get_result(session_id, result_id).status == ResultStatus.CREATED


def test_import_results_data_completed_result_rejected(
    client: Any, session_id: str
) -> None:
    (record,) = client.create_results(session_id, {"r": b"data"})
    key = write_object(client, b"other")

    with pytest.raises(FailedPreconditionError) as caught:
        client.import_results_data(session_id, [(record.result_id, key)])

    assert record.result_id in caught.value.message
    assert client.read_result_data(session_id, record.result_id) == b"data"


@pytest.mark.parametrize(
    "opaque_id",
    [
        b"/etc/passwd",
        b"../outside.bin",
        b"imports/../../outside.bin",
        b"s3://x",
        b".partial/upload",
    ],
    ids=["absolute", "dotdot", "nested-dotdot", "url", "partial-uploads"],
)
def test_import_results_data_invalid_id_rejected(
    client: Any, session_id: str, opaque_id: bytes
) -> None:
    result_id = new_result(client, session_id)

    with pytest.raises(InvalidArgumentError) as caught:
        client.import_results_data(session_id, [(result_id, opaque_id)])

    assert opaque_id.decode() in caught.value.message
    assert client.get_result(session_id, result_id).status == ResultStatus.CREATED


def test_import_results_data_symlink_outside_root_rejected(
    client: Any, session_id: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"not yours")
    key = f"links/{uuid.uuid4().hex}"
    link = storage_root(client) / key
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    result_id = new_result(client, session_id)

    with pytest.raises(InvalidArgumentError) as caught:
        client.import_results_data(session_id, [(result_id, key)])

    assert key in caught.value.message
    assert client.get_result(session_id, result_id).status == ResultStatus.CREATED


def test_import_results_data_other_session_object_rejected(client: Any) -> None:
    owner = client.create_session()
    thief = client.create_session()
    (record,) = client.create_results(owner, {"r": b"private"})
    result_id = new_result(client, thief)

    with pytest.raises(InvalidArgumentError) as caught:
        client.import_results_data(thief, [(result_id, record.opaque_id)])

    assert record.opaque_id.decode() in caught.value.message
    assert client.get_result(thief, result_id).status == ResultStatus.CREATED


def test_import_results_data_own_session_object_rejected(
    client: Any, session_id: str
) -> None:
    (record,) = client.create_results(session_id, {"r": b"data"})
    result_id = new_result(client, session_id)

    with pytest.raises(InvalidArgumentError) as caught:
        client.import_results_data(session_id, [(result_id, record.opaque_id)])

    assert record.opaque_id.decode() in caught.value.message
    assert client.get_result(session_id, result_id).status == ResultStatus.CREATED


def test_import_results_data_sessions_folder_rejected(
    client: Any, session_id: str
) -> None:
    result_id = new_result(client, session_id)

    with pytest.raises(InvalidArgumentError) as caught:
        client.import_results_data(session_id, [(result_id, b"sessions/x")])

    assert "sessions/x" in caught.value.message


def test_import_results_data_duplicate_result_ids_rejected(
    client: Any, session_id: str
) -> None:
    result_id = new_result(client, session_id)
    key = write_object(client, b"abc")

    with pytest.raises(InvalidArgumentError) as caught:
        client.import_results_data(session_id, [(result_id, key), (result_id, key)])

    assert result_id in caught.value.message
    assert client.get_result(session_id, result_id).status == ResultStatus.CREATED


def test_import_results_data_empty_list_returns_empty(
    client: Any, session_id: str
) -> None:
    assert client.import_results_data(session_id, []) == []


def test_import_other_session_result_not_found(
    client: Any,
) -> None:
    owner = client.create_session()
    other = client.create_session()
    result_id = new_result(client, owner)
    key = write_object(client, b"abc")

    with pytest.raises(NotFoundError) as caught:
        client.import_results_data(other, [(result_id, key)])

    assert result_id in caught.value.message


def test_import_results_data_cancelled_session_rejected(
    client: Any, session_id: str
) -> None:
    result_id = new_result(client, session_id)
    key = write_object(client, b"abc")
    client.cancel_session(session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        client.import_results_data(session_id, [(result_id, key)])

    assert session_id in caught.value.message


def test_import_results_data_malformed_pair_rejected(
    client: Any, session_id: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.import_results_data(session_id, [("only-one",)])

    assert "only-one" in caught.value.message


# S3 storage


@pytest.fixture(scope="module")
def s3_bucket_for_module(s3_client: Any) -> Iterator[str]:
    """A bucket shared by the S3 tests of this module, emptied and removed after."""
    bucket = f"data-{uuid.uuid4().hex[:24]}"
    s3_client.create_bucket(Bucket=bucket)
    yield bucket
    empty_bucket(s3_client, bucket)
    s3_client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="module")
def s3_service(services: Any, s3_endpoint: str, s3_bucket_for_module: str) -> Any:
    """A client of a service storing in S3, shared by this module's S3 tests.

    One application for all of them, because each start costs several seconds of
    actor start-up on two cores; the settings are those of the `s3_settings`
    fixture, on a bucket that lives as long as the module.
    """
    settings = ServiceSettings(
        storage_url=f"s3://{s3_bucket_for_module}/{S3_PREFIX}",
        s3_endpoint_url=s3_endpoint,
        s3_region=REGION,
        s3_access_key_id=ACCESS_KEY_ID,
        s3_secret_access_key=SECRET_ACCESS_KEY,
    )
    return services.start(settings=dataclasses.replace(settings, tasks_shards=1))


def open_multipart_uploads(s3_client: Any, bucket: str) -> list[dict[str, Any]]:
    return s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_s3_upload_download_round_trip(s3_service: Any) -> None:
    client = s3_service
    session_id = client.create_session()
    chunk_size = client.get_service_configuration().data_chunk_max_size
    result_id = new_result(client, session_id)
    data = os.urandom(2 * chunk_size + 7)

    record = client.upload_result_data(session_id, result_id, data)
    chunks = download(client, session_id, result_id)

    assert record.size == len(data)
    assert [len(chunk) for chunk in chunks] == [chunk_size, chunk_size, 7]
    assert b"".join(chunk.to_pybytes() for chunk in chunks) == data


def test_s3_upload_of_small_chunks_commits_whole_object(
    s3_service: Any, s3_client: Any, s3_bucket_for_module: str
) -> None:
    client = s3_service
    session_id = client.create_session()
    result_id = new_result(client, session_id)
    chunks = [os.urandom(64 * KiB) for _ in range(12 * 16)]
    expected = hashlib.sha256(b"".join(chunks)).hexdigest()

    record = client.upload_result_data(session_id, result_id, iter(chunks))
    key = f"{S3_PREFIX}/{record.opaque_id.decode()}"
    stored = s3_client.get_object(Bucket=s3_bucket_for_module, Key=key)["Body"].read()

    assert record.size == 12 * MiB
    assert len(stored) == 12 * MiB
    assert hashlib.sha256(stored).hexdigest() == expected
    assert open_multipart_uploads(s3_client, s3_bucket_for_module) == []


def test_s3_upload_to_completed_result_leaves_no_object(
    s3_service: Any, s3_client: Any, s3_bucket_for_module: str
) -> None:
    client = s3_service
    session_id = client.create_session()
    result_id = new_result(client, session_id)
    first = rpc(client, "open_upload", session_id, result_id)
    second = rpc(client, "open_upload", session_id, result_id)
    rpc(client, "write_upload", first, [b"first"])
    rpc(client, "write_upload", second, [os.urandom(4 * MiB) for _ in range(3)])
    completed = rpc(client, "finish_upload", first)

    with pytest.raises(FailedPreconditionError) as caught:
        rpc(client, "finish_upload", second)

    assert result_id in caught.value.message
    assert session_objects(client, session_id) == [completed.opaque_id]
    assert open_multipart_uploads(s3_client, s3_bucket_for_module) == []


def test_s3_upload_raising_midway_leaves_no_multipart_upload(
    s3_service: Any, s3_client: Any, s3_bucket_for_module: str
) -> None:
    client = s3_service
    session_id = client.create_session()
    result_id = new_result(client, session_id)

    # The source fails while the first window of four chunks is still being
    # written, so the abort overlaps a write that uploads multipart parts.
    with pytest.raises(OSError):
        client.upload_result_data(session_id, result_id, failing_chunks(5, 4 * MiB))

    assert client.get_result(session_id, result_id).status == ResultStatus.CREATED
    assert client.open_uploads() == 0
    assert session_objects(client, session_id) == []
    assert open_multipart_uploads(s3_client, s3_bucket_for_module) == []


def test_s3_import_sizes_from_storage(
    s3_service: Any, s3_client: Any, s3_bucket_for_module: str
) -> None:
    client = s3_service
    session_id = client.create_session()
    data = os.urandom(54321)
    key = f"imports/{uuid.uuid4().hex}.bin"
    s3_client.put_object(
        Bucket=s3_bucket_for_module, Key=f"{S3_PREFIX}/{key}", Body=data
    )
    result_id = new_result(client, session_id)

    (record,) = client.import_results_data(session_id, [(result_id, key)])

    assert record.size == len(data)
    assert record.opaque_id == key.encode()
    assert client.read_result_data(session_id, result_id) == data


def test_s3_import_missing_object_not_found(s3_service: Any) -> None:
    client = s3_service
    session_id = client.create_session()
    result_id = new_result(client, session_id)

    with pytest.raises(NotFoundError) as caught:
        client.import_results_data(session_id, [(result_id, "imports/missing.bin")])

    assert "imports/missing.bin" in caught.value.message


def test_s3_import_outside_prefix_rejected(s3_service: Any) -> None:
    client = s3_service
    session_id = client.create_session()
    result_id = new_result(client, session_id)

    with pytest.raises(InvalidArgumentError) as caught:
        client.import_results_data(session_id, [(result_id, "../other/object")])

    assert "../other/object" in caught.value.message


def test_s3_delete_results_data_removes_object(
    s3_service: Any, s3_client: Any, s3_bucket_for_module: str
) -> None:
    client = s3_service
    session_id = client.create_session()
    (record,) = client.create_results(session_id, {"r": b"data"})

    client.delete_results_data(session_id, [record.result_id])

    key = f"{S3_PREFIX}/{record.opaque_id.decode()}"
    listing = s3_client.list_objects_v2(Bucket=s3_bucket_for_module, Prefix=key)
    assert listing.get("KeyCount", 0) == 0
    assert session_objects(client, session_id) == []
