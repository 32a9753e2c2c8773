"""What the hooks of HTTP services (Galaxy, DEEPaaS) read alike from an Airflow connection: the base URL, the
request timeout, TLS verification, and the secret to mask. Each error is the hook's own config error type, naming
the field; a credential is never shown."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

DEFAULT_TIMEOUT = 60.0
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def base_url(host: str | None, *, service: str, credential: str, error: Callable[..., Exception],
             schema: str | None = None, port: int | None = None) -> str:
    """Return a service's base URL from a connection's Host (and Schema, Port), without a trailing ``/``.

    ``http://h:8080/p`` is taken as it is (Port fills in a missing port); a bare ``h`` gets ``schema://`` (``http``
    unless Schema says ``https``).

    :param host: the Host field: a URL or a host name
    :param service: the service's name, for messages
    :param credential: where its secret goes instead of the URL, for messages (``a token``)
    :param error: the hook's config error type (``message, field=, value=``)
    :param schema: the Schema field (``http`` or ``https``; anything else is ignored)
    :param port: the Port field
    """
    host = (host or "").strip()
    if not host:
        raise error(f"no {service} URL: set the connection's Host (http://host:port), or pass url=", field="host")
    scheme = (schema or "").strip().lower()
    if "://" not in host:
        host = f"{scheme if scheme in ('http', 'https') else 'http'}://{host}"
    parts = urlsplit(host)
    if "@" in parts.netloc:
        # credentials belong in Password, never in a URL that logs and errors show
        raise error(f"the {service} URL must not hold credentials: put {credential} in Password", field="host",
                    value="(hidden)")
    try:
        given_port = parts.port
    except ValueError:
        given_port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or given_port == -1:
        raise error(f"a {service} URL is http(s)://host[:port][/path]", field="host", value=host)
    netloc = parts.netloc
    if given_port is None and port:
        netloc = f"{netloc}:{int(port)}"
    return f"{parts.scheme}://{netloc}{parts.path}".rstrip("/")


def as_bool(value: Any, *, field: str, error: Callable[..., Exception]) -> bool:
    """Return a flag given as a bool or a word (true/false, yes/no, on/off, 1/0).

    :param value: the value
    :param field: the field it came from
    :param error: the hook's config error type
    """
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in _TRUE:
        return True
    if str(value).strip().lower() in _FALSE:
        return False
    raise error("true or false", field=field, value=value)


def request_settings(extras: Mapping[str, Any], timeout: Any, *, error: Callable[..., Exception]
                     ) -> tuple[float, bool]:
    """Return (timeout in seconds, verify TLS) from the hook's argument or the ``timeout``/``verify_ssl`` extras.

    :param extras: the connection's extras
    :param timeout: the hook's ``timeout`` argument (None: the extra, else :data:`DEFAULT_TIMEOUT`)
    :param error: the hook's config error type
    """
    timeout = timeout if timeout is not None else extras.get("timeout")
    try:
        seconds = float(timeout) if timeout not in (None, "") else DEFAULT_TIMEOUT
    except (TypeError, ValueError):
        raise error("seconds (a number)", field="timeout", value=timeout) from None
    if seconds <= 0:
        raise error("seconds > 0", field="timeout", value=seconds)
    verify = extras.get("verify_ssl")
    return seconds, True if verify in (None, "") else as_bool(verify, field="verify_ssl", error=error)


def mask(secret: str) -> None:
    """Have Airflow's secrets masker redact a secret in this process's logs.

    :param secret: the secret
    """
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - the task SDK ships it
        return
    mask_secret(secret)
