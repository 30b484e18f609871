"""Unit tests of ResultsShard, the pure state of one ResultsTable shard."""

from __future__ import annotations

import pytest

from results_service import filters
from results_service.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from results_service.filters import Condition, Sort
from results_service.records import ResultRecord, ResultStatus
from results_service.state.results_shard import ResultsShard, task_list

R = ResultStatus


def record(
    result_id: str,
    session_id: str = "s1",
    status: ResultStatus = R.CREATED,
    **fields: object,
) -> ResultRecord:
    return ResultRecord(
        session_id=session_id,
        name=fields.pop("name", result_id),  # type: ignore[arg-type]
        result_id=result_id,
        status=status,
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
def shard() -> ResultsShard:
    """A shard holding CREATED results r1, r2, r3 of session s1 and x1 of s2."""
    state = ResultsShard(0, event_log_size=1000)
    state.insert([record("r1"), record("r2"), record("r3"), record("x1", "s2")])
    return state


def complete(shard: ResultsShard, *result_ids: str, session_id: str = "s1") -> None:
    shard.complete(
        session_id,
        [(result_id, f"obj-{result_id}".encode(), 5) for result_id in result_ids],
    )


# Insert and find


def test_insert_adds_records_to_session(shard: ResultsShard) -> None:
    assert shard.by_session["s1"] == {"r1", "r2", "r3"}


def test_insert_duplicate_id_rejected(shard: ResultsShard) -> None:
    with pytest.raises(AlreadyExistsError) as caught:
        shard.insert([record("new"), record("r2")])

    assert "r2" in caught.value.message
    assert "new" not in shard.results
    assert shard.results["r2"].name == "r2"


def test_insert_duplicate_id_in_batch_rejected(shard: ResultsShard) -> None:
    with pytest.raises(AlreadyExistsError) as caught:
        shard.insert([record("twice", name="a"), record("twice", name="b")])

    assert "twice" in caught.value.message
    assert "twice" not in shard.results


def test_find_returns_record_of_session(shard: ResultsShard) -> None:
    assert shard.find("s1", "r1").result_id == "r1"


def test_find_other_session_result_not_found(shard: ResultsShard) -> None:
    with pytest.raises(NotFoundError) as caught:
        shard.find("s1", "x1")

    assert "x1" in caught.value.message
    assert "s1" in caught.value.message


def test_find_unknown_result_not_found(shard: ResultsShard) -> None:
    with pytest.raises(NotFoundError) as caught:
        shard.find("s1", "nope")

    assert "nope" in caught.value.message


def test_find_all_names_every_missing_id(shard: ResultsShard) -> None:
    with pytest.raises(NotFoundError) as caught:
        shard.find_all("s1", ["r1", "x1", "nope"])

    assert "x1" in caught.value.message
    assert "nope" in caught.value.message
    assert caught.value.ids == ("x1", "nope")


def test_get_many_skips_unknown_and_other_sessions(shard: ResultsShard) -> None:
    found = shard.get_many("s1", ["r1", "x1", "nope"])

    assert [r.result_id for r in found] == ["r1"]


def test_get_many_without_session_returns_all_known(shard: ResultsShard) -> None:
    found = shard.get_many(None, ["r1", "x1", "nope"])

    assert [r.result_id for r in found] == ["r1", "x1"]


def test_remove_forgets_record_and_dependents(shard: ResultsShard) -> None:
    shard.register_dependents("s1", [("r1", "t1")])

    shard.remove(["r1", "unknown"])

    assert "r1" not in shard.results
    assert "r1" not in shard.by_session["s1"]
    assert "r1" not in shard.dependents


# Complete


def test_complete_sets_data_fields(shard: ResultsShard) -> None:
    completed, waiting = shard.complete("s1", [("r1", b"key-1", 42)])

    assert [r.result_id for r in completed] == ["r1"]
    assert waiting == {}
    assert shard.results["r1"].status == R.COMPLETED
    assert shard.results["r1"].opaque_id == b"key-1"
    assert shard.results["r1"].size == 42
    assert shard.results["r1"].completed_at is not None


def test_complete_batch_with_unknown_id_changes_nothing(shard: ResultsShard) -> None:
    with pytest.raises(NotFoundError) as caught:
        shard.complete("s1", [("r1", b"k1", 1), ("nope", b"k2", 1)])

    assert "nope" in caught.value.message
    assert shard.results["r1"].status == R.CREATED
    assert shard.results["r1"].opaque_id == b""


def test_complete_batch_with_other_session_id_changes_nothing(
    shard: ResultsShard,
) -> None:
    with pytest.raises(NotFoundError) as caught:
        shard.complete("s1", [("r1", b"k1", 1), ("x1", b"k2", 1)])

    assert "x1" in caught.value.message
    assert shard.results["r1"].status == R.CREATED
    assert shard.results["x1"].status == R.CREATED


def test_complete_batch_with_completed_id_changes_nothing(shard: ResultsShard) -> None:
    complete(shard, "r2")
    sequence = shard.sequence

    with pytest.raises(FailedPreconditionError) as caught:
        shard.complete("s1", [("r1", b"k1", 1), ("r2", b"k2", 1)])

    assert "r2" in caught.value.message
    assert shard.results["r1"].status == R.CREATED
    assert shard.results["r2"].opaque_id == b"obj-r2"
    assert shard.sequence == sequence


def test_complete_twice_rejected(shard: ResultsShard) -> None:
    complete(shard, "r1")

    with pytest.raises(FailedPreconditionError) as caught:
        shard.complete("s1", [("r1", b"other", 9)])

    assert "r1" in caught.value.message
    assert "COMPLETED" in caught.value.message
    assert shard.results["r1"].opaque_id == b"obj-r1"
    assert shard.results["r1"].size == 5


def test_complete_same_id_twice_in_batch_changes_nothing(shard: ResultsShard) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        shard.complete("s1", [("r1", b"k1", 1), ("r1", b"k2", 2)])

    assert "r1" in caught.value.message
    assert shard.results["r1"].status == R.CREATED


def test_complete_aborted_result_rejected(shard: ResultsShard) -> None:
    shard.abort("s1", ["r1"])

    with pytest.raises(FailedPreconditionError) as caught:
        complete(shard, "r1")

    assert "r1" in caught.value.message
    assert "ABORTED" in caught.value.message


def test_complete_by_owner_accepted(shard: ResultsShard) -> None:
    shard.claim_outputs("s1", [("r1", "t1")])

    shard.complete("s1", [("r1", b"k", 1)], owner_task_id="t1")

    assert shard.results["r1"].status == R.COMPLETED


def test_complete_by_other_task_rejected(shard: ResultsShard) -> None:
    shard.claim_outputs("s1", [("r1", "t1"), ("r2", "t2")])

    with pytest.raises(FailedPreconditionError) as caught:
        shard.complete("s1", [("r1", b"k", 1), ("r2", b"k", 1)], owner_task_id="t1")

    assert "r2" in caught.value.message
    assert "t1" in caught.value.message
    assert shard.results["r1"].status == R.CREATED


def test_complete_unowned_by_task_rejected(shard: ResultsShard) -> None:
    with pytest.raises(FailedPreconditionError) as caught:
        shard.complete("s1", [("r1", b"k", 1)], owner_task_id="t1")

    assert "r1" in caught.value.message
    assert "(none)" in caught.value.message


def test_complete_returns_and_forgets_waiting_tasks(shard: ResultsShard) -> None:
    shard.register_dependents("s1", [("r1", "t2"), ("r1", "t1"), ("r2", "t3")])

    _, waiting = shard.complete("s1", [("r1", b"k", 1)])

    assert waiting == {"r1": ["t1", "t2"]}
    assert "r1" not in shard.dependents
    assert task_list(shard.dependents["r2"]) == ["t3"]


# Dependents


def test_register_dependents_reports_completed(shard: ResultsShard) -> None:
    complete(shard, "r1")

    completed = shard.register_dependents("s1", [("r1", "t1"), ("r2", "t1")])

    assert completed == ["r1"]
    assert "r1" not in shard.dependents
    assert task_list(shard.dependents["r2"]) == ["t1"]


def test_register_dependents_same_task_twice_kept_once(shard: ResultsShard) -> None:
    shard.register_dependents("s1", [("r1", "t1"), ("r1", "t1")])

    assert task_list(shard.dependents["r1"]) == ["t1"]


def test_unregister_one_of_several_dependents(shard: ResultsShard) -> None:
    shard.register_dependents("s1", [("r1", "t1"), ("r1", "t2"), ("r1", "t3")])

    shard.unregister_dependents([("r1", "t2"), ("r1", "unknown")])

    assert task_list(shard.dependents["r1"]) == ["t1", "t3"]


def test_unregister_last_dependent_forgets_result(shard: ResultsShard) -> None:
    shard.register_dependents("s1", [("r1", "t1"), ("r2", "t1"), ("r2", "t2")])

    shard.unregister_dependents([("r1", "t1"), ("r2", "t1"), ("r2", "t2")])

    assert shard.dependents == {}


@pytest.mark.parametrize("action", ["abort", "delete"])
def test_register_dependents_on_unusable_result_rejected(
    shard: ResultsShard, action: str
) -> None:
    if action == "abort":
        shard.abort("s1", ["r1"])
        status = "ABORTED"
    else:
        complete(shard, "r1")
        shard.delete_data("s1", ["r1"])
        status = "DELETED"

    with pytest.raises(FailedPreconditionError) as caught:
        shard.register_dependents("s1", [("r2", "t1"), ("r1", "t1")])

    assert "r1" in caught.value.message
    assert status in caught.value.message
    assert shard.dependents == {}


def test_register_dependents_unknown_result_not_found(shard: ResultsShard) -> None:
    with pytest.raises(NotFoundError) as caught:
        shard.register_dependents("s1", [("r2", "t1"), ("nope", "t1")])

    assert "nope" in caught.value.message
    assert shard.dependents == {}


def test_register_dependents_other_session_not_found(shard: ResultsShard) -> None:
    with pytest.raises(NotFoundError) as caught:
        shard.register_dependents("s1", [("x1", "t1")])

    assert "x1" in caught.value.message
    assert shard.dependents == {}


def test_register_then_complete_returns_task_to_completer(
    shard: ResultsShard,
) -> None:
    completed = shard.register_dependents("s1", [("r1", "t1")])

    _, waiting = shard.complete("s1", [("r1", b"k", 1)])

    assert completed == []
    assert waiting == {"r1": ["t1"]}


def test_complete_then_register_reports_completed(shard: ResultsShard) -> None:
    _, waiting = shard.complete("s1", [("r1", b"k", 1)])

    completed = shard.register_dependents("s1", [("r1", "t1")])

    assert waiting == {}
    assert completed == ["r1"]
    assert "r1" not in shard.dependents


def test_unregister_dependents_forgets_tasks(shard: ResultsShard) -> None:
    shard.register_dependents("s1", [("r1", "t1"), ("r1", "t2")])

    shard.unregister_dependents([("r1", "t1"), ("r1", "t2"), ("r9", "t1")])

    assert "r1" not in shard.dependents


def test_unregistered_task_not_returned_by_complete(shard: ResultsShard) -> None:
    shard.register_dependents("s1", [("r1", "t1"), ("r1", "t2")])
    shard.unregister_dependents([("r1", "t1")])

    _, waiting = shard.complete("s1", [("r1", b"k", 1)])

    assert waiting == {"r1": ["t2"]}


# Output claims and owners


def test_claim_outputs_sets_owner(shard: ResultsShard) -> None:
    shard.claim_outputs("s1", [("r1", "t1"), ("r2", "t2")])

    assert shard.owner_task_ids("s1", ["r1", "r2"]) == {"r1": "t1", "r2": "t2"}


def test_claim_owned_output_rejected(shard: ResultsShard) -> None:
    shard.claim_outputs("s1", [("r1", "t1")])

    with pytest.raises(FailedPreconditionError) as caught:
        shard.claim_outputs("s1", [("r2", "t2"), ("r1", "t2")])

    assert "r1" in caught.value.message
    assert "t1" in caught.value.message
    assert shard.results["r1"].owner_task_id == "t1"
    assert shard.results["r2"].owner_task_id == ""


def test_claim_completed_output_rejected(shard: ResultsShard) -> None:
    complete(shard, "r1")

    with pytest.raises(FailedPreconditionError) as caught:
        shard.claim_outputs("s1", [("r2", "t2"), ("r1", "t2")])

    assert "r1" in caught.value.message
    assert "COMPLETED" in caught.value.message
    assert shard.results["r2"].owner_task_id == ""


def test_claim_unknown_output_not_found(shard: ResultsShard) -> None:
    with pytest.raises(NotFoundError) as caught:
        shard.claim_outputs("s1", [("r2", "t2"), ("nope", "t2")])

    assert "nope" in caught.value.message
    assert shard.results["r2"].owner_task_id == ""


def test_claim_same_output_twice_in_batch_rejected(shard: ResultsShard) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        shard.claim_outputs("s1", [("r2", "t1"), ("r1", "t1"), ("r1", "t2")])

    assert "r1" in caught.value.message
    assert shard.results["r1"].owner_task_id == ""
    assert shard.results["r2"].owner_task_id == ""


def test_transfer_outputs_moves_only_from_previous_owner(shard: ResultsShard) -> None:
    shard.claim_outputs("s1", [("r1", "t1"), ("r2", "t2")])

    shard.transfer_outputs([("r1", "t9"), ("r2", "t9"), ("nope", "t9")], "t1")

    assert shard.results["r1"].owner_task_id == "t9"
    assert shard.results["r2"].owner_task_id == "t2"


def test_transfer_outputs_to_empty_releases_claim(shard: ResultsShard) -> None:
    shard.claim_outputs("s1", [("r1", "t1")])

    shard.transfer_outputs([("r1", "")], "t1")

    assert shard.results["r1"].owner_task_id == ""


def test_owner_task_ids_unknown_not_found(shard: ResultsShard) -> None:
    with pytest.raises(NotFoundError) as caught:
        shard.owner_task_ids("s1", ["r1", "nope"])

    assert "nope" in caught.value.message


# Abort


def test_abort_given_ids_returns_waiting_tasks(shard: ResultsShard) -> None:
    shard.register_dependents("s1", [("r1", "t1")])
    complete(shard, "r2")

    waiting = shard.abort("s1", ["r1", "r2", "x1", "nope"])

    assert waiting == {"r1": ["t1"]}
    assert shard.results["r1"].status == R.ABORTED
    assert shard.results["r2"].status == R.COMPLETED
    assert shard.results["x1"].status == R.CREATED
    assert "r1" not in shard.dependents


def test_abort_whole_session_aborts_created(shard: ResultsShard) -> None:
    complete(shard, "r3")

    waiting = shard.abort("s1")

    assert waiting == {"r1": [], "r2": []}
    assert shard.results["r3"].status == R.COMPLETED
    assert shard.results["x1"].status == R.CREATED


# Delete data, purge, delete session


def test_delete_data_returns_objects_to_delete(shard: ResultsShard) -> None:
    complete(shard, "r1", "r2")

    deleted, objects = shard.delete_data("s1", ["r1", "r2"])

    assert deleted == ["r1", "r2"]
    assert objects == [b"obj-r1", b"obj-r2"]
    assert shard.results["r1"].status == R.DELETED
    assert shard.results["r1"].opaque_id == b""


def test_delete_data_manual_deletion_keeps_object() -> None:
    shard = ResultsShard(0, event_log_size=10)
    shard.insert([record("m1", manual_deletion=True)])
    complete(shard, "m1")

    deleted, objects = shard.delete_data("s1", ["m1"])

    assert deleted == ["m1"]
    assert objects == []
    assert shard.results["m1"].status == R.DELETED


def test_delete_data_created_result_rejected(shard: ResultsShard) -> None:
    complete(shard, "r1")

    with pytest.raises(FailedPreconditionError) as caught:
        shard.delete_data("s1", ["r1", "r2"])

    assert "r2" in caught.value.message
    assert "CREATED" in caught.value.message
    assert shard.results["r1"].status == R.COMPLETED


def test_delete_data_twice_is_noop(shard: ResultsShard) -> None:
    complete(shard, "r1")
    shard.delete_data("s1", ["r1"])

    deleted, objects = shard.delete_data("s1", ["r1"])

    assert deleted == []
    assert objects == []


def test_delete_data_unknown_not_found(shard: ResultsShard) -> None:
    with pytest.raises(NotFoundError) as caught:
        shard.delete_data("s1", ["nope"])

    assert "nope" in caught.value.message


def test_purge_session_deletes_completed_non_manual() -> None:
    shard = ResultsShard(0, event_log_size=10)
    shard.insert(
        [
            record("done"),
            record("manual", manual_deletion=True),
            record("open"),
            record("other", "s2"),
        ]
    )
    complete(shard, "done", "manual")
    complete(shard, "other", session_id="s2")

    delete, keep = shard.purge_session("s1")

    assert delete == [b"obj-done"]
    assert keep == [b"obj-manual"]
    assert shard.results["done"].status == R.DELETED
    assert shard.results["done"].opaque_id == b""
    assert shard.results["manual"].status == R.COMPLETED
    assert shard.results["open"].status == R.CREATED
    assert shard.results["other"].status == R.COMPLETED


def test_delete_session_removes_only_its_records(shard: ResultsShard) -> None:
    shard.register_dependents("s1", [("r1", "t1")])

    count = shard.delete_session("s1")

    assert count == 3
    assert set(shard.results) == {"x1"}
    assert shard.dependents == {}
    assert "s1" not in shard.by_session


# List


def test_list_filters_sorts_and_limits() -> None:
    shard = ResultsShard(0, event_log_size=10)
    shard.insert([record(f"r{i}", name=f"n{i % 2}") for i in range(6)])
    shard.insert([record("other", "s2", name="n0")])
    for i in range(6):
        shard.complete("s1", [(f"r{i}", b"k", 10 * i)])
    predicate = filters.compile_filters(
        [[Condition("name", "eq", "n0"), Condition("size", "ge", 10)]],
        filters.RESULT_FIELDS,
    )

    total, page = shard.list(predicate, Sort("size", "desc"), 2, session_id="s1")

    assert total == 2
    assert [r.result_id for r in page] == ["r4", "r2"]


def test_list_without_session_covers_all_sessions(shard: ResultsShard) -> None:
    total, page = shard.list(lambda record: True, None, 10)

    assert total == 4
    assert [r.result_id for r in page] == ["r1", "r2", "r3", "x1"]


def test_list_limit_zero_counts_all(shard: ResultsShard) -> None:
    total, page = shard.list(lambda record: True, None, 0, session_id="s1")

    assert total == 3
    assert page == []


# Events


def test_snapshot_reports_status_and_notfound(shard: ResultsShard) -> None:
    complete(shard, "r1")

    sequence, changes = shard.snapshot(["r1", "r2", "nope"])

    assert sequence == shard.sequence
    assert [(c.result_id, c.status) for c in changes] == [
        ("r1", R.COMPLETED),
        ("r2", R.CREATED),
        ("nope", R.NOTFOUND),
    ]


def test_changes_since_returns_later_changes_of_ids(shard: ResultsShard) -> None:
    start, _ = shard.snapshot(["r1", "r2"])
    complete(shard, "r1", "r3")
    shard.abort("s1", ["r2"])

    sequence, changes = shard.changes_since(start, {"r1", "r2"})

    assert sequence == start + 3
    assert changes is not None
    assert [(c.result_id, c.status) for c in changes] == [
        ("r1", R.COMPLETED),
        ("r2", R.ABORTED),
    ]
    assert [c.sequence for c in changes] == [start + 1, start + 3]


def test_changes_since_latest_sequence_is_empty(shard: ResultsShard) -> None:
    assert shard.changes_since(shard.sequence, {"r1"}) == (shard.sequence, [])


def test_changes_since_overflowed_log_returns_none() -> None:
    shard = ResultsShard(0, event_log_size=3)
    shard.insert([record(f"r{i}") for i in range(5)])

    sequence, changes = shard.changes_since(1, {"r4"})

    assert sequence == 5
    assert changes is None


def test_changes_since_at_log_start_returns_changes() -> None:
    shard = ResultsShard(0, event_log_size=3)
    shard.insert([record(f"r{i}") for i in range(5)])

    _, changes = shard.changes_since(2, {"r2", "r4"})

    assert changes is not None
    assert [c.result_id for c in changes] == ["r2", "r4"]


def test_events_record_every_status_change(shard: ResultsShard) -> None:
    start = shard.sequence
    complete(shard, "r1")
    shard.delete_data("s1", ["r1"])

    _, changes = shard.changes_since(start, {"r1"})

    assert changes is not None
    assert [c.status for c in changes] == [R.COMPLETED, R.DELETED]


def test_rejected_call_records_no_event(shard: ResultsShard) -> None:
    start = shard.sequence

    with pytest.raises(NotFoundError):
        shard.complete("s1", [("r1", b"k", 1), ("nope", b"k", 1)])

    assert shard.sequence == start


def test_insert_into_deleted_session_rejected() -> None:
    shard = ResultsShard(0, 100)
    shard.delete_session("s1")

    with pytest.raises(FailedPreconditionError) as caught:
        shard.insert([ResultRecord("s1", "a", "r1", ResultStatus.CREATED)])

    assert "s1" in caught.value.message
    assert "r1" not in shard.results


def test_holders_of_repeated_id_listed_once() -> None:
    shard = ResultsShard(0, 100)
    shard.insert([ResultRecord("s1", "a", "r1", ResultStatus.CREATED)])
    shard.complete("s1", [("r1", b"imports/x", 3)])

    holders = shard.holders_of([b"imports/x", b"imports/x"])

    assert holders == [(b"imports/x", "s1", "r1", False)]
