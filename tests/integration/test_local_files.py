"""Integration tests of local files on a real local Ray.

A client on the machine of a local storage directory reads downloaded data from
the files themselves, and writes uploads into files that the service publishes.
It transfers through the storage actor instead when a file or the directory is
not the one the service reported.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from results_service.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from results_service.records import ResultCreate, ResultStatus, TaskDefinition
from tests.service import rpc, session_objects

KiB = 1024


def uploaded(client: Any, session_id: str, data: bytes) -> str:
    result_id = new_result(client, session_id)
    client.upload_result_data(session_id, result_id, data)
    return result_id


def read_info(client: Any, info: Any) -> bytes:
    """Return the data of an opened download, read with iter_download."""

    async def join() -> bytes:
        return b"".join([bytes(b) async for b in client.aio.iter_download(info)])

    return client._run(join())


@pytest.fixture(scope="module")
def remote_client(services: Any) -> Any:
    """A service whose clients always read through the storage actor."""
    return services.start(local_files=False, data_chunk_max_size=64 * KiB)


def test_open_downloads_reports_local_file(client: Any, session_id: str) -> None:
    data = os.urandom(300 * KiB)
    result_id = uploaded(client, session_id, data)

    (info,) = client.open_downloads(session_id, [result_id])

    assert info.data is None
    assert info.local_file is not None
    path = Path(info.local_file[0])
    root = client.settings.storage_url.removeprefix("file://")
    assert path.is_relative_to(root)
    assert path.read_bytes() == data


def test_local_read_round_trips(client: Any, session_id: str) -> None:
    data = os.urandom(9 * 1024 * KiB + 5)
    result_id = uploaded(client, session_id, data)

    chunks = list(client.download_result_data(session_id, result_id))

    assert b"".join(bytes(chunk) for chunk in chunks) == data
    chunk_size = client.get_service_configuration().data_chunk_max_size
    assert all(len(chunk) <= chunk_size for chunk in chunks)


def test_small_data_inline_without_local_file(client: Any, session_id: str) -> None:
    result_id = uploaded(client, session_id, b"small")

    (info,) = client.open_downloads(session_id, [result_id])

    assert info.data is not None
    assert info.local_file is None


@pytest.mark.parametrize("field", [0, 2], ids=["path", "inode"])
def test_mismatched_local_file_falls_back(
    client: Any, session_id: str, field: int
) -> None:
    data = os.urandom(300 * KiB)
    result_id = uploaded(client, session_id, data)
    (info,) = client.open_downloads(session_id, [result_id])
    changed = list(info.local_file)
    changed[field] = "/nonexistent/object" if field == 0 else changed[field] + 1

    forged = dataclasses.replace(info, local_file=tuple(changed))

    assert read_info(client, forged) == data


def test_local_files_off_reads_through_actor(remote_client: Any) -> None:
    session_id = remote_client.create_session()
    data = os.urandom(300 * KiB)
    result_id = uploaded(remote_client, session_id, data)

    (info,) = remote_client.open_downloads(session_id, [result_id])

    assert info.local_file is None
    assert remote_client.read_result_data(session_id, result_id) == data


# Uploads


def upload_dir(client: Any) -> Path:
    return Path(client.get_service_configuration().local_root[0])


def client_files(client: Any) -> list[str]:
    return sorted(p.name for p in upload_dir(client).glob("client-*"))


def new_result(client: Any, session_id: str) -> str:
    (record,) = client.create_results_metadata(session_id, [ResultCreate("r")])
    return record.result_id


def test_configuration_reports_upload_dir(client: Any) -> None:
    path, device, inode = client.get_service_configuration().local_root

    root = client.settings.storage_url.removeprefix("file://")
    assert path == os.path.join(root, ".partial")
    assert (device, inode) == (os.stat(path).st_dev, os.stat(path).st_ino)


def test_local_upload_round_trips(client: Any, session_id: str) -> None:
    data = os.urandom(9 * 1024 * KiB + 7)
    result_id = new_result(client, session_id)

    record = client.upload_result_data(session_id, result_id, data)

    assert record.status == ResultStatus.COMPLETED
    assert record.size == len(data)
    assert session_objects(client, session_id) == [record.opaque_id]
    assert client.read_result_data(session_id, result_id) == data
    assert client_files(client) == []
    assert client.open_uploads() == 0


def test_local_upload_to_completed_result_leaves_nothing(
    client: Any, session_id: str
) -> None:
    (record,) = client.create_results(session_id, {"r": b"first"})

    with pytest.raises(FailedPreconditionError):
        client.upload_result_data(session_id, record.result_id, os.urandom(300 * KiB))

    assert session_objects(client, session_id) == [record.opaque_id]
    assert client_files(client) == []


def test_local_upload_raising_midway_leaves_nothing(
    client: Any, session_id: str
) -> None:
    result_id = new_result(client, session_id)

    def chunks() -> Any:
        yield os.urandom(300 * KiB)
        yield os.urandom(300 * KiB)
        raise OSError("source read failed")

    with pytest.raises(OSError, match="source read failed"):
        client.upload_result_data(session_id, result_id, chunks())

    assert session_objects(client, session_id) == []
    assert client_files(client) == []
    assert client.get_result(session_id, result_id).status == ResultStatus.CREATED


def test_local_upload_wrong_lease_discarded(client: Any, session_id: str) -> None:
    (output,) = client.create_results_metadata(session_id, ["out"])
    (payload,) = client.create_results(session_id, {"payload": b"{}"})
    (task,) = client.submit_tasks(
        session_id, [TaskDefinition(payload.result_id, (), (output.result_id,))]
    )
    before = session_objects(client, session_id)
    name = "client-" + "a" * 32
    (upload_dir(client) / name).write_bytes(b"data")

    with pytest.raises(FailedPreconditionError):
        rpc(
            client,
            "finish_local_upload",
            session_id,
            output.result_id,
            name,
            task.task_id,
            "not-the-lease",
        )

    assert session_objects(client, session_id) == before
    assert client_files(client) == []
    client.cancel_session(session_id)


@pytest.mark.parametrize(
    "name", ["../escape", "client-short", "sessions/x", "client-" + "G" * 32]
)
def test_finish_local_upload_invalid_name_rejected(
    client: Any, session_id: str, name: str
) -> None:
    result_id = new_result(client, session_id)

    with pytest.raises(InvalidArgumentError) as caught:
        rpc(client, "finish_local_upload", session_id, result_id, name)

    assert "client-" in caught.value.message
    assert session_objects(client, session_id) == []


def test_finish_local_upload_missing_file_not_found(
    client: Any, session_id: str
) -> None:
    result_id = new_result(client, session_id)

    with pytest.raises(NotFoundError):
        rpc(client, "finish_local_upload", session_id, result_id, "client-" + "b" * 32)

    assert client.get_result(session_id, result_id).status == ResultStatus.CREATED


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_finish_local_upload_of_link_rejected(
    client: Any, session_id: str, tmp_path: Path, link: str
) -> None:
    result_id = new_result(client, session_id)
    target = tmp_path / "secret"
    target.write_bytes(b"secret")
    name = "client-" + "c" * 32
    if link == "symbolic":
        (upload_dir(client) / name).symlink_to(target)
    else:
        os.link(target, upload_dir(client) / name)

    with pytest.raises(InvalidArgumentError, match="regular file"):
        rpc(client, "finish_local_upload", session_id, result_id, name)

    assert client_files(client) == []
    assert target.read_bytes() == b"secret"
    assert session_objects(client, session_id) == []


def test_local_files_off_uploads_through_actor(remote_client: Any) -> None:
    session_id = remote_client.create_session()
    result_id = new_result(remote_client, session_id)
    data = os.urandom(300 * KiB)

    remote_client.upload_result_data(session_id, result_id, data)

    assert remote_client.get_service_configuration().local_root is None
    assert remote_client.read_result_data(session_id, result_id) == data


def test_local_files_off_finish_local_upload_rejected(remote_client: Any) -> None:
    session_id = remote_client.create_session()
    result_id = new_result(remote_client, session_id)

    with pytest.raises(InvalidArgumentError, match="local files are off"):
        rpc(
            remote_client,
            "finish_local_upload",
            session_id,
            result_id,
            "client-" + "d" * 32,
        )
