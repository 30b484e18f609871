"""Task flows of the control plane: submission, queries and cancellation.

Submission order, chosen so that a failure leaves nothing behind and a ready task is
queued exactly once:
1. check the request and the session, and merge the options;
2. claim the expected outputs (each must be CREATED with no owner yet);
3. insert the tasks as CREATING;
4. register each task as a dependent of its dependencies and payload; a shard
   reports those already COMPLETED, and a result completed after this step returns
   the task to its completer instead;
5. remove the completed dependencies and finalize CREATING to PENDING; the call that
   empties a task's dependencies claims it, and the claimed tasks are queued.
A failure in steps 2 to 4 undoes the earlier steps. A task whose step 4 failed keeps
the rejected dependency, so no completion can make it ready meanwhile.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import defaultdict
from typing import Any

from results_service import filters, validation
from results_service.control.backplane import Backplane, gather, settle
from results_service.errors import InvalidArgumentError, NotFoundError, unwrap_ray_error
from results_service.ids import new_id
from results_service.records import (
    Page,
    RecordList,
    SessionRecord,
    TaskDefinition,
    TaskInfo,
    TaskOptions,
    TaskRecord,
    TaskStatus,
    remaining_ids,
)
from results_service.state.sessions import require_submissions_open

logger = logging.getLogger(__name__)


def parse_definitions(bp: Backplane, definitions: Any) -> list[TaskDefinition]:
    """Check the shape of each task definition; ids are checked against the tables
    later."""
    items = validation.check_batch(definitions, "tasks", bp.limits)
    outputs_seen: dict[str, int] = {}
    parsed = []
    for index, item in enumerate(items):
        if not isinstance(item, TaskDefinition):
            raise InvalidArgumentError(
                f"task {index} is {item!r}; give a TaskDefinition(payload_id, "
                "data_dependencies, expected_output_ids, options)"
            )
        validation.check_id(item.payload_id, f"payload_id of task {index}", bp.limits)
        dependencies = validation.check_ids(
            item.data_dependencies,
            f"data_dependencies of task {index}",
            bp.limits,
            allow_empty=True,
        )
        if len(dependencies) > bp.limits.max_dependencies:
            raise InvalidArgumentError(
                f"task {index} has {len(dependencies)} data dependencies; the limit is "
                f"{bp.limits.max_dependencies}"
            )
        outputs = validation.check_ids(
            item.expected_output_ids,
            f"expected_output_ids of task {index}",
            bp.limits,
            allow_empty=True,
        )
        inputs = {item.payload_id, *dependencies}
        for output in outputs:
            if output in inputs:
                raise InvalidArgumentError(
                    f"result {output} is both an input and an expected output of task "
                    f"{index}; a task cannot wait on its own output",
                    (output,),
                )
            if output in outputs_seen:
                raise InvalidArgumentError(
                    f"result {output} is an expected output of tasks "
                    f"{outputs_seen[output]} and {index}; each result has one producer",
                    (output,),
                )
            outputs_seen[output] = index
        parsed.append(item)
    return parsed


async def submit_tasks(
    bp: Backplane,
    session_id: str,
    definitions: Any,
    task_options: dict[str, Any] | TaskOptions | None = None,
) -> list[TaskInfo]:
    """Create tasks and queue those whose dependencies are all COMPLETED."""
    validation.check_id(session_id, "session_id", bp.limits)
    parsed = parse_definitions(bp, definitions)
    session = await bp.session(session_id)
    require_submissions_open(session)

    now = time.time()
    records = []
    # Tasks without options of their own share one TaskOptions object, which
    # saves memory in the shards and pickles once per call.
    shared_options: TaskOptions | None = None
    for index, definition in enumerate(parsed):
        if definition.options is None and shared_options is not None:
            options = shared_options
        else:
            options = merged_options(session, task_options, definition.options)
        if definition.options is None:
            shared_options = options
        if options.partition_id not in session.partition_ids:
            raise InvalidArgumentError(
                f"partition {options.partition_id!r} of task {index} is not one of "
                f"session {session_id}'s partitions {list(session.partition_ids)}"
            )
        records.append(
            TaskRecord(
                task_id=new_id(),
                session_id=session_id,
                status=TaskStatus.CREATING,
                payload_id=definition.payload_id,
                data_dependencies=tuple(definition.data_dependencies),
                expected_output_ids=tuple(definition.expected_output_ids),
                options=options,
                remaining=remaining_ids(
                    (definition.payload_id, *definition.data_dependencies)
                ),
                created_at=now,
            )
        )

    claims = [
        (output, record.task_id)
        for record in records
        for output in record.expected_output_ids
    ]
    await claim_outputs(bp, session_id, claims)
    try:
        await insert_tasks(bp, records)
    except BaseException:
        await release_outputs(bp, claims)
        raise
    try:
        completed = await register_dependents(bp, session_id, records)
    except BaseException:
        await gather(
            bp.actors.tasks[shard].remove.remote(ids)
            for shard, ids in bp.tasks_groups(
                record.task_id for record in records
            ).items()
        )
        await release_outputs(bp, claims)
        raise

    removals: dict[str, list[str]] = defaultdict(list)
    for record in records:
        for result_id in record.remaining:
            if result_id in completed:
                removals[record.task_id].append(result_id)
    groups = bp.tasks_groups(record.task_id for record in records)
    ready_lists = await gather(
        bp.actors.tasks[shard].remove_dependencies.remote(
            [(task_id, removals.get(task_id, [])) for task_id in ids], ids
        )
        for shard, ids in groups.items()
    )
    # The shards reply in shard order. Queue in submission order instead, so that
    # tasks of one priority leave the queue first in, first out.
    position = {record.task_id: index for index, record in enumerate(records)}
    ready = [message for messages in ready_lists for message in messages]
    ready.sort(key=lambda message: position[message.task_id])
    await bp.enqueue(ready)
    logger.debug("submitted %d tasks in session %s", len(records), session_id)
    return RecordList(
        TaskInfo(r.task_id, r.payload_id, r.data_dependencies, r.expected_output_ids)
        for r in records
    )


def merged_options(
    session: SessionRecord,
    request_options: dict[str, Any] | TaskOptions | None,
    task_options: dict[str, Any] | None,
) -> TaskOptions:
    """Merge a task's options over the request's and the session's defaults."""
    options = validation.merge_task_options(
        session.default_task_options, request_options, task_options
    )
    if not options.partition_id:
        options = dataclasses.replace(options, partition_id=session.partition_ids[0])
    return options


