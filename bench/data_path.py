"""Data path: upload and download throughput through the client, against direct
reads and writes of the same bytes on the same storage.

The data is 1 GiB on a local directory and 256 MiB on S3 (256 MiB and 64 MiB with
--quick). S3 is a moto server that this script starts on 127.0.0.1 in a thread of
the script's process, and moto moves only about 10 to 70 MB/s there, so the S3 figures
measure moto more than the service. For each storage, each repetition:
1. uploads the data with upload_result_data and downloads it with
   download_result_data, consuming the chunks without joining them;
2. writes the same bytes directly to the same storage and reads them back, in
   chunks of the service's chunk size: pyarrow's LocalFileSystem for the directory,
   an s3fs file with the service's part size for S3.
While each step runs, a thread samples the memory of every process of the local
Ray; the peaks are printed per step.

Usage: python bench/data_path.py [--quick] [--json FILE] [--profile DIR]
"""

from __future__ import annotations

import os
import sys
import uuid
from collections import defaultdict
from typing import Any

import common
import pyarrow.fs as pafs

from results_service.client import ResultsClient

TARGET_RATIO = 0.8
TARGET_LOCAL_DOWNLOAD_GBPS = 1.5
GB = 1e9


class LocalDirect:
    """Direct reads and writes of files under the service's storage directory."""

    def __init__(self, root: str, chunk_size: int) -> None:
        self.fs = pafs.LocalFileSystem()
        self.root = root
        self.chunk_size = chunk_size

    def write(self, name: str, view: memoryview) -> None:
        with self.fs.open_output_stream(os.path.join(self.root, name)) as stream:
            for start in range(0, len(view), self.chunk_size):
                stream.write(view[start : start + self.chunk_size])

    def read(self, name: str) -> int:
        total = 0
        with self.fs.open_input_file(os.path.join(self.root, name)) as file:
            while True:
                buffer = file.read_buffer(self.chunk_size)
                if not buffer:
                    return total
                total += len(buffer)

    def delete(self, name: str) -> None:
        self.fs.delete_file(os.path.join(self.root, name))


class S3Direct:
    """Direct reads and writes of objects in the service's bucket, through s3fs."""

    def __init__(self, settings: common.ServiceSettings) -> None:
        from results_service.storage.s3 import make_filesystem

        self.fs = make_filesystem(
            settings.s3_endpoint_url,
            settings.s3_region,
            settings.s3_access_key_id,
            settings.s3_secret_access_key,
        )
        self.root = settings.storage_url.removeprefix("s3://")
        self.chunk_size = settings.data_chunk_max_size
        self.part_size = settings.s3_part_size

    def write(self, name: str, view: memoryview) -> None:
        with self.fs.open(
            f"{self.root}/{name}", "wb", block_size=self.part_size
        ) as file:
            for start in range(0, len(view), self.chunk_size):
                file.write(view[start : start + self.chunk_size])

    def read(self, name: str) -> int:
        total = 0
        with self.fs.open(
            f"{self.root}/{name}", "rb", block_size=self.chunk_size
        ) as file:
            while True:
                block = file.read(self.chunk_size)
                if not block:
                    return total
                total += len(block)

    def delete(self, name: str) -> None:
        self.fs.rm(f"{self.root}/{name}")


def service_round(
    client: ResultsClient,
    data: memoryview,
    meters: dict[str, common.CpuMeter] | None = None,
) -> tuple[float, float]:
    """Upload then download `data` through the service; return both durations."""
    meters = meters or {"upload": common.CpuMeter(), "download": common.CpuMeter()}
    session_id = client.create_session()
    (record,) = client.create_results_metadata(session_id, ["data"])
    with meters["upload"]:
        upload = common.timed(
            lambda: client.upload_result_data(session_id, record.result_id, data)
        )

    received = 0

    def download() -> None:
        nonlocal received
        for buffer in client.download_result_data(session_id, record.result_id):
            received += len(buffer)

    with meters["download"]:
        seconds = common.timed(download)
    if received != len(data):
        raise RuntimeError(f"downloaded {received} bytes of {len(data)}")
    client.delete_results_data(session_id, [record.result_id])
    return upload, seconds


def s3_settings(endpoint: str, bucket: str) -> common.ServiceSettings:
    from tests.s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

    return common.ServiceSettings(
        app_name="bench-data-s3",
        storage_url=f"s3://{bucket}/bench",
        s3_endpoint_url=endpoint,
        s3_region=REGION,
        s3_access_key_id=ACCESS_KEY_ID,
        s3_secret_access_key=SECRET_ACCESS_KEY,
    )


