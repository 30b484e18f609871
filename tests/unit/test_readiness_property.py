"""Property test: a task becomes ready exactly once, whatever the interleaving.

Submissions and completions run as the control plane runs them (see
`results_service/control/tasks_api.submit_tasks`, `results_api.complete_and_resolve`
and `backplane.Backplane.resolve` / `enqueue`), against two ResultsShard and two
TasksShard instances and one QueueState. Every shard call is one atomic step, as in
an actor. Hypothesis picks which flow takes its next step, and the order of the
calls that a flow makes in parallel.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from results_service.ids import group_by_shard
from results_service.records import (
    QueuedTask,
    ResultRecord,
    ResultStatus,
    TaskOptions,
    TaskRecord,
    TaskStatus,
)
from results_service.state.results_shard import ResultsShard
from results_service.state.task_queue import QueueState
from results_service.state.tasks_shard import TasksShard

SESSION = "s1"
PARTITION = "default"
SHARDS = 2
RESULT_IDS = [f"result-{i}" for i in range(5)]

Flow = Iterator[None]
Order = Callable[[Sequence[int]], list[int]]


class Cluster:
    """The shards of one deployment, and what the flows observed."""

    def __init__(self, inputs: dict[str, tuple[str, ...]]) -> None:
        self.results = [ResultsShard(i, event_log_size=1000) for i in range(SHARDS)]
        self.tasks = [TasksShard(i) for i in range(SHARDS)]
        self.queue = QueueState()
        self.inputs = inputs
        self.claims: list[str] = []
        self.early_claims: list[tuple[str, list[str]]] = []
        self.dispatched: list[str] = []

    def result_status(self, result_id: str) -> ResultStatus:
        shard = self.results[shard_index(result_id)]
        return shard.results[result_id].status

    def record_claims(self, ready: list[QueuedTask]) -> None:
        """Record claimed tasks, and those claimed before all their inputs completed."""
        for message in ready:
            incomplete = [
                result_id
                for result_id in self.inputs[message.task_id]
                if self.result_status(result_id) != ResultStatus.COMPLETED
            ]
            if incomplete:
                self.early_claims.append((message.task_id, incomplete))
            self.claims.append(message.task_id)


def shard_index(record_id: str) -> int:
    """Return the shard that owns an id, as the control plane picks it."""
    (shard,) = group_by_shard([record_id], SHARDS)
    return shard


def task_record(task_id: str, inputs: tuple[str, ...]) -> TaskRecord:
    return TaskRecord(
        task_id=task_id,
        session_id=SESSION,
        status=TaskStatus.CREATING,
        payload_id=inputs[0],
        data_dependencies=inputs[1:],
        expected_output_ids=(),
        options=TaskOptions(priority=1, partition_id=PARTITION),
        remaining=set(inputs),
    )


def sent(record: TaskRecord) -> TaskRecord:
    """Copy a record as Ray would when it is passed to an actor."""
    return dataclasses.replace(record, remaining=set(record.remaining))


# Flows: generators that yield after each atomic shard call.


def enqueue(cluster: Cluster, ready: list[QueuedTask], order: Order) -> Flow:
    """Mirror Backplane.enqueue: push to the queue, then mark on each tasks shard."""
    if not ready:
        return
    ordered = sorted(ready, key=lambda message: -message.priority)
    queued, parked = cluster.queue.push(ordered)
    yield
    submitted_groups = group_by_shard(queued, SHARDS)
    parked_groups = group_by_shard(parked, SHARDS)
    for shard in order(sorted(set(submitted_groups) | set(parked_groups))):
        cluster.tasks[shard].mark_queued(
            submitted_groups.get(shard, []), parked_groups.get(shard, [])
        )
        yield


def submit(cluster: Cluster, records: list[TaskRecord], order: Order) -> Flow:
    """Mirror submit_tasks from the insert of the tasks to their enqueue.

    The tasks have no expected outputs, so the output claims of step 2 are left out.
    """
    task_groups = group_by_shard([record.task_id for record in records], SHARDS)
    by_id = {record.task_id: record for record in records}
    for shard in order(sorted(task_groups)):
        cluster.tasks[shard].insert([sent(by_id[i]) for i in task_groups[shard]])
        yield

    pairs = [(result_id, r.task_id) for r in records for result_id in r.remaining]
    pair_groups: dict[int, list[tuple[str, str]]] = collections.defaultdict(list)
    for result_id, task_id in pairs:
        pair_groups[shard_index(result_id)].append((result_id, task_id))
    completed: set[str] = set()
    for shard in order(sorted(pair_groups)):
        completed.update(
            cluster.results[shard].register_dependents(SESSION, pair_groups[shard])
        )
        yield

    removals = {
        r.task_id: [result_id for result_id in r.remaining if result_id in completed]
        for r in records
    }
    ready: list[QueuedTask] = []
    for shard in order(sorted(task_groups)):
        ids = task_groups[shard]
        claimed = cluster.tasks[shard].remove_dependencies(
            [(task_id, removals[task_id]) for task_id in ids], ids
        )
        cluster.record_claims(claimed)
        ready.extend(claimed)
        yield
    yield from enqueue(cluster, ready, order)


def complete(cluster: Cluster, result_ids: list[str], order: Order) -> Flow:
    """Mirror complete_and_resolve and Backplane.resolve."""
    groups = group_by_shard(result_ids, SHARDS)
    waiting: dict[str, list[str]] = {}
    for shard in order(sorted(groups)):
        _, dependents = cluster.results[shard].complete(
            SESSION, [(result_id, b"object", 1) for result_id in groups[shard]]
        )
        waiting.update(dependents)
        yield

    per_task: dict[str, list[str]] = collections.defaultdict(list)
    for result_id, task_ids in waiting.items():
        for task_id in task_ids:
            per_task[task_id].append(result_id)
    task_groups = group_by_shard(per_task, SHARDS)
    ready: list[QueuedTask] = []
    for shard in order(sorted(task_groups)):
        claimed = cluster.tasks[shard].remove_dependencies(
            [(task_id, per_task[task_id]) for task_id in task_groups[shard]]
        )
        cluster.record_claims(claimed)
        ready.extend(claimed)
        yield
    yield from enqueue(cluster, ready, order)


def work(cluster: Cluster, attempts: int) -> Flow:
    """Mirror acquire_tasks: pop one message, then dispatch it on its shard."""
    for _ in range(attempts):
        messages = cluster.queue.pop(PARTITION, 1)
        yield
        for message in messages:
            granted = cluster.tasks[shard_index(message.task_id)].dispatch(
                [message], "worker", 60.0
            )
            cluster.dispatched.extend(record.task_id for record, _ in granted)
            yield


def run(flows: list[Flow], choose: Callable[[int], int]) -> None:
    """Advance the flows one step at a time, in the order `choose` picks."""
    active = list(flows)
    while active:
        index = choose(len(active))
        try:
            next(active[index])
        except StopIteration:
            active.pop(index)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, tuple[str, ...]], list[int], list]:
    """Draw tasks with their inputs, how they are batched and which results complete."""
    result_count = draw(st.integers(min_value=1, max_value=len(RESULT_IDS)))
    results = RESULT_IDS[:result_count]
    task_count = draw(st.integers(min_value=1, max_value=5))
    inputs = {}
    for index in range(task_count):
        chosen = draw(
            st.lists(st.sampled_from(results), min_size=1, max_size=3, unique=True)
        )
        inputs[f"task-{index}"] = tuple(chosen)
    submission_of = draw(
        st.lists(
            st.integers(min_value=0, max_value=2),
            min_size=task_count,
            max_size=task_count,
        )
    )
    # For each result: the completion flow that completes it, or None if none does.
    completion_of = draw(
        st.lists(
            st.one_of(st.none(), st.integers(min_value=0, max_value=2)),
            min_size=result_count,
            max_size=result_count,
        )
    )
    return inputs, submission_of, completion_of


@settings(max_examples=200, deadline=None)
@given(scenario=scenarios(), data=st.data())
def test_ready_task_claimed_once_after_inputs_complete(
    scenario: tuple[dict[str, tuple[str, ...]], list[int], list], data: st.DataObject
) -> None:
    inputs, submission_of, completion_of = scenario
    cluster = Cluster(inputs)
    results = RESULT_IDS[: len(completion_of)]
    for result_id in results:
        cluster.results[shard_index(result_id)].insert(
            [ResultRecord(SESSION, result_id, result_id, ResultStatus.CREATED)]
        )

    def order(keys: Sequence[int]) -> list[int]:
        return data.draw(st.permutations(list(keys)))

    submissions: dict[int, list[TaskRecord]] = collections.defaultdict(list)
    for (task_id, task_inputs), batch in zip(
        inputs.items(), submission_of, strict=True
    ):
        submissions[batch].append(task_record(task_id, task_inputs))
    completions: dict[int, list[str]] = collections.defaultdict(list)
    for result_id, batch in zip(results, completion_of, strict=True):
        if batch is not None:
            completions[batch].append(result_id)

    flows = [submit(cluster, records, order) for records in submissions.values()]
    flows += [complete(cluster, ids, order) for ids in completions.values()]
    flows.append(work(cluster, attempts=3))
    run(flows, lambda count: data.draw(st.integers(0, count - 1)))
    run([work(cluster, attempts=len(inputs) + 1)], lambda count: 0)

    completed = {
        r for r, batch in zip(results, completion_of, strict=True) if batch is not None
    }
    expected_ready = {t for t, ins in inputs.items() if set(ins) <= completed}
    claim_counts = collections.Counter(cluster.claims)
    dispatch_counts = collections.Counter(cluster.dispatched)

    assert cluster.early_claims == []
    assert [t for t, count in claim_counts.items() if count > 1] == []
    assert set(claim_counts) == expected_ready
    assert [t for t, count in dispatch_counts.items() if count > 1] == []
    assert set(dispatch_counts) == expected_ready
