"""Helpers shared by the benchmark scripts: a local Ray and service, timing,
percentiles, memory sampling of every Ray process, and table and JSON output.

Every script imports this module before anything that imports Ray, because Ray
binds to the machine's address instead of 127.0.0.1 unless
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is set before Ray is imported.
"""

from __future__ import annotations

import argparse
import atexit
import datetime
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
# Ray's processes inherit the driver's environment, so the worker processes can
# import the service's packages even when the project is not installed.
os.environ["PYTHONPATH"] = os.pathsep.join(
    part for part in (REPO_ROOT, os.environ.get("PYTHONPATH", "")) if part
)

try:
    import psutil
except ImportError as error:  # pragma: no cover - depends on the environment
    raise SystemExit(
        "the benchmarks need psutil to sample process memory; install it with "
        "`pip install psutil`"
    ) from error

import ray  # noqa: E402
from ray import serve  # noqa: E402

from results_service.client import ResultsClient  # noqa: E402
from results_service.settings import ServiceSettings  # noqa: E402

logger = logging.getLogger(__name__)
# Serve logs one INFO line per application start and stop in the driver.
logging.getLogger("ray.serve").setLevel(logging.WARNING)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


# Command line and machine


def build_parser(description: str, repeats: int) -> argparse.ArgumentParser:
    """Return a parser with the options every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="run a smaller workload, for CI-like checks",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=repeats,
        help=f"repetitions of each measurement, medians are over them (default "
        f"{repeats})",
    )
    parser.add_argument(
        "--json", dest="json_path", help="also write the figures to this JSON file"
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record the service's processes with py-spy during the measured step, "
        "write collapsed stacks to DIR and print the top frames",
    )
    return parser


def machine_info() -> dict[str, Any]:
    """Return the facts about the machine and the moment that a figure depends on."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = os.getloadavg()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / GiB, 1),
        "cpu_model": model,
        "load_average": [round(value, 2) for value in load],
        "python": platform.python_version(),
        "ray": ray.__version__,
    }


def print_machine(info: dict[str, Any]) -> None:
    """Print the machine facts, and a warning when other work loads the machine."""
    print(
        f"machine: {info['nproc']} CPUs ({info['cpu_model']}), "
        f"{info['memory_gib']} GiB, Python {info['python']}, Ray {info['ray']}"
    )
    print(f"date: {info['date']}, load average: {info['load_average']}")
    if info["load_average"][0] > 0.5 * (info["nproc"] or 1):
        print(
            "WARNING: the 1-minute load average is high, so other processes share "
            "the CPUs and the timings below are slower than on a quiet machine"
        )


def write_json(path: str | None, document: dict[str, Any]) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as file:
            json.dump(document, file, indent=2, default=str)
        print(f"figures written to {path}")


# Ray and the service


def start_service(
    settings: ServiceSettings | None = None, num_cpus: int | None = None
) -> ResultsClient:
    """Start a local Ray bound to 127.0.0.1 (once per process) and a service on it.

    Call it again with another `app_name` in the settings to run a second service
    on the same Ray.
    """
    settings = settings or ServiceSettings()
    client = ResultsClient.start_local(settings, num_cpus=num_cpus)
    client.settings = settings  # type: ignore[attr-defined]
    return client


