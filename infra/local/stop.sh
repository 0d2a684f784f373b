#!/usr/bin/env bash
# Stop what infra/local/start.sh started (worker, Prefect server, SeaweedFS), by their pid files.
# Data stays in .demo/; `rm -rf .demo` for a fresh start.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
exec "$PY" -m flows.localstack stop "$@"
