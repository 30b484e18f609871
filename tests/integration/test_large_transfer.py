"""A 1 GiB upload and download through a real local Ray, with memory sampled.

The test runs in the default suite, since it is not marked slow: the round trip took
4 to 7 s on a 2-core machine. The data is generated chunk by chunk and hashed as it
goes, so the test process keeps only a few chunks in memory.

Memory is read from /proc/<pid>/status of the test process and of every process of
the test's Ray node (the raylet, the GCS and the raylet's descendants: Serve
replicas and the service's actors). Ray's object store is shared memory that every
process touching an object maps, and a mapped page counts in that process's VmRSS
as RssShmem. A transfer that stays zero-copy still moves through those pages, so
VmRSS grows with whatever the object store happens to hold. On that machine, VmRSS
of the ObjectStorage actor and of the test process each grew by 650 to 710 MiB,
nearly all RssShmem, while their RssAnon grew by less than 60 MiB. The bound
therefore applies to private memory, RssAnon (heap, Arrow buffers, Python
objects), which a leak or a whole-object copy would grow. VmRSS and RssShmem are
printed too.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

MiB = 1024 * 1024
CHUNK = 4 * MiB
TOTAL = 1024 * MiB
PRIVATE_GROWTH_BOUND = 400 * MiB
SAMPLE_SECONDS = 0.05
STATUS_FIELDS = ("VmRSS", "RssAnon", "RssShmem")


@dataclass
class ProcessMemory:
    """Memory samples of one process, in bytes, by /proc status field."""

    name: str
    baseline: dict[str, int]
    peak: dict[str, int] = field(default_factory=dict)

    def growth(self, name: str) -> int:
        return self.peak.get(name, 0) - self.baseline.get(name, 0)


def read_status(pid: int) -> dict[str, int] | None:
    """Return the memory fields of /proc/<pid>/status in bytes, or None if it ended."""
    try:
        with open(f"/proc/{pid}/status") as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    values = {}
    for line in lines:
        key, _, rest = line.partition(":")
        if key in STATUS_FIELDS:
            values[key] = int(rest.split()[0]) * 1024  # the file gives kB
    return values


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            command = file.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "?"
    return command.rsplit("/", 1)[-1][:60]


def descendants(root: int) -> list[int]:
    """Return the pids under `root` in the process tree, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                stat = file.read()
        except OSError:
            continue
        # The command name in brackets may contain spaces; fields follow the last ')'.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found: list[int] = []
    pending = [root]
    while pending:
        pid = pending.pop()
        for child in children.get(pid, []):
            found.append(child)
            pending.append(child)
    return found


def node_pids() -> list[int]:
    """Return the pids of this test's Ray node: the raylet and its descendants, the
    GCS server, and the test process itself."""
    import ray

    node = ray._private.worker._global_node
    roots = []
    for kind in ("raylet", "gcs_server"):
        for info in node.all_processes.get(kind, []):
            roots.append(info.process.pid)
    pids = {os.getpid(), *roots}
    for root in roots:
        pids.update(descendants(root))
    return sorted(pids)


class MemorySampler:
    """A background thread that samples the memory of the node's processes."""

    def __init__(self) -> None:
        self.processes: dict[int, ProcessMemory] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler")
        self.sample()  # baselines before the transfer

    def sample(self) -> None:
        for pid in node_pids():
            values = read_status(pid)
            if not values:
                continue
            memory = self.processes.get(pid)
            if memory is None:
                memory = ProcessMemory(process_name(pid), dict(values))
                self.processes[pid] = memory
            for key, value in values.items():
                memory.peak[key] = max(memory.peak.get(key, 0), value)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def report(self, names: dict[int, str]) -> str:
        lines = [f"{'process':<62} {'VmRSS':>9} {'RssAnon':>9} {'RssShmem':>9}  (MiB)"]
        ordered = sorted(
            self.processes.items(), key=lambda item: -item[1].growth("RssAnon")
        )
        for pid, memory in ordered:
            label = names.get(pid, memory.name)
            lines.append(
                f"{label + f' [{pid}]':<62} "
                + " ".join(
                    f"{memory.growth(key) / MiB:>+9.1f}" for key in STATUS_FIELDS
                )
            )
        return "\n".join(lines)


def pattern_chunks(digest: Any) -> Iterator[memoryview]:
    """Yield TOTAL bytes as CHUNK-sized views of one fixed random block.

    Chunk i starts at a different offset of the block, so a chunk delivered out of
    order changes the checksum. Every chunk is hashed into `digest` as it is given.
    """
    block = memoryview(random.Random(1).randbytes(CHUNK + 4096))
    for index in range(TOTAL // CHUNK):
        offset = (index * 97) % 4096
        chunk = block[offset : offset + CHUNK]
        digest.update(chunk)
        yield chunk


def actor_pid(actor: Any) -> int:
    import ray

    return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))


def named_pids(client: Any) -> dict[int, str]:
    """Name the processes the transfer goes through, for the printed report."""
    names = {os.getpid(): "test process (client)"}
    names[actor_pid(client.actors.storage)] = "ObjectStorage actor"
    replica = f"ray::ServeReplica:{client.settings.app_name}:"
    for pid in node_pids():
        if process_name(pid).startswith(replica):
            names[pid] = "ControlPlane Serve replica"
    return names


@pytest.fixture(scope="module")
def actor_client(services: Any) -> Any:
    """A service whose clients transfer through the storage actor, not the files."""
    return services.start(local_files=False)


@pytest.mark.parametrize("path", ["local files", "storage actor"])
def test_large_transfer_round_trip_bounded_memory(
    request: pytest.FixtureRequest, path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = request.getfixturevalue(
        "client" if path == "local files" else "actor_client"
    )
    session_id = client.create_session()
    chunk_size = client.get_service_configuration().data_chunk_max_size
    (record,) = client.create_results_metadata(session_id, ["large"])
    names = named_pids(client)
    sent = hashlib.sha256()
    received = hashlib.sha256()
    received_size = 0
    largest_chunk = 0

    with MemorySampler() as sampler:
        uploaded = client.upload_result_data(
            session_id, record.result_id, pattern_chunks(sent)
        )
        for buffer in client.download_result_data(session_id, record.result_id):
            received.update(buffer)
            received_size += len(buffer)
            largest_chunk = max(largest_chunk, len(buffer))
            del buffer
    client.delete_results_data(session_id, [record.result_id])

    with capsys.disabled():
        print(f"\npeak memory growth during a 1 GiB round trip through {path}")
        print(sampler.report(names))
    assert uploaded.size == TOTAL
    assert received_size == TOTAL
    assert largest_chunk <= chunk_size
    assert received.hexdigest() == sent.hexdigest()
    assert sorted(names.values()) == sorted(
        names[pid] for pid in names if pid in sampler.processes
    )
    for pid, memory in sampler.processes.items():
        label = names.get(pid, memory.name)
        growth = memory.growth("RssAnon")
        assert growth < PRIVATE_GROWTH_BOUND, (
            f"{label} [{pid}] grew by {growth / MiB:.0f} MiB of private memory"
        )
