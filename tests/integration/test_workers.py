"""Integration tests of the worker RPCs on a real local Ray: acquire, start, renew,
complete and fail tasks, and lease expiry.

The module runs its own service, and each test cancels its session at the end, so
an acquisition returns only the task the test queued.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from results_service.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from results_service.records import (
    AcquiredTask,
    ResultStatus,
    TaskDefinition,
    TaskStatus,
)

PARTITION = "default"
WAIT_PARTITION = "wait"
WORKER = "worker-1"
# Upper bound of the polls that wait for the lease sweep; the sweep runs every
# 0.2 s with 1 s leases, so the task is back long before.
EXPIRY_POLL_SECONDS = 30.0


@pytest.fixture(scope="module")
def workers_client(services: Any) -> Any:
    """A service of this module's own, with a partition for waiting acquisitions."""
    return services.start(partitions=(PARTITION, WAIT_PARTITION))


@pytest.fixture
def sid(workers_client: Any) -> Any:
    """A new session, cancelled after the test so that no task of it stays queued
    or leased."""
    session_id = workers_client.create_session()
    yield session_id
    try:
        workers_client.cancel_session(session_id)
    except (FailedPreconditionError, NotFoundError):
        pass


def new_ids(client: Any, session_id: str, count: int) -> list[str]:
    """Create `count` CREATED results and return their ids."""
    names = [f"r{index}" for index in range(count)]
    return [
        record.result_id for record in client.create_results_metadata(session_id, names)
    ]


def submit_one(
    client: Any,
    session_id: str,
    dependencies: tuple[str, ...] = (),
    outputs: tuple[str, ...] = (),
    options: dict[str, object] | None = None,
) -> str:
    """Submit one task with a new completed payload and return its id."""
    (payload,) = client.create_results(session_id, {"payload": b"{}"})
    (info,) = client.submit_tasks(
        session_id,
        [TaskDefinition(payload.result_id, dependencies, outputs, options)],
    )
    return info.task_id


def acquire_one(client: Any, task_id: str, partition: str = PARTITION) -> AcquiredTask:
    """Acquire the only queued task, which must be `task_id`."""
    (task,) = client.acquire_tasks(partition, WORKER, max_tasks=10)
    assert task.task_id == task_id
    return task


def queued_ids(client: Any, session_id: str, partition: str = PARTITION) -> list[str]:
    return [
        message.task_id
        for message in client.queue_contents(partition)
        if message.session_id == session_id
    ]


def task_status(client: Any, session_id: str, task_id: str) -> TaskStatus:
    return client.get_task(session_id, task_id).status


def result_status(client: Any, session_id: str, result_id: str) -> ResultStatus:
    return client.get_result(session_id, result_id).status


def payload_objects(client: Any, session_id: str) -> set[bytes]:
    """Return the stored objects of the session's payloads."""
    return {
        record.opaque_id
        for record in client.list_results(session_id=session_id).items
        if record.name == "payload"
    }


def producer_and_consumer(
    client: Any,
    session_id: str,
    outputs: int = 1,
    options: dict[str, Any] | None = None,
) -> tuple[str, list[str], str]:
    """Queue a producer of new outputs and submit a consumer of them; return the
    producer id, the output ids and the consumer id."""
    output_ids = new_ids(client, session_id, outputs)
    producer = submit_one(
        client, session_id, outputs=tuple(output_ids), options=options
    )
    consumer = submit_one(client, session_id, tuple(output_ids))
    return producer, output_ids, consumer


# Acquire, start and renew


def test_acquire_grants_lease(workers_client: Any, sid: str) -> None:
    (output,) = new_ids(workers_client, sid, 1)
    task_id = submit_one(workers_client, sid, outputs=(output,))

    task = acquire_one(workers_client, task_id)

    assert task.session_id == sid
    assert task.lease_id != ""
    assert task.expected_output_ids == (output,)
    assert task.retries == 0
    assert task_status(workers_client, sid, task_id) == TaskStatus.DISPATCHED
    assert queued_ids(workers_client, sid) == []


def test_acquire_empty_queue_returns_nothing(workers_client: Any) -> None:
    assert workers_client.acquire_tasks(PARTITION, WORKER, max_tasks=10) == []


