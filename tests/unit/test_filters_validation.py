"""Unit tests of list filters and paging, request validation and service settings."""

from __future__ import annotations

from typing import Any

import pytest

from results_service import filters, validation
from results_service.errors import InvalidArgumentError
from results_service.filters import Condition, Sort
from results_service.records import ResultRecord, ResultStatus, TaskOptions
from results_service.settings import Limits, MiB, ServiceSettings

R = ResultStatus
LIMITS = Limits(max_batch=3, max_name_length=8, max_id_length=10, max_page_size=50)


def result(result_id: str, **fields: Any) -> ResultRecord:
    values: dict[str, Any] = {
        "session_id": "s1",
        "name": result_id,
        "status": R.CREATED,
    }
    values.update(fields)
    return ResultRecord(result_id=result_id, **values)


def matches(filter_groups: Any, record: ResultRecord) -> bool:
    return filters.compile_filters(filter_groups, filters.RESULT_FIELDS)(record)


# Filters: operators by kind


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ("eq", "alpha-beta", True),
        ("eq", "alpha", False),
        ("ne", "alpha", True),
        ("contains", "ha-b", True),
        ("contains", "zz", False),
        ("not_contains", "zz", True),
        ("not_contains", "beta", False),
        ("starts_with", "alpha", True),
        ("starts_with", "beta", False),
        ("ends_with", "beta", True),
        ("ends_with", "alpha", False),
    ],
)
def test_string_operator(operator: str, value: str, expected: bool) -> None:
    record = result("r1", name="alpha-beta")

    assert matches([[Condition("name", operator, value)]], record) is expected


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [
        ("eq", 10, True),
        ("eq", 11, False),
        ("ne", 11, True),
        ("lt", 11, True),
        ("lt", 10, False),
        ("le", 10, True),
        ("le", 9, False),
        ("gt", 9, True),
        ("gt", 10, False),
        ("ge", 10, True),
        ("ge", 10.5, False),
    ],
)
def test_number_operator(operator: str, value: float, expected: bool) -> None:
    assert matches([[Condition("size", operator, value)]], result("r1", size=10)) is (
        expected
    )


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [("eq", 100.0, True), ("lt", 200, True), ("gt", 200.5, False), ("ne", 1, True)],
)
def test_date_operator(operator: str, value: float, expected: bool) -> None:
    record = result("r1", created_at=100.0)

    assert matches([[Condition("created_at", operator, value)]], record) is expected


@pytest.mark.parametrize(
    ("operator", "expected"),
    [("eq", False), ("ne", True), ("lt", False), ("le", False), ("gt", False)],
)
def test_unset_date_matches_only_ne(operator: str, expected: bool) -> None:
    record = result("r1", completed_at=None)

    assert matches([[Condition("completed_at", operator, 5.0)]], record) is expected


@pytest.mark.parametrize(
    ("operator", "value", "expected"),
    [("eq", R.COMPLETED, True), ("eq", R.CREATED, False), ("ne", R.CREATED, True)],
)
def test_status_operator(operator: str, value: R, expected: bool) -> None:
    record = result("r1", status=R.COMPLETED)

    assert matches([[Condition("status", operator, value)]], record) is expected


def test_status_accepts_plain_int() -> None:
    record = result("r1", status=R.COMPLETED)

    assert matches([[Condition("status", "eq", 2)]], record)


@pytest.mark.parametrize(("operator", "expected"), [("eq", True), ("ne", False)])
def test_boolean_operator(operator: str, expected: bool) -> None:
    record = result("r1", manual_deletion=True)

    assert matches([[Condition("manual_deletion", operator, True)]], record) is (
        expected
    )


def test_bytes_operator() -> None:
    record = result("r1", opaque_id=b"sessions/s1/abc")

    assert matches([[Condition("opaque_id", "starts_with", b"sessions/s1/")]], record)


# Filters: combination


def test_empty_filters_match_all() -> None:
    assert matches([], result("r1"))


def test_none_filters_match_all() -> None:
    assert matches(None, result("r1"))


def test_and_group_needs_every_condition() -> None:
    record = result("r1", name="a", size=5)
    group = [Condition("name", "eq", "a"), Condition("size", "gt", 10)]

    assert not matches([group], record)


def test_or_of_groups_needs_one_group() -> None:
    record = result("r1", name="a", size=5)
    first = [Condition("name", "eq", "a"), Condition("size", "gt", 10)]
    second = [Condition("size", "lt", 10)]

    assert matches([first, second], record)


def test_or_of_groups_rejects_when_none_match() -> None:
    record = result("r1", name="a", size=5)

    assert not matches(
        [[Condition("name", "eq", "b")], [Condition("size", "gt", 5)]], record
    )


def test_empty_and_group_matches_all() -> None:
    assert matches([[]], result("r1"))


