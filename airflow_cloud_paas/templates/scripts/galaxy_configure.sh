#!/bin/bash
# Install and start a Galaxy portal on a VM; cloud-init runs it at first boot as the Standard.configure
# operation of cloud_paas.nodes.galaxy.Portal (see airflow_cloud_paas.cloudinit).
#
# Inputs (environment variables, from the TOSCA operation inputs):
#   ADMIN_EMAIL            the admin's e-mail (Galaxy's admin_users)
#   ADMIN_API_KEY          the admin's API key, 16-32 letters, digits, '_' or '-' (a secret)
#   PORT                   the HTTP port Galaxy binds on every address
#   GALAXY_VERSION         the galaxy release installed from PyPI into /opt/galaxy/venv
#   BRAND                  shown in Galaxy's masthead
#   STORAGE_ENCRYPTION     true: Galaxy's data directory is a LUKS volume (the VM's first empty extra disk)
#   ENCRYPTION_PASSPHRASE  the LUKS passphrase (a secret; from a connection, Vault in production)
#   SLURM                  true: Galaxy's jobs go through sbatch (the host is a SLURM controller or client)
#
# Flavours are installed afterwards through Galaxy's API (the cloud_paas Galaxy operators), as on every backend.
# Secrets are never printed nor traced, never on a command line, and unset once used. The LUKS volume is
# unlocked at first boot only: after a reboot, unlock it again with the passphrase (from Vault in production).
#
# With GALAXY_CONFIGURE_ROOT=<dir> the script installs, formats and starts nothing: it writes galaxy.yml, the
# systemd unit, the admin bootstrap script and (with STORAGE_ENCRYPTION) luks-plan.txt, the commands it would
# run, under <dir> instead of /, for tests.
set -euo pipefail
set +x

ROOT="${GALAXY_CONFIGURE_ROOT:-}"
HOME_DIR="$ROOT/opt/galaxy"
DATA_DIR="$ROOT/srv/galaxy"
UNIT="$ROOT/etc/systemd/system/galaxy.service"

fail() {
    echo "galaxy_configure.sh: $*" >&2
    exit 2
}

is_true() {
    case "$(printf '%s' "${1:-}" | tr '[:upper:]' '[:lower:]')" in
        true | yes | 1 | on) return 0 ;;
        *) return 1 ;;
    esac
}

# ------------------------------------------------------------------------------------- inputs
ADMIN_EMAIL="${ADMIN_EMAIL:-admin@example.org}"
[[ "$ADMIN_EMAIL" =~ ^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$ ]] || fail "ADMIN_EMAIL is not an e-mail"
[[ "${ADMIN_API_KEY:-}" =~ ^[A-Za-z0-9_-]{16,32}$ ]] \
    || fail "ADMIN_API_KEY must be 16-32 letters, digits, '_' or '-' (pass a secret admin_api_key input)"
