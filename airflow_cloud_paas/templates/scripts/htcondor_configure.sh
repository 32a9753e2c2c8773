#!/bin/bash
# Install HTCondor and configure one role of a Cloud PaaS pool; cloud-init runs it at first boot as
# the Standard.configure operation of the cloud_paas.nodes.htcondor.* types.
#
# Inputs (environment variables, from the TOSCA operation inputs):
#   ROLE               central_manager, submit or execute
#   CENTRAL_MANAGER    the collector's address (empty on the central manager: $(IP_ADDRESS))
#   TRUST_DOMAIN       the pool's TRUST_DOMAIN
#   SECURITY_MODE      idtokens or password
#   CCB                true: submit and execute nodes register with the collector's CCB
#   LOW_PORT HIGH_PORT the daemons' port range (0 or empty: any port)
#   ADMIN_USER         the user Airflow acts as (ADMINISTRATOR rights; an account on the submit node)
#   DEPLOYMENT_ID      published by execute nodes as CloudPaaSDeployment
#   EXECUTE_CPUS EXECUTE_MEMORY_MB EXECUTE_GPUS   what an execute node offers (0: detected)
#   CONDOR_SERIES      the release series installed (24.0, 25.0, 25.x)
#   INSTALL            false: HTCondor is already installed
#   POOL_PASSWORD      the pool password (central manager, submit node)
#   EXECUTE_SECRET     an execute node's IDTOKEN (idtokens mode) or the pool password (password mode)
#
# The configuration written is, line for line, what airflow_cloud_paas.services.condor.config.render_config
# makes (the tests compare them). With CLOUD_PAAS_CONDOR_CONFIG_ONLY=1 the script only writes the
# configuration (to $CLOUD_PAAS_CONDOR_CONFIG_FILE) and stops: nothing is installed or started.
# Secrets are passed to HTCondor's tools on standard input, never on a command line, and never printed.
set -euo pipefail

CONFIG_FILE="${CLOUD_PAAS_CONDOR_CONFIG_FILE:-/etc/condor/config.d/50-cloud-paas.config}"
DOWNLOADS="https://htcss-downloads.chtc.wisc.edu"

fail() {
    echo "htcondor_configure.sh: $*" >&2
    exit 2
}

is_true() {
    case "$(printf '%s' "${1:-}" | tr '[:upper:]' '[:lower:]')" in
        true | yes | 1 | on) return 0 ;;
        *) return 1 ;;
    esac
}

case "${ROLE:-}" in
    central_manager) KNOB=CentralManager ;;
    submit) KNOB=Submit ;;
    execute) KNOB=Execute ;;
    *) fail "ROLE '${ROLE:-}' is not central_manager, submit or execute" ;;
esac
case "${SECURITY_MODE:-idtokens}" in
    idtokens) METHODS="FS, IDTOKENS" ;;
    password) METHODS="FS, PASSWORD, IDTOKENS" ;;
    *) fail "SECURITY_MODE '${SECURITY_MODE}' is not idtokens or password" ;;
