"""State of one TasksTable shard: task records, remaining dependencies and leases.

A task becomes ready when its remaining dependencies run out while it is CREATING
or PENDING. The call that removes the last dependency claims the task and returns it,
and no later call can claim it again, so a ready task is queued exactly once however
completions and submissions interleave.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence

from results_service import filters
from results_service.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    NotFoundError,
)
from results_service.ids import new_id
from results_service.records import (
    FINAL_TASK_STATUSES,
    RUNNING_TASK_STATUSES,
    WAITING_TASK_STATUSES,
    QueuedTask,
    TaskRecord,
    TaskStatus,
    pickled_as_row,
    without_ids,
)
from results_service.transitions import move_task

logger = logging.getLogger(__name__)


@pickled_as_row
@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """A worker's hold on a dispatched task; completions must present its id."""

    task_id: str
    session_id: str
    lease_id: str
    expires_at: float


@pickled_as_row
@dataclasses.dataclass(frozen=True, slots=True)
class Ending:
    """Outcome of a finished or failed task, for the control plane to act on.

    Attributes:
        task: the task's record after the change.
        staged: output data uploaded by the worker: result id to (opaque id, size).
        retry: the new task that takes over, when a failure is retried.
    """

    task: TaskRecord
    staged: dict[str, tuple[bytes, int]]
    retry: TaskRecord | None = None


def queued(task: TaskRecord) -> QueuedTask:
    """Return the queue message of a task."""
    return QueuedTask(
        task.task_id, task.session_id, task.options.partition_id, task.options.priority
    )


