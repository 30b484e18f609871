"""SessionsTable: the Ray actor that owns the sessions."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import ray

from results_service import filters
from results_service.records import SessionRecord, SessionStatus, TaskOptions
from results_service.settings import ServiceSettings
from results_service.state.sessions import SessionsState

logger = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=0)
class SessionsTable:
    """A shell around `SessionsState`."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.state = SessionsState()
        logger.info("SessionsTable started")

    def ping(self) -> int:
        return len(self.state.sessions)

    def create(
        self, session_id: str, partition_ids: Sequence[str], defaults: TaskOptions
    ) -> SessionRecord:
        record = self.state.create(session_id, partition_ids, defaults)
        logger.info(
            "session %s created with partitions %s", session_id, list(partition_ids)
        )
        return record

    def get(self, session_id: str) -> SessionRecord:
        return self.state.get(session_id)

    def move(self, session_id: str, target: SessionStatus) -> SessionRecord:
        record = self.state.move(session_id, target)
        logger.info("session %s is now %s", session_id, target.name)
        return record

    def delete(self, session_id: str) -> None:
        self.state.delete(session_id)
        logger.info("session %s deleted", session_id)

    def list(
        self,
        filter_groups: filters.Filters | None,
        sort: filters.Sort | None,
        page: int,
        page_size: int,
    ) -> tuple[int, list[SessionRecord]]:
        predicate = filters.compile_filters(filter_groups, filters.SESSION_FIELDS)
        matching = [
            record for record in self.state.sessions.values() if predicate(record)
        ]
        return len(matching), filters.select_page(
            matching, sort, "session_id", page, page_size
        )
