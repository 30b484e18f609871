"""Command line of the Results service: `results-service replay [TRACE]`.

The replay starts a local single-node Ray bound to 127.0.0.1, runs the service on it,
replays a workflow trace (or the built-in workflow) with a pool of workers, verifies
the run, and prints a summary table. It exits with 0 when every check passed, 1 when
a check failed, and 2 for invalid input.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

logger = logging.getLogger(__name__)

DEFAULT_TRACE_SCALE = 0.001


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="results-service",
        description="Run workflows through the Results service on a local Ray.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser(
        "replay",
        help="replay a WfFormat workflow trace end to end and verify it",
        description=(
            "Replay a WfFormat trace (or the built-in workflow when no file is given) "
            "through the service on a local Ray, then verify that every task ran once, "
            "after its inputs, and that every byte read was the byte written."
        ),
    )
    replay.add_argument(
        "trace", nargs="?", help="WfFormat JSON file; default: built-in workflow"
    )
    replay.add_argument(
        "--scale",
        type=float,
        default=None,
        help=f"factor applied to file sizes (default {DEFAULT_TRACE_SCALE} for a trace "
        "file, 1 for the built-in workflow)",
    )
    replay.add_argument(
        "--time-scale",
        type=float,
        default=0.0,
        help="factor applied to task runtimes; workers sleep runtime x factor "
        "(default 0)",
    )
    replay.add_argument(
        "--workers", type=int, default=4, help="worker actors (default 4)"
    )
    replay.add_argument(
        "--storage-url",
        default=None,
        help="file:///dir, s3://bucket/prefix or memory:// (default: a directory under "
        "the system temp dir, or RESULTS_SERVICE_STORAGE_URL)",
    )
    replay.add_argument(
        "--import-inputs",
        action="store_true",
        help="write the workflow's input files to the storage and import them instead "
        "of uploading them",
    )
    replay.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="results or tasks per call (default 1000)",
    )
    replay.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds before giving up (default 3600)",
    )
    replay.add_argument(
        "--json", dest="json_path", help="also write the summary to this JSON file"
    )
    replay.add_argument(
        "--num-cpus", type=int, default=None, help="CPUs of the local Ray"
    )
    replay.add_argument(
        "--inject-fault",
        choices=["skip-download"],
        default=None,
        help="make one worker misbehave, to see the verification catch it",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    arguments = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    # Ray binds to the machine's address unless this is set before it is imported.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    return replay(arguments)


def replay(arguments: argparse.Namespace) -> int:
    from results_service.replay.trace import TraceError, builtin_workflow, load_workflow

    try:
        workflow = (
            load_workflow(arguments.trace) if arguments.trace else builtin_workflow()
        )
    except (TraceError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    scale = arguments.scale
    if scale is None:
        scale = DEFAULT_TRACE_SCALE if arguments.trace else 1.0
    checks = [
        (scale >= 0, f"--scale {scale} is invalid: give a number >= 0"),
        (
            arguments.time_scale >= 0,
            f"--time-scale {arguments.time_scale} is invalid: give a number >= 0",
        ),
        (
            arguments.workers >= 1,
            f"--workers {arguments.workers} is invalid: give at least 1",
        ),
        (
            arguments.batch_size >= 1,
            f"--batch-size {arguments.batch_size} is invalid: give at least 1",
        ),
    ]
    for ok, message in checks:
        if not ok:
            print(f"error: {message}", file=sys.stderr)
            return 2

    import ray
    from ray import serve

    from results_service.client import ResultsClient
    from results_service.errors import ServiceError
    from results_service.replay.runner import ReplayOptions, run_replay
    from results_service.replay.verify import format_table, to_json
    from results_service.settings import ServiceSettings

    try:
        settings = ServiceSettings.from_env()
        if arguments.storage_url:
            settings = settings.replace(storage_url=arguments.storage_url)
    except ServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    options = ReplayOptions(
        scale=scale,
        time_scale=arguments.time_scale,
        workers=arguments.workers,
        batch_size=arguments.batch_size,
        use_import=arguments.import_inputs,
        timeout=arguments.timeout,
        fault=arguments.inject_fault,
    )
    print(
        f"replaying {workflow.name} ({workflow.source}): {len(workflow.tasks)} tasks, "
        f"{len(workflow.files)} files, sizes scaled by {scale:g}, runtimes by "
        f"{arguments.time_scale:g}, storage {settings.storage_url}",
        file=sys.stderr,
    )

    clock = time.monotonic()
    client = ResultsClient.start_local(settings, num_cpus=arguments.num_cpus)
    try:
        report = run_replay(
            client, settings, workflow, options, time.monotonic() - clock
        )
    finally:
        client.close()
        serve.shutdown()
        ray.shutdown()

    print(format_table(report.summary))
    if arguments.json_path:
        with open(arguments.json_path, "w", encoding="utf-8") as file:
            json.dump(to_json(report.summary), file, indent=2)
    for error in report.worker_errors[:20]:
        print(f"worker error: {error}", file=sys.stderr)
    if report.violations:
        for violation in report.violations[:50]:
            print(
                f"violation {violation.kind}: {violation.message} "
                f"(ids: {', '.join(violation.ids)})"
            )
        if len(report.violations) > 50:
            print(f"... and {len(report.violations) - 50} more violations")
        print("verification FAILED")
        return 1
    print(
        "verification passed: every task ran once, after its inputs, and every "
        "byte matched"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
