"""The portal's catalogue: every packaged template as a form derived by the TOSCA layer, and the DAG behind it."""

from __future__ import annotations

from pathlib import Path

from airflow_cloud_paas.plugin.portal import TEMPLATES, catalogue, template_dags

REPO = Path(__file__).resolve().parents[3]


def _entry(name: str) -> dict:
    return next(e for e in catalogue(str(REPO / "dags")) if e["name"] == name)


def test_one_entry_per_packaged_template_with_its_metadata():
    entries = catalogue(str(REPO / "dags"))
    assert [e["name"] for e in entries] == sorted(p.stem for p in TEMPLATES.glob("*.yaml"))
    docker = _entry("docker_app")
    assert docker["display_name"] == "Execute your Docker image"
    assert docker["icon"] == "docker" and docker["category"] == "Containers"


def test_docker_app_has_the_seed_portlet_fields_and_a_dag_per_backend():
    docker = _entry("docker_app")
    assert [f["name"] for f in docker["portlet"]] == ["deployment_id", "cpus", "memory", "image", "data_path"]
    assert [f["label"] for f in docker["portlet"]][0] == "Job identifier"
    assert {(d["backend"], d["dag_id"]) for d in docker["dags"]} == {
        ("docker", "cloud_paas_docker_app"), ("kubernetes", "cloud_paas_docker_app_kubernetes")}
    # the form's inputs: types and defaults from the template, constraints with the run's own words
    inputs = {f["name"]: f for f in docker["inputs"]}
    assert inputs["memory"]["type"] == "scalar-unit.size" and inputs["memory"]["default"] == "512 MB"
    assert inputs["port"]["constraints"] == [
        {"op": "in_range", "limit": [1, 65535], "message": "must be from 1 to 65535"}]


def test_secret_inputs_are_password_fields_without_their_default():
    pool = _entry("htcondor_pool")
    secrets = [f for f in pool["inputs"] if f["secret"]]
    assert {f["name"] for f in secrets} >= {"pool_password"}
    assert all(f["default"] is None and not f["has_default"] for f in secrets)


def test_a_template_deployed_by_several_dags_offers_the_one_that_keeps_it_first():
    dags = template_dags(REPO / "dags")
    assert [d["dag_id"] for d in dags["spark_cluster"]] == ["spark_cluster_service", "spark_cluster"]
    assert _entry("spark_cluster")["scalable"][0]["max"] == 16
