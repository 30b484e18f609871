"""Records and statuses of results, tasks and sessions, with ArmoniK's numbering.

Records are plain slotted dataclasses so that a shard can hold millions of them and
Ray can pickle them in batches. Status changes go through `transitions.py`.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

RecordType = TypeVar("RecordType", bound=type)

# Per record class, the function that returns a record's field values in order.
ROW_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def pickled_as_row(cls: RecordType) -> RecordType:
    """Make a dataclass pickle as its class and a tuple of its field values.

    The default pickling of a slotted dataclass calls `dataclasses.fields` for
    every record, and Ray pickles every argument and reply, so the default pickling
    cost more than the shards' own work on batches of thousands of records (measured by
    bench/metadata.py).
    """
    names = tuple(field.name for field in dataclasses.fields(cls))
    row = operator.attrgetter(*names)

    def __reduce__(self: Any) -> tuple[Any, tuple[Any, ...]]:
        return cls, row(self)

    cls.__reduce__ = __reduce__  # type: ignore[attr-defined]
    ROW_GETTERS[cls] = row
    return cls


def rows_to_records(cls: type, rows: Iterable[tuple[Any, ...]]) -> RecordList:
    return RecordList([cls(*row) for row in rows])


class RecordList(list):  # type: ignore[type-arg]
    """A list of records of one class that pickles as a list of tuples.

    Pickling record by record makes a Python call per record, and this list makes
    one call in all. A list of mixed or unregistered classes pickles as a plain list.
    """

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self:
            cls = type(self[0])
            row = ROW_GETTERS.get(cls)
            if row is not None and all(type(item) is cls for item in self):
                return rows_to_records, (cls, [row(item) for item in self])
        return RecordList, (list(self),)


class ResultStatus(enum.IntEnum):
    """Status of a result, numbered as in ArmoniK's `result_status.proto`."""

    CREATED = 1  # metadata exists and no data was written yet
    COMPLETED = 2  # data is in the object storage
    ABORTED = 3  # the owner task failed or was cancelled, or the session was cancelled
    DELETED = 4  # the data was completed once and has been removed from the storage
    NOTFOUND = 127  # only in replies about unknown ids


class TaskStatus(enum.IntEnum):
    """Status of a task, numbered as in ArmoniK's `task_status.proto`."""

    CREATING = 1  # the submission has not finished yet
    SUBMITTED = 2  # in the queue of its partition
    DISPATCHED = 3  # acquired by a worker under a lease
    COMPLETED = 4
    ERROR = 5
    TIMEOUT = 6
    CANCELLING = 7
    CANCELLED = 8
    PROCESSING = 9  # the worker reported that it started
    PROCESSED = 10
    RETRIED = 11  # failed and replaced by a retry task
    PENDING = 12  # waiting for data dependencies
    PAUSED = 13  # ready, held back because the session is paused


class SessionStatus(enum.IntEnum):
    """Status of a session, numbered as in ArmoniK's `session_status.proto`."""

    RUNNING = 1
    CANCELLED = 2
    PAUSED = 3
    CLOSED = 4
    PURGED = 5
    DELETED = 6


FINAL_TASK_STATUSES = frozenset(
    {
        TaskStatus.COMPLETED,
        TaskStatus.ERROR,
        TaskStatus.TIMEOUT,
        TaskStatus.CANCELLED,
        TaskStatus.RETRIED,
    }
)
WAITING_TASK_STATUSES = frozenset({TaskStatus.CREATING, TaskStatus.PENDING})
RUNNING_TASK_STATUSES = frozenset({TaskStatus.DISPATCHED, TaskStatus.PROCESSING})


@pickled_as_row
@dataclasses.dataclass(frozen=True, slots=True)
class TaskOptions:
    """Options of a task; a session contains the defaults that a submission overrides.

    Attributes:
        priority: 1 (lowest) to 99 (highest); higher priorities leave the queue first.
        partition_id: the queue the task goes to; must be one of the session's.
        max_retries: how many times a failed task is retried before it is in ERROR.
        max_duration: seconds a worker may hold the task before its lease expires.
        options: free-form application settings passed to the worker.
    """

    priority: int = 1
    partition_id: str = ""
    max_retries: int = 1
    max_duration: float = 300.0
    options: dict[str, str] = dataclasses.field(default_factory=dict)


