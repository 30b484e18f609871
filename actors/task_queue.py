"""TaskQueue: the Ray actor that owns the queues of all partitions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import ray

from results_service.records import QueuedTask, RecordList
from results_service.settings import ServiceSettings
from results_service.state.task_queue import QueueState

logger = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=0)
class TaskQueue:
    """A shell around `QueueState` that lets idle workers wait for tasks."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.state = QueueState()
        self.arrived = asyncio.Condition()
        logger.info("TaskQueue started")

    def ping(self) -> int:
        return len(self.state.entries)

    def _notify(self) -> None:
        async def wake() -> None:
            async with self.arrived:
                self.arrived.notify_all()

        asyncio.get_running_loop().create_task(wake())

    def push(self, messages: Sequence[QueuedTask]) -> tuple[list[str], list[str]]:
        outcome = self.state.push(messages)
        if outcome[0]:
            self._notify()
        return outcome

    async def pop(
        self, partition_id: str, count: int, wait_seconds: float
    ) -> list[QueuedTask]:
        """Take up to `count` tasks, waiting up to `wait_seconds` for the first."""
        taken = self.state.pop(partition_id, count)
        if taken or wait_seconds <= 0:
            return RecordList(taken)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while not taken:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with self.arrived:
                    await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                pass
            taken = self.state.pop(partition_id, count)
        return RecordList(taken)

    def size(self, partition_id: str) -> int:
        return self.state.size(partition_id)

    def contents(self, partition_id: str) -> list[QueuedTask]:
        return RecordList(self.state.contents(partition_id))

    def parked(self, session_id: str) -> list[str]:
        return list(self.state.parked.get(session_id, {}))

    def pause_session(self, session_id: str) -> list[str]:
        return self.state.pause_session(session_id)

    def resume_session(self, session_id: str) -> list[str]:
        moved = self.state.resume_session(session_id)
        if moved:
            self._notify()
        return moved

    def remove_session(self, session_id: str) -> int:
        return self.state.remove_session(session_id)

    def remove_tasks(self, session_id: str, task_ids: Sequence[str]) -> int:
        return self.state.remove_tasks(session_id, task_ids)
