"""Catalogue of real-world failures on the data path, on a real local Ray: chunk
edges, empty data, broken and abandoned transfers, slow readers, memory over many
round trips, S3 connections cut mid-object, and listings of many results.

Cases that other modules already cover exactly, and are not repeated here:
- Deleting a result's data makes it DELETED with its opaque id cleared:
  test_results_data.py::test_delete_results_data_marks_deleted. Its download is a
  FailedPreconditionError naming it: test_results_data.py::
  test_download_deleted_result_rejected. A task depending on it is rejected:
  test_tasks.py::test_submit_unusable_dependency_rejected.
- An upload whose source raises midway leaves the result CREATED and nothing
  stored: test_results_data.py::test_upload_iterable_raising_midway_leaves_nothing,
  and on S3 with no multipart upload left open: test_results_data.py::
  test_s3_upload_raising_midway_leaves_no_multipart_upload. The tests below cover a
  client that disappears without aborting.
- A purge deletes every stored object of the session, zero-byte and staged ones
  too, except those of manual_deletion results: test_sessions.py::
  test_purge_session_deletes_stored_data, test_purge_session_keeps_manual_deletion,
  test_purge_session_deletes_zero_byte_object and
  test_purge_session_deletes_staged_outputs.
- Peak memory of one 1 GiB round trip: test_large_transfer.py. The tests below
  check that memory returns to its level after many round trips.
- An S3 read cut off mid-object at the backend: test_storage_s3.py::
  test_cut_read_resumes_at_missing_bytes and test_persistent_cut_raises_unavailable.
  The tests below cut real connections between the service and the S3 server.

Memory is private (anonymous) memory, RSS minus shared pages, because the pages of
Ray's shared-memory object store count in the RSS of every process that maps them.
Object store usage is the raylet's count of bytes used. Run the long variants with
`pytest -m slow`.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import math
import os
import re
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import ray

from results_service.errors import (
    InvalidArgumentError,
    NotFoundError,
    ServiceError,
    UnavailableError,
    unwrap_ray_error,
)
from results_service.records import ResultStatus, TaskDefinition, TaskStatus
from results_service.settings import ServiceSettings
from tests.s3_server import (
    ACCESS_KEY_ID,
    REGION,
    S3_PREFIX,
    SECRET_ACCESS_KEY,
    empty_bucket,
)
from tests.service import rpc, session_objects

KiB = 1024
MiB = 1024 * KiB
SMALL_CHUNK = 64 * KiB
IDLE_SECONDS = 2.0
# Upper bound of the polls below; each condition is normally met within seconds.
POLL_SECONDS = 60.0


def poll(condition: Callable[[], bool], seconds: float = POLL_SECONDS) -> bool:
    """Return True as soon as `condition()` holds, or False after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def storage_root(client: Any) -> Path:
    url = client.settings.storage_url
    assert url.startswith("file://")
    return Path(url.removeprefix("file://"))


def write_object(client: Any, data: bytes = b"", size: int | None = None) -> str:
    """Write a file under the storage root, sparse when `size` is given; return
    its key."""
    key = f"imports/{uuid.uuid4().hex}.bin"
    path = storage_root(client) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if size is not None:
        os.truncate(path, size)
    return key


def new_result(client: Any, session_id: str) -> str:
    (record,) = client.create_results_metadata(session_id, ["r"])
    return record.result_id


@pytest.fixture(scope="module")
def small_client(services: Any) -> Any:
    """A service with 64 KiB chunks, whose uploads are dropped after 2 idle seconds."""
    return services.start(
        data_chunk_max_size=SMALL_CHUNK, upload_idle_seconds=IDLE_SECONDS
    )


@pytest.fixture
def small_session(small_client: Any) -> str:
    return small_client.create_session()


# Chunk edges


