"""State of the sessions table and the checks every flow makes on a session."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from results_service.errors import FailedPreconditionError, NotFoundError
from results_service.records import SessionRecord, SessionStatus, TaskOptions
from results_service.transitions import (
    SESSIONS_ACCEPTING_DATA,
    SESSIONS_ACCEPTING_SUBMISSIONS,
    move_session,
)

TIMESTAMP_FIELDS = {
    SessionStatus.CANCELLED: "cancelled_at",
    SessionStatus.CLOSED: "closed_at",
    SessionStatus.PURGED: "purged_at",
    SessionStatus.DELETED: "deleted_at",
}


def require_submissions_open(session: SessionRecord) -> None:
    """Raise unless the session takes new results and tasks."""
    if session.status not in SESSIONS_ACCEPTING_SUBMISSIONS:
        raise FailedPreconditionError(
            f"session {session.session_id} is {session.status.name} and takes no new "
            "results or tasks; create a new session",
            (session.session_id,),
        )


def require_data_accepted(session: SessionRecord) -> None:
    """Raise unless the session takes data for its results."""
    if session.status not in SESSIONS_ACCEPTING_DATA:
        raise FailedPreconditionError(
            f"session {session.session_id} is {session.status.name} and takes no data",
            (session.session_id,),
        )


class SessionsState:
    """Sessions by id."""

    def __init__(self) -> None:
        self.sessions: dict[str, SessionRecord] = {}

    def create(
        self, session_id: str, partition_ids: Sequence[str], defaults: TaskOptions
    ) -> SessionRecord:
        """Add a RUNNING session."""
        record = SessionRecord(
            session_id=session_id,
            status=SessionStatus.RUNNING,
            partition_ids=tuple(partition_ids),
            default_task_options=defaults,
            created_at=time.time(),
        )
        self.sessions[session_id] = record
        return record

    def get(self, session_id: str) -> SessionRecord:
        """Return a session, or raise NotFoundError."""
        record = self.sessions.get(session_id)
        if record is None:
            raise NotFoundError(
                f"session {session_id} was not found; create one with create_session",
                (session_id,),
            )
        return record

    def move(self, session_id: str, target: SessionStatus) -> SessionRecord:
        """Move a session to a new status and stamp the time of the event."""
        record = self.get(session_id)
        move_session(record, target)
        field = TIMESTAMP_FIELDS.get(target)
        if field is not None:
            setattr(record, field, time.time())
        return dataclasses.replace(record)

    def delete(self, session_id: str) -> None:
        """Forget a session."""
        self.sessions.pop(session_id, None)
