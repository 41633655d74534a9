#!/usr/bin/env bash
# Create the environment (idempotent) and start FaceMatch with gunicorn on embedded
# defaults: 127.0.0.1:5000, data in indexes/, v1 engine; v2 when a model pack is present.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure_venv.sh requirements.txt
exec .venv/bin/gunicorn -c gunicorn.conf.py "flask_backend:create_app()"
