"""Unit tests of TasksShard, the pure state of one TasksTable shard."""

from __future__ import annotations

import pytest

from results_service import filters
from results_service.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    NotFoundError,
)
from results_service.filters import Condition
from results_service.records import QueuedTask, TaskOptions, TaskRecord, TaskStatus
from results_service.state.tasks_shard import Lease, TasksShard

T = TaskStatus
LEASE_SECONDS = 60.0


def task(
    task_id: str,
    inputs: tuple[str, ...] = ("p",),
    outputs: tuple[str, ...] = (),
    session_id: str = "s1",
    status: TaskStatus = T.CREATING,
    max_retries: int = 1,
    retries: int = 0,
) -> TaskRecord:
    return TaskRecord(
        task_id=task_id,
        session_id=session_id,
        status=status,
        payload_id=inputs[0],
        data_dependencies=inputs[1:],
        expected_output_ids=outputs,
        options=TaskOptions(
            priority=3, partition_id="default", max_retries=max_retries
        ),
        remaining=set(inputs),
        retries=retries,
    )


@pytest.fixture
def shard() -> TasksShard:
    return TasksShard(0)


def claim(shard: TasksShard, task_id: str) -> list[QueuedTask]:
    """Remove every remaining dependency of a task and finalize it."""
    remaining = sorted(shard.tasks[task_id].remaining)
    return shard.remove_dependencies([(task_id, remaining)], [task_id])


def dispatched(shard: TasksShard, record: TaskRecord) -> Lease:
    """Insert a task, make it ready, queue it and dispatch it to worker w1."""
    shard.insert([record])
    ready = claim(shard, record.task_id)
    shard.mark_queued([record.task_id], [])
    ((_, lease),) = shard.dispatch(ready, "w1", LEASE_SECONDS)
    return lease


# Insert and remove


def test_insert_duplicate_id_rejected(shard: TasksShard) -> None:
    shard.insert([task("t1")])

    with pytest.raises(AlreadyExistsError) as caught:
        shard.insert([task("t2"), task("t1")])

    assert "t1" in caught.value.message
    assert "t2" not in shard.tasks


def test_insert_duplicate_id_in_batch_rejected(shard: TasksShard) -> None:
    with pytest.raises(AlreadyExistsError) as caught:
        shard.insert([task("t1"), task("t1")])

    assert "t1" in caught.value.message
    assert "t1" not in shard.tasks


def test_find_other_session_task_not_found(shard: TasksShard) -> None:
    shard.insert([task("t1", session_id="s2")])

    with pytest.raises(NotFoundError) as caught:
        shard.find("s1", "t1")

    assert "t1" in caught.value.message


