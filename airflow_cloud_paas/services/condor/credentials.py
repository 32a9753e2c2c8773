"""Make a pool's secrets once per deployment and keep them in an Airflow connection of type ``htcondor``.

One random pool password is the root secret of a pool. HTCondor uses it two ways:

- as the pool password of ``PASSWORD`` authentication (``condor_store_cred add -c`` stores it,
  scrambled, in ``SEC_PASSWORD_FILE``; :func:`scrambled_password_file` writes the same bytes);
- as the ``POOL`` signing key of IDTOKENS: :func:`create_token` signs a token exactly as
  ``condor_token_create`` does (HS256 with a key derived by HKDF-SHA256 from the password, written
  twice, salt ``htcondor``, info ``master jwt``), so the daemons accept it.

Per deployment, :func:`ensure_pool_connection` stores the password and two tokens (Airflow's own, with
administrator rights, and the execute nodes', limited to what a startd needs) in the connection
``htcondor_<deployment_id>``; :func:`pool_inputs` turns them into the TOSCA inputs of the pool templates.

No value here is ever logged or put in a ``repr`` or an error message. Stdlib only at import time;
Airflow is imported by the functions that store or read a connection.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_cloud_paas.services.condor.config import COLLECTOR_PORT, SECURITY_MODES
from airflow_cloud_paas.services.condor.errors import CondorCredentialError

CONN_TYPE = "htcondor"
#: the key id HTCondor gives the pool password when it signs tokens with it
POOL_KEY_ID = "POOL"
#: what an execute node's token may do (as the official htcondor/execute image documents)
EXECUTE_SCOPES = ("READ", "ADVERTISE_MASTER", "ADVERTISE_STARTD")
_SCRAMBLE = bytes((0xDE, 0xAD, 0xBE, 0xEF))
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def connection_id(deployment_id: str) -> str:
    """Return the Airflow connection id of a deployment's pool: ``htcondor_<deployment_id>``.

    :param deployment_id: the deployment
    """
    conn_id = f"htcondor_{deployment_id}"
    if not deployment_id or not _CONN_ID.match(conn_id):
        raise CondorCredentialError(f"deployment id {deployment_id!r} cannot name a connection (use letters, "
                                    "digits, '.', '_' and '-')", what="deployment_id")
    return conn_id


def default_trust_domain(deployment_id: str) -> str:
    """Return the trust domain of a deployment's pool when none is given: ``<deployment_id>.cloud-paas``.

    :param deployment_id: the deployment
    """
    return f"{deployment_id}.cloud-paas"


def generate_pool_password(nbytes: int = 32) -> str:
    """Return a new random pool password (URL-safe ASCII: no NUL byte, which HTCondor would cut it at).

    :param nbytes: random bytes in it (at least 16)
    """
    if nbytes < 16:
        raise CondorCredentialError("a pool password needs at least 16 random bytes", what="pool password")
    return secrets.token_urlsafe(nbytes)


def _check_password(password: str) -> bytes:
    if not isinstance(password, str) or not password:
        raise CondorCredentialError("the pool password is empty", what="pool password")
    raw = password.encode("utf-8")
    if b"\0" in raw:
        raise CondorCredentialError("the pool password holds a NUL byte, which HTCondor cuts it at",
                                    what="pool password")
    return raw


def scrambled_password_file(password: str) -> bytes:
    """Return the content of a pool password file (``SEC_PASSWORD_FILE``), as ``condor_store_cred`` writes it.

    :param password: the pool password
    """
    raw = _check_password(password)
    scrambled = bytes(b ^ _SCRAMBLE[i % 4] for i, b in enumerate(raw))
    if b"\0" in scrambled:  # HTCondor stops reading at the first NUL: the password would be cut short
        raise CondorCredentialError("the pool password has a byte that scrambles to NUL; generate another one",
                                    what="pool password")
    return scrambled


def signing_key(password: str, key_id: str = POOL_KEY_ID) -> bytes:
    """Return the HMAC key HTCondor derives from a signing key to sign and verify IDTOKENS.

    :param password: the signing key's content (for ``POOL``, the pool password)
    :param key_id: the key's name; ``POOL`` uses the password written twice, as HTCondor does
    """
    raw = _check_password(password)
    material = raw + raw if key_id == POOL_KEY_ID else raw
    # HKDF-SHA256 (RFC 5869) with salt "htcondor" and info "master jwt", 32 bytes: one expand block
    prk = hmac.new(b"htcondor", material, hashlib.sha256).digest()
    return hmac.new(prk, b"master jwt" + b"\x01", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def create_token(
    password: str,
    *,
    identity: str,
    trust_domain: str,
    scopes: Sequence[str] = (),
    lifetime: int | None = None,
    key_id: str = POOL_KEY_ID,
    issued_at: int | None = None,
    token_id: str | None = None,
) -> str:
    """Return an IDTOKEN as ``condor_token_create -identity ... [-authz ...] [-lifetime ...]`` makes it.

    :param password: the signing key (the pool password for ``POOL``)
    :param identity: who the token authenticates as, ``user@domain``
    :param trust_domain: the pool's ``TRUST_DOMAIN``: the token's issuer, which the daemons check
    :param scopes: authorizations the token is limited to (READ, WRITE, ADVERTISE_STARTD...); none: the
        identity's own rights
    :param lifetime: seconds the token is valid; None: no expiry
    :param key_id: the signing key's name
    :param issued_at: the ``iat`` claim (default now)
    :param token_id: the ``jti`` claim (default random)
    """
    if "@" not in identity or any(c.isspace() for c in identity):
        raise CondorCredentialError(f"identity {identity!r} must be user@domain", what="token")
    header = {"alg": "HS256", "kid": key_id, "typ": "JWT"}
    payload: dict[str, Any] = {
        "iat": int(time.time()) if issued_at is None else int(issued_at),
        "iss": trust_domain,
        "jti": token_id or secrets.token_hex(16),
        "sub": identity,
    }
    if scopes:
        payload["scope"] = " ".join(f"condor:/{s.upper()}" for s in scopes)
    if lifetime is not None:
        payload["exp"] = payload["iat"] + int(lifetime)
    signing_input = ".".join(_b64(json.dumps(part, separators=(",", ":"), sort_keys=True).encode())
                             for part in (header, payload))
    signature = hmac.new(signing_key(password, key_id), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def read_token(token: str, password: str | None = None, *, trust_domain: str | None = None,
               now: float | None = None) -> dict[str, Any]:
    """Return a token's claims; given the signing key, check its signature, issuer and expiry as a daemon does.

    :param token: the IDTOKEN
    :param password: the signing key; None: claims are returned unchecked
    :param trust_domain: the issuer the token must have
    :param now: the time to check ``exp`` against (default now)
    """
    try:
        head, body, signature = token.strip().split(".")
        header, payload = json.loads(_unb64(head)), json.loads(_unb64(body))
    except (ValueError, AttributeError) as err:  # never echo the token itself
        raise CondorCredentialError("not a JWT (header.payload.signature)", what="token") from err
    if password is not None:
        key = signing_key(password, str(header.get("kid") or ""))
        expected = hmac.new(key, f"{head}.{body}".encode("ascii"), hashlib.sha256).digest()
        if header.get("alg") != "HS256" or not hmac.compare_digest(expected, _unb64(signature)):
            raise CondorCredentialError("signature does not match the signing key", what="token")
    if trust_domain is not None and payload.get("iss") != trust_domain:
        raise CondorCredentialError(f"issuer {payload.get('iss')!r} is not the pool's trust domain "
                                    f"{trust_domain!r}", what="token")
    if "exp" in payload and (time.time() if now is None else now) > payload["exp"]:
        raise CondorCredentialError("the token has expired", what="token")
    return {"header": header, **payload}


@dataclass(frozen=True)
class PoolCredentials:
    """A pool's secrets and the names they are valid for (secrets are kept out of ``repr``).

    :param trust_domain: the pool's ``TRUST_DOMAIN``
    :param security_mode: ``idtokens`` or ``password``
    :param pool_password: the pool password, also the ``POOL`` signing key
    :param token: Airflow's IDTOKEN (identity ``<admin_user>@<trust_domain>``)
    :param execute_token: the execute nodes' IDTOKEN (``condor@<trust_domain>``, :data:`EXECUTE_SCOPES`)
    :param admin_user: the user part of Airflow's identity
    """

    trust_domain: str
    security_mode: str
    pool_password: str = field(repr=False)
    token: str = field(repr=False)
    execute_token: str = field(repr=False)
    admin_user: str = "airflow"

    @property
    def identity(self) -> str:
        """Return Airflow's identity in the pool."""
        return f"{self.admin_user}@{self.trust_domain}"

    @property
    def execute_secret(self) -> str:
        """Return what execute nodes hold: their token (``idtokens``) or the pool password (``password``)."""
        return self.execute_token if self.security_mode == "idtokens" else self.pool_password

    def secret_values(self) -> tuple[str, ...]:
        """Return every secret value, for a log masker."""
        return (self.pool_password, self.token, self.execute_token)


