#!/bin/bash
# Serve a trained model through the DEEPaaS V2 API on a VM; cloud-init runs it at first boot as the
# Standard.configure operation of cloud_paas.nodes.deepaas.ModelServer (see airflow_cloud_paas.cloudinit).
#
# Inputs (environment variables, from the TOSCA operation inputs):
#   MODEL_URL       the model archive's http(s):// URL (python -m airflow_cloud_paas.services.training.archive pack)
#   PORT            the HTTP port DEEPaaS binds on every address (0: 5000)
#   WORKERS         DEEPaaS's worker processes
#   CPU_THREADS     the CPU threads torch may use in each worker
#   PACKAGE         what pip installs, without dependencies, for the model format (airflow-cloud-paas)
#   PLUGIN_PACKAGE  the DEEPaaS plugin (cloud-paas-deepaas, or its wheel's URL)
#
# DEEPaaS runs from its own venv (/opt/cloud-paas/deepaas/venv) as the systemd unit cloud-paas-deepaas.service,
# whose python -m cloud_paas_deepaas.serve fetches the model into /var/lib/cloud-paas/deepaas/model, checks its
# SHA-256 and runs deepaas-run; a model it cannot fetch or check stops it (exit code 2), never restarted.
#
# With DEEPAAS_CONFIGURE_ROOT=<dir> the script installs and starts nothing: it writes the environment file and the
# systemd unit under <dir> instead of /, for tests.
set -euo pipefail

ROOT="${DEEPAAS_CONFIGURE_ROOT:-}"
VENV=/opt/cloud-paas/deepaas/venv
DATA=/var/lib/cloud-paas/deepaas
ENV_FILE="$ROOT/etc/cloud-paas/deepaas.env"
UNIT="$ROOT/etc/systemd/system/cloud-paas-deepaas.service"

fail() {
    echo "deepaas_configure.sh: $*" >&2
    exit 2
}

integer() {  # name value default
    local value="${2:-$3}"
    case "$value" in
        '' | *[!0-9]*) fail "$1 must be an integer, got '$value'" ;;
    esac
    printf '%s' "$value"
}

case "${MODEL_URL:-}" in
    http://* | https://*) ;;
    *) fail "MODEL_URL must be the model archive's http(s):// URL (the VM does not share Airflow's disk), got '${MODEL_URL:-}'" ;;
esac
PORT_NUMBER="$(integer PORT "${PORT:-}" 5000)"
[ "$PORT_NUMBER" -eq 0 ] && PORT_NUMBER=5000
[ "$PORT_NUMBER" -le 65535 ] || fail "PORT must be at most 65535, got $PORT_NUMBER"
WORKER_COUNT="$(integer WORKERS "${WORKERS:-}" 1)"
THREADS="$(integer CPU_THREADS "${CPU_THREADS:-}" 1)"
[ "$WORKER_COUNT" -ge 1 ] && [ "$THREADS" -ge 1 ] || fail "WORKERS and CPU_THREADS must be >= 1"

if [ -z "$ROOT" ]; then
    export DEBIAN_FRONTEND=noninteractive
    if ! python3 -m venv --help >/dev/null 2>&1; then
        apt-get update -q && apt-get install -yq python3-venv
    fi
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet "torch==2.13.0" "deepaas==2.6.0" numpy pillow scikit-learn
    "$VENV/bin/pip" install --quiet --no-deps "${PACKAGE:-airflow-cloud-paas}" "${PLUGIN_PACKAGE:-cloud-paas-deepaas}"
    id deepaas >/dev/null 2>&1 || useradd --system --home-dir "$DATA" deepaas
fi

install -d -m 0755 "$(dirname "$ENV_FILE")" "$(dirname "$UNIT")"
install -d -m 0750 "$ROOT$DATA"
quote() {
    printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}
umask 077
{
    printf 'CLOUD_PAAS_MODEL_URL=%s\n' "$(quote "$MODEL_URL")"
    printf 'CLOUD_PAAS_MODEL_DIR=%s\n' "$DATA/model"
    printf 'CLOUD_PAAS_TRAINING_DIR=%s\n' "$DATA/trainings"
    printf 'DEEPAAS_LISTEN_IP=0.0.0.0\n'
    printf 'DEEPAAS_PORT=%s\nDEEPAAS_WORKERS=%s\n' "$PORT_NUMBER" "$WORKER_COUNT"
    printf 'CLOUD_PAAS_TORCH_THREADS=%s\nOMP_NUM_THREADS=%s\n' "$THREADS" "$THREADS"
} > "$ENV_FILE"

cat > "$UNIT" <<UNIT
[Unit]
Description=DEEPaaS V2 API serving a cloud-paas model (cloud_paas_deepaas.serve)
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
User=deepaas
EnvironmentFile=/etc/cloud-paas/deepaas.env
WorkingDirectory=$DATA
ExecStart=$VENV/bin/python -m cloud_paas_deepaas.serve
KillSignal=SIGINT
Restart=on-failure
RestartPreventExitStatus=2
RestartSec=5

[Install]
WantedBy=multi-user.target
UNIT

if [ -z "$ROOT" ]; then
    chown deepaas "$DATA"
    systemctl daemon-reload
    systemctl enable --now cloud-paas-deepaas.service
fi
echo "deepaas_configure.sh: DEEPaaS answers on port $PORT_NUMBER (/v2/models/cloud-paas/)"
