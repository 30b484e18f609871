"""Tests of the local directory backend, on real files under a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from results_service.errors import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from results_service.settings import ServiceSettings
from results_service.storage import local, open_backend
from results_service.storage.local import (
    PARTIAL_DIR,
    LocalBackend,
    LocalDownload,
)

CHUNK = 64 * 1024


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def backend(root: Path) -> LocalBackend:
    return LocalBackend(root)


def pattern(size: int) -> bytes:
    """Return `size` bytes that differ at every offset modulo 251."""
    return bytes(i % 251 for i in range(size))


def write_in_chunks(backend: LocalBackend, key: str, data: bytes) -> int:
    writer = backend.open_writer(key)
    for start in range(0, len(data), CHUNK):
        writer.write(pa.py_buffer(data[start : start + CHUNK]))
    return writer.commit()


def partial_files(root: Path) -> list[str]:
    return os.listdir(root / PARTIAL_DIR)


def test_backend_creates_missing_root(root: Path) -> None:
    LocalBackend(root / "nested")

    assert (root / "nested" / PARTIAL_DIR).is_dir()


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7])
def test_round_trip_keeps_bytes(backend: LocalBackend, size: int) -> None:
    data = pattern(size)

    committed = write_in_chunks(backend, "sessions/s1/object", data)
    read = backend.read_range(b"sessions/s1/object", 0, size + 10)

    assert committed == size
    assert read.to_pybytes() == data
    assert backend.sizes([b"sessions/s1/object"]) == {b"sessions/s1/object": size}


def test_commit_renames_temp_file_under_key(backend: LocalBackend, root: Path) -> None:
    writer = backend.open_writer("sessions/s1/object")
    writer.write(b"abc")

    assert len(partial_files(root)) == 1
    assert backend.sizes([b"sessions/s1/object"]) == {b"sessions/s1/object": None}

    writer.commit()

    assert partial_files(root) == []
    assert (root / "sessions" / "s1" / "object").read_bytes() == b"abc"


def test_write_accepts_bytes_and_arrow_buffers(backend: LocalBackend) -> None:
    writer = backend.open_writer("mixed")
    writer.write(b"ab")
    writer.write(pa.py_buffer(b"cd"))
    writer.write(memoryview(b"ef"))

    assert writer.commit() == 6
    assert backend.read_range(b"mixed", 0, 6).to_pybytes() == b"abcdef"


def test_put_writes_whole_object(backend: LocalBackend) -> None:
    assert backend.put("whole", b"data") == 4
    assert backend.read_range(b"whole", 0, 4).to_pybytes() == b"data"


def test_abort_leaves_no_partial_file(backend: LocalBackend, root: Path) -> None:
    writer = backend.open_writer("sessions/s1/object")
    writer.write(pattern(CHUNK + 1))

    writer.abort()

    assert partial_files(root) == []
    assert backend.sizes([b"sessions/s1/object"]) == {b"sessions/s1/object": None}
    assert backend.list_ids() == []


def test_abort_after_commit_keeps_object(backend: LocalBackend) -> None:
    writer = backend.open_writer("kept")
    writer.write(b"x")
    writer.commit()

    writer.abort()

    assert backend.sizes([b"kept"]) == {b"kept": 1}


def test_write_after_commit_rejected(backend: LocalBackend) -> None:
    writer = backend.open_writer("done")
    writer.commit()

    with pytest.raises(FailedPreconditionError, match="'done'"):
        writer.write(b"late")


def test_dropped_writer_removes_partial_file(backend: LocalBackend, root: Path) -> None:
    writer = backend.open_writer("dropped")
    writer.write(b"abc")

    del writer

    assert partial_files(root) == []


def test_read_range_returns_slice(backend: LocalBackend) -> None:
    data = pattern(1000)
    backend.put("object", data)

    assert backend.read_range(b"object", 10, 20).to_pybytes() == data[10:30]
    assert backend.read_range(b"object", 990, 100).to_pybytes() == data[990:]


def test_read_range_at_end_returns_empty(backend: LocalBackend) -> None:
    backend.put("object", b"abc")

    assert backend.read_range(b"object", 3, 10).size == 0


def test_read_range_of_empty_object_returns_empty(backend: LocalBackend) -> None:
    backend.put("empty", b"")

    assert backend.read_range(b"empty", 0, 10).size == 0


def test_read_range_past_end_rejected(backend: LocalBackend) -> None:
    backend.put("object", b"abc")

    with pytest.raises(InvalidArgumentError, match="offset 4"):
        backend.read_range(b"object", 4, 1)


@pytest.mark.parametrize(("offset", "length"), [(-1, 1), (0, -1)])
def test_read_range_negative_rejected(
    backend: LocalBackend, offset: int, length: int
) -> None:
    backend.put("object", b"abc")

    with pytest.raises(InvalidArgumentError):
        backend.read_range(b"object", offset, length)


def test_read_range_of_missing_object_names_id(backend: LocalBackend) -> None:
    with pytest.raises(NotFoundError, match="sessions/s1/missing") as caught:
        backend.read_range(b"sessions/s1/missing", 0, 1)

    assert caught.value.ids == ("sessions/s1/missing",)


def test_read_range_of_directory_is_not_found(backend: LocalBackend) -> None:
    backend.put("folder/object", b"abc")

    with pytest.raises(NotFoundError):
        backend.read_range(b"folder", 0, 1)


def test_read_range_of_fifo_is_not_found(backend: LocalBackend, root: Path) -> None:
    os.mkfifo(root / "fifo")

    with pytest.raises(NotFoundError):
        backend.read_range(b"fifo", 0, 1)


@settings(max_examples=60, deadline=None)
@given(offset=st.integers(0, 3000), length=st.integers(0, 3000))
def test_read_range_matches_slice(
    tmp_path_factory: pytest.TempPathFactory, offset: int, length: int
) -> None:
    backend = LocalBackend(tmp_path_factory.mktemp("slices"))
    data = pattern(2500)
    backend.put("object", data)

    if offset > len(data):
        with pytest.raises(InvalidArgumentError):
            backend.read_range(b"object", offset, length)
    else:
        read = backend.read_range(b"object", offset, length)
        assert read.to_pybytes() == data[offset : offset + length]


def test_sizes_of_present_and_missing(backend: LocalBackend) -> None:
    backend.put("a", b"12345")
    backend.put("folder/b", b"")

    found = backend.sizes([b"a", b"folder/b", b"missing", b"folder", b"a/below"])

    assert found == {
        b"a": 5,
        b"folder/b": 0,
        b"missing": None,
        b"folder": None,
        b"a/below": None,
    }


def test_delete_removes_objects(backend: LocalBackend) -> None:
    backend.put("a", b"1")
    backend.put("b", b"2")

    backend.delete([b"a"])

    assert backend.list_ids() == [b"b"]


def test_delete_of_missing_object_tolerated(backend: LocalBackend) -> None:
    backend.delete([b"missing", b"no/such/folder/object"])

    assert backend.list_ids() == []


def test_delete_removes_empty_directories(backend: LocalBackend, root: Path) -> None:
    backend.put("sessions/s1/a", b"1")
    backend.put("sessions/s2/b", b"2")

    backend.delete([b"sessions/s1/a"])

    assert not (root / "sessions" / "s1").exists()
    assert (root / "sessions" / "s2" / "b").exists()


def test_commit_after_directory_pruned(backend: LocalBackend) -> None:
    writer = backend.open_writer("sessions/s1/late")
    writer.write(b"x")
    backend.put("sessions/s1/other", b"y")
    backend.delete([b"sessions/s1/other"])

    writer.commit()

    assert backend.sizes([b"sessions/s1/late"]) == {b"sessions/s1/late": 1}


def test_list_ids_filters_by_prefix(backend: LocalBackend) -> None:
    for key in ["sessions/s1/a", "sessions/s1/b", "sessions/s10/c", "imports/d"]:
        backend.put(key, b"")

    assert backend.list_ids() == [
        b"imports/d",
        b"sessions/s1/a",
        b"sessions/s1/b",
        b"sessions/s10/c",
    ]
    assert backend.list_ids("sessions/s1/") == [b"sessions/s1/a", b"sessions/s1/b"]
    assert backend.list_ids("sessions/s1") == [
        b"sessions/s1/a",
        b"sessions/s1/b",
        b"sessions/s10/c",
    ]
    assert backend.list_ids("nothing/") == []


def test_list_ids_skips_uploads_in_progress(backend: LocalBackend) -> None:
    writer = backend.open_writer("pending")
    writer.write(b"abc")

    assert backend.list_ids() == []

    writer.abort()


def test_list_ids_with_parent_prefix_rejected(backend: LocalBackend) -> None:
    with pytest.raises(InvalidArgumentError):
        backend.list_ids("../")


BAD_IMPORT_IDS = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\xff\xfe", id="not-utf8"),
    pytest.param(b"/etc/passwd", id="absolute"),
    pytest.param(b"..", id="parent"),
    pytest.param(b"../outside", id="leading-parent"),
    pytest.param(b"a/../../outside", id="inner-parent"),
    pytest.param(b"a/..", id="trailing-parent"),
    pytest.param(b"a\\..\\b", id="backslash"),
    pytest.param(b"a\x00b", id="nul"),
    pytest.param(b"a\nb", id="newline"),
    pytest.param(b"s3://bucket/key", id="s3-url"),
    pytest.param(b"file:///etc/passwd", id="file-url"),
    pytest.param(b"http://127.0.0.1/key", id="http-url"),
    pytest.param(b"a//b", id="empty-segment"),
    pytest.param(b"a/", id="trailing-slash"),
    pytest.param(b".", id="root"),
    pytest.param(b"./", id="root-slash"),
    pytest.param(b"./.", id="root-dots"),
    pytest.param(b".partial/upload", id="partial-dir"),
    pytest.param(b"k" * 1025, id="too-long"),
]


@pytest.mark.parametrize("opaque_id", BAD_IMPORT_IDS)
def test_validate_import_id_rejects(backend: LocalBackend, opaque_id: bytes) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid"):
        backend.validate_import_id(opaque_id)


def test_validate_import_id_message_names_value(backend: LocalBackend) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        backend.validate_import_id(b"../secret")

    assert "../secret" in caught.value.message
    assert "relative to the storage root" in caught.value.message


def test_validate_import_id_rejects_str(backend: LocalBackend) -> None:
    with pytest.raises(InvalidArgumentError, match="bytes"):
        backend.validate_import_id("imports/data.bin")  # type: ignore[arg-type]


def test_validate_import_id_strips_dot_segments(backend: LocalBackend) -> None:
    assert backend.validate_import_id(b"./imports/./data.bin") == b"imports/data.bin"


def test_validate_import_id_accepts_missing_file(backend: LocalBackend) -> None:
    assert backend.validate_import_id(b"imports/later.bin") == b"imports/later.bin"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret").write_bytes(b"secret")
    return directory


def test_symlinked_directory_escape_rejected(
    backend: LocalBackend, root: Path, outside: Path
) -> None:
    (root / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidArgumentError, match="symbolic link"):
        backend.validate_import_id(b"link/secret")


def test_symlinked_file_escape_rejected(
    backend: LocalBackend, root: Path, outside: Path
) -> None:
    (root / "imports").mkdir()
    (root / "imports" / "secret").symlink_to(outside / "secret")

    with pytest.raises(InvalidArgumentError, match="symbolic link"):
        backend.validate_import_id(b"imports/secret")


def test_dangling_symlink_outside_rejected(
    backend: LocalBackend, root: Path, outside: Path
) -> None:
    (root / "dangling").symlink_to(outside / "not-yet")

    with pytest.raises(InvalidArgumentError, match="symbolic link"):
        backend.validate_import_id(b"dangling")


def test_inspect_imports_through_escaping_symlink_rejected(
    backend: LocalBackend, root: Path, outside: Path
) -> None:
    (root / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidArgumentError, match="symbolic link"):
        backend.inspect_imports([b"link/secret"])


def test_inspect_imports_through_symlinked_file_rejected(
    backend: LocalBackend, root: Path, outside: Path
) -> None:
    (root / "imports").mkdir()
    (root / "imports" / "secret").symlink_to(outside / "secret")
    (root / "dangling").symlink_to(outside / "not-yet")

    with pytest.raises(InvalidArgumentError, match="symbolic link"):
        backend.inspect_imports([b"imports/secret"])
    with pytest.raises(InvalidArgumentError, match="symbolic link"):
        backend.inspect_imports([b"dangling"])


def test_inspect_imports_resolves_links_inside_root(
    backend: LocalBackend, root: Path
) -> None:
    (root / "real").mkdir()
    (root / "real" / "data.bin").write_bytes(b"12345")
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    (root / "file-link").symlink_to(root / "real" / "data.bin")

    inspected = backend.inspect_imports([b"alias/data.bin", b"file-link"])

    assert inspected == [(b"real/data.bin", 5), (b"real/data.bin", 5)]


def test_inspect_imports_through_link_into_partial_rejected(
    backend: LocalBackend, root: Path
) -> None:
    (root / PARTIAL_DIR / "upload").write_bytes(b"partial")
    (root / "alias").symlink_to(root / PARTIAL_DIR, target_is_directory=True)

    with pytest.raises(InvalidArgumentError, match="uploads in progress"):
        backend.inspect_imports([b"alias/upload"])


def test_read_through_escaping_symlink_rejected(
    backend: LocalBackend, root: Path, outside: Path
) -> None:
    (root / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidArgumentError):
        backend.read_range(b"link/secret", 0, 6)
    with pytest.raises(InvalidArgumentError):
        backend.sizes([b"link/secret"])
    with pytest.raises(InvalidArgumentError):
        backend.delete([b"link/secret"])
    assert (outside / "secret").exists()


def test_list_ids_through_escaping_symlink_rejected(
    backend: LocalBackend, root: Path, outside: Path
) -> None:
    (root / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidArgumentError, match="symbolic link"):
        backend.list_ids("link/")


def test_symlink_inside_root_accepted(backend: LocalBackend, root: Path) -> None:
    backend.put("data/real.bin", b"inside")
    (root / "alias").symlink_to(root / "data", target_is_directory=True)

    assert backend.validate_import_id(b"alias/real.bin") == b"alias/real.bin"
    assert backend.read_range(b"alias/real.bin", 0, 6).to_pybytes() == b"inside"


def test_root_reached_through_symlink_works(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    backend = LocalBackend(tmp_path / "alias")
    backend.put("object", b"abc")

    assert backend.validate_import_id(b"object") == b"object"
    assert backend.read_range(b"object", 0, 3).to_pybytes() == b"abc"


def test_imported_file_readable(backend: LocalBackend, root: Path) -> None:
    (root / "imports").mkdir()
    (root / "imports" / "data.bin").write_bytes(b"imported")

    opaque_id = backend.validate_import_id(b"./imports/data.bin")

    assert backend.sizes([opaque_id]) == {opaque_id: 8}
    assert backend.read_range(opaque_id, 0, 100).to_pybytes() == b"imported"


def test_inspect_imports_normalizes_and_sizes(
    backend: LocalBackend, root: Path
) -> None:
    (root / "imports").mkdir()
    (root / "imports" / "data.bin").write_bytes(b"imported")
    (root / "imports" / "folder").mkdir()

    inspected = backend.inspect_imports(
        [b"./imports/data.bin", b"imports/missing", b"imports/folder"]
    )

    assert inspected == [
        (b"imports/data.bin", 8),
        (b"imports/missing", None),
        (b"imports/folder", None),
    ]


def test_inspect_imports_rejects_parent_key(backend: LocalBackend) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid"):
        backend.inspect_imports([b"kept", b"../secret"])


def test_local_file_describes_object(backend: LocalBackend, root: Path) -> None:
    backend.put("sessions/s1/object", b"abcdef")

    local_file = backend.local_file(b"sessions/s1/object")

    assert local_file is not None
    path, device, inode, size, _ = local_file
    assert path == str(root / "sessions" / "s1" / "object")
    assert (device, inode) == (os.stat(path).st_dev, os.stat(path).st_ino)
    assert size == 6


def test_local_file_of_missing_object_none(backend: LocalBackend, root: Path) -> None:
    (root / "folder").mkdir()

    assert backend.local_file(b"missing") is None
    assert backend.local_file(b"folder") is None


def test_local_file_through_escaping_symlink_rejected(
    backend: LocalBackend, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (root / "link").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidArgumentError, match="symbolic link"):
        backend.local_file(b"link/secret")


def open_download(local_file: Any, chunk_size: int = 2) -> LocalDownload | None:
    size = local_file[3] if local_file is not None else 0
    return LocalDownload.open(local_file, size, chunk_size, 2, "r1")


@pytest.mark.parametrize(
    "stored", [b"abcde", b"abcdefgh"], ids=["whole-file", "file-grown-since"]
)
def test_local_download_reads_result_size(backend: LocalBackend, stored: bytes) -> None:
    backend.put("object", stored)
    local_file = backend.local_file(b"object")
    assert local_file is not None
    download = LocalDownload.open(local_file, 5, 2, 2, "r1")
    assert download is not None

    try:
        chunks = [download.read_chunk() for _ in range(4)]
    finally:
        download.close()

    assert [bytes(chunk) for chunk in chunks[:3]] == [b"ab", b"cd", b"e"]
    assert chunks[3] is None


@pytest.mark.parametrize(
    "field", [1, 2, 3, 4], ids=["device", "inode", "size", "mtime"]
)
def test_local_download_mismatch_not_opened(backend: LocalBackend, field: int) -> None:
    backend.put("object", b"abcdef")
    local_file = backend.local_file(b"object")
    assert local_file is not None
    changed = list(local_file)
    changed[field] += 1

    assert open_download(tuple(changed)) is None


def test_local_download_replaced_file_not_opened(
    backend: LocalBackend, root: Path
) -> None:
    backend.put("object", b"abcdef")
    local_file = backend.local_file(b"object")
    assert local_file is not None
    (root / "object").unlink()
    (root / "object").write_bytes(b"ABCDEF")
    # The new file may reuse the inode within one tick of the file system's clock,
    # so its modification time is set apart explicitly.
    os.utime(root / "object", ns=(local_file[4], local_file[4] + 10**9))

    assert open_download(local_file) is None


def test_local_download_missing_path_not_opened(tmp_path: Path) -> None:
    assert open_download((str(tmp_path / "none"), 1, 2, 3, 4)) is None


def test_local_download_of_deleted_file_raises(
    backend: LocalBackend, root: Path
) -> None:
    backend.put("object", b"abcdefghi")
    download = open_download(backend.local_file(b"object"))
    assert download is not None
    first = download.read_chunk()
    backend.delete([b"object"])

    try:
        second = download.read_chunk()
        with pytest.raises(NotFoundError, match="deleted during the download"):
            download.read_chunk()
    finally:
        download.close()
    assert bytes(first) == b"ab"
    assert bytes(second) == b"cd"


def client_upload(root: Path, name: str = "client-" + "a" * 32) -> Path:
    return root / PARTIAL_DIR / name


def test_adopt_publishes_client_file(backend: LocalBackend, root: Path) -> None:
    client_upload(root).write_bytes(b"uploaded")

    size = backend.adopt("client-" + "a" * 32, "sessions/s1/object")

    assert size == 8
    assert (root / "sessions" / "s1" / "object").read_bytes() == b"uploaded"
    assert not client_upload(root).exists()


def test_adopt_directory_rejected_with_typed_error(
    backend: LocalBackend, root: Path
) -> None:
    client_upload(root).mkdir()

    with pytest.raises(InvalidArgumentError, match="regular file"):
        backend.adopt("client-" + "a" * 32, "sessions/s1/object")

    assert not (root / "sessions" / "s1" / "object").exists()


def test_adopt_symlink_rejected_and_removed(
    backend: LocalBackend, root: Path, tmp_path: Path
) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"secret")
    client_upload(root).symlink_to(target)

    with pytest.raises(InvalidArgumentError, match="regular file"):
        backend.adopt("client-" + "a" * 32, "sessions/s1/object")

    assert not client_upload(root).is_symlink()
    assert not (root / "sessions" / "s1" / "object").exists()
    assert target.read_bytes() == b"secret"


def test_adopt_file_swapped_before_rename_rejected(
    backend: LocalBackend, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"secret")
    client_upload(root).write_bytes(b"uploaded")
    original = local.publish

    def swap_then_publish(root_dir: str, temp_path: str, key: str) -> None:
        # The client replaces its checked file with a link before the rename.
        os.unlink(temp_path)
        os.symlink(target, temp_path)
        original(root_dir, temp_path, key)

    monkeypatch.setattr(local, "publish", swap_then_publish)

    with pytest.raises(InvalidArgumentError, match="unchanged"):
        backend.adopt("client-" + "a" * 32, "sessions/s1/object")

    assert not os.path.lexists(root / "sessions" / "s1" / "object")
    assert target.read_bytes() == b"secret"


def test_open_writer_with_parent_key_rejected(backend: LocalBackend) -> None:
    with pytest.raises(InvalidArgumentError):
        backend.open_writer("../outside")


def test_open_backend_builds_local_backend(root: Path) -> None:
    backend = open_backend(ServiceSettings(storage_url=f"file://{root}"))

    assert isinstance(backend, LocalBackend)
    assert backend.root == str(root)


def test_open_backend_with_relative_path_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="absolute path"):
        open_backend(ServiceSettings(storage_url="file://relative/dir"))
