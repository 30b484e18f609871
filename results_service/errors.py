"""Errors of the Results service.

Every error has a gRPC-style code that a caller can branch on. Errors cross Ray
process boundaries, so each class passes all its constructor arguments to the base
class and pickles with its fields intact.
"""

from __future__ import annotations

import enum


class Code(enum.StrEnum):
    """gRPC status names used by the service."""

    NOT_FOUND = "NOT_FOUND"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


class ServiceError(Exception):
    """Root of the service's errors.

    Attributes:
        message: what failed, on which value, and what to do next.
        ids: the ids of the records involved, for logs and for callers that branch.
    """

    code: Code = Code.INTERNAL
    retryable: bool = False

    def __init__(self, message: str, ids: tuple[str, ...] = ()) -> None:
        super().__init__(message, ids)
        self.message = message
        self.ids = tuple(ids)

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"

    def __reduce__(self) -> tuple[type, tuple[str, tuple[str, ...]]]:
        return (type(self), (self.message, self.ids))


class NotFoundError(ServiceError):
    """A session, result, task, partition or stored object does not exist."""

    code = Code.NOT_FOUND


class InvalidArgumentError(ServiceError):
    """A request field is malformed or out of its documented limits."""

    code = Code.INVALID_ARGUMENT


class FailedPreconditionError(ServiceError):
    """The records exist but their status forbids the operation."""

    code = Code.FAILED_PRECONDITION


class AlreadyExistsError(ServiceError):
    """A record with the same id exists already."""

    code = Code.ALREADY_EXISTS


class ResourceExhaustedError(ServiceError):
    """A limit of the service was reached; retry later or with a smaller request."""

    code = Code.RESOURCE_EXHAUSTED


class UnavailableError(ServiceError):
    """A component is temporarily unreachable; the request can be retried as is."""

    code = Code.UNAVAILABLE
    retryable = True


class InternalError(ServiceError):
    """A bug or an unexpected failure of a dependency."""

    code = Code.INTERNAL


ERRORS_BY_CODE: dict[Code, type[ServiceError]] = {
    cls.code: cls
    for cls in (
        NotFoundError,
        InvalidArgumentError,
        FailedPreconditionError,
        AlreadyExistsError,
        ResourceExhaustedError,
        UnavailableError,
        InternalError,
    )
}


def unwrap_ray_error(error: BaseException) -> BaseException:
    """Return the service error inside a Ray task or actor error, or the error itself.

    Ray wraps an exception raised in a remote call in a `RayTaskError` that is also an
    instance of the original class; its `cause` attribute is the original.
    """
    cause = getattr(error, "cause", None)
    if isinstance(cause, ServiceError):
        return cause
    return error
