"""Elastic scaling of a deployment's worker group: probe the cluster, ask the policy, apply through the deployer.

One round (:meth:`ElasticScaler.run_once`), run by the scheduled scaling DAG or after the queue-driven
sensor fired:

1. the service's probe reads the live cluster (Spark master, HTCondor schedd and collector...) and says,
   per instance of the worker node, whether it is booting, idle or busy, and what work is queued;
2. the policy (:mod:`airflow_cloud_paas.scaling.policy`, the same code ``cloud-paas scale-sim`` replays) decides;
3. workers to retire are drained and checked again: one that picked up work meanwhile is kept;
4. the change goes through :meth:`Deployer.rescale`, one update at a time per deployment (a concurrent
   second update is refused with DeploymentBusyError, the orchestrator's 409);
5. the decision, its reasons, what was applied and the policy's state go into the deployment history
   (event ``scale_decision``); the next round, in another process, starts from that state.

The probes (what a round reads of a service) are in :mod:`airflow_cloud_paas.scaling.probe` and with each
service; this module finds the worker groups to scale (:func:`elastic_targets`) and runs their rounds.
No Airflow import here: operators, triggers and tests use it alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_cloud_paas.backends.base import Resource, ResourceState
from airflow_cloud_paas.deployer import Deployer
from airflow_cloud_paas.scaling.policy import Policy, ScaleDecision, Snapshot, Worker, WorkerState
from airflow_cloud_paas.scaling.probe import ClusterProbe

log = logging.getLogger(__name__)

#: the history event of one scaling round
SCALE_EVENT = "scale_decision"


@dataclass
class ElasticScaler:
    """Run scaling rounds of one worker node of one deployment.

    :param deployer: the deployment's deployer (store, backend, topology, actor)
    :param node_name: the worker node (e.g. ``spark_worker``; its scalable host group is what is resized)
    :param probe: reads the service
    :param policy: decides; its state is restored from, and saved to, the deployment history
    :param clock: returns the time (epoch seconds)
    """

    deployer: Deployer
    node_name: str
    probe: ClusterProbe
    policy: Policy
    clock: Callable[[], float] = time.time

    def _last_state(self) -> dict[str, Any]:
        for event in reversed(self.deployer.store.events(self.deployer.deployment_id)):
            if event.kind == SCALE_EVENT and (event.data or {}).get("node") == self.node_name:
                return dict(event.data.get("state") or {})
        return {}

    def snapshot(self, state: Mapping[str, Any]
                 ) -> tuple[Snapshot, dict[str, Resource], dict[str, float], dict[str, float]]:
        """Return the policy's view of the cluster, the workers by name, when each became idle and was first seen.

        :param state: the saved state of the previous round (``idle_since``, ``first_seen``)
        """
        now = self.clock()
        resources = [r for r in self.deployer.backend.describe(self.deployer.deployment_id, self.node_name)
                     if r.state not in (ResourceState.DELETING, ResourceState.DELETED)]
        seen = self.probe.observe(resources, now)
        idle_since = {k: float(v) for k, v in (state.get("idle_since") or {}).items()}
        first_seen = {k: float(v) for k, v in (state.get("first_seen") or {}).items()}
        workers, by_name, new_idle = [], {}, {}
        for resource in sorted(resources, key=lambda r: r.index):
            name = f"{self.node_name}-{resource.index}"
            by_name[name] = resource
            first_seen.setdefault(name, now)
            view = seen.workers.get(resource.index)
            if view is None:  # made, but the service does not know it yet
                # the cores the host reports, else those the policy expects of a new worker (not 1: a booting
                # worker counted as 1 core made CLUES add more while 2-core jobs waited for it)
                cores = resource.attributes.get("cores") or self.policy.limits.node_cores
                workers.append(Worker(name, WorkerState.BOOTING, int(cores),
                                      boot_started_s=first_seen[name]))
                continue
            if view.state is WorkerState.IDLE:
                new_idle[name] = idle_since.get(name, now)
            workers.append(Worker(name, view.state, view.cores, view.used_cores, idle_since_s=new_idle.get(name),
                                  boot_started_s=first_seen[name]))
        first_seen = {k: v for k, v in first_seen.items() if k in by_name}
        return Snapshot(now, tuple(seen.queued), tuple(workers)), by_name, new_idle, first_seen

    def _place(self) -> dict[str, Any] | None:
        """Let the service steer where its next jobs start (:meth:`ClusterProbe.place`).

        Placement only steers: a failure is logged and recorded, and the scaling round goes on.
        """
        try:
            return self.probe.place(self.clock())
        except Exception as err:  # named in the log and the event; scaling does not depend on it
            log.warning("Scaling round of %s: placement failed: %s", self.node_name, err)
            return {"error": f"{type(err).__name__}: {err}"}

    def run_once(self) -> ScaleDecision:
        """Probe, decide, apply and record one scaling round; return the decision taken."""
        state = self._last_state()
        if state.get("policy"):
            self.policy.load_state(state["policy"])
        snapshot, by_name, idle_since, first_seen = self.snapshot(state)
        placed = self._place()
        decision = self.policy.decide(snapshot)
        reasons = list(decision.reasons)
        retire = []
        for name in decision.retire:
            worker = by_name.get(name)
            if worker is None:
                reasons.append(f"{name}: not found any more, nothing to retire")
                continue
            self.probe.drain(worker)
            again = self.probe.observe([worker], self.clock()).workers.get(worker.index)
            if again is not None and again.used_cores:
                reasons.append(f"{name}: picked up work while draining, kept")
                continue
            retire.append(worker.index)
        applied: dict[str, Any] = {"added": [], "retired": []}
        if decision.add or retire:
            why = "; ".join(decision.reasons) or "policy decision"
            applied = self.deployer.rescale(self.node_name, add=decision.add, retire=retire, reason=why)
        summary = (f"{self.node_name}: +{len(applied['added'])} -{len(applied['retired'])} "
                   f"({len(snapshot.queued)} queued, {len(snapshot.workers)} workers: "
                   f"{sum(w.state is WorkerState.BUSY for w in snapshot.workers)} busy, "
                   f"{len(snapshot.idle)} idle, {len(snapshot.booting)} booting)")
        self.deployer.store.add_event(self.deployer.deployment_id, SCALE_EVENT, summary, {
            "node": self.node_name,
            "service": self.probe.service,
            "policy": type(self.policy).__name__,
            "decision": decision.to_dict(),
            "reasons": reasons,
            "applied": applied,
            "snapshot": {"time_s": snapshot.time_s, "queued_jobs": len(snapshot.queued),
                         "queued_cpus": snapshot.queued_cpus,
                         "workers": {w.name: w.state.value for w in snapshot.workers}},
            "state": {"policy": self.policy.state_dict(), "idle_since": idle_since,
                      "first_seen": first_seen},
            **({"placement": placed} if placed is not None else {}),
        })
        log.info("Scaling round: %s; %s", summary, "; ".join(reasons) or "no change")
        return decision


# ------------------------------------------------------------------------------------------ targets
#: the TOSCA policy type that opts a worker node into elastic scaling
ELASTIC_POLICY = "cloud_paas.policies.ElasticScaling"
#: INDIGO's elastic cluster (CLUES): its ``wn`` worker node is scaled with the ``clues`` policy
INDIGO_ELASTIC_CLUSTER = "tosca.nodes.indigo.ElasticCluster"
#: INDIGO front-end types -> the service whose probe reads their queue
INDIGO_LRMS_SERVICES = {"tosca.nodes.indigo.LRMS.FrontEnd.Slurm": "slurm"}
_LIMITS = ("min_nodes", "max_nodes", "max_booting", "idle_time_s", "spare_nodes", "node_cores")


@dataclass(frozen=True)
class ElasticTarget:
    """A worker node of a deployment that an ElasticScaling policy asks to scale.

    :param deployment_id: the deployment
    :param node_name: the worker node the policy targets
    :param service: what reports its queue (spark, htcondor: a probe of :mod:`airflow_cloud_paas.scaling.probe`)
    :param policy: the policy's name (static:N, clues, smart)
    :param limits: the policy's bounds and CLUES-like settings
    """

    deployment_id: str
    node_name: str
    service: str
    policy: str = "smart"
    limits: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able form (XCom, operator arguments)."""
        return {"deployment_id": self.deployment_id, "node_name": self.node_name, "service": self.service,
                "policy": self.policy, "limits": dict(self.limits)}


