"""Integration tests of the task RPCs on a real local Ray: submission, readiness,
queries and cancellation.

The module runs its own service with three partitions, so that queue checks and
acquisitions see only this module's tasks.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from results_service.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from results_service.filters import Condition
from results_service.records import (
    ResultStatus,
    TaskDefinition,
    TaskOptions,
    TaskStatus,
)

PARTITION = "default"
OTHER_PARTITION = "gpu"
RACE_PARTITION = "race"
RACE_ROUNDS = 50


@pytest.fixture(scope="module")
def tasks_client(services: Any) -> Any:
    """A service of this module's own, with three partitions."""
    return services.start(partitions=(PARTITION, OTHER_PARTITION, RACE_PARTITION))


@pytest.fixture
def sid(tasks_client: Any) -> Any:
    """A new session on the default partition, cancelled after the test so that its
    tasks leave the queue."""
    session_id = tasks_client.create_session()
    yield session_id
    try:
        tasks_client.cancel_session(session_id)
    except FailedPreconditionError:
        pass


def queued_ids(client: Any, session_id: str, partition: str = PARTITION) -> list[str]:
    """Return the session's task ids in a partition's queue, in dispatch order."""
    return [
        message.task_id
        for message in client.queue_contents(partition)
        if message.session_id == session_id
    ]


def new_ids(client: Any, session_id: str, count: int) -> list[str]:
    """Create `count` CREATED results and return their ids."""
    names = [f"r{index}" for index in range(count)]
    return [
        record.result_id for record in client.create_results_metadata(session_id, names)
    ]


def new_payload(client: Any, session_id: str) -> str:
    (payload,) = client.create_results(session_id, {"payload": b"{}"})
    return payload.result_id


def submit_one(
    client: Any,
    session_id: str,
    dependencies: tuple[str, ...] = (),
    outputs: tuple[str, ...] = (),
    options: dict[str, object] | None = None,
) -> str:
    """Submit one task with a new completed payload and return its id."""
    definition = TaskDefinition(
        new_payload(client, session_id), dependencies, outputs, options
    )
    (info,) = client.submit_tasks(session_id, [definition])
    return info.task_id


def task_status(client: Any, session_id: str, task_id: str) -> TaskStatus:
    return client.get_task(session_id, task_id).status


def result_status(client: Any, session_id: str, result_id: str) -> ResultStatus:
    return client.get_result(session_id, result_id).status


def aborted_result(client: Any, session_id: str) -> str:
    """Return a result ABORTED because its owner task was cancelled."""
    (output,) = new_ids(client, session_id, 1)
    task_id = submit_one(client, session_id, outputs=(output,))
    client.cancel_tasks(session_id, [task_id])
    return output


def deleted_result(client: Any, session_id: str) -> str:
    """Return a result whose data was deleted."""
    result_id = new_payload(client, session_id)
    client.delete_results_data(session_id, [result_id])
    return result_id


def assert_nothing_left(client: Any, session_id: str, outputs: list[str]) -> None:
    """Check that a rejected submission left no task and no output owner."""
    assert client.list_tasks(session_id=session_id).total == 0
    assert queued_ids(client, session_id) == []
    if outputs:
        owners = client.get_owner_task_id(session_id, outputs)
        assert owners == {output: "" for output in outputs}


# Submission: rejected requests


def test_submit_unknown_payload_rejected(tasks_client: Any, sid: str) -> None:
    outputs = new_ids(tasks_client, sid, 2)

    with pytest.raises(NotFoundError) as caught:
        tasks_client.submit_tasks(
            sid, [TaskDefinition("no-such-payload", (), tuple(outputs))]
        )

    assert "no-such-payload" in str(caught.value)
    assert_nothing_left(tasks_client, sid, outputs)