WINDOW = ServiceSettings().transfer_window_chunks
EDGE_SIZES = {
    "empty": 0,
    "one-byte": 1,
    "chunk-minus-one": SMALL_CHUNK - 1,
    "chunk": SMALL_CHUNK,
    "chunk-plus-one": SMALL_CHUNK + 1,
    "window": WINDOW * SMALL_CHUNK,
    "window-plus-one": WINDOW * SMALL_CHUNK + 1,
}


@pytest.mark.parametrize("size", EDGE_SIZES.values(), ids=EDGE_SIZES.keys())
def test_chunk_edge_round_trip(
    small_client: Any, small_session: str, size: int
) -> None:
    data = os.urandom(size)
    result_id = new_result(small_client, small_session)

    record = small_client.upload_result_data(small_session, result_id, data)
    chunks = list(small_client.download_result_data(small_session, result_id))

    assert record.size == size
    assert len(chunks) == math.ceil(size / SMALL_CHUNK)
    assert max((len(chunk) for chunk in chunks), default=0) <= SMALL_CHUNK
    assert b"".join(chunk.to_pybytes() for chunk in chunks) == data


# Empty data


def complete_empty(client: Any, session_id: str, how: str) -> str:
    """Make an empty COMPLETED result in one of three ways; return its id."""
    if how == "create":
        (record,) = client.create_results(session_id, {"empty": b""})
        return record.result_id
    result_id = new_result(client, session_id)
    if how == "upload":
        client.upload_result_data(session_id, result_id, iter([]))
    else:
        client.import_results_data(session_id, [(result_id, write_object(client))])
    return result_id


@pytest.mark.parametrize("how", ["create", "upload", "import"])
def test_empty_result_completes_with_size_zero(
    small_client: Any, small_session: str, how: str
) -> None:
    result_id = complete_empty(small_client, small_session, how)

    record = small_client.get_result(small_session, result_id)

    assert record.status == ResultStatus.COMPLETED
    assert record.size == 0


@pytest.mark.parametrize("how", ["create", "upload", "import"])
def test_empty_result_downloads_no_chunk(
    small_client: Any, small_session: str, how: str
) -> None:
    result_id = complete_empty(small_client, small_session, how)

    chunks = list(small_client.download_result_data(small_session, result_id))

    assert chunks == []


@pytest.mark.parametrize("how", ["upload", "import"])
def test_empty_result_releases_waiting_task(
    small_client: Any, small_session: str, how: str
) -> None:
    (payload,) = small_client.create_results(small_session, {"payload": b"{}"})
    result_id = new_result(small_client, small_session)
    (info,) = small_client.submit_tasks(
        small_session, [TaskDefinition(payload.result_id, (result_id,))]
    )
    if how == "upload":
        small_client.upload_result_data(small_session, result_id, b"")
    else:
        small_client.import_results_data(
            small_session, [(result_id, write_object(small_client))]
        )

    task = small_client.get_task(small_session, info.task_id)

    assert task.status == TaskStatus.SUBMITTED


def test_empty_created_result_queues_new_task(
    small_client: Any, small_session: str
) -> None:
    result_id = complete_empty(small_client, small_session, "create")

    (info,) = small_client.submit_tasks(small_session, [TaskDefinition(result_id)])

    task = small_client.get_task(small_session, info.task_id)
    assert task.status == TaskStatus.SUBMITTED


# Broken and abandoned transfers


def test_download_of_data_deleted_midway_raises(
    small_client: Any, small_session: str
) -> None:
    data = os.urandom(4 * WINDOW * SMALL_CHUNK)
    result_id = new_result(small_client, small_session)
    small_client.upload_result_data(small_session, result_id, data)
    stream = small_client.download_result_data(small_session, result_id)
    received = [next(stream).to_pybytes()]

    small_client.delete_results_data(small_session, [result_id])

    with pytest.raises(NotFoundError) as caught:
        received.extend(chunk.to_pybytes() for chunk in stream)
    assert "deleted" in caught.value.message
    assert len(b"".join(received)) < len(data)
    assert data.startswith(b"".join(received))


