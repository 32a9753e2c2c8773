"""access.py checks tokens for real: RS256 JWTs signed here, keys served by discovery over loopback HTTP."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from fastapi import HTTPException
from joserfc import jwt
from joserfc.jwk import RSAKey
from unit.plugin.issuer import serving_issuer

from airflow_cloud_paas.plugin.access import Identity, OidcSettings, OidcVerifier, may_act

AUDIENCE = "urn:cloud-paas:api"


@pytest.fixture(scope="module")
def keys():
    return RSAKey.generate_key(2048, parameters={"kid": "good"}), RSAKey.generate_key(2048, parameters={"kid": "good"})


@pytest.fixture(scope="module")
def issuer(keys):
    """An issuer serving its discovery document and its public key set on 127.0.0.1."""
    good, _forger = keys
    with serving_issuer(good) as url:
        yield url


def _token(key, issuer, **overrides):
    now = int(time.time())
    claims = {"iss": issuer, "aud": AUDIENCE, "sub": "alice", "client_id": "cli", "iat": now, "exp": now + 300,
              "jti": f"j{now}", "groups": ["physics"], "scope": "api"}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": key.kid}, claims, key)


@pytest.fixture()
def verifier(issuer):
    return OidcVerifier(OidcSettings(issuer=issuer, audience=AUDIENCE, admin_group="admins"))


def test_a_valid_token_gives_the_subject_and_groups(keys, issuer, verifier):
    assert verifier.identity(_token(keys[0], issuer)) == Identity("alice", frozenset({"physics"}), False, "oidc")
    assert verifier.identity(_token(keys[0], issuer, groups=["admins"])).admin


@pytest.mark.parametrize(("case", "why"), [
    ("forged", "signature"),
    ("expired", "expired"),
    ("wrong audience", "not for this API"),
    ("wrong issuer", "not issued by"),
    ("no groups", "'groups' claim"),
    ("not a JWT", "not a valid access token"),
])
def test_bad_tokens_are_refused_with_401_saying_why(keys, issuer, verifier, case, why):
    good, forger = keys
    token = {
        "forged": lambda: _token(forger, issuer),
        "expired": lambda: _token(good, issuer, iat=int(time.time()) - 900, exp=int(time.time()) - 600),
        "wrong audience": lambda: _token(good, issuer, aud="urn:other:api"),
        "wrong issuer": lambda: _token(good, "http://127.0.0.1:1/other"),
        "no groups": lambda: _token(good, issuer, groups=None),
        "not a JWT": lambda: "not-a-token",
    }[case]()
    with pytest.raises(HTTPException) as refused:
        verifier.identity(token)
    assert refused.value.status_code == 401
    assert why in refused.value.detail, refused.value.detail


def test_an_unreachable_provider_is_a_401_naming_it():
    verifier = OidcVerifier(OidcSettings(issuer="http://127.0.0.1:9", audience=AUDIENCE, fetch_timeout_s=2))
    with pytest.raises(HTTPException) as refused:
        verifier.identity("a.b.c")
    assert refused.value.status_code == 401 and "127.0.0.1:9" in refused.value.detail


def test_settings_come_from_the_environment_first_then_the_connection():
    extras = {"oidc_issuer": "https://iam.example/", "oidc_audience": "api", "oidc_admin_group": "ops"}
    settings = OidcSettings.load(extras, environ={})
    assert (settings.issuer, settings.audience, settings.groups_claim, settings.admin_group) == (
        "https://iam.example", "api", "groups", "ops")
    env = {"AIRFLOW_CLOUD_PAAS_OIDC_ISSUER": "https://other.example", "AIRFLOW_CLOUD_PAAS_OIDC_GROUPS_CLAIM": "wlcg"}
    settings = OidcSettings.load(extras, environ=env)
    assert (settings.issuer, settings.groups_claim) == ("https://other.example", "wlcg")
    assert OidcSettings.load({}, environ={}) is None
    with pytest.raises(ValueError, match="AUDIENCE"):
        OidcSettings.load({"oidc_issuer": "https://iam.example"}, environ={})


def test_may_act_on_own_group_or_any_as_admin():
    alice = Identity("alice", frozenset({"physics"}))
    carol = Identity("carol", frozenset({"physics"}))
    bob = Identity("bob", frozenset({"biology"}))
    admin = Identity("root", frozenset(), admin=True)
    private = SimpleNamespace(owner="alice", user_group=None)
    shared = SimpleNamespace(owner="alice", user_group="physics")
    assert may_act(alice, private) and may_act(alice, shared)
    assert not may_act(carol, private) and may_act(carol, shared)
    assert not may_act(bob, private) and not may_act(bob, shared)
    assert may_act(admin, private) and may_act(admin, shared)
