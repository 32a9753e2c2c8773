"""airflow_cloud_paas: the INDIGO-DataCloud PaaS for Apache Airflow 3.

Deploy, scale and tear down TOSCA-described services on any cloud as Airflow DAGs. Heavy modules
(the converter, tosca-parser, cloud SDKs) are imported lazily so that provider discovery and DAG
parsing stay fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ToscaDag": "airflow_cloud_paas.converter",
    "ToscaTaskGroup": "airflow_cloud_paas.converter",
    "NodeConverterRegistry": "airflow_cloud_paas.converter",
    "packaged_template": "airflow_cloud_paas.converter",
    "load_topology": "airflow_cloud_paas.tosca",
}

__all__ = ["__version__", "get_provider_info", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'airflow_cloud_paas' has no attribute {name!r}")


_OPENSTACK_CONNECTION: dict[str, Any] = {
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


_HTCONDOR_CONNECTION: dict[str, Any] = {
    "hook-class-name": "airflow_cloud_paas.services.condor.hook.HTCondorHook",
    "hook-name": "HTCondor",
    "connection-type": "htcondor",
    "conn-fields": {
        "token": {
            "label": "IDTOKEN",
            "schema": {"type": ["string", "null"]},
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


_XROOTD_CONNECTION: dict[str, Any] = {
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


def get_provider_info() -> dict[str, Any]:
    """Return the provider metadata Airflow reads through the ``apache_airflow_provider`` entry point."""
    return {
        "package-name": "airflow-cloud-paas",
        "name": "Cloud PaaS (INDIGO-DataCloud)",
        "description": "Deploy TOSCA-described scientific services on any cloud as Airflow DAGs.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Cloud PaaS",
                "external-doc-url": "https://github.com/indigo-dc/tosca-types",
                "tags": ["service"],
            },
            {
                "integration-name": "XRootD",
                "external-doc-url": "https://xrootd.org/docs.html",
                "tags": ["service"],
            },
            {
                "integration-name": "HTCondor",
                "external-doc-url": "https://htcondor.readthedocs.io",
                "tags": ["service"],
            },
        ],
        "operators": [
            {"integration-name": "Cloud PaaS", "python-modules": ["airflow_cloud_paas.operators.deployment",
                                                                  "airflow_cloud_paas.operators.scaling"]},
            {"integration-name": "HTCondor", "python-modules": ["airflow_cloud_paas.operators.condor"]},
        ],
        "sensors": [{"integration-name": "Cloud PaaS", "python-modules": ["airflow_cloud_paas.sensors.deployment",
                                                                          "airflow_cloud_paas.sensors.scaling"]}],
        "hooks": [
            {"integration-name": "Cloud PaaS", "python-modules": ["airflow_cloud_paas.hooks.store"]},
            {"integration-name": "OpenStack", "python-modules": ["airflow_cloud_paas.hooks.openstack"]},
            {"integration-name": "HTCondor", "python-modules": ["airflow_cloud_paas.services.condor.hook"]},
            {"integration-name": "XRootD", "python-modules": ["airflow_cloud_paas.hooks.xrootd"]},
        ],
        "triggers": [
            {"integration-name": "Cloud PaaS", "python-modules": ["airflow_cloud_paas.triggers.deployment",
                                                                  "airflow_cloud_paas.triggers.scaling"]},
            {"integration-name": "HTCondor", "python-modules": ["airflow_cloud_paas.triggers.condor"]},
        ],
        "connection-types": [
            {
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
            },
            _OPENSTACK_CONNECTION,
            _HTCONDOR_CONNECTION,
            _XROOTD_CONNECTION,
        ],
        "plugins": [{"name": "cloud_paas", "plugin-class": "airflow_cloud_paas.plugin.CloudPaaSPlugin"}],
    }
