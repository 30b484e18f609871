"""Python clients of the Results service: `AsyncResultsClient` and `ResultsClient`.

Both call the control plane's Serve deployment handle. `AsyncResultsClient` is for
asyncio code; `ResultsClient` has the same methods as plain blocking calls, run on a
private event loop thread. Errors raised by the service arrive as the service's own
exception classes (see `results_service.errors`).

Set `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` before importing Ray to keep a local Ray
bound to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import os
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, BinaryIO, TypeVar

import pyarrow as pa
import ray
from ray import serve

from results_service import loopback
from results_service.errors import ServiceError, unwrap_ray_error
from results_service.filters import Condition, Sort
from results_service.ids import new_id
from results_service.records import (
    AcquiredTask,
    DownloadInfo,
    Page,
    ResultCreate,
    ResultRecord,
    ResultStatus,
    ServiceConfiguration,
    SessionRecord,
    StatusChange,
    TaskDefinition,
    TaskInfo,
    TaskOptions,
    TaskRecord,
)
from results_service.settings import ServiceSettings
from results_service.storage.local import LocalDownload

logger = logging.getLogger(__name__)

T = TypeVar("T")
UploadData = (
    bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO | Iterable[Any]
)
FINAL_RESULT_STATUSES = frozenset(
    {ResultStatus.COMPLETED, ResultStatus.ABORTED, ResultStatus.DELETED}
)

__all__ = [
    "AsyncResultsClient",
    "Condition",
    "ResultCreate",
    "ResultsClient",
    "Sort",
    "TaskDefinition",
    "TaskOptions",
    "start_local_service",
]


def start_local_service(
    settings: ServiceSettings | None = None, num_cpus: int | None = None
) -> ServiceSettings:
    """Start a single-node Ray on 127.0.0.1 and run the service on it.

    Serve's HTTP proxy is disabled: clients use the deployment handle. Returns the
    settings in use.
    """
    import serve_app

    settings = settings or ServiceSettings()
    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            runtime_env={"worker_process_setup_hook": loopback.SETUP_HOOK},
            namespace=settings.namespace,
            logging_level=logging.WARNING,
        )
    serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING"})
    serve.run(serve_app.build_app(settings), name=settings.app_name, route_prefix=None)
    logger.info("local service %s started", settings.app_name)
    return settings


def app_handle(app_name: str, address: str | None) -> Any:
    """Join the Ray cluster at `address` unless already joined, and return the
    Serve handle of the application."""
    if not ray.is_initialized():
        ray.init(address=address or "auto", logging_level=logging.WARNING)
    return serve.get_app_handle(app_name)


async def _result(response: Awaitable[T]) -> T:
    try:
        return await response
    except ServiceError as error:
        raise unwrap_ray_error(error) from None


def _to_buffer(chunk: Any) -> pa.Buffer:
    if isinstance(chunk, pa.Buffer):
        return chunk
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return pa.py_buffer(chunk)
    raise TypeError(
        f"upload chunk of type {type(chunk).__name__} is invalid; give bytes, "
        "bytearray, memoryview or pyarrow.Buffer"
    )


def iter_chunks(data: UploadData, chunk_size: int) -> Iterator[pa.Buffer]:
    """Split upload data of any supported kind into buffers of at most chunk_size."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = pa.py_buffer(data)
        for start in range(0, len(view), chunk_size):
            yield view.slice(start, min(chunk_size, len(view) - start))
        return
    if isinstance(data, (str, os.PathLike)):
        with pa.OSFile(os.fspath(data), "rb") as file:
            while True:
                buffer = file.read_buffer(chunk_size)
                if len(buffer) == 0:
                    return
                yield buffer
    if isinstance(data, (io.IOBase, pa.NativeFile)) or hasattr(data, "read"):
        while True:
            block = data.read(chunk_size)  # type: ignore[union-attr]
            if not block:
                return
            yield _to_buffer(block)
    for chunk in data:  # type: ignore[union-attr]
        buffer = _to_buffer(chunk)
        for start in range(0, len(buffer), chunk_size):
            yield buffer.slice(start, min(chunk_size, len(buffer) - start))


