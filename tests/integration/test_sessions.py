"""Integration tests of the session RPCs on a real local Ray.

They use the shared default service, so every check of the queue or of the stored
objects is narrowed to the test's own session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from results_service.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from results_service.filters import Condition
from results_service.records import (
    ResultCreate,
    ResultStatus,
    SessionStatus,
    TaskDefinition,
    TaskStatus,
)

PARTITION = "default"


@pytest.fixture(scope="module")
def acquiring_client(services: Any) -> Any:
    """A service of this module's own, for tests that acquire tasks: the shared
    service's queue may hold other modules' tasks."""
    return services.start()


def queued_ids(client: Any, session_id: str) -> list[str]:
    """Return the session's task ids in the default queue, in dispatch order."""
    return [
        message.task_id
        for message in client.queue_contents(PARTITION)
        if message.session_id == session_id
    ]


def result_status(client: Any, session_id: str, result_id: str) -> ResultStatus:
    return client.get_result(session_id, result_id).status


def task_status(client: Any, session_id: str, task_id: str) -> TaskStatus:
    return client.get_task(session_id, task_id).status


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


def new_ids(client: Any, session_id: str, count: int) -> list[str]:
    """Create `count` CREATED results and return their ids."""
    names = [f"r{index}" for index in range(count)]
    return [
        record.result_id for record in client.create_results_metadata(session_id, names)
    ]


# Creation, lookup and listing


def test_create_session_uses_default_partition(client: Any) -> None:
    session = client.get_session(client.create_session())

    assert session.partition_ids == (PARTITION,)
    assert session.default_task_options.partition_id == PARTITION
    assert session.status == SessionStatus.RUNNING


def test_create_session_unknown_partition_rejected(client: Any) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.create_session(["no-such-partition"])

    assert "no-such-partition" in str(caught.value)


def test_create_session_priority_zero_rejected(client: Any) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_session(default_task_options={"priority": 0})

    assert "priority" in str(caught.value)


def test_create_session_unknown_option_rejected(client: Any) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.create_session(default_task_options={"colour": "red"})

    assert "colour" in str(caught.value)


def test_create_session_keeps_default_options(client: Any) -> None:
    session_id = client.create_session(
        default_task_options={"priority": 7, "max_retries": 3}
    )

    options = client.get_session(session_id).default_task_options
    assert options.priority == 7
    assert options.max_retries == 3


def test_get_session_unknown_id_rejected(client: Any) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.get_session("no-such-session")

    assert "no-such-session" in str(caught.value)


def test_list_sessions_filters_on_status(client: Any) -> None:
    running = client.create_session()
    paused = client.create_session()
    client.pause_session(paused)

    page = client.list_sessions(
        [[Condition("status", "eq", SessionStatus.PAUSED)]], page_size=10_000
    )

    listed = {session.session_id for session in page.items}
    assert paused in listed
    assert running not in listed
    assert all(session.status == SessionStatus.PAUSED for session in page.items)


def test_list_sessions_pages_through_matches(client: Any) -> None:
    sessions = {client.create_session() for _ in range(3)}
    only_these = [[Condition("session_id", "eq", sid)] for sid in sorted(sessions)]

    first = client.list_sessions(only_these, page=0, page_size=2)
    second = client.list_sessions(only_these, page=1, page_size=2)

    assert first.total == 3
    assert second.total == 3
    assert len(first.items) == 2
    assert len(second.items) == 1
    listed = {session.session_id for session in first.items + second.items}
    assert listed == sessions


def test_list_sessions_unknown_field_rejected(client: Any) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.list_sessions([[Condition("colour", "eq", "red")]])

    assert "colour" in str(caught.value)


# Transitions


def to_running(client: Any, session_id: str) -> None:
    pass


def to_paused(client: Any, session_id: str) -> None:
    client.pause_session(session_id)


def to_closed(client: Any, session_id: str) -> None:
    client.close_session(session_id)


