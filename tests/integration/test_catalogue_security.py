"""Catalogue of real-world failures around isolation and limits, on a real local Ray:
one session reaching another's records or objects, imports reaching outside the
storage, and requests over each documented limit.

Cases that other modules already cover exactly, and are not repeated here:
- get_result, download, upload, get_owner_task_id and import of another session's
  result: test_results_create.py::test_get_result_of_another_session_not_found,
  test_results_data.py::test_download_result_of_another_session_not_found,
  test_results_data.py::test_upload_to_result_of_another_session_not_found,
  test_results_create.py::test_get_owner_task_id_other_session_not_found,
  test_results_data.py::test_import_results_data_result_of_another_session_not_found.
  The table below still runs every RPC from another session against one owner, so
  that a new RPC has a row to join.
- watch_results reports another session's result as NOTFOUND:
  test_results_list_watch.py::test_watch_results_other_session_result_reported_notfound.
- Submissions naming another session's payload, dependency or output:
  test_tasks.py::test_submit_payload_of_other_session_rejected,
  test_submit_dependency_of_other_session_rejected and
  test_submit_output_of_other_session_rejected.
- get_task of another session: test_tasks.py::test_get_task_of_other_session_rejected.
- A forged download token:
  test_results_data.py::test_storage_read_forged_token_rejected.
- Import ids that are absolute, contain `..`, are URLs, lead through a symbolic link
  out of the root, or name another session's object:
  test_results_data.py::test_import_results_data_invalid_id_rejected,
  test_import_results_data_symlink_outside_root_rejected and
  test_import_results_data_other_session_object_rejected. Other buckets and
  prefixes on S3: test_storage_s3.py::test_validate_import_id_rejects,
  test_id_naming_other_bucket_stays_in_bucket and test_results_data.py::
  test_s3_import_outside_prefix_rejected.
- Page sizes over the limit: test_results_list_watch.py::
  test_list_results_page_size_over_max_rejected. Priorities out of range:
  test_tasks.py::test_submit_priority_out_of_range_rejected.

The module runs its own service with small limits, so that going over each one
takes small requests.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from results_service.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from results_service.records import (
    ResultCreate,
    ResultStatus,
    TaskDefinition,
    TaskStatus,
)
from results_service.settings import Limits
from tests.service import rpc

PARTITION = "secure"
WORKER = "catalogue-worker"
LIMITS = Limits(
    max_batch=5,
    max_name_length=16,
    max_id_length=64,
    max_page_size=7,
    max_inline_bytes=1024,
    max_dependencies=3,
    max_watch_ids=2,
    max_open_uploads=2,
)
CHUNK = 4096
WINDOW = 2


@pytest.fixture(scope="module")
def secure_client(services: Any) -> Any:
    """A service with small limits and a partition of its own."""
    return services.start(
        partitions=(PARTITION,),
        limits=LIMITS,
        data_chunk_max_size=CHUNK,
        transfer_window_chunks=WINDOW,
    )


def storage_root(client: Any) -> Path:
    return Path(client.settings.storage_url.removeprefix("file://"))


def write_object(client: Any, data: bytes) -> str:
    """Write a file under the storage root and return its key."""
    key = f"imports/{uuid.uuid4().hex}"
    path = storage_root(client) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return key


def new_result(client: Any, session_id: str, manual_deletion: bool = False) -> str:
    (record,) = client.create_results_metadata(
        session_id, [ResultCreate("r", manual_deletion=manual_deletion)]
    )
    return record.result_id


# Another session's records


@pytest.fixture(scope="module")
def owner(secure_client: Any) -> dict[str, Any]:
    """A session with a CREATED result, a COMPLETED one, and a dispatched task whose
    output is CREATED; returns its ids and the task's lease."""
    client = secure_client
    session_id = client.create_session([PARTITION])
    created, output = (
        record.result_id
        for record in client.create_results_metadata(session_id, ["created", "out"])
    )
    (completed,) = client.create_results(session_id, {"secret": b"secret"})
    (info,) = client.submit_tasks(
        session_id, [TaskDefinition(completed.result_id, (), (output,))]
    )
    (lease,) = client.acquire_tasks(PARTITION, WORKER, max_tasks=5)
    return {
        "session_id": session_id,
        "created": created,
        "completed": completed.result_id,
        "completed_object": completed.opaque_id,
        "output": output,
        "task": info.task_id,
        "lease": lease.lease_id,
    }