def test_abandoned_upload_is_dropped(small_client: Any, small_session: str) -> None:
    result_id = new_result(small_client, small_session)
    upload_id = rpc(small_client, "open_upload", small_session, result_id)
    rpc(small_client, "write_upload", upload_id, [os.urandom(SMALL_CHUNK)] * 2)

    partial = storage_root(small_client) / ".partial"

    # The upload leaves the table before its writer is aborted, so both are polled.
    dropped = poll(
        lambda: small_client.open_uploads() == 0 and os.listdir(partial) == []
    )

    assert dropped
    assert small_client.get_result(small_session, result_id).status == (
        ResultStatus.CREATED
    )
    assert session_objects(small_client, small_session) == []


def test_abandoned_upload_rejects_late_write(
    small_client: Any, small_session: str
) -> None:
    result_id = new_result(small_client, small_session)
    upload_id = rpc(small_client, "open_upload", small_session, result_id)
    rpc(small_client, "write_upload", upload_id, [b"early"])
    assert poll(lambda: small_client.open_uploads() == 0)

    with pytest.raises(NotFoundError) as caught:
        rpc(small_client, "write_upload", upload_id, [b"late"])

    assert upload_id in caught.value.message


def test_abandoned_upload_leaves_result_writable(
    small_client: Any, small_session: str
) -> None:
    result_id = new_result(small_client, small_session)
    upload_id = rpc(small_client, "open_upload", small_session, result_id)
    rpc(small_client, "write_upload", upload_id, [b"early"])
    assert poll(lambda: small_client.open_uploads() == 0)

    record = small_client.upload_result_data(small_session, result_id, b"whole")

    assert record.status == ResultStatus.COMPLETED
    assert small_client.read_result_data(small_session, result_id) == b"whole"


# Listing many results


LISTED_RESULTS = 50_000
CREATE_BATCH = 10_000
NAME_LENGTH = 200


@pytest.fixture(scope="module")
def many_results(client: Any) -> tuple[str, dict[str, str]]:
    """A session of 50,000 results with 200-character names; returns the session id
    and the names by result id."""
    session_id = client.create_session()
    names: dict[str, str] = {}
    for start in range(0, LISTED_RESULTS, CREATE_BATCH):
        batch = [
            f"{number:08d}".ljust(NAME_LENGTH, "n")
            for number in range(start, start + CREATE_BATCH)
        ]
        records = client.create_results_metadata(session_id, batch)
        names.update((record.result_id, record.name) for record in records)
    return session_id, names


def test_list_many_results_pages_cover_all_once(
    client: Any, many_results: tuple[str, dict[str, str]]
) -> None:
    session_id, names = many_results
    page_size = client.settings.limits.max_page_size
    pages = [
        client.list_results(session_id=session_id, page=number, page_size=page_size)
        for number in range(math.ceil(LISTED_RESULTS / page_size) + 1)
    ]

    listed = [record.result_id for page in pages for record in page.items]
    assert {page.total for page in pages} == {LISTED_RESULTS}
    assert max(len(page.items) for page in pages) <= page_size
    assert len(pages[-1].items) == 0
    assert len(listed) == LISTED_RESULTS
    assert set(listed) == set(names)
    assert {record.result_id: record.name for p in pages for record in p.items} == (
        names
    )


def test_list_many_results_filter_total(
    client: Any, many_results: tuple[str, dict[str, str]]
) -> None:
    from results_service.filters import Condition

    session_id, _ = many_results
    # Names start with an eight-digit number, so this prefix matches 10,000 of them.
    condition = Condition("name", "starts_with", "0001")

    page = client.list_results(
        [[condition]], session_id=session_id, page=0, page_size=10
    )

    assert page.total == 10_000
    assert len(page.items) == 10


def test_list_many_results_page_size_over_limit_rejected(
    client: Any, many_results: tuple[str, dict[str, str]]
) -> None:
    session_id, _ = many_results
    limit = client.settings.limits.max_page_size

    with pytest.raises(InvalidArgumentError) as caught:
        client.list_results(session_id=session_id, page_size=limit + 1)

    assert re.search(rf"\b{limit}\b", caught.value.message)


