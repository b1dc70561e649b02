#!/usr/bin/env bash
# Runs tests/deploy/test_manifests.py (deploy/: compose, Kubernetes, the Airflow cluster DAG's
# command lines) with a python that has PyYAML and tomllib (3.11+): the Airflow venv
# tests/airflow/run.sh made (Airflow depends on PyYAML), else the system python3, else a small
# venv of its own with PyYAML from PyPI. Needs the debug binary (`cargo build --all-features`;
# CI runs this after `cargo test --all-features`, which builds it).
set -uo pipefail
cd "$(dirname "$0")/../.."

CACHE="${COHORT_BRIDGE_CACHE:-$HOME/.cache/cohort-bridge}"
ok() { "$1" -c "import yaml, tomllib" 2>/dev/null; }

for py in "$CACHE/airflow-venv/bin/python" python3; do
    if command -v "$py" >/dev/null && ok "$py"; then
        exec "$py" tests/deploy/test_manifests.py
    fi
done

VENV="$CACHE/deploy-venv"
if ! ok "$VENV/bin/python"; then
    echo "deploy: no python with PyYAML and tomllib; installing PyYAML into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" && "$VENV/bin/python" -m pip install --disable-pip-version-check \
        --progress-bar off --quiet "PyYAML==6.0.2" || { echo "deploy: cannot install PyYAML" >&2; exit 1; }
fi
exec "$VENV/bin/python" tests/deploy/test_manifests.py
