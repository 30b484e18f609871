"""The one table of legal status moves for results, tasks and sessions.

Every status change in the service goes through `move_result`, `move_task` or
`move_session`; an illegal move raises FailedPreconditionError naming the id and
both statuses.
"""

from __future__ import annotations

from results_service.errors import FailedPreconditionError
from results_service.records import (
    ResultRecord,
    ResultStatus,
    SessionRecord,
    SessionStatus,
    TaskRecord,
    TaskStatus,
)

R = ResultStatus
T = TaskStatus
S = SessionStatus

RESULT_MOVES: dict[ResultStatus, frozenset[ResultStatus]] = {
    # Data is written once: only a CREATED result can complete.
    R.CREATED: frozenset({R.COMPLETED, R.ABORTED}),
    R.COMPLETED: frozenset({R.DELETED}),
    R.ABORTED: frozenset(),
    R.DELETED: frozenset(),
}

TASK_MOVES: dict[TaskStatus, frozenset[TaskStatus]] = {
    T.CREATING: frozenset({T.PENDING, T.SUBMITTED, T.PAUSED, T.CANCELLED, T.ERROR}),
    T.PENDING: frozenset({T.SUBMITTED, T.PAUSED, T.CANCELLED, T.ERROR}),
    # A task that lost an output dependency while queued ends in ERROR.
    T.SUBMITTED: frozenset({T.DISPATCHED, T.PAUSED, T.CANCELLED, T.ERROR}),
    T.PAUSED: frozenset({T.SUBMITTED, T.CANCELLED, T.ERROR}),
    # A lease that expires returns the task to SUBMITTED.
    T.DISPATCHED: frozenset(
        {
            T.PROCESSING,
            T.PROCESSED,
            T.SUBMITTED,
            T.ERROR,
            T.RETRIED,
            T.CANCELLED,
            T.TIMEOUT,
        }
    ),
    T.PROCESSING: frozenset(
        {T.PROCESSED, T.SUBMITTED, T.ERROR, T.RETRIED, T.CANCELLED, T.TIMEOUT}
    ),
    # PROCESSED: the worker finished and its outputs are being committed.
    T.PROCESSED: frozenset({T.COMPLETED, T.ERROR, T.CANCELLED}),
    T.COMPLETED: frozenset(),
    T.ERROR: frozenset(),
    T.TIMEOUT: frozenset(),
    T.CANCELLING: frozenset({T.CANCELLED}),
    T.CANCELLED: frozenset(),
    T.RETRIED: frozenset(),
}

SESSION_MOVES: dict[SessionStatus, frozenset[SessionStatus]] = {
    S.RUNNING: frozenset({S.PAUSED, S.CLOSED, S.CANCELLED, S.DELETED}),
    S.PAUSED: frozenset({S.RUNNING, S.CLOSED, S.CANCELLED, S.DELETED}),
    S.CLOSED: frozenset({S.CANCELLED, S.PURGED, S.DELETED}),
    S.CANCELLED: frozenset({S.PURGED, S.DELETED}),
    S.PURGED: frozenset({S.DELETED}),
    S.DELETED: frozenset(),
}

# Sessions that take new results, data and task submissions.
SESSIONS_ACCEPTING_SUBMISSIONS = frozenset({S.RUNNING, S.PAUSED})
# Sessions that take data for results already created, from clients and workers.
SESSIONS_ACCEPTING_DATA = frozenset({S.RUNNING, S.PAUSED, S.CLOSED})


def can_move_result(current: ResultStatus, target: ResultStatus) -> bool:
    """Tell whether a result may go from `current` to `target`."""
    return target in RESULT_MOVES.get(current, frozenset())


def can_move_task(current: TaskStatus, target: TaskStatus) -> bool:
    """Tell whether a task may go from `current` to `target`."""
    return target in TASK_MOVES[current]


def move_result(record: ResultRecord, target: ResultStatus) -> None:
    """Set a result's status, or raise FailedPreconditionError for an illegal move."""
    # NOTFOUND has no row because it only appears in replies, never on a record.
    if target not in RESULT_MOVES.get(record.status, frozenset()):
        raise FailedPreconditionError(
            f"result {record.result_id} cannot go from {record.status.name} to "
            f"{target.name}; only a CREATED result takes data, and only a COMPLETED "
            "one can have its data deleted",
            (record.result_id,),
        )
    record.status = target


def move_task(record: TaskRecord, target: TaskStatus) -> None:
    """Set a task's status, or raise FailedPreconditionError for an illegal move."""
    if target not in TASK_MOVES[record.status]:
        raise FailedPreconditionError(
            f"task {record.task_id} cannot go from {record.status.name} to "
            f"{target.name}",
            (record.task_id,),
        )
    record.status = target


def move_session(record: SessionRecord, target: SessionStatus) -> None:
    """Set a session's status, or raise FailedPreconditionError for an illegal move."""
    if target not in SESSION_MOVES[record.status]:
        allowed = ", ".join(
            sorted(s.name for s, moves in SESSION_MOVES.items() if target in moves)
        )
        raise FailedPreconditionError(
            f"session {record.session_id} cannot go from {record.status.name} to "
            f"{target.name}; that move needs a session in one of: {allowed or 'none'}",
            (record.session_id,),
        )
    record.status = target