def main() -> int:
    parser = common.build_parser(__doc__.split("\n\n")[0], repeats=3)
    parser.add_argument(
        "--size-mib",
        type=int,
        default=None,
        help="MiB of data on local storage (default 1024, 256 with --quick)",
    )
    parser.add_argument(
        "--s3-size-mib",
        type=int,
        default=None,
        help="MiB of data on S3 (default 256, 64 with --quick); the moto server "
        "runs in this process and moves about 10 to 70 MB/s, so 1 GiB takes minutes",
    )
    parser.add_argument(
        "--storage",
        default="local,s3",
        help="comma-separated storages to measure: local, s3 (default local,s3)",
    )
    arguments = parser.parse_args()
    sizes = {
        "local": (arguments.size_mib or (256 if arguments.quick else 1024))
        * common.MiB,
        "s3": (arguments.s3_size_mib or (64 if arguments.quick else 256)) * common.MiB,
    }
    storages = [name.strip() for name in arguments.storage.split(",") if name.strip()]
    info = common.machine_info()
    common.print_machine(info)
    print(
        "data: "
        + ", ".join(
            f"{common.format_bytes(sizes[name])} on {name}" for name in storages
        )
        + f", {arguments.repeats} repetitions",
        flush=True,
    )

    block = os.urandom(16 * common.MiB)
    largest = max(sizes[name] for name in storages)
    data = (block * (largest // len(block) + 1))[:largest]

    os.environ["AWS_EC2_METADATA_DISABLED"] = (
        "true"  # botocore must not look for credentials elsewhere
    )
    s3_server = None
    clients: list[ResultsClient] = []
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    meters: dict[str, dict[str, common.CpuMeter]] = {}
    memory: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    try:
        setups: list[tuple[str, ResultsClient, Any]] = []
        for storage in storages:
            if storage == "local":
                root = common.temp_storage_dir("data")
                settings = common.ServiceSettings(
                    app_name="bench-data-local", storage_url=f"file://{root}"
                )
                client = common.start_service(settings)
                setups.append(
                    ("local", client, LocalDirect(root, settings.data_chunk_max_size))
                )
            elif storage == "s3":
                from tests.s3_server import make_s3_client, start_s3_server

                s3_server, endpoint = start_s3_server()
                bucket = f"bench-{uuid.uuid4().hex[:12]}"
                make_s3_client(endpoint).create_bucket(Bucket=bucket)
                settings = s3_settings(endpoint, bucket)
                client = common.start_service(settings)
                setups.append(("s3", client, S3Direct(settings)))
            else:
                parser.error(f"storage {storage!r} is unknown; give local or s3")
            clients.append(client)

        profiler = common.Profiler(
            arguments.profile, ["driver", "ControlPlane", "ObjectStorage"]
        )
        for name, client, direct in setups:
            # An untimed round first, so that connections and worker threads exist.
            size = sizes[name]
            view = memoryview(data)[:size]
            service_round(client, view[: 8 * common.MiB])
            meters[name] = {"upload": common.CpuMeter(), "download": common.CpuMeter()}
            for repeat in range(arguments.repeats):
                peaks: dict[str, common.MemorySampler] = {}
                # Only the last repetition on the first storage is profiled.
                recorder = (
                    profiler
                    if repeat == arguments.repeats - 1 and name == setups[0][0]
                    else common.Profiler(None, [])
                )
                with (
                    common.MemorySampler(0.1) as peaks["service upload+download"],
                    recorder,
                ):
                    upload, download = service_round(client, view, meters[name])
                key = f"direct-{repeat}"
                with common.MemorySampler(0.1) as peaks["direct write"]:
                    write = common.timed(lambda d=direct, k=key, v=view: d.write(k, v))
                with common.MemorySampler(0.1) as peaks["direct read"]:
                    read_bytes = 0

                    def read(reader: Any = direct, name: str = key) -> None:
                        nonlocal read_bytes
                        read_bytes = reader.read(name)

                    read_seconds = common.timed(read)
                if read_bytes != size:
                    raise RuntimeError(
                        f"direct read returned {read_bytes} bytes of {size}"
                    )
                direct.delete(key)
                for figure, seconds in (
                    ("upload", upload),
                    ("download", download),
                    ("direct write", write),
                    ("direct read", read_seconds),
                ):
                    samples[name][figure].append(seconds)
                for phase, sampler in peaks.items():
                    seen = memory[name].setdefault(phase, {})
                    growth = sampler.peak_private - sampler.start_private
                    seen["total private growth"] = max(
                        seen.get("total private growth", 0), growth
                    )
                    for label, figures in sampler.by_label().items():
                        old = seen.setdefault(label, {key: 0 for key in figures})
                        for key, value in figures.items():
                            old[key] = max(old[key], value)
                gbps = [size / seconds / GB for seconds in (upload, download)]
                gbps += [size / seconds / GB for seconds in (write, read_seconds)]
                print(
                    f"{name} repeat {repeat + 1}: upload {gbps[0]:.2f} GB/s, download "
                    f"{gbps[1]:.2f}, direct write {gbps[2]:.2f}, direct read "
                    f"{gbps[3]:.2f}",
                    flush=True,
                )
    finally:
        common.stop_ray(clients)
        if s3_server is not None:
            s3_server.stop()

    throughput: dict[str, dict[str, float]] = {}
    rows = []
    for name, figures in samples.items():
        rates = {
            figure: sizes[name] / common.median(values) / GB
            for figure, values in figures.items()
        }
        throughput[name] = rates
        rows.append(
            [
                f"{name} ({common.format_bytes(sizes[name])})",
                "upload vs direct write",
                f"{rates['upload']:.2f}",
                f"{rates['direct write']:.2f}",
                f"{rates['upload'] / rates['direct write']:.2f}",
            ]
        )
        rows.append(
            [
                f"{name} ({common.format_bytes(sizes[name])})",
                "download vs direct read",
                f"{rates['download']:.2f}",
                f"{rates['direct read']:.2f}",
                f"{rates['download'] / rates['direct read']:.2f}",
            ]
        )
    print(f"\nmedians over {arguments.repeats} repetitions, GB = 10^9 bytes")
    common.print_table(
        ["storage", "transfer", "service GB/s", "direct GB/s", "ratio"], rows
    )

    print(
        "\nmemory during each step: growth of the private memory summed over all Ray "
        "processes, then the processes whose private memory grew most (growth, "
        "peak) and the growth of their resident object store pages; the driver's "
        "private memory includes the source data:"
    )
    for name, phases in memory.items():
        for phase, figures in phases.items():
            processes = [
                (label, value)
                for label, value in figures.items()
                if label != "total private growth"
            ]
            top = sorted(processes, key=lambda item: -item[1]["private_growth"])[:3]
            listed = "; ".join(
                f"{label} private +{common.format_bytes(value['private_growth'])} "
                f"(peak {common.format_bytes(value['private_peak'])}), object store "
                "pages "
                f"+{common.format_bytes(value['shared_growth'])}"
                for label, value in top
            )
            growth = common.format_bytes(figures["total private growth"])
            print(f"  {name} {phase}: private +{growth}; {listed}")

    verdicts = []
    for name, rates in throughput.items():
        for ours, theirs in (("upload", "direct write"), ("download", "direct read")):
            met = rates[ours] >= TARGET_RATIO * rates[theirs]
            verdicts.append(met)
            print(
                f"target: {name} {ours} >= {TARGET_RATIO} x direct: "
                f"{'met' if met else 'missed'} ({rates[ours] / rates[theirs]:.2f})"
            )
    if "local" in throughput:
        met = throughput["local"]["download"] >= TARGET_LOCAL_DOWNLOAD_GBPS
        verdicts.append(met)
        print(
            f"target: local download >= {TARGET_LOCAL_DOWNLOAD_GBPS} GB/s: "
            f"{'met' if met else 'missed'} ({throughput['local']['download']:.2f})"
        )
    for name, pair in meters.items():
        for direction, meter in pair.items():
            meter.print(
                f"{name} {direction}s, all repetitions",
                per=sizes[name] * arguments.repeats / common.MiB,
                unit="MiB",
            )
    profiler.report()
    common.write_json(
        arguments.json_path,
        {
            "benchmark": "data_path",
            "machine": info,
            "bytes": {name: sizes[name] for name in storages},
            "repeats": arguments.repeats,
            "samples_seconds": {
                name: dict(figures) for name, figures in samples.items()
            },
            "gb_per_second": throughput,
            "peak_memory_bytes": memory,
            "targets_met": all(verdicts),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