def test_submit_unknown_dependency_rejected(tasks_client: Any, sid: str) -> None:
    known, *outputs = new_ids(tasks_client, sid, 3)
    payload = new_payload(tasks_client, sid)
    definition = TaskDefinition(payload, (known, "no-such-dependency"), tuple(outputs))

    with pytest.raises(NotFoundError) as caught:
        tasks_client.submit_tasks(sid, [definition])

    assert "no-such-dependency" in str(caught.value)
    assert_nothing_left(tasks_client, sid, outputs)


def test_submit_unknown_dependency_keeps_known_ready(
    tasks_client: Any, sid: str
) -> None:
    (known,) = new_ids(tasks_client, sid, 1)
    payload = new_payload(tasks_client, sid)
    with pytest.raises(NotFoundError):
        tasks_client.submit_tasks(
            sid, [TaskDefinition(payload, (known, "no-such-dependency"))]
        )

    tasks_client.upload_result_data(sid, known, b"data")

    assert_nothing_left(tasks_client, sid, [])


def test_submit_one_bad_task_rejects_batch(tasks_client: Any, sid: str) -> None:
    good_output, bad_output = new_ids(tasks_client, sid, 2)
    payload = new_payload(tasks_client, sid)
    definitions = [
        TaskDefinition(payload, (), (good_output,)),
        TaskDefinition(payload, ("no-such-dependency",), (bad_output,)),
    ]

    with pytest.raises(NotFoundError) as caught:
        tasks_client.submit_tasks(sid, definitions)

    assert "no-such-dependency" in str(caught.value)
    assert_nothing_left(tasks_client, sid, [good_output, bad_output])


@pytest.mark.parametrize("make", [aborted_result, deleted_result])
def test_submit_unusable_dependency_rejected(
    tasks_client: Any, sid: str, make: Any
) -> None:
    dependency = make(tasks_client, sid)
    tasks_before = tasks_client.list_tasks(session_id=sid).total
    outputs = new_ids(tasks_client, sid, 1)
    payload = new_payload(tasks_client, sid)

    with pytest.raises(FailedPreconditionError) as caught:
        tasks_client.submit_tasks(
            sid, [TaskDefinition(payload, (dependency,), tuple(outputs))]
        )

    assert dependency in str(caught.value)
    assert tasks_client.list_tasks(session_id=sid).total == tasks_before
    assert tasks_client.get_owner_task_id(sid, outputs) == {outputs[0]: ""}


def test_submit_dependency_of_other_session_rejected(
    tasks_client: Any, sid: str
) -> None:
    other = tasks_client.create_session()
    foreign = new_payload(tasks_client, other)
    payload = new_payload(tasks_client, sid)

    with pytest.raises(NotFoundError) as caught:
        tasks_client.submit_tasks(sid, [TaskDefinition(payload, (foreign,))])

    assert foreign in str(caught.value)
    assert_nothing_left(tasks_client, sid, [])


def test_submit_payload_of_other_session_rejected(tasks_client: Any, sid: str) -> None:
    other = tasks_client.create_session()
    foreign = new_payload(tasks_client, other)

    with pytest.raises(NotFoundError) as caught:
        tasks_client.submit_tasks(sid, [TaskDefinition(foreign)])

    assert foreign in str(caught.value)
    assert_nothing_left(tasks_client, sid, [])


def test_submit_output_of_other_session_rejected(tasks_client: Any, sid: str) -> None:
    other = tasks_client.create_session()
    (foreign,) = new_ids(tasks_client, other, 1)
    payload = new_payload(tasks_client, sid)

    with pytest.raises(NotFoundError) as caught:
        tasks_client.submit_tasks(sid, [TaskDefinition(payload, (), (foreign,))])

    assert foreign in str(caught.value)
    assert tasks_client.get_owner_task_id(other, [foreign]) == {foreign: ""}


