"""Unit tests of the service's errors: codes, pickling across processes, unwrapping."""

from __future__ import annotations

import pickle

import pytest
import ray.cloudpickle
from ray.exceptions import RayTaskError

from results_service import errors
from results_service.errors import (
    ERRORS_BY_CODE,
    Code,
    NotFoundError,
    ServiceError,
    UnavailableError,
    unwrap_ray_error,
)

ERROR_CLASSES = [
    errors.NotFoundError,
    errors.InvalidArgumentError,
    errors.FailedPreconditionError,
    errors.AlreadyExistsError,
    errors.ResourceExhaustedError,
    errors.UnavailableError,
    errors.InternalError,
]

EXPECTED_CODES = {
    errors.NotFoundError: Code.NOT_FOUND,
    errors.InvalidArgumentError: Code.INVALID_ARGUMENT,
    errors.FailedPreconditionError: Code.FAILED_PRECONDITION,
    errors.AlreadyExistsError: Code.ALREADY_EXISTS,
    errors.ResourceExhaustedError: Code.RESOURCE_EXHAUSTED,
    errors.UnavailableError: Code.UNAVAILABLE,
    errors.InternalError: Code.INTERNAL,
}

PICKLERS = {
    "pickle": (pickle.dumps, pickle.loads),
    "cloudpickle": (ray.cloudpickle.dumps, ray.cloudpickle.loads),
}


def all_subclasses(cls: type) -> set[type]:
    """Return the subclasses defined in the errors module.

    Ray makes classes such as `RayTaskError(InvalidArgumentError)` at run time when
    a remote call raises, and those are left out.
    """
    found = set()
    for sub in cls.__subclasses__():
        if sub.__module__ == ServiceError.__module__:
            found.add(sub)
        found |= all_subclasses(sub)
    return found


def class_id(cls: type) -> str:
    return cls.__name__


def test_error_classes_list_every_subclass() -> None:
    assert all_subclasses(ServiceError) == set(ERROR_CLASSES)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=class_id)
def test_error_has_expected_code(cls: type[ServiceError]) -> None:
    assert cls.code == EXPECTED_CODES[cls]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=class_id)
def test_errors_by_code_maps_back_to_class(cls: type[ServiceError]) -> None:
    assert ERRORS_BY_CODE[cls.code] is cls


@pytest.mark.parametrize("pickler", sorted(PICKLERS))
@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=class_id)
def test_error_round_trips_through_pickle(
    cls: type[ServiceError], pickler: str
) -> None:
    dumps, loads = PICKLERS[pickler]
    original = cls("result r-1 of session s-1 failed; retry it", ("r-1", "s-1"))

    copy = loads(dumps(original))

    assert type(copy) is cls
    assert copy.code == cls.code
    assert copy.message == "result r-1 of session s-1 failed; retry it"
    assert copy.ids == ("r-1", "s-1")
    assert copy.retryable == original.retryable
    assert str(copy) == str(original)


@pytest.mark.parametrize("pickler", sorted(PICKLERS))
def test_error_without_ids_round_trips(pickler: str) -> None:
    dumps, loads = PICKLERS[pickler]

    copy = loads(dumps(errors.InternalError("broken")))

    assert copy.ids == ()
    assert copy.message == "broken"


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=class_id)
def test_error_str_contains_code_and_message(cls: type[ServiceError]) -> None:
    text = str(cls("task t-9 is gone", ("t-9",)))

    assert cls.code.value in text
    assert "task t-9 is gone" in text


def test_error_ids_list_stored_as_tuple() -> None:
    error = NotFoundError("missing", ["a", "b"])  # type: ignore[arg-type]

    assert error.ids == ("a", "b")


def test_only_unavailable_is_retryable() -> None:
    retryable = {cls for cls in ERROR_CLASSES if cls.retryable}

    assert retryable == {UnavailableError}


def test_service_error_root_is_internal() -> None:
    assert ServiceError.code == Code.INTERNAL


# unwrap_ray_error


def test_unwrap_returns_cause_of_ray_task_error() -> None:
    cause = NotFoundError("result r-1 was not found", ("r-1",))
    wrapped = RayTaskError("find", "traceback text", cause).as_instanceof_cause()

    assert unwrap_ray_error(wrapped) is cause


def test_unwrap_keeps_cause_after_cloudpickle() -> None:
    cause = NotFoundError("result r-1 was not found", ("r-1",))
    wrapped = RayTaskError("find", "traceback text", cause).as_instanceof_cause()

    unwrapped = unwrap_ray_error(ray.cloudpickle.loads(ray.cloudpickle.dumps(wrapped)))

    assert type(unwrapped) is NotFoundError
    assert unwrapped.ids == ("r-1",)  # type: ignore[attr-defined]


def test_unwrap_returns_service_error_unchanged() -> None:
    error = errors.InvalidArgumentError("bad page")

    assert unwrap_ray_error(error) is error


def test_unwrap_keeps_ray_error_of_foreign_cause() -> None:
    wrapped = RayTaskError("f", "traceback text", ValueError("x"))

    assert unwrap_ray_error(wrapped) is wrapped


def test_unwrap_returns_plain_error_unchanged() -> None:
    error = RuntimeError("boom")

    assert unwrap_ray_error(error) is error