def test_acquire_takes_highest_priority(workers_client: Any, sid: str) -> None:
    submit_one(workers_client, sid, options={"priority": 2})
    high = submit_one(workers_client, sid, options={"priority": 8})

    (task,) = workers_client.acquire_tasks(PARTITION, WORKER)

    assert task.task_id == high


def test_acquire_unknown_partition_rejected(workers_client: Any) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        workers_client.acquire_tasks("no-such-partition", WORKER)

    assert "no-such-partition" in str(caught.value)


def test_acquire_zero_tasks_rejected(workers_client: Any) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        workers_client.acquire_tasks(PARTITION, WORKER, max_tasks=0)

    assert "max_tasks" in str(caught.value)


def test_acquire_waits_for_task(workers_client: Any, sid: str) -> None:
    session_id = workers_client.create_session([WAIT_PARTITION])
    acquired: list[AcquiredTask] = []
    errors: list[BaseException] = []

    def acquire() -> None:
        try:
            acquired.extend(
                workers_client.acquire_tasks(WAIT_PARTITION, WORKER, wait_seconds=30)
            )
        except BaseException as error:
            errors.append(error)

    waiter = threading.Thread(target=acquire)
    waiter.start()
    # Give the acquisition time to start waiting; it succeeds either way.
    time.sleep(0.3)
    task_id = submit_one(workers_client, session_id)
    waiter.join(timeout=60)

    assert errors == []
    assert [task.task_id for task in acquired] == [task_id]
    workers_client.cancel_session(session_id)


def test_acquire_with_open_inputs_returns_downloads(
    workers_client: Any, sid: str
) -> None:
    first, second = workers_client.create_results(sid, {"a": b"first", "b": b"second"})
    task_id = submit_one(workers_client, sid, (first.result_id, second.result_id))

    (task,) = workers_client.acquire_tasks(PARTITION, WORKER, open_inputs=True)

    assert task.task_id == task_id
    assert task.inputs is not None
    payload, *inputs = task.inputs
    assert payload.result_id == task.payload_id
    assert bytes(payload.data) == b"{}"
    assert [info.result_id for info in inputs] == [first.result_id, second.result_id]
    assert [bytes(info.data) for info in inputs] == [b"first", b"second"]


def test_acquire_without_open_inputs_has_none(workers_client: Any, sid: str) -> None:
    task_id = submit_one(workers_client, sid)

    task = acquire_one(workers_client, task_id)

    assert task.inputs is None


def test_acquire_with_deleted_input_leaves_inputs_unopened(
    workers_client: Any, sid: str
) -> None:
    (data,) = workers_client.create_results(sid, {"a": b"data"})
    task_id = submit_one(workers_client, sid, (data.result_id,))
    workers_client.delete_results_data(sid, [data.result_id])

    (task,) = workers_client.acquire_tasks(PARTITION, WORKER, open_inputs=True)

    assert task.task_id == task_id
    assert task.inputs is None
    assert task_status(workers_client, sid, task_id) == TaskStatus.DISPATCHED


def test_acquire_open_inputs_not_bool_rejected(workers_client: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="open_inputs"):
        workers_client.acquire_tasks(PARTITION, WORKER, open_inputs="yes")


def test_start_task_moves_to_processing(workers_client: Any, sid: str) -> None:
    task_id = submit_one(workers_client, sid)
    task = acquire_one(workers_client, task_id)

    record = workers_client.start_task(sid, task_id, task.lease_id)

    assert record.status == TaskStatus.PROCESSING
    assert record.started_at is not None
    assert task_status(workers_client, sid, task_id) == TaskStatus.PROCESSING


def test_start_task_wrong_lease_rejected(workers_client: Any, sid: str) -> None:
    task_id = submit_one(workers_client, sid)
    acquire_one(workers_client, task_id)

    with pytest.raises(FailedPreconditionError) as caught:
        workers_client.start_task(sid, task_id, "wrong-lease")

    assert "wrong-lease" in str(caught.value)
    assert task_status(workers_client, sid, task_id) == TaskStatus.DISPATCHED


def test_renew_lease_extends_expiry(workers_client: Any, sid: str) -> None:
    task_id = submit_one(workers_client, sid)
    task = acquire_one(workers_client, task_id)

    expires_at = workers_client.renew_lease(sid, task_id, task.lease_id)

    assert expires_at >= task.lease_expires_at


