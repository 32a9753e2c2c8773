"""fab_oidc.py: the Airflow UI's OIDC login settings, claims to FAB user info, groups to roles, ID token checks.

The browser login itself runs for real in tests/integration/portal/test_ui_oidc_login.py.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from unit.plugin.issuer import serving_issuer

from airflow_cloud_paas.plugin.access import fab_groups
from airflow_cloud_paas.plugin.fab_oidc import UiOidcSettings, role_names, user_info

ENV = {
    "AIRFLOW_CLOUD_PAAS_OIDC_ISSUER": "https://idp.example.org/realms/paas/",
    "AIRFLOW_CLOUD_PAAS_OIDC_UI_CLIENT_ID": "airflow-ui",
    "AIRFLOW_CLOUD_PAAS_OIDC_UI_CLIENT_SECRET": "s3cret",
    "AIRFLOW_CLOUD_PAAS_OIDC_ADMIN_GROUP": "paas-admins",
}


def _settings(**overrides) -> UiOidcSettings:
    return UiOidcSettings.from_env({**ENV, **overrides})


def test_settings_come_from_the_environment_with_defaults():
    s = _settings()
    assert (s.issuer, s.client_id, s.client_secret, s.admin_group) == (
        "https://idp.example.org/realms/paas", "airflow-ui", "s3cret", "paas-admins")
    assert (s.provider_name, s.groups_claim, s.username_claim, s.default_role, s.admin_role) == (
        "oidc", "groups", "sub", "User", "Admin")
    assert s.metadata_url == "https://idp.example.org/realms/paas/.well-known/openid-configuration"
    custom = _settings(AIRFLOW_CLOUD_PAAS_OIDC_UI_USERNAME_CLAIM="preferred_username",
                       AIRFLOW_CLOUD_PAAS_OIDC_GROUPS_CLAIM="entitlements",
                       AIRFLOW_CLOUD_PAAS_OIDC_UI_DEFAULT_ROLE="Viewer",
                       AIRFLOW_CLOUD_PAAS_OIDC_UI_PROVIDER_NAME="egi")
    assert (custom.username_claim, custom.groups_claim, custom.default_role, custom.provider_name) == (
        "preferred_username", "entitlements", "Viewer", "egi")


def test_missing_settings_are_named():
    with pytest.raises(ValueError, match="AIRFLOW_CLOUD_PAAS_OIDC_UI_CLIENT_ID, AIRFLOW_CLOUD_PAAS_OIDC_UI_CLIENT_SEC"):
        UiOidcSettings.from_env({"AIRFLOW_CLOUD_PAAS_OIDC_ISSUER": "https://idp"})
    with pytest.raises(ValueError, match="AIRFLOW_CLOUD_PAAS_OIDC_ISSUER"):
        UiOidcSettings.from_env({k: v for k, v in ENV.items() if "ISSUER" not in k})


def test_the_oauth_provider_is_found_by_discovery():
    entry = _settings().oauth_provider()
    assert entry["name"] == "oidc"
    remote = entry["remote_app"]
    assert remote["server_metadata_url"] == "https://idp.example.org/realms/paas/.well-known/openid-configuration"
    assert (remote["client_id"], remote["client_secret"]) == ("airflow-ui", "s3cret")
    assert "openid" in remote["client_kwargs"]["scope"].split()
    assert not {"authorize_url", "access_token_url", "jwks_uri"} & remote.keys()  # all from discovery


def test_claims_become_fab_user_info():
    info = user_info({"sub": "u-123", "preferred_username": "alice", "name": "Alice Physicist",
                      "email": "alice@example.org", "groups": ["physics", "physics", "cms"]}, _settings())
    assert info == {"username": "u-123", "first_name": "Alice", "last_name": "Physicist",
                    "email": "alice@example.org", "role_keys": ["physics", "cms"]}
    info = user_info({"sub": "u-1", "preferred_username": "bob", "groups": "biology"},
                     _settings(AIRFLOW_CLOUD_PAAS_OIDC_UI_USERNAME_CLAIM="preferred_username"))
    assert (info["username"], info["role_keys"], info["first_name"], info["last_name"]) == (
        "bob", ["biology"], "bob", "-")
    assert user_info({"sub": "x"}, _settings())["role_keys"] == []
    with pytest.raises(ValueError, match="'preferred_username'"):
        user_info({"sub": "x"}, _settings(AIRFLOW_CLOUD_PAAS_OIDC_UI_USERNAME_CLAIM="preferred_username"))


def test_groups_become_roles():
    s = _settings()
    assert role_names(["physics"], s) == ["User", "group:physics"]
    assert role_names(["paas-admins", "physics"], s) == ["Admin", "group:paas-admins", "group:physics"]
    assert role_names([], s) == ["User"]
    assert role_names(["g" * 70, "ok"], s) == ["User", "group:ok"]  # over FAB's 64 characters: left out
    assert role_names(["paas-admins"], _settings(AIRFLOW_CLOUD_PAAS_OIDC_ADMIN_GROUP="")) == [
        "User", "group:paas-admins"]


def test_the_plugin_reads_groups_from_fab_roles():
    roles = [SimpleNamespace(name=n) for n in ("User", "group:physics", "group:cms", "group:")]
    assert fab_groups(SimpleNamespace(roles=roles)) == frozenset({"physics", "cms"})
    assert fab_groups(SimpleNamespace(role="admin")) == frozenset()  # the simple auth manager's user


# -- with FAB installed (the fab extra) ------------------------------------------------------------------------------


@pytest.fixture()
def fab_config():
    pytest.importorskip("airflow.providers.fab", reason="pip install airflow-cloud-paas[fab]")
    from airflow_cloud_paas.plugin.fab_oidc import webserver_config

    return webserver_config(ENV)


def test_webserver_config_sets_fab_oauth_with_our_security_manager(fab_config):
    from airflow.providers.fab.auth_manager.security_manager.override import FabAirflowSecurityManagerOverride
    from flask_appbuilder.const import AUTH_OAUTH

    assert fab_config["AUTH_TYPE"] == AUTH_OAUTH
    assert issubclass(fab_config["SECURITY_MANAGER_CLASS"], FabAirflowSecurityManagerOverride)
    assert fab_config["AUTH_USER_REGISTRATION"] and fab_config["AUTH_ROLES_SYNC_AT_LOGIN"]
    assert fab_config["AUTH_USER_REGISTRATION_ROLE"] == "User"
    assert [p["name"] for p in fab_config["OAUTH_PROVIDERS"]] == ["oidc"]


def test_user_info_needs_the_verified_id_token(fab_config):
    manager = fab_config["SECURITY_MANAGER_CLASS"]
    fake = SimpleNamespace(oidc=_settings())
    info = manager.get_oauth_user_info(fake, "oidc", {"access_token": "a", "userinfo": {
        "sub": "alice", "groups": ["physics"]}})
    assert (info["username"], info["role_keys"]) == ("alice", ["physics"])
    with pytest.raises(ValueError, match="no verifiable ID token"):
        manager.get_oauth_user_info(fake, "oidc", {"access_token": "a", "id_token": "unverified"})


def test_roles_are_synced_and_group_roles_created(fab_config):
    manager = fab_config["SECURITY_MANAGER_CLASS"]
    existing = {n: SimpleNamespace(name=n) for n in ("User", "Admin", "group:physics")}
    added = []

    def add_role(name):
        added.append(name)
        existing[name] = SimpleNamespace(name=name)
        return existing[name]

    fake = SimpleNamespace(oidc=_settings(), find_role=existing.get, add_role=add_role, auth_roles_mapping={},
                           get_roles_from_keys=lambda keys: set())
    roles = manager._oauth_calculate_user_roles(fake, {"username": "carol", "role_keys": ["physics", "cms"]})
    assert [r.name for r in roles] == ["User", "group:physics", "group:cms"]
    assert added == ["group:cms"]
    roles = manager._oauth_calculate_user_roles(fake, {"username": "root", "role_keys": ["paas-admins"]})
    assert [r.name for r in roles] == ["Admin", "group:paas-admins"]
    # a missing base role is not invented (FAB creates Admin/User/...; a typo in the setting only warns)
    fake.oidc = _settings(AIRFLOW_CLOUD_PAAS_OIDC_UI_DEFAULT_ROLE="Nobody")
    assert [r.name for r in manager._oauth_calculate_user_roles(fake, {"role_keys": []})] == []


# -- the ID token is verified by authlib's client, as FAB registers it from OAUTH_PROVIDERS -------------------------


@pytest.fixture(scope="module")
def idp():
    """An issuer serving discovery and its key set on loopback; its signing key and a forger's with the same kid."""
    good = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    forger = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    with serving_issuer(good, ("authorization_endpoint", "token_endpoint")) as url:
        yield SimpleNamespace(issuer=url, good=good, forger=forger)


