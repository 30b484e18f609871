"""Results flows of the control plane: creation, import, queries, deletion, watch."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from results_service import filters, validation
from results_service.control.backplane import Backplane, call, gather
from results_service.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from results_service.ids import new_ids, object_key
from results_service.records import (
    Page,
    RecordList,
    ResultCreate,
    ResultRecord,
    ResultStatus,
    StatusChange,
)
from results_service.state.sessions import (
    require_data_accepted,
    require_submissions_open,
)

logger = logging.getLogger(__name__)


def parse_creates(items: Any, bp: Backplane, with_data: bool) -> list[ResultCreate]:
    """Check create requests: names, flags and, for create_results, the data."""
    creates = validation.check_batch(items, "results", bp.limits)
    parsed = []
    total = 0
    for item in creates:
        if isinstance(item, str) and not with_data:
            item = ResultCreate(item)
        if not isinstance(item, ResultCreate):
            raise InvalidArgumentError(
                f"result request {item!r} is invalid: give a ResultCreate(name, "
                "manual_deletion, data)"
            )
        validation.check_name(item.name, bp.limits)
        validation.check_bool(item.manual_deletion, f"manual_deletion of {item.name!r}")
        if with_data:
            if not isinstance(item.data, (bytes, bytearray, memoryview)):
                raise InvalidArgumentError(
                    f"data of result {item.name!r} is {type(item.data).__name__}; give "
                    "bytes, or use create_results_metadata and upload_result_data"
                )
            total += len(item.data)
        elif item.data is not None:
            raise InvalidArgumentError(
                f"result {item.name!r} carries data; create_results_metadata takes "
                "names only, so use create_results to send data"
            )
        parsed.append(item)
    if total > bp.limits.max_inline_bytes:
        raise InvalidArgumentError(
            f"create_results carries {total} bytes; the limit is "
            f"{bp.limits.max_inline_bytes} per request, so upload large data with "
            "upload_result_data"
        )
    return parsed


async def insert_results(bp: Backplane, records: Sequence[ResultRecord]) -> None:
    """Insert records in their shards in parallel; on failure remove all of them."""
    groups = bp.results_pairs((record.result_id, record) for record in records)
    try:
        await gather(
            bp.actors.results[shard].insert.remote(
                RecordList(record for _, record in pairs)
            )
            for shard, pairs in groups.items()
        )
    except BaseException:
        await gather(
            bp.actors.results[shard].remove.remote(
                [result_id for result_id, _ in pairs]
            )
            for shard, pairs in groups.items()
        )
        raise


async def create_results_metadata(
    bp: Backplane, session_id: str, items: Any
) -> list[ResultRecord]:
    """Create CREATED results, without data."""
    validation.check_id(session_id, "session_id", bp.limits)
    creates = parse_creates(items, bp, with_data=False)
    require_submissions_open(await bp.session(session_id))

    now = time.time()
    records = RecordList(
        ResultRecord(
            session_id=session_id,
            name=create.name,
            result_id=result_id,
            status=ResultStatus.CREATED,
            created_at=now,
            manual_deletion=create.manual_deletion,
        )
        for create, result_id in zip(creates, new_ids(len(creates)), strict=True)
    )
    await insert_results(bp, records)
    logger.debug("created %d results in session %s", len(records), session_id)
    return records


async def create_results(
    bp: Backplane, session_id: str, items: Any
) -> list[ResultRecord]:
    """Write each result's data, then create COMPLETED records owned by the session.

    If a write or the insert fails, the objects written are deleted and no record
    remains.
    """
    validation.check_id(session_id, "session_id", bp.limits)
    creates = parse_creates(items, bp, with_data=True)
    require_submissions_open(await bp.session(session_id))

    keys = [object_key(session_id) for _ in creates]
    stored = await call(
        bp.actors.storage.put_many.remote(
            [
                (key, bytes(create.data or b""))
                for key, create in zip(keys, creates, strict=True)
            ]
        )
    )
    now = time.time()
    records = RecordList(
        ResultRecord(
            session_id=session_id,
            name=create.name,
            result_id=result_id,
            status=ResultStatus.COMPLETED,
            owner_task_id=session_id,
            created_at=now,
            completed_at=now,
            size=size,
            opaque_id=opaque_id,
            manual_deletion=create.manual_deletion,
        )
        for create, result_id, (opaque_id, size) in zip(
            creates, new_ids(len(creates)), stored, strict=True
        )
    )
    try:
        await insert_results(bp, records)
    except BaseException:
        await bp.delete_objects([opaque_id for opaque_id, _ in stored])
        raise
    return records


async def complete_and_resolve(
    bp: Backplane,
    session_id: str,
    completions: Sequence[tuple[str, bytes, int]],
    owner_task_id: str | None = None,
) -> list[ResultRecord]:
    """Complete results with stored data, then queue the tasks that became ready.

    The completion is all or none per shard; when a shard rejects its part, the
    parts already completed stay completed and the error is raised.
    """
    groups = bp.results_pairs((completion[0], completion) for completion in completions)
    outcomes = await asyncio.gather(
        *(
            call(
                bp.actors.results[shard].complete.remote(
                    session_id, [completion for _, completion in pairs], owner_task_id
                )
            )
            for shard, pairs in groups.items()
        ),
        return_exceptions=True,
    )
    completed: dict[str, ResultRecord] = {}
    waiting: dict[str, list[str]] = {}
    error: BaseException | None = None
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            error = error or outcome
            continue
        records, dependents = outcome
        completed.update((record.result_id, record) for record in records)
        waiting.update(dependents)
    await bp.resolve(waiting)
    if error is not None:
        raise error
    return RecordList(completed[result_id] for result_id, _, _ in completions)


async def objects_not_held(
    bp: Backplane, session_id: str, completions: Sequence[tuple[str, bytes, int]]
) -> list[bytes]:
    """Return the objects of `completions` that their result does not hold, to delete
    after complete_and_resolve raised.

    The shards that accepted their part keep it, so their results' objects stay.
    When the results cannot be read, nothing is returned: an object left behind is
    deleted with its session's purge, while a deleted one would break a result.
    """
    try:
        records = await bp.get_results(
            session_id, [result_id for result_id, _, _ in completions]
        )
    except Exception:
        logger.exception(
            "reading results of session %s failed; keeping %d objects",
            session_id,
            len(completions),
        )
        return []
    held = {
        record.opaque_id
        for record in records.values()
        if record.status == ResultStatus.COMPLETED
    }
    return [opaque_id for _, opaque_id, _ in completions if opaque_id not in held]


async def import_results_data(
    bp: Backplane, session_id: str, items: Any
) -> list[ResultRecord]:
    """Complete CREATED results with objects already in the storage.

    Sizes come from the storage. Opaque ids must stay inside the storage root and
    outside the objects the service wrote, and must not be the data of another
    session's result unless both results have manual_deletion.
    """
    validation.check_id(session_id, "session_id", bp.limits)
    pairs = validation.check_batch(items, "results", bp.limits, allow_empty=True)
    if not pairs:
        return []
    result_ids: list[str] = []
    opaque_ids: list[bytes] = []
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InvalidArgumentError(
                f"import item {pair!r} is invalid: give (result_id, opaque_id) pairs"
            )
        result_id, opaque_id = pair
        validation.check_id(result_id, "result_id", bp.limits)
        if isinstance(opaque_id, str):
            opaque_id = opaque_id.encode()
        if (
            not isinstance(opaque_id, bytes)
            or len(opaque_id) > bp.limits.max_id_length * 4
        ):
            raise InvalidArgumentError(
                f"opaque id {opaque_id!r} of result {result_id} is invalid: give "
                f"bytes of at most {bp.limits.max_id_length * 4} characters"
            )
        result_ids.append(result_id)
        opaque_ids.append(opaque_id)
    validation.check_ids(result_ids, "result ids to import", bp.limits)

    # The three reads are independent, so they run in parallel. Their errors are
    # raised in the order of a sequential check: session, opaque ids, results.
    session, inspected, records = await asyncio.gather(
        bp.session(session_id),
        call(bp.actors.storage.inspect_imports.remote(opaque_ids)),
        bp.find_results(session_id, result_ids),
        return_exceptions=True,
    )
    if isinstance(session, BaseException):
        raise session
    require_data_accepted(session)
    if isinstance(inspected, BaseException):
        raise inspected
    normalized = [opaque_id for opaque_id, _ in inspected]
    sizes = dict(inspected)
    for opaque_id in normalized:
        check_not_service_object(opaque_id)
    if isinstance(records, BaseException):
        raise records

    holders = await gather(
        shard.holders_of.remote(list(dict.fromkeys(normalized)))
        for shard in bp.actors.results
    )
    # NOTE: two sessions importing one object at the same moment both pass this
    # check, because the holders are read before either import completes.
    check_not_held_by_other_session(
        session_id,
        {record.result_id: record.manual_deletion for record in records},
        dict(zip(result_ids, normalized, strict=True)),
        [holder for part in holders for holder in part],
    )
    missing = [opaque.decode() for opaque in normalized if sizes.get(opaque) is None]
    if missing:
        raise NotFoundError(
            f"objects {missing[:10]} were not found in the storage; write them "
            "under the storage root before importing",
            tuple(missing),
        )
    not_created = [
        record.result_id for record in records if record.status != ResultStatus.CREATED
    ]
    if not_created:
        raise FailedPreconditionError(
            f"results {not_created[:10]} are not CREATED; data is written once, into a "
            "CREATED result",
            tuple(not_created),
        )
    completions = [
        (result_id, opaque_id, sizes[opaque_id] or 0)
        for result_id, opaque_id in zip(result_ids, normalized, strict=True)
    ]
    return await complete_and_resolve(bp, session_id, completions)


def check_not_service_object(opaque_id: bytes) -> None:
    """Reject an import of an object the service wrote under sessions/.

    Each of those objects is the data of one result or one staged task output, and a
    second result holding it would lose its data when the first one's is deleted.
    """
    if opaque_id.decode().split("/", 1)[0] == "sessions":
        raise InvalidArgumentError(
            f"opaque id {opaque_id.decode()!r} is inside the sessions/ folder, where "
            "each object is the data of one result; import objects written outside "
            "sessions/",
            (opaque_id.decode(),),
        )


def check_not_held_by_other_session(
    session_id: str,
    manual_deletion: dict[str, bool],
    imports: dict[str, bytes],
    holders: Sequence[tuple[bytes, str, str, bool]],
) -> None:
    """Reject an import of an object that is the data of another session's result.

    Sharing is allowed only when every result involved has manual_deletion, because
    otherwise one session's purge or delete_results_data deletes the other's data.
    `imports` maps each result to import to its opaque id, and `holders` lists
    (opaque_id, session_id, result_id, manual_deletion) of the results holding them.
    """
    held = {
        opaque_id: holder_manual
        for opaque_id, holder_session, _, holder_manual in holders
        if holder_session != session_id
    }
    for result_id, opaque_id in imports.items():
        if opaque_id not in held:
            continue
        if held[opaque_id] and manual_deletion[result_id]:
            continue
        raise InvalidArgumentError(
            f"opaque id {opaque_id.decode()!r} of result {result_id} is the data of a "
            f"result of another session, so session {session_id} cannot import it; "
            "import a copy, or share the object only between results that all have "
            "manual_deletion=True",
            (result_id, opaque_id.decode()),
        )


async def get_result(bp: Backplane, session_id: str, result_id: str) -> ResultRecord:
    """Return one result of the session."""
    validation.check_id(session_id, "session_id", bp.limits)
    validation.check_id(result_id, "result_id", bp.limits)
    (record,) = await bp.find_results(session_id, [result_id])
    return record


async def get_owner_task_id(
    bp: Backplane, session_id: str, result_ids: Any
) -> dict[str, str]:
    """Return each result's owner task id; empty for results no task owns."""
    validation.check_id(session_id, "session_id", bp.limits)
    ids = validation.check_ids(result_ids, "result_ids", bp.limits)
    records = await bp.find_results(session_id, ids)
    return {record.result_id: record.owner_task_id for record in records}


