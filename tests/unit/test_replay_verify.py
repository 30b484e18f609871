"""Unit tests of replay verification, on simulated runs of the built-in workflow."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from results_service.records import ResultStatus
from results_service.replay.content import file_bytes
from results_service.replay.trace import Workflow, builtin_workflow, scaled_size
from results_service.replay.verify import (
    ContentCheck,
    Summary,
    TaskRun,
    Violation,
    ViolationKind,
    check_stream,
    downloaded_bytes,
    format_table,
    to_json,
    verify_run,
)

SCALE = 0.01


@dataclasses.dataclass
class SimulatedRun:
    """The records of a run, built correct and then broken by each test."""

    runs: list[TaskRun]
    completed_at: dict[str, float]
    statuses: dict[str, ResultStatus | int]
    downloads: dict[str, ContentCheck]

    def verify(self, workflow: Workflow) -> list[Violation]:
        return verify_run(
            workflow,
            self.runs,
            self.completed_at,
            self.statuses,
            downloads=self.downloads,
            scale=SCALE,
        )

    def run_of(self, task_id: str) -> TaskRun:
        return next(run for run in self.runs if run.task_id == task_id)

    def replace_run(self, task_id: str, **changes: Any) -> None:
        index = self.runs.index(self.run_of(task_id))
        self.runs[index] = dataclasses.replace(self.runs[index], **changes)


def _expected_size(workflow: Workflow, file_id: str) -> int:
    return scaled_size(workflow.files[file_id].size, SCALE)


def _simulate_correct_run(workflow: Workflow) -> SimulatedRun:
    """Run the tasks one second apart in order, each after its inputs completed."""
    completed_at = {file_id: 1.0 for file_id in workflow.input_files}
    runs = []
    for index, task_id in enumerate(workflow.order):
        task = workflow.tasks[task_id]
        started = 10.0 + index
        checks = {
            file_id: ContentCheck(_expected_size(workflow, file_id), True)
            for file_id in task.inputs
        }
        runs.append(
            TaskRun(task_id, f"worker-{index % 2}", started, started + 0.5, checks)
        )
        for file_id in task.outputs:
            completed_at[file_id] = started + 0.4

    downloads = {
        file_id: ContentCheck(_expected_size(workflow, file_id), True)
        for file_id in workflow.final_outputs
    }
    statuses: dict[str, ResultStatus | int] = dict.fromkeys(
        workflow.files, ResultStatus.COMPLETED
    )
    return SimulatedRun(runs, completed_at, statuses, downloads)


@pytest.fixture
def workflow() -> Workflow:
    return builtin_workflow()


@pytest.fixture
def simulated(workflow: Workflow) -> SimulatedRun:
    return _simulate_correct_run(workflow)


def test_correct_run_has_no_violation(
    workflow: Workflow, simulated: SimulatedRun
) -> None:
    assert simulated.verify(workflow) == []


def test_correct_run_accepts_plain_tuples(
    workflow: Workflow, simulated: SimulatedRun
) -> None:
    for run in list(simulated.runs):
        plain = {f: tuple(check) for f, check in run.inputs_checked.items()}
        simulated.replace_run(run.task_id, inputs_checked=plain)

    assert simulated.verify(workflow) == []


def test_task_started_before_input_flagged(
    workflow: Workflow, simulated: SimulatedRun
) -> None:
    merged_at = simulated.completed_at["merged.bam"]
    simulated.replace_run("call_variants", started_at=merged_at - 0.1)

    violations = simulated.verify(workflow)

    assert [v.kind for v in violations] == [ViolationKind.STARTED_BEFORE_INPUT]
    assert violations[0].ids == ("call_variants", "merged.bam")
    assert "call_variants" in violations[0].message


def test_clock_tolerance_accepts_small_skew(
    workflow: Workflow, simulated: SimulatedRun
) -> None:
    merged_at = simulated.completed_at["merged.bam"]
    simulated.replace_run("call_variants", started_at=merged_at - 0.1)

    violations = verify_run(
        workflow,
        simulated.runs,
        simulated.completed_at,
        simulated.statuses,
        simulated.downloads,
        scale=SCALE,
        clock_tolerance=0.2,
    )

    assert violations == []


def test_skipped_download_flagged(workflow: Workflow, simulated: SimulatedRun) -> None:
    run = simulated.run_of("align_2")
    checks = {f: c for f, c in run.inputs_checked.items() if f != "reference.idx"}
    simulated.replace_run("align_2", inputs_checked=checks)

    violations = simulated.verify(workflow)

    assert [v.kind for v in violations] == [ViolationKind.INPUT_NOT_DOWNLOADED]
    assert violations[0].ids == ("align_2", "reference.idx")


def test_skipped_order_file_download_flagged(
    workflow: Workflow, simulated: SimulatedRun
) -> None:
    run = simulated.run_of("split_reads")
    checks = dict(run.inputs_checked)
    del checks["check_config->split_reads"]
    simulated.replace_run("split_reads", inputs_checked=checks)

    violations = simulated.verify(workflow)

    assert [v.ids for v in violations] == [("split_reads", "check_config->split_reads")]


def test_task_never_run_flagged(workflow: Workflow, simulated: SimulatedRun) -> None:
    simulated.runs.remove(simulated.run_of("read_qc"))

    violations = simulated.verify(workflow)

    assert [(v.kind, v.ids) for v in violations] == [
        (ViolationKind.NOT_RUN, ("read_qc",))
    ]


def test_task_run_twice_flagged(workflow: Workflow, simulated: SimulatedRun) -> None:
    run = simulated.run_of("align_1")
    simulated.runs.append(dataclasses.replace(run, worker_id="worker-9"))

    violations = simulated.verify(workflow)

    assert [(v.kind, v.ids) for v in violations] == [
        (ViolationKind.RUN_MORE_THAN_ONCE, ("align_1",))
    ]
    assert "worker-9" in violations[0].message


def test_run_of_unknown_task_flagged(
    workflow: Workflow, simulated: SimulatedRun
) -> None:
    simulated.runs.append(TaskRun("ghost", "worker-0", 50.0, 51.0, {}))

    violations = simulated.verify(workflow)

    assert [(v.kind, v.ids) for v in violations] == [
        (ViolationKind.UNKNOWN_ID, ("ghost",))
    ]


@pytest.mark.parametrize("status", [ResultStatus.CREATED, ResultStatus.ABORTED, 99])
def test_result_not_completed_flagged(
    workflow: Workflow, simulated: SimulatedRun, status: int
) -> None:
    simulated.statuses["variants.vcf"] = status

    violations = simulated.verify(workflow)

    assert [(v.kind, v.ids) for v in violations] == [
        (ViolationKind.RESULT_NOT_COMPLETED, ("variants.vcf",))
    ]


def test_result_without_status_flagged(
    workflow: Workflow, simulated: SimulatedRun
) -> None:
    del simulated.statuses["report.html"]

    violations = simulated.verify(workflow)

    assert [v.kind for v in violations] == [ViolationKind.RESULT_NOT_COMPLETED]
    assert "never created" in violations[0].message


def test_output_completed_before_start_flagged(
    workflow: Workflow, simulated: SimulatedRun
) -> None:
    simulated.completed_at["read_qc.txt"] = 0.5

    violations = simulated.verify(workflow)

    assert [(v.kind, v.ids) for v in violations] == [
        (ViolationKind.OUTPUT_BEFORE_START, ("read_qc", "read_qc.txt"))
    ]


def test_worker_size_mismatch_flagged(
    workflow: Workflow, simulated: SimulatedRun
) -> None:
    run = simulated.run_of("merge_alignments")
    checks = dict(run.inputs_checked)
    size = ContentCheck(*checks["aligned_0.bam"]).size
    checks["aligned_0.bam"] = ContentCheck(size - 1, False, "short")
    simulated.replace_run("merge_alignments", inputs_checked=checks)

    violations = simulated.verify(workflow)

    assert [(v.kind, v.ids) for v in violations] == [
        (ViolationKind.SIZE_MISMATCH, ("merge_alignments", "aligned_0.bam"))
    ]
    assert f"received {size - 1} bytes" in violations[0].message


def test_worker_content_mismatch_flagged(
    workflow: Workflow, simulated: SimulatedRun
) -> None:
    run = simulated.run_of("merge_alignments")
    checks = dict(run.inputs_checked)
    size = ContentCheck(*checks["aligned_3.bam"]).size
    checks["aligned_3.bam"] = ContentCheck(size, False, "byte mismatch at offset 12")
    simulated.replace_run("merge_alignments", inputs_checked=checks)

    violations = simulated.verify(workflow)

    assert [(v.kind, v.ids) for v in violations] == [
        (ViolationKind.CONTENT_MISMATCH, ("merge_alignments", "aligned_3.bam"))
    ]
    assert "offset 12" in violations[0].message


def test_client_content_mismatch_flagged(
    workflow: Workflow, simulated: SimulatedRun
) -> None:
    size = simulated.downloads["report.html"].size
    simulated.downloads["report.html"] = ContentCheck(size, False, "offset 3")

    violations = simulated.verify(workflow)

    assert [(v.kind, v.ids) for v in violations] == [
        (ViolationKind.CONTENT_MISMATCH, ("report.html",))
    ]


def test_final_output_not_downloaded_flagged(
    workflow: Workflow, simulated: SimulatedRun
) -> None:
    del simulated.downloads["check_config.done"]

    violations = simulated.verify(workflow)

    assert [(v.kind, v.ids) for v in violations] == [
        (ViolationKind.OUTPUT_NOT_DOWNLOADED, ("check_config.done",))
    ]


def test_download_of_unknown_file_flagged(
    workflow: Workflow, simulated: SimulatedRun
) -> None:
    simulated.downloads["stray.bin"] = ContentCheck(1, True)

    violations = simulated.verify(workflow)

    assert [(v.kind, v.ids) for v in violations] == [
        (ViolationKind.UNKNOWN_ID, ("stray.bin",))
    ]


def test_no_downloads_given_skips_client_checks(
    workflow: Workflow, simulated: SimulatedRun
) -> None:
    violations = verify_run(
        workflow,
        simulated.runs,
        simulated.completed_at,
        simulated.statuses,
        scale=SCALE,
    )

    assert violations == []


def test_downloaded_bytes_counts_workers_and_client(
    workflow: Workflow, simulated: SimulatedRun
) -> None:
    worker_bytes = sum(
        _expected_size(workflow, file_id)
        for task in workflow.tasks.values()
        for file_id in task.inputs
    )
    client_bytes = sum(_expected_size(workflow, f) for f in workflow.final_outputs)

    total = downloaded_bytes(simulated.runs, simulated.downloads)

    assert total == worker_bytes + client_bytes


def _summary() -> Summary:
    return Summary(
        workflow="builtin-alignment-12",
        scale=0.001,
        tasks=12,
        results=27,
        bytes_uploaded=3_500_000,
        bytes_downloaded=512,
        setup_seconds=1.5,
        submission_seconds=0.5,
        execution_seconds=1.5,
        verification_seconds=0.25,
        violations=0,
    )


def test_tasks_per_second_counts_submission() -> None:
    assert _summary().tasks_per_second == 6.0


def test_tasks_per_second_zero_without_time() -> None:
    summary = dataclasses.replace(
        _summary(), submission_seconds=0.0, execution_seconds=0.0
    )

    assert summary.tasks_per_second == 0.0


def test_format_table_aligns_values() -> None:
    lines = format_table(_summary()).splitlines()
    value_columns = {len(line) - len(line.split("  ")[-1].lstrip()) for line in lines}

    assert len(value_columns) == 1
    assert "bytes uploaded    3,500,000 B (3.3 MiB)" in lines
    assert "bytes downloaded  512 B" in lines
    assert "tasks/s           6.0" in lines
    assert "total             3.750 s" in lines


def test_to_json_is_serializable_with_derived_figures() -> None:
    data = to_json(_summary())

    assert json.loads(json.dumps(data)) == data
    assert data["tasks_per_second"] == 6.0
    assert data["total_seconds"] == 3.75
    assert data["workflow"] == "builtin-alignment-12"


def test_check_stream_counts_bytes() -> None:
    data = file_bytes("f1", 5000)

    check = check_stream("f1", 5000, [data[:1000], data[1000:]])

    assert check == ContentCheck(5000, True, "")


def test_check_stream_reports_short_data() -> None:
    data = file_bytes("f1", 5000)

    check = check_stream("f1", 5000, [data[:1000]])

    assert check.size == 1000
    assert not check.ok