# Filters: invalid input


def test_unknown_field_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        matches([[Condition("colour", "eq", "red")]], result("r1"))

    assert "colour" in caught.value.message


def test_task_field_on_results_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        matches([[Condition("worker_id", "eq", "w")]], result("r1"))

    assert "worker_id" in caught.value.message


@pytest.mark.parametrize(
    ("field", "operator"),
    [
        ("name", "lt"),
        ("size", "contains"),
        ("status", "gt"),
        ("manual_deletion", "lt"),
        ("created_at", "starts_with"),
        ("name", "like"),
    ],
)
def test_operator_not_for_kind_rejected(field: str, operator: str) -> None:
    value = {"name": "a", "size": 1, "status": 1, "manual_deletion": True}.get(
        field, 1.0
    )

    with pytest.raises(InvalidArgumentError) as caught:
        matches([[Condition(field, operator, value)]], result("r1"))

    assert repr(operator) in caught.value.message
    assert repr(field) in caught.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", 5),
        ("name", b"bytes"),
        ("size", "10"),
        ("size", True),
        ("created_at", "yesterday"),
        ("status", "COMPLETED"),
        ("status", True),
        ("manual_deletion", 1),
        ("opaque_id", "text"),
    ],
)
def test_bad_value_type_rejected(field: str, value: object) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        matches([[Condition(field, "eq", value)]], result("r1"))

    assert repr(field) in caught.value.message
    assert repr(value) in caught.value.message


@pytest.mark.parametrize(
    "bad",
    [5, "name", b"name", {"name": "a"}],
    ids=["int", "str", "bytes", "dict"],
)
def test_malformed_filters_rejected(bad: object) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        matches(bad, result("r1"))

    assert repr(bad) in caught.value.message


def test_bare_condition_group_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        matches([Condition("name", "eq", "a")], result("r1"))

    assert "filter group" in caught.value.message


def test_non_condition_item_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        matches([[("name", "eq", "a")]], result("r1"))

    assert "filter item" in caught.value.message


# Sort and pages


def test_sort_ascending_breaks_ties_by_id() -> None:
    records = [result("c", size=1), result("a", size=2), result("b", size=1)]

    page = filters.select_page(records, Sort("size"), "result_id", 0, 10)

    assert [r.result_id for r in page] == ["b", "c", "a"]


def test_sort_descending_reverses_ascending() -> None:
    records = [result("c", size=1), result("a", size=2), result("b", size=1)]

    page = filters.select_page(records, Sort("size", "desc"), "result_id", 0, 10)

    assert [r.result_id for r in page] == ["a", "c", "b"]


def test_sort_none_orders_by_id() -> None:
    records = [result("c"), result("a"), result("b")]

    page = filters.select_page(records, None, "result_id", 0, 10)

    assert [r.result_id for r in page] == ["a", "b", "c"]


def test_sort_unset_dates_first() -> None:
    records = [
        result("a", completed_at=5.0),
        result("b", completed_at=None),
        result("c", completed_at=1.0),
    ]

    page = filters.select_page(records, Sort("completed_at"), "result_id", 0, 10)

    assert [r.result_id for r in page] == ["b", "c", "a"]


def test_select_page_returns_requested_slice() -> None:
    records = [result(f"r{i}") for i in range(5)]

    page = filters.select_page(records, None, "result_id", 1, 2)

    assert [r.result_id for r in page] == ["r2", "r3"]


def test_select_page_past_end_empty() -> None:
    records = [result("r0")]

    assert filters.select_page(records, None, "result_id", 3, 2) == []


def test_check_sort_unknown_field_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        filters.check_sort(Sort("colour"), filters.RESULT_FIELDS)

    assert "colour" in caught.value.message


def test_check_sort_bad_direction_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        filters.check_sort(Sort("size", "up"), filters.RESULT_FIELDS)

    assert "'up'" in caught.value.message


def test_check_sort_accepts_none() -> None:
    assert filters.check_sort(None, filters.RESULT_FIELDS) is None


@pytest.mark.parametrize(("page", "page_size"), [(0, 0), (0, 50), (7, 1)])
def test_check_page_accepts_limits(page: int, page_size: int) -> None:
    filters.check_page(page, page_size, 50)


@pytest.mark.parametrize("page", [-1, True, 1.0, "0"])
def test_check_page_bad_page_rejected(page: object) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        filters.check_page(page, 10, 50)  # type: ignore[arg-type]

    assert repr(page) in caught.value.message


@pytest.mark.parametrize("page_size", [-1, 51, True, 2.0])
def test_check_page_bad_page_size_rejected(page_size: object) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        filters.check_page(0, page_size, 50)  # type: ignore[arg-type]

    assert repr(page_size) in caught.value.message
    assert "50" in caught.value.message


