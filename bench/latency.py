"""Latency from a result's upload to its dependent task being in the queue.

On an idle service, results are created and one task is submitted per result,
depending on it, in two batch calls before each measure (untimed). Then, one
result at a time, the script times:

- upload: upload_result_data of a 1-byte result, which the client sends in one
  upload_inline call. The call returns after the control plane queued the
  dependent task, so its duration is the latency to the queue. After the loop,
  the queue is checked to contain every task;
- upload + acquire: the same upload followed by acquire_tasks, which returns the
  task to a worker: the latency to a worker, checked on every iteration;
- import: import_results_data of one result, the one-call way to complete it.

The three control-plane calls of a streamed upload (open_upload, write_upload,
finish_upload), which data above the inline limit takes, are also timed one by
one. Baselines measured in the same run: a no-op call to a
bare Serve deployment through the same kind of client, a no-op call to the
control plane, and a no-op call to a bare Ray actor. The CPU time that every Ray
process spends per call is measured over each loop.

Usage: python bench/latency.py [--quick] [--json FILE] [--profile DIR]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import common
import ray
from ray import serve

from actors import ServiceActors
from results_service.client import ResultsClient
from results_service.records import TaskDefinition
from results_service.storage import open_backend

TARGET_MEDIAN = 3e-3
TARGET_P99 = 10e-3
SERVICE_PROCESSES = [
    "driver",
    "ControlPlane",
    "ResultsTable",
    "TasksTable",
    "TaskQueue",
    "ObjectStorage",
    "SessionsTable",
]


@serve.deployment(
    ray_actor_options={"num_cpus": 0},
    logging_config={"log_level": "WARNING", "enable_access_log": False},
)
class Echo:
    """A bare deployment whose method does nothing."""

    def ping(self) -> None:
        return None


@ray.remote(num_cpus=0)
class Pinger:
    """A bare actor whose method does nothing."""

    def ping(self) -> None:
        return None


def time_each(
    items: list[Any], step: Callable[[Any], Any], warmup: int, cpu: common.CpuMeter
) -> tuple[list[float], list[Any]]:
    """Run `step` on each item and time it; the first `warmup` runs are untimed and
    the CPU meter covers the others. Returns the durations and the outcomes."""
    outcomes = [step(item) for item in items[:warmup]]
    samples = []
    with cpu:
        for item in items[warmup:]:
            start = time.perf_counter()
            outcomes.append(step(item))
            samples.append(time.perf_counter() - start)
    return samples, outcomes


class Bench:
    """The service, its session and the helpers that every measure uses."""

    def __init__(self, client: ResultsClient, settings: Any) -> None:
        self.client = client
        self.settings = settings
        self.actors = ServiceActors.get_or_create(settings)
        self.session_id = client.create_session()
        (payload,) = client.create_results(self.session_id, {"payload": b"{}"})
        self.payload_id = payload.result_id
        self.partition = settings.default_partition

    def waiting_results(self, count: int) -> list[str]:
        """Create `count` results, each with one task waiting on it."""
        records = self.client.create_results_metadata(
            self.session_id, [f"dependency-{i}" for i in range(count)]
        )
        result_ids = [record.result_id for record in records]
        self.client.submit_tasks(
            self.session_id,
            [TaskDefinition(self.payload_id, (result_id,)) for result_id in result_ids],
        )
        return result_ids

    def queued(self) -> int:
        return ray.get(self.actors.queue.size.remote(self.partition))

    def complete(self, tasks: list[Any]) -> None:
        for task in tasks:
            self.client.complete_task(self.session_id, task.task_id, task.lease_id, {})

    def drain(self, expected: int) -> None:
        """Check that `expected` tasks are queued, then run them all to the end."""
        queued = self.queued()
        if queued != expected:
            raise RuntimeError(f"expected {expected} queued tasks, found {queued}")
        tasks = self.client.acquire_tasks(self.partition, "bench-worker", expected, 0.0)
        self.complete(tasks)


def main() -> int:
    parser = common.build_parser(__doc__.split("\n\n")[0], repeats=1)
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="timed iterations per measure (default 200, 50 with --quick)",
    )
    parser.add_argument(
        "--warmup", type=int, default=20, help="untimed iterations first (default 20)"
    )
    arguments = parser.parse_args()
    count = arguments.iterations or (50 if arguments.quick else 200)
    warmup = arguments.warmup
    total = warmup + count
    info = common.machine_info()
    common.print_machine(info)

    storage = common.temp_storage_dir("latency")
    settings = common.ServiceSettings(
        app_name="bench-latency", storage_url=f"file://{storage}"
    )
    client = common.start_service(settings)
    samples: dict[str, list[float]] = {}
    meters: dict[str, common.CpuMeter] = {}

    def meter(name: str) -> common.CpuMeter:
        meters[name] = common.CpuMeter(interval=None)
        return meters[name]

    profiler = common.Profiler(arguments.profile, SERVICE_PROCESSES)
    try:
        bench = Bench(client, settings)
        session_id = bench.session_id

        result_ids = bench.waiting_results(total)
        with profiler:
            samples["upload"], _ = time_each(
                result_ids,
                lambda result_id: client.upload_result_data(
                    session_id, result_id, b"x"
                ),
                warmup,
                meter("upload"),
            )
        bench.drain(total)

        result_ids = bench.waiting_results(total)

        def upload_and_acquire(result_id: str) -> Any:
            client.upload_result_data(session_id, result_id, b"x")
            acquired = client.acquire_tasks(bench.partition, "bench-worker", 1, 1.0)
            if len(acquired) != 1:
                raise RuntimeError(
                    f"expected one task after the upload, got {acquired}"
                )
            return acquired[0]

        samples["upload + acquire"], tasks = time_each(
            result_ids, upload_and_acquire, warmup, meter("upload + acquire")
        )
        bench.complete(tasks)

        backend = open_backend(settings)
        keys = [f"imports/latency-{i}" for i in range(total)]
        for key in keys:
            backend.put(key, b"x")
        backend.close()
        result_ids = bench.waiting_results(total)
        samples["import"], _ = time_each(
            list(zip(result_ids, keys, strict=True)),
            lambda pair: client.import_results_data(session_id, [pair]),
            warmup,
            meter("import"),
        )
        bench.drain(total)

        # The steps of a streamed upload, one call at a time.
        def call(method: str, *args: Any) -> Any:
            return client._run(client.aio._call(method, *args))

        steps: dict[str, list[float]] = {
            "open_upload": [],
            "ray.put + write_upload": [],
            "finish_upload": [],
        }
        result_ids = bench.waiting_results(total)
        for number, result_id in enumerate(result_ids):
            start = time.perf_counter()
            upload_id = call("open_upload", session_id, result_id, None, None)
            opened = time.perf_counter()
            call("write_upload", upload_id, [ray.put(b"x")])
            written = time.perf_counter()
            call("finish_upload", upload_id)
            finished = time.perf_counter()
            if number >= warmup:
                steps["open_upload"].append(opened - start)
                steps["ray.put + write_upload"].append(written - opened)
                steps["finish_upload"].append(finished - written)
        bench.drain(total)
        samples.update(steps)

        # Baselines.
        serve.run(Echo.bind(), name="bench-echo", route_prefix=None)
        echo = ResultsClient(serve.get_app_handle("bench-echo"))
        pinger = Pinger.remote()
        ray.get(pinger.ping.remote())
        calls = list(range(total))
        samples["bare Serve call"], _ = time_each(
            calls,
            lambda _: echo._run(echo.aio._call("ping")),
            warmup,
            meter("bare Serve call"),
        )
        samples["control plane no-op"], _ = time_each(
            calls,
            lambda _: call("get_service_configuration"),
            warmup,
            meter("control plane no-op"),
        )
        samples["bare actor call"], _ = time_each(
            calls,
            lambda _: ray.get(pinger.ping.remote()),
            warmup,
            meter("bare actor call"),
        )
        samples["shard actor call"], _ = time_each(
            calls,
            lambda _: ray.get(bench.actors.results[0].ping.remote()),
            warmup,
            meter("shard actor call"),
        )
        echo.close()
    finally:
        common.stop_ray([client])

    bare = common.median(samples["bare Serve call"])
    print(
        f"\n{count} timed iterations after {warmup} untimed ones; idle service, "
        "1-byte results"
    )
    rows = []
    for name, values in samples.items():
        cpu = "-"
        if name in meters:
            cpu = common.format_seconds(meters[name].total() / count)
        rows.append(
            [
                name,
                common.format_seconds(common.median(values)),
                common.format_seconds(common.p99(values)),
                f"{common.median(values) / bare:.1f}",
                cpu,
            ]
        )
    common.print_table(
        ["measure", "median", "p99", "median / bare Serve call", "CPU per call"],
        rows,
    )
    print("CPU per call: CPU time of every Ray process over the loop, per call")
    upload = samples["upload"]
    met = common.median(upload) <= TARGET_MEDIAN and common.p99(upload) <= TARGET_P99
    print(
        f"target: upload to queued median <= {TARGET_MEDIAN * 1e3:.0f} ms and p99 <= "
        f"{TARGET_P99 * 1e3:.0f} ms: {'met' if met else 'missed'}"
    )
    meters["upload"].print("the timed uploads", per=count, unit="upload")
    profiler.report()
    common.write_json(
        arguments.json_path,
        {
            "benchmark": "latency",
            "machine": info,
            "iterations": count,
            "warmup": warmup,
            "median_seconds": {name: common.median(v) for name, v in samples.items()},
            "p99_seconds": {name: common.p99(v) for name, v in samples.items()},
            "cpu_seconds_per_call": {
                name: meter.total() / count for name, meter in meters.items()
            },
            "target_met": met,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
