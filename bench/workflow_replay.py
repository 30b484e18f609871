"""Workflow replay: a real workflow through the service against the same DAG as
Ray core tasks, in the same run.

Ours: `run_replay` with no-op workers, file sizes scaled and runtimes times 0. It
creates the results and payloads, submits every task, uploads the inputs, lets the
replay workers acquire, download and complete the tasks, then verifies the run.

Ray core: one `ray.remote` function call per task, in topological order. Each call
gets the task's input files as ObjectRef arguments and returns zero-filled bytes
of the scaled size of each output. The inputs are `ray.put` first and the final
outputs are fetched with `ray.get` at the end. Ray core tasks ask for the
cluster's CPUs divided by the replay's workers, so as many run at once as the
replay has workers.

Usage: python bench/workflow_replay.py [--quick] [--json FILE] [--profile DIR]
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import common
import ray

from results_service.replay.runner import ReplayOptions, run_replay
from results_service.replay.trace import (
    Workflow,
    builtin_workflow,
    load_workflow,
    scaled_size,
)

WORKFLOWS = os.path.join(os.path.dirname(common.REPO_ROOT), "shared", "workflows")
FULL_TRACE = os.path.join(WORKFLOWS, "montage-chameleon-dss-15d-001.json")
QUICK_TRACE = os.path.join(WORKFLOWS, "montage-chameleon-2mass-01d-001.json")


@ray.remote
def run_task(output_sizes: tuple[int, ...], *inputs: bytes) -> Any:
    """Read every input's length and return zero-filled outputs of the given sizes."""
    sum(len(data) for data in inputs)
    outputs = tuple(bytes(size) for size in output_sizes)
    return outputs if len(outputs) > 1 else outputs[0]


def run_with_ray_core(workflow: Workflow, scale: float, cpus_per_task: float) -> float:
    """Run the workflow's DAG as Ray tasks; return the wall time in seconds."""
    start = time.perf_counter()
    references: dict[str, ray.ObjectRef] = {}
    for file_id in workflow.input_files:
        references[file_id] = ray.put(
            bytes(scaled_size(workflow.files[file_id].size, scale))
        )
    for task_id in workflow.order:
        task = workflow.tasks[task_id]
        sizes = tuple(
            scaled_size(workflow.files[file_id].size, scale) for file_id in task.outputs
        )
        outputs = run_task.options(
            num_returns=len(sizes), num_cpus=cpus_per_task
        ).remote(sizes, *(references[file_id] for file_id in task.inputs))
        if len(sizes) == 1:
            outputs = [outputs]
        references.update(zip(task.outputs, outputs, strict=True))
    finals = ray.get([references[file_id] for file_id in workflow.final_outputs])
    expected = [
        scaled_size(workflow.files[file_id].size, scale)
        for file_id in workflow.final_outputs
    ]
    if [len(data) for data in finals] != expected:
        raise RuntimeError("Ray core run returned outputs of unexpected sizes")
    return time.perf_counter() - start