def test_submit_owned_output_rejected(tasks_client: Any, sid: str) -> None:
    (output,) = new_ids(tasks_client, sid, 1)
    owner = submit_one(tasks_client, sid, outputs=(output,))
    payload = new_payload(tasks_client, sid)

    with pytest.raises(FailedPreconditionError) as caught:
        tasks_client.submit_tasks(sid, [TaskDefinition(payload, (), (output,))])

    assert output in str(caught.value)
    assert owner in str(caught.value)
    assert tasks_client.get_owner_task_id(sid, [output]) == {output: owner}
    assert tasks_client.list_tasks(session_id=sid).total == 1


def test_submit_completed_output_rejected(tasks_client: Any, sid: str) -> None:
    completed = new_payload(tasks_client, sid)
    (fresh,) = new_ids(tasks_client, sid, 1)
    payload = new_payload(tasks_client, sid)

    with pytest.raises(FailedPreconditionError) as caught:
        tasks_client.submit_tasks(
            sid, [TaskDefinition(payload, (), (fresh, completed))]
        )

    assert completed in str(caught.value)
    assert_nothing_left(tasks_client, sid, [fresh])


def test_submit_output_shared_by_two_tasks_rejected(
    tasks_client: Any, sid: str
) -> None:
    (output,) = new_ids(tasks_client, sid, 1)
    payload = new_payload(tasks_client, sid)
    definitions = [
        TaskDefinition(payload, (), (output,)),
        TaskDefinition(payload, (), (output,)),
    ]

    with pytest.raises(InvalidArgumentError) as caught:
        tasks_client.submit_tasks(sid, definitions)

    assert output in str(caught.value)
    assert_nothing_left(tasks_client, sid, [output])


def test_submit_output_equal_to_dependency_rejected(
    tasks_client: Any, sid: str
) -> None:
    (result_id,) = new_ids(tasks_client, sid, 1)
    payload = new_payload(tasks_client, sid)

    with pytest.raises(InvalidArgumentError) as caught:
        tasks_client.submit_tasks(
            sid, [TaskDefinition(payload, (result_id,), (result_id,))]
        )

    assert result_id in str(caught.value)
    assert_nothing_left(tasks_client, sid, [result_id])


def test_submit_output_equal_to_payload_rejected(tasks_client: Any, sid: str) -> None:
    (result_id,) = new_ids(tasks_client, sid, 1)

    with pytest.raises(InvalidArgumentError) as caught:
        tasks_client.submit_tasks(sid, [TaskDefinition(result_id, (), (result_id,))])

    assert result_id in str(caught.value)
    assert_nothing_left(tasks_client, sid, [result_id])


