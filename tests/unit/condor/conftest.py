"""Fixtures of the HTCondor tests: pool credentials, an ``htcondor`` connection, and the pool stand-in."""

from __future__ import annotations

import json

import pytest
from unit.condor.standin import StandInPool

from airflow_cloud_paas.services.condor.credentials import generate_pool_credentials

CONN_ID = "htcondor_unit"


@pytest.fixture
def credentials():
    return generate_pool_credentials("unit-pool")


@pytest.fixture
def connection(monkeypatch, credentials):
    """An ``htcondor`` connection (environment variable) to the stand-in's collector; return its id."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps({
        "conn_type": "htcondor", "host": "cm.standin", "port": 9618, "password": credentials.pool_password,
        "extra": {"trust_domain": credentials.trust_domain, "token": credentials.token,
                  "execute_token": credentials.execute_token, "security_mode": credentials.security_mode},
    }))
    return CONN_ID


@pytest.fixture
def pool(credentials):
    """The stand-in pool, requiring tokens signed with the pool password; Airflow's identity is an admin."""
    pool = StandInPool(trust_domain=credentials.trust_domain, pool_password=credentials.pool_password,
                       administrators=[credentials.identity], clock=lambda: 1_800_000_000.0)
    pool.add_execute_node("wn1.standin", cpus=4, memory_mb=8192)
    pool.add_execute_node("wn2.standin", cpus=2, memory_mb=4096, gpus=1)
    return pool
