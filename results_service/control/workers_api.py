"""Worker flows of the control plane: acquire, start, renew, complete and fail tasks.

A worker acquires tasks from a partition's queue under leases. Its outputs become
COMPLETED only when the task completes, and only then are their dependents queued.
A lease that is not renewed expires, and the task goes back to the queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Mapping

from results_service import validation
from results_service.control.backplane import Backplane, call, gather
from results_service.control.results_api import (
    complete_and_resolve,
    objects_not_held,
)
from results_service.control.transfers import open_downloads
from results_service.errors import InvalidArgumentError
from results_service.ids import object_key
from results_service.records import (
    AcquiredTask,
    DownloadInfo,
    QueuedTask,
    RecordList,
    TaskRecord,
    TaskStatus,
)

logger = logging.getLogger(__name__)


async def acquire_tasks(
    bp: Backplane,
    partition_id: str,
    worker_id: str,
    max_tasks: int,
    wait_seconds: float,
    open_inputs: bool = False,
) -> list[AcquiredTask]:
    """Take up to `max_tasks` tasks from a partition's queue under new leases,
    waiting up to `wait_seconds` when the queue is empty.

    With `open_inputs`, each task comes with the downloads of its payload and data
    dependencies opened, as open_downloads returns them, which saves the worker
    that call.
    """
    validation.check_id(partition_id, "partition_id", bp.limits)
    validation.check_id(worker_id, "worker_id", bp.limits)
    validation.check_bool(open_inputs, "open_inputs")
    if not isinstance(max_tasks, int) or not 1 <= max_tasks <= 10_000:
        raise InvalidArgumentError(
            f"max_tasks {max_tasks!r} is invalid: give 1 to 10000"
        )
    if not isinstance(wait_seconds, (int, float)) or not 0 <= wait_seconds <= 60:
        raise InvalidArgumentError(
            f"wait_seconds {wait_seconds!r} is invalid: give 0 to 60 seconds"
        )
    if partition_id not in bp.settings.partitions:
        raise InvalidArgumentError(
            f"partition {partition_id!r} is unknown; the service has partitions "
            f"{list(bp.settings.partitions)}"
        )
    messages: list[QueuedTask] = await call(
        bp.actors.queue.pop.remote(partition_id, max_tasks, float(wait_seconds))
    )
    if not messages:
        return []
    groups = bp.tasks_pairs((message.task_id, message) for message in messages)
    granted = await gather(
        bp.actors.tasks[shard].dispatch.remote(
            RecordList(message for _, message in pairs), worker_id
        )
        for shard, pairs in groups.items()
    )
    acquired = RecordList(
        AcquiredTask(
            task_id=record.task_id,
            session_id=record.session_id,
            lease_id=lease.lease_id,
            lease_expires_at=lease.expires_at,
            payload_id=record.payload_id,
            data_dependencies=record.data_dependencies,
            expected_output_ids=record.expected_output_ids,
            options=record.options,
            retries=record.retries,
        )
        for pairs in granted
        for record, lease in pairs
    )
    if open_inputs:
        acquired = RecordList(await with_inputs_opened(bp, acquired))
    return acquired


async def with_inputs_opened(
    bp: Backplane, tasks: list[AcquiredTask]
) -> list[AcquiredTask]:
    """Return the tasks with the downloads of their payload and dependencies.

    One open_downloads call per session serves all its tasks. When it fails, as
    for data deleted since the task was queued, its tasks keep `inputs` None and
    the worker's own open_downloads reports the error.
    """
    by_session: dict[str, list[AcquiredTask]] = defaultdict(list)
    for task in tasks:
        by_session[task.session_id].append(task)

    async def open_session(session_id: str, group: list[AcquiredTask]) -> None:
        ids = list(
            dict.fromkeys(
                result_id
                for task in group
                for result_id in (task.payload_id, *task.data_dependencies)
            )
        )
        try:
            infos = await open_downloads(bp, session_id, ids)
        except Exception as error:
            logger.info(
                "opening the inputs of %d tasks of session %s failed: %s",
                len(group),
                session_id,
                error,
            )
            return
        by_id = {info.result_id: info for info in infos}
        for task in group:
            opened[task.task_id] = tuple(
                by_id[result_id]
                for result_id in (task.payload_id, *task.data_dependencies)
            )

    opened: dict[str, tuple[DownloadInfo, ...]] = {}
    await asyncio.gather(
        *(open_session(session_id, group) for session_id, group in by_session.items())
    )
    return [
        dataclasses.replace(task, inputs=opened.get(task.task_id)) for task in tasks
    ]


def _check_lease_ids(
    bp: Backplane, session_id: str, task_id: str, lease_id: str
) -> None:
    validation.check_id(session_id, "session_id", bp.limits)
    validation.check_id(task_id, "task_id", bp.limits)
    validation.check_id(lease_id, "lease_id", bp.limits)


async def start_task(
    bp: Backplane, session_id: str, task_id: str, lease_id: str
) -> TaskRecord:
    """Record that the worker started the task: DISPATCHED becomes PROCESSING."""
    _check_lease_ids(bp, session_id, task_id, lease_id)
    return await call(
        bp.tasks_shard(task_id).start.remote(session_id, task_id, lease_id)
    )


async def renew_lease(
    bp: Backplane, session_id: str, task_id: str, lease_id: str
) -> float:
    """Extend a lease; return its new expiry time in seconds since the epoch."""
    _check_lease_ids(bp, session_id, task_id, lease_id)
    return await call(
        bp.tasks_shard(task_id).renew.remote(session_id, task_id, lease_id)
    )


async def complete_task(
    bp: Backplane,
    session_id: str,
    task_id: str,
    lease_id: str,
    outputs: Mapping[str, bytes] | None = None,
) -> TaskRecord:
    """Complete a task with its outputs: staged uploads plus data given inline.

    The outputs become COMPLETED and their dependents are queued, then the task is
    COMPLETED. Every expected output must have data.
    """
    _check_lease_ids(bp, session_id, task_id, lease_id)
    inline = dict(outputs or {})
    if len(inline) > bp.limits.max_batch:
        raise InvalidArgumentError(
            f"complete_task carries {len(inline)} outputs; the limit is "
            f"{bp.limits.max_batch} per request"
        )
    for result_id, data in inline.items():
        validation.check_id(result_id, "output result_id", bp.limits)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError(
                f"data of output {result_id} is {type(data).__name__}; give bytes"
            )
    total = sum(len(data) for data in inline.values())
    if total > bp.limits.max_inline_bytes:
        raise InvalidArgumentError(
            f"complete_task carries {total} bytes inline; the limit is "
            f"{bp.limits.max_inline_bytes}, so upload large outputs first"
        )
    shard = bp.tasks_shard(task_id)
    ending = await call(
        shard.begin_completion.remote(session_id, task_id, lease_id, list(inline))
    )

    # Data sent inline replaces data staged earlier for the same output.
    replaced = [
        ending.staged[result_id][0]
        for result_id in inline
        if result_id in ending.staged
    ]
    stored = {
        result_id: data
        for result_id, data in ending.staged.items()
        if result_id not in inline
    }
    completions: list[tuple[str, bytes, int]] = []
    try:
        if inline:
            items = [
                (result_id, object_key(session_id), bytes(data))
                for result_id, data in inline.items()
            ]
            written = await call(
                bp.actors.storage.put_many.remote(
                    [(key, data) for _, key, data in items]
                )
            )
            stored.update(
                {
                    result_id: outcome
                    for (result_id, _, _), outcome in zip(items, written, strict=True)
                }
            )
        completions = [
            (result_id, opaque_id, size)
            for result_id, (opaque_id, size) in stored.items()
        ]
        await complete_and_resolve(bp, session_id, completions, owner_task_id=task_id)
    except BaseException as error:
        # The task is PROCESSED, where no lease expires, so it must end here.
        logger.warning("committing the outputs of task %s failed: %s", task_id, error)
        if completions:
            unheld = await objects_not_held(bp, session_id, completions)
        else:
            # put_many failed and deleted its own writes; the staged data remains.
            unheld = [opaque_id for opaque_id, _ in stored.values()]
        await bp.delete_objects([*unheld, *replaced])
        await end_if_possible(
            bp, task_id, TaskStatus.ERROR, f"committing outputs failed: {error}"
        )
        raise
    await bp.delete_objects(replaced)
    (record,) = await call(shard.end.remote([task_id], TaskStatus.COMPLETED))
    return record


async def end_if_possible(
    bp: Backplane, task_id: str, status: TaskStatus, error: str
) -> None:
    """Set a final status unless the task already has one, as after a cancellation."""
    shard = bp.tasks_shard(task_id)
    try:
        await call(shard.end.remote([task_id], status, error))
    except Exception as failure:
        logger.info(
            "task %s keeps its status instead of %s: %s", task_id, status.name, failure
        )


async def fail_task(
    bp: Backplane,
    session_id: str,
    task_id: str,
    lease_id: str,
    error: str,
    retry: bool = True,
) -> str | None:
    """End a task after a worker's failure; return the id of its retry, if any.

    Within max_retries, a new task takes over the outputs and is queued at once.
    Otherwise the task is in ERROR, its outputs are ABORTED, and the tasks that
    waited on them are failed too. Staged outputs are deleted either way.
    """
    _check_lease_ids(bp, session_id, task_id, lease_id)
    if not isinstance(error, str):
        raise InvalidArgumentError(f"error {error!r} is invalid: give a message string")
    validation.check_bool(retry, "retry")
    ending = await call(
        bp.tasks_shard(task_id).fail.remote(
            session_id, task_id, lease_id, error[:4096], retry
        )
    )
    await bp.delete_objects([opaque_id for opaque_id, _ in ending.staged.values()])

    if ending.retry is not None:
        successor = ending.retry
        claims = [
            (output, successor.task_id) for output in successor.expected_output_ids
        ]
        await gather(
            bp.actors.results[shard].transfer_outputs.remote(pairs, task_id)
            for shard, pairs in bp.results_pairs(claims).items()
        )
        ready = await call(
            bp.tasks_shard(successor.task_id).start_retry.remote(successor)
        )
        await bp.enqueue(ready)
        logger.info(
            "task %s failed (%s); retry %s queued", task_id, error, successor.task_id
        )
        return successor.task_id

    outputs = list(ending.task.expected_output_ids)
    failed = await bp.abort_cascade(
        session_id, await bp.abort_results(session_id, outputs)
    )
    logger.info(
        "task %s failed for good (%s); %d dependent tasks failed",
        task_id,
        error,
        failed,
    )
    return None


async def expire_leases(bp: Backplane) -> int:
    """Requeue tasks whose lease expired and end overdue tasks in TIMEOUT, aborting
    their outputs. Returns the number of tasks requeued or timed out."""
    parts = await gather(shard.expire_leases.remote() for shard in bp.actors.tasks)
    messages = [message for expired, _, _, _ in parts for message in expired]
    objects = [opaque_id for part in parts for opaque_id in (*part[1], *part[3])]
    await bp.delete_objects(objects)
    await bp.enqueue(messages)

    timed_out = [record for _, _, records, _ in parts for record in records]
    by_session: dict[str, list[str]] = {}
    for record in timed_out:
        by_session.setdefault(record.session_id, []).extend(record.expected_output_ids)
    for session_id, outputs in by_session.items():
        await bp.abort_cascade(session_id, await bp.abort_results(session_id, outputs))
    return len(messages) + len(timed_out)
