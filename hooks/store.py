"""Hook to the deployment store: an Airflow connection of type ``cloud_paas`` names its database."""

from __future__ import annotations

import logging
import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import NoSuchModuleError

from airflow_cloud_paas.hooks import STORE_CONNECTION, ConnectionFormMixin, ui_field_behaviour
from airflow_cloud_paas.store import DeploymentStore, DeploymentStoreError, default_store_url, mask_url
from airflow_cloud_paas.store.engine import to_url

if TYPE_CHECKING:
    from airflow.sdk import Connection

log = logging.getLogger(__name__)

#: database used when the connection has a host but no schema
DEFAULT_DATABASE = "cloud_paas"
#: the backend used when the connection does not name one
DEFAULT_BACKEND = "local"

#: The connection type as ``get_provider_info()["connection-types"]`` lists it (declared in
#: :mod:`airflow_cloud_paas.hooks`; Airflow 3 builds the form from ``conn-fields`` and ``ui-field-behaviour``).
CONNECTION_TYPE: dict[str, Any] = STORE_CONNECTION
#: Extra fields of the connection form.
CONN_FIELDS: dict[str, dict[str, Any]] = CONNECTION_TYPE["conn-fields"]
#: Standard fields hidden, relabelled or hinted in the form.
UI_FIELD_BEHAVIOUR: dict[str, Any] = ui_field_behaviour(CONNECTION_TYPE)


def _mask_secret(secret: str | None) -> None:
    """Register a secret with Airflow's log masker, so task logs print it as ``***``."""
    if not secret:
        return
    from airflow.sdk.log import mask_secret

    mask_secret(secret)


def open_store(url: str | URL) -> DeploymentStore:
    """Open the deployment store at a URL; a dialect or driver that is not installed is a DeploymentStoreError.

    :param url: a SQLAlchemy URL or a SQLite file path
    """
    try:
        return DeploymentStore(url)
    except NoSuchModuleError:
        problem = f"SQLAlchemy has no dialect '{to_url(url).get_backend_name()}'"
    except ImportError as err:  # the dialect's DBAPI module, e.g. psycopg for postgresql+psycopg
        problem = f"its database driver is not installed ({err})"
    raise DeploymentStoreError(
        f"cannot open the deployment store at {mask_url(to_url(url))}: {problem}; write the URL as "
        "sqlite:////path/to/deployments.db or postgresql+psycopg2://user@host:5432/database"
    )


