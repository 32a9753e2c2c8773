"""A real Galaxy deployed on the local backend: admin key set, flavour installed, a tool job, the key kept secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_cloud_paas.services.galaxy.client import GalaxyClient
from airflow_cloud_paas.services.galaxy.errors import GalaxyAuthError


def test_the_deployed_galaxy_answers_with_the_chosen_admin_key_and_the_flavour(galaxy_admin, store_url) -> None:
    client = GalaxyClient(galaxy_admin.url, galaxy_admin.api_key)
    user = client.require_admin()
    assert user["email"] == "admin@example.org"
    for tool in ("cloud_paas_upper", "cloud_paas_line_count", "cloud_paas_sort", "cloud_paas_sleep"):
        assert client.tool_exists(tool), tool
    # a custom tool's job runs for real
    history = client.create_history("portal test")
    dataset = client.upload(history, content="beta\nalpha\n", name="words.txt", file_type="txt")
    client.wait_dataset(dataset, timeout=180)
    job = client.run_tool(history, "cloud_paas_sort", {"input": {"src": "hda", "id": dataset}})
    out = client.wait_dataset(job["outputs"][0]["id"], timeout=180)
    target = Path(galaxy_admin.work_dir).parent / "sorted.txt"
    assert client.download(out["id"], target).read_text() == "alpha\nbeta\n"
    # only the chosen key: a wrong one is refused
    with pytest.raises(GalaxyAuthError):
        GalaxyClient(galaxy_admin.url, "0" * 32).whoami()


def test_the_admin_key_is_in_no_store_record_log_or_attribute(galaxy_admin, store_url) -> None:
    from airflow_cloud_paas.store import DeploymentStore

    record = DeploymentStore(store_url).get(galaxy_admin.deployment_id)
    assert galaxy_admin.api_key not in json.dumps(record.to_dict() if hasattr(record, "to_dict") else vars(record),
                                                  default=str)
    assert galaxy_admin.api_key not in Path(galaxy_admin.log_file).read_text(errors="replace")
    resource_json = Path(galaxy_admin.work_dir) / "resource.json"
    assert galaxy_admin.api_key not in resource_json.read_text()
    # the key file and galaxy.yml (bootstrap key) are private to the owner
    for private in ("secrets/admin_api_key", "galaxy.yml"):
        assert (Path(galaxy_admin.work_dir) / private).stat().st_mode & 0o077 == 0, private


def test_a_flavour_of_tool_shed_repositories_installs_from_a_real_tool_shed(galaxy_admin, tool_shed) -> None:
    """The flavour ``shed-text`` names a repository of the local Tool Shed: Galaxy installs it (Mercurial clone)."""
    from airflow_cloud_paas.services.galaxy import flavours

    client = GalaxyClient(galaxy_admin.url, galaxy_admin.api_key)
    flavour = flavours.load("shed-text")
    assert flavour.repositories[0].revisions == (tool_shed.revision,)
    assert client.install_flavour(flavour) == ["cloud_paas_reverse"]
    assert client.tool_exists(tool_shed.tool_id)
    assert client.install_flavour(flavour) == []  # installed already: nothing to do
    history = client.create_history("shed tool")
    dataset = client.upload(history, content="one\ntwo\n", name="lines.txt", file_type="txt")
    client.wait_dataset(dataset, timeout=180)
    job = client.run_tool(history, tool_shed.tool_id, {"input": {"src": "hda", "id": dataset}})
    out = client.wait_dataset(job["outputs"][0]["id"], timeout=180)
    target = Path(galaxy_admin.work_dir).parent / "reversed.txt"
    assert client.download(out["id"], target).read_text() == "two\none\n"