def to_cancelled(client: Any, session_id: str) -> None:
    client.cancel_session(session_id)


def to_purged(client: Any, session_id: str) -> None:
    client.close_session(session_id)
    client.purge_session(session_id)


REACH: dict[SessionStatus, Callable[[Any, str], None]] = {
    SessionStatus.RUNNING: to_running,
    SessionStatus.PAUSED: to_paused,
    SessionStatus.CLOSED: to_closed,
    SessionStatus.CANCELLED: to_cancelled,
    SessionStatus.PURGED: to_purged,
}

# RPC name and the status it moves a session to.
MOVES = {
    "pause_session": SessionStatus.PAUSED,
    "resume_session": SessionStatus.RUNNING,
    "close_session": SessionStatus.CLOSED,
    "cancel_session": SessionStatus.CANCELLED,
    "purge_session": SessionStatus.PURGED,
}

LEGAL = [
    (SessionStatus.RUNNING, "pause_session"),
    (SessionStatus.RUNNING, "close_session"),
    (SessionStatus.RUNNING, "cancel_session"),
    (SessionStatus.PAUSED, "resume_session"),
    (SessionStatus.PAUSED, "close_session"),
    (SessionStatus.PAUSED, "cancel_session"),
    (SessionStatus.CLOSED, "cancel_session"),
    (SessionStatus.CLOSED, "purge_session"),
    (SessionStatus.CANCELLED, "purge_session"),
]

ILLEGAL = [
    (SessionStatus.RUNNING, "resume_session"),
    (SessionStatus.RUNNING, "purge_session"),
    (SessionStatus.PAUSED, "pause_session"),
    (SessionStatus.PAUSED, "purge_session"),
    (SessionStatus.CLOSED, "pause_session"),
    (SessionStatus.CLOSED, "resume_session"),
    (SessionStatus.CLOSED, "close_session"),
    (SessionStatus.CANCELLED, "pause_session"),
    (SessionStatus.CANCELLED, "resume_session"),
    (SessionStatus.CANCELLED, "close_session"),
    (SessionStatus.CANCELLED, "cancel_session"),
    (SessionStatus.PURGED, "pause_session"),
    (SessionStatus.PURGED, "resume_session"),
    (SessionStatus.PURGED, "close_session"),
    (SessionStatus.PURGED, "cancel_session"),
    (SessionStatus.PURGED, "purge_session"),
]


@pytest.mark.parametrize(
    ("start", "rpc"), LEGAL, ids=[f"{s.name}-{rpc}" for s, rpc in LEGAL]
)
def test_session_legal_move_applied(
    client: Any, start: SessionStatus, rpc: str
) -> None:
    session_id = client.create_session()
    REACH[start](client, session_id)

    returned = getattr(client, rpc)(session_id)

    assert returned.status == MOVES[rpc]
    assert client.get_session(session_id).status == MOVES[rpc]


