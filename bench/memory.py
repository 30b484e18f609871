"""Memory per result record and per task record in the shard actors.

The service is filled with N results (create_results_metadata) and then N tasks
(submit_tasks). The RSS and USS of the ResultsTable and TasksTable shard processes
are read before and after each step, after a garbage collection in each actor.
Each task reads one shared "gate" result that never completes, so every task stays
PENDING and the queue stays empty, and writes one of the N results, so every task
has one dependency and one expected output.

Baselines:

- the deep size of one record: sys.getsizeof summed over every object that the
  record alone holds, also printed field by field;
- the tracemalloc figure of N records inserted into the service's shard state
  (ResultsShard, TasksShard, as many shards as the service) in this process. It
  adds the shards' indexes, the dict slots and the event log.

Usage: python bench/memory.py [--quick] [--json FILE]
"""

from __future__ import annotations

import enum
import gc
import sys
import time
import tracemalloc
from typing import Any

import common
import ray

from actors import ServiceActors
from results_service.ids import group_items_by_shard, new_id
from results_service.records import (
    ResultRecord,
    ResultStatus,
    TaskDefinition,
    TaskOptions,
    TaskRecord,
    TaskStatus,
    remaining_ids,
)
from results_service.state.results_shard import ResultsShard
from results_service.state.tasks_shard import TasksShard

TARGET_BYTES = 500


def deep_size(record: Any, shared: set[int]) -> int:
    """Return the bytes of `record` and of every object reachable from it, counting
    each object once and skipping those in `shared` and the singletons that every
    record points to and none owns (see `is_singleton`)."""
    return sum(field_sizes(record, shared).values())


def is_singleton(item: Any) -> bool:
    """Return whether `item` is an object that all records share: None, bools,
    enum members, empty strings and bytes, and the small ints that CPython caches
    (-5 to 256)."""
    if item is None or isinstance(item, (bool, enum.Enum)):
        return True
    if isinstance(item, (str, bytes)) and not item:
        return True
    return type(item) is int and -5 <= item <= 256


def field_sizes(record: Any, shared: set[int]) -> dict[str, int]:
    """Return the deep size of a slotted record split by field; the record object
    itself is under "(object)"."""
    seen: set[int] = set(shared)
    sizes = {"(object)": sys.getsizeof(record)}
    seen.add(id(record))
    for name in record.__slots__:
        total = 0
        stack = [getattr(record, name)]
        while stack:
            item = stack.pop()
            if id(item) in seen or is_singleton(item):
                continue
            seen.add(id(item))
            total += sys.getsizeof(item)
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, (list, tuple, set, frozenset)):
                stack.extend(item)
            elif hasattr(item, "__slots__"):
                stack.extend(
                    getattr(item, slot)
                    for slot in item.__slots__
                    if hasattr(item, slot)
                )
        sizes[name] = total
    return sizes


def sample_records(
    session_id: str, gate: str, payload: str
) -> tuple[ResultRecord, TaskRecord]:
    """Return a result and a task shaped as the benchmark stores them: the result
    as create_results_metadata makes it (no owner yet), the task with the gate as
    its one remaining dependency and one expected output."""
    result = ResultRecord(
        session_id=session_id,
        name="r123456",
        result_id=new_id(),
        status=ResultStatus.CREATED,
        created_at=time.time(),
    )
    task = TaskRecord(
        task_id=new_id(),
        session_id=session_id,
        status=TaskStatus.PENDING,
        payload_id=payload,
        data_dependencies=(gate,),
        expected_output_ids=(new_id(),),
        options=TaskOptions(partition_id="default"),
        remaining=remaining_ids((gate,)),
        created_at=time.time(),
    )
    return result, task