def main() -> int:
    parser = common.build_parser(__doc__.split("\n\n")[0], repeats=3)
    parser.add_argument(
        "--trace",
        default=None,
        help="WfFormat trace (default montage-chameleon-dss-15d-001.json, or "
        "montage-chameleon-2mass-01d-001.json with --quick)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=0.001,
        help="factor applied to file sizes (default 0.001)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=4,
        help="replay workers, and Ray core tasks at once (default 4)",
    )
    parser.add_argument(
        "--shards", type=int, default=4, help="shards of each table (default 4)"
    )
    arguments = parser.parse_args()
    trace = arguments.trace or (QUICK_TRACE if arguments.quick else FULL_TRACE)
    info = common.machine_info()
    common.print_machine(info)

    workflow = load_workflow(trace)
    print(
        f"workflow {workflow.name} ({os.path.basename(trace)}): "
        f"{len(workflow.tasks)} tasks, {len(workflow.files)} files, sizes x "
        f"{arguments.scale:g}, runtimes x 0, {arguments.workers} workers",
        flush=True,
    )
    storage = common.temp_storage_dir("replay")
    settings = common.ServiceSettings(
        app_name="bench-replay",
        storage_url=f"file://{storage}",
        results_shards=arguments.shards,
        tasks_shards=arguments.shards,
    )
    options = ReplayOptions(
        scale=arguments.scale, time_scale=0.0, workers=arguments.workers
    )
    client = common.start_service(settings)
    cpus_per_task = ray.cluster_resources()["CPU"] / arguments.workers
    quiet = open(os.devnull, "w")  # noqa: SIM115 - closed in the finally below
    samples: dict[str, list[float]] = {
        "ours": [],
        "ours submit+execute": [],
        "ours execute": [],
        "ray core": [],
    }
    phases: list[dict[str, float]] = []
    try:
        # Untimed warm-up runs of both, so that worker processes and code are loaded.
        run_replay(client, settings, builtin_workflow(), options, progress_stream=quiet)
        run_with_ray_core(workflow, arguments.scale, cpus_per_task)
        profiler = common.Profiler(
            arguments.profile,
            [
                "driver",
                "ControlPlane",
                "ReplayWorker",
                "ResultsTable",
                "TasksTable",
                "TaskQueue",
                "ObjectStorage",
            ],
        )
        cpu = common.CpuMeter()
        for repeat in range(arguments.repeats):
            # Only the last repetition is profiled, as py-spy slows the processes.
            recorder = (
                profiler
                if repeat == arguments.repeats - 1
                else common.Profiler(None, [])
            )
            with recorder, cpu:
                start = time.perf_counter()
                report = run_replay(
                    client, settings, workflow, options, progress_stream=quiet
                )
                ours = time.perf_counter() - start
            if report.violations or report.worker_errors:
                print(
                    f"error: the replay had {len(report.violations)} violations and "
                    f"{len(report.worker_errors)} worker errors",
                    file=sys.stderr,
                )
                for violation in report.violations[:5]:
                    print(f"  {violation.kind}: {violation.message}", file=sys.stderr)
                for error in report.worker_errors[:5]:
                    print(f"  {error}", file=sys.stderr)
                return 1
            summary = report.summary
            core = run_with_ray_core(workflow, arguments.scale, cpus_per_task)
            samples["ours"].append(ours)
            samples["ours submit+execute"].append(
                summary.submission_seconds + summary.execution_seconds
            )
            samples["ours execute"].append(summary.execution_seconds)
            samples["ray core"].append(core)
            phases.append(
                {
                    "setup": summary.setup_seconds,
                    "submission": summary.submission_seconds,
                    "execution": summary.execution_seconds,
                    "verification": summary.verification_seconds,
                }
            )
            print(
                f"repeat {repeat + 1}: ours {ours:.1f} s (submission "
                f"{summary.submission_seconds:.1f}, execution "
                f"{summary.execution_seconds:.1f}, verification "
                f"{summary.verification_seconds:.1f}), Ray core {core:.1f} s",
                flush=True,
            )
    finally:
        quiet.close()
        common.stop_ray([client])

    core = common.median(samples["ray core"])
    print(f"\nmedians over {arguments.repeats} repetitions")
    common.print_table(
        ["run", "wall s", "tasks/s", "ratio to Ray core"],
        [
            [
                name,
                f"{common.median(values):.2f}",
                f"{len(workflow.tasks) / common.median(values):.0f}",
                f"{common.median(values) / core:.2f}",
            ]
            for name, values in samples.items()
        ],
    )
    ours = common.median(samples["ours"])
    print(
        "ours = run_replay from session creation to verification; submit+execute = its "
        "submission phase (creations, submission, start of the worker actors, input "
        "uploads) and execution phase; execute = from the inputs' upload until every "
        "result is final"
    )
    print(
        f"target: ours <= Ray core: {'met' if ours <= core else 'missed'} "
        f"({ours / core:.1f} x)"
    )
    cpu.print(
        "our replays, all repetitions",
        per=len(workflow.tasks) * arguments.repeats,
        unit="task",
    )
    profiler.report()
    common.write_json(
        arguments.json_path,
        {
            "benchmark": "workflow_replay",
            "machine": info,
            "trace": os.path.basename(trace),
            "tasks": len(workflow.tasks),
            "files": len(workflow.files),
            "scale": arguments.scale,
            "workers": arguments.workers,
            "samples_seconds": samples,
            "replay_phases_seconds": phases,
            "target_met": ours <= core,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
