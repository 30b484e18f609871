"""Checks of request fields; each failure is INVALID_ARGUMENT naming the value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from results_service.errors import InvalidArgumentError
from results_service.records import TaskOptions
from results_service.settings import Limits

TASK_OPTION_FIELDS = (
    "priority",
    "partition_id",
    "max_retries",
    "max_duration",
    "options",
)


def check_id(value: Any, what: str, limits: Limits) -> str:
    """Return a non-empty id string within the length limit, or raise."""
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(
            f"{what} {value!r} is invalid: give a non-empty string"
        )
    if len(value) > limits.max_id_length:
        raise InvalidArgumentError(
            f"{what} {value[:40]!r}... is {len(value)} characters long; the limit is "
            f"{limits.max_id_length}"
        )
    return value


def check_batch(
    items: Any, what: str, limits: Limits, allow_empty: bool = False
) -> list[Any]:
    """Return a request's list of items within the batch limit, or raise."""
    if isinstance(items, (str, bytes, dict)) or not isinstance(items, Sequence):
        raise InvalidArgumentError(f"{what} must be a list, got {type(items).__name__}")
    if not items and not allow_empty:
        raise InvalidArgumentError(f"{what} is empty; give at least one item")
    if len(items) > limits.max_batch:
        raise InvalidArgumentError(
            f"{what} has {len(items)} items; the limit is {limits.max_batch} per "
            "request, so split it into several requests"
        )
    return list(items)


def check_ids(
    values: Any, what: str, limits: Limits, allow_empty: bool = False
) -> list[str]:
    """Return a list of distinct valid ids, or raise naming the first duplicate."""
    ids = check_batch(values, what, limits, allow_empty)
    seen: set[str] = set()
    for value in ids:
        check_id(value, f"an item of {what}", limits)
        if value in seen:
            raise InvalidArgumentError(
                f"{what} names {value} more than once; give each id once", (value,)
            )
        seen.add(value)
    return ids


def check_name(value: Any, limits: Limits) -> str:
    """Return a result name within the length limit, or raise."""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"result name {value!r} is invalid: give a string")
    if len(value) > limits.max_name_length:
        raise InvalidArgumentError(
            f"result name {value[:40]!r}... is {len(value)} characters long; the limit "
            f"is {limits.max_name_length}"
        )
    return value


def check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{what} {value!r} is invalid: give True or False")
    return value


def merge_task_options(
    defaults: TaskOptions, *overrides: dict[str, Any] | TaskOptions | None
) -> TaskOptions:
    """Merge option overrides, later ones winning, over defaults, and check them.

    An override is a mapping of TaskOptions field names, or a TaskOptions whose
    fields all count.
    """
    merged: dict[str, Any] = {
        name: getattr(defaults, name) for name in TASK_OPTION_FIELDS
    }
    for override in overrides:
        if override is None:
            continue
        if isinstance(override, TaskOptions):
            override = {name: getattr(override, name) for name in TASK_OPTION_FIELDS}
        if not isinstance(override, dict):
            raise InvalidArgumentError(
                f"task options {override!r} are invalid: give a dict of "
                f"{', '.join(TASK_OPTION_FIELDS)} or a TaskOptions"
            )
        unknown = sorted(set(override) - set(TASK_OPTION_FIELDS))
        if unknown:
            raise InvalidArgumentError(
                f"task options {unknown} are unknown; "
                f"use {', '.join(TASK_OPTION_FIELDS)}"
            )
        previous_options = merged["options"]
        merged.update(override)
        # The free-form options merge key by key over those of earlier levels.
        if isinstance(override.get("options"), dict) and isinstance(
            previous_options, dict
        ):
            merged["options"] = {**previous_options, **override["options"]}
    return check_task_options(TaskOptions(**merged))


def check_task_options(options: TaskOptions) -> TaskOptions:
    """Return options within their ranges, or raise naming the field."""
    priority = options.priority
    if (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not 1 <= priority <= 99
    ):
        raise InvalidArgumentError(
            f"task option priority={priority!r} is invalid: it must be an integer from "
            "1 to 99"
        )
    retries = options.max_retries
    if (
        not isinstance(retries, int)
        or isinstance(retries, bool)
        or not 0 <= retries <= 100
    ):
        raise InvalidArgumentError(
            f"task option max_retries={retries!r} is invalid: it must be an integer "
            "from 0 to 100"
        )
    duration = options.max_duration
    if (
        not isinstance(duration, (int, float))
        or isinstance(duration, bool)
        or duration <= 0
    ):
        raise InvalidArgumentError(
            f"task option max_duration={duration!r} is invalid: give a positive number "
            "of seconds"
        )
    if not isinstance(options.partition_id, str):
        raise InvalidArgumentError(
            f"task option partition_id={options.partition_id!r} is invalid: "
            "give a string"
        )
    if not isinstance(options.options, dict) or not all(
        isinstance(key, str) and isinstance(value, str)
        for key, value in options.options.items()
    ):
        raise InvalidArgumentError(
            f"task option options={options.options!r} is invalid: "
            "give a dict of strings"
        )
    return options
