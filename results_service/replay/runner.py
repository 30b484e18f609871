"""Replay of a workflow through the service, from session creation to verification.

Mapping of a workflow onto the service:
- one session per replay;
- every file produced by a task is a result made by create_results_metadata;
- every task's payload (its command line and file map, as JSON) is a result made by
  create_results with inline data;
- every task is submitted with its input files as data dependencies and its output
  files as expected outputs;
- the workflow's input files are uploaded by the client after the submission, or
  written to the storage first and brought in with import_results_data.
All creation and submission calls go in batches.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import ray

from results_service.client import ResultsClient
from results_service.records import ResultCreate, ResultStatus, TaskDefinition
from results_service.replay.content import iter_file_chunks
from results_service.replay.trace import Workflow, scaled_size
from results_service.replay.verify import (
    ContentCheck,
    Summary,
    TaskRun,
    Violation,
    check_stream,
    downloaded_bytes,
    verify_run,
)
from results_service.replay.worker import ReplayWorker, make_payload
from results_service.settings import MiB, ServiceSettings
from results_service.storage import open_backend

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayOptions:
    """Options of one replay.

    Attributes:
        scale: factor applied to every file size of the trace.
        time_scale: factor applied to every task runtime; 0 runs tasks at once.
        workers: number of worker actors.
        batch_size: results or tasks per creation or submission call.
        use_import: write input files to the storage and import them, instead of
            uploading them through the service.
        timeout: seconds after which a replay that has not finished is abandoned.
        fault: fault injected in one worker, for tests of the verification.
    """

    scale: float = 0.001
    time_scale: float = 0.0
    workers: int = 4
    batch_size: int = 1000
    use_import: bool = False
    timeout: float = 3600.0
    fault: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayReport:
    """Outcome of a replay: its figures, its violations and the workers' errors."""

    summary: Summary
    violations: list[Violation]
    worker_errors: list[str]


def batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


class Progress:
    """A progress bar on a terminal, or a log line every few seconds otherwise."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last_line = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        elapsed = now - self.started
        if self.tty:
            width = 40
            filled = width * done // max(self.total, 1)
            self.stream.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                f"results completed, {elapsed:.1f} s"
            )
            self.stream.flush()
        elif now - self.last_line >= 2.0 or done == self.total:
            self.last_line = now
            self.stream.write(
                f"progress: {done}/{self.total} results completed, {elapsed:.1f} s\n"
            )
            self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run_replay(
    client: ResultsClient,
    settings: ServiceSettings,
    workflow: Workflow,
    options: ReplayOptions,
    setup_seconds: float = 0.0,
    progress_stream: TextIO | None = None,
) -> ReplayReport:
    """Replay a workflow through a running service and verify the run."""
    clock = time.monotonic()
    size_of: Callable[[str], int] = lambda file_id: scaled_size(  # noqa: E731
        workflow.files[file_id].size, options.scale
    )
    session_id = client.create_session()
    setup_seconds += time.monotonic() - clock

    clock = time.monotonic()
    result_ids = create_file_results(client, session_id, workflow, options.batch_size)
    payload_ids = create_payloads(
        client, session_id, workflow, result_ids, size_of, options.batch_size
    )
    submit_workflow(
        client, session_id, workflow, result_ids, payload_ids, options.batch_size
    )
    workers = start_workers(settings, options)
    uploaded = provide_inputs(
        client, settings, session_id, workflow, result_ids, size_of, options.use_import
    )
    submission_seconds = time.monotonic() - clock

    clock = time.monotonic()
    watched = [
        result_ids[file_id]
        for file_id in workflow.files
        if file_id not in workflow.input_files
    ]
    follow_progress(client, session_id, watched, options.timeout, progress_stream)
    execution_seconds = time.monotonic() - clock

    clock = time.monotonic()
    runs, worker_errors, worker_uploaded = stop_workers(workers)
    downloads = download_final_outputs(
        client, session_id, workflow, result_ids, size_of
    )
    file_of = {result_id: file_id for file_id, result_id in result_ids.items()}
    records = list_session_results(
        client, session_id, len(result_ids) + len(payload_ids)
    )
    statuses = {
        file_of[r.result_id]: r.status for r in records if r.result_id in file_of
    }
    completed_at = {
        file_of[r.result_id]: r.completed_at
        for r in records
        if r.result_id in file_of and r.completed_at is not None
    }
    violations = verify_run(
        workflow, runs, completed_at, statuses, downloads=downloads, scale=options.scale
    )
    verification_seconds = time.monotonic() - clock

    summary = Summary(
        workflow=workflow.name,
        scale=options.scale,
        tasks=len(workflow.tasks),
        results=len(result_ids),
        bytes_uploaded=uploaded + worker_uploaded,
        bytes_downloaded=downloaded_bytes(runs, downloads),
        setup_seconds=setup_seconds,
        submission_seconds=submission_seconds,
        execution_seconds=execution_seconds,
        verification_seconds=verification_seconds,
        violations=len(violations),
    )
    client.close_session(session_id)
    return ReplayReport(summary, violations, worker_errors)


def create_file_results(
    client: ResultsClient, session_id: str, workflow: Workflow, batch_size: int
) -> dict[str, str]:
    """Create one CREATED result per file, named by its file id."""
    file_ids = list(workflow.files)
    result_ids: dict[str, str] = {}
    for batch in batches(file_ids, batch_size):
        records = client.create_results_metadata(
            session_id, [ResultCreate(f) for f in batch]
        )
        result_ids.update(
            (file_id, record.result_id)
            for file_id, record in zip(batch, records, strict=True)
        )
    return result_ids


def create_payloads(
    client: ResultsClient,
    session_id: str,
    workflow: Workflow,
    result_ids: dict[str, str],
    size_of: Callable[[str], int],
    batch_size: int,
) -> dict[str, str]:
    """Create each task's payload result, with its data inline."""
    task_ids = list(workflow.tasks)
    payload_ids: dict[str, str] = {}
    for batch in batches(task_ids, batch_size):
        creates = []
        for task_id in batch:
            task = workflow.tasks[task_id]
            payload = make_payload(
                task_id,
                task.command,
                task.runtime_seconds,
                {f: (result_ids[f], size_of(f)) for f in task.inputs},
                {f: (result_ids[f], size_of(f)) for f in task.outputs},
            )
            creates.append(ResultCreate(f"payload:{task_id}", data=payload))
        records = client.create_results(session_id, creates)
        payload_ids.update(
            (task_id, record.result_id)
            for task_id, record in zip(batch, records, strict=True)
        )
    return payload_ids