def generate_pool_credentials(
    deployment_id: str,
    *,
    security_mode: str = "idtokens",
    trust_domain: str | None = None,
    admin_user: str = "airflow",
    password: str | None = None,
) -> PoolCredentials:
    """Return new credentials for a deployment's pool: a random password and the tokens signed with it.

    :param deployment_id: the deployment (names the default trust domain)
    :param security_mode: ``idtokens`` or ``password``
    :param trust_domain: the pool's ``TRUST_DOMAIN`` (default ``<deployment_id>.cloud-paas``)
    :param admin_user: the user part of Airflow's identity
    :param password: use this pool password instead of a random one
    """
    if security_mode not in SECURITY_MODES:
        raise CondorCredentialError(f"security_mode {security_mode!r} is not one of {', '.join(SECURITY_MODES)}",
                                    what="security_mode")
    domain = trust_domain or default_trust_domain(deployment_id)
    secret = password if password is not None else generate_pool_password()
    scrambled_password_file(secret)  # refuse a password HTCondor would read back differently
    return PoolCredentials(
        trust_domain=domain,
        security_mode=security_mode,
        pool_password=secret,
        token=create_token(secret, identity=f"{admin_user}@{domain}", trust_domain=domain),
        execute_token=create_token(secret, identity=f"condor@{domain}", trust_domain=domain, scopes=EXECUTE_SCOPES),
        admin_user=admin_user,
    )


