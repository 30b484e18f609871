"""Keep a single-node Ray's Serve replicas on the loopback interface.

Ray Serve 2.60 starts an internal gRPC server in every replica on `[::]:0`, that is
on all interfaces, with no setting to change it. For local runs and tests, where
every address is 127.0.0.1, `bind_serve_grpc_to_loopback` runs in each Ray worker
process as its `worker_process_setup_hook` and makes those servers bind 127.0.0.1.
Multi-node clusters must not use it: replicas there are reached from other nodes.
"""

from __future__ import annotations

from typing import Any

SETUP_HOOK = "results_service.loopback.bind_serve_grpc_to_loopback"


def bind_serve_grpc_to_loopback() -> None:
    """Patch Serve's replica module so its gRPC servers bind 127.0.0.1 only."""
    from ray.serve._private import replica

    original = replica.add_port_to_grpc_server
    if getattr(original, "loopback_only", False):
        return

    def add_loopback_port(server: Any, address: str) -> Any:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address.removeprefix("[::]:")
        return original(server, address)

    add_loopback_port.loopback_only = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_loopback_port