def submit_workflow(
    client: ResultsClient,
    session_id: str,
    workflow: Workflow,
    result_ids: dict[str, str],
    payload_ids: dict[str, str],
    batch_size: int,
) -> None:
    """Submit every task, level after level, in batches."""
    for batch in batches(list(workflow.order), batch_size):
        definitions = []
        for task_id in batch:
            task = workflow.tasks[task_id]
            definitions.append(
                TaskDefinition(
                    payload_id=payload_ids[task_id],
                    data_dependencies=tuple(result_ids[f] for f in task.inputs),
                    expected_output_ids=tuple(result_ids[f] for f in task.outputs),
                    options={"priority": task.priority},
                )
            )
        client.submit_tasks(session_id, definitions)


def start_workers(settings: ServiceSettings, options: ReplayOptions) -> list[Any]:
    """Start the worker actors on the default partition."""
    return [
        ReplayWorker.remote(
            settings.app_name,
            f"replay-worker-{number}",
            settings.default_partition,
            options.time_scale,
            options.fault if number == 0 else None,
        )
        for number in range(options.workers)
    ]


def stop_workers(workers: list[Any]) -> tuple[list[TaskRun], list[str], int]:
    """Stop the workers and gather their runs, errors and bytes written."""
    outcomes = ray.get([worker.stop.remote() for worker in workers])
    for worker in workers:
        ray.kill(worker)
    runs = [run for worker_runs, _, _ in outcomes for run in worker_runs]
    errors = [error for _, worker_errors, _ in outcomes for error in worker_errors]
    return runs, errors, sum(uploaded for _, _, uploaded in outcomes)


def provide_inputs(
    client: ResultsClient,
    settings: ServiceSettings,
    session_id: str,
    workflow: Workflow,
    result_ids: dict[str, str],
    size_of: Callable[[str], int],
    use_import: bool,
) -> int:
    """Upload the workflow's input files, or write and import them; return bytes."""
    total = 0
    if not use_import:
        for file_id in workflow.input_files:
            size = size_of(file_id)
            client.upload_result_data(
                session_id,
                result_ids[file_id],
                iter_file_chunks(file_id, size, 4 * MiB),
            )
            total += size
        return total

    backend = open_backend(settings)
    pairs = []
    try:
        for number, file_id in enumerate(workflow.input_files):
            key = f"imports/{session_id}/{number}"
            size = size_of(file_id)
            writer = backend.open_writer(key)
            try:
                for chunk in iter_file_chunks(file_id, size, 4 * MiB):
                    writer.write(chunk)
                writer.commit()
            except BaseException:
                writer.abort()
                raise
            pairs.append((result_ids[file_id], key.encode()))
            total += size
    finally:
        backend.close()
    for batch in batches(pairs, 1000):
        client.import_results_data(session_id, list(batch))
    return total


def follow_progress(
    client: ResultsClient,
    session_id: str,
    watched: list[str],
    timeout: float,
    stream: TextIO | None,
) -> None:
    """Watch the produced results until every one is final or the timeout passes."""
    progress = Progress(len(watched), stream)
    done: set[str] = set()
    final = {ResultStatus.COMPLETED, ResultStatus.ABORTED, ResultStatus.DELETED}
    for change in client.watch_results(session_id, watched, timeout=timeout):
        if change.status in final:
            done.add(change.result_id)
        progress.update(len(done))
    progress.finish()
    if len(done) < len(watched):
        logger.warning(
            "replay timed out with %d of %d results final", len(done), len(watched)
        )


def download_final_outputs(
    client: ResultsClient,
    session_id: str,
    workflow: Workflow,
    result_ids: dict[str, str],
    size_of: Callable[[str], int],
) -> dict[str, ContentCheck]:
    """Download the workflow's final outputs and check their bytes."""
    checks: dict[str, ContentCheck] = {}
    for file_id in workflow.final_outputs:
        stream = client.download_result_data(session_id, result_ids[file_id])
        try:
            checks[file_id] = check_stream(file_id, size_of(file_id), stream)
        except Exception as error:
            checks[file_id] = ContentCheck(0, False, f"download failed: {error}")
    return checks


def list_session_results(
    client: ResultsClient, session_id: str, expected: int
) -> list[Any]:
    """Return every result of the session, page by page."""
    records: list[Any] = []
    page = 0
    while True:
        listing = client.list_results(page=page, page_size=5000, session_id=session_id)
        records.extend(listing.items)
        if not listing.items or len(records) >= listing.total:
            return records
        page += 1