@pytest.fixture(scope="module")
def thief(secure_client: Any) -> str:
    return secure_client.create_session([PARTITION])


Attempt = Callable[[Any, str, dict[str, Any]], Any]
ATTEMPTS: dict[str, tuple[Attempt, str]] = {
    "get_result": (lambda c, s, o: c.get_result(s, o["completed"]), "completed"),
    "download": (
        lambda c, s, o: list(c.download_result_data(s, o["completed"])),
        "completed",
    ),
    "upload": (lambda c, s, o: c.upload_result_data(s, o["created"], b"x"), "created"),
    "import": (
        lambda c, s, o: c.import_results_data(
            s, [(o["created"], write_object(c, b"x"))]
        ),
        "created",
    ),
    "delete_results_data": (
        lambda c, s, o: c.delete_results_data(s, [o["completed"]]),
        "completed",
    ),
    "get_owner_task_id": (
        lambda c, s, o: c.get_owner_task_id(s, [o["output"]]),
        "output",
    ),
    "get_task": (lambda c, s, o: c.get_task(s, o["task"]), "task"),
    "cancel_tasks": (lambda c, s, o: c.cancel_tasks(s, [o["task"]]), "task"),
    "submit_payload": (
        lambda c, s, o: c.submit_tasks(s, [TaskDefinition(o["completed"])]),
        "completed",
    ),
    "submit_dependency": (
        lambda c, s, o: c.submit_tasks(
            s, [TaskDefinition(new_result(c, s), (o["created"],))]
        ),
        "created",
    ),
    "submit_output": (
        lambda c, s, o: c.submit_tasks(
            s, [TaskDefinition(new_result(c, s), (), (o["created"],))]
        ),
        "created",
    ),
    "start_task": (lambda c, s, o: c.start_task(s, o["task"], o["lease"]), "task"),
    "renew_lease": (lambda c, s, o: c.renew_lease(s, o["task"], o["lease"]), "task"),
    "complete_task": (
        lambda c, s, o: c.complete_task(s, o["task"], o["lease"], {o["output"]: b"x"}),
        "task",
    ),
    "fail_task": (
        lambda c, s, o: c.fail_task(s, o["task"], o["lease"], "stolen", False),
        "task",
    ),
    "staged_upload": (
        lambda c, s, o: c.upload_result_data(
            s, o["output"], b"x", task_id=o["task"], lease_id=o["lease"]
        ),
        "task",
    ),
}


@pytest.mark.parametrize("attempt", ATTEMPTS.values(), ids=ATTEMPTS.keys())
def test_other_session_id_not_found(
    secure_client: Any, owner: dict[str, Any], thief: str, attempt: tuple[Attempt, str]
) -> None:
    call, target = attempt

    with pytest.raises(NotFoundError) as caught:
        call(secure_client, thief, owner)

    assert owner[target] in caught.value.message


def test_other_session_attempts_change_nothing(
    secure_client: Any, owner: dict[str, Any], thief: str
) -> None:
    client = secure_client
    session_id = owner["session_id"]
    for call, _ in ATTEMPTS.values():
        try:
            call(client, thief, owner)
        except NotFoundError:
            pass

    task = client.get_task(session_id, owner["task"])
    assert client.get_result(session_id, owner["created"]).status == (
        ResultStatus.CREATED
    )
    assert client.read_result_data(session_id, owner["completed"]) == b"secret"
    assert task.status == TaskStatus.DISPATCHED
    assert task.lease_id == owner["lease"]
    assert client.get_owner_task_id(session_id, [owner["output"]]) == {
        owner["output"]: owner["task"]
    }
    assert client.list_tasks(session_id=thief, page_size=0).total == 0


