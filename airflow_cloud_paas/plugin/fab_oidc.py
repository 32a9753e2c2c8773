"""The Airflow UI's own login through an OpenID Connect provider: FAB's auth manager with OAuth, for any provider.

An operator's ``$AIRFLOW_HOME/webserver_config.py`` (``[fab] config_file``) needs one line::

    from airflow_cloud_paas.plugin.fab_webserver_config import *  # noqa: F403

with ``[core] auth_manager = airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager`` and these
environment variables (the first and the groups/admin ones are those :mod:`.access` reads for the APIs' tokens):

* ``AIRFLOW_CLOUD_PAAS_OIDC_ISSUER``: the provider's issuer URL; its endpoints and keys come from
  ``<issuer>/.well-known/openid-configuration`` (discovery);
* ``AIRFLOW_CLOUD_PAAS_OIDC_UI_CLIENT_ID`` / ``..._UI_CLIENT_SECRET``: a confidential client of the provider
  (authorization code flow) whose redirect URI is ``<Airflow URL>/auth/oauth-authorized/<provider name>``;
* optional: ``..._UI_PROVIDER_NAME`` (``oidc``), ``..._UI_SCOPE`` (``openid profile email groups``),
  ``..._GROUPS_CLAIM`` (``groups``), ``..._ADMIN_GROUP`` (none), ``..._UI_USERNAME_CLAIM`` (``sub``, the
  name the APIs give token holders, so both own the same deployments), ``..._UI_DEFAULT_ROLE`` (``User``),
  ``..._UI_ADMIN_ROLE`` (``Admin``).

The ID token is verified by authlib (FAB's OAuth client): signature against the provider's JWKS, issuer,
audience (the client id), expiry, nonce and ``at_hash`` when present; its claims are the user's. Users are
registered at their first login; at every login their roles are set again from the groups claim: the admin group's
members get the admin role, everyone else the default role, and each group ``g`` a role ``group:g`` with no
permission, which tells the plugin (:func:`.access.fab_groups`) the user's groups. The default role may also read
Airflow's plugin list (FAB gives that to Op and Admin only), or the UI would not show the portal to its users.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_cloud_paas.plugin.access import ENV_PREFIX, GROUP_ROLE_PREFIX

log = logging.getLogger(__name__)

#: FAB's role names are at most this long (``ab_role.name``)
ROLE_NAME_MAX = 64

@dataclass(frozen=True)
class UiOidcSettings:
    """Which provider the UI logs in through, and how its claims become a FAB user and roles.

    :param issuer: the provider's issuer URL (discovery at ``<issuer>/.well-known/openid-configuration``)
    :param client_id: the UI's client at the provider
    :param client_secret: its secret
    :param provider_name: FAB's name for the provider (in the callback URL ``/auth/oauth-authorized/<name>``)
    :param scope: the scopes asked for
    :param groups_claim: the ID token's claim listing the user's groups
    :param admin_group: the group whose members get ``admin_role`` (None: nobody by group)
    :param username_claim: the claim that becomes the FAB user name
    :param default_role: the role of every user not in the admin group
    :param admin_role: the role of the admin group's members
    """

    issuer: str
    client_id: str
    client_secret: str
    provider_name: str = "oidc"
    scope: str = "openid profile email groups"
    groups_claim: str = "groups"
    admin_group: str | None = None
    username_claim: str = "sub"
    default_role: str = "User"
    admin_role: str = "Admin"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> UiOidcSettings:
        """Return the settings from ``AIRFLOW_CLOUD_PAAS_OIDC_*``; raise ValueError naming what is missing.

        :param environ: the environment (default ``os.environ``)
        """
        environ = os.environ if environ is None else environ

        def pick(name: str) -> str | None:
            value = (environ.get(f"{ENV_PREFIX}{name}") or "").strip()
            return value or None

        required = {"ISSUER": pick("ISSUER"), "UI_CLIENT_ID": pick("UI_CLIENT_ID"),
                    "UI_CLIENT_SECRET": pick("UI_CLIENT_SECRET")}
        missing = [f"{ENV_PREFIX}{k}" for k, v in required.items() if v is None]
        if missing:
            raise ValueError(f"the Airflow UI's OIDC login needs {', '.join(missing)} (see "
                             "airflow_cloud_paas.plugin.fab_oidc)")
        defaults = cls.__dataclass_fields__
        return cls(
            issuer=required["ISSUER"].rstrip("/"),
            client_id=required["UI_CLIENT_ID"],
            client_secret=required["UI_CLIENT_SECRET"],
            provider_name=pick("UI_PROVIDER_NAME") or defaults["provider_name"].default,
            scope=pick("UI_SCOPE") or defaults["scope"].default,
            groups_claim=pick("GROUPS_CLAIM") or defaults["groups_claim"].default,
            admin_group=pick("ADMIN_GROUP"),
            username_claim=pick("UI_USERNAME_CLAIM") or defaults["username_claim"].default,
            default_role=pick("UI_DEFAULT_ROLE") or defaults["default_role"].default,
            admin_role=pick("UI_ADMIN_ROLE") or defaults["admin_role"].default,
        )

    @property
    def metadata_url(self) -> str:
        """Return the provider's discovery document URL."""
        return f"{self.issuer}/.well-known/openid-configuration"

    def oauth_provider(self) -> dict[str, Any]:
        """Return the ``OAUTH_PROVIDERS`` entry: authlib finds the endpoints and keys through discovery."""
        return {
            "name": self.provider_name,
            "icon": "fa-openid",
            "token_key": "access_token",
            "remote_app": {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "server_metadata_url": self.metadata_url,
                # PKCE on top of the client secret; authlib adds the nonce (openid scope) and checks it
                "client_kwargs": {"scope": self.scope, "code_challenge_method": "S256"},
            },
        }