# Validation of ids and names


def test_check_ids_returns_list() -> None:
    assert validation.check_ids(("a", "b"), "result_ids", LIMITS) == ["a", "b"]


def test_check_ids_duplicate_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validation.check_ids(["a", "b", "a"], "result_ids", LIMITS)

    assert "result_ids" in caught.value.message
    assert caught.value.ids == ("a",)


def test_check_ids_empty_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validation.check_ids([], "result_ids", LIMITS)

    assert "result_ids is empty" in caught.value.message


def test_check_ids_empty_allowed_when_asked() -> None:
    assert validation.check_ids([], "result_ids", LIMITS, allow_empty=True) == []


def test_check_ids_over_max_batch_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validation.check_ids(["a", "b", "c", "d"], "result_ids", LIMITS)

    assert "4 items" in caught.value.message
    assert "limit is 3" in caught.value.message


@pytest.mark.parametrize(
    "item", [5, None, b"a", ""], ids=["int", "none", "bytes", "empty"]
)
def test_check_ids_non_string_item_rejected(item: object) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validation.check_ids(["a", item], "result_ids", LIMITS)

    assert repr(item) in caught.value.message
    assert "result_ids" in caught.value.message


@pytest.mark.parametrize("value", ["abc", b"abc", {"a": 1}, 5, None])
def test_check_ids_non_list_rejected(value: object) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validation.check_ids(value, "result_ids", LIMITS)

    assert "must be a list" in caught.value.message


def test_check_id_over_length_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validation.check_id("x" * 11, "session_id", LIMITS)

    assert "session_id" in caught.value.message
    assert "11 characters" in caught.value.message


def test_check_id_at_length_accepted() -> None:
    assert validation.check_id("x" * 10, "session_id", LIMITS) == "x" * 10


def test_check_name_over_limit_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validation.check_name("n" * 9, LIMITS)

    assert "9 characters" in caught.value.message
    assert "limit is 8" in caught.value.message


@pytest.mark.parametrize("name", ["", "n" * 8])
def test_check_name_within_limit_accepted(name: str) -> None:
    assert validation.check_name(name, LIMITS) == name


def test_check_name_non_string_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validation.check_name(42, LIMITS)

    assert "42" in caught.value.message


def test_check_bool_rejects_int() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validation.check_bool(1, "retry")

    assert "retry" in caught.value.message


# Task options


SESSION_DEFAULTS = TaskOptions(
    priority=2,
    partition_id="gpu",
    max_retries=3,
    max_duration=10.0,
    options={"level": "session", "s": "1"},
)


def test_merge_without_overrides_keeps_defaults() -> None:
    assert validation.merge_task_options(SESSION_DEFAULTS, None, None) == (
        SESSION_DEFAULTS
    )


def test_merge_task_over_request_over_session() -> None:
    request = {"priority": 5, "max_retries": 4}
    per_task = {"priority": 7}

    merged = validation.merge_task_options(SESSION_DEFAULTS, request, per_task)

    assert merged.priority == 7
    assert merged.max_retries == 4
    assert merged.partition_id == "gpu"
    assert merged.max_duration == 10.0


def test_merge_nested_options_key_by_key() -> None:
    request = {"options": {"level": "request", "r": "1"}}
    per_task = {"options": {"level": "task", "t": "1"}}

    merged = validation.merge_task_options(SESSION_DEFAULTS, request, per_task)

    assert merged.options == {"level": "task", "s": "1", "r": "1", "t": "1"}


def test_merge_leaves_defaults_unchanged() -> None:
    validation.merge_task_options(SESSION_DEFAULTS, {"options": {"level": "x"}})

    assert SESSION_DEFAULTS.options == {"level": "session", "s": "1"}


