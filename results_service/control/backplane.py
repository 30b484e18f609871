"""Calls from the control plane to the actors, batched per shard and fanned out.

The flows of the service build on three steps kept here: calling many shards in
parallel, resolving the tasks that waited on completed results, and aborting results
that can never complete along with the tasks that waited on them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from actors import ServiceActors
from results_service.errors import ServiceError, unwrap_ray_error
from results_service.ids import group_by_shard, group_items_by_shard, shard_of
from results_service.records import QueuedTask, RecordList, SessionRecord
from results_service.settings import ServiceSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def gather(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Await calls in parallel and raise the first service error among them.

    Every call is awaited before raising, so that the caller can roll back knowing
    that nothing is still running.
    """
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if errors:
        raise unwrap_ray_error(errors[0]) from None
    return outcomes  # type: ignore[return-value]


async def settle(calls: Mapping[int, Awaitable[T]]) -> dict[int, T | BaseException]:
    """Await keyed calls in parallel and return each outcome, errors included."""
    keys = list(calls)
    outcomes = await asyncio.gather(
        *(calls[key] for key in keys), return_exceptions=True
    )
    return dict(zip(keys, outcomes, strict=True))


async def call(ref: Awaitable[T]) -> T:
    """Await one actor call, raising the service error it raised."""
    try:
        return await ref
    except ServiceError as error:
        raise unwrap_ray_error(error) from None


