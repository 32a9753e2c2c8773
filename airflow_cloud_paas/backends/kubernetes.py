"""The Kubernetes backend: each node instance is one Deployment (one replica) in one namespace.

Everything goes through the cncf-kubernetes provider's
:class:`~airflow.providers.cncf.kubernetes.hooks.kubernetes.KubernetesHook` (its ``core_v1_client``,
``apps_v1_client`` and ``batch_v1_client``). Nodes are read by :mod:`airflow_cloud_paas.backends.containers`
(the reading the Docker backend shares). Per instance of a node there is:

- a Deployment ``cp-<deployment>-<node>-<index>`` with ``replicas: 1`` running the node's image
  (containers, INDIGO Marathon services) or a placeholder ``compute_image`` sized by the ``host`` capability
  (Compute nodes); its pod's hostname is the Deployment's name (resource attribute ``hostname``), so a service
  that names its members by hostname, such as an HTCondor startd, can be matched to the instance;
- for an INDIGO Chronos job instead, a Job of the same name (``restartPolicy: Never``, ``backoffLimit`` its
  ``retries``): RUNNING (``job_state`` COMPLETE) once it succeeded, ERROR (``job_state`` FAILED, a
  :class:`ResourceCreateError` from create) once the job controller gave up; create waits up to
  ``job_timeout`` for one of the two;
- for an INDIGO ``Container.Runtime.Docker`` or Onedata space instead, a ConfigMap of the same name (a
  *record*: it runs nothing) keeping the node's attributes; a runtime's application gets the runtime's CPUs,
  memory, GPUs (``<gpu_vendor>.com/gpu``, nvidia by default), volumes and published ports, and the record
  reports ``publish_ports`` with each ``target`` filled (the Service port);
- a PersistentVolumeClaim ``...-<volume>`` per persistent volume (``data_path``: ``...-data``; an INDIGO
  runtime's named ``volumes``) (the Deployment then uses the ``Recreate`` strategy: a ReadWriteOnce claim has
  one user);
- a Service (ClusterIP; ``public_service_type``, LoadBalancer by default, for a PUBLIC endpoint or an INDIGO
  application labelled ``HAPROXY_GROUP: external``) when the node publishes ports. Its address is the
  resource's ``load_balancer_ips`` (the load balancer's, else the cluster IP, else the Service's DNS name).

Why one Deployment per instance index, not one Deployment (or StatefulSet) per node with
``replicas: count``: the backend contract identifies an instance by (node, index) and lets any index be
created or deleted on its own; a Deployment's pods are interchangeable (scale-in kills any pod) and a
StatefulSet can only remove its highest ordinals, so neither keeps that identity. ``scale`` is
therefore the base class's: create the missing indices, delete those at or above ``count``.

All objects carry the ``cloud-paas-*`` labels; lookups use a label selector *and* filter again on
our side, so an API server (or proxy) that ignores selectors never widens a delete.

Readiness: with ``wait_for_ready=True`` (the default) an instance is RUNNING once its Deployment
reports ``status.readyReplicas >= spec.replicas``; a pod waiting for a fatal reason (ErrImagePull,
CrashLoopBackOff...) or a Deployment past its progress deadline is ERROR. An API server without
controllers (an emulator, a bare apiserver) never writes a status: with ``wait_for_ready=False`` an
instance whose objects the API server has accepted counts as RUNNING ("accepted"), and only the
fatal signals above (when some pod or status exists) make it ERROR.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_cloud_paas.backends.base import (
    TAG_INDEX,
    TAG_NODE,
    Backend,
    Resource,
    ResourceSpec,
    ResourceState,
    poll_until,
)
from airflow_cloud_paas.backends.containers import (
    ContainerRequirements,
    decode_record,
    encode_record,
    log_warnings,
    record_attributes,
)
from airflow_cloud_paas.backends.naming import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SHORT_PREFIX,
    dns_name,
    key_values,
    resource_of,
    tag_selector,
    tags_match,
)
from airflow_cloud_paas.exceptions import (
    BackendError,
    ResourceCreateError,
    UnsupportedNodeError,
)

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

log = logging.getLogger(__name__)

PROVIDER = "kubernetes"
DEFAULT_COMPUTE_IMAGE = "registry.k8s.io/pause:3.10"
#: pod waiting reasons that will not fix themselves
FATAL_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class KubernetesBackend(Backend):
    """Run node instances as Deployments on a Kubernetes cluster, through the cncf-kubernetes hook.

    :param conn_id: the Kubernetes connection (kube_config, kube_config_path, in_cluster, namespace in
        its extras); None to use only the arguments below
    :param namespace: the namespace (default: the connection's, else the kubeconfig context's, else ``default``)
    :param config_file: a kubeconfig file (instead of the connection's)
    :param config_dict: a kubeconfig as a dict (e.g. pointing at a given API server URL)
    :param cluster_context: the kubeconfig context
    :param in_cluster: use the pod's service account
    :param wait_for_ready: wait for ``status.readyReplicas`` (False: "accepted by the API server" is
        RUNNING, for API servers without controllers such as emulators)
    :param compute_image: the placeholder image of Compute (host) nodes
    :param storage_size: the size of a persistent data claim
    :param storage_class: the storage class of claims (None: the cluster's default)
    :param public_service_type: the Service type of a PUBLIC endpoint (LoadBalancer or NodePort)
    :param ready_timeout: seconds an instance may take to become ready
    :param job_timeout: seconds a job may take to complete
    :param poll_interval: seconds between readiness checks
    """

    name: ClassVar[str] = PROVIDER
    state_map: ClassVar[Mapping[str, ResourceState]] = {
        "available": ResourceState.RUNNING,  # readyReplicas >= replicas
        "progressing": ResourceState.CREATING,  # a controller works on it, not ready yet
        "accepted": ResourceState.CREATING,  # no status at all (RUNNING when wait_for_ready=False)
        "scaled-down": ResourceState.STOPPED,  # replicas: 0
        "failed": ResourceState.ERROR,  # a fatal pod reason, or past the progress deadline
        "terminating": ResourceState.DELETING,
        "complete": ResourceState.RUNNING,  # a Job that succeeded
        "record": ResourceState.RUNNING,  # a ConfigMap: nothing runs
    }

    def __init__(
        self,
        conn_id: str | None = "kubernetes_default",
        *,
        namespace: str | None = None,
        config_file: str | None = None,
        config_dict: dict | None = None,
        cluster_context: str | None = None,
        in_cluster: bool | None = None,
        wait_for_ready: bool = True,
        compute_image: str = DEFAULT_COMPUTE_IMAGE,
        storage_size: str = "1Gi",
        storage_class: str | None = None,
        public_service_type: str = "LoadBalancer",
        ready_timeout: float = 300.0,
        job_timeout: float = 3600.0,
        poll_interval: float = 1.0,
    ) -> None:
        self.conn_id = conn_id
        self._namespace = namespace
        self.config_file = config_file
        self.config_dict = config_dict
        self.cluster_context = cluster_context
        self.in_cluster = in_cluster
        self.wait_for_ready = bool(wait_for_ready)
        self.compute_image = compute_image
        self.storage_size = storage_size
        self.storage_class = storage_class
        self.public_service_type = public_service_type
        self.ready_timeout = float(ready_timeout)
        self.job_timeout = float(job_timeout)
        self.poll_interval = float(poll_interval)

    # ------------------------------------------------------------------ hook and clients
    @cached_property
    def hook(self) -> KubernetesHook:
        """Return the cncf-kubernetes hook (the SDK is imported here, not with the package)."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
        from kubernetes import client

        return KubernetesHook(
            conn_id=self.conn_id,
            kubernetes_conn_id=self.conn_id,  # None means no connection at all, not the default one
            # our own Configuration: loading a kubeconfig must not change the process-wide default
            client_configuration=client.Configuration(),
            cluster_context=self.cluster_context,
            config_file=self.config_file,
            config_dict=self.config_dict,
            in_cluster=self.in_cluster,
        )

    @cached_property
    def namespace(self) -> str:
        """Return the namespace every object goes to."""
        return self._namespace or self.hook.get_namespace() or self._context_namespace() or "default"

    def _context_namespace(self) -> str | None:
        """Return the namespace of the kubeconfig's context, as kubectl would use it.

        The kubeconfig is the one the hook loads: ``config_dict`` or ``config_file``, else the connection's
        ``kube_config`` (inline) or ``kube_config_path``.
        """
        config_dict, config_file, context = self.config_dict, self.config_file, self.cluster_context
        if config_dict is None and not config_file and self.conn_id:
            config_file = self._conn_field("kube_config_path")
            context = context or self._conn_field("cluster_context")
            inline = self._conn_field("kube_config")
            if inline and not config_file:
                import yaml

                # the hook writes a string (YAML or JSON) to a file as it is, a dict as JSON
                config_dict = inline if isinstance(inline, dict) else yaml.safe_load(inline)
                if not isinstance(config_dict, dict):
                    return None
        if config_dict is not None:
            wanted = context or config_dict.get("current-context")
            for entry in config_dict.get("contexts") or ():
                if entry.get("name") == wanted:
                    return (entry.get("context") or {}).get("namespace")
            return None
        if config_file:
            from kubernetes import config

            contexts, active = config.list_kube_config_contexts(config_file)
            chosen = next((c for c in contexts if c["name"] == context), active)
            return (chosen or {}).get("context", {}).get("namespace")
        return None

    def _conn_field(self, name: str) -> Any:
        """Return an extra of the connection as the hook reads it (also under its old ``extra__kubernetes__`` name)."""
        extras = self.hook.conn_extras
        return extras.get(name) or extras.get(f"extra__kubernetes__{name}") or None

    @property
    def core(self):
        """Return the hook's ``CoreV1Api``."""
        return self.hook.core_v1_client

    @property
    def apps(self):
        """Return the hook's ``AppsV1Api``."""
        return self.hook.apps_v1_client

    @property
    def batch(self):
        """Return the hook's ``BatchV1Api``."""
        return self.hook.batch_v1_client

    @staticmethod
    def _api_exception():
        from kubernetes.client.exceptions import ApiException

        return ApiException

    # ------------------------------------------------------------------ names and labels
    @staticmethod
    def object_name(deployment_id: str, node_name: str, index: int) -> str:
        """Return the name of an instance's Deployment (and Service); 63 characters at most.

        :param deployment_id: the deployment's id
        :param node_name: the node template's name
        :param index: the instance index
        """
        return dns_name(SHORT_PREFIX, deployment_id, node_name, index, limit=63)

    @staticmethod
    def _selector(deployment_id: str, node_name: str | None = None, index: int | None = None) -> str:
        return ",".join(key_values(tag_selector(deployment_id, node_name, index)))

    @staticmethod
    def _matches(
        labels: Mapping[str, str] | None, deployment_id: str, node_name: str | None, index: int | None
    ) -> bool:
        return tags_match(labels, tag_selector(deployment_id, node_name, index))

    # ------------------------------------------------------------------ check
    def requirements(self, spec: ResourceSpec) -> ContainerRequirements:
        """Return what the node asks of the cluster; raise :class:`UnsupportedNodeError` if unusable.

        :param spec: the instance wanted
        """
        return ContainerRequirements.from_spec(
            spec, provider=PROVIDER, compute_image=self.compute_image, compute_command=None
        )

    def check(self, spec: ResourceSpec) -> tuple[str, ...]:
        """Validate the node and that its tags are valid label values; log what is not honoured; touch nothing.

        :param spec: the resource wanted
        """
        req = self.requirements(spec)
        log_warnings(req)
        for key, value in spec.tags.items():
            if len(value) > 63 or not _LABEL_VALUE.match(value):
                raise UnsupportedNodeError(
                    f"node '{spec.node_name}' of type '{spec.node_type}': {key}={value!r} is not a Kubernetes "
                    "label value (63 characters at most: letters, digits, '-', '_', '.'); rename it",
                    provider=PROVIDER,
                    resource=f"{spec.deployment_id}/{spec.node_name}/{spec.index}",
                )
        return req.warnings

    # ------------------------------------------------------------------ manifests
    def _manifests(self, spec: ResourceSpec, req: ContainerRequirements,
                   environment: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
        name = self.object_name(spec.deployment_id, spec.node_name, spec.index)
        labels = {**spec.tags, MANAGED_BY_LABEL: MANAGED_BY}
        meta = {"name": name, "namespace": self.namespace, "labels": labels}
        if req.kind == "record":
            return {"record": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                               "data": {"record": encode_record(req.record)}}}
        limits: dict[str, str] = {}
        if req.cpus:
            limits["cpu"] = f"{max(1, round(req.cpus * 1000))}m"
        if req.mem_mb:
            limits["memory"] = f"{max(1, round(req.mem_mb))}Mi"
        if req.gpus:
            limits[f"{req.gpu_vendor or 'nvidia'}.com/gpu"] = str(req.gpus)
        env = environment if environment is not None else {k: str(v) for k, v in req.environment.items()}
        container: dict[str, Any] = {
            "name": "main",
            "image": req.image,
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "ports": [{"containerPort": p.container_port, "protocol": p.protocol.upper()} for p in req.ports],
            "resources": {"requests": dict(limits), "limits": dict(limits)},
        }
        if req.command:
            container["command"] = list(req.command)
        if req.args:
            container["args"] = list(req.args)
        if req.privileged:
            container["securityContext"] = {"privileged": True}
        if req.force_pull:
            container["imagePullPolicy"] = "Always"
        # the pod's hostname is the Deployment's name, not the pod's generated one: services that name
        # their members by hostname (an HTCondor startd's Machine) are then known before the pod exists,
        # and keep that name when the pod is replaced
        pod_spec: dict[str, Any] = {"hostname": name, "containers": [container]}
        if req.fs_group is not None:
            pod_spec["securityContext"] = {"fsGroup": req.fs_group}
        manifests: dict[str, dict[str, Any]] = {}
        for volume in req.volumes:
            suffix = dns_name(volume.name, limit=30)
            claim = f"{name[:62 - len(suffix)]}-{suffix}"
            claim_spec: dict[str, Any] = {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": self.storage_size}},
            }
            if self.storage_class:
                claim_spec["storageClassName"] = self.storage_class
            manifests[f"claim-{suffix}"] = {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {**meta, "name": claim},
                "spec": claim_spec,
            }
            mount = {"name": suffix, "mountPath": volume.path, **({"readOnly": True} if volume.read_only else {})}
            container.setdefault("volumeMounts", []).append(mount)
            pod_spec.setdefault("volumes", []).append({"name": suffix, "persistentVolumeClaim": {"claimName": claim}})
        template: dict[str, Any] = {"metadata": {"labels": labels}, "spec": pod_spec}
        if req.labels:  # an INDIGO application's own labels are free text: annotations, not selectors
            template["metadata"]["annotations"] = dict(req.labels)
        if req.kind == "job":
            manifests["job"] = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": meta,
                "spec": {"backoffLimit": req.retries,
                         "template": {**template, "spec": {**pod_spec, "restartPolicy": "Never"}}},
            }
        else:
            manifests["deployment"] = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta,
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": dict(spec.tags)},
                    "strategy": {"type": "Recreate" if req.volumes else "RollingUpdate"},
                    "template": template,
                },
            }
        if req.ports:
            manifests["service"] = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta,
                "spec": {
                    "type": self.public_service_type if req.public else "ClusterIP",
                    "selector": dict(spec.tags),
                    "ports": [
                        {
                            "name": f"p{p.container_port}-{p.protocol}",
                            "protocol": p.protocol.upper(),
                            "port": p.host_port or p.container_port,
                            "targetPort": p.container_port,
                        }
                        for p in req.ports
                    ],
                },
            }
        return manifests

    # ------------------------------------------------------------------ describe
    def _list(self, kind: str, deployment_id: str, node_name: str | None = None, index: int | None = None) -> list:
        selector = self._selector(deployment_id, node_name, index)
        lister = {
            "deployment": self.apps.list_namespaced_deployment,
            "service": self.core.list_namespaced_service,
            "claim": self.core.list_namespaced_persistent_volume_claim,
            "pod": self.core.list_namespaced_pod,
            "job": self.batch.list_namespaced_job,
            "record": self.core.list_namespaced_config_map,
        }[kind]
        try:
            items = lister(self.namespace, label_selector=selector).items
        except self._api_exception() as err:
            raise BackendError(
                f"cannot list {kind}s in namespace {self.namespace!r}: {err.status} {err.reason}; check the "
                f"connection {self.conn_id!r} and its RBAC rights",
                provider=PROVIDER,
                resource=deployment_id,
            ) from err
        return [i for i in items if self._matches(i.metadata.labels, deployment_id, node_name, index)]

    def _native_state(self, deployment, pods: list) -> tuple[str, str | None]:
        """Return (native state, why) of one Deployment from its spec, status and pods."""
        if deployment.metadata.deletion_timestamp:
            return "terminating", None
        for pod in pods:
            for status in (pod.status.container_statuses or []) if pod.status else []:
                waiting = status.state.waiting if status.state else None
                if waiting and waiting.reason in FATAL_REASONS:
                    return "failed", f"{waiting.reason}: {waiting.message or ''}".strip(": ")
        replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        if replicas == 0:
            return "scaled-down", None
        status = deployment.status
        for cond in (status.conditions or []) if status else []:
            if cond.type == "Progressing" and cond.status == "False":
                return "failed", f"{cond.reason}: {cond.message or ''}".strip(": ")
        if status and (status.ready_replicas or 0) >= replicas:
            return "available", None
        if status and (status.observed_generation or status.replicas or status.conditions):
            return "progressing", None
        return "accepted", None

    def _job_state(self, job, pods: list) -> tuple[str, str | None]:
        """Return (native state, why) of one Job from its status, conditions and pods."""
        if job.metadata.deletion_timestamp:
            return "terminating", None
        status = job.status
        for cond in (status.conditions or []) if status else []:
            if cond.type == "Failed" and cond.status == "True":
                return "failed", f"{cond.reason}: {cond.message or ''}".strip(": ")
            if cond.type == "Complete" and cond.status == "True":
                return "complete", None
        for pod in pods:
            for container in (pod.status.container_statuses or []) if pod.status else []:
                waiting = container.state.waiting if container.state else None
                if waiting and waiting.reason in FATAL_REASONS:
                    return "failed", f"{waiting.reason}: {waiting.message or ''}".strip(": ")
        if status and status.succeeded:
            return "complete", None
        limit = job.spec.backoff_limit if job.spec.backoff_limit is not None else 6
        if status and status.failed and status.failed > limit:
            return "failed", f"BackoffLimitExceeded: {status.failed} failed pod(s), backoffLimit {limit}"
        if status and (status.active or status.start_time):
            return "progressing", None
        return "accepted", None

    def _resource(
        self, workload, pods: list, services: Mapping[str, Any], state: ResourceState | None = None, *,
        job: bool = False,
    ) -> Resource:
        labels = workload.metadata.labels
        native, why = self._job_state(workload, pods) if job else self._native_state(workload, pods)
        normalized = self.normalize_state(native)
        if native == "accepted" and not self.wait_for_ready:
            normalized = ResourceState.RUNNING  # documented rule for API servers without controllers
        name = workload.metadata.name
        attributes: dict[str, Any] = {
            "namespace": workload.metadata.namespace or self.namespace,
            "job" if job else "deployment": name,
            "image": workload.spec.template.spec.containers[0].image,
            "native_state": native,
        }
        if job:
            attributes["job_state"] = {"complete": "COMPLETE", "failed": "FAILED"}.get(native, "RUNNING")
            attributes["succeeded"] = (workload.status.succeeded if workload.status else None) or 0
            attributes["failed"] = (workload.status.failed if workload.status else None) or 0
        else:
            attributes["replicas"] = workload.spec.replicas
            attributes["ready_replicas"] = (workload.status.ready_replicas if workload.status else None) or 0
        hostname = _hostname(workload, pods)
        if hostname:
            attributes["hostname"] = hostname
        if why:
            attributes["reason"] = why
        service = services.get(name)
        if service is not None:
            ns = attributes["namespace"]
            ports = service.spec.ports or []
            attributes["service"] = name
            attributes["private_address"] = service.spec.cluster_ip or f"{name}.{ns}.svc"
            attributes["endpoints"] = {
                f"{p.target_port}/{(p.protocol or 'TCP').lower()}": f"{name}.{ns}.svc:{p.port}" for p in ports
            }
            ingress = (
                (service.status.load_balancer.ingress or [])
                if (service.status and service.status.load_balancer)
                else []
            )
            public = next((i.ip or i.hostname for i in ingress if i.ip or i.hostname), None)
            attributes["public_address"] = public
            # where INDIGO outputs read a Marathon service's address (marathon-lb's, once)
            attributes["load_balancer_ips"] = [public or attributes["private_address"]]
            first = ports[0].port if ports else None
            attributes["endpoint"] = f"{public or f'{name}.{ns}.svc'}:{first}" if first else None
        return Resource(
            *resource_of(labels),
            backend=PROVIDER,
            resource_id=f"{attributes['namespace']}/{name}",
            state=state or normalized,
            attributes=attributes,
        )

    def _record_resource(self, config_map, state: ResourceState | None = None) -> Resource:
        """Return a record's resource: the attributes its ConfigMap keeps (a runtime's ports: the Service's)."""
        ns = config_map.metadata.namespace or self.namespace
        attributes = {**record_attributes(decode_record((config_map.data or {}).get("record"))),
                      "namespace": ns, "record": config_map.metadata.name, "native_state": "record"}
        return Resource(*resource_of(config_map.metadata.labels), backend=PROVIDER,
                        resource_id=f"{ns}/{config_map.metadata.name}",
                        state=state or self.normalize_state("record"), attributes=attributes)

    def _describe(self, deployment_id: str, node_name: str | None = None, index: int | None = None) -> list[Resource]:
        found = [self._record_resource(c) for c in self._list("record", deployment_id, node_name, index)]
        workloads = [(w, False) for w in self._list("deployment", deployment_id, node_name, index)]
        workloads += [(w, True) for w in self._list("job", deployment_id, node_name, index)]
        if workloads:
            pods = self._list("pod", deployment_id, node_name, index)
            services = {s.metadata.name: s for s in self._list("service", deployment_id, node_name, index)}
            for workload, job in workloads:
                labels = workload.metadata.labels
                own = [p for p in pods
                       if self._matches(p.metadata.labels, deployment_id, labels[TAG_NODE], int(labels[TAG_INDEX]))]
                found.append(self._resource(workload, own, services, job=job))
        return sorted(found, key=lambda r: (r.node_name, r.index))

    def describe(self, deployment_id: str, node_name: str | None = None) -> list[Resource]:
        """Return the Deployments, Jobs and records of a deployment (optionally of one node), by node, index.

        :param deployment_id: the deployment's id
        :param node_name: only this node's instances
        """
        return self._describe(deployment_id, node_name)

    # ------------------------------------------------------------------ create
    def create(self, spec: ResourceSpec, *, deadline: float | None = None) -> Resource:
        """Create the instance's objects (or find them by name and labels) and wait until it is ready.

        :param spec: the resource wanted
        :param deadline: a ``time.monotonic()`` limit on the wait, over ``ready_timeout``
        """
        return self._create(spec, wait=True, deadline=deadline)

    def request(self, spec: ResourceSpec) -> Resource:
        """Create the instance's objects and return at once, for a deferrable wait on its readiness.

        :param spec: the resource wanted
        """
        return self._create(spec, wait=False)

    def _create(self, spec: ResourceSpec, wait: bool, deadline: float | None = None) -> Resource:
        self.check(spec)
        req = self.requirements(spec)
        where = f"{spec.deployment_id}/{spec.node_name}/{spec.index}"
        try:
            environment = None if req.kind == "record" else req.live_environment(self._attributes(spec.deployment_id))
            manifests = self._manifests(spec, req, environment)
            for key, manifest in manifests.items():
                if key.startswith("claim-"):
                    self._ensure(manifest, self.core.read_namespaced_persistent_volume_claim,
                                 self.core.create_namespaced_persistent_volume_claim)
            if "record" in manifests:
                self._ensure(manifests["record"], self.core.read_namespaced_config_map,
                             self.core.create_namespaced_config_map)
            if "job" in manifests:
                self._ensure(manifests["job"], self.batch.read_namespaced_job, self.batch.create_namespaced_job)
            if "deployment" in manifests:
                existing = self._ensure(manifests["deployment"], self.apps.read_namespaced_deployment,
                                        self.apps.create_namespaced_deployment)
                if existing is not None and existing.spec.replicas == 0:
                    log.info("scaling %s back to 1 replica", where)
                    self.apps.patch_namespaced_deployment(existing.metadata.name, self.namespace,
                                                          {"spec": {"replicas": 1}})
            if "service" in manifests:
                self._ensure(
                    manifests["service"], self.core.read_namespaced_service, self.core.create_namespaced_service
                )
            if not wait or req.kind == "record":  # the caller waits (a deferrable trigger polling describe)
                return self._describe(spec.deployment_id, spec.node_name, spec.index)[0]
            return self._wait(spec, req, deadline)
        except BaseException as err:
            try:
                self.delete(spec.deployment_id, spec.node_name, spec.index)
            except Exception as cleanup:  # never mask the cause: log the cleanup failure, raise the first
                log.error("cleanup of %s after a failed create failed too: %s", where, cleanup)
            if isinstance(err, self._api_exception()):
                raise ResourceCreateError(
                    f"the API server refused: {err.status} {err.reason}: {_status_message(err)}",
                    provider=PROVIDER,
                    resource=where,
                ) from err
            raise

    def _attributes(self, deployment_id: str):
        def read(node_name: str) -> list[Mapping[str, Any]]:
            return [r.attributes for r in self._describe(deployment_id, node_name)]

        return read

    def _ensure(self, manifest: Mapping[str, Any], read, create):
        """Create an object unless it exists; return the existing one (None when created now)."""
        api_exception = self._api_exception()
        name = manifest["metadata"]["name"]
        try:
            return read(name, self.namespace)
        except api_exception as err:
            if err.status != 404:
                raise
        try:
            create(self.namespace, manifest)
        except api_exception as err:
            if err.status != 409:  # 409: a concurrent attempt made it first: that one is ours too
                raise
            return read(name, self.namespace)
        return None

    def _wait(self, spec: ResourceSpec, req: ContainerRequirements, deadline: float | None) -> Resource:
        where = f"{spec.deployment_id}/{spec.node_name}/{spec.index}"
        kind = "Job" if req.kind == "job" else "Deployment"

        def read() -> Resource | None:
            found = self._describe(spec.deployment_id, spec.node_name, spec.index)
            return found[0] if found else None

        def failed(resource: Resource | None) -> str | None:
            if resource is None:
                return f"its {kind} vanished while starting"
            if resource.state == ResourceState.ERROR:
                name = resource.attributes.get("job") or resource.attributes.get("deployment")
                verdict = "FAILED" if kind == "Job" else "failed"
                return (f"{kind} {name} {verdict}: {resource.attributes.get('reason')}; "
                        "check the image name, the registry credentials and the pod's logs")
            return None

        def status(resource: Resource | None) -> str:
            if resource is None:
                return "gone"
            attributes = resource.attributes
            if kind == "Job":
                return (f"{attributes['succeeded']} succeeded, {attributes['failed']} failed, state "
                        f"{attributes['native_state']}")
            return (f"{attributes['ready_replicas']}/{attributes['replicas']} ready, state "
                    f"{attributes['native_state']}")

        name = self.object_name(spec.deployment_id, spec.node_name, spec.index)
        return poll_until(
            read, lambda resource: resource is not None and resource.state == ResourceState.RUNNING,
            timeout=self.job_timeout if kind == "Job" else self.ready_timeout, deadline=deadline,
            interval=self.poll_interval,
            what=f"Job {name} complete" if kind == "Job" else f"Deployment {name} ready",
            provider=PROVIDER, resource=where, failed=failed, status=status,
            failure=lambda reason: ResourceCreateError(reason, provider=PROVIDER, resource=where),
            hint=("raise job_timeout" if kind == "Job" else "raise ready_timeout")
            + ", or use wait_for_ready=False on an API server without controllers")

    # ------------------------------------------------------------------ delete
    def delete(self, deployment_id: str, node_name: str | None = None, index: int | None = None) -> list[Resource]:
        """Delete the Deployments, Jobs, Services, claims and records of a deployment, node or instance, by labels.

        :param deployment_id: the deployment's id
        :param node_name: only this node's instances
        :param index: only this instance
        """
        api_exception = self._api_exception()
        deleted = [
            Resource(
                r.deployment_id, r.node_name, r.index, r.backend, r.resource_id, ResourceState.DELETED, r.attributes
            )
            for r in self._describe(deployment_id, node_name, index)
        ]
        removers = (
            ("deployment", self.apps.delete_namespaced_deployment),
            ("job", self.batch.delete_namespaced_job),
            ("service", self.core.delete_namespaced_service),
            ("claim", self.core.delete_namespaced_persistent_volume_claim),
            ("record", self.core.delete_namespaced_config_map),
        )
        for kind, remove in removers:
            for item in self._list(kind, deployment_id, node_name, index):
                try:
                    remove(item.metadata.name, self.namespace, propagation_policy="Background")
                except api_exception as err:
                    if err.status != 404:
                        raise BackendError(
                            f"cannot delete {kind} {item.metadata.name}: {err.status} {err.reason}",
                            provider=PROVIDER,
                            resource=f"{deployment_id}/{node_name or '*'}/{'*' if index is None else index}",
                        ) from err
        return deleted


def _hostname(deployment: Any, pods: list) -> str | None:
    """Return the hostname the instance's container sees (what a daemon in it reports as its machine name).

    The pod template's ``hostname`` (set on every Deployment this backend makes); for a Deployment made
    without one, the name of its one live pod, which Kubernetes then uses as the hostname.
    """
    template = deployment.spec.template.spec if deployment.spec and deployment.spec.template else None
    if template is not None and template.hostname:
        return str(template.hostname)
    live = [p for p in pods if not p.metadata.deletion_timestamp]
    if len(live) == 1:
        return str((live[0].spec.hostname if live[0].spec else None) or live[0].metadata.name)
    return None


def _status_message(err: Any) -> str:
    """Return the message of a Kubernetes Status body (never the request: it may hold env secrets)."""
    import json

    try:
        return str(json.loads(err.body).get("message") or err.reason)
    except (TypeError, ValueError, AttributeError):
        return str(err.reason)