def elastic_targets_of(topology: Any, deployment_id: str, inputs: Mapping[str, Any]) -> list[ElasticTarget]:
    """Return the ElasticScaling policies of a deployment's template, inputs resolved.

    :param topology: the deployment's parsed template
    :param deployment_id: the deployment
    :param inputs: its input values
    """
    from airflow_cloud_paas.tosca import resolve_value
    from airflow_cloud_paas.tosca.resolve import _effective_inputs

    inputs = _effective_inputs(topology, inputs)  # defaults filled: records keep only what was given
    found = []
    for policy in topology.policies:
        if policy.type != ELASTIC_POLICY:
            continue
        props = resolve_value(dict(policy.properties), inputs, file=topology.source, node=policy.name,
                              field="properties")
        for node in policy.targets:
            found.append(ElasticTarget(deployment_id, node, str(props.get("service")),
                                       str(props.get("policy") or "smart"),
                                       {k: props[k] for k in _LIMITS if props.get(k) is not None}))
    return found + _indigo_targets(topology, deployment_id, inputs)


def _indigo_targets(topology: Any, deployment_id: str, inputs: Mapping[str, Any]) -> list[ElasticTarget]:
    """Return the worker nodes of INDIGO elastic clusters, scaled as CLUES did (``clues``, within ``wn``'s bounds).

    An elastic cluster whose front end is a batch system without a probe here is skipped with a warning.
    """
    from airflow_cloud_paas.tosca import resolve_value

    found = []
    for node in topology.nodes.values():
        if not node.is_a(INDIGO_ELASTIC_CLUSTER):
            continue
        edges = {r.name: r.node for r in node.requirements}
        front_end, worker = topology.nodes.get(edges.get("lrms", "")), edges.get("wn")
        service = next((s for t, s in INDIGO_LRMS_SERVICES.items() if front_end is not None and front_end.is_a(t)),
                       None)
        if service is None or worker not in topology.nodes:
            log.warning("Deployment %s: elastic cluster '%s' is not scaled: its front end is not one of %s",
                        deployment_id, node.name, sorted(INDIGO_LRMS_SERVICES))
            continue
        bounds = resolve_value(dict(topology.nodes[worker].capabilities.get("wn") or {}), inputs,
                               file=topology.source, node=worker, field="capabilities.wn")
        limits = {"min_nodes": int(bounds.get("min_instances") or 0)}
        if isinstance(bounds.get("max_instances"), int) and bounds["max_instances"] >= 0:
            limits["max_nodes"] = bounds["max_instances"]
        found.append(ElasticTarget(deployment_id, worker, service, "clues", limits))
    return found


