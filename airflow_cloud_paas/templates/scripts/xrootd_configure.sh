#!/bin/bash
# Install XRootD and configure an origin (data server) or an XCache (proxy file cache); cloud-init runs
# it at first boot as the Standard.configure operation of cloud_paas.nodes.xrootd.Origin and .XCache.
#
# Inputs (environment variables, from the TOSCA operation inputs):
#   ROLE              origin or xcache
#   PORT              the TCP port (0 or empty: 1094)
#   EXPORTS           the exported paths: a JSON list (["/store"]) or words separated by spaces
#   DATA_DIR          origin: the directory served (empty: /data/xrootd)
#   ORIGIN            xcache: the origin as host:port (empty: ORIGIN_HOST and ORIGIN_PORT)
#   ORIGIN_HOST ORIGIN_PORT  xcache: the origin node's address and port (0 or empty: 1094)
#   CACHE_DIR         xcache: where cached files live (empty: /var/cache/xrootd)
#   RAM BLOCK_SIZE CACHE_SIZE  xcache: sizes such as 1g, 512k (binary units; CACHE_SIZE empty: whole disk)
#   LOW_WATERMARK HIGH_WATERMARK  xcache: fractions of the cache size where purging stops and starts
#   PREFETCH PURGE_INTERVAL_S     xcache: blocks read ahead, seconds between purges (empty: XRootD's)
#   MONITOR MONITOR_FLUSH_S       xcache: host:port receiving the file-close records (UDP), flush seconds
#   ALLOW_COMMANDS    xcache: true lets clients evict files through /xrdpfc_command/
#   ADMISSION         xcache: all (every miss is written); model is refused here: the cloud-paas decision
#                     library is built by the local backend only, not at boot
#   ADMIN_DIR         xrootd's admin directory (empty: /var/spool/xrootd)
#   INSTALL           false: XRootD is already installed
#
# The configuration written is, line for line, what airflow_cloud_paas.services.xcache.config renders
# (the tests compare them). With CLOUD_PAAS_XROOTD_CONFIG_ONLY=1 the script only writes it (to
# $CLOUD_PAAS_XROOTD_CONFIG_FILE) and stops: nothing is installed or started.
set -euo pipefail

INSTANCE=cloudpaas
CONFIG_FILE="${CLOUD_PAAS_XROOTD_CONFIG_FILE:-/etc/xrootd/xrootd-${INSTANCE}.cfg}"
PATH_RE='^/[A-Za-z0-9._~+@%=/-]*$'
HOST_RE='^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)$'

fail() {
    echo "xrootd_configure.sh: $*" >&2
    exit 2
}

fail_prop() {
    fail "property '$1': $2"
}

is_true() {
    case "$(printf '%s' "${1:-}" | tr '[:upper:]' '[:lower:]')" in
        true | yes | 1 | on) return 0 ;;
        *) return 1 ;;
    esac
}

# parse_size VALUE PROPERTY: print the size in bytes (binary units, as config.parse_size)
parse_size() {
    local re='^[[:space:]]*([0-9]+)(\.[0-9]+)?[[:space:]]*([kKmMgGtT]?)([iI]?[bB])?[[:space:]]*$'
    [[ "$1" =~ $re ]] || fail_prop "$2" "expected a size such as 1g, 512k or 64KiB (binary units), got '$1'"
    local whole="${BASH_REMATCH[1]}" frac="${BASH_REMATCH[2]}" unit mult=1 bytes
    unit="$(printf '%s' "${BASH_REMATCH[3]}" | tr '[:upper:]' '[:lower:]')"
    case "$unit" in
        k) mult=1024 ;;
        m) mult=1048576 ;;
        g) mult=1073741824 ;;
        t) mult=1099511627776 ;;
    esac
    if [ -z "$frac" ]; then
        bytes=$((10#$whole * mult))
    else
        bytes="$(awk -v n="$whole$frac" -v m="$mult" 'BEGIN { printf "%.0f", int(n * m) }')"
    fi
    [ "$bytes" -gt 0 ] || fail_prop "$2" "a size must be positive, got '$1'"
    echo "$bytes"
}

# format_size BYTES: the largest exact binary suffix, as config.format_size
format_size() {
    local size="$1" suffix unit
    for suffix in t g m k; do
        case "$suffix" in
            t) unit=1099511627776 ;;
            g) unit=1073741824 ;;
            m) unit=1048576 ;;
            k) unit=1024 ;;
        esac
        if [ $((size % unit)) -eq 0 ]; then
            echo "$((size / unit))$suffix"
            return
        fi
    done
    echo "$size"
}

fraction() {
    awk -v x="$1" 'BEGIN { exit !(x ~ /^[0-9]*\.?[0-9]+$/ && x + 0 > 0 && x + 0 <= 1) }' ||
        fail_prop "$2" "expected a fraction between 0 and 1 (e.g. 0.9), got '$1'"
    awk -v x="$1" 'BEGIN { printf "%g", x }'
}

check_port() {
    [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ] ||
        fail_prop "$2" "expected a port in 1-65535, got '$1'"
}

