"""DEEPaaS V2 plugin serving airflow_cloud_paas's exported models; the model API is :mod:`cloud_paas_deepaas.api`."""