def in_process_figures(
    count: int, shards: int, event_log_size: int, batch_size: int
) -> dict[str, float]:
    """Return bytes per record of `count` records inserted into the shard state,
    split over `shards` shards as the service splits them, in this process."""
    session_id = new_id()
    gate = new_id()
    payload = new_id()
    options = TaskOptions(partition_id="default")
    gc.collect()
    tracemalloc.start()

    results = [ResultsShard(shard, event_log_size) for shard in range(shards)]
    records = [
        ResultRecord(
            session_id, f"r{i}", new_id(), ResultStatus.CREATED, created_at=time.time()
        )
        for i in range(count)
    ]
    for shard, group in group_items_by_shard(
        ((r.result_id, r) for r in records), shards
    ).items():
        results[shard].insert([record for _, record in group])
    del records
    after_results = tracemalloc.get_traced_memory()[0]

    tasks = [TasksShard(shard) for shard in range(shards)]
    task_records = [
        TaskRecord(
            task_id=new_id(),
            session_id=session_id,
            status=TaskStatus.PENDING,
            payload_id=payload,
            data_dependencies=(gate,),
            expected_output_ids=(new_id(),),
            # The tasks of one submission call share one options object, as
            # after unpickling in the service.
            options=batch_options,
            remaining=remaining_ids((gate,)),
            created_at=time.time(),
        )
        for first in range(0, count, batch_size)
        for batch_options in [TaskOptions(partition_id=options.partition_id)]
        for _ in range(first, min(count, first + batch_size))
    ]
    for shard, group in group_items_by_shard(
        ((t.task_id, t) for t in task_records), shards
    ).items():
        tasks[shard].insert([record for _, record in group])
    del task_records
    after_tasks = tracemalloc.get_traced_memory()[0]

    tracemalloc.stop()
    del results, tasks
    return {
        "result": after_results / count,
        "task": (after_tasks - after_results) / count,
    }


def collect_garbage(handles: list[Any]) -> None:
    ray.get(
        [handle.__ray_call__.remote(lambda _self: gc.collect()) for handle in handles]
    )