def stop_ray(clients: Iterable[ResultsClient] = ()) -> None:
    """Close the clients, stop Serve and stop the local Ray."""
    for client in clients:
        client.close()
    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def temp_storage_dir(prefix: str) -> str:
    """Return a new directory for a benchmark's local storage, removed when the
    script exits."""
    path = tempfile.mkdtemp(prefix=f"bench-{prefix}-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def actor_pid(handle: Any) -> int:
    """Return the process id of a Ray actor."""
    return ray.get(handle.__ray_call__.remote(lambda _self: os.getpid()))


# Timing


def timed(function: Callable[[], Any]) -> float:
    """Return the seconds one call of `function` takes."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile, such as fraction=0.99 for p99."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil without math
    return ordered[int(rank) - 1]


def p99(values: Sequence[float]) -> float:
    return percentile(values, 0.99)


def ratio(ours: float, baseline: float) -> float:
    return ours / baseline if baseline else float("nan")


# Memory


def process_label(process: psutil.Process) -> str:
    """Return a short label: the Ray worker's title ("ray::TasksTable") or the name."""
    try:
        command = process.cmdline()
    except (psutil.Error, OSError):
        return "?"
    if command and command[0].startswith("ray::"):
        # Ray sets a worker's title to "ray::Class.method" while it runs a call.
        return command[0].split()[0].split(".")[0]
    name = process.name()
    if name.startswith("python") and process.pid == os.getpid():
        return "driver (client)"
    return name


def ray_processes() -> list[psutil.Process]:
    """Return this process and every process it started, which on a local Ray are
    the GCS, the raylet and all worker processes."""
    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def resident_split(pid: int) -> tuple[int, int]:
    """Return a process's private anonymous memory and its resident shared-memory
    pages (Ray's object store), in bytes, from /proc/PID/status."""
    anonymous = shared = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                anonymous = int(line.split()[1]) * KiB
            elif line.startswith("RssShmem:"):
                shared = int(line.split()[1]) * KiB
    return anonymous, shared


class MemorySampler:
    """Samples the memory of every Ray process in a background thread.

    Each process's RSS is split in two: private anonymous memory (its heap and
    buffers, what a transfer must keep small) and shared-memory pages, which are
    Ray's object store. Object store pages stay resident in a process after the
    objects are freed, so growth (peak minus the value at the first sample) is
    reported rather than the peak alone. Samples read /proc/PID/status only, as
    reading smaps for PSS takes about 10 ms per Ray process and would load the
    machine being measured.

    Attributes:
        processes: per process id, its label and, for private and shared memory,
            the first sample and the peak.
        start_private, peak_private: summed private memory of all processes at the
            first sample, and the largest sum seen.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.processes: dict[int, dict[str, Any]] = {}
        self.start_private = 0
        self.peak_private = 0
        self._first = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        total = 0
        for process in ray_processes():
            try:
                anonymous, shared = resident_split(process.pid)
            except (psutil.Error, OSError):
                continue
            total += anonymous
            entry = self.processes.get(process.pid)
            if entry is None:
                entry = {
                    "label": process_label(process),
                    "private": [anonymous, anonymous],
                    "shared": [shared, shared],
                }
                self.processes[process.pid] = entry
            # A pooled worker process takes its actor's title after it starts.
            if entry["label"].startswith("ray::IDLE") or entry["label"] == "?":
                entry["label"] = process_label(process)
            entry["private"][1] = max(entry["private"][1], anonymous)
            entry["shared"][1] = max(entry["shared"][1], shared)
        if self._first:
            self.start_private = total
            self._first = False
        self.peak_private = max(self.peak_private, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._thread = threading.Thread(
            target=self._run, name="memory-sampler", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def by_label(self) -> dict[str, dict[str, int]]:
        """Return, for each label, the largest figures among its processes: peak
        private memory and its growth, and growth of shared-memory pages."""
        figures: dict[str, dict[str, int]] = {}
        for entry in self.processes.values():
            first, peak = entry["private"]
            shared_first, shared_peak = entry["shared"]
            current = figures.setdefault(
                entry["label"],
                {"private_peak": 0, "private_growth": 0, "shared_growth": 0},
            )
            current["private_peak"] = max(current["private_peak"], peak)
            current["private_growth"] = max(current["private_growth"], peak - first)
            current["shared_growth"] = max(
                current["shared_growth"], shared_peak - shared_first
            )
        return figures


def memory_of(pids: Iterable[int]) -> dict[str, int]:
    """Return summed RSS and USS, in bytes, of the given processes."""
    rss = uss = 0
    for pid in pids:
        info = psutil.Process(pid).memory_full_info()
        rss += info.rss
        uss += info.uss
    return {"rss": rss, "uss": uss}


# CPU time


class CpuMeter:
    """Measures the CPU time (user + system) each Ray process uses during a step.

    CPU time does not count the time a process waits for the CPU, so unlike wall
    time it changes little when other work loads the machine. With an `interval`, a
    thread reads the figures that often, so processes that end during the step,
    such as replay workers, are counted up to their last reading; a process that
    starts during the step counts from zero, its start-up included. Repeated uses
    add up. Linux counts CPU time in clock ticks (usually 10 ms), so a short step
    must be repeated for its figure to mean anything.

    Attributes:
        seconds: CPU seconds per label, summed over the processes with that label.
        wall: wall-clock seconds of the steps.
    """

    def __init__(self, interval: float | None = 0.5) -> None:
        self.interval = interval
        self.seconds: dict[str, float] = {}
        self.wall = 0.0
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self, initial: bool = False) -> None:
        for process in ray_processes():
            try:
                times = process.cpu_times()
                label = process_label(process)
            except (psutil.Error, OSError):
                continue
            used = times.user + times.system
            if process.pid not in self._first:
                self._first[process.pid] = used if initial else 0.0
            # Keep the last real title: a pooled worker is "ray::IDLE" until it
            # runs an actor, and an ended one has no command line left.
            previous = self._last.get(process.pid, (label, 0.0))[0]
            if label == "?" or label.startswith("ray::IDLE"):
                label = previous
            self._last[process.pid] = (label, used)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._read()

    def __enter__(self) -> CpuMeter:
        self._first, self._last = {}, {}
        self._read(initial=True)
        # Read this process again, so that reading the others is not counted.
        me = psutil.Process()
        times = me.cpu_times()
        self._first[me.pid] = times.user + times.system
        self._thread = None
        if self.interval is not None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="cpu-meter", daemon=True
            )
            self._thread.start()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._started
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._read()
        for pid, (label, used) in self._last.items():
            self.seconds[label] = self.seconds.get(label, 0.0) + used - self._first[pid]

    def total(self) -> float:
        return sum(self.seconds.values())

    def print(self, title: str, per: float = 0.0, unit: str = "") -> None:
        """Print the processes that used the most CPU; with `per`, also the CPU
        time per `per` units of work."""
        total = sum(self.seconds.values())
        print(
            f"\nCPU time during {title}: {total:.2f} CPU-s in {self.wall:.2f} s of "
            "wall time"
        )
        rows = []
        for label, used in sorted(self.seconds.items(), key=lambda item: -item[1]):
            if used < 0.01 * total:
                continue
            row = [label, f"{used:.2f}", f"{100 * used / max(self.wall, 1e-9):.0f}%"]
            if per:
                row.append(format_seconds(used / per))
            rows.append(row)
        headers = ["process", "CPU s", "of wall"]
        if per:
            headers.append(f"CPU per {unit}")
        print_table(headers, rows)


# Profiles


class Profiler:
    """Records Ray processes with py-spy while a step runs.

    Each selected process gets a `py-spy record --format raw --gil` child that
    writes collapsed stacks, one file per process, to `directory`. With --gil only
    the thread holding the GIL is sampled, so the samples count the time the
    process ran Python code; time in Ray's C++ core (gRPC, copies) is not seen. A
    thread attaches to matching processes that start during the step too, such as
    replay workers.
    """

    def __init__(
        self, directory: str | None, labels: Sequence[str], rate: int = 100
    ) -> None:
        self.directory = directory
        self.labels = labels
        self.rate = rate
        self.recorders: dict[int, tuple[str, subprocess.Popen[bytes], float]] = {}
        self.durations: dict[str, float] = {}
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def _attach_new(self) -> None:
        assert self.directory is not None
        for process in ray_processes():
            if process.pid in self.recorders:
                continue
            label = process_label(process)
            if not any(wanted in label for wanted in self.labels):
                continue
            name = label.replace("ray::", "").replace(":", "-").replace(" ", "-")
            path = os.path.join(self.directory, f"{name}-{process.pid}.txt")
            command = [
                "py-spy",
                "record",
                "--pid",
                str(process.pid),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--nonblocking",
                "--gil",
                "--output",
                path,
            ]
            recorder = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            self.recorders[process.pid] = (path, recorder, time.perf_counter())

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self._attach_new()

    def __enter__(self) -> Profiler:
        if not self.directory:
            return self
        if shutil.which("py-spy") is None:
            raise SystemExit(
                "--profile needs py-spy; install it with `pip install py-spy`"
            )
        os.makedirs(self.directory, exist_ok=True)
        self._attach_new()
        time.sleep(1.0)  # py-spy needs a moment to attach
        self._watcher = threading.Thread(
            target=self._watch, name="profiler", daemon=True
        )
        self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._watcher is None:
            return
        self._stop.set()
        self._watcher.join()
        stopped = time.perf_counter()
        for path, recorder, started in self.recorders.values():
            self.durations[path] = stopped - started
            if recorder.poll() is None:
                recorder.send_signal(signal.SIGINT)
        for path, recorder, _ in self.recorders.values():
            try:
                recorder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                recorder.kill()
                print(f"py-spy did not stop in time; {path} may be incomplete")

    def report(self, top: int = 12) -> None:
        """Print, per recorded process, the functions with the most samples."""
        if self.directory:
            print(
                f"\nprofiles (py-spy --gil, {self.rate} samples/s) in {self.directory}:"
            )
        for path, _, _ in self.recorders.values():
            if os.path.exists(path):
                print_profile(path, top, self.durations.get(path, 0.0) * self.rate)


PROJECT_FRAMES = ("results_service/", "actors/", "serve_app.py")


def read_collapsed(path: str) -> list[tuple[list[str], int]]:
    """Read py-spy's raw format: one "frame;frame;... count" line per stack."""
    stacks = []
    with open(path, encoding="utf-8", errors="replace") as file:
        for line in file:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack and count.isdigit():
                stacks.append((stack.split(";"), int(count)))
    return stacks


def print_profile(path: str, top: int = 12, possible: float = 0.0) -> None:
    """Print the functions of a collapsed-stack file with the largest inclusive and
    self shares of the samples; `possible` is the number of samples a process that
    held the GIL all the time would have."""
    stacks = read_collapsed(path)
    total = sum(count for _, count in stacks)
    if not total:
        print(f"\nprofile {os.path.basename(path)}: no samples")
        return
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    for frames, count in stacks:
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    busy = (
        f", Python running {100 * total / possible:.0f}% of the time"
        if possible
        else ""
    )
    print(f"\nprofile {os.path.basename(path)}: {total} samples{busy}")
    print("  inclusive, the project's functions:")
    ours = {
        frame: count
        for frame, count in inclusive.items()
        if any(part in frame for part in PROJECT_FRAMES)
    }
    for frame, count in sorted(ours.items(), key=lambda item: -item[1])[:top]:
        print(f"    {100 * count / total:5.1f}%  {frame}")
    print("  self:")
    for frame, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        print(f"    {100 * count / total:5.1f}%  {frame}")


# Output


def format_rate(value: float) -> str:
    return f"{value:,.0f}"


def format_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def format_bytes(size: float) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(size) >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print rows under headers with columns aligned; numbers align right."""
    text_rows = [[str(cell) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in text_rows:
        widths = [
            max(width, len(cell)) for width, cell in zip(widths, row, strict=True)
        ]

    def line(cells: Sequence[str], numeric: Sequence[bool]) -> str:
        return "  ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(cells, widths, numeric, strict=True)
        ).rstrip()

    print(line(headers, [False] * len(headers)))
    print("  ".join("-" * width for width in widths))
    for row in text_rows:
        print(line(row, [_looks_numeric(cell) for cell in row]))


def _looks_numeric(cell: str) -> bool:
    return bool(cell) and (cell[0].isdigit() or cell[0] in "-+.") and cell != "-"
