"""Fixtures and plugins shared by every test."""

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

pytest_plugins = ["tests.s3_server", "tests.service"]
