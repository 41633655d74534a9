# Source me: creates .venv if missing and (re)installs a requirements file when it changed.
# Usage: . scripts/ensure_venv.sh requirements-dev.txt
set -euo pipefail
req="${1:-requirements.txt}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=".venv/.installed-$(basename "$req")"
want="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing $req into .venv ..." >&2
  .venv/bin/python -m pip install --quiet -r "$req"
  echo "$want" > "$stamp"
fi
