#!/bin/bash
# Install SLURM and munge and configure one role of a Cloud PaaS SLURM cluster; cloud-init runs it at
# first boot as the Standard.configure operation of cloud_paas.nodes.slurm.Controller and .Worker (and of
# INDIGO's tosca.nodes.indigo.LRMS.FrontEnd.Slurm / WorkerNode.Slurm, see airflow_cloud_paas.cloudinit).
#
# Inputs (environment variables, from the TOSCA operation inputs):
#   ROLE               controller or worker
#   CONTROLLER         the controller's address, host or host:port (workers; empty on the controller:
#                      its own first address is used)
#   CLUSTER_NAME       SLURM's ClusterName (a lowercase letter, then lowercase letters, digits or '_')
#   PARTITION          the one partition, holding every worker (the default one)
#   MAX_WORKERS        MaxNodeCount: the most workers registered at once (controller)
#   WORKER_CPUS        the CPUs a worker declares (0: what slurmd detects)
#   WORKER_MEMORY_MB   the memory a worker declares in MB (0: what slurmd detects)
#   MAX_TIME           the partition's MaxTime (60, 1:00:00, 1-0, INFINITE)
#   SRUN_PORT_RANGE    SrunPortRange (controller), LOW-HIGH: must be the range the firewall opens
#   INSTALL            false: SLURM and munge are already installed
#   MUNGE_KEY          the cluster's munge key, base64 (the same on every node)
#
# Workers are SLURM *dynamic nodes* (https://slurm.schedmd.com/dynamic_nodes.html): `slurmd -Z` registers
# the machine with the controller, which needs no list of workers, only MaxNodeCount; dynamic nodes need
# select/cons_tres, and in 22.05 TreeWidth=65533 (no fan-out through slurmds). Workers run "configless"
# (https://slurm.schedmd.com/configless_slurm.html): the controller has
# SlurmctldParameters=enable_configless and `slurmd --conf-server CONTROLLER` fetches slurm.conf from it,
# so a worker has no slurm.conf of its own. Both need SLURM 22.05 or later: Debian 12 (bookworm, 22.05),
# Ubuntu 24.04 (23.11), EL 8/9 with EPEL (22.05 or later); Ubuntu 22.04 ships 21.08 and is refused.
#
# With SLURM_CONFIGURE_ROOT=<dir> the script installs nothing and starts nothing: it writes the munge key,
# slurm.conf (controller) or the slurmd unit drop-in (worker) under <dir> instead of /, for tests.
# The munge key is never printed nor traced, and is unset once written.
set -euo pipefail
set +x

ROOT="${SLURM_CONFIGURE_ROOT:-}"
SLURMCTLD_PORT=6817
SLURMD_PORT=6818
MUNGE_KEY_FILE="$ROOT/etc/munge/munge.key"
SLURM_CONF="$ROOT/etc/slurm/slurm.conf"
SLURMD_DROPIN="$ROOT/etc/systemd/system/slurmd.service.d/50-cloud-paas.conf"

fail() {
    echo "slurm_configure.sh: $*" >&2
    exit 2
}

is_true() {
    case "$(printf '%s' "${1:-}" | tr '[:upper:]' '[:lower:]')" in
        true | yes | 1 | on) return 0 ;;
        *) return 1 ;;
    esac
}

is_count() { [[ "${1:-}" =~ ^[0-9]+$ ]]; }

# ------------------------------------------------------------------------------------- inputs
case "${ROLE:-}" in
    controller | worker) ;;
    *) fail "ROLE '${ROLE:-}' is not controller or worker" ;;
esac
CLUSTER_NAME="${CLUSTER_NAME:-cloudpaas}"
PARTITION="${PARTITION:-main}"
MAX_WORKERS="${MAX_WORKERS:-0}"
WORKER_CPUS="${WORKER_CPUS:-0}"
WORKER_MEMORY_MB="${WORKER_MEMORY_MB:-0}"
MAX_TIME="${MAX_TIME:-INFINITE}"
SRUN_PORT_RANGE="${SRUN_PORT_RANGE:-60001-63000}"
CONTROLLER="${CONTROLLER:-}"
[[ "$CLUSTER_NAME" =~ ^[a-z][a-z0-9_]*$ ]] || fail "CLUSTER_NAME '$CLUSTER_NAME' is not a SLURM cluster name"
[[ "$PARTITION" =~ ^[A-Za-z0-9_.-]+$ ]] || fail "PARTITION '$PARTITION' is not a partition name"
[[ "$MAX_TIME" =~ ^([0-9:-]+|INFINITE|UNLIMITED)$ ]] || fail "MAX_TIME '$MAX_TIME' is not a SLURM time"
is_count "$WORKER_CPUS" || fail "WORKER_CPUS '$WORKER_CPUS' is not a number"
is_count "$WORKER_MEMORY_MB" || fail "WORKER_MEMORY_MB '$WORKER_MEMORY_MB' is not a number"
[[ "$SRUN_PORT_RANGE" =~ ^[0-9]+-[0-9]+$ ]] || fail "SRUN_PORT_RANGE '$SRUN_PORT_RANGE' is not LOW-HIGH"
if [ "$ROLE" = controller ]; then
    { is_count "$MAX_WORKERS" && [ "$MAX_WORKERS" -ge 1 ]; } || fail "MAX_WORKERS '$MAX_WORKERS' must be 1 or more"
