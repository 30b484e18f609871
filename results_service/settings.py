"""The service's settings: one frozen object built at start and passed to every actor.

Nothing reads the environment at import time. `ServiceSettings.from_env` reads the
`RESULTS_SERVICE_*` variables once, when a process builds the application.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from results_service.errors import InvalidArgumentError

MiB = 1024 * 1024
S3_MIN_PART_SIZE = 5 * MiB  # S3 rejects smaller multipart parts, except the last one
S3_MAX_PARTS = 10_000


def default_storage_url() -> str:
    """Return the embedded default storage: a directory under the system temp dir."""
    return "file://" + os.path.join(tempfile.gettempdir(), "results-service-data")


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Documented limits of requests; going over one is INVALID_ARGUMENT.

    Attributes:
        max_batch: items in one create, import, submit, get or delete request.
        max_name_length: characters in a result name.
        max_id_length: characters in any id, partition or opaque id given by a client.
        max_page_size: rows in one list page.
        max_inline_bytes: bytes of data summed over one create_results request.
        max_dependencies: data dependencies of one task.
        max_watch_ids: result ids in one watch_results stream.
        max_open_uploads: uploads open at once in the object storage actor.
    """

    max_batch: int = 100_000
    max_name_length: int = 1024
    max_id_length: int = 256
    max_page_size: int = 10_000
    max_inline_bytes: int = 64 * MiB
    max_dependencies: int = 100_000
    max_watch_ids: int = 100_000
    max_open_uploads: int = 1024

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgumentError(
                    f"limit {field.name}={value!r} is invalid: it must be an integer "
                    "of at least 1"
                )


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Settings of one deployment of the service.

    Attributes:
        app_name: name of the Serve application; clients look it up by this name.
        namespace: Ray namespace of the service's named actors.
        storage_url: `file:///dir`, `s3://bucket/prefix` or `memory://`.
        s3_endpoint_url: S3 endpoint, or None for the AWS default chain.
        s3_region: S3 region, or None for the AWS default chain.
        s3_access_key_id, s3_secret_access_key: credentials, or None for the AWS
            default chain (environment, profile, instance role).
        s3_part_size: bytes per multipart part; at least 5 MiB.
        results_shards: number of ResultsTable actors.
        tasks_shards: number of TasksTable actors.
        partitions: partitions that sessions may use; the first is the default.
        data_chunk_max_size: bytes per chunk of an upload or a download.
        transfer_window_chunks: chunks moved per control-plane call of a transfer.
        upload_idle_seconds: an upload that receives nothing for this long is
            aborted and its partial object deleted.
        lease_seconds: how long a worker holds a task without renewing its lease.
        lease_check_seconds: period of the sweep that requeues expired leases.
        event_log_size: status changes each ResultsTable shard keeps for watchers.
        replicas: Serve replicas of the control plane.
        local_files: let a client on the machine of a local storage directory
            read the files of its downloads and write the files of its uploads
            itself. The client checks that the file or directory is the one the
            storage actor reported; other clients, and every client when False,
            transfer through the storage actor.
        limits: request limits, see `Limits`.
    """

    app_name: str = "results"
    namespace: str = "results_service"
    storage_url: str = dataclasses.field(default_factory=default_storage_url)
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_part_size: int = 8 * MiB
    results_shards: int = 4
    tasks_shards: int = 4
    partitions: tuple[str, ...] = ("default",)
    data_chunk_max_size: int = 4 * MiB
    transfer_window_chunks: int = 4
    upload_idle_seconds: float = 60.0
    lease_seconds: float = 60.0
    lease_check_seconds: float = 1.0
    event_log_size: int = 100_000
    replicas: int = 1
    local_files: bool = True
    limits: Limits = dataclasses.field(default_factory=Limits)

    def __post_init__(self) -> None:
        checks = [
            (self.results_shards >= 1, "results_shards", "at least 1"),
            (self.tasks_shards >= 1, "tasks_shards", "at least 1"),
            (self.replicas >= 1, "replicas", "at least 1"),
            (len(self.partitions) >= 1, "partitions", "at least one partition"),
            (
                1024 <= self.data_chunk_max_size <= 64 * MiB,
                "data_chunk_max_size",
                "between 1 KiB and 64 MiB",
            ),
            (self.transfer_window_chunks >= 1, "transfer_window_chunks", "at least 1"),
            (self.s3_part_size >= S3_MIN_PART_SIZE, "s3_part_size", "at least 5 MiB"),
            (self.lease_seconds > 0, "lease_seconds", "positive"),
            (self.lease_check_seconds > 0, "lease_check_seconds", "positive"),
            (self.upload_idle_seconds > 0, "upload_idle_seconds", "positive"),
            (self.event_log_size >= 1, "event_log_size", "at least 1"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise InvalidArgumentError(
                    f"setting {name}={getattr(self, name)!r} is invalid: it must be "
                    f"{rule}"
                )
        scheme = (
            self.storage_url.split("://", 1)[0] if "://" in self.storage_url else ""
        )
        if scheme not in ("file", "s3", "memory"):
            raise InvalidArgumentError(
                f"storage_url {self.storage_url!r} is invalid: use file:///dir, "
                "s3://bucket/prefix or memory://"
            )

    @property
    def default_partition(self) -> str:
        return self.partitions[0]

    def replace(self, **changes: Any) -> ServiceSettings:
        """Return a copy with some fields changed, checked like a new object."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        """Build settings from `RESULTS_SERVICE_<FIELD>` variables over the defaults.

        The fields of `Limits` are read the same way, such as
        `RESULTS_SERVICE_MAX_BATCH`. Partitions are comma-separated. S3 credentials
        also come from the usual
        `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID` and
        `AWS_SECRET_ACCESS_KEY` when the service's own variables are unset.
        """
        env = os.environ if environ is None else environ
        changes: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name == "limits":
                continue
            raw = env.get("RESULTS_SERVICE_" + field.name.upper())
            if raw is None:
                continue
            changes[field.name] = _parse_field(field.name, field.type, raw)

        limits: dict[str, Any] = {}
        for field in dataclasses.fields(Limits):
            raw = env.get("RESULTS_SERVICE_" + field.name.upper())
            if raw is not None:
                limits[field.name] = _parse_field(field.name, field.type, raw)
        if limits:
            changes["limits"] = Limits(**limits)

        aws_fallbacks = {
            "s3_endpoint_url": "AWS_ENDPOINT_URL",
            "s3_region": "AWS_REGION",
            "s3_access_key_id": "AWS_ACCESS_KEY_ID",
            "s3_secret_access_key": "AWS_SECRET_ACCESS_KEY",
        }
        for name, variable in aws_fallbacks.items():
            if name not in changes and env.get(variable):
                changes[name] = env[variable]
        return cls(**changes)


_BOOL_WORDS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _parse_bool(raw: str) -> bool:
    value = _BOOL_WORDS.get(raw.strip().lower())
    if value is None:
        raise ValueError(raw)
    return value


def _parse_field(name: str, annotation: object, raw: str) -> Any:
    text = str(annotation)
    try:
        if text.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if text == "int":
            return int(raw)
        if text == "float":
            return float(raw)
        if text == "bool":
            return _parse_bool(raw)
    except ValueError as error:
        raise InvalidArgumentError(
            f"environment variable RESULTS_SERVICE_{name.upper()}={raw!r} is invalid: "
            f"expected {text}"
        ) from error
    return raw
