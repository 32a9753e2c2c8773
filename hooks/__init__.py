"""The package's hooks, one module per service, and the connection types they register.

Each hook's connection form is declared here, as Airflow 3 reads it from the provider info
(``conn-fields``: the extra fields; ``ui-field-behaviour``: the standard fields hidden, relabelled or
hinted). :func:`airflow_cloud_paas.get_provider_info` lists these dicts, and each hook module exposes its
own as ``CONNECTION_TYPE`` and derives its form methods from it.

They live in this package's ``__init__`` rather than in the hook modules because Airflow calls
``get_provider_info`` while ``import airflow`` itself is still running (its configuration parser
discovers providers): importing a hook module there would import Airflow's task SDK and the
service's client library. This module imports nothing but the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "CONNECTION_TYPES",
    "DEEPAAS_CONNECTION",
    "GALAXY_CONNECTION",
    "HTCONDOR_CONNECTION",
    "OPENSTACK_CONNECTION",
    "SLURM_CONNECTION",
    "STORE_CONNECTION",
    "XROOTD_CONNECTION",
    "connection_form_widgets",
    "ui_field_behaviour",
]

#: :class:`airflow_cloud_paas.hooks.store.CloudPaaSStoreHook`
STORE_CONNECTION: dict[str, Any] = {
    "hook-class-name": "airflow_cloud_paas.hooks.store.CloudPaaSStoreHook",
    "hook-name": "Cloud PaaS deployment store",
    "connection-type": "cloud_paas",
    "conn-fields": {
        "store_url": {
            "label": "Store URL (SQLAlchemy)",
            "schema": {"type": ["string", "null"]},
            "description": "e.g. postgresql+psycopg2://user@host/db; the password goes in the "
            "Password field. Empty: a SQLite file under $AIRFLOW_HOME/cloud_paas.",
        },
        "backend": {
            "label": "Default backend",
            "schema": {"type": ["string", "null"], "default": "local"},
            "description": "Where deployments run unless a DAG says otherwise (local, aws, ...).",
        },
        "work_root": {
            "label": "Local backend work directory",
            "schema": {"type": ["string", "null"]},
        },
    },
    "ui-field-behaviour": {
        "hidden-fields": ["extra"],
        "relabeling": {"schema": "Database", "login": "User"},
        "placeholders": {"host": "empty for a local SQLite store", "port": "5432"},
    },
}

#: :class:`airflow_cloud_paas.hooks.openstack.OpenStackHook`
OPENSTACK_CONNECTION: dict[str, Any] = {
    "hook-class-name": "airflow_cloud_paas.hooks.openstack.OpenStackHook",
    "hook-name": "OpenStack",
    "connection-type": "openstack",
    "conn-fields": {
        "auth_type": {
            "label": "Auth type",
            "schema": {
                "type": ["string", "null"],
                "enum": ["password", "application_credential", "token", None],
                "default": "password",
            },
            "description": "password (User/Password), application_credential "
            "(User = credential id, Password = secret) or token "
            "(Password = a Keystone token).",
        },
        "project_id": {
            "label": "Project ID",
            "schema": {"type": ["string", "null"]},
            "description": "Instead of the project name (Project field).",
        },
        "user_domain_name": {"label": "User domain", "schema": {"type": ["string", "null"], "default": "Default"}},
        "project_domain_name": {
            "label": "Project domain",
            "schema": {"type": ["string", "null"], "default": "Default"},
        },
        "region_name": {"label": "Region", "schema": {"type": ["string", "null"]}},
        "interface": {
            "label": "Endpoint interface",
            "schema": {"type": ["string", "null"], "enum": ["public", "internal", "admin", None], "default": "public"},
        },
        "verify": {
            "label": "Verify TLS",
            "schema": {"type": ["string", "boolean", "null"], "default": True},
            "description": "true, false, or the path of a CA bundle.",
        },
        "network": {
            "label": "Network",
            "schema": {"type": ["string", "null"]},
            "description": "Name or id of the network servers are attached to "
            "(default: the project's only non-external network).",
        },
        "floating_network": {
            "label": "Floating IP network",
            "schema": {"type": ["string", "null"]},
            "description": "External network of public IPs (default: the only external network).",
        },
        "key_name": {"label": "Key pair", "schema": {"type": ["string", "null"]}},
    },
    "ui-field-behaviour": {
        "hidden-fields": ["port"],
        "relabeling": {"host": "Auth URL (Keystone)", "schema": "Project", "login": "User / credential id"},
        "placeholders": {
            "host": "https://keystone.example.org:5000/v3",
            "schema": "my-project",
            "login": "username, or the application credential id",
            "password": "password, application credential secret, or token",
            "extra": '{"auth_type": "password", "region_name": "RegionOne"}',
        },
    },
}

#: :class:`airflow_cloud_paas.hooks.htcondor.HTCondorHook`
HTCONDOR_CONNECTION: dict[str, Any] = {
    "hook-class-name": "airflow_cloud_paas.hooks.htcondor.HTCondorHook",
    "hook-name": "HTCondor",
    "connection-type": "htcondor",
    "conn-fields": {
        "token": {
            "label": "IDTOKEN",
            # format password: Airflow's UI masks the field and treats its value as sensitive
            "schema": {"type": ["string", "null"], "format": "password"},
            "description": "Airflow's token in the pool; empty: one is signed with the Password (the pool's "
            "signing key) for admin_user@trust_domain.",
        },
        "trust_domain": {
            "label": "Trust domain",
            "schema": {"type": ["string", "null"]},
            "description": "The pool's TRUST_DOMAIN (the tokens' issuer).",
        },
        "schedd_name": {
            "label": "Schedd name",
            "schema": {"type": ["string", "null"]},
            "description": "The schedd to submit to (needed when the pool has several).",
        },
        "admin_user": {
            "label": "Airflow user in the pool",
            "schema": {"type": ["string", "null"], "default": "airflow"},
        },
    },
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "login"],
        "relabeling": {"host": "Collector (central manager)", "password": "Pool password (signing key)"},
        "placeholders": {"host": "cm.example.org", "port": "9618",
                         "extra": '{"trust_domain": "my-pool.cloud-paas", "schedd_name": "submit.example.org"}'},
    },
}

#: :class:`airflow_cloud_paas.hooks.xrootd.XRootDHook`
XROOTD_CONNECTION: dict[str, Any] = {
    "hook-class-name": "airflow_cloud_paas.hooks.xrootd.XRootDHook",
    "hook-name": "XRootD / XCache",
    "connection-type": "xrootd",
    "conn-fields": {
        "cache_dir": {
            "label": "Cache directory",
            "schema": {"type": ["string", "null"]},
            "description": "The XCache's directory (oss.localroot) when this machine can read it: lets the hook "
            "list cached files, check prefetches and evictions on disk and read disk usage.",
        },
        "origin": {
            "label": "Origin",
            "schema": {"type": ["string", "null"]},
            "description": "The origin behind the cache (root://host:port).",
        },
    },
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "login", "password"],
        "relabeling": {"host": "Server or cache host"},
        "placeholders": {
            "host": "127.0.0.1",
            "port": "1094",
            "extra": '{"cache_dir": "/var/cache/xrootd", "origin": "root://origin.example.org:1094"}',
        },
    },
}

#: :class:`airflow_cloud_paas.hooks.slurm.SlurmHook`
SLURM_CONNECTION: dict[str, Any] = {
    "hook-class-name": "airflow_cloud_paas.hooks.slurm.SlurmHook",
    "hook-name": "SLURM",
    "connection-type": "slurm",
    "conn-fields": {
        "slurm_conf": {
            "label": "slurm.conf",
            "schema": {"type": ["string", "null"]},
            "description": "The cluster's slurm.conf on this machine (it names the controller and munge's "
            "socket). Empty: Host and Port name the controller.",
        },
        "munge_socket": {
            "label": "munge socket",
            "schema": {"type": ["string", "null"]},
            "description": "munged's socket on this machine, with the cluster's key (default: munge's own).",
        },
        "cluster_name": {
            "label": "Cluster name",
            "schema": {"type": ["string", "null"], "default": "cloudpaas"},
            "description": "The cluster's ClusterName (with Host and Port).",
        },
    },
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "login", "password"],
        "relabeling": {"host": "Controller (slurmctld)"},
        "placeholders": {
            "host": "127.0.0.1",
            "port": "6817",
            "extra": '{"slurm_conf": "/etc/slurm/slurm.conf", "munge_socket": "/run/munge/munge.socket.2"}',
        },
    },
}

#: :class:`airflow_cloud_paas.hooks.galaxy.GalaxyHook`
GALAXY_CONNECTION: dict[str, Any] = {
    "hook-class-name": "airflow_cloud_paas.hooks.galaxy.GalaxyHook",
    "hook-name": "Galaxy",
    "connection-type": "galaxy",
    "conn-fields": {
        "api_key": {
            "label": "API key (instead of Password)",
            # format password: Airflow's UI masks the field and treats its value as sensitive
            "schema": {"type": ["string", "null"], "format": "password"},
            "description": "The user's Galaxy API key, when the Password field is not used for it.",
        },
        "verify_ssl": {
            "label": "Verify TLS",
            "schema": {"type": ["boolean", "null"], "default": True},
            "description": "Check the server's certificate (https URLs).",
        },
        "timeout": {
            "label": "Request timeout (s)",
            "schema": {"type": ["number", "null"], "default": 60},
            "description": "Seconds one API request may take.",
        },
    },
    "ui-field-behaviour": {
        "hidden-fields": ["login"],
        "relabeling": {"host": "Galaxy URL", "schema": "Scheme (http or https)", "password": "API key"},
        "placeholders": {
            "host": "http://galaxy.example.org:8080",
            "schema": "https (when Host is a bare host name)",
            "port": "8080 (when Host has none)",
            "password": "the user's API key",
            "extra": '{"verify_ssl": true, "timeout": 60}',
        },
    },
}

#: Every connection type of the package, as ``get_provider_info()["connection-types"]`` lists them.
#: :class:`airflow_cloud_paas.hooks.deepaas.DEEPaaSHook`
DEEPAAS_CONNECTION: dict[str, Any] = {
    "hook-class-name": "airflow_cloud_paas.hooks.deepaas.DEEPaaSHook",
    "hook-name": "DEEPaaS",
    "connection-type": "deepaas",
    "conn-fields": {
        "verify_ssl": {
            "label": "Verify TLS",
            "schema": {"type": ["boolean", "null"], "default": True},
            "description": "Check the server's certificate (https URLs).",
        },
        "timeout": {
            "label": "Request timeout (s)",
            "schema": {"type": ["number", "null"], "default": 60},
            "description": "Seconds one API request may take.",
        },
    },
    "ui-field-behaviour": {
        "hidden-fields": ["login", "schema", "port"],
        "relabeling": {"host": "DEEPaaS URL", "password": "Bearer token (optional)"},
        "placeholders": {
            "host": "http://deepaas.example.org:5000",
            "password": "an access token, when the API is behind an OIDC proxy",
            "extra": '{"verify_ssl": true, "timeout": 60}',
        },
    },
}

CONNECTION_TYPES: tuple[dict[str, Any], ...] = (
    STORE_CONNECTION,
    OPENSTACK_CONNECTION,
    HTCONDOR_CONNECTION,
    XROOTD_CONNECTION,
    SLURM_CONNECTION,
    GALAXY_CONNECTION,
    DEEPAAS_CONNECTION,
)


def ui_field_behaviour(connection_type: Mapping[str, Any]) -> dict[str, Any]:
    """Return a connection type's ``ui-field-behaviour`` as a hook's ``get_ui_field_behaviour`` returns it.

    :param connection_type: one of this module's connection types
    """
    behaviour = connection_type["ui-field-behaviour"]
    return {
        "hidden_fields": list(behaviour.get("hidden-fields", [])),
        "relabeling": dict(behaviour.get("relabeling", {})),
        "placeholders": dict(behaviour.get("placeholders", {})),
    }


def connection_form_widgets(connection_type: Mapping[str, Any]) -> dict[str, Any]:
    """Return a connection type's ``conn-fields`` as the Flask AppBuilder form fields of Airflow's older UI.

    Airflow 3.2+ builds the form from ``conn-fields`` and never calls this; it needs ``wtforms``, which
    only that older UI installs. A field whose schema has ``format: password`` becomes a password field.

    :param connection_type: one of this module's connection types
    """
    from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import PasswordField, StringField

    widgets = {}
    for name, spec in connection_type["conn-fields"].items():
        schema = spec.get("schema", {})
        secret = schema.get("format") == "password"
        default = schema.get("default")
        widgets[name] = (PasswordField if secret else StringField)(
            lazy_gettext(spec["label"]),
            widget=BS3PasswordFieldWidget() if secret else BS3TextFieldWidget(),
            description=spec.get("description", ""),
            default=None if default is None else str(default),
        )
    return widgets


class ConnectionFormMixin:
    """Give a hook the connection form of its ``conn_type``, as listed in :data:`CONNECTION_TYPES`.

    Airflow 3 builds the form from the provider info's ``conn-fields``; these two methods serve the UIs that
    still ask the hook.
    """

    conn_type: str

    @classmethod
    def _connection_type(cls) -> Mapping[str, Any]:
        return next(c for c in CONNECTION_TYPES if c["connection-type"] == cls.conn_type)

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Return the extra fields of the connection form (older UIs; Airflow 3 reads ``conn-fields``)."""
        return connection_form_widgets(cls._connection_type())

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Return which standard fields the connection form hides, relabels and hints."""
        return ui_field_behaviour(cls._connection_type())
