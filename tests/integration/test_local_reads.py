"""Integration tests of local reads on a real local Ray.

A client on the machine of a local storage directory reads downloaded data from
the files themselves. It reads through the storage actor instead when a file is
not the one the service opened.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from results_service.records import ResultCreate

KiB = 1024


def uploaded(client: Any, session_id: str, data: bytes) -> str:
    (record,) = client.create_results_metadata(session_id, [ResultCreate("r")])
    client.upload_result_data(session_id, record.result_id, data)
    return record.result_id


def read_info(client: Any, info: Any) -> bytes:
    """Return the data of an opened download, read with iter_download."""

    async def join() -> bytes:
        return b"".join([bytes(b) async for b in client.aio.iter_download(info)])

    return client._run(join())


@pytest.fixture(scope="module")
def remote_client(services: Any) -> Any:
    """A service whose clients always read through the storage actor."""
    return services.start(local_reads=False, data_chunk_max_size=64 * KiB)


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


def test_local_reads_off_reads_through_actor(
    remote_client: Any,
) -> None:
    session_id = remote_client.create_session()
    data = os.urandom(300 * KiB)
    result_id = uploaded(remote_client, session_id, data)

    (info,) = remote_client.open_downloads(session_id, [result_id])

    assert info.local_file is None
    assert remote_client.read_result_data(session_id, result_id) == data
