"""Filters, sorting and paging of list requests, as plain data checked up front.

A filter is an OR of ANDs, as in ArmoniK's `Filters{or=[FiltersAnd{and=[...]}]}`:
`[[cond, cond], [cond]]` matches a record when every condition of at least one inner
list matches. An empty outer list matches everything. A condition is a
`Condition(field, operator, value)`; the operators allowed depend on the field's kind.
"""

from __future__ import annotations

import dataclasses
import enum
import operator as op
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from results_service.errors import InvalidArgumentError


class FieldKind(enum.Enum):
    """Kind of a filterable field, which fixes its operators and value type."""

    STRING = "string"
    NUMBER = "number"
    DATE = "date"  # seconds since the epoch, or None while unset
    STATUS = "status"
    BOOLEAN = "boolean"
    BYTES = "bytes"


ORDER_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": op.eq,
    "ne": op.ne,
    "lt": op.lt,
    "le": op.le,
    "gt": op.gt,
    "ge": op.ge,
}
STRING_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": op.eq,
    "ne": op.ne,
    "contains": lambda field, value: value in field,
    "not_contains": lambda field, value: value not in field,
    "starts_with": lambda field, value: field.startswith(value),
    "ends_with": lambda field, value: field.endswith(value),
}
OPERATORS_BY_KIND: dict[FieldKind, dict[str, Callable[[Any, Any], bool]]] = {
    FieldKind.STRING: STRING_OPERATORS,
    FieldKind.BYTES: STRING_OPERATORS,
    FieldKind.NUMBER: ORDER_OPERATORS,
    FieldKind.DATE: ORDER_OPERATORS,
    FieldKind.STATUS: {"eq": op.eq, "ne": op.ne},
    FieldKind.BOOLEAN: {"eq": op.eq, "ne": op.ne},
}