# Imports


@pytest.mark.parametrize(
    "opaque_id",
    [
        b"file:///etc/passwd",
        b"imports/a\x00b",
        b"imports\\..\\..\\etc\\passwd",
        b"imports//double",
        b"imports/trailing/",
        b"",
        b".partial/upload",
        b"imports/" + b"x" * 300,
    ],
    ids=[
        "file-url",
        "nul",
        "backslash",
        "empty-segment",
        "trailing-slash",
        "empty",
        "partial-uploads",
        "too-long",
    ],
)
def test_import_invalid_id_rejected(secure_client: Any, opaque_id: bytes) -> None:
    session_id = secure_client.create_session([PARTITION])
    result_id = new_result(secure_client, session_id)

    with pytest.raises(InvalidArgumentError) as caught:
        secure_client.import_results_data(session_id, [(result_id, opaque_id)])

    assert caught.value.message.startswith("opaque id")
    assert secure_client.get_result(session_id, result_id).status == (
        ResultStatus.CREATED
    )


def test_import_through_directory_symlink_rejected(
    secure_client: Any, tmp_path: Path
) -> None:
    (tmp_path / "secret.bin").write_bytes(b"not yours")
    folder = f"links/{uuid.uuid4().hex}"
    link = storage_root(secure_client) / folder
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(tmp_path, target_is_directory=True)
    session_id = secure_client.create_session([PARTITION])
    result_id = new_result(secure_client, session_id)

    with pytest.raises(InvalidArgumentError) as caught:
        secure_client.import_results_data(
            session_id, [(result_id, f"{folder}/secret.bin")]
        )

    assert folder in caught.value.message


def test_import_through_link_into_sessions_rejected(secure_client: Any) -> None:
    owner = secure_client.create_session([PARTITION])
    (source,) = secure_client.create_results(owner, {"source": b"owned"})
    folder = f"links/{uuid.uuid4().hex}"
    link = storage_root(secure_client) / folder
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(storage_root(secure_client) / "sessions", target_is_directory=True)
    thief = secure_client.create_session([PARTITION])
    result_id = new_result(secure_client, thief)
    alias = source.opaque_id.decode().replace("sessions/", f"{folder}/", 1)

    with pytest.raises(InvalidArgumentError) as caught:
        secure_client.import_results_data(thief, [(result_id, alias)])

    assert "sessions/" in caught.value.message
    assert secure_client.read_result_data(owner, source.result_id) == b"owned"
    assert secure_client.get_result(thief, result_id).status == ResultStatus.CREATED


def test_import_own_session_object_rejected(secure_client: Any) -> None:
    session_id = secure_client.create_session([PARTITION])
    (source,) = secure_client.create_results(session_id, {"source": b"data"})
    result_id = new_result(secure_client, session_id)

    with pytest.raises(InvalidArgumentError) as caught:
        secure_client.import_results_data(session_id, [(result_id, source.opaque_id)])

    assert source.opaque_id.decode() in caught.value.message
    assert secure_client.get_result(session_id, result_id).status == (
        ResultStatus.CREATED
    )


def test_import_staged_output_rejected(secure_client: Any) -> None:
    client = secure_client
    session_id = client.create_session([PARTITION])
    output = new_result(client, session_id)
    (payload,) = client.create_results(session_id, {"payload": b"{}"})
    (info,) = client.submit_tasks(
        session_id, [TaskDefinition(payload.result_id, (), (output,))]
    )
    (lease,) = client.acquire_tasks(PARTITION, WORKER, max_tasks=5)
    client.upload_result_data(
        session_id, output, b"staged", task_id=info.task_id, lease_id=lease.lease_id
    )
    (staged,) = set(client.stored_ids(f"sessions/{session_id}/")) - {payload.opaque_id}
    result_id = new_result(client, session_id)

    with pytest.raises(InvalidArgumentError) as caught:
        client.import_results_data(session_id, [(result_id, staged)])

    assert staged.decode() in caught.value.message
    client.cancel_session(session_id)


