"""Replay workers: Ray actors that run the tasks of a replayed workflow.

Each worker acquires tasks from the queue under a lease, downloads and checks every
input, optionally sleeps the trace's runtime times a time scale, and completes the
task with outputs whose content derives from their file ids. It records each run
for the verification that follows.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import ray

from results_service.replay.content import file_bytes, iter_file_chunks
from results_service.replay.verify import ContentCheck, TaskRun, check_stream

logger = logging.getLogger(__name__)

# Outputs up to this size go inline with complete_task; larger ones are uploaded.
INLINE_OUTPUT_BYTES = 256 * 1024


def make_payload(
    task_id: str,
    command: list[str],
    runtime_seconds: float,
    inputs: dict[str, tuple[str, int]],
    outputs: dict[str, tuple[str, int]],
) -> bytes:
    """Return a task's payload: its command line and the result ids and sizes of its
    files, as JSON."""
    return json.dumps(
        {
            "task_id": task_id,
            "command": command,
            "runtime_seconds": runtime_seconds,
            "inputs": inputs,
            "outputs": outputs,
        }
    ).encode()


@ray.remote(num_cpus=0, max_restarts=0)
class ReplayWorker:
    """Runs tasks of one partition until stopped.

    Attributes:
        runs: executions recorded so far.
        fault: a fault to inject, for tests of the verification: "skip-download"
            makes the worker skip the first input of the first task that has one.
    """

    def __init__(
        self,
        app_name: str,
        worker_id: str,
        partition_id: str,
        time_scale: float,
        fault: str | None = None,
    ) -> None:
        from ray import serve

        from results_service.client import ResultsClient

        self.client = ResultsClient(serve.get_app_handle(app_name))
        self.worker_id = worker_id
        self.partition_id = partition_id
        self.time_scale = time_scale
        self.fault = fault
        self.runs: list[TaskRun] = []
        self.errors: list[str] = []
        self.bytes_uploaded = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=worker_id, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                tasks = self.client.acquire_tasks(
                    self.partition_id,
                    self.worker_id,
                    max_tasks=1,
                    wait_seconds=0.5,
                    open_inputs=True,
                )
            except Exception as error:
                logger.warning(
                    "worker %s failed to acquire tasks: %s", self.worker_id, error
                )
                self.errors.append(f"acquire: {error}")
                time.sleep(0.5)
                continue
            for task in tasks:
                self._run(task)

    def _run(self, task: Any) -> None:
        try:
            started_at = time.time()
            payload, checks = self._read_inputs(task)
            if self.time_scale > 0 and payload["runtime_seconds"] > 0:
                time.sleep(payload["runtime_seconds"] * self.time_scale)
            self._complete(task, payload["outputs"])
            self.runs.append(
                TaskRun(
                    payload["task_id"], self.worker_id, started_at, time.time(), checks
                )
            )
        except Exception as error:
            # Any failure, of the service or of Ray, fails the task so that it is
            # retried, and the thread goes on with the next task.
            logger.warning(
                "worker %s: task %s failed: %r", self.worker_id, task.task_id, error
            )
            self.errors.append(f"task {task.task_id}: {error!r}")
            try:
                self.client.fail_task(
                    task.session_id, task.task_id, task.lease_id, repr(error)
                )
            except Exception as failure:
                logger.warning(
                    "worker %s could not fail task %s: %s",
                    self.worker_id,
                    task.task_id,
                    failure,
                )

    def _read_inputs(self, task: Any) -> tuple[dict[str, Any], dict[str, ContentCheck]]:
        """Read the payload, then download and check every input.

        The acquisition opened the payload and every input, and small ones came
        back inline with it; when it could not, one open_downloads call does. The
        payload maps each input result to its file.
        """
        opened = task.inputs
        if opened is None:
            opened = self.client.open_downloads(
                task.session_id, [task.payload_id, *task.data_dependencies]
            )
        payload_info, *infos = opened
        if self.fault == "skip-download" and infos:
            self.fault = None
            infos = infos[1:]
        payload = json.loads(
            b"".join(bytes(b) for b in self.client.iter_download(payload_info))
        )
        file_of = {
            result_id: file_id for file_id, (result_id, _) in payload["inputs"].items()
        }
        size_of = {file_id: size for file_id, (_, size) in payload["inputs"].items()}

        checks: dict[str, ContentCheck] = {}
        for info in infos:
            file_id = file_of[info.result_id]
            stream = self.client.iter_download(info)
            checks[file_id] = check_stream(file_id, size_of[file_id], stream)
        return payload, checks

    def _complete(self, task: Any, outputs: dict[str, list[Any]]) -> None:
        inline: dict[str, bytes] = {}
        for file_id, (result_id, size) in outputs.items():
            if size <= INLINE_OUTPUT_BYTES:
                inline[result_id] = file_bytes(file_id, size)
            else:
                self.client.upload_result_data(
                    task.session_id,
                    result_id,
                    iter_file_chunks(file_id, size, 4 * 1024 * 1024),
                    task_id=task.task_id,
                    lease_id=task.lease_id,
                )
            self.bytes_uploaded += size
        self.client.complete_task(task.session_id, task.task_id, task.lease_id, inline)

    def stop(self) -> tuple[list[TaskRun], list[str], int]:
        """Stop after the current task; return the runs, errors and bytes written."""
        self.stopping.set()
        self.thread.join(timeout=60)
        self.client.close()
        return self.runs, self.errors, self.bytes_uploaded