def main() -> int:
    parser = common.build_parser(__doc__.split("\n\n")[0], repeats=1)
    parser.add_argument(
        "--records",
        type=int,
        default=None,
        help="results and tasks each (default 1000000, 100000 with --quick)",
    )
    parser.add_argument(
        "--shards", type=int, default=4, help="shards of each table (default 4)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=50_000,
        help="records per call (default 50000)",
    )
    arguments = parser.parse_args()
    count = arguments.records or (100_000 if arguments.quick else 1_000_000)
    info = common.machine_info()
    common.print_machine(info)

    storage = common.temp_storage_dir("memory")
    settings = common.ServiceSettings(
        app_name="bench-memory",
        storage_url=f"file://{storage}",
        results_shards=arguments.shards,
        tasks_shards=arguments.shards,
    )
    client = common.start_service(settings)
    try:
        actors = ServiceActors.get_or_create(settings)
        results_pids = [common.actor_pid(handle) for handle in actors.results]
        tasks_pids = [common.actor_pid(handle) for handle in actors.tasks]
        session_id = client.create_session()
        (payload,) = client.create_results(session_id, {"payload": b"{}"})
        (gate,) = client.create_results_metadata(session_id, ["gate"])

        collect_garbage(actors.results + actors.tasks)
        start = {
            "results": common.memory_of(results_pids),
            "tasks": common.memory_of(tasks_pids),
        }

        clock = time.perf_counter()
        result_ids: list[str] = []
        for first in range(0, count, arguments.batch_size):
            names = [
                f"r{i}" for i in range(first, min(count, first + arguments.batch_size))
            ]
            result_ids.extend(
                record.result_id
                for record in client.create_results_metadata(session_id, names)
            )
        results_seconds = time.perf_counter() - clock
        collect_garbage(actors.results + actors.tasks)
        with_results = {
            "results": common.memory_of(results_pids),
            "tasks": common.memory_of(tasks_pids),
        }
        print(f"{count:,} results created in {results_seconds:.1f} s", flush=True)

        clock = time.perf_counter()
        for first in range(0, count, arguments.batch_size):
            client.submit_tasks(
                session_id,
                [
                    TaskDefinition(payload.result_id, (gate.result_id,), (result_id,))
                    for result_id in result_ids[first : first + arguments.batch_size]
                ],
            )
        tasks_seconds = time.perf_counter() - clock
        collect_garbage(actors.results + actors.tasks)
        with_tasks = {
            "results": common.memory_of(results_pids),
            "tasks": common.memory_of(tasks_pids),
        }
        print(f"{count:,} tasks submitted in {tasks_seconds:.1f} s", flush=True)
        counts = (
            sum(ray.get([handle.count.remote() for handle in actors.results])),
            sum(ray.get([handle.count.remote() for handle in actors.tasks])),
        )
    finally:
        common.stop_ray([client])

    # Objects that a whole batch shares after unpickling are left out of the deep
    # size: the session id, the payload and gate ids, and the task options.
    session_id, gate_id, payload_id = new_id(), new_id(), new_id()
    result_sample, task_sample = sample_records(session_id, gate_id, payload_id)
    shared = {
        id(session_id),
        id(gate_id),
        id(payload_id),
        id(task_sample.options),
    }
    breakdown = {
        "result": field_sizes(result_sample, shared),
        "task": field_sizes(task_sample, shared),
    }
    deep = {kind: sum(sizes.values()) for kind, sizes in breakdown.items()}
    local = in_process_figures(
        count, arguments.shards, settings.event_log_size, arguments.batch_size
    )

    per_result = {
        kind: (with_results["results"][kind] - start["results"][kind]) / count
        for kind in ("rss", "uss")
    }
    per_task = {
        kind: (with_tasks["tasks"][kind] - with_results["tasks"][kind]) / count
        for kind in ("rss", "uss")
    }
    dependents = {
        kind: (with_tasks["results"][kind] - with_results["results"][kind]) / count
        for kind in ("rss", "uss")
    }
    print(
        f"\n{counts[0]:,} results and {counts[1]:,} tasks in {arguments.shards} + "
        f"{arguments.shards} shards"
    )
    common.print_table(
        [
            "record",
            "actors USS B/record",
            "actors RSS B/record",
            "in-process shard B/record",
            "deep size of one B",
            "USS / deep size",
        ],
        [
            [
                "result",
                f"{per_result['uss']:.0f}",
                f"{per_result['rss']:.0f}",
                f"{local['result']:.0f}",
                deep["result"],
                f"{per_result['uss'] / deep['result']:.2f}",
            ],
            [
                "task",
                f"{per_task['uss']:.0f}",
                f"{per_task['rss']:.0f}",
                f"{local['task']:.0f}",
                deep["task"],
                f"{per_task['uss'] / deep['task']:.2f}",
            ],
        ],
    )
    print(
        f"results shards grew by a further {dependents['uss']:.0f} B (USS) per task "
        "during the submission: dependent registrations and output owners"
    )
    for kind, sizes in breakdown.items():
        fields = ", ".join(f"{name} {size}" for name, size in sizes.items() if size)
        print(f"deep size of one {kind} by field, bytes: {fields}")
    met = per_result["uss"] <= TARGET_BYTES and per_task["uss"] <= TARGET_BYTES
    print(
        f"target: <= {TARGET_BYTES} B per result and per task (USS): "
        f"{'met' if met else 'missed'}"
    )
    common.write_json(
        arguments.json_path,
        {
            "benchmark": "memory",
            "machine": info,
            "records": count,
            "shards": arguments.shards,
            "memory_bytes": {
                "start": start,
                "with_results": with_results,
                "with_tasks": with_tasks,
            },
            "per_result": per_result,
            "per_task": per_task,
            "results_shards_per_task": dependents,
            "in_process_per_record": local,
            "deep_size": deep,
            "deep_size_by_field": breakdown,
            "seconds": {"results": results_seconds, "tasks": tasks_seconds},
            "target_met": met,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
