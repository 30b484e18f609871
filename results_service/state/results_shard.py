"""State of one ResultsTable shard: result records, their waiting tasks, and events.

Each method is one atomic step: the actor runs methods one at a time, so a result is
either completed before a task registers as its dependent (and the registration
reports it completed) or after (and the completion returns that task). Every method
checks all its inputs before changing anything, so a rejected call changes nothing.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterable, Sequence

from results_service import filters
from results_service.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from results_service.records import ResultRecord, ResultStatus, StatusChange
from results_service.transitions import move_result

logger = logging.getLogger(__name__)

# Results that can never complete: a task depending on one would wait forever.
UNUSABLE_STATUSES = frozenset({ResultStatus.ABORTED, ResultStatus.DELETED})


def reject_repeated_ids(result_ids: Sequence[str], what: str) -> None:
    """Raise InvalidArgumentError if a result id appears twice in one batch.

    A repeated id would pass the checks once and then fail halfway through the
    changes, breaking the all-or-none promise of the batch methods.
    """
    seen: set[str] = set()
    for result_id in result_ids:
        if result_id in seen:
            raise InvalidArgumentError(
                f"result {result_id} appears more than once in one {what} request. "
                "Give each result once.",
                (result_id,),
            )
        seen.add(result_id)


def task_list(tasks: str | set[str]) -> list[str]:
    """Return the dependents of a result, stored as one id or a set, sorted."""
    return [tasks] if isinstance(tasks, str) else sorted(tasks)


class ResultsShard:
    """Results owned by one shard, indexed by id and by session.

    Attributes:
        results: records by result id.
        dependents: for each CREATED result, the tasks waiting on its data: one
            task id, or a set of them. A result read by one task stores the id
            alone, because a set of one id takes 216 bytes more.
        by_session: ids of each session's results.
        events: the latest status changes, oldest first, for watchers.
        sequence: number of the latest status change.
        holders: for each stored object, the results whose data it is; imports
            check it so that no session takes another session's object.
    """

    def __init__(self, shard: int, event_log_size: int) -> None:
        self.shard = shard
        self.results: dict[str, ResultRecord] = {}
        self.dependents: dict[str, str | set[str]] = {}
        self.by_session: dict[str, set[str]] = collections.defaultdict(set)
        self.events: collections.deque[StatusChange] = collections.deque(
            maxlen=event_log_size
        )
        self.sequence = 0
        self.sealed_sessions: set[str] = set()
        self.holders: dict[bytes, set[str]] = {}

    def _hold(self, record: ResultRecord) -> None:
        if record.opaque_id:
            self.holders.setdefault(record.opaque_id, set()).add(record.result_id)

    def _release(self, record: ResultRecord) -> None:
        held = self.holders.get(record.opaque_id)
        if held is not None:
            held.discard(record.result_id)
            if not held:
                del self.holders[record.opaque_id]

    # Lookups

    def find(self, session_id: str, result_id: str) -> ResultRecord:
        """Return a result of the session, or raise NotFoundError."""
        record = self.results.get(result_id)
        if record is None or record.session_id != session_id:
            raise NotFoundError(
                f"result {result_id} was not found in session {session_id}; create it "
                "with create_results_metadata in that session first",
                (result_id, session_id),
            )
        return record

    def find_all(
        self, session_id: str, result_ids: Iterable[str]
    ) -> list[ResultRecord]:
        """Return results of the session, or raise NotFoundError naming each missing."""
        found: list[ResultRecord] = []
        missing: list[str] = []
        for result_id in result_ids:
            record = self.results.get(result_id)
            if record is None or record.session_id != session_id:
                missing.append(result_id)
            else:
                found.append(record)
        if missing:
            raise NotFoundError(
                f"results {', '.join(missing[:10])}"
                f"{f' and {len(missing) - 10} more' if len(missing) > 10 else ''} were "
                f"not found in session {session_id}",
                tuple(missing),
            )
        return found

    def get_many(
        self, session_id: str | None, result_ids: Sequence[str]
    ) -> list[ResultRecord]:
        """Return the results found, skipping unknown ids and other sessions'."""
        found = []
        for result_id in result_ids:
            record = self.results.get(result_id)
            if record is not None and (
                session_id is None or record.session_id == session_id
            ):
                found.append(record)
        return found

    # Creation

    def insert(self, records: Sequence[ResultRecord]) -> None:
        """Add new records; raise AlreadyExistsError, adding none, if an id is taken,
        and FailedPreconditionError if their session was purged or deleted."""
        sealed = {r.session_id for r in records if r.session_id in self.sealed_sessions}
        if sealed:
            raise FailedPreconditionError(
                f"sessions {sorted(sealed)} were purged or deleted and take no results",
                tuple(sorted(sealed)),
            )
        seen: set[str] = set()
        taken = []
        for record in records:
            if record.result_id in self.results or record.result_id in seen:
                taken.append(record.result_id)
            seen.add(record.result_id)
        if taken:
            raise AlreadyExistsError(
                f"result ids already exist or repeat in the batch: {taken[:10]}",
                tuple(taken),
            )
        for record in records:
            self.results[record.result_id] = record
            self.by_session[record.session_id].add(record.result_id)
            self._hold(record)
            self._record_event(record)

    def remove(self, result_ids: Iterable[str]) -> None:
        """Remove records, to roll back a creation that failed elsewhere."""
        for result_id in result_ids:
            record = self.results.pop(result_id, None)
            if record is not None:
                self.by_session[record.session_id].discard(result_id)
                self.dependents.pop(result_id, None)
                self._release(record)

    # Data

    def check_writable(self, session_id: str, result_ids: Sequence[str]) -> None:
        """Raise unless every result exists in the session and is CREATED."""
        for record in self.find_all(session_id, result_ids):
            if record.status != ResultStatus.CREATED:
                raise FailedPreconditionError(
                    f"result {record.result_id} is {record.status.name} and takes no "
                    "data; data is written once, into a CREATED result",
                    (record.result_id,),
                )

    def complete(
        self,
        session_id: str,
        completions: Sequence[tuple[str, bytes, int]],
        owner_task_id: str | None = None,
    ) -> tuple[list[ResultRecord], dict[str, list[str]]]:
        """Complete results with their stored data, all or none.

        `completions` contains (result_id, opaque_id, size) triples. With
        `owner_task_id`, each result must be owned by that task. Returns the
        completed records and, for each, the tasks that were waiting on it. The shard
        forgets those tasks.
        """
        ids = [result_id for result_id, _, _ in completions]
        reject_repeated_ids(ids, "completion")
        if session_id in self.sealed_sessions:
            raise FailedPreconditionError(
                f"session {session_id} was purged or deleted and takes no data",
                (session_id,),
            )
        self.check_writable(session_id, ids)
        if owner_task_id is not None:
            for result_id in ids:
                owner = self.results[result_id].owner_task_id
                if owner != owner_task_id:
                    raise FailedPreconditionError(
                        f"result {result_id} is owned by task {owner or '(none)'}, not "
                        f"by task {owner_task_id}",
                        (result_id, owner_task_id),
                    )

        now = time.time()
        completed = []
        waiting: dict[str, list[str]] = {}
        for result_id, opaque_id, size in completions:
            record = self.results[result_id]
            move_result(record, ResultStatus.COMPLETED)
            record.opaque_id = opaque_id
            record.size = size
            record.completed_at = now
            self._hold(record)
            completed.append(record)
            tasks = self.dependents.pop(result_id, None)
            if tasks:
                waiting[result_id] = task_list(tasks)
            self._record_event(record)
        return completed, waiting

    def delete_data(
        self, session_id: str, result_ids: Sequence[str]
    ) -> tuple[list[str], list[bytes]]:
        """Mark COMPLETED results DELETED and clear their opaque ids, all or none.

        Results with manual_deletion keep their stored object, which belongs to the
        user. Returns the ids now DELETED and the opaque ids to delete from storage.
        """
        records = self.find_all(session_id, result_ids)
        for record in records:
            if record.status not in (ResultStatus.COMPLETED, ResultStatus.DELETED):
                raise FailedPreconditionError(
                    f"result {record.result_id} is {record.status.name}; only the data "
                    "of a COMPLETED result can be deleted",
                    (record.result_id,),
                )
        deleted: list[str] = []
        objects: list[bytes] = []
        for record in records:
            if record.status == ResultStatus.DELETED:
                continue
            if not record.manual_deletion and record.opaque_id:
                objects.append(record.opaque_id)
            move_result(record, ResultStatus.DELETED)
            self._release(record)
            record.opaque_id = b""
            deleted.append(record.result_id)
            self._record_event(record)
        return deleted, objects

    # Dependencies and owners

    def register_dependents(
        self, session_id: str, waiting: Sequence[tuple[str, str]]
    ) -> list[str]:
        """Record tasks waiting on results, all or none.

        `waiting` contains (result_id, task_id) pairs. Unknown results raise
        NotFoundError; ABORTED or DELETED ones raise FailedPreconditionError. Returns
        the result ids already COMPLETED, which the caller removes from the tasks'
        remaining dependencies itself.
        """
        records = self.find_all(session_id, {result_id for result_id, _ in waiting})
        for record in records:
            if record.status in UNUSABLE_STATUSES:
                raise FailedPreconditionError(
                    f"result {record.result_id} is {record.status.name}, so a task "
                    "depending on it could never run; depend on a CREATED or "
                    "COMPLETED result",
                    (record.result_id,),
                )
        completed: set[str] = set()
        for result_id, task_id in waiting:
            if self.results[result_id].status == ResultStatus.COMPLETED:
                completed.add(result_id)
            else:
                self._add_dependent(result_id, task_id)
        return sorted(completed)

    def _add_dependent(self, result_id: str, task_id: str) -> None:
        tasks = self.dependents.get(result_id)
        if tasks is None:
            self.dependents[result_id] = task_id
        elif isinstance(tasks, set):
            tasks.add(task_id)
        elif tasks != task_id:
            self.dependents[result_id] = {tasks, task_id}

    def unregister_dependents(self, waiting: Sequence[tuple[str, str]]) -> None:
        """Forget tasks waiting on results, to roll back a failed submission."""
        for result_id, task_id in waiting:
            tasks = self.dependents.get(result_id)
            if tasks == task_id:
                del self.dependents[result_id]
            elif isinstance(tasks, set):
                tasks.discard(task_id)
                if not tasks:
                    del self.dependents[result_id]

    def claim_outputs(self, session_id: str, claims: Sequence[tuple[str, str]]) -> None:
        """Make tasks the owners of their expected outputs, all or none.

        `claims` contains (result_id, task_id) pairs. Each result must be CREATED and
        have no owner yet, so that exactly one task produces it.
        """
        reject_repeated_ids([result_id for result_id, _ in claims], "output claim")
        records = self.find_all(session_id, [result_id for result_id, _ in claims])
        for record in records:
            if record.status != ResultStatus.CREATED:
                raise FailedPreconditionError(
                    f"result {record.result_id} is {record.status.name}; an expected "
                    "output must be a CREATED result",
                    (record.result_id,),
                )
            if record.owner_task_id:
                raise FailedPreconditionError(
                    f"result {record.result_id} is already the output of task "
                    f"{record.owner_task_id}; create a new result for this task",
                    (record.result_id, record.owner_task_id),
                )
        for result_id, task_id in claims:
            self.results[result_id].owner_task_id = task_id

    def transfer_outputs(
        self, claims: Sequence[tuple[str, str]], previous_owner: str | None
    ) -> None:
        """Set the owner of results; skip those whose owner is not `previous_owner`.

        Used to roll back claims (new owner empty) and to hand a failed task's outputs
        to its retry.
        """
        for result_id, task_id in claims:
            record = self.results.get(result_id)
            if record is None:
                continue
            if previous_owner is None or record.owner_task_id == previous_owner:
                record.owner_task_id = task_id

    def owner_task_ids(
        self, session_id: str, result_ids: Sequence[str]
    ) -> dict[str, str]:
        """Return the owner task of each result; raise NotFoundError for unknown ids."""
        return {
            record.result_id: record.owner_task_id
            for record in self.find_all(session_id, result_ids)
        }

    # Aborts, purges and deletion

    def abort(
        self, session_id: str, result_ids: Iterable[str] | None = None
    ) -> dict[str, list[str]]:
        """Abort CREATED results: given ids, or every CREATED one of the session.

        Results in other statuses are skipped. Returns, for each aborted result, the
        tasks that were waiting on it.
        """
        ids = (
            self.by_session.get(session_id, set()) if result_ids is None else result_ids
        )
        waiting: dict[str, list[str]] = {}
        for result_id in list(ids):
            record = self.results.get(result_id)
            if record is None or record.session_id != session_id:
                continue
            if record.status != ResultStatus.CREATED:
                continue
            move_result(record, ResultStatus.ABORTED)
            tasks = self.dependents.pop(result_id, None)
            waiting[result_id] = task_list(tasks) if tasks else []
            self._record_event(record)
        return waiting

    def purge_session(self, session_id: str) -> tuple[list[bytes], list[bytes]]:
        """Mark the session's COMPLETED results DELETED and return the objects to
        delete and the objects to keep (those with manual_deletion)."""
        self.sealed_sessions.add(session_id)
        delete: list[bytes] = []
        keep: list[bytes] = []
        for result_id in self.by_session.get(session_id, set()):
            record = self.results[result_id]
            if record.manual_deletion:
                if record.opaque_id:
                    keep.append(record.opaque_id)
                continue
            if record.status != ResultStatus.COMPLETED:
                continue
            if record.opaque_id:
                delete.append(record.opaque_id)
            move_result(record, ResultStatus.DELETED)
            self._release(record)
            record.opaque_id = b""
            self._record_event(record)
        return delete, keep

    def delete_session(self, session_id: str) -> int:
        """Remove every record of the session and return how many there were."""
        self.sealed_sessions.add(session_id)
        ids = self.by_session.pop(session_id, set())
        for result_id in ids:
            record = self.results.pop(result_id, None)
            self.dependents.pop(result_id, None)
            if record is not None:
                self._release(record)
        return len(ids)

    def holders_of(
        self, opaque_ids: Sequence[bytes]
    ) -> list[tuple[bytes, str, str, bool]]:
        """Return (opaque_id, session_id, result_id, manual_deletion) for each result
        of this shard whose data is one of the given stored objects."""
        found = []
        # Many results may import one object, so each id is looked up once.
        for opaque_id in dict.fromkeys(opaque_ids):
            for result_id in sorted(self.holders.get(opaque_id, ())):
                record = self.results[result_id]
                found.append(
                    (opaque_id, record.session_id, result_id, record.manual_deletion)
                )
        return found

    # Listing

    def list(
        self,
        predicate: filters.Predicate,
        sort: filters.Sort | None,
        limit: int,
        session_id: str | None = None,
    ) -> tuple[int, list[ResultRecord]]:
        """Return the number of matching results and the first `limit` in order."""
        pool: Iterable[ResultRecord]
        if session_id is not None:
            pool = (self.results[i] for i in self.by_session.get(session_id, ()))
        else:
            pool = self.results.values()
        matching = [record for record in pool if predicate(record)]
        return len(matching), filters.select_page(matching, sort, "result_id", 0, limit)

    # Events for watchers

    def _record_event(self, record: ResultRecord) -> None:
        self.sequence += 1
        self.events.append(StatusChange(record.result_id, record.status, self.sequence))

    def snapshot(self, result_ids: Sequence[str]) -> tuple[int, list[StatusChange]]:
        """Return the latest sequence and the current status of each id.

        Unknown ids are reported as NOTFOUND, once.
        """
        changes = []
        for result_id in result_ids:
            record = self.results.get(result_id)
            status = ResultStatus.NOTFOUND if record is None else record.status
            changes.append(StatusChange(result_id, status, self.sequence))
        return self.sequence, changes

    def changes_since(
        self, after: int, result_ids: set[str]
    ) -> tuple[int, list[StatusChange] | None]:
        """Return status changes of the given ids after sequence `after`.

        Returns None in place of the list when the log no longer reaches back to
        `after`; the caller then takes a new snapshot.
        """
        if after >= self.sequence:
            return self.sequence, []
        oldest = self.events[0].sequence if self.events else self.sequence + 1
        if after + 1 < oldest:
            return self.sequence, None
        changes = []
        for event in reversed(self.events):
            if event.sequence <= after:
                break
            if event.result_id in result_ids:
                changes.append(event)
        changes.reverse()
        return self.sequence, changes