@pickled_as_row
@dataclasses.dataclass(slots=True)
class ResultRecord:
    """A named data slot of a session.

    Attributes:
        session_id: the session that owns the result.
        name: client-given name; not unique.
        result_id: server-made id.
        status: see `ResultStatus`.
        owner_task_id: the task expected to produce the data; the session id for
            results created with data, empty while no task owns it.
        created_by: the task that created the record; empty for clients.
        created_at: creation time, seconds since the epoch.
        completed_at: completion time, or None while no data was written.
        size: bytes of data; 0 until completed.
        opaque_id: key of the data in the object storage; empty without data.
        manual_deletion: the stored object belongs to the user, so purge and
            delete_results_data keep it.
    """

    session_id: str
    name: str
    result_id: str
    status: ResultStatus
    owner_task_id: str = ""
    created_by: str = ""
    created_at: float = 0.0
    completed_at: float | None = None
    size: int = 0
    opaque_id: bytes = b""
    manual_deletion: bool = False


# Remaining dependencies are kept in a tuple up to this many ids and in a set
# above. A tuple of one id takes 48 bytes against 216 for a set, and a set keeps
# removals from a task with thousands of dependencies linear.
REMAINING_SET_MIN = 16


def remaining_ids(ids: Iterable[str]) -> tuple[str, ...] | set[str]:
    """Return distinct ids in the compact form TaskRecord.remaining takes."""
    unique = dict.fromkeys(ids)
    return set(unique) if len(unique) > REMAINING_SET_MIN else tuple(unique)


def without_ids(
    remaining: tuple[str, ...] | set[str], removed: Iterable[str]
) -> tuple[str, ...] | set[str]:
    """Return `remaining` less the `removed` ids, in the compact form."""
    if isinstance(remaining, set):
        remaining.difference_update(removed)
        return remaining if len(remaining) > REMAINING_SET_MIN else tuple(remaining)
    removed_set = set(removed)
    return tuple(result_id for result_id in remaining if result_id not in removed_set)


@pickled_as_row
@dataclasses.dataclass(slots=True)
class TaskRecord:
    """A unit of work waiting on, or running with, results of its session.

    Attributes:
        task_id: server-made id.
        session_id: the session that owns the task.
        status: see `TaskStatus`.
        payload_id: the result holding the task's input description.
        data_dependencies: results that must be COMPLETED before the task runs.
        expected_output_ids: results the task produces.
        options: the session's defaults merged with the submission's options.
        remaining: ids among data_dependencies and payload_id not yet COMPLETED:
            a tuple, or a set above REMAINING_SET_MIN ids (see `remaining_ids`).
        retry_of: the task this one retries, or empty.
        retries: how many tasks failed before this one in its retry chain.
        created_at, submitted_at, started_at, ended_at: seconds since the epoch.
        worker_id: the worker holding the lease, or empty.
        lease_id: token of the current lease; a completion must present it.
        lease_expires_at: when the lease ends unless renewed.
        error: message of the failure that ended the task, if any.
        dispatched_at: when the current worker acquired the task.
        expirations: how many leases on the task expired.
    """

    task_id: str
    session_id: str
    status: TaskStatus
    payload_id: str
    data_dependencies: tuple[str, ...]
    expected_output_ids: tuple[str, ...]
    options: TaskOptions
    remaining: tuple[str, ...] | set[str] = ()
    retry_of: str = ""
    retries: int = 0
    created_at: float = 0.0
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    worker_id: str = ""
    lease_id: str = ""
    lease_expires_at: float | None = None
    error: str = ""
    dispatched_at: float | None = None
    expirations: int = 0


@pickled_as_row
@dataclasses.dataclass(slots=True)
class SessionRecord:
    """A group of results and tasks with shared default options.

    Attributes:
        session_id: server-made id.
        status: see `SessionStatus`.
        partition_ids: the queues its tasks may go to.
        default_task_options: options that submissions override field by field.
        created_at, cancelled_at, closed_at, purged_at, deleted_at: seconds since the
            epoch, or None until the event happens.
    """

    session_id: str
    status: SessionStatus
    partition_ids: tuple[str, ...]
    default_task_options: TaskOptions
    created_at: float = 0.0
    cancelled_at: float | None = None
    closed_at: float | None = None
    purged_at: float | None = None
    deleted_at: float | None = None