def groups_of(claims: Mapping[str, Any], groups_claim: str) -> list[str]:
    """Return the groups a set of claims lists (a list, or one string), in order, without duplicates.

    :param claims: the ID token's claims
    :param groups_claim: the claim's name
    """
    groups = claims.get(groups_claim) or []
    if isinstance(groups, str):
        groups = [groups]
    return list(dict.fromkeys(str(g) for g in groups if str(g)))


def user_info(claims: Mapping[str, Any], settings: UiOidcSettings) -> dict[str, Any]:
    """Return FAB's user info (``username``, names, ``email``, ``role_keys`` = the groups) from verified claims.

    :param claims: the ID token's claims, verified
    :param settings: which claims to read
    """
    username = claims.get(settings.username_claim)
    if not username:
        raise ValueError(f"the ID token has no '{settings.username_claim}' claim (the user name)")
    first, last = claims.get("given_name") or "", claims.get("family_name") or ""
    if not (first or last) and claims.get("name"):
        first, _, last = str(claims["name"]).partition(" ")
    return {
        "username": str(username),
        "first_name": first or str(username),
        "last_name": last or "-",
        "email": claims.get("email") or "",
        "role_keys": groups_of(claims, settings.groups_claim),
    }


def role_names(groups: Iterable[str], settings: UiOidcSettings) -> list[str]:
    """Return the FAB role names of a user in ``groups``: the admin or default role, then one ``group:<g>`` each.

    Groups whose role name would not fit FAB's role names (64 characters) are left out, with a warning.

    :param groups: the user's groups
    :param settings: the admin group and the roles
    """
    groups = list(groups)
    names = [settings.admin_role if settings.admin_group and settings.admin_group in groups else settings.default_role]
    for group in groups:
        name = f"{GROUP_ROLE_PREFIX}{group}"
        if len(name) > ROLE_NAME_MAX:
            log.warning("group %r left out of the user's roles: the role name is over %d characters", group,
                        ROLE_NAME_MAX)
            continue
        names.append(name)
    return list(dict.fromkeys(names))


