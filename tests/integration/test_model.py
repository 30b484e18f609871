"""Model-based test of the service: random sequences of RPCs against the real
service and against a reference model in plain Python, compared after every step.

The model holds one session: its status, its results (status, data, owner), its
tasks (status, remaining dependencies, lease, staged outputs) and the queue of its
partition in dispatch order, with the tasks parked while the session is paused.
Each hypothesis example runs in a new session of a service with a partition of its
own, and the session is deleted at the end of the example.

Clients upload and import only into results that no task owns, because a task's
outputs come from that task. A client upload into an owned output is left out.

The run is bounded for CI. Set RESULTS_SERVICE_MODEL_EXAMPLES to run more examples,
for example `RESULTS_SERVICE_MODEL_EXAMPLES=500 pytest tests/integration/test_model.py`
(about a second per example on two cores).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from results_service.errors import FailedPreconditionError, ServiceError
from results_service.records import (
    ResultCreate,
    ResultStatus,
    SessionStatus,
    TaskDefinition,
    TaskStatus,
)

PARTITION = "model"
WORKER = "model-worker"
MAX_RESULTS = 24
MAX_TASKS = 12
R = ResultStatus
T = TaskStatus
S = SessionStatus
ACCEPTING_SUBMISSIONS = {S.RUNNING, S.PAUSED}
ACCEPTING_DATA = {S.RUNNING, S.PAUSED, S.CLOSED}
FINAL_TASKS = {T.COMPLETED, T.ERROR, T.CANCELLED, T.RETRIED}
WAITING_TASKS = {T.CREATING, T.PENDING}
RUNNING_TASKS = {T.DISPATCHED, T.PROCESSING}


def example_count() -> int:
    return int(os.environ.get("RESULTS_SERVICE_MODEL_EXAMPLES", "25"))


@dataclasses.dataclass
class ModelResult:
    status: ResultStatus
    data: bytes | None = None
    owner: str = ""  # the task that produces it, or empty
    manual_deletion: bool = False


@dataclasses.dataclass
class ModelTask:
    status: TaskStatus
    priority: int
    max_retries: int
    outputs: tuple[str, ...]
    remaining: set[str]
    payload: str = ""
    dependencies: tuple[str, ...] = ()
    retries: int = 0
    lease: str = ""
    staged: dict[str, bytes] = dataclasses.field(default_factory=dict)


class Model:
    """The expected state of one session, changed by the same events as the service.

    Attributes:
        status: the session's status.
        results, tasks: by id, in creation order.
        queue: (-priority, arrival, task_id) entries of the partition's queue.
        parked: tasks held back while the queue treats the session as paused, in
            arrival order.
        queue_paused: whether the queue parks the session's ready tasks; a pause
            sets it, a resume or a cancel clears it, and a close keeps it.
    """

    def __init__(self) -> None:
        self.status = S.RUNNING
        self.results: dict[str, ModelResult] = {}
        self.tasks: dict[str, ModelTask] = {}
        self.queue: list[tuple[int, int, str]] = []
        self.parked: list[str] = []
        self.queue_paused = False
        self.arrivals = 0

    def queued_order(self) -> list[str]:
        return [task_id for _, _, task_id in sorted(self.queue)]

    def push(self, task_id: str) -> None:
        """Queue a ready task, or park it while the session is paused."""
        task = self.tasks[task_id]
        if self.queue_paused:
            task.status = T.PAUSED
            self.parked.append(task_id)
            return
        task.status = T.SUBMITTED
        self.arrivals += 1
        self.queue.append((-task.priority, self.arrivals, task_id))

    def drop_from_queue(self, task_id: str) -> None:
        self.queue = [entry for entry in self.queue if entry[2] != task_id]
        if task_id in self.parked:
            self.parked.remove(task_id)

    def complete(self, result_id: str, data: bytes) -> None:
        """Complete a result and queue the waiting tasks left with no dependency."""
        result = self.results[result_id]
        result.status = R.COMPLETED
        result.data = data
        for task_id, task in self.tasks.items():
            if result_id not in task.remaining:
                continue
            task.remaining.discard(result_id)
            if not task.remaining and task.status in WAITING_TASKS:
                self.push(task_id)

    def abort_outputs(self, result_ids: tuple[str, ...]) -> None:
        """Abort CREATED results, fail the tasks waiting on them, and so on."""
        pending = list(result_ids)
        while pending:
            result_id = pending.pop(0)
            if self.results[result_id].status != R.CREATED:
                continue
            self.results[result_id].status = R.ABORTED
            for task_id, task in self.tasks.items():
                if result_id in task.remaining and task.status in (
                    *WAITING_TASKS,
                    T.PAUSED,
                    T.SUBMITTED,
                ):
                    task.status = T.ERROR
                    self.drop_from_queue(task_id)
                    pending.extend(task.outputs)

    def dispatchable(self) -> list[str]:
        return [
            task_id
            for task_id, task in self.tasks.items()
            if task.status == T.DISPATCHED
        ]


class ServiceModel(RuleBasedStateMachine):
    """A state machine that drives the service and the model with the same steps."""

    client: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.session_id = ""

    @initialize()
    def start_session(self) -> None:
        """Create the example's session with two CREATED results and a COMPLETED one."""
        self.session_id = self.client.create_session([PARTITION])
        for record in self.client.create_results_metadata(self.session_id, ["a", "b"]):
            self.model.results[record.result_id] = ModelResult(R.CREATED)
        (record,) = self.client.create_results(self.session_id, {"c": b"c"})
        self.model.results[record.result_id] = ModelResult(R.COMPLETED, b"c")

    def teardown(self) -> None:
        if self.session_id:
            self.client.delete_session(self.session_id)

    # Helpers

    def expect(self, error: type[ServiceError] | None, call: Any) -> Any:
        """Run `call`; check that it raises `error`, or succeeds when None."""
        if error is None:
            return call()
        with pytest.raises(error):
            call()
        return None

    def unowned(self) -> list[str]:
        return [
            result_id
            for result_id, result in self.model.results.items()
            if not result.owner
        ]

    # Results

    @precondition(lambda self: len(self.model.results) < MAX_RESULTS)
    @rule(
        data=st.one_of(st.none(), st.binary(max_size=16)),
        manual_deletion=st.booleans(),
    )
    def create_result(self, data: bytes | None, manual_deletion: bool) -> None:
        create = ResultCreate("r", manual_deletion, data)
        accepted = self.model.status in ACCEPTING_SUBMISSIONS
        method = (
            self.client.create_results_metadata
            if data is None
            else self.client.create_results
        )

        records = self.expect(
            None if accepted else FailedPreconditionError,
            lambda: method(self.session_id, [create]),
        )

        if records is None:
            return
        (record,) = records
        self.model.results[record.result_id] = ModelResult(
            R.CREATED if data is None else R.COMPLETED,
            data,
            manual_deletion=manual_deletion,
        )

    def data_error(self, result_id: str) -> type[ServiceError] | None:
        if self.model.status not in ACCEPTING_DATA:
            return FailedPreconditionError
        if self.model.results[result_id].status != R.CREATED:
            return FailedPreconditionError
        return None

    @precondition(lambda self: self.unowned())
    @rule(pick=st.data(), data=st.binary(max_size=16))
    def upload(self, pick: st.DataObject, data: bytes) -> None:
        result_id = pick.draw(st.sampled_from(self.unowned()))
        error = self.data_error(result_id)

        self.expect(
            error,
            lambda: self.client.upload_result_data(self.session_id, result_id, data),
        )

        if error is None:
            self.model.complete(result_id, data)

    @precondition(lambda self: self.unowned())
    @rule(pick=st.data(), data=st.binary(max_size=16))
    def import_data(self, pick: st.DataObject, data: bytes) -> None:
        result_id = pick.draw(st.sampled_from(self.unowned()))
        error = self.data_error(result_id)
        root = Path(self.client.settings.storage_url.removeprefix("file://"))
        key = f"imports/model-{uuid.uuid4().hex}"
        (root / "imports").mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)

        self.expect(
            error,
            lambda: self.client.import_results_data(
                self.session_id, [(result_id, key)]
            ),
        )

        if error is None:
            self.model.complete(result_id, data)

    @precondition(lambda self: self.model.results)
    @rule(pick=st.data())
    def delete_result_data(self, pick: st.DataObject) -> None:
        result_id = pick.draw(st.sampled_from(list(self.model.results)))
        result = self.model.results[result_id]
        accepted = result.status in (R.COMPLETED, R.DELETED)

        deleted = self.expect(
            None if accepted else FailedPreconditionError,
            lambda: self.client.delete_results_data(self.session_id, [result_id]),
        )

        if accepted:
            assert deleted == ([result_id] if result.status == R.COMPLETED else [])
            result.status = R.DELETED
            result.data = None

    # Tasks

    def draw_definition(
        self, pick: st.DataObject, earlier_outputs: list[str]
    ) -> TaskDefinition:
        """Draw one task: its payload, up to two dependencies, up to two new outputs
        and its options. Dependencies may be outputs of earlier tasks of the batch."""
        ids = list(self.model.results)
        waiting = [i for i in ids if self.model.results[i].status == R.CREATED]
        waiting += earlier_outputs
        # Inputs come from CREATED results half of the time, so that tasks wait and
        # chains of producers and consumers form.
        pool = pick.draw(st.sampled_from([ids, waiting] if waiting else [ids]))
        payload = pick.draw(st.sampled_from(ids), label="payload")
        dependencies = pick.draw(
            st.lists(st.sampled_from(pool), max_size=2, unique=True), label="deps"
        )
        outputs: list[str] = []
        new_outputs = pick.draw(st.integers(0, 2), label="outputs")
        if self.model.status in ACCEPTING_SUBMISSIONS and new_outputs:
            records = self.client.create_results_metadata(
                self.session_id, ["out"] * new_outputs
            )
            for record in records:
                self.model.results[record.result_id] = ModelResult(R.CREATED)
                outputs.append(record.result_id)
        options = {
            "priority": pick.draw(st.integers(1, 2), label="priority"),
            "max_retries": pick.draw(st.integers(0, 1), label="max_retries"),
        }
        return TaskDefinition(payload, tuple(dependencies), tuple(outputs), options)

    @precondition(lambda self: len(self.model.tasks) < MAX_TASKS)
    @rule(pick=st.data(), count=st.integers(1, 3))
    def submit(self, pick: st.DataObject, count: int) -> None:
        definitions: list[TaskDefinition] = []
        for _ in range(count):
            earlier = [o for d in definitions for o in d.expected_output_ids]
            definitions.append(self.draw_definition(pick, earlier))
        inputs = [
            result_id
            for d in definitions
            for result_id in (d.payload_id, *d.data_dependencies)
        ]
        unusable = [
            result_id
            for result_id in inputs
            if self.model.results[result_id].status in (R.ABORTED, R.DELETED)
        ]
        accepted = self.model.status in ACCEPTING_SUBMISSIONS and not unusable

        infos = self.expect(
            None if accepted else FailedPreconditionError,
            lambda: self.client.submit_tasks(self.session_id, definitions),
        )

        if not accepted:
            return
        ready = []
        for info, definition in zip(infos, definitions, strict=True):
            remaining = {
                result_id
                for result_id in (definition.payload_id, *definition.data_dependencies)
                if self.model.results[result_id].status != R.COMPLETED
            }
            options = definition.options or {}
            self.model.tasks[info.task_id] = ModelTask(
                T.PENDING,
                int(options["priority"]),  # type: ignore[call-overload]
                int(options["max_retries"]),  # type: ignore[call-overload]
                definition.expected_output_ids,
                remaining,
                definition.payload_id,
                definition.data_dependencies,
            )
            for output in definition.expected_output_ids:
                self.model.results[output].owner = info.task_id
            if not remaining:
                ready.append(info.task_id)
        # The service pushes the ready tasks of a request by priority, then in order.
        ready.sort(key=lambda task_id: -self.model.tasks[task_id].priority)
        for task_id in ready:
            self.model.push(task_id)

    @rule()
    def acquire(self) -> None:
        acquired = self.client.acquire_tasks(PARTITION, WORKER, max_tasks=1)

        expected = self.model.queued_order()[:1]
        assert [task.task_id for task in acquired] == expected
        for task in acquired:
            self.model.drop_from_queue(task.task_id)
            self.model.tasks[task.task_id].status = T.DISPATCHED
            self.model.tasks[task.task_id].lease = task.lease_id

    @precondition(lambda self: self.model.dispatchable())
    @rule(pick=st.data())
    def stage_output(self, pick: st.DataObject) -> None:
        task_id = pick.draw(st.sampled_from(self.model.dispatchable()))
        task = self.model.tasks[task_id]
        if not task.outputs:
            return
        output = pick.draw(st.sampled_from(task.outputs))
        data = pick.draw(st.binary(max_size=16))
        accepted = self.model.status in ACCEPTING_DATA

        self.expect(
            None if accepted else FailedPreconditionError,
            lambda: self.client.upload_result_data(
                self.session_id, output, data, task_id=task_id, lease_id=task.lease
            ),
        )

        if accepted:
            task.staged[output] = data

    @precondition(lambda self: self.model.dispatchable())
    @rule(pick=st.data())
    def complete(self, pick: st.DataObject) -> None:
        task_id = pick.draw(st.sampled_from(self.model.dispatchable()))
        task = self.model.tasks[task_id]
        inline = {
            output: pick.draw(st.binary(max_size=16))
            for output in task.outputs
            if output not in task.staged
        }
        # A completion that lands after a purge deletes the outputs' new data.
        purged = self.model.status == S.PURGED and bool(task.outputs)

        self.expect(
            FailedPreconditionError if purged else None,
            lambda: self.client.complete_task(
                self.session_id, task_id, task.lease, inline
            ),
        )

        written = {**task.staged, **inline}
        task.staged = {}
        task.lease = ""
        if purged:
            task.status = T.ERROR
            for output in task.outputs:
                self.model.results[output].status = R.DELETED
            return
        for output in task.outputs:
            self.model.complete(output, written[output])
        task.status = T.COMPLETED

    @precondition(lambda self: self.model.dispatchable())
    @rule(pick=st.data(), retry=st.booleans())
    def fail(self, pick: st.DataObject, retry: bool) -> None:
        task_id = pick.draw(st.sampled_from(self.model.dispatchable()))
        task = self.model.tasks[task_id]

        retry_id = self.client.fail_task(
            self.session_id, task_id, task.lease, "failed by the model", retry
        )

        task.staged = {}
        task.lease = ""
        if retry and task.retries < task.max_retries:
            assert retry_id is not None
            task.status = T.RETRIED
            self.model.tasks[retry_id] = ModelTask(
                T.CREATING,
                task.priority,
                task.max_retries,
                task.outputs,
                set(),
                task.payload,
                task.dependencies,
                retries=task.retries + 1,
            )
            for output in task.outputs:
                self.model.results[output].owner = retry_id
            self.model.push(retry_id)
            return
        assert retry_id is None
        task.status = T.ERROR
        self.model.abort_outputs(task.outputs)

    @precondition(lambda self: self.model.tasks)
    @rule(pick=st.data())
    def cancel_task(self, pick: st.DataObject) -> None:
        task_id = pick.draw(st.sampled_from(list(self.model.tasks)))
        task = self.model.tasks[task_id]
        unfinished = task.status not in FINAL_TASKS

        cancelled = self.client.cancel_tasks(self.session_id, [task_id])

        assert cancelled == ([task_id] if unfinished else [])
        if not unfinished:
            return
        task.status = T.CANCELLED
        task.staged = {}
        task.lease = ""
        self.model.drop_from_queue(task_id)
        self.model.abort_outputs(task.outputs)

    # Session

    def move_session(self, method: str, allowed: set[SessionStatus]) -> bool:
        accepted = self.model.status in allowed
        self.expect(
            None if accepted else FailedPreconditionError,
            lambda: getattr(self.client, method)(self.session_id),
        )
        return accepted

    @rule()
    def pause(self) -> None:
        if not self.move_session("pause_session", {S.RUNNING}):
            return
        self.model.status = S.PAUSED
        self.model.queue_paused = True
        for _, _, task_id in sorted(self.model.queue, key=lambda entry: entry[1]):
            self.model.tasks[task_id].status = T.PAUSED
            self.model.parked.append(task_id)
        self.model.queue = []

    @rule()
    def resume(self) -> None:
        if not self.move_session("resume_session", {S.PAUSED}):
            return
        self.model.status = S.RUNNING
        self.model.queue_paused = False
        parked, self.model.parked = self.model.parked, []
        for task_id in parked:
            self.model.push(task_id)

    # Closing, cancelling and purging end most activity of the session, so they are
    # drawn only once it has tasks, and then only one time in four.

    @precondition(lambda self: len(self.model.tasks) >= 2)
    @rule(gate=st.integers(0, 3))
    def close(self, gate: int) -> None:
        if gate:
            return
        if self.move_session("close_session", {S.RUNNING, S.PAUSED}):
            self.model.status = S.CLOSED

    @precondition(lambda self: len(self.model.tasks) >= 2)
    @rule(gate=st.integers(0, 3))
    def cancel_session(self, gate: int) -> None:
        if gate:
            return
        if not self.move_session("cancel_session", {S.RUNNING, S.PAUSED, S.CLOSED}):
            return
        self.model.status = S.CANCELLED
        self.model.queue = []
        self.model.parked = []
        self.model.queue_paused = False
        for task in self.model.tasks.values():
            if task.status not in FINAL_TASKS:
                task.status = T.CANCELLED
                task.staged = {}
                task.lease = ""
        for result in self.model.results.values():
            if result.status == R.CREATED:
                result.status = R.ABORTED

    @precondition(lambda self: len(self.model.tasks) >= 2)
    @rule(gate=st.integers(0, 3))
    def purge(self, gate: int) -> None:
        if gate:
            return
        if not self.move_session("purge_session", {S.CLOSED, S.CANCELLED}):
            return
        self.model.status = S.PURGED
        for result in self.model.results.values():
            if result.status == R.COMPLETED and not result.manual_deletion:
                result.status = R.DELETED
                result.data = None

    # Comparison after every step

    @invariant()
    def service_matches_model(self) -> None:
        if not self.session_id:
            return
        client = self.client
        session = client.get_session(self.session_id)
        results = client.list_results(session_id=self.session_id, page_size=100).items
        tasks = client.list_tasks(session_id=self.session_id, page_size=100).items
        queued = [
            message.task_id
            for message in client.queue_contents(PARTITION)
            if message.session_id == self.session_id
        ]

        assert session.status == self.model.status
        assert {r.result_id: r.status for r in results} == {
            result_id: result.status for result_id, result in self.model.results.items()
        }
        assert {t.task_id: t.status for t in tasks} == {
            task_id: task.status for task_id, task in self.model.tasks.items()
        }
        assert {
            t.task_id: set(t.remaining) for t in tasks if t.status == T.PENDING
        } == {
            task_id: task.remaining
            for task_id, task in self.model.tasks.items()
            if task.status == T.PENDING
        }
        assert queued == self.model.queued_order()
        for result_id, result in self.model.results.items():
            if result.status == R.COMPLETED:
                data = client.read_result_data(self.session_id, result_id)
                assert data == result.data, result_id


@pytest.fixture(scope="module")
def model_client(services: Any) -> Any:
    """A service whose only partition is used by this module."""
    return services.start(partitions=(PARTITION,))


def test_service_matches_model(model_client: Any) -> None:
    ServiceModel.client = model_client
    run_state_machine_as_test(
        ServiceModel,
        settings=settings(
            max_examples=example_count(),
            stateful_step_count=20,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
