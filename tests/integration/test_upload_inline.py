"""Integration tests of inline uploads on a real local Ray: data small enough for
one upload_inline call, which writes the object while the checks run.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from results_service.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from results_service.records import ResultStatus, TaskDefinition
from tests.service import rpc, session_objects


def new_result(client: Any, session_id: str) -> str:
    (record,) = client.create_results_metadata(session_id, ["r"])
    return record.result_id


def inline_limit(client: Any) -> int:
    return client.get_service_configuration().inline_upload_max_size


def test_configuration_reports_inline_limit(client: Any) -> None:
    assert inline_limit(client) == 256 * 1024


def test_upload_inline_completes_result(client: Any, session_id: str) -> None:
    result_id = new_result(client, session_id)

    record = rpc(client, "upload_inline", session_id, result_id, b"abc")

    assert record.status == ResultStatus.COMPLETED
    assert record.size == 3
    assert session_objects(client, session_id) == [record.opaque_id]
    assert client.read_result_data(session_id, result_id) == b"abc"


@pytest.mark.parametrize("extra", [0, 1], ids=["at-limit", "above-limit"])
def test_upload_around_inline_limit_round_trips(
    client: Any, session_id: str, extra: int
) -> None:
    result_id = new_result(client, session_id)
    data = os.urandom(inline_limit(client) + extra)

    record = client.upload_result_data(session_id, result_id, data)

    assert record.size == len(data)
    assert client.read_result_data(session_id, result_id) == data
    assert client.open_uploads() == 0


def test_upload_inline_to_completed_result_leaves_nothing(
    client: Any, session_id: str
) -> None:
    (record,) = client.create_results(session_id, {"r": b"first"})

    with pytest.raises(FailedPreconditionError) as caught:
        rpc(client, "upload_inline", session_id, record.result_id, b"second")

    assert record.result_id in caught.value.message
    assert session_objects(client, session_id) == [record.opaque_id]
    assert client.read_result_data(session_id, record.result_id) == b"first"


def test_upload_inline_unknown_result_leaves_nothing(
    client: Any, session_id: str
) -> None:
    with pytest.raises(NotFoundError) as caught:
        rpc(client, "upload_inline", session_id, "no-such-result", b"data")

    assert "no-such-result" in caught.value.message
    assert session_objects(client, session_id) == []


def test_upload_inline_cancelled_session_leaves_nothing(
    client: Any, session_id: str
) -> None:
    result_id = new_result(client, session_id)
    client.cancel_session(session_id)

    with pytest.raises(FailedPreconditionError):
        rpc(client, "upload_inline", session_id, result_id, b"data")

    assert session_objects(client, session_id) == []


def test_upload_inline_over_limit_rejected(client: Any, session_id: str) -> None:
    result_id = new_result(client, session_id)
    limit = inline_limit(client)

    with pytest.raises(InvalidArgumentError) as caught:
        rpc(client, "upload_inline", session_id, result_id, b"x" * (limit + 1))

    assert str(limit) in caught.value.message
    assert "open_upload" in caught.value.message
    assert session_objects(client, session_id) == []
    assert client.get_result(session_id, result_id).status == ResultStatus.CREATED


def test_upload_inline_non_bytes_rejected(client: Any, session_id: str) -> None:
    result_id = new_result(client, session_id)

    with pytest.raises(InvalidArgumentError) as caught:
        rpc(client, "upload_inline", session_id, result_id, "text")

    assert "str" in caught.value.message
    assert session_objects(client, session_id) == []


def test_upload_inline_output_with_wrong_lease_leaves_nothing(
    client: Any, task_session: str
) -> None:
    (output,) = client.create_results_metadata(task_session, ["out"])
    (payload,) = client.create_results(task_session, {"payload": b"{}"})
    (task,) = client.submit_tasks(
        task_session, [TaskDefinition(payload.result_id, (), (output.result_id,))]
    )
    before = session_objects(client, task_session)

    with pytest.raises(FailedPreconditionError):
        rpc(
            client,
            "upload_inline",
            task_session,
            output.result_id,
            b"data",
            task.task_id,
            "not-the-lease",
        )

    assert session_objects(client, task_session) == before
    assert client.get_result(task_session, output.result_id).status == (
        ResultStatus.CREATED
    )
