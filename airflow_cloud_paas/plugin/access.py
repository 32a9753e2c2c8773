"""Who calls the plugin's APIs, and what they may act on.

Two kinds of callers are accepted:

* a Bearer access token (a JWT, RFC 9068) from the OpenID Connect provider configured by ``oidc_issuer`` /
  ``oidc_audience`` (the ``cloud_paas_default`` connection's extras, or the environment variables
  ``AIRFLOW_CLOUD_PAAS_OIDC_ISSUER`` / ``..._AUDIENCE`` / ``..._GROUPS_CLAIM`` / ``..._ADMIN_GROUP``, which win).
  Its issuer, audience, signature (the issuer's JWKS, found through its ``.well-known/openid-configuration``),
  expiry and groups claim are checked by authlib's RFC 9068 validator;
* Airflow's own login: the UI session cookie or a JWT from ``/auth/token``, for users the auth manager lets
  read DAGs (what the plugin required before). Users it lets edit connections are the PaaS admins. With FAB's
  auth manager, a user's roles named ``group:<g>`` are their groups (the UI's OIDC login gives them, see
  :mod:`.fab_oidc`).

Every refusal is a 401 (403 for an Airflow user without DAG access) that says why; nothing else happens.
A user acts on the deployments they own, on those whose ``user_group`` is one of their groups, and, as an admin,
on all (:func:`may_act`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

log = logging.getLogger(__name__)

#: environment variables that configure the OIDC provider (they win over the connection's extras)
ENV_PREFIX = "AIRFLOW_CLOUD_PAAS_OIDC_"
#: seconds the provider's metadata and keys, and the configuration, are reused before being read again
JWKS_TTL_S = 300.0
#: seconds one fetch of the provider's metadata or keys may take
FETCH_TIMEOUT_S = 5.0
#: an Airflow (FAB) user's role named ``group:<g>`` says they belong to the group ``g``
GROUP_ROLE_PREFIX = "group:"

_bearer = HTTPBearer(auto_error=False, description="An access token of the OIDC provider, or an Airflow JWT")


@dataclass(frozen=True)
class Identity:
    """The authenticated caller.

    :param name: the owner name deployments record: the token's ``sub``, or the Airflow user name
    :param groups: the groups the caller belongs to (the token's groups claim; for Airflow users, their FAB roles
        ``group:<g>``)
    :param admin: sees and acts on every deployment
    :param source: ``oidc`` or ``airflow``
    """

    name: str
    groups: frozenset[str] = frozenset()
    admin: bool = False
    source: str = "oidc"


def may_act(identity: Identity, record: Any) -> bool:
    """Return whether ``identity`` may see and change ``record``: its own, its groups', or any for an admin.

    :param identity: the caller
    :param record: a :class:`~airflow_cloud_paas.store.DeploymentRecord` (or anything with owner/user_group)
    """
    if identity.admin:
        return True
    if record.owner is not None and record.owner == identity.name:
        return True
    group = getattr(record, "user_group", None)
    return group is not None and group in identity.groups


@dataclass(frozen=True)
class OidcSettings:
    """Which OpenID Connect provider's tokens the API accepts.

    :param issuer: the provider's issuer URL (exactly as in its tokens' ``iss``)
    :param audience: the audience (resource) the tokens must be for
    :param groups_claim: the claim that lists the user's groups
    :param admin_group: members of this group are PaaS admins (None: no admin by group)
    :param jwks_ttl_s: seconds the provider's keys are reused
    :param fetch_timeout_s: seconds one fetch from the provider may take
    """

    issuer: str
    audience: str
    groups_claim: str = "groups"
    admin_group: str | None = None
    jwks_ttl_s: float = JWKS_TTL_S
    fetch_timeout_s: float = FETCH_TIMEOUT_S

    @classmethod
    def load(cls, extras: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> OidcSettings | None:
        """Return the settings from the environment, else the connection's extras; None when no issuer is set.

        :param extras: the ``cloud_paas_default`` connection's extras (``oidc_issuer``, ``oidc_audience``,
            ``oidc_groups_claim``, ``oidc_admin_group``)
        :param environ: the environment (default ``os.environ``)
        """
        environ = os.environ if environ is None else environ
        extras = extras or {}

        def pick(name: str) -> str | None:
            value = environ.get(f"{ENV_PREFIX}{name.upper()}") or extras.get(f"oidc_{name}")
            return str(value).strip() or None if value is not None else None

        issuer = pick("issuer")
        if issuer is None:
            return None
        audience = pick("audience")
        if audience is None:
            raise ValueError(f"the OIDC issuer {issuer} is set but no audience: set {ENV_PREFIX}AUDIENCE or the "
                             "oidc_audience extra of the cloud_paas_default connection (the API's resource identifier)")
        return cls(issuer=issuer.rstrip("/"), audience=audience, groups_claim=pick("groups_claim") or "groups",
                   admin_group=pick("admin_group"))


def _fetch_json(url: str, timeout: float) -> dict[str, Any]:
    import requests

    resp = requests.get(url, timeout=timeout)
    resp.raise_for_status()
    return resp.json()


class OidcVerifier:
    """Check access tokens of one provider; its keys are fetched through discovery and cached for a bounded time.

    :param settings: the provider and what its tokens must carry
    """

    def __init__(self, settings: OidcSettings) -> None:
        self.settings = settings
        self._jwks: dict[str, Any] | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def jwks(self, refresh: bool = False) -> dict[str, Any]:
        """Return the provider's key set (JWKS), fetched again once it is older than the TTL.

        :param refresh: fetch it now (a token signed by a key not in the cached set: the provider rotated)
        """
        with self._lock:
            fresh = time.monotonic() - self._fetched_at < self.settings.jwks_ttl_s
            if self._jwks is not None and fresh and not refresh:
                return self._jwks
            timeout = self.settings.fetch_timeout_s
            where = f"{self.settings.issuer}/.well-known/openid-configuration"
            try:
                jwks_uri = _fetch_json(where, timeout)["jwks_uri"]
                self._jwks = _fetch_json(jwks_uri, timeout)
            except Exception as err:  # any failure to reach the provider: refuse the token, say why
                raise HTTPException(401, f"cannot check the token: the OIDC provider's keys could not be read from "
                                         f"{where} ({type(err).__name__})") from None
            self._fetched_at = time.monotonic()
            return self._jwks

    def identity(self, token: str) -> Identity:
        """Return the identity a valid token carries; raise a 401 HTTPException that says why it is not valid.

        :param token: the Bearer token
        """
        from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
        from joserfc.errors import BadSignatureError, ExpiredTokenError, InvalidClaimError, MissingClaimError

        verifier = self

        class _Validator(JWTBearerTokenValidator):
            def get_jwks(self) -> Any:
                from joserfc.jwk import KeySet  # authlib's own JOSE backend

                return KeySet.import_key_set(verifier.jwks())

        validator = _Validator(issuer=self.settings.issuer, resource_server=self.settings.audience)
        try:
            try:
                claims = validator.authenticate_token(token)
            except Exception:
                # maybe signed by a key the provider added since the keys were cached: read them again, once
                if self._fetched_at and time.monotonic() - self._fetched_at > 10:
                    self.jwks(refresh=True)
                    claims = validator.authenticate_token(token)
                else:
                    raise
            validator.validate_token(claims, scopes=None, request=None)
        except HTTPException:
            raise
        except Exception as err:
            cause = err.__cause__ or err
            if isinstance(cause, ExpiredTokenError):
                why = "the token has expired"
            elif isinstance(cause, InvalidClaimError) and "iss" in str(cause):
                why = f"the token was not issued by {self.settings.issuer}"
            elif isinstance(cause, InvalidClaimError) and "aud" in str(cause):
                why = f"the token is not for this API (audience {self.settings.audience})"
            elif isinstance(cause, MissingClaimError):
                why = f"the token lacks a required claim ({cause.description or cause})"
            elif isinstance(cause, BadSignatureError | ValueError):
                why = f"the token's signature does not match the keys of {self.settings.issuer}"
            else:
                why = f"the token is not a valid access token of {self.settings.issuer} ({type(cause).__name__})"
            raise HTTPException(401, why, headers={"WWW-Authenticate": "Bearer"}) from None
        groups = claims.get(self.settings.groups_claim)
        if groups is None:
            raise HTTPException(401, f"the token has no '{self.settings.groups_claim}' claim (the user's groups)",
                                headers={"WWW-Authenticate": "Bearer"})
        if isinstance(groups, str):
            groups = [groups]
        group_set = frozenset(str(g) for g in groups)
        admin = self.settings.admin_group is not None and self.settings.admin_group in group_set
        return Identity(name=str(claims["sub"]), groups=group_set, admin=admin, source="oidc")


@dataclass
class _Configured:
    settings: OidcSettings | None = None
    verifier: OidcVerifier | None = None
    read_at: float = -1e9
    lock: threading.Lock = field(default_factory=threading.Lock)


_configured = _Configured()


def _connection_extras() -> dict[str, Any]:
    try:
        from airflow_cloud_paas.hooks.store import CloudPaaSStoreHook

        return CloudPaaSStoreHook().extras
    except Exception as err:  # no connection defined: the environment alone configures OIDC
        log.debug("cloud_paas_default connection not read (%s): OIDC from the environment only", err)
        return {}


def oidc_verifier() -> OidcVerifier | None:
    """Return the configured provider's verifier (configuration read again after the TTL), None without one."""
    with _configured.lock:
        if time.monotonic() - _configured.read_at > JWKS_TTL_S:
            settings = OidcSettings.load(_connection_extras())
            if settings != _configured.settings:
                _configured.settings = settings
                _configured.verifier = OidcVerifier(settings) if settings is not None else None
            _configured.read_at = time.monotonic()
        return _configured.verifier