def test_submit_empty_task_list_rejected(tasks_client: Any, sid: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        tasks_client.submit_tasks(sid, [])

    assert "empty" in str(caught.value)


def test_submit_duplicate_dependency_rejected(tasks_client: Any, sid: str) -> None:
    (dependency,) = new_ids(tasks_client, sid, 1)
    payload = new_payload(tasks_client, sid)

    with pytest.raises(InvalidArgumentError) as caught:
        tasks_client.submit_tasks(
            sid, [TaskDefinition(payload, (dependency, dependency))]
        )

    assert dependency in str(caught.value)
    assert_nothing_left(tasks_client, sid, [])


def test_submit_payload_as_dependency_accepted(tasks_client: Any, sid: str) -> None:
    payload = new_payload(tasks_client, sid)

    (info,) = tasks_client.submit_tasks(sid, [TaskDefinition(payload, (payload,))])

    assert queued_ids(tasks_client, sid) == [info.task_id]


def test_submit_partition_outside_session_rejected(tasks_client: Any, sid: str) -> None:
    payload = new_payload(tasks_client, sid)

    with pytest.raises(InvalidArgumentError) as caught:
        tasks_client.submit_tasks(
            sid,
            [TaskDefinition(payload, options={"partition_id": OTHER_PARTITION})],
        )

    assert OTHER_PARTITION in str(caught.value)
    assert_nothing_left(tasks_client, sid, [])


def test_submit_priority_out_of_range_rejected(tasks_client: Any, sid: str) -> None:
    payload = new_payload(tasks_client, sid)

    with pytest.raises(InvalidArgumentError) as caught:
        tasks_client.submit_tasks(sid, [TaskDefinition(payload)], {"priority": 100})

    assert "priority" in str(caught.value)
    assert_nothing_left(tasks_client, sid, [])


def test_submit_to_closed_session_rejected(tasks_client: Any, sid: str) -> None:
    payload = new_payload(tasks_client, sid)
    tasks_client.close_session(sid)

    with pytest.raises(FailedPreconditionError) as caught:
        tasks_client.submit_tasks(sid, [TaskDefinition(payload)])

    assert sid in str(caught.value)
    assert tasks_client.list_tasks(session_id=sid).total == 0


def test_submit_to_unknown_session_rejected(tasks_client: Any) -> None:
    with pytest.raises(NotFoundError) as caught:
        tasks_client.submit_tasks("no-such-session", [TaskDefinition("payload")])

    assert "no-such-session" in str(caught.value)


# Submission: options


def test_submit_options_merge_task_over_request_over_session(
    tasks_client: Any,
) -> None:
    session_id = tasks_client.create_session(
        default_task_options={
            "priority": 3,
            "max_retries": 4,
            "options": {"level": "session", "from_session": "yes"},
        }
    )
    payload = new_payload(tasks_client, session_id)
    definitions = [
        TaskDefinition(payload),
        TaskDefinition(
            payload,
            options={"priority": 9, "options": {"level": "task", "from_task": "yes"}},
        ),
    ]

    plain, overridden = tasks_client.submit_tasks(
        session_id,
        definitions,
        {
            "priority": 5,
            "max_duration": 30.0,
            "options": {"level": "request", "from_request": "yes"},
        },
    )

    plain_options = tasks_client.get_task(session_id, plain.task_id).options
    task_options = tasks_client.get_task(session_id, overridden.task_id).options
    assert plain_options.priority == 5
    assert plain_options.max_retries == 4
    assert plain_options.max_duration == 30.0
    assert plain_options.partition_id == PARTITION
    assert plain_options.options == {
        "level": "request",
        "from_session": "yes",
        "from_request": "yes",
    }
    assert task_options.priority == 9
    assert task_options.max_retries == 4
    assert task_options.max_duration == 30.0
    assert task_options.options == {
        "level": "task",
        "from_session": "yes",
        "from_request": "yes",
        "from_task": "yes",
    }
    tasks_client.cancel_session(session_id)


def test_submit_options_object_keeps_session_partition(
    tasks_client: Any, sid: str
) -> None:
    payload = new_payload(tasks_client, sid)

    (info,) = tasks_client.submit_tasks(
        sid, [TaskDefinition(payload)], TaskOptions(priority=2)
    )

    options = tasks_client.get_task(sid, info.task_id).options
    assert options.priority == 2
    assert options.partition_id == PARTITION


def test_submit_to_second_partition_queues_there(tasks_client: Any) -> None:
    session_id = tasks_client.create_session([PARTITION, OTHER_PARTITION])
    payload = new_payload(tasks_client, session_id)

    (info,) = tasks_client.submit_tasks(
        session_id,
        [TaskDefinition(payload, options={"partition_id": OTHER_PARTITION})],
    )

    assert queued_ids(tasks_client, session_id, OTHER_PARTITION) == [info.task_id]
    assert queued_ids(tasks_client, session_id, PARTITION) == []
    tasks_client.cancel_session(session_id)


# Readiness


def test_task_with_completed_dependency_queued(tasks_client: Any, sid: str) -> None:
    dependency = new_payload(tasks_client, sid)

    task_id = submit_one(tasks_client, sid, (dependency,))

    assert task_status(tasks_client, sid, task_id) == TaskStatus.SUBMITTED
    assert queued_ids(tasks_client, sid) == [task_id]


def test_task_with_pending_dependency_waits(tasks_client: Any, sid: str) -> None:
    completed = new_payload(tasks_client, sid)
    (pending,) = new_ids(tasks_client, sid, 1)

    task_id = submit_one(tasks_client, sid, (completed, pending))

    assert task_status(tasks_client, sid, task_id) == TaskStatus.PENDING
    assert queued_ids(tasks_client, sid) == []


def test_task_queued_after_last_upload(tasks_client: Any, sid: str) -> None:
    completed = new_payload(tasks_client, sid)
    (pending,) = new_ids(tasks_client, sid, 1)
    task_id = submit_one(tasks_client, sid, (completed, pending))

    tasks_client.upload_result_data(sid, pending, b"last")

    assert task_status(tasks_client, sid, task_id) == TaskStatus.SUBMITTED
    assert queued_ids(tasks_client, sid) == [task_id]


def test_task_waits_for_pending_payload(tasks_client: Any, sid: str) -> None:
    (payload,) = new_ids(tasks_client, sid, 1)
    (info,) = tasks_client.submit_tasks(sid, [TaskDefinition(payload)])
    assert queued_ids(tasks_client, sid) == []

    tasks_client.upload_result_data(sid, payload, b"{}")

    assert queued_ids(tasks_client, sid) == [info.task_id]


def test_task_without_dependencies_queued(tasks_client: Any, sid: str) -> None:
    task_id = submit_one(tasks_client, sid)

    assert task_status(tasks_client, sid, task_id) == TaskStatus.SUBMITTED
    assert queued_ids(tasks_client, sid) == [task_id]


def test_task_sharing_dependency_queued_once(tasks_client: Any, sid: str) -> None:
    (dependency,) = new_ids(tasks_client, sid, 1)
    first = submit_one(tasks_client, sid, (dependency,))
    second = submit_one(tasks_client, sid, (dependency,))

    tasks_client.upload_result_data(sid, dependency, b"shared")

    assert sorted(queued_ids(tasks_client, sid)) == sorted([first, second])


def test_queue_orders_by_priority_then_arrival(tasks_client: Any, sid: str) -> None:
    middle_first = submit_one(tasks_client, sid, options={"priority": 5})
    low = submit_one(tasks_client, sid, options={"priority": 1})
    high = submit_one(tasks_client, sid, options={"priority": 9})
    middle_second = submit_one(tasks_client, sid, options={"priority": 5})

    assert queued_ids(tasks_client, sid) == [high, middle_first, middle_second, low]


def test_queue_orders_one_submission_by_priority(tasks_client: Any, sid: str) -> None:
    payload = new_payload(tasks_client, sid)
    priorities = [2, 7, 2, 7, 4]

    infos = tasks_client.submit_tasks(
        sid,
        [TaskDefinition(payload, options={"priority": p}) for p in priorities],
    )

    ids = [info.task_id for info in infos]
    expected = [ids[1], ids[3], ids[4], ids[0], ids[2]]
    assert queued_ids(tasks_client, sid) == expected


def test_dependency_chain_queues_in_order(tasks_client: Any, sid: str) -> None:
    (first_input, middle) = new_ids(tasks_client, sid, 2)
    consumer = submit_one(tasks_client, sid, (middle,))
    producer = submit_one(tasks_client, sid, (first_input,), (middle,))
    assert queued_ids(tasks_client, sid) == []

    tasks_client.upload_result_data(sid, first_input, b"start")

    assert queued_ids(tasks_client, sid) == [producer]
    assert task_status(tasks_client, sid, consumer) == TaskStatus.PENDING


def run_race_round(client: Any, session_id: str, seed: int) -> str:
    """Submit a task and upload its only pending dependency at the same time;
    return the task id."""
    chance = random.Random(seed)
    (dependency,) = new_ids(client, session_id, 1)
    payload = new_payload(client, session_id)
    submitted: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def submit() -> None:
        start.wait()
        time.sleep(chance.uniform(0, 0.004))
        try:
            (info,) = client.submit_tasks(
                session_id, [TaskDefinition(payload, (dependency,))]
            )
            submitted.append(info.task_id)
        except BaseException as error:
            errors.append(error)

    def upload() -> None:
        start.wait()
        time.sleep(chance.uniform(0, 0.004))
        try:
            client.upload_result_data(session_id, dependency, b"x" * 100)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=submit), threading.Thread(target=upload)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    (task_id,) = submitted
    return task_id