# Memory over many round trips


def node_pids() -> list[int]:
    """Return the pids of this test's Ray node: the raylet, the GCS server, their
    descendants (workers, Serve replicas, the service's actors) and the driver."""
    node = ray._private.worker._global_node
    roots = [
        info.process.pid
        for kind in ("raylet", "gcs_server")
        for info in node.all_processes.get(kind, [])
    ]
    pids = {os.getpid(), *roots}
    for root in roots:
        try:
            pids.update(child.pid for child in psutil.Process(root).children(True))
        except psutil.NoSuchProcess:
            continue
    return sorted(pids)


def private_memory(pids: list[int]) -> dict[int, int]:
    """Return RSS minus shared pages of each process still running, in bytes."""
    found = {}
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_info()
        except psutil.NoSuchProcess:
            continue
        found[pid] = info.rss - info.shared
    return found


def process_label(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())[:80]
    except psutil.NoSuchProcess:
        return "(ended)"


_STATE: list[Any] = []


def object_store_used() -> int:
    """Return the bytes used in the object store of this test's Ray node."""
    from ray._private import internal_api

    if not _STATE:
        address = ray.get_runtime_context().gcs_address
        _STATE.append(internal_api.get_state_from_address(address))
    reply = internal_api.get_memory_info_reply(_STATE[0])
    return int(reply.store_stats.object_store_bytes_used)


def settle() -> None:
    """Free what the driver no longer references, so that usage can fall back."""
    gc.collect()
    time.sleep(0.2)


def round_trip(client: Any, session_id: str, data: bytes) -> int:
    """Upload, download and delete one result; return the bytes downloaded."""
    result_id = new_result(client, session_id)
    client.upload_result_data(session_id, result_id, data)
    received = sum(
        len(chunk) for chunk in client.download_result_data(session_id, result_id)
    )
    client.delete_results_data(session_id, [result_id])
    return received


ROUND_TRIP_BYTES = 100 * MiB
WARM_UP_ROUNDS = 2
# Growth allowed per process after the warm-up. A leak of one transfer's data is
# larger, and so is a leak of one chunk per round trip over 20 of them.
MEMORY_GROWTH_BOUND = 64 * MiB
STORE_SLACK = 4 * MiB


def check_round_trips(client: Any, rounds: int) -> None:
    session_id = client.create_session()
    data = os.urandom(ROUND_TRIP_BYTES)
    for _ in range(WARM_UP_ROUNDS):
        round_trip(client, session_id, data)
    settle()
    pids = node_pids()
    before = private_memory(pids)
    store_before = object_store_used()

    received = [round_trip(client, session_id, data) for _ in range(rounds)]
    settle()

    assert received == [ROUND_TRIP_BYTES] * rounds
    assert poll(lambda: object_store_used() <= store_before + STORE_SLACK, 10.0), (
        f"object store holds {object_store_used() - store_before} bytes more"
    )
    after = private_memory(pids)
    grown = {
        f"{process_label(pid)} [{pid}]": (after[pid] - before[pid]) // MiB
        for pid in after
        if pid in before and after[pid] - before[pid] > MEMORY_GROWTH_BOUND
    }
    assert grown == {}, f"private memory growth in MiB: {grown}"
    assert session_objects(client, session_id) == []


def test_round_trips_return_memory(client: Any) -> None:
    check_round_trips(client, 20)


@pytest.mark.slow
def test_many_round_trips_return_memory(client: Any) -> None:
    check_round_trips(client, 200)


# Slow and abandoned downloads


def range_bytes(client: Any) -> int:
    configuration = client.get_service_configuration()
    return configuration.data_chunk_max_size * configuration.transfer_window_chunks


