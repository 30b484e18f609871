"""Unit tests of the table of legal status moves in results_service/transitions.py.

Each test table below restates the legal moves on its own, so an accidental edit of
the service's table fails here. Every pair of statuses not listed must be rejected.
"""

from __future__ import annotations

import itertools

import pytest

from results_service import transitions
from results_service.errors import Code, FailedPreconditionError
from results_service.records import (
    ResultRecord,
    ResultStatus,
    SessionRecord,
    SessionStatus,
    TaskOptions,
    TaskRecord,
    TaskStatus,
)

R = ResultStatus
T = TaskStatus
S = SessionStatus

LEGAL_RESULT_MOVES = {
    (R.CREATED, R.COMPLETED),
    (R.CREATED, R.ABORTED),
    (R.COMPLETED, R.DELETED),
}

LEGAL_TASK_MOVES = {
    *(
        (T.CREATING, t)
        for t in (T.PENDING, T.SUBMITTED, T.PAUSED, T.CANCELLED, T.ERROR)
    ),
    *((T.PENDING, t) for t in (T.SUBMITTED, T.PAUSED, T.CANCELLED, T.ERROR)),
    *((T.SUBMITTED, t) for t in (T.DISPATCHED, T.PAUSED, T.CANCELLED, T.ERROR)),
    *((T.PAUSED, t) for t in (T.SUBMITTED, T.CANCELLED, T.ERROR)),
    *(
        (T.DISPATCHED, t)
        for t in (
            T.PROCESSING,
            T.PROCESSED,
            T.SUBMITTED,
            T.ERROR,
            T.RETRIED,
            T.CANCELLED,
            T.TIMEOUT,
        )
    ),
    *(
        (T.PROCESSING, t)
        for t in (T.PROCESSED, T.SUBMITTED, T.ERROR, T.RETRIED, T.CANCELLED, T.TIMEOUT)
    ),
    *((T.PROCESSED, t) for t in (T.COMPLETED, T.ERROR, T.CANCELLED)),
    (T.CANCELLING, T.CANCELLED),
}

LEGAL_SESSION_MOVES = {
    *((S.RUNNING, s) for s in (S.PAUSED, S.CLOSED, S.CANCELLED, S.DELETED)),
    *((S.PAUSED, s) for s in (S.RUNNING, S.CLOSED, S.CANCELLED, S.DELETED)),
    *((S.CLOSED, s) for s in (S.CANCELLED, S.PURGED, S.DELETED)),
    *((S.CANCELLED, s) for s in (S.PURGED, S.DELETED)),
    (S.PURGED, S.DELETED),
}

# NOTFOUND only appears in replies about unknown ids, never on a stored record.
RECORD_RESULT_STATUSES = [status for status in R if status != R.NOTFOUND]

RESULT_PAIRS = list(itertools.product(RECORD_RESULT_STATUSES, list(R)))
TASK_PAIRS = list(itertools.product(list(T), list(T)))
SESSION_PAIRS = list(itertools.product(list(S), list(S)))


def pair_id(pair: tuple[object, object]) -> str:
    current, target = pair
    return f"{current.name}-{target.name}"  # type: ignore[attr-defined]


def result_record(status: ResultStatus) -> ResultRecord:
    return ResultRecord(session_id="s1", name="n", result_id="r-17", status=status)


def task_record(status: TaskStatus) -> TaskRecord:
    return TaskRecord(
        task_id="t-17",
        session_id="s1",
        status=status,
        payload_id="p",
        data_dependencies=(),
        expected_output_ids=(),
        options=TaskOptions(),
    )


def session_record(status: SessionStatus) -> SessionRecord:
    return SessionRecord(
        session_id="s-17",
        status=status,
        partition_ids=("default",),
        default_task_options=TaskOptions(),
    )


# Results


@pytest.mark.parametrize(
    "pair", [p for p in RESULT_PAIRS if p in LEGAL_RESULT_MOVES], ids=pair_id
)
def test_move_result_legal_sets_status(pair: tuple[R, R]) -> None:
    current, target = pair
    record = result_record(current)

    transitions.move_result(record, target)

    assert record.status == target
    assert transitions.can_move_result(current, target)