@pytest.mark.parametrize(
    ("start", "rpc"), ILLEGAL, ids=[f"{s.name}-{rpc}" for s, rpc in ILLEGAL]
)
def test_session_illegal_move_rejected(
    client: Any, start: SessionStatus, rpc: str
) -> None:
    session_id = client.create_session()
    REACH[start](client, session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        getattr(client, rpc)(session_id)

    message = str(caught.value)
    assert session_id in message
    assert start.name in message
    assert MOVES[rpc].name in message
    assert client.get_session(session_id).status == start


@pytest.mark.parametrize("start", list(REACH), ids=[s.name for s in REACH])
def test_delete_session_from_any_status(client: Any, start: SessionStatus) -> None:
    session_id = client.create_session()
    REACH[start](client, session_id)

    client.delete_session(session_id)

    with pytest.raises(NotFoundError) as caught:
        client.get_session(session_id)
    assert session_id in str(caught.value)


def test_delete_session_twice_rejected(client: Any) -> None:
    session_id = client.create_session()
    client.delete_session(session_id)

    with pytest.raises(NotFoundError) as caught:
        client.delete_session(session_id)

    assert session_id in str(caught.value)


def test_session_move_stamps_time(client: Any) -> None:
    session_id = client.create_session()
    client.close_session(session_id)
    client.cancel_session(session_id)

    session = client.get_session(session_id)

    assert session.closed_at is not None
    assert session.cancelled_at is not None
    assert session.purged_at is None


# Cancel


def test_cancel_session_aborts_created_results(client: Any, session_id: str) -> None:
    created, output = new_ids(client, session_id, 2)
    (done,) = client.create_results(session_id, {"done": b"data"})
    submit_one(client, session_id, (created,), (output,))

    client.cancel_session(session_id)

    assert result_status(client, session_id, created) == ResultStatus.ABORTED
    assert result_status(client, session_id, output) == ResultStatus.ABORTED
    assert result_status(client, session_id, done.result_id) == ResultStatus.COMPLETED


def test_cancel_session_cancels_unfinished_tasks(client: Any, session_id: str) -> None:
    (dependency,) = new_ids(client, session_id, 1)
    waiting = submit_one(client, session_id, (dependency,))
    queued = submit_one(client, session_id)

    client.cancel_session(session_id)

    assert task_status(client, session_id, waiting) == TaskStatus.CANCELLED
    assert task_status(client, session_id, queued) == TaskStatus.CANCELLED


def test_cancel_session_empties_queue(client: Any, session_id: str) -> None:
    first = submit_one(client, session_id)
    second = submit_one(client, session_id)
    assert queued_ids(client, session_id) == [first, second]

    client.cancel_session(session_id)

    assert queued_ids(client, session_id) == []


def test_cancel_paused_session_drops_parked_tasks(client: Any, session_id: str) -> None:
    task_id = submit_one(client, session_id)
    client.pause_session(session_id)

    client.cancel_session(session_id)

    assert task_status(client, session_id, task_id) == TaskStatus.CANCELLED
    assert queued_ids(client, session_id) == []


def test_cancelled_session_rejects_upload(client: Any, session_id: str) -> None:
    (result_id,) = new_ids(client, session_id, 1)
    client.cancel_session(session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        client.upload_result_data(session_id, result_id, b"late")

    assert session_id in str(caught.value)
    assert client.stored_ids(f"sessions/{session_id}/") == []


def test_cancelled_session_rejects_submission(client: Any, session_id: str) -> None:
    (payload,) = client.create_results(session_id, {"payload": b"{}"})
    client.cancel_session(session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        client.submit_tasks(session_id, [TaskDefinition(payload.result_id)])

    assert session_id in str(caught.value)
    assert client.list_tasks(session_id=session_id).total == 0


def test_cancelled_session_rejects_new_results(client: Any, session_id: str) -> None:
    client.cancel_session(session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        client.create_results_metadata(session_id, ["late"])

    assert session_id in str(caught.value)


# Pause and resume


def test_pause_session_parks_queued_tasks(client: Any, session_id: str) -> None:
    task_id = submit_one(client, session_id)
    assert queued_ids(client, session_id) == [task_id]

    client.pause_session(session_id)

    assert task_status(client, session_id, task_id) == TaskStatus.PAUSED
    assert queued_ids(client, session_id) == []


def test_paused_session_parks_task_made_ready(client: Any, session_id: str) -> None:
    (dependency,) = new_ids(client, session_id, 1)
    task_id = submit_one(client, session_id, (dependency,))
    client.pause_session(session_id)

    client.upload_result_data(session_id, dependency, b"ready")

    assert task_status(client, session_id, task_id) == TaskStatus.PAUSED
    assert queued_ids(client, session_id) == []


def test_paused_session_parks_submitted_task(client: Any, session_id: str) -> None:
    client.pause_session(session_id)

    task_id = submit_one(client, session_id)

    assert task_status(client, session_id, task_id) == TaskStatus.PAUSED
    assert queued_ids(client, session_id) == []


def test_paused_session_dispatches_nothing(acquiring_client: Any) -> None:
    client = acquiring_client
    session_id = client.create_session()
    submit_one(client, session_id)
    client.pause_session(session_id)

    acquired = client.acquire_tasks(PARTITION, "worker-1", max_tasks=10)

    assert acquired == []
    client.cancel_session(session_id)


def test_resume_session_requeues_by_priority(client: Any, session_id: str) -> None:
    low = submit_one(client, session_id, options={"priority": 1})
    client.pause_session(session_id)
    high = submit_one(client, session_id, options={"priority": 9})
    middle = submit_one(client, session_id, options={"priority": 5})

    client.resume_session(session_id)

    assert queued_ids(client, session_id) == [high, middle, low]
    for task_id in (low, middle, high):
        assert task_status(client, session_id, task_id) == TaskStatus.SUBMITTED


def test_resume_session_requeues_task_made_ready(client: Any, session_id: str) -> None:
    (dependency,) = new_ids(client, session_id, 1)
    task_id = submit_one(client, session_id, (dependency,))
    client.pause_session(session_id)
    client.upload_result_data(session_id, dependency, b"ready")

    client.resume_session(session_id)

    assert task_status(client, session_id, task_id) == TaskStatus.SUBMITTED
    assert queued_ids(client, session_id) == [task_id]


# Close


def test_closed_session_rejects_submission(client: Any, session_id: str) -> None:
    (payload,) = client.create_results(session_id, {"payload": b"{}"})
    client.close_session(session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        client.submit_tasks(session_id, [TaskDefinition(payload.result_id)])

    assert session_id in str(caught.value)
    assert client.list_tasks(session_id=session_id).total == 0


def test_closed_session_rejects_new_results(client: Any, session_id: str) -> None:
    client.close_session(session_id)

    with pytest.raises(FailedPreconditionError) as caught:
        client.create_results_metadata(session_id, ["late"])

    assert session_id in str(caught.value)


def test_closed_session_accepts_upload(client: Any, session_id: str) -> None:
    (result_id,) = new_ids(client, session_id, 1)
    client.close_session(session_id)

    client.upload_result_data(session_id, result_id, b"late data")

    assert result_status(client, session_id, result_id) == ResultStatus.COMPLETED
    assert client.read_result_data(session_id, result_id) == b"late data"


def test_closed_session_queues_task_made_ready(client: Any, session_id: str) -> None:
    (dependency,) = new_ids(client, session_id, 1)
    task_id = submit_one(client, session_id, (dependency,))
    client.close_session(session_id)

    client.upload_result_data(session_id, dependency, b"ready")

    assert queued_ids(client, session_id) == [task_id]


# Purge


def make_purgeable(client: Any, session_id: str) -> dict[str, Any]:
    """Create one result of each kind a purge treats differently."""
    plain, empty = client.create_results(
        session_id, {"plain": b"plain data", "empty": b""}
    )
    (manual,) = client.create_results(
        session_id, [ResultCreate("manual", manual_deletion=True, data=b"mine")]
    )
    uploaded, created = new_ids(client, session_id, 2)
    client.upload_result_data(session_id, uploaded, b"uploaded data")
    return {
        "plain": plain,
        "empty": empty,
        "manual": manual,
        "uploaded": client.get_result(session_id, uploaded),
        "created": client.get_result(session_id, created),
    }


@pytest.mark.parametrize("before", ["close_session", "cancel_session"])
def test_purge_session_deletes_stored_data(
    client: Any, session_id: str, before: str
) -> None:
    results = make_purgeable(client, session_id)
    getattr(client, before)(session_id)

    client.purge_session(session_id)

    stored = set(client.stored_ids(f"sessions/{session_id}/"))
    for name in ("plain", "empty", "uploaded"):
        record = results[name]
        assert result_status(client, session_id, record.result_id) == (
            ResultStatus.DELETED
        ), name
        assert record.opaque_id not in stored, name


def test_purge_session_keeps_manual_deletion(client: Any, session_id: str) -> None:
    results = make_purgeable(client, session_id)
    client.close_session(session_id)

    client.purge_session(session_id)

    manual = results["manual"]
    stored = client.stored_ids(f"sessions/{session_id}/")
    assert result_status(client, session_id, manual.result_id) == (
        ResultStatus.COMPLETED
    )
    assert stored == [manual.opaque_id]
    assert client.read_result_data(session_id, manual.result_id) == b"mine"


def test_purge_session_deletes_zero_byte_object(client: Any, session_id: str) -> None:
    (empty,) = client.create_results(session_id, {"empty": b""})
    assert client.stored_ids(f"sessions/{session_id}/") == [empty.opaque_id]
    client.close_session(session_id)

    client.purge_session(session_id)

    assert client.stored_ids(f"sessions/{session_id}/") == []


def test_purge_session_deletes_staged_outputs(acquiring_client: Any) -> None:
    client = acquiring_client
    session_id = client.create_session()
    (output,) = new_ids(client, session_id, 1)
    submit_one(client, session_id, outputs=(output,))
    (task,) = client.acquire_tasks(PARTITION, "worker-1")
    client.upload_result_data(
        session_id, output, b"staged", task_id=task.task_id, lease_id=task.lease_id
    )
    client.cancel_session(session_id)

    client.purge_session(session_id)

    assert client.stored_ids(f"sessions/{session_id}/") == []


def test_purge_session_running_rejected(client: Any, session_id: str) -> None:
    (result,) = client.create_results(session_id, {"data": b"kept"})

    with pytest.raises(FailedPreconditionError) as caught:
        client.purge_session(session_id)

    assert session_id in str(caught.value)
    assert client.stored_ids(f"sessions/{session_id}/") == [result.opaque_id]


# Delete


def test_delete_session_removes_everything(client: Any, session_id: str) -> None:
    results = make_purgeable(client, session_id)
    (dependency,) = new_ids(client, session_id, 1)
    task_id = submit_one(client, session_id, (dependency,))

    client.delete_session(session_id)

    with pytest.raises(NotFoundError):
        client.get_session(session_id)
    with pytest.raises(NotFoundError) as caught:
        client.get_task(session_id, task_id)
    assert task_id in str(caught.value)
    with pytest.raises(NotFoundError) as caught:
        client.get_result(session_id, results["plain"].result_id)
    assert results["plain"].result_id in str(caught.value)
    assert client.list_results(session_id=session_id).total == 0
    assert client.list_tasks(session_id=session_id).total == 0


def test_delete_session_removes_stored_objects(client: Any, session_id: str) -> None:
    client.create_results(session_id, {"plain": b"plain data", "empty": b""})
    (uploaded,) = new_ids(client, session_id, 1)
    client.upload_result_data(session_id, uploaded, b"uploaded data")

    client.delete_session(session_id)

    assert client.stored_ids(f"sessions/{session_id}/") == []


def test_delete_session_keeps_manual_deletion(client: Any, session_id: str) -> None:
    results = make_purgeable(client, session_id)

    client.delete_session(session_id)

    stored = client.stored_ids(f"sessions/{session_id}/")
    assert stored == [results["manual"].opaque_id]


def test_delete_session_empties_queue(client: Any, session_id: str) -> None:
    submit_one(client, session_id)

    client.delete_session(session_id)

    assert queued_ids(client, session_id) == []


def test_delete_purged_session_removes_records(client: Any, session_id: str) -> None:
    results = make_purgeable(client, session_id)
    client.close_session(session_id)
    client.purge_session(session_id)

    client.delete_session(session_id)

    stored = client.stored_ids(f"sessions/{session_id}/")
    assert client.list_results(session_id=session_id).total == 0
    assert stored == [results["manual"].opaque_id]
