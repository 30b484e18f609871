"""Integration tests of list_results and watch_results on a real local Ray."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import ray

from results_service.errors import InvalidArgumentError, NotFoundError
from results_service.filters import Condition, Sort
from results_service.records import ResultRecord, ResultStatus, StatusChange

C = ResultStatus.CREATED


@pytest.fixture
def populated(client: Any, session_id: str) -> dict[str, ResultRecord]:
    """Five results of a new session, by label: two CREATED, then three COMPLETED."""
    waiting, other = client.create_results_metadata(session_id, ["alpha", "omega"])
    small, large, alpha = client.create_results(
        session_id,
        [("beta", b"b" * 10), ("gamma", b"g" * 300), ("alpha", b"a" * 50)],
    )
    return {
        "waiting": waiting,
        "other": other,
        "small": small,
        "large": large,
        "alpha": alpha,
    }


def ids_of(page: Any) -> set[str]:
    return {record.result_id for record in page.items}


def labels(populated: dict[str, ResultRecord], *names: str) -> set[str]:
    return {populated[name].result_id for name in names}


def take(stream: Iterator[StatusChange], count: int) -> list[StatusChange]:
    return list(itertools.islice(stream, count))


def shard_waiters(client: Any) -> int:
    """Return the number of wait_changes calls waiting in the ResultsTable shards.

    Reads the private waiter list of each shard's asyncio.Condition.
    """
    counts = ray.get(
        [
            shard.__ray_call__.remote(lambda table: len(table.changed._waiters or ()))
            for shard in client.actors.results
        ]
    )
    return sum(counts)


# list_results: filters


def test_list_results_session_scope_returns_all(
    client: Any, session_id: str, populated: dict[str, ResultRecord]
) -> None:
    page = client.list_results(session_id=session_id)

    assert page.total == 5
    assert ids_of(page) == labels(populated, *populated)


def test_list_results_filter_by_name(
    client: Any, session_id: str, populated: dict[str, ResultRecord]
) -> None:
    page = client.list_results(
        [[Condition("name", "eq", "alpha")]], session_id=session_id
    )

    assert page.total == 2
    assert ids_of(page) == labels(populated, "waiting", "alpha")


def test_list_results_filter_by_status(
    client: Any, session_id: str, populated: dict[str, ResultRecord]
) -> None:
    page = client.list_results(
        [[Condition("status", "eq", ResultStatus.CREATED)]], session_id=session_id
    )

    assert ids_of(page) == labels(populated, "waiting", "other")


def test_list_results_filter_by_size(
    client: Any, session_id: str, populated: dict[str, ResultRecord]
) -> None:
    page = client.list_results([[Condition("size", "gt", 10)]], session_id=session_id)

    assert ids_of(page) == labels(populated, "large", "alpha")


def test_list_results_filter_by_created_at(
    client: Any, session_id: str, populated: dict[str, ResultRecord]
) -> None:
    first_batch_time = populated["waiting"].created_at

    page = client.list_results(
        [[Condition("created_at", "gt", first_batch_time)]], session_id=session_id
    )

    assert ids_of(page) == labels(populated, "small", "large", "alpha")


def test_list_results_filter_by_unset_completed_at(
    client: Any, session_id: str, populated: dict[str, ResultRecord]
) -> None:
    page = client.list_results(
        [[Condition("completed_at", "ge", 0.0)]], session_id=session_id
    )

    assert ids_of(page) == labels(populated, "small", "large", "alpha")


def test_list_results_filter_and_of_conditions(
    client: Any, session_id: str, populated: dict[str, ResultRecord]
) -> None:
    page = client.list_results(
        [
            [
                Condition("name", "eq", "alpha"),
                Condition("status", "eq", ResultStatus.COMPLETED),
            ]
        ],
        session_id=session_id,
    )

    assert ids_of(page) == labels(populated, "alpha")


def test_list_results_filter_or_of_groups(
    client: Any, session_id: str, populated: dict[str, ResultRecord]
) -> None:
    page = client.list_results(
        [
            [Condition("name", "eq", "beta")],
            [Condition("size", "ge", 300), Condition("name", "starts_with", "g")],
        ],
        session_id=session_id,
    )

    assert page.total == 2
    assert ids_of(page) == labels(populated, "small", "large")


def test_list_results_filter_string_operators(
    client: Any, session_id: str, populated: dict[str, ResultRecord]
) -> None:
    cases = {
        "starts_with": ("al", {"waiting", "alpha"}),
        "ends_with": ("ga", {"other"}),
        "contains": ("mm", {"large"}),
        "ne": ("alpha", {"other", "small", "large"}),
    }
    for operator, (value, expected) in cases.items():
        page = client.list_results(
            [[Condition("name", operator, value)]], session_id=session_id
        )

        assert ids_of(page) == labels(populated, *expected), operator


def test_list_results_filter_by_session_id(client: Any) -> None:
    first = client.create_session()
    second = client.create_session()
    unrelated = client.create_session()
    expected = {
        record.result_id
        for session in (first, second)
        for record in client.create_results_metadata(session, ["a", "b"])
    }
    client.create_results_metadata(unrelated, ["a"])

    page = client.list_results(
        [
            [Condition("session_id", "eq", first)],
            [Condition("session_id", "eq", second)],
        ]
    )

    assert page.total == 4
    assert ids_of(page) == expected


def test_list_results_empty_filters_match_all(
    client: Any, session_id: str, populated: dict[str, ResultRecord]
) -> None:
    page = client.list_results([], session_id=session_id)

    assert page.total == 5


def test_list_results_unknown_field_rejected(client: Any, session_id: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.list_results([[Condition("colour", "eq", "red")]], session_id=session_id)

    assert "colour" in caught.value.message


def test_list_results_invalid_operator_rejected(client: Any, session_id: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.list_results([[Condition("size", "contains", 3)]], session_id=session_id)

    assert "contains" in caught.value.message


def test_list_results_wrong_value_type_rejected(client: Any, session_id: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.list_results([[Condition("size", "gt", "10")]], session_id=session_id)

    assert "'10'" in caught.value.message


# list_results: sorting and paging


def test_list_results_sort_by_size_ascending(
    client: Any, session_id: str, populated: dict[str, ResultRecord]
) -> None:
    page = client.list_results(sort=Sort("size", "asc"), session_id=session_id)

    sizes = [record.size for record in page.items]
    assert sizes == [0, 0, 10, 50, 300]


def test_list_results_sort_by_size_descending(
    client: Any, session_id: str, populated: dict[str, ResultRecord]
) -> None:
    page = client.list_results(sort=Sort("size", "desc"), session_id=session_id)

    sizes = [record.size for record in page.items]
    assert sizes == [300, 50, 10, 0, 0]


def test_list_results_sort_by_name_descending(
    client: Any, session_id: str, populated: dict[str, ResultRecord]
) -> None:
    page = client.list_results(sort=Sort("name", "desc"), session_id=session_id)

    names = [record.name for record in page.items]
    assert names == ["omega", "gamma", "beta", "alpha", "alpha"]


def test_list_results_invalid_sort_rejected(client: Any, session_id: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.list_results(sort=Sort("size", "sideways"), session_id=session_id)

    assert "sideways" in caught.value.message


def test_list_results_pages_cover_all_once(client: Any, session_id: str) -> None:
    records = client.create_results(session_id, [(f"r{i}", b"x" * i) for i in range(7)])
    sort = Sort("size", "desc")

    pages = [
        client.list_results(sort=sort, page=number, page_size=3, session_id=session_id)
        for number in range(4)
    ]

    listed = [record.result_id for page in pages for record in page.items]
    assert [page.total for page in pages] == [7, 7, 7, 7]
    assert [len(page.items) for page in pages] == [3, 3, 1, 0]
    assert listed == [record.result_id for record in reversed(records)]


def test_list_results_page_fields_echo_request(client: Any, session_id: str) -> None:
    client.create_results_metadata(session_id, ["a", "b", "c"])

    page = client.list_results(page=1, page_size=2, session_id=session_id)

    assert page.page == 1
    assert page.page_size == 2
    assert len(page.items) == 1


def test_list_results_page_size_over_max_rejected(client: Any, session_id: str) -> None:
    max_page_size = client.settings.limits.max_page_size

    with pytest.raises(InvalidArgumentError) as caught:
        client.list_results(page_size=max_page_size + 1, session_id=session_id)

    assert str(max_page_size + 1) in caught.value.message


def test_list_results_negative_page_rejected(client: Any, session_id: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.list_results(page=-1, session_id=session_id)

    assert "-1" in caught.value.message


def test_list_results_page_size_zero_returns_total_only(
    client: Any, session_id: str, populated: dict[str, ResultRecord]
) -> None:
    page = client.list_results(page_size=0, session_id=session_id)

    assert page.total == 5
    assert page.items == []


# watch_results


def test_watch_results_first_batch_is_current_statuses(
    client: Any, session_id: str, populated: dict[str, ResultRecord]
) -> None:
    watched = [populated["waiting"].result_id, populated["small"].result_id, "unknown"]
    stream = client.watch_results(session_id, watched)

    first = take(stream, 3)
    stream.close()

    assert {change.result_id: change.status for change in first} == {
        populated["waiting"].result_id: ResultStatus.CREATED,
        populated["small"].result_id: ResultStatus.COMPLETED,
        "unknown": ResultStatus.NOTFOUND,
    }


def test_watch_results_reports_uploads_until_final(
    client: Any, session_id: str
) -> None:
    first, second = client.create_results_metadata(session_id, ["first", "second"])
    watched = [first.result_id, second.result_id, "unknown"]
    stream = client.watch_results(session_id, watched)
    initial = take(stream, 3)

    def upload_both() -> None:
        client.upload_result_data(session_id, first.result_id, b"1")
        client.upload_result_data(session_id, second.result_id, b"2")

    uploader = threading.Thread(target=upload_both)
    uploader.start()
    later = list(stream)
    uploader.join()

    assert sorted(change.status for change in initial) == [C, C, ResultStatus.NOTFOUND]
    # The two results may live on different shards, whose changes arrive in any order.
    assert sorted((change.result_id, change.status) for change in later) == sorted(
        [
            (first.result_id, ResultStatus.COMPLETED),
            (second.result_id, ResultStatus.COMPLETED),
        ]
    )


def test_watch_results_ends_at_once_when_all_final(
    client: Any, session_id: str, populated: dict[str, ResultRecord]
) -> None:
    watched = [populated["small"].result_id, populated["large"].result_id]

    changes = list(client.watch_results(session_id, watched))

    assert [change.status for change in changes] == [ResultStatus.COMPLETED] * 2


def test_watch_unknown_ids_end_after_first_batch(client: Any, session_id: str) -> None:
    changes = list(client.watch_results(session_id, ["unknown-1", "unknown-2"]))

    assert [change.status for change in changes] == [ResultStatus.NOTFOUND] * 2


def test_watch_results_other_session_result_reported_notfound(client: Any) -> None:
    owner = client.create_session()
    other = client.create_session()
    (record,) = client.create_results_metadata(owner, ["a"])

    changes = list(client.watch_results(other, [record.result_id]))

    assert [(c.result_id, c.status) for c in changes] == [
        (record.result_id, ResultStatus.NOTFOUND)
    ]


def test_watch_results_timeout_ends_stream(client: Any, session_id: str) -> None:
    (record,) = client.create_results_metadata(session_id, ["never"])

    changes = list(client.watch_results(session_id, [record.result_id], timeout=0.3))

    assert [(c.result_id, c.status) for c in changes] == [(record.result_id, C)]


def test_watch_results_reports_abort_on_cancel(client: Any, session_id: str) -> None:
    (record,) = client.create_results_metadata(session_id, ["doomed"])
    stream = client.watch_results(session_id, [record.result_id])
    take(stream, 1)

    client.cancel_session(session_id)

    assert [change.status for change in stream] == [ResultStatus.ABORTED]


def test_watch_results_custom_until_follows_deletion(
    client: Any, session_id: str
) -> None:
    (record,) = client.create_results_metadata(session_id, ["r"])
    stream = client.watch_results(
        session_id, [record.result_id], until={ResultStatus.DELETED}
    )
    take(stream, 1)

    client.upload_result_data(session_id, record.result_id, b"data")
    client.delete_results_data(session_id, [record.result_id])

    statuses = [change.status for change in stream]
    assert statuses == [ResultStatus.COMPLETED, ResultStatus.DELETED]


def test_watch_results_unknown_session_not_found(client: Any) -> None:
    with pytest.raises(NotFoundError) as caught:
        list(client.watch_results("no-such-session", ["a"]))

    assert "no-such-session" in caught.value.message


def test_watch_results_duplicate_ids_rejected(client: Any, session_id: str) -> None:
    (record,) = client.create_results_metadata(session_id, ["a"])

    with pytest.raises(InvalidArgumentError) as caught:
        list(client.watch_results(session_id, [record.result_id, record.result_id]))

    assert record.result_id in caught.value.message


def test_watch_results_closed_stream_stops_polling(
    client: Any, session_id: str
) -> None:
    records = client.create_results_metadata(session_id, ["a", "b", "c"])
    for record in records:
        stream = client.watch_results(session_id, [record.result_id])
        take(stream, 1)
        stream.close()

    # A poll in flight when the stream closed ends within the 5 s wait of
    # wait_changes; a stream still running would poll again and keep a waiter.
    deadline = time.monotonic() + 30
    while shard_waiters(client) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)

    assert shard_waiters(client) == 0