@pytest.mark.parametrize(
    "pair", [p for p in RESULT_PAIRS if p not in LEGAL_RESULT_MOVES], ids=pair_id
)
def test_move_result_illegal_rejected(pair: tuple[R, R]) -> None:
    current, target = pair
    record = result_record(current)

    with pytest.raises(FailedPreconditionError) as caught:
        transitions.move_result(record, target)

    assert "r-17" in caught.value.message
    assert current.name in caught.value.message
    assert target.name in caught.value.message
    assert caught.value.ids == ("r-17",)
    assert caught.value.code == Code.FAILED_PRECONDITION
    assert record.status == current
    assert not transitions.can_move_result(current, target)


@pytest.mark.parametrize("target", list(R), ids=lambda status: status.name)
def test_move_result_from_notfound_rejected(target: ResultStatus) -> None:
    record = result_record(R.NOTFOUND)

    with pytest.raises(FailedPreconditionError) as caught:
        transitions.move_result(record, target)

    assert "r-17" in caught.value.message
    assert "NOTFOUND" in caught.value.message
    assert record.status == R.NOTFOUND


# Tasks


@pytest.mark.parametrize(
    "pair", [p for p in TASK_PAIRS if p in LEGAL_TASK_MOVES], ids=pair_id
)
def test_move_task_legal_sets_status(pair: tuple[T, T]) -> None:
    current, target = pair
    record = task_record(current)

    transitions.move_task(record, target)

    assert record.status == target
    assert transitions.can_move_task(current, target)


@pytest.mark.parametrize(
    "pair", [p for p in TASK_PAIRS if p not in LEGAL_TASK_MOVES], ids=pair_id
)
def test_move_task_illegal_rejected(pair: tuple[T, T]) -> None:
    current, target = pair
    record = task_record(current)

    with pytest.raises(FailedPreconditionError) as caught:
        transitions.move_task(record, target)

    assert "t-17" in caught.value.message
    assert current.name in caught.value.message
    assert target.name in caught.value.message
    assert caught.value.ids == ("t-17",)
    assert record.status == current
    assert not transitions.can_move_task(current, target)


@pytest.mark.parametrize(
    "status",
    [T.COMPLETED, T.ERROR, T.TIMEOUT, T.CANCELLED, T.RETRIED],
    ids=lambda status: status.name,
)
def test_final_task_status_has_no_move(status: TaskStatus) -> None:
    assert transitions.TASK_MOVES[status] == frozenset()


# Sessions


@pytest.mark.parametrize(
    "pair", [p for p in SESSION_PAIRS if p in LEGAL_SESSION_MOVES], ids=pair_id
)
def test_move_session_legal_sets_status(pair: tuple[S, S]) -> None:
    current, target = pair
    record = session_record(current)

    transitions.move_session(record, target)

    assert record.status == target


@pytest.mark.parametrize(
    "pair", [p for p in SESSION_PAIRS if p not in LEGAL_SESSION_MOVES], ids=pair_id
)
def test_move_session_illegal_rejected(pair: tuple[S, S]) -> None:
    current, target = pair
    record = session_record(current)

    with pytest.raises(FailedPreconditionError) as caught:
        transitions.move_session(record, target)

    assert "s-17" in caught.value.message
    assert current.name in caught.value.message
    assert target.name in caught.value.message
    assert caught.value.ids == ("s-17",)
    assert record.status == current


def test_move_session_illegal_names_allowed_sources() -> None:
    record = session_record(S.RUNNING)

    with pytest.raises(FailedPreconditionError) as caught:
        transitions.move_session(record, S.PURGED)

    assert "CANCELLED, CLOSED" in caught.value.message


# Tables


def test_result_table_covers_every_record_status() -> None:
    assert set(transitions.RESULT_MOVES) == set(RECORD_RESULT_STATUSES)


def test_task_table_covers_every_status() -> None:
    assert set(transitions.TASK_MOVES) == set(T)


def test_session_table_covers_every_status() -> None:
    assert set(transitions.SESSION_MOVES) == set(S)


def test_sessions_accepting_submissions() -> None:
    assert transitions.SESSIONS_ACCEPTING_SUBMISSIONS == {S.RUNNING, S.PAUSED}


def test_sessions_accepting_data() -> None:
    assert transitions.SESSIONS_ACCEPTING_DATA == {S.RUNNING, S.PAUSED, S.CLOSED}