async def claim_outputs(
    bp: Backplane, session_id: str, claims: list[tuple[str, str]]
) -> None:
    """Make each task the owner of its outputs, on all shards or none."""
    if not claims:
        return
    groups = bp.results_pairs(claims)
    outcomes = await settle(
        {
            shard: bp.actors.results[shard].claim_outputs.remote(session_id, pairs)
            for shard, pairs in groups.items()
        }
    )
    errors = [
        outcome for outcome in outcomes.values() if isinstance(outcome, BaseException)
    ]
    if errors:
        await release_outputs(
            bp,
            [
                pair
                for shard, outcome in outcomes.items()
                if not isinstance(outcome, BaseException)
                for pair in groups[shard]
            ],
        )
        raise unwrap_ray_error(errors[0]) from None


async def release_outputs(bp: Backplane, claims: list[tuple[str, str]]) -> None:
    """Undo output claims of tasks whose submission failed."""
    by_owner: dict[str, list[str]] = defaultdict(list)
    for result_id, task_id in claims:
        by_owner[task_id].append(result_id)
    await gather(
        bp.actors.results[shard].transfer_outputs.remote(
            [(result_id, "") for result_id in result_ids], task_id
        )
        for task_id, outputs in by_owner.items()
        for shard, result_ids in bp.results_groups(outputs).items()
    )


async def insert_tasks(bp: Backplane, records: list[TaskRecord]) -> None:
    """Insert task records in their shards; on failure remove all of them."""
    groups = bp.tasks_pairs((record.task_id, record) for record in records)
    try:
        await gather(
            bp.actors.tasks[shard].insert.remote(
                RecordList(record for _, record in pairs)
            )
            for shard, pairs in groups.items()
        )
    except BaseException:
        await gather(
            bp.actors.tasks[shard].remove.remote([task_id for task_id, _ in pairs])
            for shard, pairs in groups.items()
        )
        raise