def pool_inputs(credentials: PoolCredentials, only: Iterable[str] | None = None) -> dict[str, Any]:
    """Return the TOSCA inputs of the pool templates that carry the pool's security.

    :param credentials: the pool's credentials
    :param only: keep these input names (e.g. ``topology.inputs``: the container template has no
        ``trust_domain`` or ``admin_user`` input, its configurations carry them)
    """
    inputs = {
        "security_mode": credentials.security_mode,
        "trust_domain": credentials.trust_domain,
        "admin_user": credentials.admin_user,
        "pool_password": credentials.pool_password,
        "execute_secret": credentials.execute_secret,
    }
    if only is not None:
        wanted = set(only)
        inputs = {k: v for k, v in inputs.items() if k in wanted}
    return inputs


def credentials_from_connection(conn: Any) -> PoolCredentials:
    """Return the credentials kept in an ``htcondor`` connection (an Airflow ``Connection`` or alike).

    :param conn: an object with ``conn_id``, ``password`` and ``extra_dejson`` (or ``extra``)
    """
    extra = connection_extra(conn)
    where = f"connection {getattr(conn, 'conn_id', '?')}"
    missing = [k for k in ("trust_domain", "token", "execute_token") if not extra.get(k)]
    if not conn.password or missing:
        raise CondorCredentialError(
            f"holds no pool credentials (missing: {', '.join((['password'] if not conn.password else []) + missing)});"
            " create it with airflow_cloud_paas.services.condor.credentials.ensure_pool_connection", what=where)
    return PoolCredentials(
        trust_domain=extra["trust_domain"],
        security_mode=extra.get("security_mode", "idtokens"),
        pool_password=conn.password,
        token=extra["token"],
        execute_token=extra["execute_token"],
        admin_user=extra.get("admin_user", "airflow"),
    )


def mask_credentials(credentials: PoolCredentials) -> None:
    """Register a pool's secrets with Airflow's log masker (if Airflow is there), so logs print ``***``.

    :param credentials: the pool's credentials
    """
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # the CLI without Airflow: nothing logs these values anyway
        return
    for value in credentials.secret_values():
        mask_secret(value)