else
    [ -n "$CONTROLLER" ] || fail "CONTROLLER is empty: the template must pass the controller's address"
fi
[ -z "$CONTROLLER" ] || [[ "$CONTROLLER" =~ ^[A-Za-z0-9._-]+(:[0-9]+)?$ ]] ||
    fail "CONTROLLER '$CONTROLLER' is not a host or host:port"
[ -n "${MUNGE_KEY:-}" ] || fail "MUNGE_KEY is empty: every node of the cluster needs the same munge key (base64) from a \
secret input (an INDIGO template: declare a secret input named munge_key)"

# ------------------------------------------------------------------------------------- steps
install_slurm() {
    if command -v slurmd > /dev/null 2>&1 && command -v munged > /dev/null 2>&1 &&
        { [ "$ROLE" = worker ] || command -v slurmctld > /dev/null 2>&1; }; then
        return 0
    fi
    # shellcheck disable=SC1091
    . /etc/os-release
    case " ${ID:-} ${ID_LIKE:-} " in
        *" debian "* | *" ubuntu "*)
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -q
            apt-get install -y -q slurm-wlm munge
            ;;
        *" rhel "* | *" fedora "* | *" centos "*)
            dnf install -y epel-release || true # EPEL holds slurm on EL; Fedora has it already
            dnf install -y slurm slurm-slurmctld slurm-slurmd munge
            ;;
        *) fail "cannot install SLURM on '${ID:-unknown}': use a Debian, Ubuntu or EL image, or install=false" ;;
    esac
}

check_version() {
    # `slurmd -V` prints "slurm-wlm 22.05.8" (Debian) or "slurm 23.11.4"
    local version major minor
    version="$(slurmd -V 2> /dev/null | awk '{print $2}')"
    major="${version%%.*}"
    minor="${version#*.}"
    minor="${minor%%.*}"
    { is_count "$major" && is_count "$minor"; } || fail "cannot read the SLURM version ('$version')"
    if [ "$major" -lt 22 ] || { [ "$major" -eq 22 ] && [ "$minor" -lt 5 ]; }; then
        fail "SLURM $version is too old: dynamic nodes need 22.05 or later (Debian 12, Ubuntu 24.04, EL with EPEL)"
    fi
}

write_munge_key() {
    local tmp size
    (umask 022 && mkdir -p "$(dirname "$MUNGE_KEY_FILE")")
    tmp="$(mktemp "$(dirname "$MUNGE_KEY_FILE")/.munge.key.XXXXXX")"
    # the key goes to base64 on standard input, never on a command line
    if ! printf '%s' "$MUNGE_KEY" | base64 -d > "$tmp" 2> /dev/null; then
        rm -f "$tmp"
        fail "MUNGE_KEY is not valid base64"
    fi
    size="$(wc -c < "$tmp")"
    if [ "$size" -lt 32 ]; then
        rm -f "$tmp"
        fail "MUNGE_KEY decodes to $size bytes: munge needs a key of at least 32 bytes"
    fi
    chmod 0400 "$tmp"
    if [ -z "$ROOT" ]; then
        chown munge:munge "$tmp"
    fi
    mv -f "$tmp" "$MUNGE_KEY_FILE"
}

own_address() {
    local address
    address="$(hostname -I 2> /dev/null | awk '{print $1}')" || true
    [ -n "$address" ] || address="$(hostname -i 2> /dev/null | awk '{print $1}')" || true
    [ -n "$address" ] || fail "cannot find this machine's address for SlurmctldHost"
    printf '%s' "$address"
}

