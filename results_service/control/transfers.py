"""Upload and download of result data through the control plane.

An upload is opened, written in windows of chunks, and finished; the bytes go to
the ObjectStorage actor as ObjectRefs, so they do not pass through the control plane.
A download is opened once at the control plane, which checks the result and signs a
token; the client then reads ranges straight from the ObjectStorage actor with that
token. An abandoned download holds no state anywhere, and a slow reader makes the
service hold only the range it asked for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pyarrow as pa

from actors import actor_name
from results_service import validation
from results_service.control.backplane import Backplane, call
from results_service.control.results_api import (
    complete_and_resolve,
    objects_not_held,
)
from results_service.errors import FailedPreconditionError, InvalidArgumentError
from results_service.ids import object_key
from results_service.records import (
    DownloadInfo,
    RecordList,
    ResultRecord,
    ResultStatus,
)
from results_service.state.sessions import require_data_accepted
from results_service.storage.base import LocalRoot

logger = logging.getLogger(__name__)

T = TypeVar("T")


async def no_check() -> None:
    """Stand in for a check that does not apply, in a parallel gather."""


# Data of at most this size can be uploaded in one upload_inline call.
INLINE_UPLOAD_BYTES = 256 * 1024


def check_upload_ids(
    bp: Backplane,
    session_id: str,
    result_id: str,
    task_id: str | None,
    lease_id: str | None,
) -> bool:
    """Check the ids of an upload; return whether it is a task output."""
    validation.check_id(session_id, "session_id", bp.limits)
    validation.check_id(result_id, "result_id", bp.limits)
    is_output = task_id is not None or lease_id is not None
    if is_output:
        validation.check_id(task_id, "task_id", bp.limits)
        validation.check_id(lease_id, "lease_id", bp.limits)
    return is_output


async def check_upload_target(
    bp: Backplane,
    session_id: str,
    result_id: str,
    task_id: str | None,
    lease_id: str | None,
    alongside: Awaitable[T],
) -> T:
    """Check that the result takes data, while `alongside` runs, and return its value.

    The checks read different actors, so they run in parallel with `alongside`.
    Their errors are raised in the order of a sequential check: session, task,
    then result, and before any error of `alongside`.
    """
    is_output = check_upload_ids(bp, session_id, result_id, task_id, lease_id)
    session_check = bp.session(session_id)
    result_check = call(
        bp.results_shard(result_id).check_writable.remote(session_id, [result_id])
    )
    if is_output:
        task_check = call(
            bp.tasks_shard(task_id).check_lease.remote(session_id, task_id, lease_id)
        )
    else:
        task_check = no_check()

    session, task, writable, value = await asyncio.gather(
        session_check, task_check, result_check, alongside, return_exceptions=True
    )
    if isinstance(session, BaseException):
        raise session
    require_data_accepted(session)
    if isinstance(task, BaseException):
        raise task
    if is_output and result_id not in task.expected_output_ids:
        raise FailedPreconditionError(
            f"result {result_id} is not an expected output of task {task_id}",
            (result_id, task_id),
        )
    if isinstance(writable, BaseException):
        raise writable
    if isinstance(value, BaseException):
        raise value
    return value


async def open_upload(
    bp: Backplane,
    session_id: str,
    result_id: str,
    task_id: str | None = None,
    lease_id: str | None = None,
) -> str:
    """Check that the result takes data and start writing an object for it.

    With a task and its lease, the data is a task output: it is staged on the task
    and the result completes only when the task completes.
    """
    await check_upload_target(bp, session_id, result_id, task_id, lease_id, no_check())
    context = {
        "session_id": session_id,
        "result_id": result_id,
        "task_id": task_id,
        "lease_id": lease_id,
    }
    return await call(
        bp.actors.storage.open_upload.remote(object_key(session_id), context)
    )


async def upload_inline(
    bp: Backplane,
    session_id: str,
    result_id: str,
    data: Any,
    task_id: str | None = None,
    lease_id: str | None = None,
) -> ResultRecord | None:
    """Write small data in one call, then complete the result as finish_upload does.

    The object is written while the checks run, and deleted when a check fails.
    """
    if not isinstance(data, (bytes, bytearray, memoryview, pa.Buffer)):
        raise InvalidArgumentError(
            f"data of result {result_id!r} is {type(data).__name__}; give bytes",
            (result_id,),
        )
    if len(data) > INLINE_UPLOAD_BYTES:
        raise InvalidArgumentError(
            f"upload_inline carries {len(data)} bytes; the limit is "
            f"{INLINE_UPLOAD_BYTES}, so upload larger data with open_upload",
            (result_id,),
        )
    check_upload_ids(bp, session_id, result_id, task_id, lease_id)

    async def write() -> tuple[bytes, int]:
        key = object_key(session_id)
        ((opaque_id, size),) = await call(
            bp.actors.storage.put_many.remote([(key, data)])
        )
        return opaque_id, size

    return await store_while_checking(
        bp, session_id, result_id, task_id, lease_id, write(), no_check
    )


async def store_while_checking(
    bp: Backplane,
    session_id: str,
    result_id: str,
    task_id: str | None,
    lease_id: str | None,
    store: Awaitable[tuple[bytes, int]],
    discard: Callable[[], Awaitable[None]],
) -> ResultRecord | None:
    """Store an object while the upload checks run, then complete the result.

    When a check fails, the stored object is deleted, or `discard` runs when the
    store did not finish.
    """
    stored = asyncio.ensure_future(store)
    try:
        opaque_id, size = await check_upload_target(
            bp, session_id, result_id, task_id, lease_id, stored
        )
    except BaseException:
        if stored.done() and not stored.cancelled() and stored.exception() is None:
            await bp.delete_objects([stored.result()[0]])
        else:
            await discard()
        raise
    return await commit_upload(
        bp, session_id, result_id, task_id, lease_id, opaque_id, size
    )


async def local_root(bp: Backplane) -> LocalRoot | None:
    """Return the storage directory that clients may write uploads into."""
    return await call(bp.actors.storage.local_root.remote())


async def finish_local_upload(
    bp: Backplane,
    session_id: str,
    result_id: str,
    upload_name: str,
    task_id: str | None = None,
    lease_id: str | None = None,
) -> ResultRecord | None:
    """Publish a file that the client wrote into the storage directory, then
    complete the result as finish_upload does.

    The file is published while the checks run, and deleted when a check fails.
    """
    if not isinstance(upload_name, str):
        raise InvalidArgumentError(
            f"upload name {upload_name!r} is invalid: give the name of the file",
            (str(upload_name),),
        )

    async def discard() -> None:
        await call(bp.actors.storage.discard.remote(upload_name))

    try:
        check_upload_ids(bp, session_id, result_id, task_id, lease_id)
    except BaseException:
        await discard()
        raise
    adopt = call(bp.actors.storage.adopt.remote(upload_name, object_key(session_id)))
    return await store_while_checking(
        bp, session_id, result_id, task_id, lease_id, adopt, discard
    )


async def write_upload(bp: Backplane, upload_id: str, chunks: Sequence[Any]) -> int:
    """Append a window of chunks (pyarrow Buffers, bytes or ObjectRefs to them)."""
    validation.check_id(upload_id, "upload_id", bp.limits)
    rejection = None
    if not isinstance(chunks, (list, tuple)):
        rejection = f"chunks must be a list, got {type(chunks).__name__}"
    elif len(chunks) > bp.settings.transfer_window_chunks * 4:
        rejection = (
            f"a write of {len(chunks)} chunks exceeds the limit of "
            f"{bp.settings.transfer_window_chunks * 4}; send smaller windows"
        )
    if rejection is not None:
        # A write the storage rejects aborts its upload, and so does this one.
        await call(bp.actors.storage.abort_upload.remote(upload_id))
        raise InvalidArgumentError(rejection, (upload_id,))
    return await call(bp.actors.storage.write.remote(upload_id, list(chunks)))


async def finish_upload(bp: Backplane, upload_id: str) -> ResultRecord | None:
    """Commit the object, then complete the result and queue the tasks now ready.

    Returns the completed result, or None for a task output, which is staged. If
    the result no longer takes data, the object just written is deleted.
    """
    validation.check_id(upload_id, "upload_id", bp.limits)
    context, opaque_id, size = await call(
        bp.actors.storage.commit_upload.remote(upload_id)
    )
    return await commit_upload(
        bp,
        context["session_id"],
        context["result_id"],
        context["task_id"],
        context["lease_id"],
        opaque_id,
        size,
    )


async def commit_upload(
    bp: Backplane,
    session_id: str,
    result_id: str,
    task_id: str | None,
    lease_id: str | None,
    opaque_id: bytes,
    size: int,
) -> ResultRecord | None:
    """Complete the result with a written object and queue the tasks now ready, or
    stage the object on its task when it is a task output."""
    try:
        if task_id is not None:
            previous = await call(
                bp.tasks_shard(task_id).stage_output.remote(
                    session_id, task_id, lease_id, result_id, (opaque_id, size)
                )
            )
            if previous:
                await bp.delete_objects([previous])
            return None
        (record,) = await complete_and_resolve(
            bp, session_id, [(result_id, opaque_id, size)]
        )
        return record
    except BaseException:
        logger.warning(
            "upload of result %s in session %s failed after its data was written; "
            "deleting the object unless the result holds it",
            result_id,
            session_id,
        )
        completion = (result_id, opaque_id, size)
        await bp.delete_objects(await objects_not_held(bp, session_id, [completion]))
        raise


async def abort_upload(bp: Backplane, upload_id: str) -> None:
    """Discard an upload and its partial object."""
    validation.check_id(upload_id, "upload_id", bp.limits)
    await call(bp.actors.storage.abort_upload.remote(upload_id))


# Data of at most this size comes back with open_downloads, saving a read call.
INLINE_READ_BYTES = 256 * 1024
# Total inline data per open_downloads call, so a reply stays small.
INLINE_READ_TOTAL = 16 * 1024 * 1024


async def open_download(bp: Backplane, session_id: str, result_id: str) -> DownloadInfo:
    """Check that the result has data and return a token to read it by ranges."""
    (info,) = await open_downloads(bp, session_id, [result_id])
    return info


async def open_downloads(
    bp: Backplane, session_id: str, result_ids: Any
) -> list[DownloadInfo]:
    """Check that each result has data; return read tokens, with the data itself for
    small results, in request order."""
    validation.check_id(session_id, "session_id", bp.limits)
    ids = validation.check_ids(result_ids, "result_ids", bp.limits)
    records = await bp.find_results(session_id, ids)
    for record in records:
        check_has_data(record)

    inline_max = min(INLINE_READ_BYTES, INLINE_READ_TOTAL // len(records))
    opened = await call(
        bp.actors.storage.open_reads.remote(
            [(record.opaque_id, record.size) for record in records], inline_max
        )
    )
    return RecordList(
        DownloadInfo(
            token=token,
            size=record.size,
            chunk_size=bp.settings.data_chunk_max_size,
            window_chunks=bp.settings.transfer_window_chunks,
            storage_actor=actor_name(bp.settings, "storage"),
            namespace=bp.settings.namespace,
            result_id=record.result_id,
            data=data,
            local_file=local_file,
        )
        for record, (token, data, local_file) in zip(records, opened, strict=True)
    )


def check_has_data(record: ResultRecord) -> None:
    """Raise FailedPreconditionError unless the result is COMPLETED."""
    if record.status == ResultStatus.COMPLETED:
        return
    reasons = {
        ResultStatus.CREATED: "has no data yet; wait until it is COMPLETED",
        ResultStatus.ABORTED: "was aborted and will never have data",
        ResultStatus.DELETED: "had its data deleted",
    }
    raise FailedPreconditionError(
        f"result {record.result_id} is {record.status.name}: "
        f"it {reasons[record.status]}",
        (record.result_id,),
    )