async def list_results(
    bp: Backplane,
    filter_groups: filters.Filters | None,
    sort: filters.Sort | None,
    page: int,
    page_size: int,
    session_id: str | None = None,
) -> Page:
    """Return one page of the results matching an OR of ANDs, and their total."""
    filters.compile_filters(filter_groups, filters.RESULT_FIELDS)
    filters.check_sort(sort, filters.RESULT_FIELDS)
    filters.check_page(page, page_size, bp.limits.max_page_size)
    if session_id is not None:
        validation.check_id(session_id, "session_id", bp.limits)
    limit = (page + 1) * page_size
    parts = await gather(
        shard.list.remote(filter_groups, sort, limit, session_id)
        for shard in bp.actors.results
    )
    total = sum(count for count, _ in parts)
    merged = [record for _, records in parts for record in records]
    items = filters.select_page(merged, sort, "result_id", page, page_size)
    return Page(total, page, page_size, items)


async def delete_results_data(
    bp: Backplane, session_id: str, result_ids: Any
) -> list[str]:
    """Delete the stored data of COMPLETED results; they become DELETED.

    Objects of results with manual_deletion are kept, as they belong to the user.
    """
    validation.check_id(session_id, "session_id", bp.limits)
    ids = validation.check_ids(result_ids, "result_ids", bp.limits)
    await bp.session(session_id)
    records = await bp.find_results(session_id, ids)
    # Each shard deletes all or none of its part, so statuses are checked here for
    # the whole request first. A COMPLETED result can only become DELETED, so the
    # check stays true while the shards run.
    rejected = [
        record.result_id
        for record in records
        if record.status not in (ResultStatus.COMPLETED, ResultStatus.DELETED)
    ]
    if rejected:
        raise FailedPreconditionError(
            f"results {', '.join(rejected[:10])} are not COMPLETED; only the data of "
            "COMPLETED results can be deleted, so no data was deleted",
            tuple(rejected),
        )
    groups = bp.results_groups(ids)
    outcomes = await asyncio.gather(
        *(
            call(bp.actors.results[shard].delete_data.remote(session_id, group))
            for shard, group in groups.items()
        ),
        return_exceptions=True,
    )
    parts = [part for part in outcomes if not isinstance(part, BaseException)]
    objects = [opaque_id for _, opaque_ids in parts for opaque_id in opaque_ids]
    await call(bp.actors.storage.delete.remote(objects))
    errors = [error for error in outcomes if isinstance(error, BaseException)]
    if errors:
        raise errors[0]
    return [result_id for deleted, _ in parts for result_id in deleted]