render_slurm_conf() {
    local host address
    host="$(hostname -s)"
    address="${CONTROLLER%%:*}"
    [ -n "$address" ] || address="$(own_address)"
    echo "# SLURM cluster $CLUSTER_NAME (Cloud PaaS): written by airflow_cloud_paas, do not edit"
    echo "# Workers fetch this file from slurmctld (configless) and register as dynamic nodes (slurmd -Z)."
    echo "ClusterName=$CLUSTER_NAME"
    echo "SlurmctldHost=$host($address)"
    echo "SlurmctldPort=$SLURMCTLD_PORT"
    echo "SlurmdPort=$SLURMD_PORT"
    echo "SrunPortRange=$SRUN_PORT_RANGE"
    echo "SlurmctldParameters=enable_configless"
    echo "AuthType=auth/munge"
    echo "CredType=cred/munge"
    echo "SlurmUser=slurm"
    echo "MaxNodeCount=$MAX_WORKERS"
    echo "TreeWidth=65533"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_CPU"
    echo "SchedulerType=sched/backfill"
    echo "SchedulerParameters=sched_interval=1"
    echo "EnforcePartLimits=ALL"
    echo "ReturnToService=2"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "MpiDefault=none"
    echo "JobCompType=jobcomp/none"
    echo "AccountingStorageType=accounting_storage/none"
    echo "StateSaveLocation=/var/spool/slurmctld"
    echo "SlurmdSpoolDir=/var/spool/slurmd"
    echo "SlurmctldLogFile=/var/log/slurm/slurmctld.log"
    echo "SlurmdLogFile=/var/log/slurm/slurmd.log"
    echo "PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=$MAX_TIME State=UP"
}

worker_settings() {
    # sets SERVER (the controller's host:port) and NODE_CONF (slurmd --conf: what the node declares)
    SERVER="$CONTROLLER"
    [[ "$SERVER" == *:* ]] || SERVER="$SERVER:$SLURMCTLD_PORT"
    NODE_CONF=""
    [ "$WORKER_CPUS" = 0 ] || NODE_CONF="CPUs=$WORKER_CPUS "
    [ "$WORKER_MEMORY_MB" = 0 ] || NODE_CONF="${NODE_CONF}RealMemory=$WORKER_MEMORY_MB "
    NODE_CONF="${NODE_CONF}Feature=cloud"
}

render_slurmd_dropin() {
    local slurmd
    slurmd="$(command -v slurmd || echo /usr/sbin/slurmd)"
    echo "# slurmd of the Cloud PaaS SLURM cluster $CLUSTER_NAME: written by airflow_cloud_paas, do not edit"
    echo "# configless (--conf-server) and a dynamic node (-Z): no local slurm.conf, no NodeName line"
    echo "[Unit]"
    echo "ConditionPathExists="
    echo "After=munge.service network-online.target"
    echo "Wants=network-online.target"
    echo "[Service]"
    echo "ExecStart="
    echo "ExecStart=$slurmd -D -s --conf-server $SERVER -Z --conf \"$NODE_CONF\""
}

start_services() {
    if [ -d /run/systemd/system ] && command -v systemctl > /dev/null 2>&1; then
        systemctl daemon-reload
        systemctl enable munge
        systemctl restart munge
        if [ "$ROLE" = controller ]; then
            systemctl disable --now slurmd 2> /dev/null || true # the controller runs no jobs
            systemctl enable slurmctld
            systemctl restart slurmctld
        else
            systemctl disable --now slurmctld 2> /dev/null || true
            systemctl enable slurmd
            systemctl restart slurmd
        fi
    else # no systemd (a container image): run the daemons directly
        munged --force
        if [ "$ROLE" = controller ]; then
            slurmctld
        else
            slurmd --conf-server "$SERVER" -Z --conf "$NODE_CONF"
        fi
    fi
}

# ------------------------------------------------------------------------------------- main
if [ -z "$ROOT" ] && is_true "${INSTALL:-true}"; then
    install_slurm
fi
if [ -z "$ROOT" ]; then
    check_version
fi
write_munge_key
unset MUNGE_KEY
if [ "$ROLE" = controller ]; then
    (umask 022 && mkdir -p "$(dirname "$SLURM_CONF")" && render_slurm_conf > "$SLURM_CONF")
    if [ -z "$ROOT" ]; then
        id -u slurm > /dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin slurm
        mkdir -p /var/spool/slurmctld /var/log/slurm
        chown slurm: /var/spool/slurmctld /var/log/slurm
    fi
else
    worker_settings
    (umask 022 && mkdir -p "$(dirname "$SLURMD_DROPIN")" && render_slurmd_dropin > "$SLURMD_DROPIN")
    if [ -z "$ROOT" ]; then
        mkdir -p /var/spool/slurmd /var/log/slurm
    fi
fi
if [ -z "$ROOT" ]; then
    start_services
fi