def security_manager_class(settings: UiOidcSettings) -> type:
    """Return a FAB security manager class (``SECURITY_MANAGER_CLASS``) for the provider of ``settings``."""
    from airflow.providers.fab.auth_manager.security_manager.override import FabAirflowSecurityManagerOverride
    from airflow.providers.fab.auth_manager.views.auth_oauth import CustomAuthOAuthView
    from flask import redirect, request, session, url_for
    from flask_appbuilder import expose

    class OneProviderAuthOAuthView(CustomAuthOAuthView):
        """The UI's way to the login page goes straight on to the provider (the only one).

        Only when the UI sends the browser there for a page (``?next=``) and there is no message to show (a refused
        login): after a logout the page stays, with its sign-in button, or the provider's own session would log
        the user straight back in.
        """

        @expose("/login/")
        @expose("/login/<provider>")
        def login(self, provider: str | None = None):
            providers = self.appbuilder.sm.oauth_providers
            next_url = request.args.get("next")
            if provider is None and len(providers) == 1 and next_url and not session.get("_flashes"):
                return redirect(url_for(".login", provider=providers[0]["name"], next=next_url))
            return super().login(provider)

    class CloudPaaSOidcSecurityManager(FabAirflowSecurityManagerOverride):
        """FAB's security manager for a generic OIDC provider: users from the verified ID token, roles from groups."""

        authoauthview = OneProviderAuthOAuthView
        oidc = settings

        def get_oauth_user_info(self, provider: str, resp: dict[str, Any]) -> dict[str, Any]:
            if provider != self.oidc.provider_name:
                return super().get_oauth_user_info(provider, resp)
            # authlib's authorize_access_token() verified the ID token (keys from discovery, iss, aud, exp,
            # nonce, at_hash) and put its claims here; without them nobody logs in
            claims = resp.get("userinfo")
            if not claims:
                raise ValueError(f"the provider {self.oidc.issuer} returned no verifiable ID token (scope "
                                 f"{self.oidc.scope!r} must include openid)")
            info = user_info(claims, self.oidc)
            log.info("OIDC login of %s, groups %s", info["username"], info["role_keys"])
            return info

        def sync_roles(self) -> None:
            """FAB's roles, and the default role may read Plugins: the Airflow UI finds the portal (a plugin's page)
            through ``/api/v2/plugins``, which FAB opens only to the Op and Admin roles."""
            from airflow.providers.fab.www.security.permissions import ACTION_CAN_READ, RESOURCE_PLUGIN

            super().sync_roles()
            if self.find_role(self.oidc.default_role) is not None:
                self.bulk_sync_roles([{"role": self.oidc.default_role, "perms": [(ACTION_CAN_READ, RESOURCE_PLUGIN)]}])

        def _oauth_calculate_user_roles(self, userinfo: dict[str, Any]) -> list[Any]:
            roles = {}
            for name in role_names(userinfo.get("role_keys", []), self.oidc):
                role = self.find_role(name)
                if role is None and name.startswith(GROUP_ROLE_PREFIX):
                    role = self.add_role(name)  # no permission: it only records the group
                if role is None:
                    log.warning("role %r does not exist: not given to %s", name, userinfo.get("username"))
                    continue
                roles[role.name] = role
            if self.auth_roles_mapping:  # an operator's own AUTH_ROLES_MAPPING still applies
                for role in self.get_roles_from_keys(userinfo.get("role_keys", [])):
                    roles.setdefault(role.name, role)
            return list(roles.values())

    return CloudPaaSOidcSecurityManager


def webserver_config(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Return FAB's configuration (``webserver_config.py`` names) for a login through the provider of ``environ``.

    :param environ: the environment with the ``AIRFLOW_CLOUD_PAAS_OIDC_*`` variables (default ``os.environ``)
    :raises ValueError: the issuer or the UI client is not set
    """
    from flask_appbuilder.const import AUTH_OAUTH

    settings = UiOidcSettings.from_env(environ)
    return {
        "AUTH_TYPE": AUTH_OAUTH,
        "OAUTH_PROVIDERS": [settings.oauth_provider()],
        "SECURITY_MANAGER_CLASS": security_manager_class(settings),
        # users are registered at their first login, and their roles set again from their groups at each one
        "AUTH_USER_REGISTRATION": True,
        "AUTH_USER_REGISTRATION_ROLE": settings.default_role,
        "AUTH_ROLES_SYNC_AT_LOGIN": True,
    }
