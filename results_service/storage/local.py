"""Object storage in a local directory, the embedded default backend.

An object under key `a/b` is the file `<root>/a/b`. A writer fills a temporary file in
`<root>/.partial/` and renames it under its key on commit, so readers only ever see
whole objects.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
import uuid
from collections.abc import Iterable, Sequence
from typing import BinaryIO

import pyarrow as pa

from results_service.errors import (
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    ServiceError,
)
from results_service.storage import (
    check_offset,
    check_prefix,
    check_range,
    describe_id,
    normalize_key,
)
from results_service.storage.base import (
    LocalFile,
    LocalRoot,
    ObjectWriter,
    StorageBackend,
)

logger = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"  # temporary files of uploads in progress, never a key
# Names of the files that clients write into PARTIAL_DIR for the storage to adopt.
CLIENT_UPLOAD_NAME = re.compile(r"client-[0-9a-f]{32}")
_MISSING_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
_PUBLISH_ATTEMPTS = 3


def map_os_error(error: OSError, action: str, key: str) -> ServiceError:
    """Return the service error for an OSError raised by `action` on object `key`.

    `action` is a phrase such as "reading object 'a/b'".
    """
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhaustedError(
            f"{action} failed: the storage directory is full ({error.strerror}); "
            "free disk space or purge finished sessions",
            (key,),
        )
    return InternalError(f"{action} failed: {error}", (key,))


class LocalWriter(ObjectWriter):
    """An object written to a temporary file and renamed under its key on commit.

    Attributes:
        key: the key the object gets on commit.
        temp_path: the temporary file under `<root>/.partial/`.
        state: "open", then "committed" or "aborted".
    """

    def __init__(self, root: str, key: str, temp_path: str) -> None:
        self.key = key
        self.temp_path = temp_path
        self._root = root
        self._size = 0
        try:
            self._file: BinaryIO = open(temp_path, "xb")  # noqa: SIM115 - closed later
        except OSError as error:
            raise map_os_error(error, f"creating object {key!r}", key) from error
        self.state = "open"  # set last: __del__ aborts only a writer built whole

    def write(self, chunk: pa.Buffer | bytes) -> None:
        self._require_open("write to")
        view = memoryview(chunk)
        try:
            self._file.write(view)
        except OSError as error:
            raise map_os_error(
                error, f"writing object {self.key!r}", self.key
            ) from error
        self._size += view.nbytes

    def commit(self) -> int:
        self._require_open("commit")
        try:
            self._file.close()
            self._publish()
        except OSError as error:
            action = f"committing object {self.key!r}"
            raise map_os_error(error, action, self.key) from error

        self.state = "committed"
        logger.debug("committed object %s of %d bytes", self.key, self._size)
        return self._size

    def abort(self) -> None:
        if self.state != "open":
            return
        self.state = "aborted"
        try:
            self._file.close()
        except OSError as error:
            logger.warning("closing the aborted object %s failed: %s", self.key, error)
        try:
            os.unlink(self.temp_path)
        except FileNotFoundError:
            pass
        except OSError as error:
            logger.warning(
                "deleting %s of the aborted object %s failed: %s",
                self.temp_path,
                self.key,
                error,
            )

    def _publish(self) -> None:
        publish(self._root, self.temp_path, self.key)


def publish(root: str, temp_path: str, key: str) -> None:
    """Rename a temporary file under its key, creating parent directories.

    A concurrent delete may remove a parent directory that became empty between
    makedirs and the rename, so a missing directory is retried a few times.
    """
    target = os.path.join(root, *key.split("/"))
    for attempt in range(1, _PUBLISH_ATTEMPTS + 1):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            os.replace(temp_path, target)
            return
        except FileNotFoundError:
            if attempt == _PUBLISH_ATTEMPTS or not os.path.exists(temp_path):
                raise


class LocalBackend(StorageBackend):
    """Objects as files under a root directory, created if missing.

    Reads check that no symbolic link leads outside the root, so an imported id can
    only reach files under it.

    NOTE: commits do not fsync, so a crash of the machine (not of the process) may
    lose objects committed just before it. Temporary files of a process that crashed,
    the storage actor or a client writing an upload, stay in `<root>/.partial/`
    until removed by hand.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self._partial_dir = os.path.join(self.root, PARTIAL_DIR)
        try:
            os.makedirs(self._partial_dir, exist_ok=True)
        except OSError as error:
            action = f"creating the storage directory {self.root!r}"
            raise map_os_error(error, action, self.root) from error
        self._real_root = os.path.realpath(self.root)
        logger.info("local object storage opened at %s", self.root)

    def open_writer(self, key: str) -> LocalWriter:
        checked = self._checked_key(key.encode("utf-8", errors="surrogatepass"))
        temp_path = os.path.join(self._partial_dir, uuid.uuid4().hex)
        return LocalWriter(self.root, checked, temp_path)

    def read_range(self, opaque_id: bytes, offset: int, length: int) -> pa.Buffer:
        path = self._resolve(opaque_id)
        check_range(opaque_id, offset, length)
        key = describe_id(opaque_id)

        # O_NONBLOCK keeps the open from hanging on a FIFO; regular files ignore it.
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except _MISSING_ERRORS as error:
            raise _not_found(key) from error
        except OSError as error:
            raise map_os_error(error, f"reading object {key!r}", key) from error

        try:
            size = _regular_file_size(fd)
            if size is None:
                raise _not_found(key)
            check_offset(opaque_id, offset, size)
            return read_exact(fd, offset, min(length, size - offset), key)
        except OSError as error:
            raise map_os_error(error, f"reading object {key!r}", key) from error
        finally:
            os.close(fd)

    def local_root(self) -> LocalRoot | None:
        info = os.stat(self._partial_dir)
        return self._partial_dir, info.st_dev, info.st_ino

    def adopt(self, upload_name: str, key: str) -> int:
        checked = self._checked_key(key.encode("utf-8", errors="surrogatepass"))
        if not isinstance(upload_name, str) or not CLIENT_UPLOAD_NAME.fullmatch(
            upload_name
        ):
            raise InvalidArgumentError(
                f"client upload {upload_name!r} is invalid: give the name of a file "
                "written into the upload directory, client- and 32 hex digits",
                (str(upload_name),),
            )
        path = os.path.join(self._partial_dir, upload_name)
        info = self._open_upload_file(path, upload_name, checked)
        # A symbolic or hard link would publish a file that lives elsewhere.
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            self.discard(upload_name)
            raise _not_an_upload_file(upload_name)
        try:
            publish(self.root, path, checked)
        except OSError as error:
            action = f"committing object {checked!r}"
            raise map_os_error(error, action, checked) from error

        # The client may swap the file between the check and the rename, so the
        # published file must be the one checked. A new file may reuse the inode
        # number, so it must also still be a regular file with one link.
        target = os.path.join(self.root, *checked.split("/"))
        try:
            published = os.lstat(target)
        except OSError:
            published = None
        if (
            published is None
            or not stat.S_ISREG(published.st_mode)
            or published.st_nlink != 1
            or (published.st_dev, published.st_ino) != (info.st_dev, info.st_ino)
        ):
            logger.warning(
                "client upload %s changed while it was published as %s; deleting it",
                upload_name,
                checked,
            )
            with contextlib.suppress(OSError):
                os.unlink(target)
            raise _not_an_upload_file(upload_name)
        return info.st_size

    def _open_upload_file(
        self, path: str, upload_name: str, key: str
    ) -> os.stat_result:
        """Return the status of a client's upload file, without following links."""
        try:
            fd = os.open(
                path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            )
        except _MISSING_ERRORS as error:
            raise NotFoundError(
                f"client upload {upload_name!r} was not found in the upload "
                "directory; write the file there before finishing the upload",
                (upload_name,),
            ) from error
        except OSError as error:
            if error.errno == errno.ELOOP:
                self.discard(upload_name)
                raise _not_an_upload_file(upload_name) from error
            raise map_os_error(error, f"reading {upload_name!r}", key) from error
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def discard(self, upload_name: str) -> None:
        if not CLIENT_UPLOAD_NAME.fullmatch(upload_name):
            return
        try:
            os.unlink(os.path.join(self._partial_dir, upload_name))
        except FileNotFoundError:
            pass
        except OSError as error:
            logger.warning(
                "deleting client upload %s failed, so it stays in %s: %s",
                upload_name,
                self._partial_dir,
                error,
            )

    def local_file(self, opaque_id: bytes) -> LocalFile | None:
        path = self._resolve(opaque_id)
        try:
            info = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        return path, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns

    def sizes(self, opaque_ids: Iterable[bytes]) -> dict[bytes, int | None]:
        return {
            opaque_id: _file_size(self._resolve(opaque_id), opaque_id)
            for opaque_id in opaque_ids
        }

    def inspect_imports(
        self, opaque_ids: Sequence[bytes]
    ) -> list[tuple[bytes, int | None]]:
        """Return each id as the key of the file it leads to, with its size.

        Keys through symbolic links inside the root become the key of the real
        file, so that the checks on service objects and on other sessions' data
        compare real files, not the names that reach them.
        """
        # os.path.realpath costs an lstat per path component, so each directory is
        # resolved once per call and each file costs one lstat. Only a file that
        # is itself a symbolic link gets a realpath of its own.
        real_directories: dict[str, str] = {}
        inspected = []
        for opaque_id in opaque_ids:
            key = self._checked_key(opaque_id)
            path = os.path.join(self.root, *key.split("/"))
            directory, name = os.path.split(path)
            if directory not in real_directories:
                real_directories[directory] = os.path.realpath(directory)
            try:
                info: os.stat_result | None = os.lstat(path)
            except _MISSING_ERRORS:
                info = None
            except OSError as error:
                key_text = describe_id(opaque_id)
                action = f"reading the size of object {key_text!r}"
                raise map_os_error(error, action, key_text) from error

            if info is not None and stat.S_ISLNK(info.st_mode):
                real = os.path.realpath(path)
            else:
                real = os.path.join(real_directories[directory], name)
            prefix = self._real_root.rstrip(os.sep) + os.sep
            if not real.startswith(prefix):
                raise _escape_error(opaque_id)
            real_key = real[len(prefix) :].replace(os.sep, "/")
            # The real file must be a valid key too: not in the upload directory.
            self._checked_key(real_key.encode("utf-8", errors="surrogateescape"))
            normalized = real_key.encode("utf-8", errors="surrogateescape")
            if info is not None and stat.S_ISLNK(info.st_mode):
                size = _file_size(path, normalized)
            else:
                regular = info is not None and stat.S_ISREG(info.st_mode)
                size = info.st_size if info is not None and regular else None
            inspected.append((normalized, size))
        return inspected

    def delete(self, opaque_ids: Iterable[bytes]) -> None:
        for opaque_id in opaque_ids:
            path = self._resolve(opaque_id)
            try:
                os.unlink(path)
            except _MISSING_ERRORS:
                continue
            except OSError as error:
                key = describe_id(opaque_id)
                raise map_os_error(error, f"deleting object {key!r}", key) from error
            self._remove_empty_parents(path)

    def validate_import_id(self, opaque_id: bytes) -> bytes:
        return self._resolve_key(opaque_id)[0].encode("utf-8")

    def list_ids(self, prefix: str = "") -> list[bytes]:
        checked = check_prefix(prefix)
        start = os.path.join(self.root, *checked.split("/")[:-1])
        if not self._is_inside_root(start):
            raise InvalidArgumentError(
                f"key prefix {prefix!r} is invalid: a symbolic link in it leads "
                "outside the storage root; give a prefix of keys inside the root"
            )

        keys: list[str] = []
        for directory, subdirectories, files in os.walk(start):
            if directory == self.root and PARTIAL_DIR in subdirectories:
                subdirectories.remove(PARTIAL_DIR)
            relative = os.path.relpath(directory, self.root).replace(os.sep, "/")
            for name in files:
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(checked):
                    keys.append(key)
        return sorted(key.encode("utf-8", errors="surrogateescape") for key in keys)

    def _checked_key(self, opaque_id: bytes) -> str:
        key = normalize_key(opaque_id)
        if key.split("/", 1)[0] == PARTIAL_DIR:
            id_text = describe_id(opaque_id)
            raise InvalidArgumentError(
                f"opaque id {id_text!r} is invalid: the directory {PARTIAL_DIR}/ "
                "contains uploads in progress, not objects; give the key of a stored "
                "object",
                (id_text,),
            )
        return key

    def _resolve_key(self, opaque_id: bytes) -> tuple[str, str]:
        """Return the key and path of an id, or raise InvalidArgumentError when the
        id breaks the key syntax or a symbolic link in it leads outside the root."""
        key = self._checked_key(opaque_id)
        path = os.path.join(self.root, *key.split("/"))
        if not self._is_inside_root(path):
            raise _escape_error(opaque_id)
        return key, path

    def _is_inside_root(self, path: str) -> bool:
        return self._is_real_path_inside_root(os.path.realpath(path))

    def _is_real_path_inside_root(self, real: str) -> bool:
        """Tell whether a path that realpath returned lies under the real root."""
        root = self._real_root
        return real == root or real.startswith(root.rstrip(os.sep) + os.sep)

    def _resolve(self, opaque_id: bytes) -> str:
        return self._resolve_key(opaque_id)[1]

    def _remove_empty_parents(self, path: str) -> None:
        """Remove the directories above a deleted file that became empty, up to the
        root, so purged sessions leave no directories behind."""
        directory = os.path.dirname(path)
        while directory != self.root and directory.startswith(self.root + os.sep):
            try:
                os.rmdir(directory)
            except OSError:
                return  # not empty, or removed by a concurrent delete
            directory = os.path.dirname(directory)


