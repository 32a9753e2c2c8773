"""Services deployable by airflow_cloud_paas, one package each (spark, condor, galaxy, xcache, training).

A service package holds what is specific to it: its local-backend drivers (``<service>.local``) and
the client calls used to check or use a running instance. Nothing here is imported eagerly.
"""