def fab_groups(user: Any) -> frozenset[str]:
    """Return the groups of an Airflow user: their roles named ``group:<g>`` (FAB's users; none for others).

    :param user: the auth manager's user (FAB's has ``roles``, each with a ``name``)
    """
    roles = getattr(user, "roles", None) or ()
    names = (str(getattr(role, "name", "") or "") for role in roles)
    return frozenset(n[len(GROUP_ROLE_PREFIX):] for n in names if n.startswith(GROUP_ROLE_PREFIX) and
                     len(n) > len(GROUP_ROLE_PREFIX))


def _airflow_identity(user: Any) -> Identity:
    """Return an Airflow user's identity if the auth manager lets them read DAGs (403 otherwise)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    manager = get_auth_manager()
    if not manager.is_authorized_dag(method="GET", details=DagDetails(id=None), user=user):
        raise HTTPException(403, "Forbidden: this Airflow user may not read DAGs")
    admin = bool(manager.is_authorized_connection(method="PUT", user=user))
    return Identity(name=str(user.get_name()), groups=fab_groups(user), admin=admin, source="airflow")


async def current_identity(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Identity:
    """FastAPI dependency: return the caller's :class:`Identity`, or answer 401 saying why not.

    :param request: the request
    :param credentials: its ``Authorization: Bearer`` token, if any
    """
    from airflow.api_fastapi.core_api import security
    from starlette.concurrency import run_in_threadpool

    if credentials is None or credentials.scheme.lower() != "bearer":
        try:  # the Airflow UI's session cookie
            user = await security.get_user(request, None, None)
        except HTTPException as err:
            raise HTTPException(401, "not authenticated: send an access token of the OIDC provider (Authorization: "
                                     f"Bearer ...), or log in to Airflow ({err.detail})") from None
        return await run_in_threadpool(_airflow_identity, user)
    token = credentials.credentials
    try:
        user = await security.resolve_user_from_token(token)
    except HTTPException:
        user = None  # not an Airflow token: the OIDC provider's, or no good
    if user is not None:
        return await run_in_threadpool(_airflow_identity, user)
    verifier = await run_in_threadpool(oidc_verifier)
    if verifier is None:
        raise HTTPException(401, "invalid token: not an Airflow API token, and no OIDC provider is configured "
                                 f"({ENV_PREFIX}ISSUER or the oidc_issuer extra)",
                            headers={"WWW-Authenticate": "Bearer"})
    return await run_in_threadpool(verifier.identity, token)
