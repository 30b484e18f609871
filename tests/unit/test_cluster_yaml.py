"""Check the deployment files against Ray's own config schemas.

cluster.yaml is checked the way `ray up` checks it: `prepare_config` fills in the
defaults, then `validate_config` validates the result with jsonschema against
`ray/autoscaler/ray-schema.json` and checks a few cross-field rules. serve_config.yaml
is parsed with Ray Serve's `ServeDeploySchema`. Nothing here starts Ray or opens a
connection.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import ServeDeploySchema

from results_service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
SERVE_CONFIG_YAML = ROOT / "serve_config.yaml"
RAY_SCHEMA = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
DOCUMENTATION_NETWORK = ipaddress.ip_network("192.0.2.0/24")
CLOUD_PROVIDERS = ["aws", "gcp", "azure"]
CLOUD_BLOCK_HEADER = re.compile(r"^# ---- (\w+): ")


def load_cluster_yaml() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def load_serve_config() -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(
        yaml.safe_load(SERVE_CONFIG_YAML.read_text())
    )


def commented_cloud_blocks() -> dict[str, dict[str, Any]]:
    """Parse the commented provider blocks at the end of cluster.yaml.

    A block starts at a `# ---- <provider>: ...` line and runs over the following
    comment lines. Removing one `#` level from each line gives YAML, in which the
    block's own notes stay comments.
    """
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in CLUSTER_YAML.read_text().splitlines():
        header = CLOUD_BLOCK_HEADER.match(line)
        if header:
            current = blocks.setdefault(header.group(1), [])
        elif current is not None and line.startswith("#"):
            current.append(line.removeprefix("#").removeprefix(" "))
        else:
            current = None
    return {name: yaml.safe_load("\n".join(lines)) for name, lines in blocks.items()}


def cloud_config(provider: str) -> dict[str, Any]:
    """Return cluster.yaml with the commented block of `provider` applied."""
    block = commented_cloud_blocks()[provider]
    return {**load_cluster_yaml(), **block}


# cluster.yaml


def test_cluster_yaml_matches_ray_schema() -> None:
    schema = json.loads(RAY_SCHEMA.read_text())

    jsonschema.validate(load_cluster_yaml(), schema)


def test_cluster_yaml_passes_ray_up_validation() -> None:
    validate_config(prepare_config(load_cluster_yaml()))


def test_cluster_yaml_provider_is_local() -> None:
    assert load_cluster_yaml()["provider"]["type"] == "local"


def test_cluster_yaml_uses_documentation_addresses() -> None:
    provider = load_cluster_yaml()["provider"]

    for address in [provider["head_ip"], *provider["worker_ips"]]:
        assert ipaddress.ip_address(address) in DOCUMENTATION_NETWORK, address


def test_cluster_yaml_installs_synced_project() -> None:
    config = load_cluster_yaml()
    synced_dirs = [
        remote for remote, local in config["file_mounts"].items() if local == "."
    ]

    assert len(synced_dirs) == 1, config["file_mounts"]
    installs = [
        command
        for command in config["setup_commands"]
        if "pip install" in command and command.endswith(synced_dirs[0])
    ]
    assert installs, config["setup_commands"]


def test_cluster_yaml_head_starts_ray_on_port_6379() -> None:
    commands = load_cluster_yaml()["head_start_ray_commands"]

    assert commands[0] == "ray stop"
    assert "ray start --head --port=6379" in commands[-1], commands


def test_cluster_yaml_workers_join_head_on_port_6379() -> None:
    commands = load_cluster_yaml()["worker_start_ray_commands"]

    assert commands[0] == "ray stop"
    assert "ray start --address=$RAY_HEAD_IP:6379" in commands[-1], commands


def test_cluster_yaml_has_every_cloud_block() -> None:
    assert sorted(commented_cloud_blocks()) == sorted(CLOUD_PROVIDERS)


@pytest.mark.parametrize("provider", CLOUD_PROVIDERS)
def test_cloud_block_passes_ray_up_validation(provider: str) -> None:
    config = cloud_config(provider)

    assert config["provider"]["type"] == provider
    validate_config(prepare_config(config))


# serve_config.yaml


def test_serve_config_matches_serve_schema() -> None:
    config = load_serve_config()

    assert [app.name for app in config.applications] == ["results"]


def test_serve_config_imports_serve_app() -> None:
    (app,) = load_serve_config().applications

    assert app.import_path == "serve_app:app"


def test_serve_config_app_has_no_http_route() -> None:
    (app,) = load_serve_config().applications

    assert app.route_prefix is None


def test_serve_config_proxy_listens_on_loopback() -> None:
    assert load_serve_config().http_options.host == "127.0.0.1"


def test_serve_config_app_name_matches_settings() -> None:
    (app,) = load_serve_config().applications

    assert app.runtime_env["env_vars"]["RESULTS_SERVICE_APP_NAME"] == app.name


def test_serve_config_deployment_is_control_plane() -> None:
    import serve_app

    (app,) = load_serve_config().applications

    assert app.deployment_names == [serve_app.ControlPlane.name]
    assert app.deployments[0].num_replicas == 1


def test_serve_config_variables_are_settings() -> None:
    """Every RESULTS_SERVICE_* name, commented examples included, is a setting."""
    fields = {field.name for field in dataclasses.fields(ServiceSettings)}
    names = re.findall(r"RESULTS_SERVICE_([A-Z0-9_]+)", SERVE_CONFIG_YAML.read_text())

    assert names
    for name in names:
        assert name.lower() in fields, f"RESULTS_SERVICE_{name}"


def test_serve_config_import_path_builds_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ray._common.utils import import_attr
    from ray.serve import Application

    (app,) = load_serve_config().applications
    for name, value in app.runtime_env["env_vars"].items():
        monkeypatch.setenv(name, value)

    assert isinstance(import_attr(app.import_path), Application)