[ "${ADMIN_API_KEY}" != "not_very_secret_api_key" ] || fail "ADMIN_API_KEY is INDIGO's public default key"
PORT="${PORT:-8080}"
[[ "$PORT" =~ ^[0-9]+$ ]] && [ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || fail "PORT '$PORT' is not 1-65535"
[ "$PORT" != 0 ] || PORT=8080
GALAXY_VERSION="${GALAXY_VERSION:-26.1.1}"
[[ "$GALAXY_VERSION" =~ ^[0-9]+(\.[0-9]+)*$ ]] || fail "GALAXY_VERSION '$GALAXY_VERSION' is not a release number"
BRAND="${BRAND:-Galaxy on airflow_cloud_paas}"
if is_true "${STORAGE_ENCRYPTION:-false}"; then
    [ -n "${ENCRYPTION_PASSPHRASE:-}" ] || fail "STORAGE_ENCRYPTION is true but ENCRYPTION_PASSPHRASE is empty"
fi
BOOTSTRAP_KEY="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# ------------------------------------------------------------------------------------- storage
# The data volume: the first disk with no partition, no file system and nothing mounted (the cloud's extra volume).
data_disk() {
    lsblk -dpno NAME,TYPE | while read -r name type; do
        [ "$type" = disk ] || continue
        [ -z "$(lsblk -no FSTYPE "$name" | tr -d '[:space:]')" ] || continue
        [ "$(lsblk -no NAME "$name" | wc -l)" = 1 ] || continue
        echo "$name"
        return
    done
}

if is_true "${STORAGE_ENCRYPTION:-false}"; then
    if [ -n "$ROOT" ]; then
        mkdir -p "$ROOT"
        cat > "$ROOT/luks-plan.txt" << PLAN
apt-get/dnf install cryptsetup
cryptsetup luksFormat --type luks2 --batch-mode --key-file=- <data disk>   (passphrase on stdin)
cryptsetup open --key-file=- <data disk> galaxy-data                       (passphrase on stdin)
mkfs.ext4 -q /dev/mapper/galaxy-data
mount /dev/mapper/galaxy-data /srv/galaxy
PLAN
    else
        command -v cryptsetup > /dev/null || { apt-get install -y -q cryptsetup-bin 2> /dev/null || dnf install -y -q cryptsetup; }
        DISK="$(data_disk)"
        [ -n "$DISK" ] || fail "STORAGE_ENCRYPTION: no empty extra disk to encrypt (attach a volume: storage_size)"
        printf '%s' "$ENCRYPTION_PASSPHRASE" | cryptsetup luksFormat --type luks2 --batch-mode --key-file=- "$DISK"
        printf '%s' "$ENCRYPTION_PASSPHRASE" | cryptsetup open --key-file=- "$DISK" galaxy-data
        mkfs.ext4 -q /dev/mapper/galaxy-data
        mkdir -p "$DATA_DIR"
        mount /dev/mapper/galaxy-data "$DATA_DIR"
    fi
fi
unset ENCRYPTION_PASSPHRASE

# ------------------------------------------------------------------------------------- Galaxy
mkdir -p "$HOME_DIR" "$DATA_DIR" "$(dirname "$UNIT")"
if [ -z "$ROOT" ]; then
    if command -v apt-get > /dev/null; then
        apt-get install -y -q python3-venv python3-dev gcc sqlite3 curl
    else
        dnf install -y -q python3 python3-devel gcc sqlite curl
    fi
    id galaxy > /dev/null 2>&1 || useradd --system --home-dir /opt/galaxy --shell /usr/sbin/nologin galaxy
    python3 -m venv /opt/galaxy/venv
    /opt/galaxy/venv/bin/pip install -q "galaxy==$GALAXY_VERSION"
fi

JOBS_DEFAULT=local
SLURM_RUNNER=""
SLURM_ENVIRONMENT=""
if is_true "${SLURM:-false}"; then
    JOBS_DEFAULT=slurm
    SLURM_RUNNER="    slurm_cli: {load: 'galaxy.jobs.runners.cli:ShellJobRunner', workers: 4}"
    SLURM_ENVIRONMENT="      slurm: {runner: slurm_cli, shell_plugin: LocalShell, job_plugin: Slurm}"
fi
(
    umask 077
    cat > "$HOME_DIR/galaxy.yml" << YAML
# written by galaxy_configure.sh (airflow_cloud_paas); holds the bootstrap admin key
galaxy:
  data_dir: /srv/galaxy
  database_connection: sqlite:////srv/galaxy/universe.sqlite?isolation_level=IMMEDIATE
  file_path: /srv/galaxy/objects
  job_working_directory: /srv/galaxy/jobs
  tool_config_file: /opt/galaxy/tool_conf.xml
  bootstrap_admin_api_key: $BOOTSTRAP_KEY
  admin_users: $ADMIN_EMAIL
  allow_user_creation: false
  require_login: true
  enable_beta_tool_formats: true
  conda_auto_init: false
  brand: '${BRAND//\'/}'
  job_config:
    runners:
      local: {load: 'galaxy.jobs.runners.local:LocalJobRunner', workers: 4}
$SLURM_RUNNER
    execution:
      default: $JOBS_DEFAULT
      environments:
        local: {runner: local}
$SLURM_ENVIRONMENT
    tools:
      - {id: __DATA_FETCH__, environment: local}
YAML
)
printf '<?xml version="1.0"?>\n<toolbox tool_path="/opt/galaxy/tools">\n</toolbox>\n' > "$HOME_DIR/tool_conf.xml"
cat > "$UNIT" << UNIT
[Unit]
Description=Galaxy (airflow_cloud_paas)
After=network-online.target

[Service]
User=galaxy
Environment=VIRTUAL_ENV=/opt/galaxy/venv GALAXY_VIRTUAL_ENV=/opt/galaxy/venv PATH=/opt/galaxy/venv/bin:/usr/bin:/bin
ExecStart=/opt/galaxy/venv/bin/galaxy-web --config /opt/galaxy/galaxy.yml --bind 0.0.0.0:$PORT
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
# the admin's bootstrap: create the admin with the bootstrap key, then make the chosen key the admin's (Galaxy's
# API only makes random keys; INDIGO's galaxycloud role wrote the chosen one into the database, as here)
(
    umask 077
    cat > "$HOME_DIR/bootstrap_admin.py" << 'PY'
import json, os, secrets, sqlite3, sys, time, urllib.request
url, email = sys.argv[1], sys.argv[2]
boot, key = os.environ["BOOTSTRAP_KEY"], sys.stdin.read().strip()
def call(method, path, body=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"x-api-key": boot, "content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as answer:
        return json.load(answer)
for _ in range(300):
    try:
        urllib.request.urlopen(url + "/api/version", timeout=5)
        break
    except OSError:
        time.sleep(2)
users = call("GET", "/api/users?f_email=" + email)
if not users:
    call("POST", "/api/users", {"username": email.split("@")[0][:40], "email": email,
                                "password": secrets.token_urlsafe(24)})
with sqlite3.connect("/srv/galaxy/universe.sqlite", timeout=30) as db:
    uid = db.execute("SELECT id FROM galaxy_user WHERE email = ?", (email,)).fetchone()[0]
    db.execute("UPDATE api_keys SET deleted = 1 WHERE user_id = ?", (uid,))
    db.execute("INSERT INTO api_keys (create_time, user_id, key, deleted) VALUES (datetime('now'), ?, ?, 0)",
               (uid, key))
PY
)
if [ -n "$ROOT" ]; then
    unset ADMIN_API_KEY BOOTSTRAP_KEY
    exit 0
fi
chown -R galaxy: /opt/galaxy /srv/galaxy
systemctl daemon-reload
systemctl enable --now galaxy.service
printf '%s' "$ADMIN_API_KEY" | BOOTSTRAP_KEY="$BOOTSTRAP_KEY" /opt/galaxy/venv/bin/python \
    /opt/galaxy/bootstrap_admin.py "http://127.0.0.1:$PORT" "$ADMIN_EMAIL"
unset ADMIN_API_KEY BOOTSTRAP_KEY
echo "galaxy_configure.sh: Galaxy $GALAXY_VERSION serves on port $PORT"