def test_task_queued_once_when_upload_races_submit(tasks_client: Any) -> None:
    session_id = tasks_client.create_session([RACE_PARTITION])
    counts = []
    for seed in range(RACE_ROUNDS):
        task_id = run_race_round(tasks_client, session_id, seed)

        acquired = tasks_client.acquire_tasks(RACE_PARTITION, "racer", max_tasks=100)

        counts.append([task.task_id for task in acquired].count(task_id))
        assert len(acquired) == counts[-1], f"round {seed}: other tasks queued"
    tasks_client.cancel_session(session_id)
    assert counts == [1] * RACE_ROUNDS


# Queries


def test_get_task_returns_definition(tasks_client: Any, sid: str) -> None:
    dependency, output = new_ids(tasks_client, sid, 2)
    payload = new_payload(tasks_client, sid)
    (info,) = tasks_client.submit_tasks(
        sid, [TaskDefinition(payload, (dependency,), (output,))]
    )

    task = tasks_client.get_task(sid, info.task_id)

    assert task.payload_id == payload
    assert task.data_dependencies == (dependency,)
    assert task.expected_output_ids == (output,)
    assert task.session_id == sid
    assert tasks_client.get_owner_task_id(sid, [output]) == {output: info.task_id}


def test_get_task_unknown_id_rejected(tasks_client: Any, sid: str) -> None:
    with pytest.raises(NotFoundError) as caught:
        tasks_client.get_task(sid, "no-such-task")

    assert "no-such-task" in str(caught.value)