def local_upload_dir(configuration: ServiceConfiguration) -> str | None:
    """Return the directory to write uploads into when this process is on the
    storage's machine: the path must lead to the device and inode reported."""
    if configuration.local_root is None:
        return None
    path, device, inode = configuration.local_root
    try:
        info = os.stat(path)
    except OSError:
        return None
    if (info.st_dev, info.st_ino) != (device, inode):
        return None
    return path


def write_new_file(path: str, chunks: Iterable[pa.Buffer]) -> None:
    """Write chunks into a file that must not exist yet."""
    with open(path, "xb", buffering=0) as file:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                written = file.write(view)
                view = view[written:]


def open_local_download(info: DownloadInfo) -> LocalDownload | None:
    """Open the file of a download when this process can read it directly."""
    if info.local_file is None:
        return None
    return LocalDownload.open(
        info.local_file, info.size, info.chunk_size, info.window_chunks, info.result_id
    )


class AsyncResultsClient:
    """Asyncio client of the service, around a Serve deployment handle."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self._configuration: ServiceConfiguration | None = None
        self._storage_actors: dict[tuple[str, str], Any] = {}

    @classmethod
    def connect(
        cls, app_name: str = "results", address: str | None = None
    ) -> AsyncResultsClient:
        """Connect to a running service; `address` is a Ray address such as "auto"."""
        return cls(app_handle(app_name, address))

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await _result(getattr(self.handle, method).remote(*args, **kwargs))

    # Service

    async def get_service_configuration(self) -> ServiceConfiguration:
        if self._configuration is None:
            self._configuration = await self._call("get_service_configuration")
        return self._configuration

    # Sessions

    async def create_session(
        self,
        partition_ids: Sequence[str] | None = None,
        default_task_options: TaskOptions | Mapping[str, Any] | None = None,
    ) -> str:
        """Create a session and return its id."""
        options = (
            dict(default_task_options)
            if isinstance(default_task_options, Mapping)
            else default_task_options
        )
        record = await self._call("create_session", list(partition_ids or []), options)
        return record.session_id

    async def get_session(self, session_id: str) -> SessionRecord:
        return await self._call("get_session", session_id)

    async def list_sessions(
        self,
        filters: Sequence[Sequence[Condition]] | None = None,
        sort: Sort | None = None,
        page: int = 0,
        page_size: int = 100,
    ) -> Page:
        return await self._call("list_sessions", filters, sort, page, page_size)

    async def cancel_session(self, session_id: str) -> SessionRecord:
        return await self._call("cancel_session", session_id)

    async def pause_session(self, session_id: str) -> SessionRecord:
        return await self._call("pause_session", session_id)

    async def resume_session(self, session_id: str) -> SessionRecord:
        return await self._call("resume_session", session_id)

    async def close_session(self, session_id: str) -> SessionRecord:
        return await self._call("close_session", session_id)

    async def purge_session(self, session_id: str) -> SessionRecord:
        return await self._call("purge_session", session_id)

    async def delete_session(self, session_id: str) -> None:
        await self._call("delete_session", session_id)

    # Results

    async def create_results_metadata(
        self, session_id: str, results: Sequence[str | ResultCreate]
    ) -> list[ResultRecord]:
        """Create results without data, from names or ResultCreate items."""
        return await self._call("create_results_metadata", session_id, list(results))

    async def create_results(
        self,
        session_id: str,
        results: Sequence[ResultCreate | tuple[str, bytes]] | Mapping[str, bytes],
    ) -> list[ResultRecord]:
        """Create COMPLETED results with small data given inline."""
        items = results.items() if isinstance(results, Mapping) else results
        creates = [
            item
            if isinstance(item, ResultCreate)
            else ResultCreate(item[0], data=bytes(item[1]))
            for item in items
        ]
        return await self._call("create_results", session_id, creates)

    async def import_results_data(
        self, session_id: str, results: Sequence[tuple[str, bytes | str]]
    ) -> list[ResultRecord]:
        """Complete results with objects already in the storage, by opaque id."""
        return await self._call(
            "import_results_data", session_id, [tuple(pair) for pair in results]
        )

    async def get_result(self, session_id: str, result_id: str) -> ResultRecord:
        return await self._call("get_result", session_id, result_id)

    async def list_results(
        self,
        filters: Sequence[Sequence[Condition]] | None = None,
        sort: Sort | None = None,
        page: int = 0,
        page_size: int = 100,
        session_id: str | None = None,
    ) -> Page:
        """Return a page of results matching an OR of ANDs of conditions."""
        return await self._call(
            "list_results", filters, sort, page, page_size, session_id
        )

    async def get_owner_task_id(
        self, session_id: str, result_ids: Sequence[str]
    ) -> dict[str, str]:
        return await self._call("get_owner_task_id", session_id, list(result_ids))

    async def delete_results_data(
        self, session_id: str, result_ids: Sequence[str]
    ) -> list[str]:
        return await self._call("delete_results_data", session_id, list(result_ids))

    async def watch_results(
        self,
        session_id: str,
        result_ids: Sequence[str],
        until: Iterable[ResultStatus] = FINAL_RESULT_STATUSES,
        timeout: float | None = None,
    ) -> AsyncIterator[StatusChange]:
        """Yield each result's current status, then every change, until all of them
        are in one of `until` or `timeout` seconds pass."""
        stream = self.handle.options(stream=True).watch_results.remote(
            session_id, list(result_ids), frozenset(until), timeout
        )
        ended = False
        try:
            async for batch in stream:
                for change in batch:
                    yield change
            ended = True
        except ServiceError as error:
            ended = True
            raise unwrap_ray_error(error) from None
        finally:
            # A stream left early would keep watching in the service until every
            # result is final, which may be never.
            if not ended:
                stream.cancel()

    # Data

    async def upload_result_data(
        self,
        session_id: str,
        result_id: str,
        data: UploadData,
        task_id: str | None = None,
        lease_id: str | None = None,
    ) -> ResultRecord | None:
        """Upload data (bytes, a file path, a binary file or an iterable of chunks).

        The result completes and its dependent tasks are queued. With a task and its
        lease, the data is that task's output and is committed when the task
        completes; None is returned then. If reading `data` fails, the upload is
        aborted and nothing is stored.
        """
        configuration = await self.get_service_configuration()
        chunks = iter_chunks(data, configuration.data_chunk_max_size)
        # Data of one small chunk goes in a single call, which saves two calls
        # and a write of an ObjectRef. Reading ahead keeps at most two chunks in memory.
        first = next(chunks, None)
        second = next(chunks, None) if first is not None else None
        if second is None and (
            len(first or b"") <= configuration.inline_upload_max_size
        ):
            return await self._call(
                "upload_inline",
                session_id,
                result_id,
                first if first is not None else b"",
                task_id,
                lease_id,
            )

        read_ahead = [chunk for chunk in (first, second) if chunk is not None]
        all_chunks = itertools.chain(read_ahead, chunks)
        upload_dir = local_upload_dir(configuration)
        if upload_dir is not None:
            return await self._upload_local(
                upload_dir, session_id, result_id, all_chunks, task_id, lease_id
            )

        upload_id = await self._call(
            "open_upload", session_id, result_id, task_id, lease_id
        )
        window_size = configuration.transfer_window_chunks
        try:
            pending: Any = None
            window: list[ray.ObjectRef] = []
            for chunk in all_chunks:
                window.append(ray.put(chunk))
                if len(window) == window_size:
                    if pending is not None:
                        await _result(pending)
                    pending = self.handle.write_upload.remote(upload_id, window)
                    window = []
            if pending is not None:
                await _result(pending)
            if window:
                await self._call("write_upload", upload_id, window)
        except BaseException:
            await asyncio.shield(self._abort_quietly(upload_id))
            raise
        return await self._call("finish_upload", upload_id)

    async def _upload_local(
        self,
        upload_dir: str,
        session_id: str,
        result_id: str,
        chunks: Iterator[pa.Buffer],
        task_id: str | None,
        lease_id: str | None,
    ) -> ResultRecord | None:
        """Write the data into the storage directory, then let the service
        publish the file under a key of its own and complete the result."""
        name = f"client-{new_id()}"
        path = os.path.join(upload_dir, name)
        try:
            await asyncio.to_thread(write_new_file, path, chunks)
            return await self._call(
                "finish_local_upload", session_id, result_id, name, task_id, lease_id
            )
        except BaseException:
            # The service deletes the file when it rejects the upload; this covers
            # a failure before the call and a call that never reached it.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise

    async def _abort_quietly(self, upload_id: str) -> None:
        try:
            await self._call("abort_upload", upload_id)
        except Exception:
            logger.warning(
                "aborting upload %s failed; the service drops it when idle", upload_id
            )

    async def download_result_data(
        self, session_id: str, result_id: str
    ) -> AsyncIterator[pa.Buffer]:
        """Yield the result's data as buffers of at most data_chunk_max_size bytes.

        Ranges are read straight from the storage actor with a token from the
        control plane. One range is read ahead of the one being consumed, so memory
        stays at two ranges of transfer_window_chunks chunks. Zero bytes give no
        chunk.
        """
        (info,) = await self.open_downloads(session_id, [result_id])
        async for buffer in self.iter_download(info):
            yield buffer

    async def open_downloads(
        self, session_id: str, result_ids: Sequence[str]
    ) -> list[DownloadInfo]:
        """Open several downloads in one call; small data comes back inline.

        Read each with `iter_download`.
        """
        return await self._call("open_downloads", session_id, list(result_ids))

    async def iter_download(self, info: DownloadInfo) -> AsyncIterator[pa.Buffer]:
        """Yield the data of a download opened with `open_downloads`, in chunks."""
        if info.data is not None:
            for start in range(0, len(info.data), info.chunk_size):
                yield info.data.slice(
                    start, min(info.chunk_size, len(info.data) - start)
                )
            return
        local = await asyncio.to_thread(open_local_download, info)
        if local is not None:
            try:
                while (chunk := await asyncio.to_thread(local.read_chunk)) is not None:
                    yield chunk
            finally:
                local.close()
            return
        reader = self._storage_actor(info)
        step = info.chunk_size * info.window_chunks
        offsets = iter(range(0, info.size, step))

        def request(offset: int) -> Any:
            return reader.read.remote(info.token, offset, min(step, info.size - offset))

        ahead = [
            request(offset) for offset in [next(offsets, None)] if offset is not None
        ]
        while ahead:
            reference = ahead.pop()
            following = next(offsets, None)
            if following is not None:
                ahead.append(request(following))
            for buffer in await _result(reference):
                yield buffer

    def _storage_actor(self, info: DownloadInfo) -> Any:
        key = (info.storage_actor, info.namespace)
        if key not in self._storage_actors:
            self._storage_actors[key] = ray.get_actor(
                info.storage_actor, namespace=info.namespace
            )
        return self._storage_actors[key]

    async def read_result_data(self, session_id: str, result_id: str) -> bytes:
        """Return the result's whole data; use download_result_data for large data."""
        parts = [
            buffer.to_pybytes()
            async for buffer in self.download_result_data(session_id, result_id)
        ]
        return b"".join(parts)

    async def download_to_file(
        self, session_id: str, result_id: str, path: str | os.PathLike[str]
    ) -> int:
        """Write the result's data to a file and return its size."""
        size = 0
        with pa.OSFile(os.fspath(path), "wb") as file:
            async for buffer in self.download_result_data(session_id, result_id):
                file.write(buffer)
                size += len(buffer)
        return size

    # Tasks

    async def submit_tasks(
        self,
        session_id: str,
        tasks: Sequence[TaskDefinition],
        task_options: TaskOptions | Mapping[str, Any] | None = None,
    ) -> list[TaskInfo]:
        """Submit tasks; options merge per task over the request over the session."""
        options = (
            dict(task_options) if isinstance(task_options, Mapping) else task_options
        )
        return await self._call("submit_tasks", session_id, list(tasks), options)

    async def get_task(self, session_id: str, task_id: str) -> TaskRecord:
        return await self._call("get_task", session_id, task_id)

    async def list_tasks(
        self,
        filters: Sequence[Sequence[Condition]] | None = None,
        sort: Sort | None = None,
        page: int = 0,
        page_size: int = 100,
        session_id: str | None = None,
    ) -> Page:
        return await self._call(
            "list_tasks", filters, sort, page, page_size, session_id
        )

    async def cancel_tasks(self, session_id: str, task_ids: Sequence[str]) -> list[str]:
        return await self._call("cancel_tasks", session_id, list(task_ids))

    # Workers

    async def acquire_tasks(
        self,
        partition_id: str,
        worker_id: str,
        max_tasks: int = 1,
        wait_seconds: float = 0.0,
        open_inputs: bool = False,
    ) -> list[AcquiredTask]:
        """Take tasks from a partition's queue under leases.

        With `open_inputs`, each task's `inputs` contains the opened downloads of its
        payload and data dependencies, to read with `iter_download`.
        """
        return await self._call(
            "acquire_tasks",
            partition_id,
            worker_id,
            max_tasks,
            wait_seconds,
            open_inputs,
        )

    async def start_task(
        self, session_id: str, task_id: str, lease_id: str
    ) -> TaskRecord:
        return await self._call("start_task", session_id, task_id, lease_id)

    async def renew_lease(self, session_id: str, task_id: str, lease_id: str) -> float:
        return await self._call("renew_lease", session_id, task_id, lease_id)

    async def complete_task(
        self,
        session_id: str,
        task_id: str,
        lease_id: str,
        outputs: Mapping[str, bytes] | None = None,
    ) -> TaskRecord:
        """Complete a task; outputs not uploaded before are given inline here."""
        return await self._call(
            "complete_task", session_id, task_id, lease_id, dict(outputs or {})
        )

    async def fail_task(
        self,
        session_id: str,
        task_id: str,
        lease_id: str,
        error: str,
        retry: bool = True,
    ) -> str | None:
        """Fail a task; return the id of the retry that replaces it, if any."""
        return await self._call(
            "fail_task", session_id, task_id, lease_id, error, retry
        )

    async def queue_contents(self, partition_id: str) -> list[Any]:
        """Return the queued tasks of a partition in dispatch order."""
        return await self._call("queue_contents", partition_id)

    async def open_uploads(self) -> int:
        """Return the number of uploads open in the object storage actor."""
        return await self._call("open_uploads")

    async def stored_ids(self, prefix: str = "") -> list[bytes]:
        """Return the opaque ids of the stored objects under a key prefix."""
        return await self._call("stored_ids", prefix)


