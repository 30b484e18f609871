"""ResultsTable: the Ray actor that owns one shard of the results."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import ray

from results_service import filters
from results_service.records import RecordList, ResultRecord, StatusChange
from results_service.settings import ServiceSettings
from results_service.state.results_shard import ResultsShard

logger = logging.getLogger(__name__)

# How long a watch reply waits after its first change for the changes following it.
WATCH_BATCH_SECONDS = 0.02


@ray.remote(num_cpus=0, max_restarts=0)
class ResultsTable:
    """A shell around `ResultsShard`; every method is one atomic step on the shard.

    The actor is asynchronous only so that watchers can wait for changes; all other
    methods are plain functions that run one at a time on the event loop.
    """

    def __init__(self, shard: int, settings: ServiceSettings) -> None:
        self.state = ResultsShard(shard, settings.event_log_size)
        self.changed = asyncio.Condition()
        logger.info("ResultsTable shard %d started", shard)

    def _notify(self) -> None:
        async def wake() -> None:
            async with self.changed:
                self.changed.notify_all()

        asyncio.get_running_loop().create_task(wake())

    def ping(self) -> int:
        return self.state.shard

    def insert(self, records: Sequence[ResultRecord]) -> None:
        self.state.insert(records)
        self._notify()

    def remove(self, result_ids: Sequence[str]) -> None:
        self.state.remove(result_ids)

    def get_many(
        self, session_id: str | None, result_ids: Sequence[str]
    ) -> list[ResultRecord]:
        return RecordList(self.state.get_many(session_id, result_ids))

    def find_all(
        self, session_id: str, result_ids: Sequence[str]
    ) -> list[ResultRecord]:
        return RecordList(self.state.find_all(session_id, result_ids))

    def check_writable(self, session_id: str, result_ids: Sequence[str]) -> None:
        self.state.check_writable(session_id, result_ids)

    def complete(
        self,
        session_id: str,
        completions: Sequence[tuple[str, bytes, int]],
        owner_task_id: str | None = None,
    ) -> tuple[list[ResultRecord], dict[str, list[str]]]:
        records, dependents = self.state.complete(
            session_id, completions, owner_task_id
        )
        self._notify()
        return RecordList(records), dependents

    def delete_data(
        self, session_id: str, result_ids: Sequence[str]
    ) -> tuple[list[str], list[bytes]]:
        outcome = self.state.delete_data(session_id, result_ids)
        self._notify()
        return outcome

    def register_dependents(
        self, session_id: str, waiting: Sequence[tuple[str, str]]
    ) -> list[str]:
        return self.state.register_dependents(session_id, waiting)

    def unregister_dependents(self, waiting: Sequence[tuple[str, str]]) -> None:
        self.state.unregister_dependents(waiting)

    def claim_outputs(self, session_id: str, claims: Sequence[tuple[str, str]]) -> None:
        self.state.claim_outputs(session_id, claims)

    def transfer_outputs(
        self, claims: Sequence[tuple[str, str]], previous_owner: str | None
    ) -> None:
        self.state.transfer_outputs(claims, previous_owner)

    def owner_task_ids(
        self, session_id: str, result_ids: Sequence[str]
    ) -> dict[str, str]:
        return self.state.owner_task_ids(session_id, result_ids)

    def abort(
        self, session_id: str, result_ids: Sequence[str] | None = None
    ) -> dict[str, list[str]]:
        outcome = self.state.abort(session_id, result_ids)
        self._notify()
        return outcome

    def purge_session(self, session_id: str) -> tuple[list[bytes], list[bytes]]:
        outcome = self.state.purge_session(session_id)
        self._notify()
        return outcome

    def delete_session(self, session_id: str) -> int:
        return self.state.delete_session(session_id)

    def holders_of(
        self, opaque_ids: Sequence[bytes]
    ) -> list[tuple[bytes, str, str, bool]]:
        return self.state.holders_of(opaque_ids)

    def list(
        self,
        filter_groups: filters.Filters | None,
        sort: filters.Sort | None,
        limit: int,
        session_id: str | None = None,
    ) -> tuple[int, list[ResultRecord]]:
        predicate = filters.compile_filters(filter_groups, filters.RESULT_FIELDS)
        total, records = self.state.list(predicate, sort, limit, session_id)
        return total, RecordList(records)

    def snapshot(self, result_ids: Sequence[str]) -> tuple[int, list[StatusChange]]:
        return self.state.snapshot(result_ids)

    async def wait_changes(
        self, after: int, result_ids: Sequence[str], timeout: float
    ) -> tuple[int, list[StatusChange] | None]:
        """Return changes of the given ids after sequence `after`, waiting up to
        `timeout` seconds for the first one.

        Changes of other results do not end the wait. After the first change, the
        reply waits WATCH_BATCH_SECONDS more to take the changes that follow it,
        because completions come in bursts and each reply costs the watcher a call.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        watched = set(result_ids)
        while True:
            sequence, changes = self.state.changes_since(after, watched)
            if changes is None or changes:
                return sequence, changes
            # No watched change up to `sequence`, so the next read starts there.
            after = sequence
            remaining = deadline - loop.time()
            if remaining <= 0:
                return sequence, changes
            try:
                async with self.changed:
                    await asyncio.wait_for(
                        self.changed.wait_for(
                            lambda seen=after: self.state.sequence > seen
                        ),
                        remaining,
                    )
            except TimeoutError:
                return self.state.changes_since(after, watched)
            await asyncio.sleep(min(WATCH_BATCH_SECONDS, remaining))

    def count(self) -> int:
        return len(self.state.results)