async def watch_results(
    bp: Backplane,
    session_id: str,
    result_ids: Any,
    until: frozenset[ResultStatus],
    timeout: float | None,
) -> AsyncIterator[list[StatusChange]]:
    """Yield the current status of each result, then every change, in batches.

    The first batch comes from a snapshot taken together with each shard's latest
    sequence number, and changes are read after that number, so no change is missed
    between the two. The stream ends when every result is in one of `until`, or
    after `timeout` seconds. Unknown ids are reported once as NOTFOUND and dropped.
    """
    validation.check_id(session_id, "session_id", bp.limits)
    ids = validation.check_ids(result_ids, "result_ids", bp.limits)
    if len(ids) > bp.limits.max_watch_ids:
        raise InvalidArgumentError(
            f"watch_results got {len(ids)} ids; the limit is {bp.limits.max_watch_ids}"
        )
    await bp.session(session_id)
    found = await bp.get_results(session_id, ids)

    groups = bp.results_groups(result_id for result_id in ids if result_id in found)
    cursors: dict[int, int] = {}
    current: dict[str, ResultStatus] = {}
    first: list[StatusChange] = [
        StatusChange(result_id, ResultStatus.NOTFOUND, 0)
        for result_id in ids
        if result_id not in found
    ]
    snapshots = await gather(
        bp.actors.results[shard].snapshot.remote(group)
        for shard, group in groups.items()
    )
    for shard, (sequence, changes) in zip(groups, snapshots, strict=True):
        cursors[shard] = sequence
        for change in changes:
            current[change.result_id] = change.status
        first.extend(changes)
    yield first

    deadline = None if timeout is None else time.monotonic() + timeout
    replies: asyncio.Queue[tuple[int, int, list[StatusChange]]] = asyncio.Queue()
    pollers = [
        asyncio.create_task(poll_shard(bp, shard, group, cursors[shard], replies))
        for shard, group in groups.items()
    ]
    try:
        while current and not all(status in until for status in current.values()):
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return
            try:
                _, _, changes = await asyncio.wait_for(replies.get(), wait)
            except TimeoutError:
                return
            batch = []
            for change in changes:
                if current.get(change.result_id) != change.status:
                    current[change.result_id] = change.status
                    batch.append(change)
            if batch:
                yield batch
    finally:
        for poller in pollers:
            poller.cancel()


async def poll_shard(
    bp: Backplane,
    shard: int,
    result_ids: list[str],
    cursor: int,
    replies: asyncio.Queue[tuple[int, int, list[StatusChange]]],
) -> None:
    """Wait for changes on one shard in a loop and put each batch in `replies`."""
    actor = bp.actors.results[shard]
    while True:
        sequence, changes = await call(
            actor.wait_changes.remote(cursor, result_ids, 5.0)
        )
        if changes is None:
            # The shard's log no longer reaches the cursor: read current statuses.
            sequence, changes = await call(actor.snapshot.remote(result_ids))
        cursor = sequence
        if changes:
            await replies.put((shard, sequence, changes))
