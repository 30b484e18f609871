"""Check a finished replay against its workflow, from the records of the run.

The checks are pure: they take the workflow, the execution record that workers send
for each task run, the results' statuses and completion times read from the service,
and the client's checks of the downloaded outputs. `verify_run` returns every
`Violation` it finds, in a stable order, and an empty list for a correct run.

Times are seconds since the epoch. Worker and service clocks are compared directly,
which is exact on one node.
NOTE: on several nodes, clock skew can flag a correct run, so raise `clock_tolerance`.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from results_service.records import ResultStatus
from results_service.replay.content import check_content
from results_service.replay.trace import Workflow, scaled_size

logger = logging.getLogger(__name__)


class ContentCheck(NamedTuple):
    """A reader's check of one file: bytes received, whether they matched, and why not.

    A plain `(size, ok, error)` tuple is accepted wherever a ContentCheck is.
    """

    size: int
    ok: bool
    error: str = ""


CheckRecord = ContentCheck | tuple[int, bool, str]


def check_stream(
    file_id: str, size: int, chunks: Iterable[bytes | bytearray | memoryview]
) -> ContentCheck:
    """Read a stream of chunks and check it against the file's expected content."""
    received = 0

    def counted() -> Iterable[bytes | bytearray | memoryview]:
        nonlocal received
        for chunk in chunks:
            received += len(chunk)
            yield chunk

    mismatch = check_content(file_id, size, counted())
    return ContentCheck(received, mismatch is None, mismatch or "")


@dataclasses.dataclass(frozen=True, slots=True)
class TaskRun:
    """One execution of a task, as reported by the worker that ran it.

    Attributes:
        task_id: the workflow task that ran.
        worker_id: the worker that ran it, for messages.
        started_at: time the worker started the task, before any download.
        ended_at: time the worker finished, after uploading the outputs.
        inputs_checked: the check of each input file the worker downloaded.
    """

    task_id: str
    worker_id: str
    started_at: float
    ended_at: float
    inputs_checked: Mapping[str, CheckRecord]


class ViolationKind(enum.StrEnum):
    """Kind of check that a replay failed."""

    UNKNOWN_ID = "unknown_id"  # a record names a task or file not in the workflow
    NOT_RUN = "not_run"
    RUN_MORE_THAN_ONCE = "run_more_than_once"
    STARTED_BEFORE_INPUT = "started_before_input"  # input completed after the start
    OUTPUT_BEFORE_START = "output_before_start"  # output completed before the start
    INPUT_NOT_DOWNLOADED = "input_not_downloaded"
    OUTPUT_NOT_DOWNLOADED = "output_not_downloaded"  # final output the client skipped
    SIZE_MISMATCH = "size_mismatch"
    CONTENT_MISMATCH = "content_mismatch"
    RESULT_NOT_COMPLETED = "result_not_completed"


@dataclasses.dataclass(frozen=True, slots=True)
class Violation:
    """One failed check, with the task and file ids involved."""

    kind: ViolationKind
    ids: tuple[str, ...]
    message: str


def verify_run(
    workflow: Workflow,
    runs: Iterable[TaskRun],
    result_completed_at: Mapping[str, float],
    result_statuses: Mapping[str, ResultStatus | int],
    downloads: Mapping[str, CheckRecord] | None = None,
    scale: float = 1.0,
    clock_tolerance: float = 0.0,
) -> list[Violation]:
    """Check a finished run and return its violations, empty when it is correct.

    `result_completed_at` and `result_statuses` are keyed by file id. `downloads`
    contains the client's checks of downloaded files by file id. When it is given,
    every final output must be in it. When it is None, no client check is expected.
    `scale` is the size scale of the run, which sets the expected size of each file.
    """
    violations = _check_results(workflow, result_completed_at, result_statuses)

    runs_by_task: dict[str, list[TaskRun]] = collections.defaultdict(list)
    for run in runs:
        if run.task_id not in workflow.tasks:
            message = (
                f"worker {run.worker_id} ran task '{run.task_id}', which is not in "
                "the workflow"
            )
            violations.append(
                Violation(ViolationKind.UNKNOWN_ID, (run.task_id,), message)
            )
        else:
            runs_by_task[run.task_id].append(run)

    for task_id in workflow.order:
        task_runs = runs_by_task.get(task_id, [])
        violations.extend(_check_run_count(task_id, task_runs))
        for run in task_runs:
            violations.extend(
                _check_run(workflow, run, result_completed_at, scale, clock_tolerance)
            )

    if downloads is not None:
        violations.extend(_check_downloads(workflow, downloads, scale))
    logger.debug("Verified workflow %s: %d violations", workflow.name, len(violations))
    return violations


