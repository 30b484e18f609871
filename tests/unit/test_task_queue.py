"""Unit tests of QueueState, the pure state of the TaskQueue actor."""

from __future__ import annotations

import pytest

from results_service.records import QueuedTask
from results_service.state.task_queue import QueueState


def message(
    task_id: str, priority: int = 1, session_id: str = "s1", partition_id: str = "p1"
) -> QueuedTask:
    return QueuedTask(task_id, session_id, partition_id, priority)


def popped_ids(
    queue: QueueState, partition_id: str = "p1", count: int = 100
) -> list[str]:
    return [m.task_id for m in queue.pop(partition_id, count)]


@pytest.fixture
def queue() -> QueueState:
    return QueueState()


# Order


def test_pop_highest_priority_first(queue: QueueState) -> None:
    queue.push([message("low", 1), message("high", 9), message("mid", 5)])

    assert popped_ids(queue) == ["high", "mid", "low"]


def test_pop_fifo_within_priority(queue: QueueState) -> None:
    queue.push([message("a", 3), message("b", 3)])
    queue.push([message("c", 3)])

    assert popped_ids(queue) == ["a", "b", "c"]


def test_pop_mixes_priority_and_fifo(queue: QueueState) -> None:
    queue.push([message("a1", 1), message("b5", 5), message("c1", 1), message("d5", 5)])

    assert popped_ids(queue) == ["b5", "d5", "a1", "c1"]


def test_pop_respects_count(queue: QueueState) -> None:
    queue.push([message("a"), message("b"), message("c")])

    first = popped_ids(queue, count=2)
    rest = popped_ids(queue, count=2)

    assert first == ["a", "b"]
    assert rest == ["c"]


def test_pop_count_zero_takes_nothing(queue: QueueState) -> None:
    queue.push([message("a")])

    assert queue.pop("p1", 0) == []
    assert queue.size("p1") == 1


def test_partitions_are_separate_queues(queue: QueueState) -> None:
    queue.push([message("a", 9, partition_id="p1"), message("b", 1, partition_id="p2")])

    assert popped_ids(queue, "p2") == ["b"]
    assert popped_ids(queue, "p1") == ["a"]


def test_pop_unknown_partition_empty(queue: QueueState) -> None:
    assert queue.pop("nope", 5) == []


def test_contents_in_leaving_order(queue: QueueState) -> None:
    queue.push([message("a", 1), message("b", 7), message("c", 1)])

    assert [m.task_id for m in queue.contents("p1")] == ["b", "a", "c"]


def test_size_counts_partition(queue: QueueState) -> None:
    queue.push([message("a"), message("b"), message("c", partition_id="p2")])

    assert queue.size("p1") == 2
    assert queue.size("p2") == 1


# Duplicates


def test_push_duplicate_ignored(queue: QueueState) -> None:
    first = queue.push([message("a")])

    second = queue.push([message("a"), message("b")])

    assert first == (["a"], [])
    assert second == (["b"], [])
    assert popped_ids(queue) == ["a", "b"]


def test_push_duplicate_in_one_batch_ignored(queue: QueueState) -> None:
    queued, _ = queue.push([message("a"), message("a")])

    assert queued == ["a"]
    assert queue.size("p1") == 1


def test_push_after_pop_queues_again(queue: QueueState) -> None:
    queue.push([message("a")])
    queue.pop("p1", 1)

    queued, _ = queue.push([message("a")])

    assert queued == ["a"]
    assert popped_ids(queue) == ["a"]


# Pause and resume


def test_pause_parks_queued_tasks(queue: QueueState) -> None:
    queue.push([message("a"), message("b"), message("x", session_id="s2")])

    parked = queue.pause_session("s1")

    assert sorted(parked) == ["a", "b"]
    assert popped_ids(queue) == ["x"]


def test_push_while_paused_parks(queue: QueueState) -> None:
    queue.pause_session("s1")

    queued, parked = queue.push([message("a"), message("x", session_id="s2")])

    assert queued == ["x"]
    assert parked == ["a"]
    assert popped_ids(queue) == ["x"]