class CloudPaaSStoreHook(ConnectionFormMixin, BaseHook):
    """Open the deployment store named by a ``cloud_paas`` connection.

    The store URL is, in order: the ``store_url`` extra (a SQLAlchemy URL; the connection's Password
    field fills in a URL that has a user but no password); else PostgreSQL
    (``postgresql+psycopg2``) from Host/Port/User/Password/Database when Host is set; else a
    SQLite file ``$AIRFLOW_HOME/cloud_paas/deployments.db``. Without any connection named
    ``cloud_paas_default``, the default connection id falls back to that SQLite file.
    The extras ``backend`` (default ``local``) and ``work_root`` configure the deployments.

    :param cloud_paas_conn_id: the Airflow connection id
    """

    conn_name_attr = "cloud_paas_conn_id"
    default_conn_name = "cloud_paas_default"
    conn_type = "cloud_paas"
    hook_name = "Cloud PaaS deployment store"

    def __init__(self, cloud_paas_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cloud_paas_conn_id = cloud_paas_conn_id


    # ---------------------------------------------------------------- connection -> store URL
    @cached_property
    def connection(self) -> Connection | None:
        """Return the Airflow connection, or None when the default one is not defined."""
        try:
            return self.get_connection(self.cloud_paas_conn_id)
        except AirflowNotFoundException:
            if self.cloud_paas_conn_id != self.default_conn_name:
                raise
            self.log.info("No connection '%s': using the default SQLite deployment store", self.cloud_paas_conn_id)
            return None

    @property
    def extras(self) -> dict[str, Any]:
        """Return the connection's extra fields (empty without a connection)."""
        return dict(self.connection.extra_dejson) if self.connection is not None else {}

    @staticmethod
    def url_from_connection(conn: Connection | None) -> URL:
        """Return the store's SQLAlchemy URL for a connection (password included: never log it).

        :param conn: a ``cloud_paas`` connection, or None for the default SQLite store
        """
        if conn is None:
            return make_url(default_store_url())
        extras = conn.extra_dejson
        if extras.get("store_url"):
            url = to_url(str(extras["store_url"]))
            _mask_secret(url.password)
            if url.username and url.password is None and conn.password:
                url = url.set(password=conn.password)
                _mask_secret(conn.password)
            return url
        if conn.host:
            _mask_secret(conn.password)
            return URL.create(
                "postgresql+psycopg2",
                username=conn.login or None,
                password=conn.password or None,
                host=conn.host,
                port=int(conn.port) if conn.port else None,
                database=conn.schema or DEFAULT_DATABASE,
            )
        return make_url(default_store_url())

    @cached_property
    def sqlalchemy_url(self) -> URL:
        """Return the store's SQLAlchemy URL (its repr hides the password)."""
        return self.url_from_connection(self.connection)

    @property
    def store_url(self) -> str:
        """Return the store URL with its password replaced by ``***`` (safe to log)."""
        return mask_url(self.sqlalchemy_url)

    @property
    def store_source(self) -> str:
        """Say where the store URL comes from, in words (for ``cloud-paas -v`` and error messages)."""
        conn_id = self.cloud_paas_conn_id
        home = os.environ.get("AIRFLOW_HOME") or os.path.join(os.path.expanduser("~"), "airflow")
        conn = self.connection
        if conn is None:
            return f"no connection '{conn_id}': the default SQLite store under AIRFLOW_HOME {home}"
        if conn.extra_dejson.get("store_url"):
            return f"connection '{conn_id}', extra store_url"
        if conn.host:
            return f"connection '{conn_id}', Host/Port/Database fields"
        return f"connection '{conn_id}' names no store: the default SQLite store under AIRFLOW_HOME {home}"

    @property
    def backend(self) -> str:
        """Return the backend deployments use unless told otherwise (extra ``backend``, default local)."""
        return str(self.extras.get("backend") or DEFAULT_BACKEND)

    @property
    def work_root(self) -> str:
        """Return the local backend's work directory (extra ``work_root``, default under AIRFLOW_HOME)."""
        root = self.extras.get("work_root")
        if root:
            return os.path.expanduser(str(root))
        home = os.environ.get("AIRFLOW_HOME") or os.path.join(os.path.expanduser("~"), "airflow")
        return os.path.join(home, "cloud_paas", "work")

    # ---------------------------------------------------------------- the store
    @cached_property
    def store(self) -> DeploymentStore:
        """Return the deployment store (its tables are created on first use)."""
        self.log.debug("Opening deployment store %s", self.store_url)
        return open_store(self.sqlalchemy_url)

    def get_store(self) -> DeploymentStore:
        """Return the deployment store."""
        return self.store

    def get_conn(self) -> DeploymentStore:
        """Return the deployment store (the hook's client)."""
        return self.store

    def test_connection(self) -> tuple[bool, str]:
        """Open the store and count its deployments; return (ok, message) as Airflow's UI expects."""
        try:
            url = self.sqlalchemy_url
        except Exception as err:  # the UI shows the message; a bad connection must not crash it
            return False, f"Invalid cloud_paas connection '{self.cloud_paas_conn_id}': {self._scrub(err)}"
        try:
            count = DeploymentStore(url).count()
        except DeploymentStoreError as err:  # already names the (masked) URL and the fix
            return False, self._scrub(err)
        except Exception as err:
            return False, f"Cannot use the deployment store at {mask_url(url)}: {self._scrub(err)}"
        return True, f"Deployment store at {mask_url(url)} is reachable ({count} deployments)"

    def _scrub(self, err: BaseException) -> str:
        """Return the error text with any password of this connection replaced by ``***``."""
        text = str(err)
        secrets: set[str] = set()
        try:
            conn = self.connection
            if conn is not None and conn.password:
                secrets.add(conn.password)
            if self.sqlalchemy_url.password:
                secrets.add(str(self.sqlalchemy_url.password))
        except Exception:  # no connection or an unparsable URL: nothing more to hide
            log.debug("No password to scrub for connection %s", self.cloud_paas_conn_id)
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        try:
            where = self.store_url
        except Exception:  # repr must never fail nor reveal anything
            where = "<invalid store URL>"
        return f"{type(self).__name__}(cloud_paas_conn_id={self.cloud_paas_conn_id!r}, store_url={where!r})"