check_dir() {
    [[ "$1" =~ $PATH_RE ]] ||
        fail_prop "$2" "expected an absolute directory path of letters, digits and ._~+@%=/- (no spaces), got '$1'"
    local dir="${1%/}"
    echo "${dir:-/}"
}

# address VALUE PROPERTY DEFAULT_PORT: print host:port from host:port, [v6]:port, root://host:port or host
address() {
    local text="$1" host port=""
    text="${text#root://}"
    text="${text#roots://}"
    text="${text#xroot://}"
    text="${text#udp://}"
    text="${text%%/*}"
    [[ "$text" != *@* ]] || fail_prop "$2" "an address must not carry credentials (user@host); give host:port"
    if [[ "$text" == \[* ]]; then
        host="${text%%]*}]"
        port="${text#"$host"}"
        port="${port#:}"
    elif [ "$(printf '%s' "$text" | tr -cd ':' | wc -c)" -eq 1 ]; then
        host="${text%%:*}"
        port="${text#*:}"
    else
        host="$text"
    fi
    [[ -n "$host" && "$host" =~ $HOST_RE ]] || fail_prop "$2" "expected host:port (e.g. origin.example.org:1094), got '$1'"
    if [ -z "$port" ]; then
        [ -n "$3" ] || fail_prop "$2" "expected host:port with a port, got '$1'"
        port="$3"
    fi
    check_port "$port" "$2"
    echo "$host:$port"
}

# the exported paths, one a line
exports() {
    local raw="${EXPORTS:-}" seen=" " path
    raw="$(printf '%s' "$raw" | tr -d '[]"' | tr ',' ' ')"
    [ -n "${raw// /}" ] || raw="/"
    for path in $raw; do
        [[ "$path" =~ $PATH_RE && "$path/" != *"/../"* && "$path" != *"//"* ]] ||
            fail_prop exports "exported path '$path' must be absolute, without '..', '//' or spaces (e.g. /store)"
        path="${path%/}"
        path="${path:-/}"
        [[ "$path" != /xrdpfc_command* ]] || fail_prop exports "/xrdpfc_command/ is reserved for XCache's commands"
        if [[ "$seen" != *" $path "* ]]; then
            echo "$path"
            seen="$seen$path "
        fi
    done
}

case "${ROLE:-}" in
    origin | xcache) ;;
    *) fail "ROLE '${ROLE:-}' is not origin or xcache" ;;
esac
case "${ADMISSION:-all}" in
    all) ;;
    model) fail_prop admission "model needs the cloud-paas XCache decision library, which is not installed at boot yet; deploy with admission all (or on the local backend)" ;;
    *) fail_prop admission "expected all or model, got '${ADMISSION}'" ;;
esac
PORT="${PORT:-0}"
[ "$PORT" != 0 ] || PORT=1094
check_port "$PORT" port
ADMIN="$(check_dir "${ADMIN_DIR:-/var/spool/xrootd}" admin_dir)"
EXPORTED="$(exports)"

if [ "$ROLE" = origin ]; then
    DATA="$(check_dir "${DATA_DIR:-/data/xrootd}" data_dir)"
else
    CACHE="$(check_dir "${CACHE_DIR:-/var/cache/xrootd}" cache_dir)"
    if [ -n "${ORIGIN:-}" ]; then
        SOURCE="$(address "$ORIGIN" origin 1094)"
    else
        [ -n "${ORIGIN_HOST:-}" ] || fail_prop origin "no origin: set the origin property (host:port) or ORIGIN_HOST"
        OPORT="${ORIGIN_PORT:-0}"
        [ "$OPORT" != 0 ] || OPORT=1094
        SOURCE="$(address "$ORIGIN_HOST:$OPORT" origin 1094)"
    fi
    RAM_B="$(parse_size "${RAM:-1g}" ram)"
    [ "$RAM_B" -ge 1073741824 ] || fail_prop ram "XCache needs at least 1g of RAM (pfc.ram), got '${RAM:-}'"
    BLOCK_B="$(parse_size "${BLOCK_SIZE:-1m}" block_size)"
    { [ "$BLOCK_B" -ge 4096 ] && [ "$BLOCK_B" -le 536870912 ] && [ $((BLOCK_B % 4096)) -eq 0 ]; } ||
        fail_prop block_size "the block size must be a multiple of 4k from 4k to 512m, got '${BLOCK_SIZE:-}'"
    LOW="$(fraction "${LOW_WATERMARK:-0.90}" low_watermark)"
    HIGH="$(fraction "${HIGH_WATERMARK:-0.95}" high_watermark)"
    awk -v l="$LOW" -v h="$HIGH" 'BEGIN { exit !(l + 0 < h + 0) }' ||
        fail_prop low_watermark "the low watermark ($LOW) must be below the high watermark ($HIGH)"
    if [ -n "${CACHE_SIZE:-}" ]; then
        SIZE_B="$(parse_size "$CACHE_SIZE" cache_size)"
        awk -v s="$SIZE_B" -v h="$HIGH" 'BEGIN { exit !(s * h >= 65536) }' ||
            fail_prop cache_size "a cache of $SIZE_B bytes is too small to hold anything"
        # absolute sizes in KiB: a number without a unit would be read as a fraction
        LOW_B="$(awk -v s="$SIZE_B" -v w="$LOW" 'BEGIN { printf "%.0f", int(s * w) }')"
        HIGH_B="$(awk -v s="$SIZE_B" -v w="$HIGH" 'BEGIN { printf "%.0f", int(s * w) }')"
        LOW="$((LOW_B / 1024))k"
        HIGH="$((HIGH_B / 1024))k"
    fi
    for name in PREFETCH PURGE_INTERVAL_S MONITOR_FLUSH_S; do
        value="${!name:-}"
        low_bound=1
        [ "$name" != PREFETCH ] || low_bound=0
        if [ -n "$value" ]; then
            [[ "$value" =~ ^[0-9]+$ ]] && [ "$value" -ge "$low_bound" ] ||
                fail_prop "$(printf '%s' "$name" | tr '[:upper:]' '[:lower:]')" \
                    "expected an integer >= $low_bound, got '$value'"
        fi
    done
    FLUSH="${MONITOR_FLUSH_S:-5}"
    MON=""
    if [ -n "${MONITOR:-}" ]; then
        MON="$(address "$MONITOR" monitor "")"
    fi