def test_get_task_of_other_session_rejected(tasks_client: Any, sid: str) -> None:
    other = tasks_client.create_session()
    task_id = submit_one(tasks_client, other)

    with pytest.raises(NotFoundError) as caught:
        tasks_client.get_task(sid, task_id)

    assert task_id in str(caught.value)
    tasks_client.cancel_session(other)


def test_list_tasks_filters_on_status(tasks_client: Any, sid: str) -> None:
    (pending_input,) = new_ids(tasks_client, sid, 1)
    waiting = submit_one(tasks_client, sid, (pending_input,))
    queued = submit_one(tasks_client, sid)

    pending_page = tasks_client.list_tasks(
        [[Condition("status", "eq", TaskStatus.PENDING)]], session_id=sid
    )
    submitted_page = tasks_client.list_tasks(
        [[Condition("status", "eq", TaskStatus.SUBMITTED)]], session_id=sid
    )

    assert [task.task_id for task in pending_page.items] == [waiting]
    assert [task.task_id for task in submitted_page.items] == [queued]
    assert pending_page.total == 1


def test_list_tasks_pages_through_session(tasks_client: Any, sid: str) -> None:
    ids = {submit_one(tasks_client, sid) for _ in range(5)}

    pages = [
        tasks_client.list_tasks(session_id=sid, page=page, page_size=2)
        for page in range(3)
    ]

    assert [page.total for page in pages] == [5, 5, 5]
    assert [len(page.items) for page in pages] == [2, 2, 1]
    assert {task.task_id for page in pages for task in page.items} == ids


def test_list_tasks_filter_on_session_field(tasks_client: Any, sid: str) -> None:
    task_id = submit_one(tasks_client, sid)

    page = tasks_client.list_tasks([[Condition("session_id", "eq", sid)]])

    assert [task.task_id for task in page.items] == [task_id]


# Cancellation