def test_renew_lease_wrong_lease_rejected(workers_client: Any, sid: str) -> None:
    task_id = submit_one(workers_client, sid)
    acquire_one(workers_client, task_id)

    with pytest.raises(FailedPreconditionError) as caught:
        workers_client.renew_lease(sid, task_id, "wrong-lease")

    assert task_id in str(caught.value)


def test_renew_lease_unknown_task_rejected(workers_client: Any, sid: str) -> None:
    with pytest.raises(NotFoundError) as caught:
        workers_client.renew_lease(sid, "no-such-task", "lease")

    assert "no-such-task" in str(caught.value)


# Complete


def test_complete_task_with_inline_outputs(workers_client: Any, sid: str) -> None:
    producer, outputs, consumer = producer_and_consumer(workers_client, sid, 2)
    task = acquire_one(workers_client, producer)
    workers_client.start_task(sid, producer, task.lease_id)

    record = workers_client.complete_task(
        sid, producer, task.lease_id, {outputs[0]: b"first", outputs[1]: b"second"}
    )

    assert record.status == TaskStatus.COMPLETED
    assert workers_client.read_result_data(sid, outputs[0]) == b"first"
    assert workers_client.read_result_data(sid, outputs[1]) == b"second"
    assert task_status(workers_client, sid, consumer) == TaskStatus.SUBMITTED
    assert queued_ids(workers_client, sid) == [consumer]


def test_complete_task_without_outputs(workers_client: Any, sid: str) -> None:
    task_id = submit_one(workers_client, sid)
    task = acquire_one(workers_client, task_id)

    record = workers_client.complete_task(sid, task_id, task.lease_id)

    assert record.status == TaskStatus.COMPLETED
    assert record.ended_at is not None


def test_complete_task_with_staged_outputs(workers_client: Any, sid: str) -> None:
    producer, (output,), consumer = producer_and_consumer(workers_client, sid)
    task = acquire_one(workers_client, producer)

    staged = workers_client.upload_result_data(
        sid, output, b"staged" * 1000, task_id=producer, lease_id=task.lease_id
    )

    assert staged is None
    assert result_status(workers_client, sid, output) == ResultStatus.CREATED
    assert task_status(workers_client, sid, consumer) == TaskStatus.PENDING
    assert queued_ids(workers_client, sid) == []

    workers_client.complete_task(sid, producer, task.lease_id)

    assert result_status(workers_client, sid, output) == ResultStatus.COMPLETED
    assert workers_client.read_result_data(sid, output) == b"staged" * 1000
    assert task_status(workers_client, sid, producer) == TaskStatus.COMPLETED
    assert queued_ids(workers_client, sid) == [consumer]


def test_complete_task_mixes_staged_and_inline(workers_client: Any, sid: str) -> None:
    producer, (staged, inline), consumer = producer_and_consumer(workers_client, sid, 2)
    task = acquire_one(workers_client, producer)
    workers_client.upload_result_data(
        sid, staged, b"staged", task_id=producer, lease_id=task.lease_id
    )

    workers_client.complete_task(sid, producer, task.lease_id, {inline: b"inline"})

    assert workers_client.read_result_data(sid, staged) == b"staged"
    assert workers_client.read_result_data(sid, inline) == b"inline"
    assert queued_ids(workers_client, sid) == [consumer]


def test_staged_output_uploaded_twice_keeps_last(workers_client: Any, sid: str) -> None:
    producer, (output,), _ = producer_and_consumer(workers_client, sid)
    task = acquire_one(workers_client, producer)
    for data in (b"first", b"second"):
        workers_client.upload_result_data(
            sid, output, data, task_id=producer, lease_id=task.lease_id
        )

    workers_client.complete_task(sid, producer, task.lease_id)

    assert workers_client.read_result_data(sid, output) == b"second"
    stored = set(workers_client.stored_ids(f"sessions/{sid}/"))
    expected = {workers_client.get_result(sid, output).opaque_id}
    expected.update(payload_objects(workers_client, sid))
    assert stored == expected


def test_inline_output_replaces_staged(workers_client: Any, sid: str) -> None:
    producer, (output,), _ = producer_and_consumer(workers_client, sid)
    task = acquire_one(workers_client, producer)
    workers_client.upload_result_data(
        sid, output, b"staged", task_id=producer, lease_id=task.lease_id
    )

    workers_client.complete_task(sid, producer, task.lease_id, {output: b"inline"})

    assert workers_client.read_result_data(sid, output) == b"inline"
    stored = set(workers_client.stored_ids(f"sessions/{sid}/"))
    expected = {workers_client.get_result(sid, output).opaque_id}
    expected.update(payload_objects(workers_client, sid))
    assert stored == expected


