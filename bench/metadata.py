"""Metadata creation: results created per second by create_results_metadata.

Results are created in calls of 10,000 names each, one call after the other, in one
session. The figure is results per second of call time. Baselines in the same run,
in this process:

- building the same ResultRecord objects, with new ids and the same fields;
- building them, then inserting them into one ResultsShard, which is the
  service's own work without Ray;
- building them, then serializing them with cloudpickle as Ray does for every
  actor call and loading them back, which is the cost of one hop.

Usage: python bench/metadata.py [--quick] [--json FILE] [--profile DIR]
"""

from __future__ import annotations

import pickle
import sys
import time

import common
from ray import cloudpickle

from results_service.ids import new_id
from results_service.records import ResultRecord, ResultStatus
from results_service.state.results_shard import ResultsShard

TARGET_RESULTS_PER_SECOND = 200_000


def build_records(session_id: str, names: list[str]) -> list[ResultRecord]:
    """Build records as create_results_metadata does."""
    now = time.time()
    return [
        ResultRecord(
            session_id=session_id,
            name=name,
            result_id=new_id(),
            status=ResultStatus.CREATED,
            created_at=now,
            manual_deletion=False,
        )
        for name in names
    ]


def main() -> int:
    parser = common.build_parser(__doc__.split("\n\n")[0], repeats=30)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=10_000,
        help="results per call (default 10000)",
    )
    parser.add_argument(
        "--shards", type=int, default=4, help="ResultsTable shards (default 4)"
    )
    arguments = parser.parse_args()
    calls = min(arguments.repeats, 10) if arguments.quick else arguments.repeats
    size = arguments.batch_size
    info = common.machine_info()
    common.print_machine(info)

    storage = common.temp_storage_dir("metadata")
    settings = common.ServiceSettings(
        app_name="bench-metadata",
        storage_url=f"file://{storage}",
        results_shards=arguments.shards,
    )
    client = common.start_service(settings)
    service: list[float] = []
    built: list[float] = []
    inserted: list[float] = []
    pickled: list[float] = []
    try:
        session_id = client.create_session()
        shard = ResultsShard(0, 100_000)
        # One untimed call first, so that connections and code paths are warm.
        client.create_results_metadata(session_id, [f"warmup-{i}" for i in range(size)])
        names = [[f"result-{call}-{i}" for i in range(size)] for call in range(calls)]
        profiler = common.Profiler(
            arguments.profile,
            ["driver", "ControlPlane", "ResultsTable", "SessionsTable"],
        )
        cpu = common.CpuMeter()
        with profiler, cpu:
            for batch in names:
                service.append(
                    common.timed(
                        lambda batch=batch: client.create_results_metadata(
                            session_id, batch
                        )
                    )
                )
        for batch in names:
            built.append(
                common.timed(lambda batch=batch: build_records(session_id, batch))
            )
            inserted.append(
                common.timed(
                    lambda batch=batch: shard.insert(build_records(session_id, batch))
                )
            )
            pickled.append(
                common.timed(
                    lambda batch=batch: pickle.loads(
                        cloudpickle.dumps(build_records(session_id, batch))
                    )
                )
            )
    finally:
        common.stop_ray([client])

    rows = []
    rates = {}
    for name, samples in (
        ("service (create_results_metadata)", service),
        ("records built in-process", built),
        ("records built + ResultsShard.insert", inserted),
        ("records built + one cloudpickle round trip", pickled),
    ):
        rates[name] = size / common.median(samples)
        rows.append(
            [
                name,
                common.format_rate(rates[name]),
                common.format_seconds(common.median(samples)),
                common.format_seconds(common.p99(samples)),
            ]
        )
    baseline = rates["records built in-process"]
    for row, rate in zip(rows, rates.values(), strict=True):
        row.append(f"{rate / baseline:.3f}")
    print(f"\n{calls} calls of {size:,} results each, {arguments.shards} shards")
    common.print_table(
        ["path", "results/s", "median per call", "p99 per call", "ratio to built"], rows
    )
    ours = rates["service (create_results_metadata)"]
    status = "met" if ours >= TARGET_RESULTS_PER_SECOND else "missed"
    print(f"target: >= {TARGET_RESULTS_PER_SECOND:,} results/s: {status} ({ours:,.0f})")
    cpu.print("the service's calls", per=size * calls, unit="result")
    profiler.report()
    common.write_json(
        arguments.json_path,
        {
            "benchmark": "metadata",
            "machine": info,
            "calls": calls,
            "batch_size": size,
            "samples_seconds": {
                "service": service,
                "built": built,
                "built_inserted": inserted,
                "built_pickled": pickled,
            },
            "results_per_second": rates,
            "target_met": ours >= TARGET_RESULTS_PER_SECOND,
            "cpu_seconds": cpu.seconds,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