fi

render_config() {
    if [ "$ROLE" = origin ]; then
        echo "# XRootD origin (data server): written by airflow_cloud_paas, do not edit"
    else
        echo "# XCache (proxy file cache) of root://$SOURCE: written by airflow_cloud_paas, do not edit"
    fi
    echo "xrd.port $PORT"
    echo "all.adminpath $ADMIN"
    echo "all.pidpath $ADMIN"
    if [ "$ROLE" = origin ]; then
        echo "oss.localroot $DATA"
        printf 'all.export %s\n' $EXPORTED
        return
    fi
    printf 'all.export %s\n' $EXPORTED
    echo "ofs.osslib libXrdPss.so"
    echo "pss.cachelib libXrdPfc.so"
    echo "pss.origin $SOURCE"
    echo "oss.localroot $CACHE"
    echo "pfc.ram $(format_size "$RAM_B")"
    echo "pfc.blocksize $(format_size "$BLOCK_B")"
    if [ -n "${PURGE_INTERVAL_S:-}" ]; then
        echo "pfc.diskusage $LOW $HIGH purgeinterval $PURGE_INTERVAL_S"
    else
        echo "pfc.diskusage $LOW $HIGH"
    fi
    if [ -n "${PREFETCH:-}" ]; then
        echo "pfc.prefetch $PREFETCH"
    fi
    if is_true "${ALLOW_COMMANDS:-false}"; then
        echo "all.export /xrdpfc_command/"
        echo "pfc.allow_xrdpfc_command"
    fi
    if [ -n "$MON" ]; then
        echo "xrootd.monitor all flush ${FLUSH}s window ${FLUSH}s dest pfc $MON"
    fi
}

install_xrootd() {
    if command -v xrootd > /dev/null 2>&1; then
        return 0
    fi
    # shellcheck disable=SC1091
    . /etc/os-release
    case "$ID" in
        ubuntu | debian)
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -q
            apt-get install -y -q xrootd-server xrootd-server-plugins xrootd-client
            ;;
        almalinux | rocky | centos | rhel | fedora)
            [ "$ID" = fedora ] || dnf install -y epel-release
            dnf install -y xrootd-server xrootd-client
            ;;
        *) fail "cannot install XRootD on '$ID': use an Ubuntu, Debian, EL or Fedora image, or install=false" ;;
    esac
}

start_xrootd() {
    if [ -d /run/systemd/system ] && command -v systemctl > /dev/null 2>&1; then
        systemctl enable "xrootd@${INSTANCE}"
        systemctl restart "xrootd@${INSTANCE}"
    else
        mkdir -p /var/log/xrootd
        chown xrootd:xrootd /var/log/xrootd
        xrootd -b -R xrootd -n "$INSTANCE" -c "$CONFIG_FILE" -l "/var/log/xrootd/xrootd.log"
    fi
}

if is_true "${CLOUD_PAAS_XROOTD_CONFIG_ONLY:-false}"; then
    mkdir -p "$(dirname "$CONFIG_FILE")"
    render_config > "$CONFIG_FILE"
    exit 0
fi

if is_true "${INSTALL:-true}"; then
    install_xrootd
fi
id -u xrootd > /dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin xrootd
mkdir -p "$(dirname "$CONFIG_FILE")" "$ADMIN"
chown xrootd:xrootd "$ADMIN"
if [ "$ROLE" = origin ]; then
    mkdir -p "$DATA"
    for path in $EXPORTED; do
        mkdir -p "$DATA$path"
    done
    chown xrootd:xrootd "$DATA"
else
    mkdir -p "$CACHE"
    chown -R xrootd:xrootd "$CACHE"
fi
(umask 022 && render_config > "$CONFIG_FILE")
start_xrootd
