"""Ids made by the service and the stable hash that maps an id to its shard."""

from __future__ import annotations

import os
import zlib
from collections import defaultdict
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def new_id() -> str:
    """Return a new random id: 32 lowercase hex digits, 128 random bits."""
    return os.urandom(16).hex()


def new_ids(count: int) -> list[str]:
    """Return `count` new random ids from one read of the random source."""
    digits = os.urandom(16 * count).hex()
    return [digits[start : start + 32] for start in range(0, 32 * count, 32)]


def shard_of(record_id: str, shards: int) -> int:
    """Return the shard that owns an id; the same on every process and run."""
    return zlib.crc32(record_id.encode()) % shards


def group_by_shard(record_ids: Iterable[str], shards: int) -> dict[int, list[str]]:
    """Group ids by owning shard, keeping their order inside each group."""
    groups: dict[int, list[str]] = defaultdict(list)
    for record_id in record_ids:
        groups[shard_of(record_id, shards)].append(record_id)
    return dict(groups)


def group_items_by_shard(
    items: Iterable[tuple[str, T]], shards: int
) -> dict[int, list[tuple[str, T]]]:
    """Group (id, value) pairs by the shard owning the id."""
    groups: dict[int, list[tuple[str, T]]] = defaultdict(list)
    for record_id, value in items:
        groups[shard_of(record_id, shards)].append((record_id, value))
    return dict(groups)


def object_key(session_id: str) -> str:
    """Return a new storage key for data the service writes for a session."""
    return f"sessions/{session_id}/{new_id()}"


def session_prefix(session_id: str) -> str:
    """Return the storage key prefix of the objects the service wrote for a session."""
    return f"sessions/{session_id}/"
