"""The `stack-check` flow: one object written and read back with the worker's own S3 settings.

    prefect deployment run local-stack-check/stack-check       # after `bash infra/local/start.sh`

A few seconds long. It proves what a real flow run needs from the local stack: the worker
picks runs up, and its environment reaches the current S3 endpoint with valid credentials
(flows/localstack.py restarts the worker when the endpoint changes).
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from common import storage


@flow(name="local-stack-check", log_prints=False, persist_result=False)
def stack_check(bucket: str = "s3://healthcheck") -> str:
    """Write, read back and delete `<bucket>/stack-check/<time>`; returns the endpoint it used."""
    settings = storage.StorageSettings.from_env()
    uri = storage.join(bucket, "stack-check", f"{time.time_ns()}")
    body = uri.encode()
    storage.make_bucket(bucket, settings)
    storage.write_bytes(uri, body, settings)
    if storage.read_bytes(uri, settings) != body:
        raise RuntimeError(f"{uri} did not read back what was written")
    storage.delete(uri, settings)
    get_run_logger().info("S3 round trip through %s: ok", settings.endpoint_url)
    return settings.endpoint_url or ""
