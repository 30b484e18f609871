"""Catalogue of real-world failures: races between submissions, transfers and
cancellation, on a real local Ray.

Cases that other modules already cover exactly, and are not repeated here:
- A task submitted after its only dependency is COMPLETED is queued at once:
  test_tasks.py::test_task_with_completed_dependency_queued. With one completed and
  one pending dependency it waits, then is queued when the second arrives:
  test_tasks.py::test_task_with_pending_dependency_waits and
  test_tasks.py::test_task_queued_after_last_upload.
- A dependency that does not exist is NOT_FOUND and leaves no task:
  test_tasks.py::test_submit_unknown_dependency_rejected. An ABORTED or DELETED one
  is FAILED_PRECONDITION and leaves no task:
  test_tasks.py::test_submit_unusable_dependency_rejected.
- A worker that uploads outputs under its lease and then fails leaves them CREATED
  with no dependent queued, and the retry completes them and only then queues the
  dependents: test_workers.py::test_fail_after_upload_keeps_outputs_created.
- A one-window upload racing a submission queues the task once:
  test_tasks.py::test_task_queued_once_when_upload_races_submit. The rounds below
  race a multi-window upload or an import with two submissions instead.

The module runs its own service with a partition of its own, so acquisitions return
only this module's tasks.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from results_service.errors import (
    FailedPreconditionError,
)
from results_service.records import (
    ResultStatus,
    StatusChange,
    TaskDefinition,
    TaskStatus,
)
from tests.service import rpc

PARTITION = "race"
RACE_ROUNDS = 40
CANCEL_ROUNDS = 20
# Upper bound on a round's threads; a round normally takes a few hundredths of a
# second, so reaching it means a call hung.
JOIN_SECONDS = 60.0
WORKER = "catalogue-worker"


@pytest.fixture(scope="module")
def race_client(services: Any) -> Any:
    """A service of this module's own, with one partition."""
    return services.start(partitions=(PARTITION,))


def new_ids(client: Any, session_id: str, count: int) -> list[str]:
    """Create `count` CREATED results and return their ids."""
    records = client.create_results_metadata(
        session_id, [f"r{index}" for index in range(count)]
    )
    return [record.result_id for record in records]


def new_payload(client: Any, session_id: str) -> str:
    (payload,) = client.create_results(session_id, {"payload": b"{}"})
    return payload.result_id


def queued_ids(client: Any, session_id: str) -> list[str]:
    """Return the session's task ids in the partition's queue, in dispatch order."""
    return [
        message.task_id
        for message in client.queue_contents(PARTITION)
        if message.session_id == session_id
    ]


