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


def get_provider_info() -> dict[str, Any]:
    """Return the provider metadata Airflow reads through the ``apache_airflow_provider`` entry point.

    It lists every hook, operator, sensor and trigger module, and every connection type (their forms are
    declared beside the hooks, in :mod:`airflow_cloud_paas.hooks`). Airflow calls it while ``import airflow``
    itself runs, so it imports nothing but that light module: no hook, no Airflow, no client library.
    """
    from airflow_cloud_paas.hooks import CONNECTION_TYPES

    return {
        "package-name": "airflow-cloud-paas",
        "name": "Cloud PaaS (INDIGO-DataCloud)",
        "description": "Deploy TOSCA-described scientific services on any cloud as Airflow DAGs.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": "Cloud PaaS", "external-doc-url": "https://github.com/indigo-dc/tosca-types",
             "tags": ["service"]},
            {"integration-name": "OpenStack", "external-doc-url": "https://docs.openstack.org", "tags": ["service"]},
            {"integration-name": "Google Compute Engine", "external-doc-url": "https://cloud.google.com/compute/docs",
             "tags": ["gcp"]},
            {"integration-name": "Microsoft Azure Virtual Machines",
             "external-doc-url": "https://learn.microsoft.com/azure/virtual-machines/", "tags": ["azure"]},
            {"integration-name": "HTCondor", "external-doc-url": "https://htcondor.readthedocs.io",
             "tags": ["service"]},
            {"integration-name": "Apache Spark", "external-doc-url": "https://spark.apache.org/docs/latest/",
             "tags": ["apache"]},
            {"integration-name": "XRootD", "external-doc-url": "https://xrootd.org/docs.html", "tags": ["service"]},
            {"integration-name": "SLURM", "external-doc-url": "https://slurm.schedmd.com/documentation.html",
             "tags": ["service"]},
            {"integration-name": "Galaxy", "external-doc-url": "https://docs.galaxyproject.org",
             "tags": ["service"]},
            {"integration-name": "DEEPaaS", "external-doc-url": "https://docs.deep-hybrid-datacloud.eu",
             "tags": ["service"]},
        ],
        "operators": [
            {"integration-name": "Cloud PaaS", "python-modules": ["airflow_cloud_paas.operators.deployment",
                                                                  "airflow_cloud_paas.operators.scaling"]},
            {"integration-name": "HTCondor", "python-modules": ["airflow_cloud_paas.operators.htcondor"]},
            {"integration-name": "Apache Spark", "python-modules": ["airflow_cloud_paas.operators.spark"]},
            {"integration-name": "XRootD", "python-modules": ["airflow_cloud_paas.operators.xcache"]},
            {"integration-name": "SLURM", "python-modules": ["airflow_cloud_paas.operators.slurm"]},
            {"integration-name": "Galaxy", "python-modules": ["airflow_cloud_paas.operators.galaxy"]},
            {"integration-name": "DEEPaaS", "python-modules": ["airflow_cloud_paas.operators.deepaas",
                                                               "airflow_cloud_paas.operators.training"]},
        ],
        "sensors": [
            {"integration-name": "Cloud PaaS", "python-modules": ["airflow_cloud_paas.sensors.deployment",
                                                                  "airflow_cloud_paas.sensors.scaling"]},
            {"integration-name": "Apache Spark", "python-modules": ["airflow_cloud_paas.sensors.spark"]},
            {"integration-name": "SLURM", "python-modules": ["airflow_cloud_paas.sensors.slurm"]},
            {"integration-name": "Galaxy", "python-modules": ["airflow_cloud_paas.sensors.galaxy"]},
        ],
        "hooks": [
            {"integration-name": "Cloud PaaS", "python-modules": ["airflow_cloud_paas.hooks.store"]},
            {"integration-name": "OpenStack", "python-modules": ["airflow_cloud_paas.hooks.openstack"]},
            {"integration-name": "Google Compute Engine", "python-modules": ["airflow_cloud_paas.hooks.gcp"]},
            {"integration-name": "Microsoft Azure Virtual Machines",
             "python-modules": ["airflow_cloud_paas.hooks.azure"]},
            {"integration-name": "HTCondor", "python-modules": ["airflow_cloud_paas.hooks.htcondor"]},
            {"integration-name": "XRootD", "python-modules": ["airflow_cloud_paas.hooks.xrootd"]},
            {"integration-name": "SLURM", "python-modules": ["airflow_cloud_paas.hooks.slurm"]},
            {"integration-name": "Galaxy", "python-modules": ["airflow_cloud_paas.hooks.galaxy"]},
            {"integration-name": "DEEPaaS", "python-modules": ["airflow_cloud_paas.hooks.deepaas"]},
        ],
        "triggers": [
            {"integration-name": "Cloud PaaS", "python-modules": ["airflow_cloud_paas.triggers.base",
                                                                  "airflow_cloud_paas.triggers.deployment",
                                                                  "airflow_cloud_paas.triggers.scaling"]},
            {"integration-name": "HTCondor", "python-modules": ["airflow_cloud_paas.triggers.htcondor"]},
            {"integration-name": "SLURM", "python-modules": ["airflow_cloud_paas.triggers.slurm"]},
            {"integration-name": "Galaxy", "python-modules": ["airflow_cloud_paas.triggers.galaxy"]},
            {"integration-name": "DEEPaaS", "python-modules": ["airflow_cloud_paas.triggers.deepaas"]},
        ],
        "connection-types": list(CONNECTION_TYPES),
        "plugins": [{"name": "cloud_paas", "plugin-class": "airflow_cloud_paas.plugin.CloudPaaSPlugin"}],
    }