async def register_dependents(
    bp: Backplane, session_id: str, records: list[TaskRecord]
) -> set[str]:
    """Register tasks on their inputs' shards; return the inputs already COMPLETED.

    On any shard's failure the registrations made on the other shards are undone.
    """
    pairs = [
        (result_id, record.task_id)
        for record in records
        for result_id in record.remaining
    ]
    groups = bp.results_pairs(pairs)
    outcomes = await settle(
        {
            shard: bp.actors.results[shard].register_dependents.remote(
                session_id, shard_pairs
            )
            for shard, shard_pairs in groups.items()
        }
    )
    errors = [
        unwrap_ray_error(outcome)
        for outcome in outcomes.values()
        if isinstance(outcome, BaseException)
    ]
    if errors:
        await gather(
            bp.actors.results[shard].unregister_dependents.remote(groups[shard])
            for shard, outcome in outcomes.items()
            if not isinstance(outcome, BaseException)
        )
        # NOT_FOUND is the more useful error when several shards failed.
        errors.sort(key=lambda error: not isinstance(error, NotFoundError))
        raise errors[0] from None
    return {result_id for outcome in outcomes.values() for result_id in outcome}  # type: ignore[union-attr]


async def get_task(bp: Backplane, session_id: str, task_id: str) -> TaskRecord:
    """Return one task of the session."""
    validation.check_id(session_id, "session_id", bp.limits)
    validation.check_id(task_id, "task_id", bp.limits)
    return await bp.tasks_shard(task_id).find.remote(session_id, task_id)


async def list_tasks(
    bp: Backplane,
    filter_groups: filters.Filters | None,
    sort: filters.Sort | None,
    page: int,
    page_size: int,
    session_id: str | None = None,
) -> Page:
    """Return one page of the tasks matching an OR of ANDs, and their total."""
    filters.compile_filters(filter_groups, filters.TASK_FIELDS)
    filters.check_sort(sort, filters.TASK_FIELDS)
    filters.check_page(page, page_size, bp.limits.max_page_size)
    limit = (page + 1) * page_size
    parts = await gather(
        shard.list.remote(filter_groups, sort, limit, session_id)
        for shard in bp.actors.tasks
    )
    merged = [record for _, records in parts for record in records]
    items = filters.select_page(merged, sort, "task_id", page, page_size)
    return Page(sum(count for count, _ in parts), page, page_size, items)


async def cancel_tasks(bp: Backplane, session_id: str, task_ids: Any) -> list[str]:
    """Cancel unfinished tasks, abort their outputs, and fail the tasks that waited on
    those outputs. Returns the ids cancelled; tasks already final are skipped."""
    validation.check_id(session_id, "session_id", bp.limits)
    ids = validation.check_ids(task_ids, "task_ids", bp.limits)
    await bp.session(session_id)
    groups = bp.tasks_groups(ids)
    found = await gather(
        bp.actors.tasks[shard].get_many.remote(session_id, group)
        for shard, group in groups.items()
    )
    known = {record.task_id for records in found for record in records}
    missing = [task_id for task_id in ids if task_id not in known]
    if missing:
        raise NotFoundError(
            f"tasks {missing[:10]} were not found in session {session_id}",
            tuple(missing),
        )
    parts = await gather(
        bp.actors.tasks[shard].cancel.remote(session_id, group, "cancelled by request")
        for shard, group in groups.items()
    )
    cancelled = [record for records, _ in parts for record in records]
    await bp.actors.queue.remove_tasks.remote(
        session_id, [record.task_id for record in cancelled]
    )
    await bp.delete_objects(
        [opaque_id for _, objects in parts for opaque_id in objects]
    )
    outputs = [output for record in cancelled for output in record.expected_output_ids]
    await bp.abort_cascade(session_id, await bp.abort_results(session_id, outputs))
    return [record.task_id for record in cancelled]
