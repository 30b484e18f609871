"""State of the task queue: one priority queue per partition, and parked tasks.

Highest priority leaves first, and first in, first out within a priority. Tasks of
a paused session are parked outside the queues until the session resumes, so nothing
of a paused session is dispatched. A task id is in the queue at most once.
"""

from __future__ import annotations

import collections
import heapq
import itertools
from collections.abc import Iterable, Sequence

from results_service.records import QueuedTask


class QueueState:
    """Queued and parked tasks.

    Attributes:
        heaps: per partition, entries (-priority, sequence, task_id); entries whose
            sequence is not the task's current one in `sequences` are stale and
            skipped, as a task parked and queued again gets a new entry.
        entries: queued tasks by id.
        sequences: sequence number of each queued task's current heap entry.
        by_session: ids of each session's queued tasks.
        paused_sessions: sessions whose new tasks are parked.
        parked: per paused session, its tasks in arrival order.
    """

    def __init__(self) -> None:
        self.heaps: dict[str, list[tuple[int, int, str]]] = collections.defaultdict(
            list
        )
        self.entries: dict[str, QueuedTask] = {}
        self.sequences: dict[str, int] = {}
        self.by_session: dict[str, set[str]] = collections.defaultdict(set)
        self.paused_sessions: set[str] = set()
        self.parked: dict[str, dict[str, QueuedTask]] = collections.defaultdict(dict)
        self.counter = itertools.count()

    def push(self, messages: Iterable[QueuedTask]) -> tuple[list[str], list[str]]:
        """Queue tasks, or park those of paused sessions.

        Returns the ids queued and the ids parked; an id already queued or parked is
        in neither list.
        """
        queued: list[str] = []
        parked: list[str] = []
        for message in messages:
            task_id = message.task_id
            if task_id in self.entries or task_id in self.parked.get(
                message.session_id, ()
            ):
                continue
            if message.session_id in self.paused_sessions:
                self.parked[message.session_id][task_id] = message
                parked.append(task_id)
                continue
            self._enqueue(message)
            queued.append(task_id)
        return queued, parked

    def _enqueue(self, message: QueuedTask) -> None:
        sequence = next(self.counter)
        self.entries[message.task_id] = message
        self.sequences[message.task_id] = sequence
        self.by_session[message.session_id].add(message.task_id)
        heapq.heappush(
            self.heaps[message.partition_id],
            (-message.priority, sequence, message.task_id),
        )

    def _dequeue(self, task_id: str) -> QueuedTask | None:
        self.sequences.pop(task_id, None)
        return self.entries.pop(task_id, None)

    def _is_current(self, sequence: int, task_id: str) -> bool:
        return self.sequences.get(task_id) == sequence

    def pop(self, partition_id: str, count: int) -> list[QueuedTask]:
        """Take up to `count` tasks of a partition, highest priority first."""
        heap = self.heaps.get(partition_id)
        taken: list[QueuedTask] = []
        while heap and len(taken) < count:
            _, sequence, task_id = heapq.heappop(heap)
            if not self._is_current(sequence, task_id):
                continue
            message = self._dequeue(task_id)
            if message is None:
                continue
            self.by_session[message.session_id].discard(task_id)
            taken.append(message)
        return taken

    def size(self, partition_id: str) -> int:
        """Return the number of tasks queued in a partition."""
        return sum(1 for m in self.entries.values() if m.partition_id == partition_id)

    def contents(self, partition_id: str) -> list[QueuedTask]:
        """Return the queued tasks of a partition in the order they would leave."""
        heap = sorted(self.heaps.get(partition_id, []))
        return [
            self.entries[task_id]
            for _, sequence, task_id in heap
            if self._is_current(sequence, task_id)
        ]

    def pause_session(self, session_id: str) -> list[str]:
        """Park the session's queued tasks and every later one; return parked ids."""
        self.paused_sessions.add(session_id)
        moved = []
        # Park in arrival order, which resume_session keeps when it queues them back.
        queued = sorted(
            self.by_session.pop(session_id, set()),
            key=lambda task_id: self.sequences.get(task_id, -1),
        )
        for task_id in queued:
            message = self._dequeue(task_id)
            if message is not None:
                self.parked[session_id][task_id] = message
                moved.append(task_id)
        return moved

    def resume_session(self, session_id: str) -> list[str]:
        """Queue the session's parked tasks again in arrival order; return their ids."""
        self.paused_sessions.discard(session_id)
        parked = self.parked.pop(session_id, {})
        for message in parked.values():
            self._enqueue(message)
        return list(parked)

    def remove_session(self, session_id: str) -> int:
        """Drop every queued and parked task of a session; return how many."""
        self.paused_sessions.discard(session_id)
        removed = len(self.parked.pop(session_id, {}))
        for task_id in self.by_session.pop(session_id, set()):
            if self._dequeue(task_id) is not None:
                removed += 1
        return removed

    def remove_tasks(self, session_id: str, task_ids: Sequence[str]) -> int:
        """Drop given tasks of a session from the queue and the parked tasks."""
        removed = 0
        parked = self.parked.get(session_id, {})
        for task_id in task_ids:
            message = self.entries.get(task_id)
            if message is not None and message.session_id == session_id:
                self._dequeue(task_id)
                self.by_session[session_id].discard(task_id)
                removed += 1
            elif parked.pop(task_id, None) is not None:
                removed += 1
        return removed
