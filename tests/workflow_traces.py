"""Locate the WfFormat workflow traces that the replay tests read in place."""

from __future__ import annotations

import os
from pathlib import Path

WORKFLOWS_DIR_VARIABLE = "RESULTS_SERVICE_WORKFLOWS_DIR"


def workflows_dir() -> Path:
    """Return $RESULTS_SERVICE_WORKFLOWS_DIR, or `shared/workflows` beside the project.

    The traces stay outside the repository, so the default is a sibling folder of the
    project's root folder.
    """
    configured = os.environ.get(WORKFLOWS_DIR_VARIABLE)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "shared" / "workflows"


def trace_paths() -> list[Path]:
    """Return the JSON traces in `workflows_dir()`, sorted by name."""
    return sorted(workflows_dir().glob("*.json"))