def imported_by_owner(client: Any, manual_deletion: bool) -> tuple[str, str, str]:
    """Import a new object into a result of a new session; return the session id,
    the result id and the object's key."""
    session_id = client.create_session([PARTITION])
    result_id = new_result(client, session_id, manual_deletion)
    key = write_object(client, b"imported by the owner")
    client.import_results_data(session_id, [(result_id, key)])
    return session_id, result_id, key


def test_import_other_session_imported_object_rejected(secure_client: Any) -> None:
    client = secure_client
    _, _, key = imported_by_owner(client, manual_deletion=False)
    other = client.create_session([PARTITION])
    result_id = new_result(client, other)

    with pytest.raises(InvalidArgumentError) as caught:
        client.import_results_data(other, [(result_id, key)])

    assert key in caught.value.message
    assert client.get_result(other, result_id).status == ResultStatus.CREATED


def test_import_of_other_session_object_cannot_delete_it(secure_client: Any) -> None:
    client = secure_client
    session_id, owned, key = imported_by_owner(client, manual_deletion=False)
    other = client.create_session([PARTITION])
    result_id = new_result(client, other)

    with pytest.raises(InvalidArgumentError):
        client.import_results_data(other, [(result_id, key)])
    with pytest.raises(FailedPreconditionError):
        client.delete_results_data(other, [result_id])

    assert client.read_result_data(session_id, owned) == b"imported by the owner"


def test_import_manual_object_into_plain_result_rejected(secure_client: Any) -> None:
    client = secure_client
    _, _, key = imported_by_owner(client, manual_deletion=True)
    other = client.create_session([PARTITION])
    result_id = new_result(client, other, manual_deletion=False)

    with pytest.raises(InvalidArgumentError) as caught:
        client.import_results_data(other, [(result_id, key)])

    assert "manual_deletion" in caught.value.message


def test_import_manual_object_shared_between_sessions(secure_client: Any) -> None:
    client = secure_client
    session_id, owned, key = imported_by_owner(client, manual_deletion=True)
    other = client.create_session([PARTITION])
    result_id = new_result(client, other, manual_deletion=True)

    client.import_results_data(other, [(result_id, key)])
    client.delete_results_data(other, [result_id])

    assert client.read_result_data(session_id, owned) == b"imported by the owner"


def test_import_object_freed_by_deleted_session_accepted(secure_client: Any) -> None:
    client = secure_client
    session_id, _, key = imported_by_owner(client, manual_deletion=True)
    client.delete_session(session_id)
    other = client.create_session([PARTITION])
    result_id = new_result(client, other)

    (record,) = client.import_results_data(other, [(result_id, key)])

    assert record.status == ResultStatus.COMPLETED


def test_import_same_object_twice_in_session_accepted(secure_client: Any) -> None:
    client = secure_client
    session_id = client.create_session([PARTITION])
    first, second = (new_result(client, session_id) for _ in range(2))
    key = write_object(client, b"shared")

    client.import_results_data(session_id, [(first, key), (second, key)])

    assert client.read_result_data(session_id, second) == b"shared"


# Limits


def over_batch(client: Any, session_id: str) -> list[str]:
    return [f"id-{number}" for number in range(LIMITS.max_batch + 1)]


def completed_payload(client: Any, session_id: str) -> str:
    (payload,) = client.create_results(session_id, {"payload": b"{}"})
    return payload.result_id


def long_id() -> str:
    return "x" * (LIMITS.max_id_length + 1)


