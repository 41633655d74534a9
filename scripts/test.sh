#!/usr/bin/env bash
# Create the environment (idempotent) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure_venv.sh requirements-dev.txt
exec .venv/bin/python -m pytest "$@"
