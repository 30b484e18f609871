"""Tests of the records' compact forms: pickling as rows and remaining ids."""

from __future__ import annotations

import copy
import pickle

from ray import cloudpickle

from results_service.records import (
    REMAINING_SET_MIN,
    AcquiredTask,
    QueuedTask,
    RecordList,
    ResultRecord,
    ResultStatus,
    TaskOptions,
    TaskRecord,
    TaskStatus,
    remaining_ids,
    without_ids,
)


def result(index: int) -> ResultRecord:
    return ResultRecord("s1", f"r{index}", f"id{index}", ResultStatus.CREATED, "t1")


def task(task_id: str, options: TaskOptions) -> TaskRecord:
    return TaskRecord(
        task_id, "s1", TaskStatus.PENDING, "p", ("d",), ("o",), options, ("p", "d")
    )


def test_record_pickles_to_equal_record() -> None:
    record = result(1)

    copied = pickle.loads(cloudpickle.dumps(record))

    assert copied == record
    assert copied is not record


def test_frozen_record_pickles_to_equal_record() -> None:
    options = TaskOptions(priority=5, partition_id="p", options={"k": "v"})
    acquired = AcquiredTask("t1", "s1", "l1", 1.5, "p", ("d",), ("o",), options, 2)

    assert pickle.loads(cloudpickle.dumps(acquired)) == acquired


def test_record_list_round_trips_as_record_list() -> None:
    records = RecordList(result(index) for index in range(100))

    copied = pickle.loads(cloudpickle.dumps(records))

    assert isinstance(copied, RecordList)
    assert copied == records


def test_record_list_keeps_shared_objects_shared() -> None:
    options = TaskOptions(partition_id="p")
    records = RecordList(task(f"t{index}", options) for index in range(10))

    copied = pickle.loads(cloudpickle.dumps(records))

    assert copied[0].options == options
    assert all(record.options is copied[0].options for record in copied)


def test_record_list_of_mixed_classes_round_trips() -> None:
    mixed = RecordList([result(1), QueuedTask("t1", "s1", "p", 1), "text", 3])

    assert pickle.loads(cloudpickle.dumps(mixed)) == mixed


def test_empty_record_list_round_trips() -> None:
    copied = pickle.loads(cloudpickle.dumps(RecordList()))

    assert copied == []
    assert isinstance(copied, RecordList)


def test_record_copy_is_shallow() -> None:
    record = task("t1", TaskOptions())

    copied = copy.copy(record)

    assert copied == record
    assert copied.options is record.options


def test_remaining_ids_small_is_tuple_without_repeats() -> None:
    remaining = remaining_ids(["p", "d", "p"])

    assert remaining == ("p", "d")


def test_remaining_ids_large_is_set() -> None:
    ids = [f"d{index}" for index in range(REMAINING_SET_MIN + 1)]

    remaining = remaining_ids(ids)

    assert remaining == set(ids)


def test_without_ids_removes_from_tuple() -> None:
    assert without_ids(("a", "b", "c"), ["b", "x"]) == ("a", "c")


def test_without_ids_shrinks_set_to_tuple() -> None:
    ids = [f"d{index}" for index in range(REMAINING_SET_MIN + 1)]

    remaining = without_ids(set(ids), ids[:2])

    assert isinstance(remaining, tuple)
    assert set(remaining) == set(ids[2:])


def test_without_ids_keeps_large_set() -> None:
    ids = [f"d{index}" for index in range(REMAINING_SET_MIN + 2)]

    remaining = without_ids(set(ids), ids[:1])

    assert remaining == set(ids[1:])