esac
[[ "${TRUST_DOMAIN:-}" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || fail "TRUST_DOMAIN '${TRUST_DOMAIN:-}' is not a name"
CM="${CENTRAL_MANAGER:-}"
if [ -z "$CM" ]; then
    [ "$ROLE" = central_manager ] || fail "CENTRAL_MANAGER is empty: the template must pass the collector's address"
    CM='$(IP_ADDRESS)'
fi
LOW="${LOW_PORT:-0}"
HIGH="${HIGH_PORT:-0}"
[[ "$LOW" =~ ^[0-9]+$ && "$HIGH" =~ ^[0-9]+$ ]] || fail "LOW_PORT and HIGH_PORT must be numbers"
if [ "$LOW" != 0 ] || [ "$HIGH" != 0 ]; then
    { [ "$LOW" -ge 1024 ] && [ "$LOW" -lt "$HIGH" ] && [ "$HIGH" -le 65535 ]; } ||
        fail "the port range $LOW-$HIGH must satisfy 1024 <= LOW_PORT < HIGH_PORT <= 65535"
fi

render_config() {
    echo "# HTCondor $ROLE of the Cloud PaaS pool $TRUST_DOMAIN: written by airflow_cloud_paas, do not edit"
    echo "CONDOR_HOST = $CM"
    echo "use ROLE : $KNOB"
    echo "use SECURITY : recommended_v9_0"
    echo "TRUST_DOMAIN = $TRUST_DOMAIN"
    echo "SEC_DEFAULT_AUTHENTICATION_METHODS = $METHODS"
    echo 'SEC_CLIENT_AUTHENTICATION_METHODS = $(SEC_DEFAULT_AUTHENTICATION_METHODS)'
    if [ -n "${ADMIN_USER:-}" ]; then
        echo "ALLOW_ADMINISTRATOR = \$(ALLOW_ADMINISTRATOR) ${ADMIN_USER}@\$(TRUST_DOMAIN)"
    fi
    if [ "$LOW" != 0 ]; then
        echo "LOWPORT = $LOW"
        echo "HIGHPORT = $HIGH"
    fi
    if is_true "${CCB:-false}" && [ "$ROLE" != central_manager ]; then
        echo 'CCB_ADDRESS = $(COLLECTOR_HOST)'
        echo 'PRIVATE_NETWORK_NAME = $(TRUST_DOMAIN)'
    fi
    if [ "$ROLE" = execute ]; then
        echo "use FEATURE : PartitionableSlot"
        if [ "${EXECUTE_CPUS:-0}" != 0 ] && [ -n "${EXECUTE_CPUS:-}" ]; then
            echo "NUM_CPUS = $EXECUTE_CPUS"
        fi
        if [ "${EXECUTE_MEMORY_MB:-0}" != 0 ] && [ -n "${EXECUTE_MEMORY_MB:-}" ]; then
            echo "MEMORY = $EXECUTE_MEMORY_MB"
        fi
        if is_true "${EXECUTE_GPUS:-false}"; then
            echo "use FEATURE : GPUs"
        fi
        if [ -n "${DEPLOYMENT_ID:-}" ]; then
            echo "CloudPaaSDeployment = \"$DEPLOYMENT_ID\""
            echo 'STARTD_ATTRS = $(STARTD_ATTRS) CloudPaaSDeployment'
        fi
    fi
}

install_htcondor() {
    if command -v condor_master > /dev/null 2>&1; then
        return 0
    fi
    local series="${CONDOR_SERIES:-25.0}"
    # shellcheck disable=SC1091
    . /etc/os-release
    case "$ID" in
        ubuntu | debian)
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -q
            apt-get install -y -q curl gnupg
            mkdir -p /etc/apt/keyrings
            curl -fsSL --retry 5 "$DOWNLOADS/repo/keys/HTCondor-${series}-Key" -o /etc/apt/keyrings/htcondor.asc
            curl -fsSL --retry 5 "$DOWNLOADS/repo/keys/HTCondor-${series}-Daily-Key" \
                -o /etc/apt/keyrings/htcondor-snapshot.asc
            curl -fsSL --retry 5 "$DOWNLOADS/repo/${ID}/htcondor-${series}-${VERSION_CODENAME}.list" \
                -o /etc/apt/sources.list.d/htcondor.list
            apt-get update -q
            apt-get install -y -q condor
            ;;
        almalinux | rocky | centos | rhel)
            dnf install -y epel-release || true
            dnf install -y dnf-plugins-core || true
            dnf config-manager --set-enabled crb 2> /dev/null || dnf config-manager --set-enabled powertools || true
            dnf install -y "$DOWNLOADS/repo/${series}/htcondor-release-current.el${VERSION_ID%%.*}.noarch.rpm"
            dnf install -y condor
            ;;
        *) fail "cannot install HTCondor on '$ID': use an Ubuntu, Debian or EL image, or install=false" ;;
    esac
}

store_password() {
    # condor_store_cred scrambles it into SEC_PASSWORD_FILE; the password goes on standard input only
    printf '%s' "$1" | condor_store_cred add -c -i - > /dev/null
}

install_secrets() {
    local pwdir tokdir
    pwdir="$(condor_config_val SEC_PASSWORD_DIRECTORY)"
    tokdir="$(condor_config_val SEC_TOKEN_SYSTEM_DIRECTORY)"
    (umask 077 && mkdir -p "$pwdir" "$tokdir")
    if [ "$ROLE" = execute ]; then
        [ -n "${EXECUTE_SECRET:-}" ] || fail "EXECUTE_SECRET is empty: pass the execute token or the pool password"
        if [ "${SECURITY_MODE:-idtokens}" = password ]; then
            store_password "$EXECUTE_SECRET"
        else
            (umask 077 && printf '%s\n' "$EXECUTE_SECRET" > "$tokdir/cloud-paas")
        fi
    else
        [ -n "${POOL_PASSWORD:-}" ] || fail "POOL_PASSWORD is empty"
        store_password "$POOL_PASSWORD"
        # the local daemons' own token, as get_htcondor issues one
        (umask 077 && condor_token_create -identity "condor@${TRUST_DOMAIN}" > "$tokdir/condor@${TRUST_DOMAIN}")
    fi
}

start_htcondor() {
    if [ -d /run/systemd/system ] && command -v systemctl > /dev/null 2>&1; then
        systemctl enable condor
        systemctl restart condor
    elif pgrep -x condor_master > /dev/null 2>&1; then
        condor_restart -daemon master
    else
        condor_master
    fi
}

if is_true "${CLOUD_PAAS_CONDOR_CONFIG_ONLY:-false}"; then
    mkdir -p "$(dirname "$CONFIG_FILE")"
    render_config > "$CONFIG_FILE"
    exit 0
fi

if is_true "${INSTALL:-true}"; then
    install_htcondor
fi
mkdir -p "$(dirname "$CONFIG_FILE")"
(umask 022 && render_config > "$CONFIG_FILE")
condor_config_val DAEMON_LIST > /dev/null || fail "HTCondor cannot load $CONFIG_FILE"
if [ "$ROLE" = submit ] && [ -n "${ADMIN_USER:-}" ] && ! id -u "$ADMIN_USER" > /dev/null 2>&1; then
    useradd --create-home "$ADMIN_USER" # jobs Airflow submits run as this account
fi
install_secrets
unset POOL_PASSWORD EXECUTE_SECRET
start_htcondor