def test_push_parked_duplicate_ignored(queue: QueueState) -> None:
    queue.pause_session("s1")
    queue.push([message("a")])

    assert queue.push([message("a")]) == ([], [])


def test_resume_restores_in_arrival_order(queue: QueueState) -> None:
    queue.push([message("a1"), message("a2")])
    queue.pause_session("s1")
    queue.push([message("a3")])

    resumed = queue.resume_session("s1")

    assert sorted(resumed) == ["a1", "a2", "a3"]
    assert popped_ids(queue) == ["a1", "a2", "a3"]


def test_resume_keeps_priority_order(queue: QueueState) -> None:
    queue.pause_session("s1")
    queue.push([message("low", 1), message("high", 9)])

    queue.resume_session("s1")

    assert popped_ids(queue) == ["high", "low"]


def test_resumed_task_listed_and_popped_once(queue: QueueState) -> None:
    queue.push([message("a")])
    queue.pause_session("s1")
    queue.resume_session("s1")

    contents = [m.task_id for m in queue.contents("p1")]
    popped = popped_ids(queue)

    assert contents == ["a"]
    assert popped == ["a"]
    assert queue.pop("p1", 10) == []


def test_pause_resume_pause_parks_again(queue: QueueState) -> None:
    queue.push([message("a")])
    queue.pause_session("s1")
    queue.resume_session("s1")

    queue.pause_session("s1")

    assert queue.pop("p1", 10) == []
    assert queue.contents("p1") == []


def test_resume_unpaused_session_is_noop(queue: QueueState) -> None:
    queue.push([message("a")])

    assert queue.resume_session("s1") == []
    assert popped_ids(queue) == ["a"]


def test_push_after_resume_queues(queue: QueueState) -> None:
    queue.pause_session("s1")
    queue.resume_session("s1")

    assert queue.push([message("a")]) == (["a"], [])


# Removal


def test_remove_session_drops_queued_and_parked(queue: QueueState) -> None:
    queue.push([message("a"), message("x", session_id="s2")])
    queue.pause_session("s1")
    queue.push([message("b")])

    removed = queue.remove_session("s1")

    assert removed == 2
    assert popped_ids(queue) == ["x"]
    assert queue.resume_session("s1") == []


def test_remove_session_counts_queued(queue: QueueState) -> None:
    queue.push([message("a"), message("b")])

    assert queue.remove_session("s1") == 2
    assert queue.pop("p1", 10) == []


def test_remove_session_unpauses(queue: QueueState) -> None:
    queue.pause_session("s1")
    queue.remove_session("s1")

    assert queue.push([message("a")]) == (["a"], [])


def test_remove_tasks_drops_given_tasks(queue: QueueState) -> None:
    queue.push([message("a"), message("b"), message("c")])

    removed = queue.remove_tasks("s1", ["b", "nope"])

    assert removed == 1
    assert popped_ids(queue) == ["a", "c"]


def test_remove_tasks_skips_other_session(queue: QueueState) -> None:
    queue.push([message("x", session_id="s2")])

    removed = queue.remove_tasks("s1", ["x"])

    assert removed == 0
    assert popped_ids(queue) == ["x"]


def test_remove_tasks_drops_parked(queue: QueueState) -> None:
    queue.pause_session("s1")
    queue.push([message("a"), message("b")])

    removed = queue.remove_tasks("s1", ["a"])
    resumed = queue.resume_session("s1")

    assert removed == 1
    assert resumed == ["b"]


def test_pop_skips_removed_entries(queue: QueueState) -> None:
    queue.push([message("a", 5), message("b", 5), message("c", 1)])
    queue.remove_tasks("s1", ["a"])

    assert popped_ids(queue, count=2) == ["b", "c"]


def test_removed_task_pushed_again_queued_once(queue: QueueState) -> None:
    queue.push([message("a"), message("b")])
    queue.remove_tasks("s1", ["a"])

    queue.push([message("a")])

    assert popped_ids(queue) == ["b", "a"]
    assert queue.pop("p1", 10) == []