class TasksShard:
    """Tasks owned by one shard, indexed by id and by session.

    Attributes:
        tasks: records by task id.
        by_session: ids of each session's tasks.
        claimed: ready tasks handed to the queue and not yet dispatched or marked.
        staged: output data uploaded under a lease and not yet committed.
    """

    def __init__(self, shard: int) -> None:
        self.shard = shard
        self.tasks: dict[str, TaskRecord] = {}
        self.by_session: dict[str, set[str]] = collections.defaultdict(set)
        self.claimed: set[str] = set()
        self.staged: dict[str, dict[str, tuple[bytes, int]]] = {}

    def find(self, session_id: str, task_id: str) -> TaskRecord:
        """Return a task of the session, or raise NotFoundError."""
        record = self.tasks.get(task_id)
        if record is None or record.session_id != session_id:
            raise NotFoundError(
                f"task {task_id} was not found in session {session_id}",
                (task_id, session_id),
            )
        return record

    def get_many(
        self, session_id: str | None, task_ids: Sequence[str]
    ) -> list[TaskRecord]:
        """Return the tasks found, skipping unknown ids and other sessions'."""
        found = []
        for task_id in task_ids:
            record = self.tasks.get(task_id)
            if record is not None and (
                session_id is None or record.session_id == session_id
            ):
                found.append(record)
        return found

    # Submission and readiness

    def insert(self, records: Sequence[TaskRecord]) -> None:
        """Add new tasks; raise AlreadyExistsError, adding none, if an id is taken."""
        seen: set[str] = set()
        taken = []
        for record in records:
            if record.task_id in self.tasks or record.task_id in seen:
                taken.append(record.task_id)
            seen.add(record.task_id)
        if taken:
            raise AlreadyExistsError(
                f"task ids already exist or repeat in the batch: {taken[:10]}",
                tuple(taken),
            )
        for record in records:
            self.tasks[record.task_id] = record
            self.by_session[record.session_id].add(record.task_id)

    def remove(self, task_ids: Iterable[str]) -> None:
        """Remove tasks, to roll back a submission that failed."""
        for task_id in task_ids:
            record = self.tasks.pop(task_id, None)
            if record is not None:
                self.by_session[record.session_id].discard(task_id)
                self.claimed.discard(task_id)
                self.staged.pop(task_id, None)

    def remove_dependencies(
        self,
        removals: Iterable[tuple[str, Sequence[str]]],
        finalize: Sequence[str] = (),
    ) -> list[QueuedTask]:
        """Remove completed results from tasks' remaining dependencies.

        `removals` contains (task_id, result_ids) pairs. Unknown tasks are skipped,
        because a submission may have been rolled back. Tasks in `finalize` finished
        their submission and go from CREATING to PENDING. Returns the tasks that became
        ready in this call, each claimed so that no other call returns it.
        """
        touched: list[TaskRecord] = []
        for task_id, result_ids in removals:
            record = self.tasks.get(task_id)
            if record is None:
                continue
            record.remaining = without_ids(record.remaining, result_ids)
            touched.append(record)
        for task_id in finalize:
            record = self.tasks.get(task_id)
            if record is None:
                continue
            if record.status == TaskStatus.CREATING:
                move_task(record, TaskStatus.PENDING)
            touched.append(record)

        ready = []
        for record in touched:
            if (
                not record.remaining
                and record.status in WAITING_TASK_STATUSES
                and record.task_id not in self.claimed
            ):
                self.claimed.add(record.task_id)
                ready.append(queued(record))
        return ready

    def mark_queued(self, submitted: Sequence[str], paused: Sequence[str]) -> list[str]:
        """Mark claimed tasks SUBMITTED (in the queue) or PAUSED (held back).

        Returns the ids of tasks that ended or were removed since they were claimed,
        such as by a cancel that emptied the queue before their push landed; the
        caller removes their queue messages.
        """
        now = time.time()
        gone: list[str] = []
        for target, task_ids in (
            (TaskStatus.SUBMITTED, submitted),
            (TaskStatus.PAUSED, paused),
        ):
            for task_id in task_ids:
                record = self.tasks.get(task_id)
                self.claimed.discard(task_id)
                if record is None or record.status in FINAL_TASK_STATUSES:
                    gone.append(task_id)
                    continue
                # A worker may have dispatched the task between the push and this mark.
                if record.status in WAITING_TASK_STATUSES or (
                    record.status in (TaskStatus.SUBMITTED, TaskStatus.PAUSED)
                    and record.status != target
                ):
                    move_task(record, target)
                    record.submitted_at = record.submitted_at or now
        return gone

    # Dispatch and leases

    def dispatch(
        self, messages: Sequence[QueuedTask], worker_id: str, lease_seconds: float
    ) -> list[tuple[TaskRecord, Lease]]:
        """Give queued tasks to a worker under new leases.

        Messages of tasks that are no longer dispatchable (cancelled, deleted, or
        already running) are dropped. Returns the tasks with their leases.
        """
        now = time.time()
        granted = []
        for message in messages:
            record = self.tasks.get(message.task_id)
            if record is None:
                continue
            # The queue hands out no task of a paused session, so a PAUSED task here
            # was resumed by the queue before this shard moved it back to SUBMITTED.
            dispatchable = record.status in (
                TaskStatus.SUBMITTED,
                TaskStatus.PAUSED,
            ) or (
                record.status in WAITING_TASK_STATUSES
                and record.task_id in self.claimed
            )
            if not dispatchable:
                logger.debug(
                    "dropping queue message of task %s in status %s",
                    record.task_id,
                    record.status.name,
                )
                continue
            self.claimed.discard(record.task_id)
            record.status = TaskStatus.DISPATCHED
            record.submitted_at = record.submitted_at or now
            record.worker_id = worker_id
            record.lease_id = new_id()
            record.lease_expires_at = now + lease_seconds
            record.dispatched_at = now
            lease = Lease(
                record.task_id,
                record.session_id,
                record.lease_id,
                record.lease_expires_at,
            )
            granted.append((record, lease))
        return granted

    def check_lease(self, session_id: str, task_id: str, lease_id: str) -> TaskRecord:
        """Return a running task if the lease is its current one, else raise."""
        record = self.find(session_id, task_id)
        if record.status not in RUNNING_TASK_STATUSES or record.lease_id != lease_id:
            raise FailedPreconditionError(
                f"task {task_id} is {record.status.name} and lease {lease_id} is not "
                "its current lease; the lease expired or the task was cancelled, so "
                "stop working on it",
                (task_id, lease_id),
            )
        return record

    def start(self, session_id: str, task_id: str, lease_id: str) -> TaskRecord:
        """Record that the worker started the task."""
        record = self.check_lease(session_id, task_id, lease_id)
        if record.status == TaskStatus.DISPATCHED:
            move_task(record, TaskStatus.PROCESSING)
            record.started_at = time.time()
        return record

    def renew(
        self, session_id: str, task_id: str, lease_id: str, lease_seconds: float
    ) -> float:
        """Extend a lease and return its new expiry time."""
        record = self.check_lease(session_id, task_id, lease_id)
        record.lease_expires_at = time.time() + lease_seconds
        return record.lease_expires_at

    def stage_output(
        self,
        session_id: str,
        task_id: str,
        lease_id: str,
        result_id: str,
        stored: tuple[bytes, int],
    ) -> bytes | None:
        """Keep output data uploaded by a worker until the task completes.

        Returns the opaque id of data staged earlier for the same output, which the
        caller deletes.
        """
        record = self.check_lease(session_id, task_id, lease_id)
        if result_id not in record.expected_output_ids:
            raise FailedPreconditionError(
                f"result {result_id} is not an expected output of task {task_id}",
                (result_id, task_id),
            )
        previous = self.staged.setdefault(task_id, {}).get(result_id)
        self.staged[task_id][result_id] = stored
        return previous[0] if previous else None

    def begin_completion(
        self, session_id: str, task_id: str, lease_id: str, inline_ids: Sequence[str]
    ) -> Ending:
        """Move a running task to PROCESSED, so its lease can no longer expire, and
        return its staged outputs for the caller to commit.

        Every expected output must be either staged or among `inline_ids`, the
        outputs whose data comes with the completion; otherwise nothing changes.
        """
        record = self.check_lease(session_id, task_id, lease_id)
        staged = self.staged.get(task_id, {})
        expected = set(record.expected_output_ids)
        unexpected = sorted(set(inline_ids) - expected)
        if unexpected:
            raise FailedPreconditionError(
                f"results {unexpected[:10]} are not expected outputs of task {task_id}",
                (task_id, *unexpected),
            )
        missing = sorted(expected - set(staged) - set(inline_ids))
        if missing:
            raise FailedPreconditionError(
                f"task {task_id} cannot complete without its outputs {missing[:10]}; "
                "upload them first, or fail the task",
                (task_id, *missing),
            )
        move_task(record, TaskStatus.PROCESSED)
        return Ending(record, dict(self.staged.pop(task_id, {})))

    def end(
        self, task_id: str, status: TaskStatus, error: str = ""
    ) -> TaskRecord | None:
        """Set a final status on a task that is being completed or failed."""
        record = self.tasks.get(task_id)
        if record is None:
            return None
        move_task(record, status)
        record.ended_at = time.time()
        record.error = error
        record.lease_id = ""
        record.lease_expires_at = None
        return record

    def fail(
        self, session_id: str, task_id: str, lease_id: str, error: str, retry: bool
    ) -> Ending:
        """End a running task after a worker's failure.

        Within max_retries the task is RETRIED and a new task record, ready at once,
        takes over its outputs; the caller inserts it in its own shard. Otherwise the
        task is in ERROR. Staged outputs are returned for deletion.
        """
        record = self.check_lease(session_id, task_id, lease_id)
        staged = dict(self.staged.pop(task_id, {}))
        if retry and record.retries < record.options.max_retries:
            self.end(task_id, TaskStatus.RETRIED, error)
            successor = TaskRecord(
                task_id=new_id(),
                session_id=record.session_id,
                status=TaskStatus.CREATING,
                payload_id=record.payload_id,
                data_dependencies=record.data_dependencies,
                expected_output_ids=record.expected_output_ids,
                options=record.options,
                remaining=(),
                retry_of=record.task_id,
                retries=record.retries + 1,
                created_at=time.time(),
            )
            return Ending(record, staged, successor)
        self.end(task_id, TaskStatus.ERROR, error)
        return Ending(record, staged)

    def time_out(self, now: float) -> tuple[list[TaskRecord], list[bytes]]:
        """End running tasks in TIMEOUT when they ran longer than max_duration since
        dispatch, or when their lease expired and earlier leases already expired
        max_retries times.

        Returns the tasks and their staged objects to delete; the caller aborts the
        tasks' outputs.
        """
        ended = []
        objects: list[bytes] = []
        for record in self.tasks.values():
            if record.status not in RUNNING_TASK_STATUSES:
                continue
            over_duration = (
                record.dispatched_at is not None
                and now - record.dispatched_at > record.options.max_duration
            )
            lease_expired = (
                record.lease_expires_at is not None and record.lease_expires_at < now
            )
            out_of_leases = (
                lease_expired and record.expirations >= record.options.max_retries
            )
            if not (over_duration or out_of_leases):
                continue
            reason = (
                f"ran longer than max_duration {record.options.max_duration} s"
                if over_duration
                else f"lost its lease {record.expirations + 1} times"
            )
            logger.warning("task %s timed out: it %s", record.task_id, reason)
            objects.extend(
                stored[0] for stored in self.staged.pop(record.task_id, {}).values()
            )
            self.end(record.task_id, TaskStatus.TIMEOUT, f"the task {reason}")
            ended.append(record)
        return ended, objects

    def expire_leases(self, now: float) -> tuple[list[QueuedTask], list[bytes]]:
        """Return tasks whose lease expired to SUBMITTED.

        Returns their queue messages and the staged objects to delete.
        """
        expired = []
        objects: list[bytes] = []
        for record in self.tasks.values():
            if (
                record.status in RUNNING_TASK_STATUSES
                and record.lease_expires_at is not None
                and record.lease_expires_at < now
            ):
                logger.warning(
                    "lease %s of task %s held by worker %s expired; requeueing it",
                    record.lease_id,
                    record.task_id,
                    record.worker_id,
                )
                move_task(record, TaskStatus.SUBMITTED)
                record.lease_id = ""
                record.lease_expires_at = None
                record.worker_id = ""
                record.expirations += 1
                objects.extend(
                    stored[0] for stored in self.staged.pop(record.task_id, {}).values()
                )
                expired.append(queued(record))
        return expired, objects

    # Cancellation and sessions

    def cancel(
        self, session_id: str, task_ids: Iterable[str] | None, error: str
    ) -> tuple[list[TaskRecord], list[bytes]]:
        """Cancel unfinished tasks: given ids, or every task of the session.

        Tasks already final are skipped. Returns the cancelled tasks and the staged
        objects to delete.
        """
        ids = self.by_session.get(session_id, set()) if task_ids is None else task_ids
        cancelled = []
        objects: list[bytes] = []
        for task_id in list(ids):
            record = self.tasks.get(task_id)
            if record is None or record.session_id != session_id:
                continue
            if record.status in FINAL_TASK_STATUSES:
                continue
            self.claimed.discard(task_id)
            objects.extend(
                stored[0] for stored in self.staged.pop(task_id, {}).values()
            )
            self.end(task_id, TaskStatus.CANCELLED, error)
            cancelled.append(record)
        return cancelled, objects

    def fail_waiting(self, task_ids: Iterable[str], error: str) -> list[TaskRecord]:
        """Put waiting tasks whose dependency can never complete in ERROR."""
        failed = []
        for task_id in task_ids:
            record = self.tasks.get(task_id)
            if record is None or record.status not in (
                *WAITING_TASK_STATUSES,
                TaskStatus.PAUSED,
                TaskStatus.SUBMITTED,
            ):
                continue
            self.claimed.discard(task_id)
            self.end(task_id, TaskStatus.ERROR, error)
            failed.append(record)
        return failed

    def set_paused(self, task_ids: Iterable[str], paused: bool) -> None:
        """Move queued tasks to PAUSED, or paused tasks back to SUBMITTED."""
        source, target = (
            (TaskStatus.SUBMITTED, TaskStatus.PAUSED)
            if paused
            else (TaskStatus.PAUSED, TaskStatus.SUBMITTED)
        )
        for task_id in task_ids:
            record = self.tasks.get(task_id)
            if record is not None and record.status == source:
                move_task(record, target)

    def delete_session(self, session_id: str) -> int:
        """Remove every task of the session and return how many there were."""
        ids = self.by_session.pop(session_id, set())
        self.remove(ids)
        # `remove` recreates the session's entry of the defaultdict, so drop it again.
        self.by_session.pop(session_id, None)
        return len(ids)

    def list(
        self,
        predicate: filters.Predicate,
        sort: filters.Sort | None,
        limit: int,
        session_id: str | None = None,
    ) -> tuple[int, list[TaskRecord]]:
        """Return the number of matching tasks and the first `limit` in order."""
        pool: Iterable[TaskRecord]
        if session_id is not None:
            pool = (self.tasks[i] for i in self.by_session.get(session_id, ()))
        else:
            pool = self.tasks.values()
        matching = [record for record in pool if predicate(record)]
        return len(matching), filters.select_page(matching, sort, "task_id", 0, limit)
