"""Pool secrets: tokens HTCondor accepts, password files it reads, and an Airflow connection made once, never logged."""

from __future__ import annotations

import itertools
import json
import logging

import jwt
import pytest
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from airflow_cloud_paas.services.condor.credentials import (
    EXECUTE_SCOPES,
    connection_id,
    create_token,
    credentials_from_connection,
    ensure_pool_connection,
    generate_pool_credentials,
    pool_inputs,
    read_pool_connection,
    read_token,
    scrambled_password_file,
    signing_key,
)
from airflow_cloud_paas.services.condor.errors import CondorCredentialError


def _reference_key(password: str) -> bytes:
    """The JWT key as HTCondor derives it (condor_auth_passwd.cpp), by an independent implementation."""
    return HKDF(algorithm=SHA256(), length=32, salt=b"htcondor", info=b"master jwt").derive(
        (password + password).encode())


def test_tokens_verify_with_an_independent_jwt_library_and_htcondors_key_derivation(credentials) -> None:
    key = _reference_key(credentials.pool_password)
    assert signing_key(credentials.pool_password) == key
    claims = jwt.decode(credentials.token, key, algorithms=["HS256"])
    assert claims["sub"] == f"airflow@{credentials.trust_domain}" and claims["iss"] == credentials.trust_domain
    assert "scope" not in claims and "exp" not in claims and len(claims["jti"]) == 32
    assert jwt.get_unverified_header(credentials.execute_token) == {"alg": "HS256", "kid": "POOL", "typ": "JWT"}
    execute = jwt.decode(credentials.execute_token, key, algorithms=["HS256"])
    assert execute["sub"] == f"condor@{credentials.trust_domain}"
    assert execute["scope"] == " ".join(f"condor:/{s}" for s in EXECUTE_SCOPES)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(credentials.token, _reference_key("another password"), algorithms=["HS256"])


def test_read_token_checks_signature_issuer_and_expiry(credentials) -> None:
    password = credentials.pool_password
    assert read_token(credentials.token, password, trust_domain=credentials.trust_domain)["sub"].startswith("airflow@")
    with pytest.raises(CondorCredentialError, match="signature"):
        read_token(credentials.token, "not-the-password-at-all")
    head, body, sig = credentials.token.split(".")
    forged = jwt.utils.base64url_encode(json.dumps({"sub": "root@x", "iss": credentials.trust_domain}).encode())
    with pytest.raises(CondorCredentialError, match="signature"):
        read_token(f"{head}.{forged.decode()}.{sig}", password)
    with pytest.raises(CondorCredentialError, match="issuer"):
        read_token(credentials.token, password, trust_domain="other-pool")
    old = create_token(password, identity="a@b", trust_domain="b", lifetime=60, issued_at=1_000)
    with pytest.raises(CondorCredentialError, match="expired"):
        read_token(old, password)
    assert read_token(old, password, now=1_030)["exp"] == 1_060
    with pytest.raises(CondorCredentialError, match="not a JWT"):
        read_token("garbage", password)


def test_the_password_file_is_what_condor_store_cred_writes(credentials) -> None:
    data = scrambled_password_file(credentials.pool_password)
    # HTCondor reads up to the first NUL, then XORs with 0xDEADBEEF (store_cred.cpp)
    unscrambled = bytes(b ^ k for b, k in zip(data.split(b"\0")[0], itertools.cycle(b"\xde\xad\xbe\xef")))
    assert unscrambled.decode() == credentials.pool_password
    with pytest.raises(CondorCredentialError, match="NUL"):
        scrambled_password_file("abc\0def")
    with pytest.raises(CondorCredentialError, match="scrambles to NUL"):
        scrambled_password_file("\xadxyz")  # U+00AD encodes as C2 AD: 0xAD meets 0xAD at offset 1


