"""A moto S3 server on 127.0.0.1 for tests, and pytest fixtures that use it.

`tests/conftest.py` loads this module as a plugin, so every test can request
`s3_endpoint`, `s3_client`, `s3_bucket` and `s3_settings`. The server runs in a thread
of the test process, binds 127.0.0.1 on a free port and accepts the dummy credentials
below. Every client gets the endpoint, region and credentials explicitly, so botocore
never looks for credentials elsewhere or contacts another host.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from results_service.settings import ServiceSettings

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
REGION = "us-east-1"
S3_PREFIX = "results"


def start_s3_server() -> tuple[Any, str]:
    """Start a moto S3 server on a free port of 127.0.0.1.

    Returns the server, to `stop()` when done, and its endpoint URL.
    """
    from moto.server import ThreadedMotoServer

    # werkzeug logs one INFO line per request, which drowns test output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def make_s3_client(endpoint_url: str) -> Any:
    """Return a boto3 S3 client for the test server, for checks behind a backend."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=REGION,
    )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """Endpoint URL of a moto S3 server shared by the test session."""
    with pytest.MonkeyPatch.context() as patch:
        # Keeps botocore from asking the EC2 metadata address for credentials.
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        server, endpoint = start_s3_server()
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_endpoint: str) -> Any:
    """A boto3 S3 client for the test server."""
    return make_s3_client(s3_endpoint)


@pytest.fixture
def s3_bucket(s3_client: Any) -> Iterator[str]:
    """Name of a new empty bucket, emptied and removed after the test."""
    bucket = f"test-{uuid.uuid4().hex[:24]}"
    s3_client.create_bucket(Bucket=bucket)
    yield bucket
    empty_bucket(s3_client, bucket)
    s3_client.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_settings(s3_endpoint: str, s3_bucket: str) -> ServiceSettings:
    """Settings that store objects in `s3_bucket` under the prefix `results`."""
    return ServiceSettings(
        storage_url=f"s3://{s3_bucket}/{S3_PREFIX}",
        s3_endpoint_url=s3_endpoint,
        s3_region=REGION,
        s3_access_key_id=ACCESS_KEY_ID,
        s3_secret_access_key=SECRET_ACCESS_KEY,
    )


def empty_bucket(client: Any, bucket: str) -> None:
    """Abort the open multipart uploads of a bucket and delete its objects."""
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    for upload in uploads:
        client.abort_multipart_upload(
            Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
        )
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    for page in pages:
        for item in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