def test_complete_task_missing_output_rejected(workers_client: Any, sid: str) -> None:
    producer, (given, missing), consumer = producer_and_consumer(workers_client, sid, 2)
    task = acquire_one(workers_client, producer)
    workers_client.start_task(sid, producer, task.lease_id)

    with pytest.raises(FailedPreconditionError) as caught:
        workers_client.complete_task(sid, producer, task.lease_id, {given: b"one"})

    assert missing in str(caught.value)
    assert task_status(workers_client, sid, producer) == TaskStatus.PROCESSING
    assert result_status(workers_client, sid, given) == ResultStatus.CREATED
    assert result_status(workers_client, sid, missing) == ResultStatus.CREATED
    assert task_status(workers_client, sid, consumer) == TaskStatus.PENDING


def test_complete_task_after_missing_output_retry(
    workers_client: Any, sid: str
) -> None:
    producer, (first, second), consumer = producer_and_consumer(workers_client, sid, 2)
    task = acquire_one(workers_client, producer)
    with pytest.raises(FailedPreconditionError):
        workers_client.complete_task(sid, producer, task.lease_id, {first: b"one"})

    workers_client.complete_task(
        sid, producer, task.lease_id, {first: b"one", second: b"two"}
    )

    assert task_status(workers_client, sid, producer) == TaskStatus.COMPLETED
    assert queued_ids(workers_client, sid) == [consumer]


def test_complete_task_unexpected_output_rejected(
    workers_client: Any, sid: str
) -> None:
    (output, stranger) = new_ids(workers_client, sid, 2)
    task_id = submit_one(workers_client, sid, outputs=(output,))
    task = acquire_one(workers_client, task_id)

    with pytest.raises(FailedPreconditionError) as caught:
        workers_client.complete_task(
            sid, task_id, task.lease_id, {output: b"ok", stranger: b"no"}
        )

    assert stranger in str(caught.value)
    assert result_status(workers_client, sid, stranger) == ResultStatus.CREATED
    assert task_status(workers_client, sid, task_id) == TaskStatus.DISPATCHED


def test_complete_task_wrong_lease_rejected(workers_client: Any, sid: str) -> None:
    producer, (output,), _ = producer_and_consumer(workers_client, sid)
    acquire_one(workers_client, producer)

    with pytest.raises(FailedPreconditionError) as caught:
        workers_client.complete_task(sid, producer, "wrong-lease", {output: b"x"})

    assert "wrong-lease" in str(caught.value)
    assert task_status(workers_client, sid, producer) == TaskStatus.DISPATCHED
    assert result_status(workers_client, sid, output) == ResultStatus.CREATED


def test_complete_task_twice_rejected(workers_client: Any, sid: str) -> None:
    producer, (output,), _ = producer_and_consumer(workers_client, sid)
    task = acquire_one(workers_client, producer)
    workers_client.complete_task(sid, producer, task.lease_id, {output: b"once"})

    with pytest.raises(FailedPreconditionError) as caught:
        workers_client.complete_task(sid, producer, task.lease_id, {output: b"twice"})

    assert producer in str(caught.value)
    assert workers_client.read_result_data(sid, output) == b"once"


def test_staged_upload_wrong_lease_rejected(workers_client: Any, sid: str) -> None:
    producer, (output,), _ = producer_and_consumer(workers_client, sid)
    acquire_one(workers_client, producer)

    with pytest.raises(FailedPreconditionError) as caught:
        workers_client.upload_result_data(
            sid, output, b"x", task_id=producer, lease_id="wrong-lease"
        )

    assert "wrong-lease" in str(caught.value)
    assert result_status(workers_client, sid, output) == ResultStatus.CREATED


def test_staged_upload_of_foreign_result_rejected(
    workers_client: Any, sid: str
) -> None:
    (output, stranger) = new_ids(workers_client, sid, 2)
    task_id = submit_one(workers_client, sid, outputs=(output,))
    task = acquire_one(workers_client, task_id)

    with pytest.raises(FailedPreconditionError) as caught:
        workers_client.upload_result_data(
            sid, stranger, b"x", task_id=task_id, lease_id=task.lease_id
        )

    assert stranger in str(caught.value)
    assert result_status(workers_client, sid, stranger) == ResultStatus.CREATED