@pickled_as_row
@dataclasses.dataclass(frozen=True, slots=True)
class QueuedTask:
    """A message of the task queue: enough to dispatch without another lookup."""

    task_id: str
    session_id: str
    partition_id: str
    priority: int


@pickled_as_row
@dataclasses.dataclass(frozen=True, slots=True)
class StatusChange:
    """A result that reached a new status, as reported by watch_results."""

    result_id: str
    status: ResultStatus
    sequence: int


@pickled_as_row
@dataclasses.dataclass(frozen=True, slots=True)
class ResultCreate:
    """A result to create: a name, and data for create_results.

    Attributes:
        name: client-given name; not unique.
        manual_deletion: the stored object belongs to the user.
        data: the result's bytes, for create_results only.
    """

    name: str
    manual_deletion: bool = False
    data: bytes | None = None


@pickled_as_row
@dataclasses.dataclass(frozen=True, slots=True)
class TaskDefinition:
    """A task to submit.

    Attributes:
        payload_id: a result of the session holding the task's input description.
        data_dependencies: results that must be COMPLETED before the task runs.
        expected_output_ids: CREATED results of the session that the task produces.
        options: overrides of the session's and the request's task options: a dict
            of TaskOptions field names.
    """

    payload_id: str
    data_dependencies: tuple[str, ...] = ()
    expected_output_ids: tuple[str, ...] = ()
    options: dict[str, object] | None = None


@pickled_as_row
@dataclasses.dataclass(frozen=True, slots=True)
class TaskInfo:
    """Reply of submit_tasks for one task."""

    task_id: str
    payload_id: str
    data_dependencies: tuple[str, ...]
    expected_output_ids: tuple[str, ...]


@pickled_as_row
@dataclasses.dataclass(frozen=True, slots=True)
class AcquiredTask:
    """A task handed to a worker, with the lease it must present to finish it.

    `inputs` contains the opened downloads of the payload, then of each data
    dependency in order, when the worker asked for them with open_inputs;
    otherwise None.
    """

    task_id: str
    session_id: str
    lease_id: str
    lease_expires_at: float
    payload_id: str
    data_dependencies: tuple[str, ...]
    expected_output_ids: tuple[str, ...]
    options: TaskOptions
    retries: int
    inputs: tuple[DownloadInfo, ...] | None = None


@pickled_as_row
@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    """One page of a list request and the total number of matching records."""

    total: int
    page: int
    page_size: int
    items: list[object]


@pickled_as_row
@dataclasses.dataclass(frozen=True, slots=True)
class DownloadInfo:
    """Handle for reading a result's data in ranges.

    Attributes:
        token: proof, checked by the storage actor, that the control plane allowed
            this read; it names one stored object.
        size: bytes of data.
        chunk_size: maximum bytes per chunk.
        window_chunks: chunks to request per read call.
        storage_actor: name of the ObjectStorage actor that serves the reads.
        namespace: Ray namespace of that actor.
        result_id: the result whose data this is.
        data: the whole data when it is small, so no read is needed; else None.
        local_file: the object's file (path, device, inode, size, modification
            time in ns), which a client on the storage's machine may read itself.
    """

    token: bytes
    size: int
    chunk_size: int
    window_chunks: int
    storage_actor: str
    namespace: str
    result_id: str = ""
    data: Any = None
    local_file: tuple[str, int, int, int, int] | None = None


@pickled_as_row
@dataclasses.dataclass(frozen=True, slots=True)
class ServiceConfiguration:
    """Transfer settings clients follow, as get_service_configuration returns them.

    inline_upload_max_size is the largest upload that fits in one upload_inline
    call; 0 means that the service takes no inline uploads. local_root is the
    directory (path, device, inode) that a client on the storage's machine may
    write uploads into and pass to finish_local_upload, or None.
    """

    data_chunk_max_size: int
    transfer_window_chunks: int
    max_batch: int
    max_page_size: int
    max_name_length: int
    partitions: tuple[str, ...]
    inline_upload_max_size: int = 0
    local_root: tuple[str, int, int] | None = None