def _check_results(
    workflow: Workflow,
    completed_at: Mapping[str, float],
    statuses: Mapping[str, ResultStatus | int],
) -> list[Violation]:
    violations = []
    for file_id in workflow.files:
        status = statuses.get(file_id)
        if status is None:
            message = f"result '{file_id}' has no status: it was never created"
        elif status != ResultStatus.COMPLETED:
            message = f"result '{file_id}' is {_status_name(status)}, not COMPLETED"
        elif file_id not in completed_at:
            message = f"result '{file_id}' is COMPLETED but has no completion time"
        else:
            continue
        violations.append(
            Violation(ViolationKind.RESULT_NOT_COMPLETED, (file_id,), message)
        )
    return violations


def _status_name(status: ResultStatus | int) -> str:
    try:
        return ResultStatus(status).name
    except ValueError:
        return f"in unknown status {status}"


def _check_run_count(task_id: str, runs: list[TaskRun]) -> list[Violation]:
    if not runs:
        message = f"task '{task_id}' never ran"
        return [Violation(ViolationKind.NOT_RUN, (task_id,), message)]
    if len(runs) > 1:
        workers = ", ".join(run.worker_id for run in runs)
        message = f"task '{task_id}' ran {len(runs)} times, on workers {workers}"
        return [Violation(ViolationKind.RUN_MORE_THAN_ONCE, (task_id,), message)]
    return []


def _check_run(
    workflow: Workflow,
    run: TaskRun,
    completed_at: Mapping[str, float],
    scale: float,
    tolerance: float,
) -> list[Violation]:
    """Check one run's start against its inputs and outputs, and its downloads."""
    task = workflow.tasks[run.task_id]
    where = f"task '{task.task_id}' on worker {run.worker_id}"
    violations = []
    for file_id in task.inputs:
        completed = completed_at.get(file_id)
        if completed is not None and run.started_at + tolerance < completed:
            message = (
                f"{where} started at {run.started_at:.6f}, before its input "
                f"'{file_id}' was completed at {completed:.6f}"
            )
            violations.append(
                Violation(
                    ViolationKind.STARTED_BEFORE_INPUT, (task.task_id, file_id), message
                )
            )

        check = run.inputs_checked.get(file_id)
        if check is None:
            message = f"{where} never downloaded its input '{file_id}'"
            violations.append(
                Violation(
                    ViolationKind.INPUT_NOT_DOWNLOADED, (task.task_id, file_id), message
                )
            )
        else:
            expected = scaled_size(workflow.files[file_id].size, scale)
            ids = (task.task_id, file_id)
            violations.extend(_check_content(ids, file_id, expected, check, where))

    for file_id in task.outputs:
        completed = completed_at.get(file_id)
        if completed is not None and completed + tolerance < run.started_at:
            message = (
                f"output '{file_id}' was completed at {completed:.6f}, before {where} "
                f"started at {run.started_at:.6f}"
            )
            violations.append(
                Violation(
                    ViolationKind.OUTPUT_BEFORE_START, (task.task_id, file_id), message
                )
            )
    return violations


def _check_downloads(
    workflow: Workflow,
    downloads: Mapping[str, CheckRecord],
    scale: float,
) -> list[Violation]:
    violations = []
    for file_id in workflow.final_outputs:
        if file_id not in downloads:
            message = f"the client never downloaded the final output '{file_id}'"
            violations.append(
                Violation(ViolationKind.OUTPUT_NOT_DOWNLOADED, (file_id,), message)
            )

    for file_id, check in downloads.items():
        if file_id not in workflow.files:
            message = f"the client downloaded '{file_id}', which is not a workflow file"
            violations.append(Violation(ViolationKind.UNKNOWN_ID, (file_id,), message))
            continue
        expected = scaled_size(workflow.files[file_id].size, scale)
        violations.extend(
            _check_content((file_id,), file_id, expected, check, "the client")
        )
    return violations