def test_merge_task_options_object_counts_every_field() -> None:
    request = TaskOptions(priority=9, partition_id="cpu")

    merged = validation.merge_task_options(SESSION_DEFAULTS, request)

    assert merged.priority == 9
    assert merged.partition_id == "cpu"
    assert merged.max_retries == 1


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"priority": 0}, "priority"),
        ({"priority": 100}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": 5.0}, "priority"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 101}, "max_retries"),
        ({"max_duration": 0}, "max_duration"),
        ({"max_duration": -1.5}, "max_duration"),
        ({"max_duration": "60"}, "max_duration"),
        ({"partition_id": 3}, "partition_id"),
        ({"options": {"k": 1}}, "options"),
        ({"options": "k=v"}, "options"),
    ],
)
def test_merge_out_of_range_rejected(override: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validation.merge_task_options(SESSION_DEFAULTS, None, override)

    assert f"{field}=" in caught.value.message


@pytest.mark.parametrize(
    "override", [{"priority": 1}, {"priority": 99}, {"max_retries": 0}]
)
def test_merge_range_bounds_accepted(override: dict[str, Any]) -> None:
    merged = validation.merge_task_options(SESSION_DEFAULTS, override)

    assert {name: getattr(merged, name) for name in override} == override


def test_merge_unknown_option_key_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validation.merge_task_options(SESSION_DEFAULTS, {"prio": 5})

    assert "prio" in caught.value.message


def test_merge_non_dict_override_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validation.merge_task_options(SESSION_DEFAULTS, [("priority", 5)])  # type: ignore[arg-type]

    assert "priority" in caught.value.message


# Settings


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("results_shards", 0),
        ("tasks_shards", 0),
        ("replicas", 0),
        ("partitions", ()),
        ("data_chunk_max_size", 1023),
        ("data_chunk_max_size", 64 * MiB + 1),
        ("transfer_window_chunks", 0),
        ("s3_part_size", 5 * MiB - 1),
        ("lease_seconds", 0),
        ("lease_check_seconds", 0),
        ("upload_idle_seconds", -1),
        ("event_log_size", 0),
    ],
)
def test_settings_out_of_range_rejected(field: str, value: object) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        ServiceSettings(**{field: value})

    assert f"{field}=" in caught.value.message


@pytest.mark.parametrize("url", ["http://x", "/tmp/data", "ftp://host/path"])
def test_settings_unknown_storage_scheme_rejected(url: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        ServiceSettings(storage_url=url)

    assert repr(url) in caught.value.message


def test_settings_replace_checks_again() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        ServiceSettings().replace(results_shards=0)

    assert "results_shards" in caught.value.message


def test_settings_default_partition_is_first() -> None:
    assert ServiceSettings(partitions=("a", "b")).default_partition == "a"


def test_from_env_empty_gives_defaults() -> None:
    assert ServiceSettings.from_env({}) == ServiceSettings()


def test_from_env_parses_fields() -> None:
    settings = ServiceSettings.from_env(
        {
            "RESULTS_SERVICE_RESULTS_SHARDS": "8",
            "RESULTS_SERVICE_LEASE_SECONDS": "2.5",
            "RESULTS_SERVICE_PARTITIONS": "cpu, gpu,,",
            "RESULTS_SERVICE_STORAGE_URL": "memory://",
            "RESULTS_SERVICE_APP_NAME": "other",
        }
    )

    assert settings.results_shards == 8
    assert settings.lease_seconds == 2.5
    assert settings.partitions == ("cpu", "gpu")
    assert settings.storage_url == "memory://"
    assert settings.app_name == "other"


def test_from_env_bad_int_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        ServiceSettings.from_env({"RESULTS_SERVICE_TASKS_SHARDS": "four"})

    assert "RESULTS_SERVICE_TASKS_SHARDS" in caught.value.message
    assert "'four'" in caught.value.message


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("True", True), ("no", False), ("0", False)]
)
def test_from_env_parses_bool(raw: str, expected: bool) -> None:
    settings = ServiceSettings.from_env({"RESULTS_SERVICE_LOCAL_FILES": raw})

    assert settings.local_files is expected


def test_from_env_bad_bool_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        ServiceSettings.from_env({"RESULTS_SERVICE_LOCAL_FILES": "maybe"})

    assert "RESULTS_SERVICE_LOCAL_FILES='maybe'" in caught.value.message
    assert "bool" in caught.value.message


def test_from_env_bad_float_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        ServiceSettings.from_env({"RESULTS_SERVICE_LEASE_SECONDS": "soon"})

    assert "RESULTS_SERVICE_LEASE_SECONDS" in caught.value.message


def test_from_env_value_checked_by_settings() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        ServiceSettings.from_env({"RESULTS_SERVICE_PARTITIONS": " , "})

    assert "partitions" in caught.value.message


def test_from_env_uses_aws_variables() -> None:
    settings = ServiceSettings.from_env(
        {
            "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
            "AWS_REGION": "eu-west-3",
            "AWS_ACCESS_KEY_ID": "key",
            "AWS_SECRET_ACCESS_KEY": "secret",
        }
    )

    assert settings.s3_endpoint_url == "http://127.0.0.1:5000"
    assert settings.s3_region == "eu-west-3"
    assert settings.s3_access_key_id == "key"
    assert settings.s3_secret_access_key == "secret"


def test_from_env_service_variable_beats_aws() -> None:
    settings = ServiceSettings.from_env(
        {"AWS_REGION": "eu-west-3", "RESULTS_SERVICE_S3_REGION": "us-east-1"}
    )

    assert settings.s3_region == "us-east-1"


def test_from_env_empty_aws_variable_ignored() -> None:
    assert ServiceSettings.from_env({"AWS_REGION": ""}).s3_region is None