LimitCase = Callable[[Any, str], Any]
LIMIT_CASES: dict[str, tuple[LimitCase, int]] = {
    "create_results_metadata-batch": (
        lambda c, s: c.create_results_metadata(s, over_batch(c, s)),
        LIMITS.max_batch,
    ),
    "create_results-batch": (
        lambda c, s: c.create_results(s, {name: b"" for name in over_batch(c, s)}),
        LIMITS.max_batch,
    ),
    "import-batch": (
        lambda c, s: c.import_results_data(s, [(i, b"k") for i in over_batch(c, s)]),
        LIMITS.max_batch,
    ),
    "submit-batch": (
        lambda c, s: c.submit_tasks(s, [TaskDefinition(i) for i in over_batch(c, s)]),
        LIMITS.max_batch,
    ),
    "get_owner_task_id-batch": (
        lambda c, s: c.get_owner_task_id(s, over_batch(c, s)),
        LIMITS.max_batch,
    ),
    "delete_results_data-batch": (
        lambda c, s: c.delete_results_data(s, over_batch(c, s)),
        LIMITS.max_batch,
    ),
    "cancel_tasks-batch": (
        lambda c, s: c.cancel_tasks(s, over_batch(c, s)),
        LIMITS.max_batch,
    ),
    "watch-batch": (
        lambda c, s: list(c.watch_results(s, over_batch(c, s))),
        LIMITS.max_batch,
    ),
    "expected-outputs-batch": (
        lambda c, s: c.submit_tasks(
            s, [TaskDefinition(completed_payload(c, s), (), tuple(over_batch(c, s)))]
        ),
        LIMITS.max_batch,
    ),
    "name-length": (
        lambda c, s: c.create_results_metadata(s, ["n" * (LIMITS.max_name_length + 1)]),
        LIMITS.max_name_length,
    ),
    "session-id-length": (lambda c, s: c.get_session(long_id()), LIMITS.max_id_length),
    "result-id-length": (
        lambda c, s: c.get_result(s, long_id()),
        LIMITS.max_id_length,
    ),
    "task-id-length": (lambda c, s: c.get_task(s, long_id()), LIMITS.max_id_length),
    "worker-id-length": (
        lambda c, s: c.acquire_tasks(PARTITION, long_id()),
        LIMITS.max_id_length,
    ),
    "upload-id-length": (
        lambda c, s: rpc(c, "write_upload", long_id(), [b"x"]),
        LIMITS.max_id_length,
    ),
    "opaque-id-length": (
        lambda c, s: c.import_results_data(
            s, [(new_result(c, s), b"k" * (4 * LIMITS.max_id_length + 1))]
        ),
        4 * LIMITS.max_id_length,
    ),
    "list_results-page-size": (
        lambda c, s: c.list_results(session_id=s, page_size=LIMITS.max_page_size + 1),
        LIMITS.max_page_size,
    ),
    "list_tasks-page-size": (
        lambda c, s: c.list_tasks(session_id=s, page_size=LIMITS.max_page_size + 1),
        LIMITS.max_page_size,
    ),
    "list_sessions-page-size": (
        lambda c, s: c.list_sessions(page_size=LIMITS.max_page_size + 1),
        LIMITS.max_page_size,
    ),
    "create_results-inline-bytes": (
        lambda c, s: c.create_results(
            s, {"a": b"a" * 600, "b": b"b" * (LIMITS.max_inline_bytes - 599)}
        ),
        LIMITS.max_inline_bytes,
    ),
    "dependencies": (
        lambda c, s: c.submit_tasks(
            s,
            [
                TaskDefinition(
                    completed_payload(c, s),
                    tuple(f"d{n}" for n in range(LIMITS.max_dependencies + 1)),
                )
            ],
        ),
        LIMITS.max_dependencies,
    ),
    "watch-ids": (
        lambda c, s: list(
            c.watch_results(s, [f"w{n}" for n in range(LIMITS.max_watch_ids + 1)])
        ),
        LIMITS.max_watch_ids,
    ),
    "chunk-size": (
        lambda c, s: rpc(
            c,
            "write_upload",
            rpc(c, "open_upload", s, new_result(c, s)),
            [b"x" * (CHUNK + 1)],
        ),
        CHUNK,
    ),
    "chunks-per-write": (
        lambda c, s: rpc(
            c,
            "write_upload",
            rpc(c, "open_upload", s, new_result(c, s)),
            [b"x"] * (4 * WINDOW + 1),
        ),
        4 * WINDOW,
    ),
    "complete_task-outputs": (
        lambda c, s: c.complete_task(
            s, "task", "lease", {name: b"" for name in over_batch(c, s)}
        ),
        LIMITS.max_batch,
    ),
    "acquire-max-tasks": (
        lambda c, s: c.acquire_tasks(PARTITION, WORKER, max_tasks=10_001),
        10_000,
    ),
    "acquire-wait-seconds": (
        lambda c, s: c.acquire_tasks(PARTITION, WORKER, wait_seconds=61),
        60,
    ),
    "priority": (
        lambda c, s: c.submit_tasks(
            s, [TaskDefinition(completed_payload(c, s), options={"priority": 100})]
        ),
        99,
    ),
    "max-retries": (
        lambda c, s: c.submit_tasks(
            s, [TaskDefinition(completed_payload(c, s), options={"max_retries": 101})]
        ),
        100,
    ),
}