def elastic_targets(store: Any, import_map: Mapping[str, str] | None = None) -> list[ElasticTarget]:
    """Return every worker node, of every deployment that is up, that an ElasticScaling policy targets.

    A deployment whose template cannot be read any more is skipped with a warning: one broken record
    must not stop the others from scaling.

    :param store: the deployment store
    :param import_map: TOSCA import URL -> local file, for offline imports
    """
    from airflow_cloud_paas.tosca_text import load_topology_text

    targets = []
    for record in store.list(status=("CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_FAILED"), limit=10_000):
        if ELASTIC_POLICY not in record.template and INDIGO_ELASTIC_CLUSTER not in record.template:
            continue
        try:
            topology = load_topology_text(record.template, import_map=import_map)
            targets.extend(elastic_targets_of(topology, record.id, record.inputs))
        except Exception as err:  # named in the log; the other deployments go on
            log.warning("Deployment %s: cannot read its scaling policy: %s", record.id, err)
    return targets


# ------------------------------------------------------------------------------------------ addresses
def probe_address(target: ElasticTarget, outputs: Mapping[str, Any], resources: Sequence[Any] = ()) -> str:
    """Return where a target's service is read: the Spark master's web UI, the HTCondor or SLURM connection id, or
    the slurm.conf of a SLURM cluster on the local backend (its ``slurm_conf`` output).

    :param target: the scaled worker node
    :param outputs: its deployment's outputs
    :param resources: its deployment's resources (a SLURM controller on this machine publishes its slurm.conf as
        an attribute, for templates whose outputs do not, such as INDIGO's)
    """
    from airflow_cloud_paas.exceptions import ToscaValidationError

    if target.service == "spark":
        url = outputs.get("spark_webui_url")
        if not url:
            raise ToscaValidationError("an elastic Spark cluster needs an output 'spark_webui_url' (the master's "
                                       "web UI) to read its queue", node=target.node_name, field="outputs")
        return str(url)
    if target.service == "htcondor":
        return str(outputs.get("htcondor_conn_id") or f"htcondor_{target.deployment_id}")
    if target.service == "slurm":  # a cluster on this machine publishes its slurm.conf; others a connection
        local = next((r.attributes["slurm_conf"] for r in resources if (r.attributes or {}).get("slurm_conf")), None)
        return str(outputs.get("slurm_conf") or outputs.get("slurm_conn_id") or local
                   or f"slurm_{target.deployment_id}")
    raise ToscaValidationError(f"service '{target.service}' cannot be scaled: use spark, htcondor or slurm",
                               node=target.node_name, field="policies.properties.service")


def scalable_targets(store: Any, import_map: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Return every elastic worker group with where its service is read, as CloudPaaSElasticScaleOperator kwargs.

    A deployment whose outputs do not say where to read its service is skipped with a warning.

    :param store: the deployment store
    :param import_map: TOSCA import URL -> local file, for offline imports
    """
    found = []
    for target in elastic_targets(store, import_map=import_map):
        try:
            resources = store.resources(target.deployment_id) if target.service == "slurm" else ()
            address = probe_address(target, store.get(target.deployment_id).outputs, resources)
        except Exception as err:  # one broken deployment does not stop the others
            log.warning("Deployment %s is not scaled: %s", target.deployment_id, err)
            continue
        found.append({**target.to_dict(), "address": address})
    return found