def ensure_pool_connection(
    deployment_id: str,
    collector_host: str | None = None,
    *,
    security_mode: str = "idtokens",
    trust_domain: str | None = None,
    schedd_name: str | None = None,
    admin_user: str = "airflow",
    session: Any = None,
) -> str:
    """Create the deployment's ``htcondor`` connection once, with new credentials; return its id.

    Idempotent: an existing connection keeps its credentials (a retried task never changes a pool's
    secrets); only the collector address and the schedd name are updated when given. Writes the
    Airflow metadata database (``airflow.models.Connection``), so it runs where the ORM is allowed (the
    CLI, the scheduler, ``dag.test()``), not inside an Airflow 3 worker task.

    :param deployment_id: the deployment
    :param collector_host: the collector's address (``host`` or ``host:port``), once known
    :param security_mode: ``idtokens`` or ``password`` (for a new connection)
    :param trust_domain: the pool's trust domain (for a new connection; default ``<deployment_id>.cloud-paas``)
    :param schedd_name: the schedd to submit to, when the pool has several
    :param admin_user: the user part of Airflow's identity (for a new connection)
    :param session: an SQLAlchemy session of the metadata database (default: a new one)
    """
    conn_id = connection_id(deployment_id)
    from airflow.models import Connection

    def apply(db) -> PoolCredentials:
        conn = db.query(Connection).filter(Connection.conn_id == conn_id).one_or_none()
        if conn is None:
            credentials = generate_pool_credentials(deployment_id, security_mode=security_mode,
                                                    trust_domain=trust_domain, admin_user=admin_user)
            conn = Connection(conn_id=conn_id, conn_type=CONN_TYPE,
                              description=f"HTCondor pool of Cloud PaaS deployment {deployment_id}",
                              password=credentials.pool_password)
            extra: dict[str, Any] = {
                "deployment_id": deployment_id,
                "trust_domain": credentials.trust_domain,
                "security_mode": credentials.security_mode,
                "admin_user": credentials.admin_user,
                "token": credentials.token,
                "execute_token": credentials.execute_token,
            }
            db.add(conn)
        else:
            if conn.conn_type != CONN_TYPE:
                raise CondorCredentialError(f"exists with type {conn.conn_type!r}, not {CONN_TYPE!r}; delete it or "
                                            "use another deployment id", what=f"connection {conn_id}")
            credentials = credentials_from_connection(conn)
            extra = dict(conn.extra_dejson)
        if collector_host:
            host, _, port = collector_host.rpartition(":") if re.fullmatch(r"[^:]+:\d+", collector_host) else (
                collector_host, "", "")
            conn.host, conn.port = host, int(port) if port else COLLECTOR_PORT
        if schedd_name:
            extra["schedd_name"] = schedd_name
        conn.extra = json.dumps(extra, sort_keys=True)
        return credentials

    try:
        if session is not None:
            credentials = apply(session)
            session.flush()
        else:
            from airflow.utils.session import create_session

            with create_session() as db:
                credentials = apply(db)
    except RuntimeError as err:
        if "database access" not in str(err).lower():
            raise
        raise CondorCredentialError(
            "cannot be written from inside an Airflow 3 task (no ORM access there): call "
            "ensure_pool_connection from the CLI or the DAG file's process, or define the connection in a "
            "secrets backend", what=f"connection {conn_id}") from err
    mask_credentials(credentials)
    return conn_id


def read_pool_connection(conn_id: str, session: Any = None) -> PoolCredentials:
    """Return the credentials of an ``htcondor`` connection read from the metadata database.

    :param conn_id: the connection id
    :param session: an SQLAlchemy session of the metadata database (default: a new one)
    """
    from airflow.models import Connection

    def read(db) -> PoolCredentials:
        conn = db.query(Connection).filter(Connection.conn_id == conn_id).one_or_none()
        if conn is None:
            raise CondorCredentialError("does not exist; create it with ensure_pool_connection",
                                        what=f"connection {conn_id}")
        return credentials_from_connection(conn)

    if session is not None:
        credentials = read(session)
    else:
        from airflow.utils.session import create_session

        with create_session() as db:
            credentials = read(db)
    mask_credentials(credentials)
    return credentials


def connection_extra(conn: Any) -> Mapping[str, Any]:
    """Return the extra fields of a connection as a mapping.

    :param conn: an Airflow connection
    """
    extra = getattr(conn, "extra_dejson", None)
    return extra if extra is not None else json.loads(getattr(conn, "extra", None) or "{}")
