"""FAB's configuration for the Airflow UI's login through the OIDC provider: import it all in webserver_config.py.

``$AIRFLOW_HOME/webserver_config.py``::

    from airflow_cloud_paas.plugin.fab_webserver_config import *  # noqa: F403

The provider and the client come from the ``AIRFLOW_CLOUD_PAAS_OIDC_*`` environment variables
(:mod:`airflow_cloud_paas.plugin.fab_oidc`); a missing one stops the API server with a ValueError naming it.
"""

from airflow_cloud_paas.plugin.fab_oidc import webserver_config

_config = webserver_config()
globals().update(_config)
__all__ = sorted(_config)