def test_cancel_queued_task_leaves_queue(tasks_client: Any, sid: str) -> None:
    task_id = submit_one(tasks_client, sid)
    kept = submit_one(tasks_client, sid)

    cancelled = tasks_client.cancel_tasks(sid, [task_id])

    assert cancelled == [task_id]
    assert task_status(tasks_client, sid, task_id) == TaskStatus.CANCELLED
    assert queued_ids(tasks_client, sid) == [kept]


def test_cancel_task_aborts_outputs(tasks_client: Any, sid: str) -> None:
    outputs = new_ids(tasks_client, sid, 2)
    task_id = submit_one(tasks_client, sid, outputs=tuple(outputs))

    tasks_client.cancel_tasks(sid, [task_id])

    for output in outputs:
        assert result_status(tasks_client, sid, output) == ResultStatus.ABORTED


def test_cancel_task_fails_dependents(tasks_client: Any, sid: str) -> None:
    output, other_input = new_ids(tasks_client, sid, 2)
    producer = submit_one(tasks_client, sid, outputs=(output,))
    direct = submit_one(tasks_client, sid, (output, other_input))
    (grandchild_input,) = new_ids(tasks_client, sid, 1)
    indirect = submit_one(tasks_client, sid, (grandchild_input,))
    chained_output = new_ids(tasks_client, sid, 1)[0]
    middle = submit_one(tasks_client, sid, (output,), (chained_output,))
    last = submit_one(tasks_client, sid, (chained_output,))

    tasks_client.cancel_tasks(sid, [producer])

    assert task_status(tasks_client, sid, direct) == TaskStatus.ERROR
    assert task_status(tasks_client, sid, middle) == TaskStatus.ERROR
    assert result_status(tasks_client, sid, chained_output) == ResultStatus.ABORTED
    assert task_status(tasks_client, sid, last) == TaskStatus.ERROR
    assert task_status(tasks_client, sid, indirect) == TaskStatus.PENDING


def test_cancel_unknown_task_rejected(tasks_client: Any, sid: str) -> None:
    task_id = submit_one(tasks_client, sid)

    with pytest.raises(NotFoundError) as caught:
        tasks_client.cancel_tasks(sid, [task_id, "no-such-task"])

    assert "no-such-task" in str(caught.value)
    assert task_status(tasks_client, sid, task_id) == TaskStatus.SUBMITTED


def test_cancel_finished_task_skipped(tasks_client: Any, sid: str) -> None:
    task_id = submit_one(tasks_client, sid)
    tasks_client.cancel_tasks(sid, [task_id])

    cancelled = tasks_client.cancel_tasks(sid, [task_id])

    assert cancelled == []


def test_cancel_dispatched_task_rejects_completion(tasks_client: Any) -> None:
    session_id = tasks_client.create_session([RACE_PARTITION])
    (output,) = new_ids(tasks_client, session_id, 1)
    task_id = submit_one(tasks_client, session_id, outputs=(output,))
    (task,) = tasks_client.acquire_tasks(RACE_PARTITION, "worker-1")
    assert task.task_id == task_id

    tasks_client.cancel_tasks(session_id, [task_id])

    with pytest.raises(FailedPreconditionError) as caught:
        tasks_client.complete_task(session_id, task_id, task.lease_id, {output: b"x"})
    assert task_id in str(caught.value)
    assert result_status(tasks_client, session_id, output) == ResultStatus.ABORTED
    tasks_client.cancel_session(session_id)


def test_cancel_paused_task_stays_out_of_queue(tasks_client: Any, sid: str) -> None:
    task_id = submit_one(tasks_client, sid)
    kept = submit_one(tasks_client, sid)
    tasks_client.pause_session(sid)

    tasks_client.cancel_tasks(sid, [task_id])
    tasks_client.resume_session(sid)

    assert task_status(tasks_client, sid, task_id) == TaskStatus.CANCELLED
    assert queued_ids(tasks_client, sid) == [kept]
