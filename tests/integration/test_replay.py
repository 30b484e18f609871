"""Replays of real workflow traces through the service, verified end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from results_service.replay.runner import ReplayOptions, run_replay
from results_service.replay.trace import builtin_workflow, load_workflow
from results_service.replay.verify import ViolationKind
from tests.workflow_traces import trace_paths

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TRACES = trace_paths()


def test_traces_present() -> None:
    assert len(TRACES) >= 13, "the workflow traces beside the project are missing"


@pytest.fixture(scope="module")
def replay_client(services: Any) -> Any:
    """A service with eight shards of each table, as the replay's default."""
    return services.start(results_shards=8, tasks_shards=8)


@pytest.mark.parametrize("trace", TRACES, ids=[path.stem for path in TRACES])
def test_replay_trace_verified(replay_client: Any, trace: Path) -> None:
    workflow = load_workflow(trace)
    options = ReplayOptions(scale=0.001, workers=4, timeout=300)

    report = run_replay(replay_client, replay_client.settings, workflow, options)

    assert report.worker_errors == []
    assert report.violations == []
    assert report.summary.tasks == len(workflow.tasks)


def test_replay_on_s3(services: Any, s3_settings: Any) -> None:
    client = services.start(settings=s3_settings)
    workflow = builtin_workflow()

    report = run_replay(client, client.settings, workflow, ReplayOptions(scale=1.0))

    assert report.violations == []
    assert report.summary.bytes_uploaded > 0


def test_replay_with_imported_inputs(replay_client: Any) -> None:
    workflow = load_workflow(next(p for p in TRACES if p.stem.startswith("sarek")))
    options = ReplayOptions(scale=0.001, use_import=True)

    report = run_replay(replay_client, replay_client.settings, workflow, options)

    assert report.violations == []


def test_replay_with_imported_inputs_on_s3(services: Any, s3_settings: Any) -> None:
    client = services.start(settings=s3_settings)

    report = run_replay(
        client, client.settings, builtin_workflow(), ReplayOptions(use_import=True)
    )

    assert report.violations == []


def test_replay_detects_skipped_download(replay_client: Any) -> None:
    options = ReplayOptions(scale=1.0, workers=1, fault="skip-download")

    report = run_replay(
        replay_client, replay_client.settings, builtin_workflow(), options
    )

    kinds = {violation.kind for violation in report.violations}
    assert ViolationKind.INPUT_NOT_DOWNLOADED in kinds


def run_cli(*arguments: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    return subprocess.run(
        [sys.executable, "-m", "results_service.cli", *arguments],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_rejects_malformed_trace(tmp_path: Path) -> None:
    trace = tmp_path / "broken.json"
    trace.write_text('{"workflow": ')

    completed = run_cli("replay", str(trace))

    assert completed.returncode == 2
    assert "broken.json" in completed.stderr


def test_cli_replay_fails_on_violation(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"

    completed = run_cli(
        "replay",
        "--workers",
        "1",
        "--inject-fault",
        "skip-download",
        "--storage-url",
        f"file://{tmp_path}/storage",
        "--json",
        str(summary_path),
    )

    assert completed.returncode == 1, completed.stderr[-2000:]
    assert "input_not_downloaded" in completed.stdout
    assert json.loads(summary_path.read_text())["violations"] >= 1
