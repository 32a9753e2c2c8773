#!/bin/bash
# Run a training job on a VM (a GPU VM: its host asks for num_gpus); cloud-init runs it at first boot as the
# Standard.configure operation of cloud_paas.nodes.deepaas.TrainingJob (see airflow_cloud_paas.cloudinit).
#
# Inputs (environment variables, from the TOSCA operation inputs):
#   PACKAGE                   what pip installs into /opt/cloud-paas/training/venv (airflow-cloud-paas[training])
#   OUTPUT_DIR                where the job trains (default /var/lib/cloud-paas/training)
#   CPU_THREADS               the CPU threads torch may use
#   CLOUD_PAAS_TRAIN_*        the job itself (airflow_cloud_paas.services.training.job): MODEL, DATASET, ARGS (a
#                             JSON object), HOLDOUT_FRACTION, SPLIT_SEED, MODEL_NAME, TRACKING_URI
#
# The job runs as the systemd unit cloud-paas-training.service: restarted after a crash or a reboot (it resumes
# from its last checkpoint), not after a refused job (exit code 2, error.json says why). It ends with
# $OUTPUT_DIR/result.json and the model in $OUTPUT_DIR/model.
#
# With TRAINING_JOB_ROOT=<dir> the script installs and starts nothing: it writes the job's environment file and
# the systemd unit under <dir> instead of /, for tests.
set -euo pipefail

ROOT="${TRAINING_JOB_ROOT:-}"
VENV=/opt/cloud-paas/training/venv
OUTPUT="${OUTPUT_DIR:-}"
OUTPUT="${OUTPUT:-/var/lib/cloud-paas/training}"
ENV_FILE="$ROOT/etc/cloud-paas/training.env"
UNIT="$ROOT/etc/systemd/system/cloud-paas-training.service"
THREADS="${CPU_THREADS:-1}"

fail() {
    echo "training_job.sh: $*" >&2
    exit 2
}

case "$OUTPUT" in
    /*) ;;
    *) fail "OUTPUT_DIR must be an absolute path, got '$OUTPUT'" ;;
esac
case "$THREADS" in
    '' | *[!0-9]*) fail "CPU_THREADS must be an integer >= 1, got '$THREADS'" ;;
esac
[ "$THREADS" -ge 1 ] || fail "CPU_THREADS must be an integer >= 1, got '$THREADS'"

if [ -z "$ROOT" ]; then
    export DEBIAN_FRONTEND=noninteractive
    if ! python3 -m venv --help >/dev/null 2>&1; then
        apt-get update -q && apt-get install -yq python3-venv
    fi
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
    "$VENV/bin/pip" install --quiet "${PACKAGE:-airflow-cloud-paas[training]}"
fi

install -d -m 0755 "$(dirname "$ENV_FILE")" "$(dirname "$UNIT")"
install -d -m 0750 "$ROOT$OUTPUT"
# systemd's EnvironmentFile: one VAR="value" per line; the values are quoted, inner quotes and backslashes escaped
quote() {
    printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}
umask 077
{
    for name in MODEL DATASET ARGS HOLDOUT_FRACTION SPLIT_SEED MODEL_NAME TRACKING_URI; do
        var="CLOUD_PAAS_TRAIN_$name"
        value="${!var:-}"
        [ -n "$value" ] && printf '%s=%s\n' "$var" "$(quote "$value")"
    done
    printf 'CLOUD_PAAS_TRAIN_DIR=%s\n' "$(quote "$OUTPUT")"
    printf 'OMP_NUM_THREADS=%s\n' "$THREADS"
    printf 'PYTHONUNBUFFERED=1\n'
} > "$ENV_FILE"

cat > "$UNIT" <<UNIT
[Unit]
Description=cloud-paas training job (airflow_cloud_paas.services.training.job)
After=network-online.target
Wants=network-online.target
ConditionPathExists=!$OUTPUT/result.json

[Service]
Type=exec
EnvironmentFile=/etc/cloud-paas/training.env
WorkingDirectory=$OUTPUT
ExecStart=$VENV/bin/python -m airflow_cloud_paas.services.training.job
Restart=on-failure
RestartPreventExitStatus=2
RestartSec=10

[Install]
WantedBy=multi-user.target
UNIT

if [ -z "$ROOT" ]; then
    systemctl daemon-reload
    systemctl enable cloud-paas-training.service
    systemctl start --no-block cloud-paas-training.service
fi
echo "training_job.sh: the job runs as cloud-paas-training.service; its result: $OUTPUT/result.json"