# Fail


def test_fail_task_with_retries_left_queues_retry(
    workers_client: Any, sid: str
) -> None:
    producer, outputs, consumer = producer_and_consumer(workers_client, sid, 2)
    task = acquire_one(workers_client, producer)

    retry_id = workers_client.fail_task(sid, producer, task.lease_id, "worker crashed")

    assert retry_id is not None
    assert retry_id != producer
    failed = workers_client.get_task(sid, producer)
    assert failed.status == TaskStatus.RETRIED
    assert failed.error == "worker crashed"
    owners = workers_client.get_owner_task_id(sid, outputs)
    assert owners == {output: retry_id for output in outputs}
    assert queued_ids(workers_client, sid) == [retry_id]
    retry = workers_client.get_task(sid, retry_id)
    assert retry.retry_of == producer
    assert retry.retries == 1
    for output in outputs:
        assert result_status(workers_client, sid, output) == ResultStatus.CREATED
    assert task_status(workers_client, sid, consumer) == TaskStatus.PENDING


def test_retry_task_completes_outputs(workers_client: Any, sid: str) -> None:
    producer, (output,), consumer = producer_and_consumer(workers_client, sid)
    task = acquire_one(workers_client, producer)
    retry_id = workers_client.fail_task(sid, producer, task.lease_id, "crashed")
    retry = acquire_one(workers_client, retry_id)
    assert retry.retries == 1

    workers_client.complete_task(sid, retry_id, retry.lease_id, {output: b"done"})

    assert workers_client.read_result_data(sid, output) == b"done"
    assert task_status(workers_client, sid, retry_id) == TaskStatus.COMPLETED
    assert queued_ids(workers_client, sid) == [consumer]


def test_failed_task_lease_rejects_completion(workers_client: Any, sid: str) -> None:
    producer, (output,), _ = producer_and_consumer(workers_client, sid)
    task = acquire_one(workers_client, producer)
    workers_client.fail_task(sid, producer, task.lease_id, "crashed")

    with pytest.raises(FailedPreconditionError) as caught:
        workers_client.complete_task(sid, producer, task.lease_id, {output: b"late"})

    assert producer in str(caught.value)
    assert result_status(workers_client, sid, output) == ResultStatus.CREATED


def test_fail_task_retries_until_limit(workers_client: Any, sid: str) -> None:
    producer, (output,), consumer = producer_and_consumer(
        workers_client, sid, options={"max_retries": 2}
    )
    task_id = producer
    for _ in range(2):
        task = acquire_one(workers_client, task_id)
        task_id = workers_client.fail_task(sid, task_id, task.lease_id, "crashed")
        assert task_id is not None
    last = acquire_one(workers_client, task_id)
    assert last.retries == 2

    assert workers_client.fail_task(sid, task_id, last.lease_id, "crashed") is None

    assert task_status(workers_client, sid, task_id) == TaskStatus.ERROR
    assert result_status(workers_client, sid, output) == ResultStatus.ABORTED
    assert task_status(workers_client, sid, consumer) == TaskStatus.ERROR


def test_fail_task_without_retries_aborts_outputs(
    workers_client: Any, sid: str
) -> None:
    producer, outputs, consumer = producer_and_consumer(
        workers_client, sid, 2, options={"max_retries": 0}
    )
    (chained,) = new_ids(workers_client, sid, 1)
    middle = submit_one(workers_client, sid, (outputs[0],), (chained,))
    last = submit_one(workers_client, sid, (chained,))
    task = acquire_one(workers_client, producer)

    retry_id = workers_client.fail_task(sid, producer, task.lease_id, "bad input")

    assert retry_id is None
    assert task_status(workers_client, sid, producer) == TaskStatus.ERROR
    for output in outputs:
        assert result_status(workers_client, sid, output) == ResultStatus.ABORTED
    assert task_status(workers_client, sid, consumer) == TaskStatus.ERROR
    assert task_status(workers_client, sid, middle) == TaskStatus.ERROR
    assert result_status(workers_client, sid, chained) == ResultStatus.ABORTED
    assert task_status(workers_client, sid, last) == TaskStatus.ERROR
    assert queued_ids(workers_client, sid) == []


