"""Keep secrets out of logs, XCom, the UI and exceptions."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

MASK = "***"

# The name rule works on words, not substrings: ``adminPassword``, ``db-pw`` and ``AWS_SECRET_ACCESS_KEY`` are
# secrets, ``bypass_cache``, ``compass``, ``passenger_count`` and ``tokenizer`` are not (and a deployment
# with such an input must stay scalable without passing it again).
_TOKEN = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
#: words that name a secret as a whole word
_SECRET_WORDS = frozenset({
    "password", "passwd", "passphrase", "passcode", "pass", "pw", "pwd", "secret", "secrets", "token", "jwt",
    "bearer", "apikey", "accesskey", "secretkey", "privatekey", "sshkey", "credential", "credentials", "cred",
    "creds",
})
#: long words that also name a secret at the end of a run-together word (``adminpassword``, ``authtoken``);
#: short ones (pw, pass) never do: ``compass`` and ``bypass`` are not secrets
_SECRET_SUFFIXES = ("password", "passwd", "passphrase", "secret", "token", "apikey", "accesskey", "secretkey",
                    "privatekey", "sshkey", "credential", "credentials", "creds")
#: ``key`` alone is no secret (``key_count``, ``key_name``); after one of these words it is (``ssh_key``)
_KEY_QUALIFIERS = frozenset({
    "ssh", "private", "access", "secret", "api", "cert", "certificate", "tls", "ssl", "signing", "encryption",
    "master", "account", "storage", "auth", "admin",
})
#: a last word saying the value is about a secret, not the secret itself (``password_length``, ``ssh_key_name``)
_DESCRIPTORS = frozenset({
    "name", "names", "length", "len", "size", "count", "limit", "file", "path", "dir", "type", "format", "url",
    "uri", "endpoint", "ttl", "expiry", "lifetime", "policy", "algorithm", "bits",
})


def name_words(name: str) -> list[str]:
    """Return the lower-case words of a name, split on punctuation, camelCase and digits.

    :param name: e.g. ``adminPassword``, ``AWS_SECRET_ACCESS_KEY``, ``db-pw2``
    """
    return [t.lower() for t in _TOKEN.findall(name)]


def is_secret_name(name: str) -> bool:
    """Return whether a key name denotes a secret value (the project's one name rule).

    :param name: an input, output, property or extra name
    """
    words = name_words(name)
    if not words or (len(words) > 1 and words[-1] in _DESCRIPTORS):
        return False
    for i, word in enumerate(words):
        if word in _SECRET_WORDS or word.endswith(_SECRET_SUFFIXES):
            return True
        if word in ("key", "keys") and i > 0 and words[i - 1] in _KEY_QUALIFIERS:
            return True
    return False


def mask_secrets(values: Mapping[str, Any], extra_names: tuple[str, ...] = ()) -> dict[str, Any]:
    """Return a copy with secret-named values (recursively) replaced by ``***``.

    :param values: a mapping such as inputs or outputs
    :param extra_names: more names to mask
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        if is_secret_name(str(key)) or key in extra_names:
            out[key] = MASK if value not in (None, "") else value
        elif isinstance(value, Mapping):
            out[key] = mask_secrets(value, extra_names)
        else:
            out[key] = value
    return out


#: an input value read from an Airflow connection at run time: ``conn://<conn_id>/<field>``, where field is
#: password, login, host, port, schema or ``extra.<key>``; ``{deployment_id}`` in the id is filled in. A
#: ``tosca.datatypes.Credential`` input may name the whole connection, ``conn://<conn_id>``: its login is the
#: credential's user and its password the token
CONNECTION_REF = re.compile(
    r"^conn://(?P<conn_id>[^/\s]+)(?:/(?P<field>password|login|host|port|schema|extra\.[\w.-]+))?$")


def connection_refs(inputs: Mapping[str, Any]) -> dict[str, str]:
    """Return the inputs whose value is a connection reference (``conn://<conn_id>/<field>``).

    :param inputs: TOSCA input values
    """
    return {k: v for k, v in inputs.items() if isinstance(v, str) and v.startswith("conn://")}


def resolve_connection_refs(inputs: Mapping[str, Any], deployment_id: str, get_connection: Any,
                            credentials: Collection[str] = ()) -> dict[str, Any]:
    """Return the inputs with connection references replaced by the connection's field, each masked in logs.

    The references themselves are what gets stored, so a later task (or a scale months later) reads the
    secret again from the connection; the value never reaches the store, XCom or the DAG run's conf.

    :param inputs: TOSCA input values
    :param deployment_id: fills ``{deployment_id}`` in connection ids
    :param get_connection: conn_id -> an Airflow Connection (``BaseHook.get_connection``)
    :param credentials: the inputs of type ``tosca.datatypes.Credential`` (they may name a whole connection)
    """
    from airflow_cloud_paas.exceptions import ToscaInputError

    resolved = dict(inputs)
    for name, ref in connection_refs(inputs).items():
        match = CONNECTION_REF.match(ref)
        if match is None or (match["field"] is None and name not in credentials):
            raise ToscaInputError(
                f"'{ref}' is not a connection reference: write conn://<conn_id>/<field>, field one of password, "
                "login, host, port, schema or extra.<key> (conn://<conn_id> alone only for an input of type "
                "tosca.datatypes.Credential)", field=f"inputs.{name}")
        conn_id = match["conn_id"].replace("{deployment_id}", deployment_id)
        try:
            conn = get_connection(conn_id)
        except Exception as err:  # AirflowNotFoundException and backend errors alike: name the connection
            raise ToscaInputError(f"input reads connection '{conn_id}', which cannot be read: "
                                  f"{type(err).__name__}", field=f"inputs.{name}") from None
        field = match["field"]
        if field is None:  # the whole connection as a TOSCA credential
            if not conn.password:
                raise ToscaInputError(f"connection '{conn_id}' has no password to be the credential's token",
                                      field=f"inputs.{name}")
            _mask_in_logs(conn.password)
            resolved[name] = {"user": conn.login, "token": conn.password, "token_type": "password",
                              **({"protocol": conn.conn_type} if conn.conn_type else {})}
            resolved[name] = {k: v for k, v in resolved[name].items() if v not in (None, "")}
            continue
        if field.startswith("extra."):
            value: Any = conn.extra_dejson
            for key in field.split(".")[1:]:
                value = value.get(key) if isinstance(value, Mapping) else None
        else:
            value = getattr(conn, field, None)
        if value in (None, ""):
            raise ToscaInputError(f"connection '{conn_id}' has no {field}", field=f"inputs.{name}")
        _mask_in_logs(value)
        resolved[name] = value
    return resolved


def mask_outputs(outputs: Mapping[str, Any], secret_names: Iterable[str] = ()) -> dict[str, Any]:
    """Return outputs safe to store, push to XCom or show, registering every hidden value with the log masker.

    :param outputs: the evaluated outputs
    :param secret_names: outputs that are secret whatever they are called (see :func:`secret_outputs`)
    """
    names = frozenset(secret_names)
    masked: dict[str, Any] = {}
    for key, value in outputs.items():
        if (key in names or is_secret_name(str(key))) and value not in (None, ""):
            _mask_in_logs(value)  # the value exists in this task's memory: keep it out of its log too
            masked[key] = MASK
        elif isinstance(value, Mapping):
            masked[key] = mask_outputs(value)
        else:
            masked[key] = value
    return masked


def _mask_in_logs(value: Any) -> None:
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # outside Airflow (the CLI's validate): nothing logs task output there
        return
    mask_secret(value)