def test_authlib_verifies_the_id_token_against_the_providers_keys(idp):
    flask = pytest.importorskip("flask")
    from authlib.integrations.flask_client import OAuth
    from joserfc.errors import BadSignatureError, ExpiredTokenError, InvalidClaimError, MissingClaimError

    settings = _settings(AIRFLOW_CLOUD_PAAS_OIDC_ISSUER=idp.issuer)
    entry = settings.oauth_provider()
    app = flask.Flask(__name__)
    client = OAuth(app).register(entry["name"], **entry["remote_app"])

    def id_token(key, **overrides):
        now = int(time.time())
        claims = {"iss": idp.issuer, "aud": "airflow-ui", "sub": "alice", "iat": now, "exp": now + 300,
                  "nonce": "n-1", "groups": ["physics"], **overrides}
        return {"access_token": "opaque", "id_token": jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)}

    with app.app_context():
        claims = client.parse_id_token(id_token(idp.good), nonce="n-1")
        assert user_info(claims, settings)["role_keys"] == ["physics"]
        with pytest.raises(BadSignatureError):
            client.parse_id_token(id_token(idp.forger), nonce="n-1")
        with pytest.raises((InvalidClaimError, MissingClaimError)):  # for another client (and no azp for us)
            client.parse_id_token(id_token(idp.good, aud="another-client"), nonce="n-1")
        with pytest.raises(ExpiredTokenError):
            client.parse_id_token(id_token(idp.good, exp=int(time.time()) - 3600), nonce="n-1")
        with pytest.raises(InvalidClaimError, match="iss"):
            client.parse_id_token(id_token(idp.good, iss="https://evil.example"), nonce="n-1")
        with pytest.raises(InvalidClaimError, match="nonce"):
            client.parse_id_token(id_token(idp.good), nonce="another")