def run_threads(*targets: Callable[[], None]) -> list[BaseException]:
    """Start the targets together, join them, and return the errors they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(targets))

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            start.wait()
            try:
                target()
            except BaseException as error:  # noqa: BLE001 - reported to the test
                errors.append(error)

        return run

    threads = [threading.Thread(target=wrap(target)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_SECONDS)
    hung = [thread for thread in threads if thread.is_alive()]
    if hung:
        errors.append(TimeoutError(f"{len(hung)} threads still ran after the round"))
    return errors


def pause(chance: random.Random, seconds: float = 0.004) -> None:
    threading.Event().wait(chance.uniform(0, seconds))


def import_key(client: Any, chance: random.Random) -> str:
    """Write a small object under the storage root and return its key."""
    root = Path(client.settings.storage_url.removeprefix("file://"))
    key = f"imports/race-{chance.getrandbits(64):016x}.bin"
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"imported")
    return key


def race_round(client: Any, seed: int) -> dict[str, Any]:
    """Complete a dependency, by a three-window upload or by an import, while two
    tasks that wait on it are submitted; return what the round observed."""
    chance = random.Random(seed)
    session_id = client.create_session([PARTITION])
    (pending,) = new_ids(client, session_id, 1)
    payload = new_payload(client, session_id)
    completed = new_payload(client, session_id)
    use_import = seed % 2 == 1
    key = import_key(client, chance) if use_import else ""
    submitted: list[str] = []

    def complete_dependency() -> None:
        pause(chance)
        if use_import:
            client.import_results_data(session_id, [(pending, key)])
            return
        upload_id = rpc(client, "open_upload", session_id, pending)
        for window in range(3):
            pause(chance)
            rpc(client, "write_upload", upload_id, [bytes([window]) * 100])
        pause(chance)
        rpc(client, "finish_upload", upload_id)

    def submit(dependencies: tuple[str, ...]) -> Callable[[], None]:
        def run() -> None:
            pause(chance, 0.01)
            (info,) = client.submit_tasks(
                session_id, [TaskDefinition(payload, dependencies)]
            )
            submitted.append(info.task_id)

        return run

    errors = run_threads(
        complete_dependency, submit((pending,)), submit((completed, pending))
    )
    queue = queued_ids(client, session_id)
    observed = {
        "errors": errors,
        "counts": sorted(queue.count(task_id) for task_id in submitted),
        "statuses": sorted(
            client.get_task(session_id, task_id).status.name for task_id in submitted
        ),
        "stray": [task_id for task_id in queue if task_id not in submitted],
    }
    client.cancel_session(session_id)
    return observed


def test_transfer_racing_submits_queues_once(race_client: Any) -> None:
    rounds = [race_round(race_client, seed) for seed in range(RACE_ROUNDS)]

    assert [r["errors"] for r in rounds] == [[]] * RACE_ROUNDS
    assert [r["counts"] for r in rounds] == [[1, 1]] * RACE_ROUNDS
    assert [r["statuses"] for r in rounds] == [["SUBMITTED", "SUBMITTED"]] * RACE_ROUNDS
    assert [r["stray"] for r in rounds] == [[]] * RACE_ROUNDS


def cancel_race_round(client: Any, seed: int) -> dict[str, Any]:
    """Cancel a session while the upload of a dependency finishes; return what the
    round observed."""
    chance = random.Random(seed)
    session_id = client.create_session([PARTITION])
    (pending,) = new_ids(client, session_id, 1)
    payload = new_payload(client, session_id)
    (info,) = client.submit_tasks(session_id, [TaskDefinition(payload, (pending,))])
    upload_id = rpc(client, "open_upload", session_id, pending)
    rpc(client, "write_upload", upload_id, [b"x" * 100])

    def finish() -> None:
        pause(chance)
        try:
            rpc(client, "finish_upload", upload_id)
        except FailedPreconditionError:
            pass  # the cancel came first, and the upload was rejected

    def cancel() -> None:
        pause(chance)
        client.cancel_session(session_id)

    errors = run_threads(finish, cancel)
    return {
        "errors": errors,
        "status": client.get_task(session_id, info.task_id).status,
        "queued": queued_ids(client, session_id),
    }


def test_cancel_racing_upload_leaves_nothing_queued(race_client: Any) -> None:
    rounds = [cancel_race_round(race_client, seed) for seed in range(CANCEL_ROUNDS)]

    assert [r["errors"] for r in rounds] == [[]] * CANCEL_ROUNDS
    assert [r["status"] for r in rounds] == [TaskStatus.CANCELLED] * CANCEL_ROUNDS
    assert [r["queued"] for r in rounds] == [[]] * CANCEL_ROUNDS


# Cancelling a session with work in every state


def submit(
    client: Any,
    session_id: str,
    dependencies: tuple[str, ...] = (),
    outputs: tuple[str, ...] = (),
) -> str:
    payload = new_payload(client, session_id)
    (info,) = client.submit_tasks(
        session_id, [TaskDefinition(payload, dependencies, outputs)]
    )
    return info.task_id


class Watcher:
    """A thread that follows watch_results and keeps the last status of each id."""

    def __init__(self, client: Any, session_id: str, result_ids: list[str]) -> None:
        self.last: dict[str, ResultStatus] = {}
        self.changes: list[StatusChange] = []
        self.started = threading.Event()
        self.error: BaseException | None = None
        self._count = len(result_ids)
        self._stream = client.watch_results(session_id, result_ids)
        self._thread = threading.Thread(target=self._follow)
        self._thread.start()

    def _follow(self) -> None:
        try:
            for change in self._stream:
                self.changes.append(change)
                self.last[change.result_id] = change.status
                if len(self.changes) == self._count:
                    self.started.set()
        except BaseException as error:  # noqa: BLE001 - reported to the test
            self.error = error
        finally:
            self.started.set()

    def join(self) -> bool:
        """Wait for the stream to end; return whether it did."""
        self._thread.join(timeout=JOIN_SECONDS)
        return not self._thread.is_alive()


@pytest.fixture(scope="module")
def cancelled_session(race_client: Any) -> dict[str, Any]:
    """A session cancelled with a completed, a dispatched, a queued and a waiting
    task, and watchers started before the cancel; returns its ids and watchers."""
    client = race_client
    session_id = client.create_session([PARTITION])
    waiting_input, *outputs = new_ids(client, session_id, 5)
    done_output, running_output, queued_output, waiting_output = outputs

    done = submit(client, session_id, outputs=(done_output,))
    (task,) = client.acquire_tasks(PARTITION, WORKER, max_tasks=10)
    client.complete_task(session_id, done, task.lease_id, {done_output: b"done"})
    running = submit(client, session_id, outputs=(running_output,))
    (lease,) = client.acquire_tasks(PARTITION, WORKER, max_tasks=10)
    client.upload_result_data(
        session_id, running_output, b"staged", task_id=running, lease_id=lease.lease_id
    )
    queued = submit(client, session_id, outputs=(queued_output,))
    waiting = submit(client, session_id, (waiting_input,), (waiting_output,))

    watched = [waiting_input, *outputs]
    watchers = [
        Watcher(client, session_id, watched),
        Watcher(client, session_id, watched[::-1]),
        Watcher(client, session_id, [waiting_input, done_output]),
    ]
    for watcher in watchers:
        watcher.started.wait(JOIN_SECONDS)

    client.cancel_session(session_id)
    return {
        "session_id": session_id,
        "lease": lease,
        "tasks": {
            "done": done,
            "running": running,
            "queued": queued,
            "waiting": waiting,
        },
        "results": {
            "waiting_input": waiting_input,
            "done_output": done_output,
            "running_output": running_output,
            "queued_output": queued_output,
            "waiting_output": waiting_output,
        },
        "watchers": watchers,
    }


def test_cancel_session_aborts_created_results(
    race_client: Any, cancelled_session: dict[str, Any]
) -> None:
    session_id = cancelled_session["session_id"]
    statuses = {
        name: race_client.get_result(session_id, result_id).status
        for name, result_id in cancelled_session["results"].items()
    }

    assert statuses == {
        "waiting_input": ResultStatus.ABORTED,
        "done_output": ResultStatus.COMPLETED,
        "running_output": ResultStatus.ABORTED,
        "queued_output": ResultStatus.ABORTED,
        "waiting_output": ResultStatus.ABORTED,
    }


def test_cancel_session_cancels_unfinished_tasks(
    race_client: Any, cancelled_session: dict[str, Any]
) -> None:
    session_id = cancelled_session["session_id"]
    statuses = {
        name: race_client.get_task(session_id, task_id).status
        for name, task_id in cancelled_session["tasks"].items()
    }

    assert statuses == {
        "done": TaskStatus.COMPLETED,
        "running": TaskStatus.CANCELLED,
        "queued": TaskStatus.CANCELLED,
        "waiting": TaskStatus.CANCELLED,
    }
    assert queued_ids(race_client, session_id) == []


def test_cancel_session_keeps_only_completed_data(
    race_client: Any, cancelled_session: dict[str, Any]
) -> None:
    session_id = cancelled_session["session_id"]
    done_output = cancelled_session["results"]["done_output"]
    kept = {
        record.opaque_id
        for record in race_client.list_results(session_id=session_id).items
        if record.status == ResultStatus.COMPLETED
    }

    assert set(race_client.stored_ids(f"sessions/{session_id}/")) == kept
    assert race_client.read_result_data(session_id, done_output) == b"done"


def test_cancel_session_watchers_see_aborts(
    cancelled_session: dict[str, Any],
) -> None:
    results = cancelled_session["results"]
    expected = {
        result_id: ResultStatus.COMPLETED
        if name == "done_output"
        else ResultStatus.ABORTED
        for name, result_id in results.items()
    }
    watchers = cancelled_session["watchers"]

    ended = [watcher.join() for watcher in watchers]

    assert ended == [True, True, True]
    assert [watcher.error for watcher in watchers] == [None, None, None]
    assert watchers[0].last == expected
    assert watchers[1].last == expected
    assert watchers[2].last == {
        results["waiting_input"]: ResultStatus.ABORTED,
        results["done_output"]: ResultStatus.COMPLETED,
    }


def test_cancelled_session_rejects_client_upload(
    race_client: Any, cancelled_session: dict[str, Any]
) -> None:
    session_id = cancelled_session["session_id"]
    result_id = cancelled_session["results"]["waiting_input"]

    with pytest.raises(FailedPreconditionError) as caught:
        race_client.upload_result_data(session_id, result_id, b"late")

    assert session_id in caught.value.message
    assert race_client.open_uploads() == 0


def test_cancelled_session_rejects_worker_upload(
    race_client: Any, cancelled_session: dict[str, Any]
) -> None:
    session_id = cancelled_session["session_id"]
    running = cancelled_session["tasks"]["running"]
    lease = cancelled_session["lease"]
    output = cancelled_session["results"]["running_output"]

    with pytest.raises(FailedPreconditionError) as caught:
        race_client.upload_result_data(
            session_id, output, b"late", task_id=running, lease_id=lease.lease_id
        )

    assert session_id in caught.value.message


def test_cancelled_session_rejects_completion(
    race_client: Any, cancelled_session: dict[str, Any]
) -> None:
    session_id = cancelled_session["session_id"]
    running = cancelled_session["tasks"]["running"]
    lease = cancelled_session["lease"]
    output = cancelled_session["results"]["running_output"]

    with pytest.raises(FailedPreconditionError) as caught:
        race_client.complete_task(session_id, running, lease.lease_id, {output: b"x"})

    assert running in caught.value.message
    assert race_client.get_result(session_id, output).status == ResultStatus.ABORTED


def test_cancelled_session_rejects_import(
    race_client: Any, cancelled_session: dict[str, Any]
) -> None:
    session_id = cancelled_session["session_id"]
    result_id = cancelled_session["results"]["waiting_output"]
    key = import_key(race_client, random.Random(0))

    with pytest.raises(FailedPreconditionError) as caught:
        race_client.import_results_data(session_id, [(result_id, key)])

    assert session_id in caught.value.message