def test_fail_task_without_retry_flag_aborts(workers_client: Any, sid: str) -> None:
    producer, (output,), consumer = producer_and_consumer(workers_client, sid)
    task = acquire_one(workers_client, producer)

    retry_id = workers_client.fail_task(
        sid, producer, task.lease_id, "permanent", retry=False
    )

    assert retry_id is None
    assert result_status(workers_client, sid, output) == ResultStatus.ABORTED
    assert task_status(workers_client, sid, consumer) == TaskStatus.ERROR


def test_fail_after_upload_keeps_outputs_created(workers_client: Any, sid: str) -> None:
    producer, (output,), consumer = producer_and_consumer(workers_client, sid)
    task = acquire_one(workers_client, producer)
    workers_client.upload_result_data(
        sid, output, b"partial", task_id=producer, lease_id=task.lease_id
    )

    retry_id = workers_client.fail_task(sid, producer, task.lease_id, "crashed")

    assert result_status(workers_client, sid, output) == ResultStatus.CREATED
    assert task_status(workers_client, sid, consumer) == TaskStatus.PENDING
    assert queued_ids(workers_client, sid) == [retry_id]
    stored = set(workers_client.stored_ids(f"sessions/{sid}/"))
    assert stored == payload_objects(workers_client, sid)

    retry = acquire_one(workers_client, retry_id)
    assert queued_ids(workers_client, sid) == []
    workers_client.upload_result_data(
        sid, output, b"whole", task_id=retry_id, lease_id=retry.lease_id
    )
    assert task_status(workers_client, sid, consumer) == TaskStatus.PENDING
    workers_client.complete_task(sid, retry_id, retry.lease_id)

    assert workers_client.read_result_data(sid, output) == b"whole"
    assert queued_ids(workers_client, sid) == [consumer]


def test_fail_task_wrong_lease_rejected(workers_client: Any, sid: str) -> None:
    producer, (output,), _ = producer_and_consumer(workers_client, sid)
    acquire_one(workers_client, producer)

    with pytest.raises(FailedPreconditionError) as caught:
        workers_client.fail_task(sid, producer, "wrong-lease", "crashed")

    assert "wrong-lease" in str(caught.value)
    assert task_status(workers_client, sid, producer) == TaskStatus.DISPATCHED


# Lease expiry


def wait_until_queued(client: Any, session_id: str, task_id: str) -> bool:
    """Poll the queue until the task is in it, for at most EXPIRY_POLL_SECONDS."""
    deadline = time.monotonic() + EXPIRY_POLL_SECONDS
    while time.monotonic() < deadline:
        if task_id in queued_ids(client, session_id):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def short_lease_client(services: Any) -> Any:
    """A service whose leases expire after 1 s, checked every 0.2 s."""
    return services.start(lease_seconds=1.0, lease_check_seconds=0.2)


def test_expired_lease_requeues_task(short_lease_client: Any) -> None:
    client = short_lease_client
    session_id = client.create_session()
    producer, (output,), consumer = producer_and_consumer(client, session_id)
    task = acquire_one(client, producer)

    assert wait_until_queued(client, session_id, producer)

    assert task_status(client, session_id, producer) == TaskStatus.SUBMITTED
    with pytest.raises(FailedPreconditionError) as caught:
        client.complete_task(session_id, producer, task.lease_id, {output: b"late"})
    assert task.lease_id in str(caught.value)
    assert result_status(client, session_id, output) == ResultStatus.CREATED
    assert task_status(client, session_id, consumer) == TaskStatus.PENDING
    client.cancel_session(session_id)


def test_expired_lease_drops_staged_outputs(short_lease_client: Any) -> None:
    client = short_lease_client
    session_id = client.create_session()
    producer, (output,), _ = producer_and_consumer(client, session_id)
    task = acquire_one(client, producer)
    client.upload_result_data(
        session_id, output, b"staged", task_id=producer, lease_id=task.lease_id
    )

    assert wait_until_queued(client, session_id, producer)

    second = acquire_one(client, producer)
    assert second.lease_id != task.lease_id
    with pytest.raises(FailedPreconditionError):
        client.complete_task(session_id, producer, second.lease_id)
    client.complete_task(session_id, producer, second.lease_id, {output: b"fresh"})
    assert client.read_result_data(session_id, output) == b"fresh"
    client.cancel_session(session_id)


