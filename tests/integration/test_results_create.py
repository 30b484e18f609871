"""Integration tests of result creation and lookups on a real local Ray.

Covers create_results_metadata, create_results, get_result, get_owner_task_id and
get_service_configuration through the blocking client.
"""

from __future__ import annotations

from typing import Any

import pytest

from results_service.errors import (
    Code,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from results_service.records import (
    ResultCreate,
    ResultStatus,
    ServiceConfiguration,
    TaskDefinition,
)

# create_results_metadata


def test_create_results_metadata_returns_created_records(
    client: Any, session_id: str
) -> None:
    records = client.create_results_metadata(session_id, ["a", "b", "a"])

    assert [record.name for record in records] == ["a", "b", "a"]
    assert all(record.status == ResultStatus.CREATED for record in records)
    assert all(record.session_id == session_id for record in records)
    assert len({record.result_id for record in records}) == 3
    assert all(record.size == 0 for record in records)
    assert all(record.opaque_id == b"" for record in records)
    assert all(record.owner_task_id == "" for record in records)
    assert all(record.completed_at is None for record in records)


def test_create_results_metadata_records_are_readable(
    client: Any, session_id: str
) -> None:
    (created,) = client.create_results_metadata(session_id, ["a"])

    fetched = client.get_result(session_id, created.result_id)

    assert fetched == created


def test_create_results_metadata_accepts_result_create(
    client: Any, session_id: str
) -> None:
    records = client.create_results_metadata(
        session_id, [ResultCreate("kept", manual_deletion=True), ResultCreate("plain")]
    )

    assert [record.name for record in records] == ["kept", "plain"]
    assert [record.manual_deletion for record in records] == [True, False]


def test_create_results_metadata_empty_list_rejected(
    client: Any, session_id: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_results_metadata(session_id, [])

    assert "empty" in caught.value.message


def test_create_results_metadata_unknown_session_not_found(client: Any) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.create_results_metadata("no-such-session", ["a"])

    assert "no-such-session" in caught.value.message


def test_create_results_metadata_cancelled_session_rejected(
    client: Any, session_id: str
) -> None:
    client.cancel_session(session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        client.create_results_metadata(session_id, ["a"])

    assert session_id in caught.value.message


def test_create_results_metadata_closed_session_rejected(
    client: Any, session_id: str
) -> None:
    client.close_session(session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        client.create_results_metadata(session_id, ["a"])

    assert session_id in caught.value.message


def test_create_results_metadata_name_over_limit_rejected(
    client: Any, session_id: str
) -> None:
    limit = client.settings.limits.max_name_length

    with pytest.raises(InvalidArgumentError) as caught:
        client.create_results_metadata(session_id, ["n" * (limit + 1)])

    assert str(limit) in caught.value.message


def test_create_results_metadata_name_at_limit_accepted(
    client: Any, session_id: str
) -> None:
    name = "n" * client.settings.limits.max_name_length

    (record,) = client.create_results_metadata(session_id, [name])

    assert record.name == name


@pytest.mark.parametrize("item", [42, None, b"bytes", ResultCreate(42)])  # type: ignore[arg-type]
def test_create_results_metadata_non_string_name_rejected(
    client: Any, session_id: str, item: Any
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_results_metadata(session_id, [item])

    assert repr(42 if isinstance(item, ResultCreate) else item) in caught.value.message


def test_create_results_metadata_non_bool_manual_deletion_rejected(
    client: Any, session_id: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_results_metadata(
            session_id,
            [ResultCreate("a", manual_deletion="yes")],  # type: ignore[arg-type]
        )

    assert "manual_deletion" in caught.value.message


def test_create_results_metadata_with_data_rejected(
    client: Any, session_id: str
) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_results_metadata(session_id, [ResultCreate("a", data=b"x")])

    assert "create_results" in caught.value.message


def test_create_results_metadata_rejected_request_creates_nothing(
    client: Any, session_id: str
) -> None:
    with pytest.raises(InvalidArgumentError):
        client.create_results_metadata(session_id, ["good", 42])

    page = client.list_results(session_id=session_id)

    assert page.total == 0


# create_results


def test_create_results_stores_data(client: Any, session_id: str) -> None:
    (record,) = client.create_results(session_id, [ResultCreate("r", data=b"hello")])

    assert client.read_result_data(session_id, record.result_id) == b"hello"
    assert record.status == ResultStatus.COMPLETED
    assert record.owner_task_id == session_id
    assert record.size == 5
    assert record.completed_at is not None
    assert record.opaque_id in client.stored_ids(f"sessions/{session_id}/")


def test_create_results_record_matches_get_result(client: Any, session_id: str) -> None:
    (created,) = client.create_results(session_id, {"r": b"data"})

    fetched = client.get_result(session_id, created.result_id)

    assert fetched == created


def test_create_results_empty_data_has_size_zero(client: Any, session_id: str) -> None:
    (record,) = client.create_results(session_id, {"empty": b""})

    assert record.status == ResultStatus.COMPLETED
    assert record.size == 0
    assert client.read_result_data(session_id, record.result_id) == b""
    assert list(client.download_result_data(session_id, record.result_id)) == []


def test_create_results_accepts_mapping(client: Any, session_id: str) -> None:
    records = client.create_results(session_id, {"a": b"1", "b": bytearray(b"22")})

    assert [record.name for record in records] == ["a", "b"]
    assert [record.size for record in records] == [1, 2]


def test_create_results_accepts_tuples(client: Any, session_id: str) -> None:
    records = client.create_results(session_id, [("a", b"1"), ("a", b"333")])

    data = [client.read_result_data(session_id, r.result_id) for r in records]

    assert [record.name for record in records] == ["a", "a"]
    assert data == [b"1", b"333"]


def test_create_results_keeps_manual_deletion(client: Any, session_id: str) -> None:
    (record,) = client.create_results(
        session_id, [ResultCreate("kept", manual_deletion=True, data=b"x")]
    )

    assert record.manual_deletion is True


def test_create_results_over_inline_limit_rejected(
    client: Any, session_id: str
) -> None:
    limit = client.settings.limits.max_inline_bytes
    half = b"x" * (limit // 2)

    with pytest.raises(InvalidArgumentError) as caught:
        client.create_results(session_id, {"a": half, "b": half, "c": b"y"})

    assert str(limit) in caught.value.message
    assert client.stored_ids(f"sessions/{session_id}/") == []
    assert client.list_results(session_id=session_id).total == 0


def test_create_results_non_bytes_data_rejected(client: Any, session_id: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_results(session_id, [ResultCreate("text", data="abc")])  # type: ignore[arg-type]

    assert "'text'" in caught.value.message
    assert client.stored_ids(f"sessions/{session_id}/") == []


def test_create_results_unknown_session_not_found(client: Any) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.create_results("no-such-session", {"a": b"1"})

    assert "no-such-session" in caught.value.message


def test_create_results_cancelled_session_stores_nothing(
    client: Any, session_id: str
) -> None:
    client.cancel_session(session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        client.create_results(session_id, {"a": b"1"})

    assert session_id in caught.value.message
    assert client.stored_ids(f"sessions/{session_id}/") == []


# get_result


def test_get_result_of_another_session_not_found(client: Any) -> None:
    owner = client.create_session()
    other = client.create_session()
    (record,) = client.create_results_metadata(owner, ["a"])

    with pytest.raises(NotFoundError) as caught:
        client.get_result(other, record.result_id)

    assert record.result_id in caught.value.message


def test_get_result_unknown_id_not_found(client: Any, session_id: str) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.get_result(session_id, "no-such-result")

    assert "no-such-result" in caught.value.message


# get_owner_task_id


def test_get_owner_task_id_after_submit_shows_task(
    client: Any, session_id: str
) -> None:
    dependency, output = client.create_results_metadata(session_id, ["in", "out"])
    (payload,) = client.create_results(session_id, {"payload": b"{}"})
    (task,) = client.submit_tasks(
        session_id,
        [
            TaskDefinition(
                payload.result_id, (dependency.result_id,), (output.result_id,)
            )
        ],
    )

    owners = client.get_owner_task_id(
        session_id, [output.result_id, dependency.result_id, payload.result_id]
    )

    assert owners == {
        output.result_id: task.task_id,
        dependency.result_id: "",
        payload.result_id: session_id,
    }


def test_get_owner_task_id_unknown_id_not_found(client: Any, session_id: str) -> None:
    (record,) = client.create_results_metadata(session_id, ["a"])

    with pytest.raises(NotFoundError) as caught:
        client.get_owner_task_id(session_id, [record.result_id, "no-such-result"])

    assert caught.value.code == Code.NOT_FOUND
    assert "no-such-result" in caught.value.message
    assert record.result_id not in caught.value.message


def test_get_owner_task_id_duplicates_rejected(client: Any, session_id: str) -> None:
    (record,) = client.create_results_metadata(session_id, ["a"])

    with pytest.raises(InvalidArgumentError) as caught:
        client.get_owner_task_id(session_id, [record.result_id, record.result_id])

    assert caught.value.code == Code.INVALID_ARGUMENT
    assert record.result_id in caught.value.message


def test_get_owner_task_id_other_session_not_found(client: Any) -> None:
    owner = client.create_session()
    other = client.create_session()
    (record,) = client.create_results_metadata(owner, ["a"])

    with pytest.raises(NotFoundError) as caught:
        client.get_owner_task_id(other, [record.result_id])

    assert record.result_id in caught.value.message


# get_service_configuration


def test_get_service_configuration_matches_settings(client: Any) -> None:
    settings = client.settings

    configuration = client.get_service_configuration()

    assert isinstance(configuration, ServiceConfiguration)
    assert configuration.data_chunk_max_size == settings.data_chunk_max_size
    assert configuration.transfer_window_chunks == settings.transfer_window_chunks
    assert configuration.max_batch == settings.limits.max_batch
    assert configuration.max_page_size == settings.limits.max_page_size
    assert configuration.max_name_length == settings.limits.max_name_length
    assert configuration.partitions == settings.partitions