def _check_content(
    ids: tuple[str, ...],
    file_id: str,
    expected_size: int,
    check: CheckRecord,
    reader: str,
) -> list[Violation]:
    """Report a size mismatch, or else a content mismatch, for one file read.

    A wrong size usually also fails the content check, so that check is reported
    only when the size is right, to give one violation per cause.
    """
    size, ok, error = ContentCheck(*check)
    if size != expected_size:
        message = (
            f"{reader} received {size} bytes of '{file_id}', expected {expected_size}"
        )
        return [Violation(ViolationKind.SIZE_MISMATCH, ids, message)]
    if not ok:
        message = (
            f"{reader} received wrong bytes of '{file_id}': {error or 'no detail'}"
        )
        return [Violation(ViolationKind.CONTENT_MISMATCH, ids, message)]
    return []


def downloaded_bytes(
    runs: Iterable[TaskRun],
    downloads: Mapping[str, CheckRecord] | None = None,
) -> int:
    """Sum the bytes received by workers for their inputs and by the client."""
    total = sum(
        ContentCheck(*check).size
        for run in runs
        for check in run.inputs_checked.values()
    )
    if downloads is not None:
        total += sum(ContentCheck(*check).size for check in downloads.values())
    return total


@dataclasses.dataclass(frozen=True, slots=True)
class Summary:
    """Figures of one replay, for the console and for JSON reports.

    Attributes:
        workflow: workflow name.
        scale: factor applied to the trace's file sizes.
        tasks: tasks in the workflow.
        results: results created, one per file including synthetic files.
        bytes_uploaded: bytes written to the service by the client and the workers.
        bytes_downloaded: bytes read from the service by the workers and the client.
        setup_seconds: wall time to start the service and create the session.
        submission_seconds: wall time to create results, upload inputs, submit tasks.
        execution_seconds: wall time from the end of submission to the last task.
        verification_seconds: wall time to download outputs and run the checks.
        violations: number of violations found.
    """

    workflow: str
    scale: float
    tasks: int
    results: int
    bytes_uploaded: int
    bytes_downloaded: int
    setup_seconds: float
    submission_seconds: float
    execution_seconds: float
    verification_seconds: float
    violations: int

    @property
    def total_seconds(self) -> float:
        """Sum of the four phase wall times."""
        return (
            self.setup_seconds
            + self.submission_seconds
            + self.execution_seconds
            + self.verification_seconds
        )

    @property
    def tasks_per_second(self) -> float:
        """Tasks per second of submission and execution, or 0.0 if they took no time.

        Submission counts because tasks whose inputs are ready start during it.
        """
        seconds = self.submission_seconds + self.execution_seconds
        return self.tasks / seconds if seconds > 0 else 0.0


def format_table(summary: Summary) -> str:
    """Render a summary as a two-column text table with aligned values."""
    rows = [
        ("workflow", summary.workflow),
        ("size scale", f"{summary.scale:g}"),
        ("tasks", f"{summary.tasks:,}"),
        ("results", f"{summary.results:,}"),
        ("bytes uploaded", _format_bytes(summary.bytes_uploaded)),
        ("bytes downloaded", _format_bytes(summary.bytes_downloaded)),
        ("setup", f"{summary.setup_seconds:.3f} s"),
        ("submission", f"{summary.submission_seconds:.3f} s"),
        ("execution", f"{summary.execution_seconds:.3f} s"),
        ("verification", f"{summary.verification_seconds:.3f} s"),
        ("total", f"{summary.total_seconds:.3f} s"),
        ("tasks/s", f"{summary.tasks_per_second:.1f}"),
        ("violations", f"{summary.violations:,}"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def to_json(summary: Summary) -> dict[str, Any]:
    """Return a summary as a JSON-serializable dict, with the derived figures."""
    data = dataclasses.asdict(summary)
    data["total_seconds"] = summary.total_seconds
    data["tasks_per_second"] = summary.tasks_per_second
    return data


def _format_bytes(count: int) -> str:
    """Format a byte count exactly and in binary units, e.g. '1,536 B (1.5 KiB)'."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    exponent = min(len(units) - 1, max(0, count.bit_length() - 1) // 10)
    if exponent == 0:
        return f"{count:,} B"
    return f"{count:,} B ({count / 1024**exponent:.1f} {units[exponent]})"
