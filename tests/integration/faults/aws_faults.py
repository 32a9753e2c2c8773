"""What the AWS fault suites share: the small template, the actions it runs, and the tests' own view of moto.

The template (``small_aws.yaml``) makes a volume attached to a head instance and a group of two workers
with a web port and software recorded on each, so create, scale and delete make every mutating EC2
call the backend knows. ``MUTATING_CALLS`` lists them per action, in order, as recorded through the
proxy (``test_a_transient_fault_that_clears_is_retried`` checks the list against every run, so a new
call in the backend cannot escape the suites).

Everything on moto is read with a plain boto3 client (``MotoServer.boto3_client``), never through
the backend under test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from airflow_cloud_paas.backends.aws import AWSBackend
from airflow_cloud_paas.backends.base import TAG_DEPLOYMENT, TAG_INDEX, TAG_NODE
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.request import DeploymentRequest
from airflow_cloud_paas.store import DeploymentStore
from airflow_cloud_paas.tosca import load_topology
from airflow_cloud_paas.tosca.model import Topology

TEMPLATE = Path(__file__).with_name("small_aws.yaml")
#: the tag prefix of a software node recorded on its host instance (the backend's SOFTWARE_TAG_PREFIX)
SOFTWARE_TAG = "cloud-paas-sw:"
#: the tag that marks an instance's own root volume (not a BlockStorage node)
ROOT_VOLUME_TAG = "cloud-paas-root-volume"
#: the node indices of instances launched together, in launch order (the backend's LAUNCH_INDICES_TAG)
LAUNCH_INDICES_TAG = "cloud-paas-launch-indices"
LIVE_INSTANCE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]

#: the actions the suites run on a deployment, and the store action each one is
ACTIONS = {"create": "CREATE", "scale-out": "UPDATE", "scale-in": "UPDATE", "delete": "DELETE"}
#: what is live on moto once an action has completed: instances, volumes, software records
AFTER = {
    "create": {"instances": 3, "volumes": 1, "software": 2},
    "scale-out": {"instances": 4, "volumes": 1, "software": 3},
    "scale-in": {"instances": 2, "volumes": 1, "software": 1},
    "delete": {"instances": 0, "volumes": 0, "software": 0},
}
#: the mutating EC2 calls of each action, in order (scale actions start from a created deployment)
MUTATING_CALLS = {
    "create": [
        "CreateVolume",  # disk
        "CreateSecurityGroup", "RunInstances", "AttachVolume",  # head (no port: no ingress rule)
        "CreateSecurityGroup", "AuthorizeSecurityGroupIngress", "RunInstances",  # wn 0 and 1: one group, one launch
        "CreateTags", "CreateTags",  # app 0 and 1, recorded on their hosts
    ],
    # indices 0..2 of the group, each node of it: app 0 and 1 are tagged again (idempotent), wn 2 is new
    "scale-out": ["CreateTags", "CreateTags", "AuthorizeSecurityGroupIngress", "RunInstances", "CreateTags"],
    # wn 1 and the app on it go, then app 0 is tagged again
    "scale-in": ["DeleteTags", "TerminateInstances", "CreateTags"],
    # app 1 and 0, the workers (one call), their group, head, its group, the disk (moto detaches it at termination)
    "delete": ["DeleteTags", "DeleteTags", "TerminateInstances", "DeleteSecurityGroup", "TerminateInstances",
               "DeleteSecurityGroup", "DeleteVolume"],
}


def new_deployment_id() -> str:
    """Return a fresh deployment id (moto is shared by every test of a module)."""
    return f"fault-{uuid.uuid4().hex[:10]}"


_TOPOLOGY: list[Topology] = []


def topology() -> Topology:
    """Return the parsed small template (parsed once per process)."""
    if not _TOPOLOGY:
        _TOPOLOGY.append(load_topology(TEMPLATE))
    return _TOPOLOGY[0]


def deployer(store: DeploymentStore, backend: AWSBackend, deployment_id: str, actor: str) -> Deployer:
    """Return a deployer of the small template.

    :param store: the deployment store
    :param backend: the AWS backend (its connection picks moto or the proxy)
    :param deployment_id: the deployment
    :param actor: who acts (a retry by the same actor takes its action back)
    """
    request = DeploymentRequest.build(topology(), deployment_id, {}, backend="aws", actor=actor)
    return Deployer(request, store, backend)


def run_action(action: str, store: DeploymentStore, backend: AWSBackend, deployment_id: str, actor: str) -> None:
    """Run one of ``ACTIONS`` to its end.

    :param action: create, scale-out (workers 2 -> 3), scale-in (workers 2 -> 1) or delete
    :param store: the deployment store
    :param backend: the AWS backend
    :param deployment_id: the deployment
    :param actor: who acts
    """
    d = deployer(store, backend, deployment_id, actor)
    if action == "create":
        d.create_all()
    elif action == "scale-out":
        d.scale("wn", 3)
    elif action == "scale-in":
        d.scale("wn", 1)
    elif action == "delete":
        d.begin_delete()
        d.delete_all()
        d.complete_delete()
    else:
        raise ValueError(f"unknown action {action!r}: one of {sorted(ACTIONS)}")


# ---------------------------------------------------------------------- the tests' own view of moto
def _by_deployment(deployment_id: str) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [deployment_id]}]


def _tags(raw: Mapping[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in raw.get("Tags") or ()}


def live_instances(ec2, deployment_id: str) -> list[dict[str, Any]]:
    """Return the deployment's instances that are not terminated.

    :param ec2: a plain boto3 EC2 client on moto
    :param deployment_id: the deployment
    """
    filters = [*_by_deployment(deployment_id), {"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES}]
    return [i for page in ec2.get_paginator("describe_instances").paginate(Filters=filters)
            for r in page["Reservations"] for i in r["Instances"]]


def live_volumes(ec2, deployment_id: str) -> list[dict[str, Any]]:
    """Return the deployment's volumes that are not deleted (root volumes of instances included).

    :param ec2: a plain boto3 EC2 client on moto
    :param deployment_id: the deployment
    """
    return [v for v in ec2.describe_volumes(Filters=_by_deployment(deployment_id))["Volumes"]
            if v["State"] not in ("deleting", "deleted")]


def leftovers(ec2, deployment_id: str) -> dict[str, list[str]]:
    """Return every resource tagged with the deployment that still exists on moto, by kind (empty lists: none).

    :param ec2: a plain boto3 EC2 client on moto
    :param deployment_id: the deployment
    """
    return {
        "instances": [i["InstanceId"] for i in live_instances(ec2, deployment_id)],
        "volumes": [v["VolumeId"] for v in live_volumes(ec2, deployment_id)],
        "security_groups": [g["GroupId"] for g in
                            ec2.describe_security_groups(Filters=_by_deployment(deployment_id))["SecurityGroups"]],
        "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs(Filters=_by_deployment(deployment_id))["KeyPairs"]],
    }


def cloud_rows(ec2, deployment_id: str) -> set[tuple[str, int, str]]:
    """Return what the store should list for the deployment, from moto: (node, index, resource id).

    Instances and BlockStorage volumes by their tags, software by the tag on its host instance (its id is
    ``<instance>/<node>/<index>``, the backend's convention).

    :param ec2: a plain boto3 EC2 client on moto
    :param deployment_id: the deployment
    """
    rows = set()
    for raw in live_instances(ec2, deployment_id):
        tags = _tags(raw)
        rows.add((tags[TAG_NODE], instance_index(raw), raw["InstanceId"]))
        for key in tags:
            if key.startswith(SOFTWARE_TAG):
                node, _, index = key[len(SOFTWARE_TAG):].rpartition(":")
                rows.add((node, int(index), f"{raw['InstanceId']}/{node}/{index}"))
    for raw in live_volumes(ec2, deployment_id):
        tags = _tags(raw)
        if ROOT_VOLUME_TAG not in tags:
            rows.add((tags[TAG_NODE], int(tags[TAG_INDEX]), raw["VolumeId"]))
    return rows


def instance_index(raw: Mapping[str, Any]) -> int:
    """Return an instance's node index, read from moto as the backend's tagging convention says: its own index tag,
    or, for instances launched together, its launch position (``AmiLaunchIndex``) in the launch's index list
    (``cloud-paas-launch-indices``: "0-19", "3,5-7").

    :param raw: the instance, as describe_instances answers
    """
    tags = _tags(raw)
    if TAG_INDEX in tags:
        return int(tags[TAG_INDEX])
    indices = []
    for part in tags[LAUNCH_INDICES_TAG].split(","):
        first, _, last = part.partition("-")
        indices.extend(range(int(first), int(last or first) + 1))
    return indices[int(raw["AmiLaunchIndex"])]


def store_rows(store: DeploymentStore, deployment_id: str) -> set[tuple[str, int, str]]:
    """Return the store's resource rows of the deployment as (node, index, resource id).

    :param store: the deployment store
    :param deployment_id: the deployment
    """
    return {(r.node_name, r.index, r.resource_id) for r in store.resources(deployment_id)}


def counts(rows: set[tuple[str, int, str]]) -> dict[str, int]:
    """Return how many instances, volumes and software records rows hold (by the resource id's form).

    :param rows: from :func:`cloud_rows` or :func:`store_rows`
    """
    return {
        "instances": sum(1 for *_, rid in rows if rid.startswith("i-") and "/" not in rid),
        "volumes": sum(1 for *_, rid in rows if rid.startswith("vol-")),
        "software": sum(1 for *_, rid in rows if "/" in rid),
    }


def check_consistent(store: DeploymentStore, ec2, deployment_id: str) -> str:
    """Assert the record is settled and its rows are exactly what moto holds; return its status.

    :param store: the deployment store
    :param ec2: a plain boto3 EC2 client on moto
    :param deployment_id: the deployment
    """
    record = store.get(deployment_id)
    assert not record.status.in_progress, f"record stuck in {record.status.value}: {record.status_reason}"
    on_cloud, in_store = cloud_rows(ec2, deployment_id), store_rows(store, deployment_id)
    assert in_store == on_cloud, (f"store and moto disagree: only in the store {sorted(in_store - on_cloud)}, "
                                  f"only on moto {sorted(on_cloud - in_store)}")
    return record.status.value


def check_nothing_left(ec2, deployment_id: str) -> None:
    """Assert nothing tagged with the deployment is left on moto.

    :param ec2: a plain boto3 EC2 client on moto
    :param deployment_id: the deployment
    """
    left = {kind: ids for kind, ids in leftovers(ec2, deployment_id).items() if ids}
    assert not left, f"leaked on moto: {left}"


def fault_once(action: str, answer: Any) -> Callable[[str, Mapping[str, str]], Any]:
    """Return a proxy rule that answers the first call of ``action`` with ``answer``, and nothing after.

    :param action: the EC2 API action
    :param answer: what the rule returns (``(status, code)`` or a ``Hold``)
    """
    fired: list[bool] = []

    def rule(seen: str, params: Mapping[str, str]) -> Any:
        if seen != action or fired:
            return None
        fired.append(True)
        return answer

    return rule
