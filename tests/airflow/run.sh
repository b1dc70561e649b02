#!/usr/bin/env bash
# Runs tests/airflow/test_dags.py with Apache Airflow installed, so the DAG files are loaded by
# a real DagBag and run by dag.test(). Airflow lives in a venv under the cache folder, installed
# once from PyPI (about 70 s and 300 MB here; reused while the pinned version matches):
#   ${COHORT_BRIDGE_CACHE:-$HOME/.cache/cohort-bridge}/airflow-venv
# If the venv cannot be made or the install fails, the test still runs with the system python3,
# which runs only its Airflow-free checks and says so (set COHORT_BRIDGE_REQUIRE_AIRFLOW=1 to
# make that an error instead).
#
#   AIRFLOW_VERSION                  the apache-airflow version to install (default below)
#   COHORT_BRIDGE_AIRFLOW_DAG_TEST=0 skip the dag.test() runs (DagBag checks only)
set -uo pipefail
cd "$(dirname "$0")/../.."

AIRFLOW_VERSION="${AIRFLOW_VERSION:-3.3.2}"
CACHE="${COHORT_BRIDGE_CACHE:-$HOME/.cache/cohort-bridge}"
VENV="$CACHE/airflow-venv"
MARKER="$VENV/.installed-apache-airflow-$AIRFLOW_VERSION"
INSTALL_TIMEOUT="${AIRFLOW_INSTALL_TIMEOUT:-900}"
PYTHON=python3

have_airflow() {
    [ -f "$MARKER" ] && "$VENV/bin/python" -c \
        "import airflow, sys; sys.exit(airflow.__version__ != '$AIRFLOW_VERSION')" 2>/dev/null
}

install_airflow() {
    # From scratch: a venv without the marker is another version or an interrupted install.
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    echo "airflow: creating $VENV"
    if ! python3 -m venv "$VENV"; then
        echo "airflow: python3 -m venv failed (on Debian: apt-get install python3-venv)"
        rm -rf "$VENV"
        return 1
    fi
    local log="$CACHE/airflow-install.log" started=$SECONDS
    echo "airflow: installing apache-airflow==$AIRFLOW_VERSION from PyPI (timeout ${INSTALL_TIMEOUT}s, log $log)"
    # Airflow's constraints files are on GitHub, not reachable here: ours is a pip freeze of a
    # working install, so every machine gets the same set. Another version installs without
    # one (pip's resolver picks the newest compatible dependencies), and so does a retry if the
    # pinned set does not install (e.g. on another Python).
    local constraints="tests/airflow/constraints-airflow-$AIRFLOW_VERSION.txt"
    local pip=(timeout "$INSTALL_TIMEOUT" "$VENV/bin/python" -m pip install
               --disable-pip-version-check --progress-bar off "apache-airflow==$AIRFLOW_VERSION")
    : >"$log"
    local ok=0 how="unpinned"
    if [ -f "$constraints" ]; then
        "${pip[@]}" --constraint "$constraints" >>"$log" 2>&1 && ok=1 && how="pinned by $constraints"
        [ $ok = 1 ] || { echo "airflow: the pinned set did not install, trying without $constraints:";
                         tail -n 5 "$log" | cut -c1-300; }
    fi
    [ $ok = 1 ] || { "${pip[@]}" >>"$log" 2>&1 && ok=1; }
    if [ $ok = 0 ]; then
        echo "airflow: install failed after $((SECONDS - started))s; last lines of $log:"
        tail -n 15 "$log" | cut -c1-300
        return 1
    fi
    touch "$MARKER"
    echo "airflow: installed ($how) in $((SECONDS - started))s, venv $(du -sh "$VENV" | cut -f1)"
}

# One installer at a time on a machine (CI and a developer may share the cache).
mkdir -p "$CACHE"
exec 9>"$CACHE/airflow-venv.lock"
command -v flock >/dev/null && flock 9

if have_airflow || install_airflow; then
    PYTHON="$VENV/bin/python"
elif [ "${COHORT_BRIDGE_REQUIRE_AIRFLOW:-0}" = 1 ]; then
    echo "airflow: not available and COHORT_BRIDGE_REQUIRE_AIRFLOW=1" >&2
    exit 1
else
    echo "airflow: NOT available: running the Airflow-free checks only, with $(command -v python3)"
fi
exec 9>&-

exec "$PYTHON" tests/airflow/test_dags.py