RESULT_FIELDS: dict[str, FieldKind] = {
    "session_id": FieldKind.STRING,
    "name": FieldKind.STRING,
    "owner_task_id": FieldKind.STRING,
    "status": FieldKind.STATUS,
    "created_at": FieldKind.DATE,
    "completed_at": FieldKind.DATE,
    "result_id": FieldKind.STRING,
    "size": FieldKind.NUMBER,
    "created_by": FieldKind.STRING,
    "opaque_id": FieldKind.BYTES,
    "manual_deletion": FieldKind.BOOLEAN,
}
TASK_FIELDS: dict[str, FieldKind] = {
    "task_id": FieldKind.STRING,
    "session_id": FieldKind.STRING,
    "status": FieldKind.STATUS,
    "payload_id": FieldKind.STRING,
    "created_at": FieldKind.DATE,
    "submitted_at": FieldKind.DATE,
    "started_at": FieldKind.DATE,
    "ended_at": FieldKind.DATE,
    "retry_of": FieldKind.STRING,
    "worker_id": FieldKind.STRING,
}
SESSION_FIELDS: dict[str, FieldKind] = {
    "session_id": FieldKind.STRING,
    "status": FieldKind.STATUS,
    "created_at": FieldKind.DATE,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    """One test on one field: `field operator value`, for example size gt 1024."""

    field: str
    operator: str
    value: Any


@dataclasses.dataclass(frozen=True, slots=True)
class Sort:
    """Order of a list: a field and a direction, `asc` or `desc`."""

    field: str
    direction: str = "asc"


Filters = Sequence[Sequence[Condition]]
Predicate = Callable[[Any], bool]


def check_value(condition: Condition, kind: FieldKind) -> None:
    """Raise InvalidArgumentError unless the value's type suits the field's kind."""
    value = condition.value
    expected: tuple[type, ...]
    if kind is FieldKind.STRING:
        expected = (str,)
    elif kind is FieldKind.BYTES:
        expected = (bytes,)
    elif kind is FieldKind.BOOLEAN:
        expected = (bool,)
    elif kind is FieldKind.STATUS:
        expected = (int,)
    else:
        expected = (int, float)
    if isinstance(value, bool) and kind is not FieldKind.BOOLEAN:
        expected = ()
    if not isinstance(value, expected):
        raise InvalidArgumentError(
            f"filter on {condition.field!r} has value {value!r} of type "
            f"{type(value).__name__}; a {kind.value} field takes "
            f"{' or '.join(t.__name__ for t in expected) or 'a non-boolean value'}"
        )


def compile_condition(
    condition: Condition, fields: Mapping[str, FieldKind]
) -> Predicate:
    """Check one condition against the field table and return its predicate."""
    if not isinstance(condition, Condition):
        raise InvalidArgumentError(
            f"filter item {condition!r} is invalid: use filters.Condition(field, "
            "operator, value)"
        )
    kind = fields.get(condition.field)
    if kind is None:
        raise InvalidArgumentError(
            f"filter field {condition.field!r} is unknown; use one of: "
            f"{', '.join(sorted(fields))}"
        )
    operators = OPERATORS_BY_KIND[kind]
    test = operators.get(condition.operator)
    if test is None:
        raise InvalidArgumentError(
            f"filter operator {condition.operator!r} is invalid for {kind.value} field "
            f"{condition.field!r}; use one of: {', '.join(operators)}"
        )
    check_value(condition, kind)

    name = condition.field
    value = condition.value
    if kind is FieldKind.DATE:
        # An unset date matches only `ne`, as a missing value is unequal to any date.
        def date_predicate(record: Any) -> bool:
            field_value = getattr(record, name)
            if field_value is None:
                return condition.operator == "ne"
            return test(field_value, value)

        return date_predicate
    return lambda record: test(getattr(record, name), value)


def compile_filters(
    filters: Filters | None, fields: Mapping[str, FieldKind]
) -> Predicate:
    """Check an OR of ANDs and return one predicate over records."""
    if filters is None:
        return lambda record: True
    if isinstance(filters, (str, bytes)) or not isinstance(filters, Sequence):
        raise InvalidArgumentError(
            f"filters {filters!r} are invalid: give a list of lists of Condition, an "
            "OR of ANDs"
        )
    if len(filters) == 0:
        return lambda record: True
    groups: list[list[Predicate]] = []
    for group in filters:
        if isinstance(group, Condition) or not isinstance(group, Sequence):
            raise InvalidArgumentError(
                f"filter group {group!r} is invalid: each item of the outer list is a "
                "list of Condition that must all match"
            )
        groups.append([compile_condition(condition, fields) for condition in group])
    return lambda record: any(all(test(record) for test in group) for group in groups)


def check_sort(sort: Sort | None, fields: Mapping[str, FieldKind]) -> Sort | None:
    """Raise InvalidArgumentError for an unknown sort field or direction."""
    if sort is None:
        return None
    if not isinstance(sort, Sort) or sort.field not in fields:
        raise InvalidArgumentError(
            f"sort {sort!r} is invalid: use filters.Sort(field, 'asc' or 'desc') "
            f"with a field among: {', '.join(sorted(fields))}"
        )
    if sort.direction not in ("asc", "desc"):
        raise InvalidArgumentError(
            f"sort direction {sort.direction!r} is invalid; use 'asc' or 'desc'"
        )
    return sort


def check_page(page: int, page_size: int, max_page_size: int) -> None:
    """Raise InvalidArgumentError for a negative page or an over-large page size."""
    if not isinstance(page, int) or isinstance(page, bool) or page < 0:
        raise InvalidArgumentError(f"page {page!r} is invalid: pages start at 0")
    if (
        not isinstance(page_size, int)
        or isinstance(page_size, bool)
        or not 0 <= page_size <= max_page_size
    ):
        raise InvalidArgumentError(
            f"page_size {page_size!r} is invalid: it must be between 0 and "
            f"{max_page_size}; request more pages to read more rows"
        )


def sort_key(sort: Sort | None, id_field: str) -> Callable[[Any], tuple[Any, ...]]:
    """Return a key ordering records by the sort field, then by id for stable pages.

    Unset dates sort before every date.
    """
    if sort is None:
        return lambda record: (getattr(record, id_field),)
    name = sort.field

    def key(record: Any) -> tuple[Any, ...]:
        value = getattr(record, name)
        return (
            value is not None,
            value if value is not None else 0,
            getattr(record, id_field),
        )

    return key


def select_page(
    records: Sequence[Any],
    sort: Sort | None,
    id_field: str,
    page: int,
    page_size: int,
) -> list[Any]:
    """Sort records and return one page of them."""
    ordered = sorted(
        records,
        key=sort_key(sort, id_field),
        reverse=sort is not None and sort.direction == "desc",
    )
    start = page * page_size
    return ordered[start : start + page_size]