class StoreSampler:
    """A background thread that samples object store usage and keeps the peak."""

    def __init__(self) -> None:
        self.peak = object_store_used()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, object_store_used())

    def __enter__(self) -> StoreSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def storage_private_memory(client: Any) -> int:
    pid = ray.get(client.actors.storage.__ray_call__.remote(lambda self: os.getpid()))
    return private_memory([pid])[pid]


def large_result(client: Any, session_id: str, size: int) -> str:
    """Import a sparse file of `size` bytes; return the result id."""
    result_id = new_result(client, session_id)
    client.import_results_data(
        session_id, [(result_id, write_object(client, size=size))]
    )
    return result_id


def check_abandoned_download(client: Any, size: int) -> None:
    session_id = client.create_session()
    result_id = large_result(client, session_id, size)
    settle()
    store_before = object_store_used()
    storage_before = storage_private_memory(client)
    bound = 3 * range_bytes(client)

    stream = client.download_result_data(session_id, result_id)
    first = next(stream)
    assert len(first) >= MiB
    del first
    time.sleep(1.0)  # the reader stops; nothing more may be fetched meanwhile
    held = object_store_used() - store_before
    storage_growth = storage_private_memory(client) - storage_before
    stream.close()
    del stream
    settle()

    assert held <= bound, f"object store holds {held} bytes for a stopped reader"
    assert storage_growth <= bound, f"storage actor grew by {storage_growth} bytes"
    assert poll(lambda: object_store_used() <= store_before + STORE_SLACK, 10.0), (
        f"object store holds {object_store_used() - store_before} bytes after the "
        "download was abandoned"
    )


# Ray 2.60 removes freed objects from the store in batches, by default once per
# second (free_objects_period_milliseconds), so a reader's finished ranges stay
# counted for up to that long. A 256 MiB download read at 50 ms per chunk showed
# usage as a sawtooth of that period.
FREE_PERIOD_SECONDS = 1.0


def slow_reader_bound(client: Any, seconds_per_chunk: float) -> int:
    """Return the most object store bytes a reader of this pace may hold: the range
    it reads, the one read ahead, one more in flight, and those it finished during
    two periods of Ray's batched frees."""
    window = client.get_service_configuration().transfer_window_chunks
    finished = math.ceil(2 * FREE_PERIOD_SECONDS / (seconds_per_chunk * window))
    return (3 + finished) * range_bytes(client)


def check_slow_download(client: Any, size: int, seconds_per_chunk: float) -> None:
    session_id = client.create_session()
    result_id = large_result(client, session_id, size)
    settle()
    store_before = object_store_used()
    storage_before = storage_private_memory(client)
    storage_peak = storage_before
    received = 0

    with StoreSampler() as sampler:
        for number, chunk in enumerate(
            client.download_result_data(session_id, result_id)
        ):
            received += len(chunk)
            del chunk
            time.sleep(seconds_per_chunk)
            if number % 8 == 0:
                storage_peak = max(storage_peak, storage_private_memory(client))
    settle()

    bound = slow_reader_bound(client, seconds_per_chunk)
    assert bound < size
    assert received == size
    peak = sampler.peak - store_before
    assert peak <= bound, f"object store peaked {peak} bytes higher"
    growth = storage_peak - storage_before
    assert growth <= 3 * range_bytes(client), f"storage actor grew by {growth} bytes"
    assert poll(lambda: object_store_used() <= store_before + STORE_SLACK, 10.0)


def test_abandoned_download_releases_memory(client: Any) -> None:
    check_abandoned_download(client, 256 * MiB)


def test_slow_download_holds_bounded_memory(client: Any) -> None:
    check_slow_download(client, 256 * MiB, 0.05)


@pytest.mark.slow
def test_abandoned_large_download_releases_memory(client: Any) -> None:
    check_abandoned_download(client, 1024 * MiB)


@pytest.mark.slow
def test_slow_large_download_holds_bounded_memory(client: Any) -> None:
    check_slow_download(client, 1024 * MiB, 0.05)