def _not_an_upload_file(upload_name: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"client upload {upload_name!r} is invalid: it must be a regular file with "
        "no other link, unchanged until the upload finishes; write the data into a "
        "new file",
        (upload_name,),
    )


def _escape_error(opaque_id: bytes) -> InvalidArgumentError:
    id_text = describe_id(opaque_id)
    return InvalidArgumentError(
        f"opaque id {id_text!r} is invalid: a symbolic link in it leads "
        "outside the storage root; give the key of a file inside the root",
        (id_text,),
    )


def _not_found(key: str) -> NotFoundError:
    return NotFoundError(
        f"object {key!r} not found in the storage directory; check the opaque id, "
        "or whether the data was deleted",
        (key,),
    )


def _file_size(path: str, opaque_id: bytes) -> int | None:
    """Return the size of a regular file, or None when there is none at `path`."""
    try:
        info = os.stat(path)
    except _MISSING_ERRORS:
        return None
    except OSError as error:
        key = describe_id(opaque_id)
        raise map_os_error(error, f"reading the size of object {key!r}", key) from error
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _regular_file_size(fd: int) -> int | None:
    """Return the size of an open file, or None when it is not a regular file."""
    info = os.fstat(fd)
    return info.st_size if stat.S_ISREG(info.st_mode) else None


