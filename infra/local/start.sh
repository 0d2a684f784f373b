#!/usr/bin/env bash
# Start the local stack: SeaweedFS S3 (127.0.0.1:8333), a Prefect server on SQLite (127.0.0.1:4200,
# UI included) and a process worker on the `local-process` pool. State and logs go to .demo/.
#   bash infra/local/start.sh [--dir DIR] [--s3-port N] [--api-port N]
#   source .demo/env          # then `prefect ...` and boto3 talk to this stack
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
exec "$PY" -m flows.localstack start "$@"
