"""TasksTable: the Ray actor that owns one shard of the tasks."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

import ray

from results_service import filters
from results_service.records import QueuedTask, RecordList, TaskRecord, TaskStatus
from results_service.settings import ServiceSettings
from results_service.state.tasks_shard import Ending, Lease, TasksShard

logger = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=0)
class TasksTable:
    """A shell around `TasksShard`; every method is one atomic step on the shard."""

    def __init__(self, shard: int, settings: ServiceSettings) -> None:
        self.state = TasksShard(shard)
        self.lease_seconds = settings.lease_seconds
        logger.info("TasksTable shard %d started", shard)

    def ping(self) -> int:
        return self.state.shard

    def insert(self, records: Sequence[TaskRecord]) -> None:
        self.state.insert(records)

    def remove(self, task_ids: Sequence[str]) -> None:
        self.state.remove(task_ids)

    def get_many(
        self, session_id: str | None, task_ids: Sequence[str]
    ) -> list[TaskRecord]:
        return RecordList(self.state.get_many(session_id, task_ids))

    def find(self, session_id: str, task_id: str) -> TaskRecord:
        return self.state.find(session_id, task_id)

    def remove_dependencies(
        self,
        removals: Iterable[tuple[str, Sequence[str]]],
        finalize: Sequence[str] = (),
    ) -> list[QueuedTask]:
        return RecordList(self.state.remove_dependencies(removals, finalize))

    def mark_queued(self, submitted: Sequence[str], paused: Sequence[str]) -> list[str]:
        return self.state.mark_queued(submitted, paused)

    def dispatch(
        self, messages: Sequence[QueuedTask], worker_id: str
    ) -> list[tuple[TaskRecord, Lease]]:
        return self.state.dispatch(messages, worker_id, self.lease_seconds)

    def start(self, session_id: str, task_id: str, lease_id: str) -> TaskRecord:
        return self.state.start(session_id, task_id, lease_id)

    def renew(self, session_id: str, task_id: str, lease_id: str) -> float:
        return self.state.renew(session_id, task_id, lease_id, self.lease_seconds)

    def check_lease(self, session_id: str, task_id: str, lease_id: str) -> TaskRecord:
        return self.state.check_lease(session_id, task_id, lease_id)

    def stage_output(
        self,
        session_id: str,
        task_id: str,
        lease_id: str,
        result_id: str,
        stored: tuple[bytes, int],
    ) -> bytes | None:
        return self.state.stage_output(session_id, task_id, lease_id, result_id, stored)

    def begin_completion(
        self, session_id: str, task_id: str, lease_id: str, inline_ids: Sequence[str]
    ) -> Ending:
        return self.state.begin_completion(session_id, task_id, lease_id, inline_ids)

    def end(
        self, task_ids: Sequence[str], status: TaskStatus, error: str = ""
    ) -> list[TaskRecord]:
        """Set a final status on tasks and return the records found."""
        ended = [self.state.end(task_id, status, error) for task_id in task_ids]
        return [record for record in ended if record is not None]

    def start_retry(self, record: TaskRecord) -> list[QueuedTask]:
        """Insert the retry of a failed task and claim it, as it is ready at once."""
        self.state.insert([record])
        return self.state.remove_dependencies([], [record.task_id])

    def fail(
        self, session_id: str, task_id: str, lease_id: str, error: str, retry: bool
    ) -> Ending:
        return self.state.fail(session_id, task_id, lease_id, error, retry)

    def expire_leases(
        self,
    ) -> tuple[list[QueuedTask], list[bytes], list[TaskRecord], list[bytes]]:
        """Time out overdue tasks, then requeue those whose lease expired."""
        now = time.time()
        timed_out, timed_out_objects = self.state.time_out(now)
        expired, objects = self.state.expire_leases(now)
        return expired, objects, timed_out, timed_out_objects

    def cancel(
        self, session_id: str, task_ids: Sequence[str] | None, error: str
    ) -> tuple[list[TaskRecord], list[bytes]]:
        return self.state.cancel(session_id, task_ids, error)

    def fail_waiting(self, task_ids: Sequence[str], error: str) -> list[TaskRecord]:
        return self.state.fail_waiting(task_ids, error)

    def set_paused(self, task_ids: Sequence[str], paused: bool) -> None:
        self.state.set_paused(task_ids, paused)

    def delete_session(self, session_id: str) -> int:
        return self.state.delete_session(session_id)

    def list(
        self,
        filter_groups: filters.Filters | None,
        sort: filters.Sort | None,
        limit: int,
        session_id: str | None = None,
    ) -> tuple[int, list[TaskRecord]]:
        predicate = filters.compile_filters(filter_groups, filters.TASK_FIELDS)
        total, records = self.state.list(predicate, sort, limit, session_id)
        return total, RecordList(records)

    def count(self) -> int:
        return len(self.state.tasks)
