"""A local Ray with the service running on it, shared by the integration tests.

Ray starts once per test session on 127.0.0.1 (`address="local"`, so a stale
cluster is never joined) and stops at the end even when tests fail. Each distinct
settings object gets its own Serve application and actors, under its own app name.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest

from results_service.settings import ServiceSettings

_app_numbers = itertools.count()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """A single-node Ray with 2 CPUs, bound to 127.0.0.1, for the whole session."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray import serve

    from results_service import loopback

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"worker_process_setup_hook": loopback.SETUP_HOOK},
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    serve.start(proxy_location="Disabled", logging_config={"log_level": "WARNING"})
    try:
        yield
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


class ServiceFactory:
    """Starts service applications on the session's Ray and stops them at the end."""

    def __init__(self, base_dir: str) -> None:
        self.base_dir = base_dir
        self.started: list[tuple[str, Any]] = []

    def start(self, settings: ServiceSettings | None = None, **changes: Any) -> Any:
        """Start an application and return a ResultsClient connected to it."""
        from ray import serve

        import serve_app
        from actors import ServiceActors
        from results_service.client import ResultsClient

        number = next(_app_numbers)
        settings = settings or ServiceSettings(
            storage_url=f"file://{self.base_dir}/app-{number}"
        )
        settings = dataclasses.replace(
            settings, app_name=f"results-test-{number}", **changes
        )
        serve.run(
            serve_app.build_app(settings), name=settings.app_name, route_prefix=None
        )
        client = ResultsClient(serve.get_app_handle(settings.app_name))
        client.settings = settings
        self.started.append((settings.app_name, client))
        client.actors = ServiceActors.get_or_create(settings)
        return client

    def stop_all(self) -> None:
        from ray import serve

        for app_name, client in self.started:
            client.close()
            serve.delete(app_name)
            client.actors.kill()
        self.started.clear()


@pytest.fixture(scope="session")
def services(
    ray_cluster: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceFactory]:
    """A factory of service applications on the session's Ray."""
    factory = ServiceFactory(str(tmp_path_factory.mktemp("storage")))
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="session")
def client(services: ServiceFactory) -> Any:
    """A client of a service with default settings and local directory storage."""
    return services.start()


@pytest.fixture
def session_id(client: Any) -> str:
    """A new RUNNING session of the default service."""
    return client.create_session()


def rpc(client: Any, method: str, *args: Any) -> Any:
    """Call a control-plane method directly, raising the service's own error."""
    from results_service.errors import ServiceError, unwrap_ray_error

    try:
        return getattr(client.aio.handle, method).remote(*args).result()
    except ServiceError as error:
        raise unwrap_ray_error(error) from None


def session_objects(client: Any, session_id: str) -> list[bytes]:
    """Return the ids of the objects the service wrote for a session."""
    return client.stored_ids(f"sessions/{session_id}/")


@pytest.fixture
def task_session(client: Any) -> Iterator[str]:
    """A new session, cancelled after the test so its queued tasks leave the
    shared default partition."""
    session_id = client.create_session()
    yield session_id
    client.cancel_session(session_id)