def test_remove_forgets_claim_and_staged(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1", outputs=("o1",)))
    shard.stage_output("s1", "t1", lease.lease_id, "o1", (b"k", 1))

    shard.remove(["t1", "unknown"])

    assert "t1" not in shard.tasks
    assert "t1" not in shard.staged
    assert "t1" not in shard.by_session["s1"]


# Readiness


def test_remove_dependencies_claims_ready_task_once(shard: TasksShard) -> None:
    shard.insert([task("t1", inputs=("p", "d"))])
    shard.remove_dependencies([], ["t1"])

    first = shard.remove_dependencies([("t1", ["p", "d"])])
    second = shard.remove_dependencies([("t1", ["p", "d"])])

    assert [m.task_id for m in first] == ["t1"]
    assert second == []


def test_remove_dependencies_returns_queue_message(shard: TasksShard) -> None:
    shard.insert([task("t1")])

    ready = claim(shard, "t1")

    assert ready == [QueuedTask("t1", "s1", "default", 3)]


def test_partial_removal_does_not_claim(shard: TasksShard) -> None:
    shard.insert([task("t1", inputs=("p", "d"))])

    ready = shard.remove_dependencies([("t1", ["p"])], ["t1"])

    assert ready == []
    assert set(shard.tasks["t1"].remaining) == {"d"}
    assert shard.tasks["t1"].status == T.PENDING


def test_creating_task_claimable_before_finalize(shard: TasksShard) -> None:
    shard.insert([task("t1")])

    ready = shard.remove_dependencies([("t1", ["p"])])

    assert [m.task_id for m in ready] == ["t1"]
    assert shard.tasks["t1"].status == T.CREATING


def test_finalize_after_removal_does_not_claim_again(shard: TasksShard) -> None:
    shard.insert([task("t1")])
    shard.remove_dependencies([("t1", ["p"])])

    ready = shard.remove_dependencies([], ["t1"])

    assert ready == []
    assert shard.tasks["t1"].status == T.PENDING


def test_removal_after_finalize_does_not_claim_again(shard: TasksShard) -> None:
    shard.insert([task("t1")])
    first = shard.remove_dependencies([("t1", ["p"])], ["t1"])

    second = shard.remove_dependencies([("t1", ["p"])])

    assert [m.task_id for m in first] == ["t1"]
    assert second == []


def test_finalize_after_queued_mark_keeps_submitted(shard: TasksShard) -> None:
    shard.insert([task("t1")])
    shard.remove_dependencies([("t1", ["p"])])
    shard.mark_queued(["t1"], [])

    ready = shard.remove_dependencies([], ["t1"])

    assert ready == []
    assert shard.tasks["t1"].status == T.SUBMITTED


def test_removal_for_unknown_task_skipped(shard: TasksShard) -> None:
    assert shard.remove_dependencies([("nope", ["p"])], ["nope"]) == []


def test_removal_for_cancelled_task_does_not_claim(shard: TasksShard) -> None:
    shard.insert([task("t1")])
    shard.cancel("s1", ["t1"], "stop")

    assert shard.remove_dependencies([("t1", ["p"])]) == []


# Queue marks


def test_mark_queued_sets_submitted_and_paused(shard: TasksShard) -> None:
    shard.insert([task("t1"), task("t2")])
    claim(shard, "t1")
    claim(shard, "t2")

    shard.mark_queued(["t1"], ["t2"])

    assert shard.tasks["t1"].status == T.SUBMITTED
    assert shard.tasks["t1"].submitted_at is not None
    assert shard.tasks["t2"].status == T.PAUSED
    assert shard.claimed == set()


def test_mark_queued_after_dispatch_keeps_dispatched(shard: TasksShard) -> None:
    shard.insert([task("t1")])
    ready = claim(shard, "t1")
    shard.dispatch(ready, "w1", LEASE_SECONDS)

    shard.mark_queued(["t1"], [])

    assert shard.tasks["t1"].status == T.DISPATCHED


def test_mark_queued_paused_after_dispatch_keeps_dispatched(shard: TasksShard) -> None:
    shard.insert([task("t1")])
    ready = claim(shard, "t1")
    shard.dispatch(ready, "w1", LEASE_SECONDS)

    shard.mark_queued([], ["t1"])

    assert shard.tasks["t1"].status == T.DISPATCHED


def test_mark_queued_after_cancel_keeps_cancelled(shard: TasksShard) -> None:
    shard.insert([task("t1")])
    claim(shard, "t1")
    shard.cancel("s1", ["t1"], "stop")

    shard.mark_queued(["t1"], [])

    assert shard.tasks["t1"].status == T.CANCELLED


def test_mark_queued_unknown_task_skipped(shard: TasksShard) -> None:
    shard.mark_queued(["nope"], ["nope2"])

    assert shard.tasks == {}


# Dispatch


def test_dispatch_claimed_task_grants_lease(shard: TasksShard) -> None:
    shard.insert([task("t1")])
    ready = claim(shard, "t1")
    shard.mark_queued(["t1"], [])

    ((record, lease),) = shard.dispatch(ready, "w1", LEASE_SECONDS)

    assert record.status == T.DISPATCHED
    assert record.worker_id == "w1"
    assert lease.lease_id == record.lease_id
    assert lease.expires_at == record.lease_expires_at


def test_dispatch_drops_cancelled_and_unknown(shard: TasksShard) -> None:
    shard.insert([task("t1")])
    ready = claim(shard, "t1")
    shard.mark_queued(["t1"], [])
    shard.cancel("s1", ["t1"], "stop")
    stale = QueuedTask("nope", "s1", "default", 1)

    granted = shard.dispatch([*ready, stale], "w1", LEASE_SECONDS)

    assert granted == []
    assert shard.tasks["t1"].status == T.CANCELLED


def test_dispatch_twice_grants_once(shard: TasksShard) -> None:
    shard.insert([task("t1")])
    ready = claim(shard, "t1")
    shard.mark_queued(["t1"], [])
    shard.dispatch(ready, "w1", LEASE_SECONDS)

    assert shard.dispatch(ready, "w2", LEASE_SECONDS) == []
    assert shard.tasks["t1"].worker_id == "w1"


def test_dispatch_drops_unclaimed_pending_task(shard: TasksShard) -> None:
    shard.insert([task("t1", inputs=("p", "d"))])
    shard.remove_dependencies([("t1", ["p"])], ["t1"])

    granted = shard.dispatch(
        [QueuedTask("t1", "s1", "default", 3)], "w1", LEASE_SECONDS
    )

    assert granted == []
    assert shard.tasks["t1"].status == T.PENDING


def test_dispatch_accepts_task_marked_paused_after_resume(shard: TasksShard) -> None:
    # The queue parked the task and then resumed the session. set_paused(False) ran
    # while the task was still PENDING, before the PAUSED mark of the push arrived.
    shard.insert([task("t1")])
    ready = claim(shard, "t1")
    shard.set_paused(["t1"], False)
    shard.mark_queued([], ["t1"])

    granted = shard.dispatch(ready, "w1", LEASE_SECONDS)

    assert [record.task_id for record, _ in granted] == ["t1"]


def test_dispatch_accepts_paused_task_before_resume_mark(shard: TasksShard) -> None:
    # The session resumed in the queue, and a worker popped the task before
    # set_paused(False) reached this shard.
    shard.insert([task("t1")])
    ready = claim(shard, "t1")
    shard.mark_queued(["t1"], [])
    shard.set_paused(["t1"], True)

    granted = shard.dispatch(ready, "w1", LEASE_SECONDS)
    shard.set_paused(["t1"], False)

    assert [record.task_id for record, _ in granted] == ["t1"]
    assert shard.tasks["t1"].status == T.DISPATCHED


# Leases


def test_check_lease_wrong_id_rejected(shard: TasksShard) -> None:
    dispatched(shard, task("t1"))

    with pytest.raises(FailedPreconditionError) as caught:
        shard.check_lease("s1", "t1", "wrong-lease")

    assert "t1" in caught.value.message
    assert "wrong-lease" in caught.value.message


def test_check_lease_of_queued_task_rejected(shard: TasksShard) -> None:
    shard.insert([task("t1")])
    claim(shard, "t1")
    shard.mark_queued(["t1"], [])

    with pytest.raises(FailedPreconditionError) as caught:
        shard.check_lease("s1", "t1", "")

    assert "t1" in caught.value.message
    assert "SUBMITTED" in caught.value.message


def test_check_lease_unknown_task_not_found(shard: TasksShard) -> None:
    with pytest.raises(NotFoundError) as caught:
        shard.check_lease("s1", "nope", "lease")

    assert "nope" in caught.value.message


def test_start_moves_to_processing(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1"))

    record = shard.start("s1", "t1", lease.lease_id)

    assert record.status == T.PROCESSING
    assert record.started_at is not None


def test_start_twice_keeps_processing(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1"))
    shard.start("s1", "t1", lease.lease_id)

    assert shard.start("s1", "t1", lease.lease_id).status == T.PROCESSING


def test_renew_sets_new_expiry(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1"))

    expires = shard.renew("s1", "t1", lease.lease_id, 120.0)

    assert shard.tasks["t1"].lease_expires_at == expires


def test_expire_leases_requeues_and_returns_staged(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1", outputs=("o1",)))
    shard.stage_output("s1", "t1", lease.lease_id, "o1", (b"staged-1", 4))

    expired, objects = shard.expire_leases(lease.expires_at + 1)

    assert expired == [QueuedTask("t1", "s1", "default", 3)]
    assert objects == [b"staged-1"]
    assert shard.tasks["t1"].status == T.SUBMITTED
    assert shard.tasks["t1"].lease_id == ""
    assert shard.tasks["t1"].worker_id == ""
    assert "t1" not in shard.staged


def test_expired_lease_rejected_afterwards(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1"))
    shard.expire_leases(lease.expires_at + 1)

    with pytest.raises(FailedPreconditionError) as caught:
        shard.check_lease("s1", "t1", lease.lease_id)

    assert "t1" in caught.value.message


def test_expire_leases_keeps_unexpired(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1"))

    expired, objects = shard.expire_leases(lease.expires_at - 1)

    assert expired == []
    assert objects == []
    assert shard.tasks["t1"].status == T.DISPATCHED


def test_expire_leases_requeues_processing_task(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1"))
    shard.start("s1", "t1", lease.lease_id)

    expired, _ = shard.expire_leases(lease.expires_at + 1)

    assert [m.task_id for m in expired] == ["t1"]
    assert shard.tasks["t1"].status == T.SUBMITTED


def test_expired_task_dispatchable_again(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1"))
    expired, _ = shard.expire_leases(lease.expires_at + 1)

    ((_, second),) = shard.dispatch(expired, "w2", LEASE_SECONDS)

    assert second.lease_id != lease.lease_id
    assert shard.tasks["t1"].worker_id == "w2"


# Staging and completion


def test_stage_unexpected_output_rejected(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1", outputs=("o1",)))

    with pytest.raises(FailedPreconditionError) as caught:
        shard.stage_output("s1", "t1", lease.lease_id, "x", (b"k", 1))

    assert "x" in caught.value.message
    assert "t1" in caught.value.message
    assert "t1" not in shard.staged


def test_stage_again_returns_previous_object(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1", outputs=("o1",)))
    first = shard.stage_output("s1", "t1", lease.lease_id, "o1", (b"k1", 1))

    second = shard.stage_output("s1", "t1", lease.lease_id, "o1", (b"k2", 2))

    assert first is None
    assert second == b"k1"
    assert shard.staged["t1"] == {"o1": (b"k2", 2)}


def test_begin_completion_with_staged_and_inline(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1", outputs=("o1", "o2")))
    shard.stage_output("s1", "t1", lease.lease_id, "o1", (b"k1", 3))

    ending = shard.begin_completion("s1", "t1", lease.lease_id, ["o2"])

    assert ending.task.status == T.PROCESSED
    assert ending.staged == {"o1": (b"k1", 3)}
    assert "t1" not in shard.staged


def test_begin_completion_missing_output_changes_nothing(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1", outputs=("o1", "o2")))
    shard.stage_output("s1", "t1", lease.lease_id, "o1", (b"k1", 3))

    with pytest.raises(FailedPreconditionError) as caught:
        shard.begin_completion("s1", "t1", lease.lease_id, [])

    assert "o2" in caught.value.message
    assert "t1" in caught.value.message
    assert shard.tasks["t1"].status == T.DISPATCHED
    assert shard.staged["t1"] == {"o1": (b"k1", 3)}


def test_begin_completion_unexpected_output_changes_nothing(
    shard: TasksShard,
) -> None:
    lease = dispatched(shard, task("t1", outputs=("o1",)))

    with pytest.raises(FailedPreconditionError) as caught:
        shard.begin_completion("s1", "t1", lease.lease_id, ["o1", "stray"])

    assert "stray" in caught.value.message
    assert shard.tasks["t1"].status == T.DISPATCHED


def test_begin_completion_twice_rejected(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1"))
    shard.begin_completion("s1", "t1", lease.lease_id, [])

    with pytest.raises(FailedPreconditionError) as caught:
        shard.begin_completion("s1", "t1", lease.lease_id, [])

    assert "t1" in caught.value.message
    assert "PROCESSED" in caught.value.message


def test_processed_task_lease_does_not_expire(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1"))
    shard.begin_completion("s1", "t1", lease.lease_id, [])

    expired, _ = shard.expire_leases(lease.expires_at + 1)

    assert expired == []
    assert shard.tasks["t1"].status == T.PROCESSED


def test_end_completes_processed_task(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1"))
    shard.begin_completion("s1", "t1", lease.lease_id, [])

    record = shard.end("t1", T.COMPLETED)

    assert record is not None
    assert record.status == T.COMPLETED
    assert record.lease_id == ""
    assert record.ended_at is not None


def test_end_final_task_rejected(shard: TasksShard) -> None:
    shard.insert([task("t1", status=T.COMPLETED)])

    with pytest.raises(FailedPreconditionError) as caught:
        shard.end("t1", T.ERROR)

    assert "t1" in caught.value.message


def test_end_unknown_task_returns_none(shard: TasksShard) -> None:
    assert shard.end("nope", T.COMPLETED) is None


# Failure and retry


def test_fail_with_retry_creates_successor(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1", inputs=("p", "d"), outputs=("o1",)))
    shard.stage_output("s1", "t1", lease.lease_id, "o1", (b"k1", 3))

    ending = shard.fail("s1", "t1", lease.lease_id, "worker crashed", retry=True)

    assert ending.task.status == T.RETRIED
    assert ending.task.error == "worker crashed"
    assert ending.staged == {"o1": (b"k1", 3)}
    assert ending.retry is not None
    assert ending.retry.task_id != "t1"
    assert ending.retry.retry_of == "t1"
    assert ending.retry.retries == 1
    assert not ending.retry.remaining
    assert ending.retry.status == T.CREATING
    assert ending.retry.payload_id == "p"
    assert ending.retry.data_dependencies == ("d",)
    assert ending.retry.expected_output_ids == ("o1",)
    assert ending.retry.options == shard.tasks["t1"].options


def test_retry_successor_claimed_on_insert(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1"))
    ending = shard.fail("s1", "t1", lease.lease_id, "crash", retry=True)
    assert ending.retry is not None

    shard.insert([ending.retry])
    ready = shard.remove_dependencies([], [ending.retry.task_id])

    assert [m.task_id for m in ready] == [ending.retry.task_id]


def test_fail_without_retry_sets_error(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1"))

    ending = shard.fail("s1", "t1", lease.lease_id, "bad input", retry=False)

    assert ending.task.status == T.ERROR
    assert ending.task.error == "bad input"
    assert ending.retry is None


def test_fail_after_last_retry_sets_error(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1", max_retries=2, retries=2))

    ending = shard.fail("s1", "t1", lease.lease_id, "crash", retry=True)

    assert ending.task.status == T.ERROR
    assert ending.retry is None


def test_fail_with_zero_max_retries_sets_error(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1", max_retries=0))

    ending = shard.fail("s1", "t1", lease.lease_id, "crash", retry=True)

    assert ending.task.status == T.ERROR


def test_fail_with_wrong_lease_changes_nothing(shard: TasksShard) -> None:
    dispatched(shard, task("t1"))

    with pytest.raises(FailedPreconditionError) as caught:
        shard.fail("s1", "t1", "old-lease", "crash", retry=True)

    assert "t1" in caught.value.message
    assert shard.tasks["t1"].status == T.DISPATCHED


# Cancel, fail_waiting, pause


def test_cancel_session_skips_final_tasks(shard: TasksShard) -> None:
    shard.insert(
        [
            task("done", status=T.COMPLETED),
            task("failed", status=T.ERROR),
            task("waiting"),
            task("other", session_id="s2"),
        ]
    )
    lease = dispatched(shard, task("running", outputs=("o1",)))
    shard.stage_output("s1", "running", lease.lease_id, "o1", (b"k1", 1))

    cancelled, objects = shard.cancel("s1", None, "session cancelled")

    assert sorted(r.task_id for r in cancelled) == ["running", "waiting"]
    assert objects == [b"k1"]
    assert shard.tasks["done"].status == T.COMPLETED
    assert shard.tasks["failed"].status == T.ERROR
    assert shard.tasks["other"].status == T.CREATING
    assert shard.tasks["waiting"].error == "session cancelled"


def test_cancel_given_ids_skips_other_session(shard: TasksShard) -> None:
    shard.insert([task("t1"), task("t2", session_id="s2")])

    cancelled, _ = shard.cancel("s1", ["t1", "t2", "nope"], "stop")

    assert [r.task_id for r in cancelled] == ["t1"]
    assert shard.tasks["t2"].status == T.CREATING


def test_cancel_claimed_task_drops_its_message(shard: TasksShard) -> None:
    shard.insert([task("t1")])
    ready = claim(shard, "t1")

    shard.cancel("s1", ["t1"], "stop")

    assert shard.dispatch(ready, "w1", LEASE_SECONDS) == []


def test_fail_waiting_fails_unstarted_tasks(shard: TasksShard) -> None:
    shard.insert(
        [
            task("pending", status=T.PENDING),
            task("paused", status=T.PAUSED),
            task("submitted", status=T.SUBMITTED),
            task("done", status=T.COMPLETED),
        ]
    )
    dispatched(shard, task("running"))

    failed = shard.fail_waiting(
        ["pending", "paused", "submitted", "done", "running", "nope"], "aborted"
    )

    assert sorted(r.task_id for r in failed) == ["paused", "pending", "submitted"]
    assert shard.tasks["pending"].status == T.ERROR
    assert shard.tasks["pending"].error == "aborted"
    assert shard.tasks["done"].status == T.COMPLETED
    assert shard.tasks["running"].status == T.DISPATCHED


def test_set_paused_moves_submitted_only(shard: TasksShard) -> None:
    shard.insert(
        [task("queued", status=T.SUBMITTED), task("waiting", status=T.PENDING)]
    )

    shard.set_paused(["queued", "waiting", "nope"], True)

    assert shard.tasks["queued"].status == T.PAUSED
    assert shard.tasks["waiting"].status == T.PENDING


def test_set_paused_false_resumes(shard: TasksShard) -> None:
    shard.insert([task("queued", status=T.SUBMITTED)])
    shard.set_paused(["queued"], True)

    shard.set_paused(["queued"], False)

    assert shard.tasks["queued"].status == T.SUBMITTED


# Sessions and listing


def test_delete_session_removes_only_its_tasks(shard: TasksShard) -> None:
    shard.insert([task("t1"), task("t2"), task("x1", session_id="s2")])

    count = shard.delete_session("s1")

    assert count == 2
    assert set(shard.tasks) == {"x1"}
    assert "s1" not in shard.by_session


def test_list_filters_by_status(shard: TasksShard) -> None:
    shard.insert(
        [
            task("t1", status=T.PENDING),
            task("t2", status=T.SUBMITTED),
            task("t3", status=T.PENDING),
            task("x1", session_id="s2", status=T.PENDING),
        ]
    )
    predicate = filters.compile_filters(
        [[Condition("status", "eq", T.PENDING)]], filters.TASK_FIELDS
    )

    total, page = shard.list(predicate, None, 10, session_id="s1")

    assert total == 2
    assert [r.task_id for r in page] == ["t1", "t3"]


def test_time_out_after_max_duration(shard: TasksShard) -> None:
    record = task("t1", max_retries=1)
    record.options = TaskOptions(partition_id="default", max_duration=5.0)
    lease = dispatched(shard, record)

    ended, _ = shard.time_out(lease.expires_at - LEASE_SECONDS + 6.0)

    assert [ended_task.task_id for ended_task in ended] == ["t1"]
    assert shard.tasks["t1"].status == T.TIMEOUT
    assert "max_duration" in shard.tasks["t1"].error


def test_time_out_after_repeated_lease_expiry(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1", max_retries=1))
    (requeued,), _ = shard.expire_leases(lease.expires_at + 1)
    ((_, second),) = shard.dispatch([requeued], "w2", LEASE_SECONDS)

    ended, _ = shard.time_out(second.expires_at + 1)

    assert [ended_task.task_id for ended_task in ended] == ["t1"]
    assert shard.tasks["t1"].error == "the task lost its lease 2 times"


def test_time_out_keeps_task_within_limits(shard: TasksShard) -> None:
    lease = dispatched(shard, task("t1", max_retries=1))

    ended, _ = shard.time_out(lease.expires_at + 1)

    assert ended == []
    assert shard.tasks["t1"].status == T.DISPATCHED