@pytest.mark.parametrize("case", LIMIT_CASES.values(), ids=LIMIT_CASES.keys())
def test_request_over_limit_rejected(
    secure_client: Any, case: tuple[LimitCase, int]
) -> None:
    call, limit = case
    session_id = secure_client.create_session([PARTITION])

    with pytest.raises(InvalidArgumentError) as caught:
        call(secure_client, session_id)

    assert re.search(rf"\b{limit}\b", caught.value.message), caught.value.message
    assert secure_client.list_tasks(session_id=session_id, page_size=0).total == 0
    assert secure_client.open_uploads() == 0


def test_complete_task_over_inline_bytes_rejected(secure_client: Any) -> None:
    client = secure_client
    session_id = client.create_session([PARTITION])
    output = new_result(client, session_id)
    (info,) = client.submit_tasks(
        session_id,
        [TaskDefinition(completed_payload(client, session_id), (), (output,))],
    )
    (lease,) = client.acquire_tasks(PARTITION, WORKER, max_tasks=5)

    with pytest.raises(InvalidArgumentError) as caught:
        client.complete_task(
            session_id,
            info.task_id,
            lease.lease_id,
            {output: b"x" * (LIMITS.max_inline_bytes + 1)},
        )

    assert str(LIMITS.max_inline_bytes) in caught.value.message
    assert client.get_task(session_id, info.task_id).status == TaskStatus.DISPATCHED
    client.cancel_session(session_id)


def test_open_uploads_over_limit_exhausted(secure_client: Any) -> None:
    client = secure_client
    session_id = client.create_session([PARTITION])
    results = [
        new_result(client, session_id) for _ in range(LIMITS.max_open_uploads + 1)
    ]
    opened = [
        rpc(client, "open_upload", session_id, result_id) for result_id in results[:-1]
    ]

    with pytest.raises(ResourceExhaustedError) as caught:
        rpc(client, "open_upload", session_id, results[-1])
    for upload_id in opened:
        rpc(client, "abort_upload", upload_id)

    assert str(LIMITS.max_open_uploads) in caught.value.message
    assert client.open_uploads() == 0


def test_fail_task_long_error_truncated(secure_client: Any) -> None:
    client = secure_client
    session_id = client.create_session([PARTITION])
    (info,) = client.submit_tasks(
        session_id, [TaskDefinition(completed_payload(client, session_id))]
    )
    (lease,) = client.acquire_tasks(PARTITION, WORKER, max_tasks=5)

    client.fail_task(session_id, info.task_id, lease.lease_id, "e" * 10_000, False)

    assert len(client.get_task(session_id, info.task_id).error) == 4096


def test_requests_at_limits_accepted(secure_client: Any) -> None:
    client = secure_client
    session_id = client.create_session([PARTITION])
    names = ["n" * LIMITS.max_name_length] * LIMITS.max_batch

    records = client.create_results(
        session_id, {f"r{n}": b"x" * (LIMITS.max_inline_bytes // 5) for n in range(5)}
    )
    created = client.create_results_metadata(session_id, names)
    page = client.list_results(session_id=session_id, page_size=LIMITS.max_page_size)

    assert len(records) == LIMITS.max_batch
    assert len(created) == LIMITS.max_batch
    assert len(page.items) == LIMITS.max_page_size
    assert page.total == 2 * LIMITS.max_batch