class ResultsClient:
    """Blocking client of the service, with the methods of `AsyncResultsClient`.

    Calls run on a private event loop thread, so the client works from any thread
    and alongside other event loops.
    """

    def __init__(self, handle: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="results-client", daemon=True
        )
        self._thread.start()
        self.aio = AsyncResultsClient(handle)

    @classmethod
    def connect(
        cls, app_name: str = "results", address: str | None = None
    ) -> ResultsClient:
        """Connect to a running service; `address` is a Ray address such as "auto"."""
        return cls(app_handle(app_name, address))

    @classmethod
    def start_local(
        cls, settings: ServiceSettings | None = None, num_cpus: int | None = None
    ) -> ResultsClient:
        """Start a local single-node service and connect to it."""
        settings = start_local_service(settings, num_cpus)
        return cls(serve.get_app_handle(settings.app_name))

    def close(self) -> None:
        """Stop the client's event loop thread."""
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def _run(self, coroutine: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()  # type: ignore[arg-type]

    def _iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._run(iterator.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(iterator.aclose())  # type: ignore[attr-defined]

    def download_result_data(
        self, session_id: str, result_id: str
    ) -> Iterator[pa.Buffer]:
        """Yield the result's data as buffers, as AsyncResultsClient does."""
        (info,) = self._run(self.aio.open_downloads(session_id, [result_id]))
        yield from self.iter_download(info)

    def iter_download(self, info: DownloadInfo) -> Iterator[pa.Buffer]:
        """Yield the data of a download opened with `open_downloads`.

        A file on this machine is read in the calling thread, which saves a hop
        to the client's event loop per chunk.
        """
        local = None if info.data is not None else open_local_download(info)
        if local is None:
            yield from self._iterate(self.aio.iter_download(info))
            return
        try:
            while (chunk := local.read_chunk()) is not None:
                yield chunk
        finally:
            local.close()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.aio, name)
        if name == "watch_results":
            return lambda *args, **kwargs: self._iterate(method(*args, **kwargs))
        if not asyncio.iscoroutinefunction(method):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._run(method(*args, **kwargs))