def test_storage_read_over_one_range_rejected(client: Any, session_id: str) -> None:
    (record,) = client.create_results(session_id, {"r": b"data"})
    storage = client.actors.storage
    token = ray.get(storage.sign.remote(record.opaque_id))
    limit = range_bytes(client)

    with pytest.raises(InvalidArgumentError) as caught:
        try:
            ray.get(storage.read.remote(token, 0, limit + 1))
        except ServiceError as error:
            raise unwrap_ray_error(error) from None

    assert str(limit) in caught.value.message


# S3 connections cut by a proxy


class S3Proxy:
    """A TCP proxy on 127.0.0.1 in front of the test S3 server.

    It cuts the connection in the middle of the response to the next `cuts_left`
    ranged GET requests, `cut_offset` bytes in, and records the size of every
    multipart part uploaded through it.
    """

    def __init__(self, endpoint: str, cut_offset: int = 64 * KiB) -> None:
        parsed = urllib.parse.urlsplit(endpoint)
        self._upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.cut_offset = cut_offset
        self.cuts_left = 0
        self.cuts_done = 0
        self.part_sizes: list[int] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(
                target=self._serve, args=(downstream,), daemon=True
            ).start()

    def _serve(self, downstream: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._upstream)
        except OSError:
            downstream.close()
            return
        link = {"sent": 0, "cut_at": None}
        threading.Thread(
            target=self._forward_requests,
            args=(downstream, upstream, link),
            daemon=True,
        ).start()
        self._forward_responses(upstream, downstream, link)

    def _forward_requests(
        self, downstream: socket.socket, upstream: socket.socket, link: dict[str, Any]
    ) -> None:
        try:
            while data := downstream.recv(1 << 16):
                self._inspect(data, link)
                upstream.sendall(data)
            upstream.shutdown(socket.SHUT_WR)
        except OSError:
            _close(downstream, upstream)

    def _inspect(self, data: bytes, link: dict[str, Any]) -> None:
        match = re.match(rb"([A-Z]+) (\S+) HTTP/1\.[01]\r\n", data)
        if match is None:
            return
        method, target = match.groups()
        head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(b":") for line in head)
        }
        with self._lock:
            if method == b"GET" and b"range" in headers and self.cuts_left > 0:
                self.cuts_left -= 1
                link["cut_at"] = link["sent"] + self.cut_offset
            if method == b"PUT" and b"partNumber=" in target:
                size = headers.get(b"x-amz-decoded-content-length") or headers.get(
                    b"content-length", b"-1"
                )
                self.part_sizes.append(int(size))

    def _forward_responses(
        self, upstream: socket.socket, downstream: socket.socket, link: dict[str, Any]
    ) -> None:
        try:
            while data := upstream.recv(1 << 16):
                cut_at = link["cut_at"]
                if cut_at is not None and link["sent"] + len(data) > cut_at:
                    downstream.sendall(data[: cut_at - link["sent"]])
                    with self._lock:
                        self.cuts_done += 1
                    _close(downstream, upstream)
                    return
                downstream.sendall(data)
                link["sent"] += len(data)
            downstream.shutdown(socket.SHUT_WR)
        except OSError:
            _close(downstream, upstream)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


@pytest.fixture(scope="module")
def proxy_bucket(s3_client: Any) -> Iterator[str]:
    bucket = f"catalogue-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=bucket)
    yield bucket
    empty_bucket(s3_client, bucket)
    s3_client.delete_bucket(Bucket=bucket)


@pytest.fixture(scope="module")
def s3_proxy(s3_endpoint: str) -> Iterator[S3Proxy]:
    proxy = S3Proxy(s3_endpoint)
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def proxied_client(services: Any, s3_proxy: S3Proxy, proxy_bucket: str) -> Any:
    """A service that stores in S3 through the proxy, dropping idle uploads fast."""
    settings = ServiceSettings(
        storage_url=f"s3://{proxy_bucket}/{S3_PREFIX}",
        s3_endpoint_url=s3_proxy.url,
        s3_region=REGION,
        s3_access_key_id=ACCESS_KEY_ID,
        s3_secret_access_key=SECRET_ACCESS_KEY,
        upload_idle_seconds=IDLE_SECONDS,
    )
    return services.start(
        settings=dataclasses.replace(settings, results_shards=2, tasks_shards=1)
    )


