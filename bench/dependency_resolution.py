"""Dependency resolution: tasks made ready and queued per second.

A synthetic DAG of tasks, in levels, is submitted to the service. Then its results
are completed in batches with import_results_data, one small stored object per
result, inputs first and then each level's outputs. Every completion queues the
tasks it made ready, and the figure is tasks queued per second of completion
calls. With --concurrency N, N calls are in flight at once, as from N clients.
In the same run, the same completions go through two baselines:

- plain dicts: a map from result to waiting tasks and a set of remaining
  dependencies per task, in this process. This is the lower bound of the
  computation.
- shard logic: the service's own ResultsShard, TasksShard and QueueState, one of
  each, in this process. This is the service's computation without Ray.

Usage: python bench/dependency_resolution.py [--quick] [--json FILE]
       [--profile DIR] [--concurrency N]
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import common
import ray

from actors import ServiceActors
from results_service.records import (
    QueuedTask,
    ResultRecord,
    ResultStatus,
    TaskDefinition,
    TaskOptions,
    TaskRecord,
    TaskStatus,
    remaining_ids,
)
from results_service.state.results_shard import ResultsShard
from results_service.state.task_queue import QueueState
from results_service.state.tasks_shard import TasksShard
from results_service.storage import open_backend

TARGET_TASKS_PER_SECOND = 20_000
REFERENCE = (
    "ArmoniK publishes about 1,000 tasks/s on 100 pods and about 4,500 tasks/s on "
    "2,000 task handlers"
)


@dataclasses.dataclass(frozen=True)
class Dag:
    """A DAG of tasks linked by results, numbered 0..results-1.

    Results 0..inputs-1 are inputs, and task i writes result inputs + i. Tasks are
    in level order, and a task reads only inputs or outputs of the level before.
    """

    inputs: int
    dependencies: list[tuple[int, ...]]
    levels: list[range]

    @property
    def tasks(self) -> int:
        return len(self.dependencies)

    @property
    def results(self) -> int:
        return self.inputs + self.tasks

    def output(self, task: int) -> int:
        return self.inputs + task

    def completion_order(self) -> list[int]:
        """Inputs first, then the outputs of each level in turn."""
        return [
            *range(self.inputs),
            *(self.output(task) for level in self.levels for task in level),
        ]

    def edges(self) -> int:
        return sum(len(dependencies) for dependencies in self.dependencies)


def build_dag(tasks: int, levels: int, seed: int = 1) -> Dag:
    """Build levels of equal width.

    Each task reads two results of the level before, so a result feeds about two
    tasks and an input about twenty (fan-out). Every 100th task reads 100 of them
    (fan-in).
    """
    rng = random.Random(seed)
    inputs = max(1, tasks // 100)
    width = tasks // levels
    level_ranges = [
        range(level * width, tasks if level == levels - 1 else (level + 1) * width)
        for level in range(levels)
    ]
    dependencies: list[tuple[int, ...]] = []
    previous = range(inputs)
    for level in level_ranges:
        for task in level:
            count = min(100, len(previous)) if task % 100 == 99 else 2
            dependencies.append(tuple(sorted(rng.sample(previous, count))))
        previous = range(inputs + level.start, inputs + level.stop)
    return Dag(inputs, dependencies, level_ranges)


def batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


# Baseline 1: plain dicts


def resolve_with_dicts(dag: Dag, batch_size: int) -> tuple[float, int]:
    """Return the seconds the completions take and the tasks queued."""
    dependents: dict[int, list[int]] = defaultdict(list)
    remaining: dict[int, set[int]] = {}
    for task, dependencies in enumerate(dag.dependencies):
        remaining[task] = set(dependencies)
        for result in dependencies:
            dependents[result].append(task)
    queue: list[int] = []

    start = time.perf_counter()
    for batch in batches(dag.completion_order(), batch_size):
        for result in batch:
            for task in dependents.pop(result, ()):
                waiting = remaining[task]
                waiting.discard(result)
                if not waiting:
                    queue.append(task)
    return time.perf_counter() - start, len(queue)


# Baseline 2: the service's shard logic in this process


def resolve_with_shards(dag: Dag, batch_size: int) -> tuple[float, int]:
    """Run the completions through one ResultsShard, TasksShard and QueueState."""
    session = "bench-session"
    results = ResultsShard(0, 100_000)
    tasks = TasksShard(0)
    queue = QueueState()
    result_ids = [f"r{number:08d}" for number in range(dag.results)]
    task_ids = [f"t{number:08d}" for number in range(dag.tasks)]
    options = TaskOptions(partition_id="default")

    results.insert(
        [
            ResultRecord(session, str(number), result_id, ResultStatus.CREATED)
            for number, result_id in enumerate(result_ids)
        ]
    )
    records = [
        TaskRecord(
            task_id=task_id,
            session_id=session,
            status=TaskStatus.CREATING,
            payload_id="",
            data_dependencies=tuple(result_ids[r] for r in dag.dependencies[task]),
            expected_output_ids=(result_ids[dag.output(task)],),
            options=options,
            remaining=remaining_ids(result_ids[r] for r in dag.dependencies[task]),
        )
        for task, task_id in enumerate(task_ids)
    ]
    tasks.insert(records)
    results.register_dependents(
        session,
        [
            (dependency, record.task_id)
            for record in records
            for dependency in record.remaining
        ],
    )
    tasks.remove_dependencies([], task_ids)

    queued_total = 0
    start = time.perf_counter()
    for batch in batches(dag.completion_order(), batch_size):
        completions = [(result_ids[number], b"object", 6) for number in batch]
        _, waiting = results.complete(session, completions)
        per_task: dict[str, list[str]] = defaultdict(list)
        for result_id, waiters in waiting.items():
            for task_id in waiters:
                per_task[task_id].append(result_id)
        ready: list[QueuedTask] = tasks.remove_dependencies(per_task.items())
        ready.sort(key=lambda message: -message.priority)
        queued, parked = queue.push(ready)
        tasks.mark_queued(queued, parked)
        queued_total += len(queued)
    return time.perf_counter() - start, queued_total


# The service


def submit_dag(client: Any, session_id: str, dag: Dag) -> tuple[list[str], float]:
    """Create the results and submit the tasks; return result ids and submit seconds."""
    result_ids: list[str] = []
    for batch in batches([f"r{number}" for number in range(dag.results)], 10_000):
        result_ids.extend(
            record.result_id
            for record in client.create_results_metadata(session_id, batch)
        )
    (payload,) = client.create_results(session_id, {"payload": b"{}"})

    definitions = [
        TaskDefinition(
            payload.result_id,
            tuple(result_ids[r] for r in dependencies),
            (result_ids[dag.output(task)],),
        )
        for task, dependencies in enumerate(dag.dependencies)
    ]
    start = time.perf_counter()
    for batch in batches(definitions, 10_000):
        client.submit_tasks(session_id, batch)
    return result_ids, time.perf_counter() - start


SERVICE_PROCESSES = [
    "driver",
    "ControlPlane",
    "ResultsTable",
    "TasksTable",
    "TaskQueue",
    "ObjectStorage",
    "SessionsTable",
]


def write_objects(backend: Any, prefix: str, count: int) -> list[str]:
    """Write one small object per result to import.

    Real clients import one object per result. Importing one object into many
    results makes the service's holders_of check grow quadratically instead.
    """
    keys = [f"{prefix}/{number}" for number in range(count)]
    for key in keys:
        backend.put(key, b"object")
    return keys


def resolve_with_service(
    client: Any,
    actors: ServiceActors,
    dag: Dag,
    batch_size: int,
    keys: list[str],
    profiler: common.Profiler,
    cpu: common.CpuMeter,
    concurrency: int,
) -> dict[str, float]:
    """Submit the DAG in a new session and time its completion by imports, with
    `concurrency` calls in flight, sent in completion order."""
    session_id = client.create_session()
    result_ids, submit_seconds = submit_dag(client, session_id, dag)
    queued_before = ray.get(actors.queue.size.remote("default"))

    def complete(batch: list[int]) -> float:
        pairs = [(result_ids[number], keys[number]) for number in batch]
        return common.timed(lambda: client.import_results_data(session_id, pairs))

    with profiler, cpu, ThreadPoolExecutor(concurrency) as pool:
        start = time.perf_counter()
        calls = list(pool.map(complete, batches(dag.completion_order(), batch_size)))
        seconds = time.perf_counter() - start

    queued = ray.get(actors.queue.size.remote("default")) - queued_before
    client.delete_session(session_id)
    return {
        "seconds": seconds,
        "queued": queued,
        "submit_seconds": submit_seconds,
        "call_median": common.median(calls),
        "call_p99": common.p99(calls),
    }


def main() -> int:
    parser = common.build_parser(__doc__.split("\n\n")[0], repeats=3)
    parser.add_argument(
        "--tasks",
        type=int,
        default=None,
        help="tasks in the DAG (default 100000, 10000 with --quick)",
    )
    parser.add_argument(
        "--levels", type=int, default=10, help="levels of the DAG (default 10)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="results completed per call (default 1000)",
    )
    parser.add_argument(
        "--shards", type=int, default=4, help="shards of each table (default 4)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="import calls in flight at once, from client threads (default 1)",
    )
    arguments = parser.parse_args()
    tasks = arguments.tasks or (10_000 if arguments.quick else 100_000)
    info = common.machine_info()
    common.print_machine(info)

    dag = build_dag(tasks, arguments.levels)
    print(
        f"DAG: {dag.tasks} tasks in {len(dag.levels)} levels, {dag.inputs} inputs, "
        f"{dag.edges()} dependencies; completions in batches of "
        f"{arguments.batch_size}, {arguments.concurrency} in flight"
    )

    storage = common.temp_storage_dir("dependencies")
    settings = common.ServiceSettings(
        app_name="bench-dependencies",
        storage_url=f"file://{storage}",
        results_shards=arguments.shards,
        tasks_shards=arguments.shards,
    )
    client = common.start_service(settings)
    try:
        actors = ServiceActors.get_or_create(settings)
        backend = open_backend(settings)
        figures: dict[str, list[float]] = defaultdict(list)
        profiler = common.Profiler(arguments.profile, SERVICE_PROCESSES)
        cpu = common.CpuMeter()
        for repeat in range(arguments.repeats):
            # Deleting the session at the end of a repetition deletes the objects.
            keys = write_objects(backend, f"imports/bench-{repeat}", dag.results)
            # Only the last repetition is profiled, as py-spy slows the processes.
            last = repeat == arguments.repeats - 1
            service = resolve_with_service(
                client,
                actors,
                dag,
                arguments.batch_size,
                keys,
                profiler if last else common.Profiler(None, []),
                cpu,
                arguments.concurrency,
            )
            if service["queued"] != dag.tasks:
                print(
                    f"error: the service queued {service['queued']} of {dag.tasks} "
                    "tasks",
                    file=sys.stderr,
                )
                return 1
            dict_seconds, dict_queued = resolve_with_dicts(dag, arguments.batch_size)
            shard_seconds, shard_queued = resolve_with_shards(dag, arguments.batch_size)
            assert dict_queued == shard_queued == dag.tasks
            figures["service"].append(service["seconds"])
            figures["submit"].append(service["submit_seconds"])
            figures["call_median"].append(service["call_median"])
            figures["call_p99"].append(service["call_p99"])
            figures["dicts"].append(dict_seconds)
            figures["shards"].append(shard_seconds)
            print(
                f"repeat {repeat + 1}: service "
                f"{dag.tasks / service['seconds']:,.0f} tasks/s, shard logic "
                f"{dag.tasks / shard_seconds:,.0f}, dicts "
                f"{dag.tasks / dict_seconds:,.0f}",
                flush=True,
            )
        backend.close()
    finally:
        common.stop_ray([client])

    medians = {name: common.median(values) for name, values in figures.items()}
    rates = {
        "service": dag.tasks / medians["service"],
        "shards": dag.tasks / medians["shards"],
        "dicts": dag.tasks / medians["dicts"],
    }
    print()
    common.print_table(
        ["path", "tasks queued/s", "results completed/s", "ratio to dicts", "median s"],
        [
            [
                label,
                common.format_rate(rates[name]),
                common.format_rate(dag.results * rates[name] / dag.tasks),
                f"{rates[name] / rates['dicts']:.4f}",
                f"{medians[name]:.3f}",
            ]
            for name, label in (
                ("service", "service (import_results_data)"),
                ("shards", "shard logic in-process"),
                ("dicts", "plain dicts in-process"),
            )
        ],
    )
    print()
    print(
        f"import_results_data call of {arguments.batch_size} results: median "
        f"{common.format_seconds(medians['call_median'])}, p99 "
        f"{common.format_seconds(medians['call_p99'])}"
    )
    print(
        f"submission: {dag.tasks / medians['submit']:,.0f} tasks/s (batches of 10,000)"
    )
    print(f"reference: {REFERENCE}")
    status = "met" if rates["service"] >= TARGET_TASKS_PER_SECOND else "missed"
    print(
        f"target: >= {TARGET_TASKS_PER_SECOND:,} tasks/s: {status} "
        f"({rates['service']:,.0f})"
    )
    cpu.print(
        "the service's completions, all repetitions",
        per=dag.tasks * arguments.repeats,
        unit="task queued",
    )
    profiler.report()

    common.write_json(
        arguments.json_path,
        {
            "benchmark": "dependency_resolution",
            "machine": info,
            "tasks": dag.tasks,
            "inputs": dag.inputs,
            "dependencies": dag.edges(),
            "batch_size": arguments.batch_size,
            "repeats": arguments.repeats,
            "samples_seconds": dict(figures),
            "tasks_per_second": rates,
            "submit_tasks_per_second": dag.tasks / medians["submit"],
            "target_tasks_per_second": TARGET_TASKS_PER_SECOND,
            "target_met": rates["service"] >= TARGET_TASKS_PER_SECOND,
            "cpu_seconds": cpu.seconds,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