class Backplane:
    """The actors of one deployment and the settings they share."""

    def __init__(self, settings: ServiceSettings, actors: ServiceActors) -> None:
        self.settings = settings
        self.actors = actors
        self.limits = settings.limits

    # Shards

    def results_shard(self, result_id: str) -> Any:
        return self.actors.results[shard_of(result_id, len(self.actors.results))]

    def tasks_shard(self, task_id: str) -> Any:
        return self.actors.tasks[shard_of(task_id, len(self.actors.tasks))]

    def results_groups(self, result_ids: Iterable[str]) -> dict[int, list[str]]:
        return group_by_shard(result_ids, len(self.actors.results))

    def tasks_groups(self, task_ids: Iterable[str]) -> dict[int, list[str]]:
        return group_by_shard(task_ids, len(self.actors.tasks))

    def results_pairs(
        self, pairs: Iterable[tuple[str, Any]]
    ) -> dict[int, list[tuple[str, Any]]]:
        """Group (result_id, value) pairs by results shard."""
        return group_items_by_shard(pairs, len(self.actors.results))

    def tasks_pairs(
        self, pairs: Iterable[tuple[str, Any]]
    ) -> dict[int, list[tuple[str, Any]]]:
        """Group (task_id, value) pairs by tasks shard."""
        return group_items_by_shard(pairs, len(self.actors.tasks))

    async def session(self, session_id: str) -> SessionRecord:
        return await call(self.actors.sessions.get.remote(session_id))

    async def get_results(
        self, session_id: str | None, result_ids: Sequence[str]
    ) -> dict[str, Any]:
        """Return the records found by id, from all shards in parallel."""
        groups = self.results_groups(result_ids)
        found = await gather(
            self.actors.results[shard].get_many.remote(session_id, ids)
            for shard, ids in groups.items()
        )
        return {record.result_id: record for records in found for record in records}

    async def find_results(
        self, session_id: str, result_ids: Sequence[str]
    ) -> list[Any]:
        """Return the records in request order; raise NotFoundError for any missing."""
        groups = self.results_groups(result_ids)
        found = await gather(
            self.actors.results[shard].find_all.remote(session_id, ids)
            for shard, ids in groups.items()
        )
        by_id = {record.result_id: record for records in found for record in records}
        return [by_id[result_id] for result_id in result_ids]

    # Dependency resolution

    async def resolve(self, waiting: Mapping[str, Sequence[str]]) -> list[QueuedTask]:
        """Remove completed results from the tasks that waited on them and queue the
        tasks left with no dependency.

        `waiting` maps each completed result to its waiting tasks. The removals go to
        the owning TasksTable shards in parallel, one call per shard.
        """
        per_task: dict[str, list[str]] = defaultdict(list)
        for result_id, task_ids in waiting.items():
            for task_id in task_ids:
                per_task[task_id].append(result_id)
        if not per_task:
            return []
        groups = self.tasks_pairs(per_task.items())
        ready_lists = await gather(
            self.actors.tasks[shard].remove_dependencies.remote(removals)
            for shard, removals in groups.items()
        )
        ready = [message for messages in ready_lists for message in messages]
        await self.enqueue(ready)
        return ready

    async def enqueue(self, ready: Sequence[QueuedTask]) -> None:
        """Push claimed tasks to their partition queues, then mark them SUBMITTED, or
        PAUSED when the queue parked them for a paused session."""
        if not ready:
            return
        ordered = RecordList(sorted(ready, key=lambda message: -message.priority))
        queued, parked = await call(self.actors.queue.push.remote(ordered))
        submitted_groups = self.tasks_groups(queued)
        parked_groups = self.tasks_groups(parked)
        gone_lists = await gather(
            self.actors.tasks[shard].mark_queued.remote(
                submitted_groups.get(shard, []), parked_groups.get(shard, [])
            )
            for shard in set(submitted_groups) | set(parked_groups)
        )
        gone = {task_id for task_ids in gone_lists for task_id in task_ids}
        if gone:
            # A cancel, an abort or a session deletion ended these tasks after their
            # claim and may have emptied the queue before this push landed.
            by_session: dict[str, list[str]] = defaultdict(list)
            for message in ready:
                if message.task_id in gone:
                    by_session[message.session_id].append(message.task_id)
            await gather(
                self.actors.queue.remove_tasks.remote(session_id, task_ids)
                for session_id, task_ids in by_session.items()
            )
        logger.debug("queued %d tasks, parked %d", len(queued), len(parked))

    async def abort_cascade(
        self, session_id: str, waiting: Mapping[str, Sequence[str]]
    ) -> int:
        """Fail the tasks that waited on aborted results, then abort their outputs, and
        so on down the graph. Returns the number of tasks failed."""
        failed_total = 0
        while waiting:
            reasons: dict[str, str] = {}
            for result_id, task_ids in waiting.items():
                for task_id in task_ids:
                    reasons.setdefault(
                        task_id,
                        f"dependency {result_id} was aborted, so the task cannot run",
                    )
            if not reasons:
                break
            groups = self.tasks_groups(reasons)
            failed_lists = await gather(
                self.actors.tasks[shard].fail_waiting.remote(
                    ids, "a data dependency was aborted, so the task cannot run"
                )
                for shard, ids in groups.items()
            )
            failed = [task for tasks in failed_lists for task in tasks]
            failed_total += len(failed)
            if failed:
                await call(
                    self.actors.queue.remove_tasks.remote(
                        session_id, [task.task_id for task in failed]
                    )
                )
            outputs = [output for task in failed for output in task.expected_output_ids]
            waiting = await self.abort_results(session_id, outputs)
        return failed_total

    async def abort_results(
        self, session_id: str, result_ids: Sequence[str]
    ) -> dict[str, list[str]]:
        """Abort CREATED results and return the tasks that waited on each."""
        if not result_ids:
            return {}
        groups = self.results_groups(result_ids)
        aborted = await gather(
            self.actors.results[shard].abort.remote(session_id, ids)
            for shard, ids in groups.items()
        )
        merged: dict[str, list[str]] = {}
        for part in aborted:
            merged.update(part)
        return merged

    async def delete_objects(self, opaque_ids: Sequence[bytes]) -> None:
        """Delete stored objects, logging instead of raising: callers use it to clean
        up after a failure they report themselves."""
        if not opaque_ids:
            return
        try:
            await call(self.actors.storage.delete.remote(list(opaque_ids)))
        except Exception:
            logger.exception(
                "deleting %d stored objects failed; they are orphaned", len(opaque_ids)
            )
