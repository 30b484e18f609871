"""Ray actors that own the service's state: one actor class per module.

`ServiceActors.get_or_create` finds the named actors of a deployment, or starts them.
They are detached, so they outlive the control-plane replica that started them and
are shared by all replicas; `ServiceActors.kill` ends them.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import ray

from actors.object_storage import ObjectStorage
from actors.results_table import ResultsTable
from actors.sessions_table import SessionsTable
from actors.task_queue import TaskQueue
from actors.tasks_table import TasksTable
from results_service.settings import ServiceSettings

logger = logging.getLogger(__name__)

__all__ = [
    "ObjectStorage",
    "ResultsTable",
    "ServiceActors",
    "SessionsTable",
    "TaskQueue",
    "TasksTable",
    "actor_name",
]


def actor_name(settings: ServiceSettings, role: str) -> str:
    """Return the name of one of a deployment's actors, such as "storage"."""
    return f"{settings.app_name}/{role}"


@dataclasses.dataclass(frozen=True)
class ServiceActors:
    """Handles to every actor of one deployment of the service."""

    results: list[Any]
    tasks: list[Any]
    sessions: Any
    queue: Any
    storage: Any

    @classmethod
    def get_or_create(cls, settings: ServiceSettings) -> ServiceActors:
        """Return the deployment's actors, starting those not running yet."""

        def named(actor_class: Any, name: str, *args: Any) -> Any:
            return actor_class.options(
                name=actor_name(settings, name),
                namespace=settings.namespace,
                lifetime="detached",
                get_if_exists=True,
            ).remote(*args)

        actors = cls(
            results=[
                named(ResultsTable, f"results-{shard}", shard, settings)
                for shard in range(settings.results_shards)
            ],
            tasks=[
                named(TasksTable, f"tasks-{shard}", shard, settings)
                for shard in range(settings.tasks_shards)
            ],
            sessions=named(SessionsTable, "sessions", settings),
            queue=named(TaskQueue, "queue", settings),
            storage=named(ObjectStorage, "storage", settings),
        )
        ray.get([actor.ping.remote() for actor in actors.all()])
        return actors

    def all(self) -> list[Any]:
        return [*self.results, *self.tasks, self.sessions, self.queue, self.storage]

    def kill(self) -> None:
        """End every actor; their state is lost."""
        for actor in self.all():
            ray.kill(actor, no_restart=True)
        logger.info("service actors stopped")