def test_each_deployment_gets_its_own_random_secrets_and_reprs_hide_them(credentials) -> None:
    other = generate_pool_credentials("unit-pool")
    assert other.pool_password != credentials.pool_password and len(credentials.pool_password) >= 40
    shown = repr(credentials) + str(credentials)
    assert all(secret not in shown for secret in credentials.secret_values())
    assert "unit-pool.cloud-paas" in shown
    assert credentials.execute_secret == credentials.execute_token  # idtokens: no password on execute nodes
    password_mode = generate_pool_credentials("p", security_mode="password")
    assert password_mode.execute_secret == password_mode.pool_password
    assert pool_inputs(password_mode) == {
        "security_mode": "password", "trust_domain": "p.cloud-paas", "admin_user": "airflow",
        "pool_password": password_mode.pool_password, "execute_secret": password_mode.pool_password}
    with pytest.raises(CondorCredentialError):
        generate_pool_credentials("p", security_mode="none")
    with pytest.raises(CondorCredentialError):
        connection_id("bad id/with slash")


def test_the_connection_is_made_once_and_keeps_its_secrets(airflow_db, caplog) -> None:
    from airflow.models import Connection
    from airflow.utils.session import create_session

    caplog.set_level(logging.DEBUG)
    conn_id = ensure_pool_connection("dep-idem")
    assert conn_id == "htcondor_dep-idem"
    first = read_pool_connection(conn_id)
    assert ensure_pool_connection("dep-idem", "10.1.2.3:9619", schedd_name="submit.example") == conn_id
    again = read_pool_connection(conn_id)
    assert (again.pool_password, again.token, again.execute_token) == (
        first.pool_password, first.token, first.execute_token)  # a retried task never changes the secrets
    with create_session() as session:
        rows = session.query(Connection).filter(Connection.conn_id == conn_id).all()
        assert len(rows) == 1
        row = rows[0]
        assert (row.conn_type, row.host, row.port) == ("htcondor", "10.1.2.3", 9619)
        extra = json.loads(row.extra)
        assert extra["schedd_name"] == "submit.example" and extra["trust_domain"] == "dep-idem.cloud-paas"
        assert read_token(extra["token"], row.password, trust_domain=extra["trust_domain"])["sub"] == (
            "airflow@dep-idem.cloud-paas")
        assert credentials_from_connection(row) == again
    for secret in first.secret_values():
        assert secret not in caplog.text


def test_a_connection_of_another_type_is_not_taken_over(airflow_db) -> None:
    from airflow.models import Connection
    from airflow.utils.session import create_session

    with create_session() as session:
        session.add(Connection(conn_id="htcondor_dep-taken", conn_type="http", host="example.org"))
    with pytest.raises(CondorCredentialError, match="type 'http'"):
        ensure_pool_connection("dep-taken")
    with pytest.raises(CondorCredentialError, match="does not exist"):
        read_pool_connection("htcondor_nowhere")


def test_the_cli_makes_the_pool_connection_the_pool_dag_reads(airflow_db, capsys) -> None:
    # the metadata database is where a task's connection lookup ends (through the execution API)
    from airflow.models.connection import Connection

    from airflow_cloud_paas.cli import main

    get_connection = Connection.get_connection_from_secrets
    from airflow_cloud_paas.secrets import resolve_connection_refs

    assert main(["condor-credentials", "dep-cli"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == "htcondor_dep-cli"
    conn = get_connection("htcondor_dep-cli")
    assert conn.password and conn.password not in out.out + out.err
    assert main(["condor-credentials", "dep-cli"]) == 0  # idempotent: the secrets stay
    assert get_connection("htcondor_dep-cli").password == conn.password
    # what the htcondor_pool DAG's default params resolve to at run time
    resolved = resolve_connection_refs({"pool_password": "conn://htcondor_{deployment_id}/password",
                                        "execute_secret": "conn://htcondor_{deployment_id}/extra.execute_token"},
                                       "dep-cli", get_connection)
    assert resolved["pool_password"] == conn.password and resolved["execute_secret"]
