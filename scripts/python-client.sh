#!/usr/bin/env bash
# The Python client (clients/python) installed the way a user installs it, then its tests:
# - a venv under target/pyenv-client with the pinned, hashed build backend and pytest
#   (scripts/requirements-client.txt; kept while the file is unchanged);
# - `pip install clients/python`, which builds librim_ring.so with cargo (the dev profile
#   here, so the test suite's debug build is reused) and ships it inside the package;
# - pytest against a real rimd (target/debug/rimd, built if missing).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${RIM_PYCLIENT_ENV:-$PWD/target/pyenv-client}"
REQS="$PWD/scripts/requirements-client.txt"
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-python3}"

want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
  echo "== creating $VENV (python: $("$PYTHON" --version 2>&1))" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    --require-hashes --only-binary=:all: -r "$REQS"
  echo "$want" >"$STAMP"
fi

cargo build --bin rimd
# --no-build-isolation: the build backend is the pinned one above, not a fresh download.
RIM_CARGO_PROFILE=dev "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-build-isolation --no-deps --force-reinstall ./clients/python
# Run from outside the source tree, so the tests import the installed package.
cd clients/python/tests
RIMD_BIN="$OLDPWD/target/debug/rimd" "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
