#!/usr/bin/env bash
# The wheel as a user gets it: build it (no setuptools warning allowed), install it with the spark and
# xcache extras in a fresh venv, then from outside the checkout check its package data, `cloud-paas
# validate` on the installed Spark template, every DAG in dags/ importing with only those extras, the
# XCache admission library build, and a Spark cluster deployed on the local backend and deleted.
#
#   .ci/wheel_check.sh    (or make wheel-check): 4 minutes here, 3 of them pip installing the fresh venv
#
# Needs the package index pip is configured with, Java (Spark) and g++ with libxrootd-server-dev (the
# admission library). Everything it makes lives in one temporary folder, removed at the end.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/wheel_check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
step() { printf '== %s (%ss)\n' "$1" "$SECONDS"; }

step "build the wheel"
"$PYTHON" -m pip wheel -q --no-deps "$REPO" -w "$WORK/whl" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
if grep -i "warning" "$WORK/build.log"; then
    echo "FAIL: building the wheel warns (above)"; exit 1
fi
WHEEL=$(ls "$WORK"/whl/airflow_cloud_paas-*.whl)

step "install it with [spark,xcache] in a fresh venv"
"$PYTHON" -m venv "$WORK/venv"
BIN="$WORK/venv/bin"
"$BIN/pip" install -q -c "$REPO/constraints.txt" "${WHEEL}[spark,xcache]" >"$WORK/install.log" 2>&1 \
    || { cat "$WORK/install.log"; exit 1; }
du -sh "$WORK/venv" | awk '{print "venv size: " $1}'

# outside the checkout, with an Airflow home of its own
cd "$WORK"
export AIRFLOW_HOME="$WORK/airflow_home" CHECKOUT="$REPO" AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW_CLOUD_PAAS_XCACHE_PLUGIN_DIR="$WORK/plugins"
unset AIRFLOW__CORE__DAGS_FOLDER AIRFLOW_CONN_CLOUD_PAAS_DEFAULT CLOUD_PAAS_STORE_URL
mkdir -p "$AIRFLOW_HOME"
PATH="$BIN:$PATH"

step "cloud-paas validate the installed Spark template"
TEMPLATE=$("$BIN/python" -c 'from airflow_cloud_paas import packaged_template as t; print(t("spark_cluster"))')
case "$TEMPLATE" in "$WORK"/venv/*) ;; *) echo "FAIL: the template is $TEMPLATE, not the installed one"; exit 1;; esac
"$BIN/cloud-paas" validate "$TEMPLATE" --input worker_count=2 --backend local
if "$BIN/cloud-paas" validate "$TEMPLATE" --input worker_count=-1 2>"$WORK/err"; then
    echo "FAIL: worker_count=-1 was accepted"; exit 1
fi
grep -q "from 0 to 16" "$WORK/err" || { cat "$WORK/err"; echo "FAIL: the refusal does not name the range"; exit 1; }

step "every DAG in dags/ imports with only these extras"
"$BIN/python" - "$REPO/dags" <<'EOF'
import sys

from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
print(f"{len(bag.dags)} DAGs: {', '.join(sorted(bag.dags))}")
EOF

step "package data, admission library, Spark deploy and delete (the installed package)"
"$BIN/python" "$REPO/.ci/wheel_check.py"

step "done: the wheel works"
