"""Session flows of the control plane and their side effects on tasks and results.

- cancel (from RUNNING, PAUSED or CLOSED): the queue drops the session's tasks,
  unfinished tasks are CANCELLED, CREATED results are ABORTED.
- pause: nothing new is dispatched; queued tasks become PAUSED. resume queues them.
- close: no new results or tasks; running tasks may still complete.
- purge (from CLOSED or CANCELLED): stored data of results without manual_deletion
  is deleted and they become DELETED.
- delete: stored data goes as in a purge, then every record of the session.
"""

from __future__ import annotations

import logging
from typing import Any

from results_service import filters, validation
from results_service.control.backplane import Backplane, call, gather
from results_service.errors import InvalidArgumentError, NotFoundError
from results_service.ids import new_id, session_prefix
from results_service.records import Page, SessionRecord, SessionStatus, TaskOptions

logger = logging.getLogger(__name__)


async def create_session(
    bp: Backplane,
    partition_ids: Any = None,
    default_task_options: dict[str, Any] | TaskOptions | None = None,
) -> SessionRecord:
    """Create a RUNNING session on known partitions, with default task options."""
    if partition_ids is None or partition_ids == []:
        partitions = [bp.settings.default_partition]
    else:
        partitions = validation.check_ids(partition_ids, "partition_ids", bp.limits)
    unknown = [
        partition for partition in partitions if partition not in bp.settings.partitions
    ]
    if unknown:
        raise NotFoundError(
            f"partitions {unknown} were not found; the service has partitions "
            f"{list(bp.settings.partitions)}",
            tuple(unknown),
        )
    defaults = validation.merge_task_options(
        TaskOptions(partition_id=partitions[0]), default_task_options
    )
    if defaults.partition_id not in partitions:
        raise InvalidArgumentError(
            f"default partition {defaults.partition_id!r} is not among the session's "
            f"partitions {partitions}"
        )
    return await call(bp.actors.sessions.create.remote(new_id(), partitions, defaults))


async def get_session(bp: Backplane, session_id: str) -> SessionRecord:
    validation.check_id(session_id, "session_id", bp.limits)
    return await bp.session(session_id)


async def list_sessions(
    bp: Backplane,
    filter_groups: filters.Filters | None,
    sort: filters.Sort | None,
    page: int,
    page_size: int,
) -> Page:
    """Return one page of the sessions matching an OR of ANDs, and their total."""
    filters.compile_filters(filter_groups, filters.SESSION_FIELDS)
    filters.check_sort(sort, filters.SESSION_FIELDS)
    filters.check_page(page, page_size, bp.limits.max_page_size)
    total, items = await call(
        bp.actors.sessions.list.remote(filter_groups, sort, page, page_size)
    )
    return Page(total, page, page_size, items)


async def cancel_session(bp: Backplane, session_id: str) -> SessionRecord:
    validation.check_id(session_id, "session_id", bp.limits)
    record = await call(
        bp.actors.sessions.move.remote(session_id, SessionStatus.CANCELLED)
    )
    parts = await gather(
        shard.cancel.remote(session_id, None, "session cancelled")
        for shard in bp.actors.tasks
    )
    # Emptying the queue after the cancel also removes the tasks pushed while it ran.
    # A push still in flight lands later, and Backplane.enqueue then removes it.
    await call(bp.actors.queue.remove_session.remote(session_id))
    await bp.delete_objects(
        [opaque_id for _, objects in parts for opaque_id in objects]
    )
    await gather(shard.abort.remote(session_id, None) for shard in bp.actors.results)
    cancelled = sum(len(records) for records, _ in parts)
    logger.info("session %s cancelled with %d unfinished tasks", session_id, cancelled)
    return record


async def pause_session(bp: Backplane, session_id: str) -> SessionRecord:
    validation.check_id(session_id, "session_id", bp.limits)
    record = await call(
        bp.actors.sessions.move.remote(session_id, SessionStatus.PAUSED)
    )
    parked = await call(bp.actors.queue.pause_session.remote(session_id))
    await gather(
        bp.actors.tasks[shard].set_paused.remote(ids, True)
        for shard, ids in bp.tasks_groups(parked).items()
    )
    return record


async def resume_session(bp: Backplane, session_id: str) -> SessionRecord:
    validation.check_id(session_id, "session_id", bp.limits)
    record = await call(
        bp.actors.sessions.move.remote(session_id, SessionStatus.RUNNING)
    )
    queued = await call(bp.actors.queue.resume_session.remote(session_id))
    await gather(
        bp.actors.tasks[shard].set_paused.remote(ids, False)
        for shard, ids in bp.tasks_groups(queued).items()
    )
    return record


async def close_session(bp: Backplane, session_id: str) -> SessionRecord:
    validation.check_id(session_id, "session_id", bp.limits)
    return await call(bp.actors.sessions.move.remote(session_id, SessionStatus.CLOSED))


async def delete_stored_data(bp: Backplane, session_id: str) -> int:
    """Delete the session's stored objects except those with manual_deletion."""
    parts = await gather(
        shard.purge_session.remote(session_id) for shard in bp.actors.results
    )
    delete = {opaque_id for objects, _ in parts for opaque_id in objects}
    keep = {opaque_id for _, objects in parts for opaque_id in objects}
    # Staged outputs of tasks that never completed are under the prefix too.
    leftovers = await call(
        bp.actors.storage.list_ids.remote(session_prefix(session_id))
    )
    delete.update(opaque_id for opaque_id in leftovers if opaque_id not in keep)
    await call(bp.actors.storage.delete.remote(sorted(delete)))
    return len(delete)


async def purge_session(bp: Backplane, session_id: str) -> SessionRecord:
    validation.check_id(session_id, "session_id", bp.limits)
    record = await call(
        bp.actors.sessions.move.remote(session_id, SessionStatus.PURGED)
    )
    deleted = await delete_stored_data(bp, session_id)
    logger.info("session %s purged: %d stored objects deleted", session_id, deleted)
    return record


async def delete_session(bp: Backplane, session_id: str) -> None:
    validation.check_id(session_id, "session_id", bp.limits)
    record = await bp.session(session_id)
    await call(bp.actors.sessions.move.remote(session_id, SessionStatus.DELETED))
    if record.status != SessionStatus.PURGED:
        await delete_stored_data(bp, session_id)
    # The queue and the shards hold separate parts of the session, so they are
    # cleared in parallel; the session record goes last.
    await gather(
        [
            bp.actors.queue.remove_session.remote(session_id),
            *(shard.delete_session.remote(session_id) for shard in bp.actors.tasks),
            *(shard.delete_session.remote(session_id) for shard in bp.actors.results),
        ]
    )
    await call(bp.actors.sessions.delete.remote(session_id))