class LocalDownload:
    """A download that a client on the storage's machine reads from the file.

    A file with the device, inode, size and modification time that the storage
    reported is the file the storage actor would read. Another machine's file at
    the same path does not match, and neither does a file rewritten since.
    """

    def __init__(
        self,
        file: pa.OSFile,
        local_file: LocalFile,
        size: int,
        chunk_size: int,
        window_chunks: int,
        result_id: str,
    ) -> None:
        self.file = file
        self.local_file = local_file
        self.size = size
        self.chunk_size = chunk_size
        self.window = chunk_size * window_chunks
        self.result_id = result_id
        self.offset = 0

    @classmethod
    def open(
        cls,
        local_file: LocalFile,
        size: int,
        chunk_size: int,
        window_chunks: int,
        result_id: str,
    ) -> LocalDownload | None:
        """Open the file, or return None when it is missing or not the file that
        the storage reported, so that the client reads through the storage actor.

        The download reads `size` bytes, the result's size, as the storage actor
        does, even when an imported file has grown since its import.
        """
        path, device, inode, file_size, modified = local_file
        try:
            file = pa.OSFile(path, "r")
        except OSError:
            return None
        try:
            info = os.fstat(file.fileno())
        except OSError:
            file.close()
            return None
        identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        expected = (device, inode, file_size, modified)
        if stat.S_ISREG(info.st_mode) and identity == expected:
            return cls(file, local_file, size, chunk_size, window_chunks, result_id)
        file.close()
        return None

    def read_chunk(self) -> pa.Buffer | None:
        """Return the next chunk, or None at the end of the data.

        One chunk at a time, so that a consumer that drops each chunk lets the
        memory pool reuse its buffer for the next.

        At the start of each window of chunks, as where the storage actor reads a
        range, the file must still be at its path. A download of data deleted
        midway then fails as through the actor, instead of reading on from the
        unlinked file.
        """
        if self.offset >= self.size:
            return None
        if self.offset % self.window == 0:
            self._check_still_stored()
        count = min(self.chunk_size, self.size - self.offset)
        chunk = self.file.read_buffer(count)
        if len(chunk) != count:
            raise InternalError(
                f"the file of result {self.result_id} ended at byte "
                f"{self.offset + len(chunk)} of {self.size}: it was truncated "
                "during the read; retry the download",
                (self.result_id,),
            )
        self.offset += count
        return chunk

    def _check_still_stored(self) -> None:
        path, device, inode, _, _ = self.local_file
        try:
            info: os.stat_result | None = os.stat(path)
        except OSError:
            info = None
        if info is None or (info.st_dev, info.st_ino) != (device, inode):
            raise NotFoundError(
                f"the data of result {self.result_id} was deleted during the "
                "download; check whether the result is still COMPLETED",
                (self.result_id,),
            )

    def close(self) -> None:
        self.file.close()


def read_exact(fd: int, offset: int, count: int, key: str) -> pa.Buffer:
    """Read `count` bytes at `offset` straight into a new Arrow buffer."""
    buffer = pa.allocate_buffer(count)
    view = memoryview(buffer)
    done = 0
    while done < count:
        received = os.preadv(fd, [view[done:]], offset + done)
        if received == 0:
            raise InternalError(
                f"object {key!r} ended at byte {offset + done} while {count} bytes "
                f"were read from offset {offset}: it was truncated during the read; "
                "retry the download",
                (key,),
            )
        done += received
    return buffer
