"""The Results service control plane as a Ray Serve deployment.

Run it with `serve run serve_app:app` (settings from `RESULTS_SERVICE_*` variables)
or deploy `serve_config.yaml` with `serve deploy`. Python clients call it through
`results_service.client.ResultsClient`, which wraps the deployment handle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from actors import ServiceActors
from results_service import filters
from results_service.control import (
    results_api,
    sessions_api,
    tasks_api,
    transfers,
    workers_api,
)
from results_service.control.backplane import Backplane
from results_service.records import (
    AcquiredTask,
    DownloadInfo,
    Page,
    ResultRecord,
    ResultStatus,
    ServiceConfiguration,
    SessionRecord,
    StatusChange,
    TaskInfo,
    TaskOptions,
    TaskRecord,
)
from results_service.settings import ServiceSettings
from results_service.storage.base import LocalRoot

logger = logging.getLogger(__name__)

FINAL_RESULT_STATUSES = frozenset(
    {ResultStatus.COMPLETED, ResultStatus.ABORTED, ResultStatus.DELETED}
)


@serve.deployment(
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=2000,
    # One access-log line per call would cost more than many of the calls themselves.
    logging_config={"log_level": "WARNING", "enable_access_log": False},
)
class ControlPlane:
    """Validates requests, calls the owning shards and streams data.

    Replicas keep no state of their own: every record lives in the actors, so any
    replica can serve any request. Each replica also runs the sweep that requeues
    tasks whose lease expired.
    """

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.bp = Backplane(settings, ServiceActors.get_or_create(settings))
        self.sweeper: asyncio.Task[None] | None = None
        # The storage directory that clients may write into, read once: a 1-tuple
        # so that None, for no such directory, is cached too.
        self.local_root: tuple[LocalRoot | None] | None = None
        logger.info("control plane %s started", settings.app_name)

    def _ensure_sweeper(self) -> None:
        if self.sweeper is None or self.sweeper.done():
            self.sweeper = asyncio.get_running_loop().create_task(self._sweep_leases())

    async def _sweep_leases(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_check_seconds)
            try:
                expired = await workers_api.expire_leases(self.bp)
                if expired:
                    logger.warning("requeued %d tasks whose lease expired", expired)
            except Exception:
                logger.exception("lease sweep failed; retrying at the next period")

    async def check_health(self) -> None:
        self._ensure_sweeper()

    # Service

    async def get_service_configuration(self) -> ServiceConfiguration:
        limits = self.settings.limits
        if self.local_root is None:
            self.local_root = (await transfers.local_root(self.bp),)
        return ServiceConfiguration(
            data_chunk_max_size=self.settings.data_chunk_max_size,
            transfer_window_chunks=self.settings.transfer_window_chunks,
            max_batch=limits.max_batch,
            max_page_size=limits.max_page_size,
            max_name_length=limits.max_name_length,
            partitions=self.settings.partitions,
            inline_upload_max_size=transfers.INLINE_UPLOAD_BYTES,
            local_root=self.local_root[0],
        )

    # Sessions

    async def create_session(
        self,
        partition_ids: list[str] | None = None,
        default_task_options: dict[str, Any] | TaskOptions | None = None,
    ) -> SessionRecord:
        self._ensure_sweeper()
        return await sessions_api.create_session(
            self.bp, partition_ids, default_task_options
        )

    async def get_session(self, session_id: str) -> SessionRecord:
        return await sessions_api.get_session(self.bp, session_id)

    async def list_sessions(
        self,
        filters: filters.Filters | None = None,
        sort: filters.Sort | None = None,
        page: int = 0,
        page_size: int = 100,
    ) -> Page:
        return await sessions_api.list_sessions(self.bp, filters, sort, page, page_size)

    async def cancel_session(self, session_id: str) -> SessionRecord:
        return await sessions_api.cancel_session(self.bp, session_id)

    async def pause_session(self, session_id: str) -> SessionRecord:
        return await sessions_api.pause_session(self.bp, session_id)

    async def resume_session(self, session_id: str) -> SessionRecord:
        return await sessions_api.resume_session(self.bp, session_id)

    async def close_session(self, session_id: str) -> SessionRecord:
        return await sessions_api.close_session(self.bp, session_id)

    async def purge_session(self, session_id: str) -> SessionRecord:
        return await sessions_api.purge_session(self.bp, session_id)

    async def delete_session(self, session_id: str) -> None:
        await sessions_api.delete_session(self.bp, session_id)

    # Results

    async def create_results_metadata(
        self, session_id: str, results: list[Any]
    ) -> list[ResultRecord]:
        return await results_api.create_results_metadata(self.bp, session_id, results)

    async def create_results(
        self, session_id: str, results: list[Any]
    ) -> list[ResultRecord]:
        return await results_api.create_results(self.bp, session_id, results)

    async def import_results_data(
        self, session_id: str, results: list[tuple[str, bytes]]
    ) -> list[ResultRecord]:
        return await results_api.import_results_data(self.bp, session_id, results)

    async def get_result(self, session_id: str, result_id: str) -> ResultRecord:
        return await results_api.get_result(self.bp, session_id, result_id)

    async def list_results(
        self,
        filters: filters.Filters | None = None,
        sort: filters.Sort | None = None,
        page: int = 0,
        page_size: int = 100,
        session_id: str | None = None,
    ) -> Page:
        return await results_api.list_results(
            self.bp, filters, sort, page, page_size, session_id
        )

    async def get_owner_task_id(
        self, session_id: str, result_ids: list[str]
    ) -> dict[str, str]:
        return await results_api.get_owner_task_id(self.bp, session_id, result_ids)

    async def delete_results_data(
        self, session_id: str, result_ids: list[str]
    ) -> list[str]:
        return await results_api.delete_results_data(self.bp, session_id, result_ids)

    async def watch_results(
        self,
        session_id: str,
        result_ids: list[str],
        until: frozenset[ResultStatus] = FINAL_RESULT_STATUSES,
        timeout: float | None = None,
    ) -> AsyncIterator[list[StatusChange]]:
        """Stream the current status of each result, then every change, in batches."""
        async for batch in results_api.watch_results(
            self.bp, session_id, result_ids, until, timeout
        ):
            yield batch

    # Data

    async def open_upload(
        self,
        session_id: str,
        result_id: str,
        task_id: str | None = None,
        lease_id: str | None = None,
    ) -> str:
        return await transfers.open_upload(
            self.bp, session_id, result_id, task_id, lease_id
        )

    async def upload_inline(
        self,
        session_id: str,
        result_id: str,
        data: bytes,
        task_id: str | None = None,
        lease_id: str | None = None,
    ) -> ResultRecord | None:
        return await transfers.upload_inline(
            self.bp, session_id, result_id, data, task_id, lease_id
        )

    async def finish_local_upload(
        self,
        session_id: str,
        result_id: str,
        upload_name: str,
        task_id: str | None = None,
        lease_id: str | None = None,
    ) -> ResultRecord | None:
        return await transfers.finish_local_upload(
            self.bp, session_id, result_id, upload_name, task_id, lease_id
        )

    async def write_upload(self, upload_id: str, chunks: list[Any]) -> int:
        return await transfers.write_upload(self.bp, upload_id, chunks)

    async def finish_upload(self, upload_id: str) -> ResultRecord | None:
        return await transfers.finish_upload(self.bp, upload_id)

    async def abort_upload(self, upload_id: str) -> None:
        await transfers.abort_upload(self.bp, upload_id)

    async def open_download(self, session_id: str, result_id: str) -> DownloadInfo:
        return await transfers.open_download(self.bp, session_id, result_id)

    async def open_downloads(
        self, session_id: str, result_ids: list[str]
    ) -> list[DownloadInfo]:
        return await transfers.open_downloads(self.bp, session_id, result_ids)

    # Tasks

    async def submit_tasks(
        self,
        session_id: str,
        tasks: list[Any],
        task_options: dict[str, Any] | TaskOptions | None = None,
    ) -> list[TaskInfo]:
        return await tasks_api.submit_tasks(self.bp, session_id, tasks, task_options)

    async def get_task(self, session_id: str, task_id: str) -> TaskRecord:
        return await tasks_api.get_task(self.bp, session_id, task_id)

    async def list_tasks(
        self,
        filters: filters.Filters | None = None,
        sort: filters.Sort | None = None,
        page: int = 0,
        page_size: int = 100,
        session_id: str | None = None,
    ) -> Page:
        return await tasks_api.list_tasks(
            self.bp, filters, sort, page, page_size, session_id
        )

    async def cancel_tasks(self, session_id: str, task_ids: list[str]) -> list[str]:
        return await tasks_api.cancel_tasks(self.bp, session_id, task_ids)

    # Workers

    async def acquire_tasks(
        self,
        partition_id: str,
        worker_id: str,
        max_tasks: int = 1,
        wait_seconds: float = 0.0,
        open_inputs: bool = False,
    ) -> list[AcquiredTask]:
        self._ensure_sweeper()
        return await workers_api.acquire_tasks(
            self.bp, partition_id, worker_id, max_tasks, wait_seconds, open_inputs
        )

    async def start_task(
        self, session_id: str, task_id: str, lease_id: str
    ) -> TaskRecord:
        return await workers_api.start_task(self.bp, session_id, task_id, lease_id)

    async def renew_lease(self, session_id: str, task_id: str, lease_id: str) -> float:
        return await workers_api.renew_lease(self.bp, session_id, task_id, lease_id)

    async def complete_task(
        self,
        session_id: str,
        task_id: str,
        lease_id: str,
        outputs: Mapping[str, bytes] | None = None,
    ) -> TaskRecord:
        return await workers_api.complete_task(
            self.bp, session_id, task_id, lease_id, outputs
        )

    async def fail_task(
        self,
        session_id: str,
        task_id: str,
        lease_id: str,
        error: str,
        retry: bool = True,
    ) -> str | None:
        return await workers_api.fail_task(
            self.bp, session_id, task_id, lease_id, error, retry
        )

    # Introspection, for operators and tests

    async def queue_contents(self, partition_id: str) -> list[Any]:
        return await self.bp.actors.queue.contents.remote(partition_id)

    async def open_uploads(self) -> int:
        return await self.bp.actors.storage.open_uploads.remote()

    async def stored_ids(self, prefix: str = "") -> list[bytes]:
        return await self.bp.actors.storage.list_ids.remote(prefix)


def build_app(settings: ServiceSettings) -> serve.Application:
    """Return the application for `serve.run` with the given settings."""
    return ControlPlane.options(num_replicas=settings.replicas).bind(settings)


def __getattr__(name: str) -> Any:
    # `serve run serve_app:app` reads the environment only when it looks `app` up.
    if name == "app":
        return build_app(ServiceSettings.from_env())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ControlPlane", "DeploymentHandle", "build_app"]