@pytest.fixture
def proxy_reset(s3_proxy: S3Proxy) -> Iterator[S3Proxy]:
    """The proxy with no cut armed and no part recorded, disarmed after the test."""
    s3_proxy.cuts_left = 0
    s3_proxy.cuts_done = 0
    s3_proxy.part_sizes.clear()
    yield s3_proxy
    s3_proxy.cuts_left = 0


def test_s3_cut_reads_resume_with_right_bytes(
    proxied_client: Any, proxy_reset: S3Proxy
) -> None:
    client = proxied_client
    session_id = client.create_session()
    data = os.urandom(10 * MiB + 12345)
    result_id = new_result(client, session_id)
    client.upload_result_data(session_id, result_id, data)
    proxy_reset.cuts_left = 3

    received = client.read_result_data(session_id, result_id)

    assert proxy_reset.cuts_done == 3
    assert len(received) == len(data)
    assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()


def test_s3_cut_reads_fail_cleanly(proxied_client: Any, proxy_reset: S3Proxy) -> None:
    client = proxied_client
    session_id = client.create_session()
    data = os.urandom(MiB)
    result_id = new_result(client, session_id)
    record = client.upload_result_data(session_id, result_id, data)
    proxy_reset.cuts_left = 1_000_000
    received: list[bytes] = []

    with pytest.raises(UnavailableError) as caught:
        received.extend(
            chunk.to_pybytes()
            for chunk in client.download_result_data(session_id, result_id)
        )
    proxy_reset.cuts_left = 0

    assert record.opaque_id.decode() in caught.value.message
    assert received == []
    assert client.read_result_data(session_id, result_id) == data


def test_s3_small_client_chunks_make_large_parts(
    proxied_client: Any, proxy_reset: S3Proxy, s3_client: Any, proxy_bucket: str
) -> None:
    client = proxied_client
    session_id = client.create_session()
    chunks = [os.urandom(64 * KiB) for _ in range(12 * 16)]
    part_size = client.settings.s3_part_size
    result_id = new_result(client, session_id)

    record = client.upload_result_data(session_id, result_id, iter(chunks))

    key = f"{S3_PREFIX}/{record.opaque_id.decode()}"
    stored = s3_client.get_object(Bucket=proxy_bucket, Key=key)["Body"].read()
    assert proxy_reset.part_sizes == [part_size, 12 * MiB - part_size]
    assert min(proxy_reset.part_sizes[:-1]) >= 5 * MiB
    assert stored == b"".join(chunks)


def multipart_uploads(s3_client: Any, bucket: str) -> list[dict[str, Any]]:
    return s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_s3_abandoned_upload_leaves_no_multipart_upload(
    proxied_client: Any, s3_client: Any, proxy_bucket: str
) -> None:
    client = proxied_client
    session_id = client.create_session()
    result_id = new_result(client, session_id)
    upload_id = rpc(client, "open_upload", session_id, result_id)
    # Three 4 MiB chunks pass the 8 MiB part size, so one part is uploaded.
    rpc(client, "write_upload", upload_id, [os.urandom(4 * MiB) for _ in range(3)])
    opened = multipart_uploads(s3_client, proxy_bucket)

    # The upload leaves the table before its writer is aborted, so both are polled.
    dropped = poll(
        lambda: (
            client.open_uploads() == 0
            and multipart_uploads(s3_client, proxy_bucket) == []
        )
    )

    assert len(opened) == 1
    assert dropped
    assert session_objects(client, session_id) == []
    assert client.get_result(session_id, result_id).status == ResultStatus.CREATED