# Session changes under running tasks


def test_complete_task_in_paused_session(workers_client: Any, sid: str) -> None:
    producer, (output,), consumer = producer_and_consumer(workers_client, sid)
    task = acquire_one(workers_client, producer)
    workers_client.pause_session(sid)

    workers_client.complete_task(sid, producer, task.lease_id, {output: b"done"})

    assert result_status(workers_client, sid, output) == ResultStatus.COMPLETED
    assert task_status(workers_client, sid, consumer) == TaskStatus.PAUSED
    assert queued_ids(workers_client, sid) == []


def test_fail_task_in_paused_session_parks_retry(workers_client: Any, sid: str) -> None:
    producer, _, _ = producer_and_consumer(workers_client, sid)
    task = acquire_one(workers_client, producer)
    workers_client.pause_session(sid)

    retry_id = workers_client.fail_task(sid, producer, task.lease_id, "crashed")

    assert task_status(workers_client, sid, retry_id) == TaskStatus.PAUSED
    assert queued_ids(workers_client, sid) == []
    workers_client.resume_session(sid)
    assert queued_ids(workers_client, sid) == [retry_id]


def test_complete_task_in_closed_session(workers_client: Any, sid: str) -> None:
    producer, (output,), consumer = producer_and_consumer(workers_client, sid)
    task = acquire_one(workers_client, producer)
    workers_client.close_session(sid)

    workers_client.complete_task(sid, producer, task.lease_id, {output: b"done"})

    assert result_status(workers_client, sid, output) == ResultStatus.COMPLETED
    assert queued_ids(workers_client, sid) == [consumer]


def test_complete_task_in_cancelled_session_rejected(
    workers_client: Any, sid: str
) -> None:
    producer, (output,), _ = producer_and_consumer(workers_client, sid)
    task = acquire_one(workers_client, producer)
    workers_client.cancel_session(sid)

    with pytest.raises(FailedPreconditionError) as caught:
        workers_client.complete_task(sid, producer, task.lease_id, {output: b"late"})

    assert producer in str(caught.value)
    assert result_status(workers_client, sid, output) == ResultStatus.ABORTED
    assert task_status(workers_client, sid, producer) == TaskStatus.CANCELLED


def test_complete_task_in_purged_session_rejected(
    workers_client: Any, sid: str
) -> None:
    producer, (output,), _ = producer_and_consumer(workers_client, sid)
    task = acquire_one(workers_client, producer)
    workers_client.upload_result_data(
        sid, output, b"staged", task_id=producer, lease_id=task.lease_id
    )
    workers_client.close_session(sid)
    workers_client.purge_session(sid)

    with pytest.raises(FailedPreconditionError) as caught:
        workers_client.complete_task(sid, producer, task.lease_id)

    assert sid in str(caught.value)
    assert result_status(workers_client, sid, output) != ResultStatus.COMPLETED
    assert workers_client.stored_ids(f"sessions/{sid}/") == []


def test_complete_task_in_deleted_session_rejected(
    workers_client: Any, sid: str
) -> None:
    producer, (output,), _ = producer_and_consumer(workers_client, sid)
    task = acquire_one(workers_client, producer)
    workers_client.delete_session(sid)

    with pytest.raises(NotFoundError) as caught:
        workers_client.complete_task(sid, producer, task.lease_id, {output: b"late"})

    assert sid in str(caught.value)
    assert workers_client.stored_ids(f"sessions/{sid}/") == []


def test_expired_lease_in_paused_session_parks_task(short_lease_client: Any) -> None:
    client = short_lease_client
    session_id = client.create_session()
    task_id = submit_one(client, session_id)
    acquire_one(client, task_id)
    client.pause_session(session_id)

    deadline = time.monotonic() + EXPIRY_POLL_SECONDS
    while time.monotonic() < deadline:
        if task_status(client, session_id, task_id) != TaskStatus.DISPATCHED:
            break
        time.sleep(0.1)

    assert task_status(client, session_id, task_id) == TaskStatus.PAUSED
    assert queued_ids(client, session_id) == []
    client.resume_session(session_id)
    assert queued_ids(client, session_id) == [task_id]
    client.cancel_session(session_id)
