"""Object storage backends and the key rules they share.

`open_backend` builds the backend that `ServiceSettings.storage_url` names. Backends
are imported when chosen, so a process that stores data locally never imports s3fs.

Every backend stores an object under a key relative to its root, and its opaque id is
that key in UTF-8. `normalize_key` contains the syntax rules for keys and imported ids:
segments separated by `/`, no `..`, no leading `/`, no URL and no control characters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from results_service.errors import InvalidArgumentError
from results_service.storage.base import ObjectWriter, StorageBackend

if TYPE_CHECKING:
    from results_service.settings import ServiceSettings

__all__ = [
    "MAX_KEY_BYTES",
    "ObjectWriter",
    "StorageBackend",
    "check_offset",
    "check_prefix",
    "check_range",
    "describe_id",
    "normalize_key",
    "open_backend",
]

MAX_KEY_BYTES = 1024  # the S3 limit on object keys, applied to every backend
_EXAMPLE = "give a key relative to the storage root, such as 'imports/data.bin'"


def open_backend(settings: ServiceSettings) -> StorageBackend:
    """Build the backend for `settings.storage_url`.

    `file:///dir` stores under a local directory, `s3://bucket/prefix` under a bucket
    prefix with the `s3_*` settings, and `memory://` in this process's memory (the
    rest of a memory URL is ignored).
    """
    url = settings.storage_url
    scheme, _, rest = url.partition("://")

    if scheme == "file":
        if not rest.startswith("/"):
            raise InvalidArgumentError(
                f"storage_url {url!r} is invalid: a file URL needs an absolute path, "
                "such as file:///var/lib/results"
            )
        from results_service.storage.local import LocalBackend

        return LocalBackend(rest)

    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise InvalidArgumentError(
                f"storage_url {url!r} is invalid: an S3 URL needs a bucket, "
                "such as s3://bucket/prefix"
            )
        from results_service.storage.s3 import S3Backend

        return S3Backend.from_settings(bucket, prefix, settings)

    if scheme == "memory":
        from results_service.storage.memory import MemoryBackend

        return MemoryBackend()

    raise InvalidArgumentError(
        f"storage_url {url!r} is invalid: use file:///dir, s3://bucket/prefix or "
        "memory://"
    )


def describe_id(opaque_id: bytes) -> str:
    """Return an opaque id as printable text for messages and logs, cut at 200
    characters."""
    text = opaque_id.decode("utf-8", errors="backslashreplace")
    return text if len(text) <= 200 else text[:200] + "..."


def normalize_key(opaque_id: bytes) -> str:
    """Return the key of an opaque id with `.` segments removed.

    Raises InvalidArgumentError for an id that is empty, longer than MAX_KEY_BYTES,
    not UTF-8, a URL, absolute, or that contains `..`, empty segments, backslashes
    or control characters. Backends add their own checks, such as symbolic links.
    """
    if not isinstance(opaque_id, bytes):
        raise InvalidArgumentError(
            f"opaque id {opaque_id!r} is invalid: it must be bytes, the UTF-8 key of "
            "an object",
            (repr(opaque_id),),
        )

    id_text = describe_id(opaque_id)
    reason = _key_syntax_error(opaque_id)
    if reason is not None:
        raise InvalidArgumentError(
            f"opaque id {id_text!r} is invalid: {reason}; {_EXAMPLE}", (id_text,)
        )

    segments = [s for s in opaque_id.decode("utf-8").split("/") if s != "."]
    if not segments:
        raise InvalidArgumentError(
            f"opaque id {id_text!r} is invalid: it names the storage root, not an "
            f"object; {_EXAMPLE}",
            (id_text,),
        )
    return "/".join(segments)


def _key_syntax_error(opaque_id: bytes) -> str | None:
    """Return why an id breaks the key syntax, or None when it follows it."""
    if not opaque_id:
        return "it is empty"
    if len(opaque_id) > MAX_KEY_BYTES:
        return f"it is {len(opaque_id)} bytes long, over the {MAX_KEY_BYTES} maximum"
    try:
        text = opaque_id.decode("utf-8")
    except UnicodeDecodeError:
        return "it is not valid UTF-8"
    if "://" in text:
        return "it is a URL, and imports only take keys inside this storage"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return "it contains a control character such as NUL or a newline"
    if "\\" in text:
        return "it contains a backslash, and keys separate segments with '/'"
    if text.startswith("/"):
        return "it is an absolute path"

    segments = text.split("/")
    if ".." in segments:
        return "it contains a '..' segment"
    if "" in segments:
        return "it contains an empty segment ('//' or a trailing '/')"
    return None


def check_prefix(prefix: str) -> str:
    """Return a key prefix for listing with `.` segments removed, or raise
    InvalidArgumentError for one that could reach outside the root.

    Unlike a key, a prefix may be empty and may end with `/`.
    """
    if prefix in ("", "./"):
        return ""
    trailing = "/" if prefix.endswith("/") else ""
    key = normalize_key(prefix.rstrip("/").encode("utf-8"))
    return key + trailing


def check_range(opaque_id: bytes, offset: int, length: int) -> None:
    """Raise InvalidArgumentError for a negative offset or length."""
    if offset < 0 or length < 0:
        id_text = describe_id(opaque_id)
        raise InvalidArgumentError(
            f"read of object {id_text!r} at offset {offset} with length {length} is "
            "invalid: both must be zero or more",
            (id_text,),
        )


def check_offset(opaque_id: bytes, offset: int, size: int) -> None:
    """Raise InvalidArgumentError for an offset past the end of an object.

    An offset equal to the size is valid and reads zero bytes.
    """
    if offset > size:
        id_text = describe_id(opaque_id)
        raise InvalidArgumentError(
            f"read of object {id_text!r} at offset {offset} is invalid: the object is "
            f"{size} bytes long; read from an offset between 0 and {size}",
            (id_text,),
        )
