"""The probe registry: each service's probe is named by a string, so the scaling engine never imports a service."""

from __future__ import annotations

import pytest

from airflow_cloud_paas.scaling import probe
from airflow_cloud_paas.scaling.probe import ClusterProbe, Observation, make_probe, register_probe


@pytest.mark.parametrize("service", ["spark", "htcondor", "slurm"])
def test_every_registered_probe_is_a_cluster_probe_of_its_service(service: str) -> None:
    entry = probe._PROBES[service]
    module_name = entry.partition(":")[0] if isinstance(entry, str) else entry.__module__
    assert module_name.startswith("airflow_cloud_paas.services."), "a service's probe lives with its service"
    built = make_probe(service, "http://127.0.0.1:1", **({"hook": object()} if service != "spark" else {}))
    assert isinstance(built, ClusterProbe) and built.service == service


def test_an_unknown_service_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="no probe for service 'torque': use htcondor or slurm or spark"):
        make_probe("torque", "somewhere")


def test_a_registered_probe_is_built_with_its_address(monkeypatch: pytest.MonkeyPatch) -> None:
    class QueueOfTwo(ClusterProbe):
        service = "two"

        def __init__(self, address: str) -> None:
            self.address = address

        def observe(self, workers, now):
            return Observation()

    monkeypatch.setattr(probe, "_PROBES", dict(probe._PROBES))
    register_probe("two", QueueOfTwo)
    assert make_probe("two", "addr").address == "addr"
    with pytest.raises(TypeError, match="ClusterProbe subclass"):
        register_probe("bad", object)  # type: ignore[arg-type]
