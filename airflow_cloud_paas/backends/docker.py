"""The Docker backend: each node instance is a container on one Docker Engine.

Everything goes through the docker provider's :class:`~airflow.providers.docker.hooks.docker.DockerHook`
(its low-level ``docker.APIClient``). Per deployment there is one bridge network (``cp-<deployment>``);
per instance one container (``cp-<deployment>-<node>-<index>``) and one named volume per persistent volume
it asks for (``data_path``, or an INDIGO runtime's ``volumes``). Every container, volume and network carries
the ``cloud-paas-*`` labels (the tags of :mod:`airflow_cloud_paas.backends.base`), so a retried ``create``
finds its container and ``delete`` finds everything, even of a half-created deployment.

Node types (read by :mod:`airflow_cloud_paas.backends.containers`):

- anything derived from ``tosca.nodes.Container.Application`` (the packaged ``cloud_paas.nodes.Container``,
  INDIGO's ``tosca.nodes.indigo.Container.Application.Docker`` and its Marathon variant): a container of its
  image restarted ``unless-stopped``, RUNNING once it runs (and is healthy, if the image has a health check);
- INDIGO's Chronos job (``...Application.Docker.Chronos``): a run-to-completion container (restart policy
  ``on-failure`` with its ``retries``); its create waits up to ``job_timeout`` for it to exit: exit code 0 is
  success (state RUNNING, ``job_state`` COMPLETE), any other a :class:`ResourceCreateError` with the exit code
  and the log's end (``job_state`` FAILED);
- INDIGO's ``tosca.nodes.indigo.Container.Runtime.Docker`` and Onedata spaces: a *record*, an empty volume
  ``cp-<deployment>-<node>-<index>`` whose labels keep the node's attributes (a plain engine keeps no other
  labelled object without a process); a runtime's application container (label ``cloud-paas-host``) gets
  the runtime's CPUs, memory, GPUs, volumes and published ports, and the record reports its
  ``publish_ports`` with the host ports the engine chose;
- anything derived from ``tosca.nodes.Compute``: a placeholder "host" container of ``compute_image``
  sized by the ``host`` capability (``num_cpus``, ``mem_size``).

Published ports come from the endpoint capabilities (``port``, or INDIGO ``ports`` with ``source`` = the
container port and optional ``target`` = the host port), the ``ports`` property and a runtime's
``publish_ports``; they are bound to ``publish_address`` (127.0.0.1) unless an endpoint's ``network_name``
is ``PUBLIC`` or an INDIGO application is labelled ``HAPROXY_GROUP: external`` (then 0.0.0.0).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_cloud_paas.backends.base import (
    TAG_DEPLOYMENT,
    Backend,
    Resource,
    ResourceSpec,
    ResourceState,
    poll_until,
)
from airflow_cloud_paas.backends.containers import (
    DEFAULT_COMPUTE_IMAGE,
    HOST_LABEL,
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
    from airflow.providers.docker.hooks.docker import DockerHook

log = logging.getLogger(__name__)

PROVIDER = "docker"
#: the label that marks a container as a job's (its exit code is its result)
KIND_LABEL = "cloud-paas-kind"
#: the label in which a record volume keeps its attributes (JSON)
RECORD_LABEL = "cloud-paas-record"


# ---------------------------------------------------------------------- the backend
class DockerBackend(Backend):
    """Run node instances as containers on a Docker Engine, through the docker provider's hook.

    :param conn_id: the Docker connection (a registry login: host, login, password) the hook logs in
        with before pulling; None for public images only
    :param docker_url: the engine's URL (``unix:///var/run/docker.sock``, ``tcp://host:2375``); default
        ``$DOCKER_HOST``, else the local socket
    :param api_version: the Engine API version (None: ask the engine)
    :param tls: TLS for a ``tcp://`` engine (True or a ``docker.tls.TLSConfig``)
    :param compute_image: the image of Compute (host) nodes
    :param publish_address: where private ports are published (loopback: only this machine reaches them)
    :param pull: pull images that the engine lacks (else a missing image is an error)
    :param ready_timeout: seconds a container may take to run (and be healthy, if it has a health check)
    :param job_timeout: seconds a job's container may take to exit
    :param stop_timeout: seconds a container may take to stop before it is killed
    :param poll_interval: seconds between state checks
    :param timeout: seconds for one Engine API call
    """

    name: ClassVar[str] = PROVIDER
    state_map: ClassVar[Mapping[str, ResourceState]] = {
        # Docker's State.Status
        "created": ResourceState.CREATING,
        "restarting": ResourceState.CREATING,
        "running": ResourceState.RUNNING,
        "paused": ResourceState.STOPPED,
        "exited": ResourceState.STOPPED,
        "removing": ResourceState.DELETING,
        "dead": ResourceState.ERROR,
        # State.Health.Status while running
        "starting": ResourceState.CREATING,
        "unhealthy": ResourceState.ERROR,
        "healthy": ResourceState.RUNNING,
        # a job's exited container, by its exit code; a record (no process)
        "complete": ResourceState.RUNNING,
        "failed": ResourceState.ERROR,
        "record": ResourceState.RUNNING,
    }

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        docker_url: str | None = None,
        api_version: str | None = None,
        tls: Any = None,
        compute_image: str = DEFAULT_COMPUTE_IMAGE,
        publish_address: str = "127.0.0.1",
        pull: bool = True,
        ready_timeout: float = 120.0,
        job_timeout: float = 3600.0,
        stop_timeout: int = 10,
        poll_interval: float = 0.5,
        timeout: int = 60,
    ) -> None:
        self.conn_id = conn_id
        self.docker_url = docker_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        self.api_version = api_version
        self.tls = tls
        self.compute_image = compute_image
        self.publish_address = publish_address
        self.pull = pull
        self.ready_timeout = float(ready_timeout)
        self.job_timeout = float(job_timeout)
        self.stop_timeout = int(stop_timeout)
        self.poll_interval = float(poll_interval)
        self.timeout = int(timeout)

    # ------------------------------------------------------------------ hook and client
    @cached_property
    def hook(self) -> DockerHook:
        """Return the docker provider's hook (the SDK is imported here, not with the package)."""
        from airflow.providers.docker.hooks.docker import DockerHook

        return DockerHook(
            docker_conn_id=self.conn_id,
            base_url=self.docker_url,
            version=self.api_version,
            tls=self.tls,
            timeout=self.timeout,
        )

    @property
    def client(self):
        """Return the hook's ``docker.APIClient`` (connected on first use)."""
        try:
            return self.hook.get_conn()
        except Exception as err:  # the hook raises AirflowException or docker errors; both mean unreachable
            raise BackendError(
                f"cannot reach the Docker Engine at {self.docker_url} ({type(err).__name__}: {err}); "
                "start it or pass docker_url=",
                provider=PROVIDER,
            ) from err

    @staticmethod
    def _errors():
        import docker.errors

        return docker.errors

    # ------------------------------------------------------------------ names and labels
    @staticmethod
    def network_name(deployment_id: str) -> str:
        """Return the name of a deployment's network.

        :param deployment_id: the deployment's id
        """
        return dns_name(SHORT_PREFIX, deployment_id, limit=120)

    @staticmethod
    def container_name(spec: ResourceSpec) -> str:
        """Return the name of an instance's container.

        :param spec: the instance
        """
        return dns_name(SHORT_PREFIX, spec.deployment_id, spec.node_name, spec.index, limit=120)

    @staticmethod
    def _filters(deployment_id: str, node_name: str | None = None, index: int | None = None) -> dict[str, list]:
        return {"label": key_values(tag_selector(deployment_id, node_name, index))}

    # ------------------------------------------------------------------ check
    def requirements(self, spec: ResourceSpec) -> ContainerRequirements:
        """Return what the node asks of the engine; raise :class:`UnsupportedNodeError` if unusable.

        :param spec: the instance wanted
        """
        return ContainerRequirements.from_spec(spec, provider=PROVIDER, compute_image=self.compute_image)

    def check(self, spec: ResourceSpec) -> tuple[str, ...]:
        """Validate the node and that it fits the engine's CPUs and memory; log what is not honoured; touch nothing.

        :param spec: the resource wanted
        """
        req = self.requirements(spec)
        log_warnings(req)
        if req.cpus is None and req.mem_mb is None:
            return req.warnings
        info = self.client.info()  # read-only: the engine's size
        where = f"{spec.deployment_id}/{spec.node_name}/{spec.index}"
        if req.cpus is not None and info.get("NCPU") and req.cpus > info["NCPU"]:
            raise UnsupportedNodeError(
                f"node '{spec.node_name}' of type '{spec.node_type}' asks for {req.cpus:g} CPUs; the engine has "
                f"{info['NCPU']}: lower cpus/num_cpus",
                provider=PROVIDER,
                resource=where,
            )
        if req.mem_mb is not None and info.get("MemTotal") and req.mem_mb * 1024**2 > info["MemTotal"]:
            raise UnsupportedNodeError(
                f"node '{spec.node_name}' of type '{spec.node_type}' asks for {req.mem_mb:.0f} MB; the engine has "
                f"{info['MemTotal'] / 1024**2:.0f} MB: lower memory/mem_size",
                provider=PROVIDER,
                resource=where,
            )
        return req.warnings

    # ------------------------------------------------------------------ describe
    def _containers(self, deployment_id: str, node_name: str | None = None, index: int | None = None) -> list[dict]:
        found = self.client.containers(all=True, filters=self._filters(deployment_id, node_name, index))
        return [c for c in found if _labels_match(c.get("Labels") or {}, deployment_id, node_name, index)]

    def _records(self, deployment_id: str, node_name: str | None = None, index: int | None = None) -> list[dict]:
        filters = self._filters(deployment_id, node_name, index)
        filters["label"].append(RECORD_LABEL)
        found = self.client.volumes(filters=filters).get("Volumes") or ()
        return [v for v in found if RECORD_LABEL in (v.get("Labels") or {})
                and _labels_match(v.get("Labels") or {}, deployment_id, node_name, index)]

    def _resource(self, inspected: Mapping[str, Any], state: ResourceState | None = None) -> Resource:
        labels = inspected["Config"]["Labels"]
        status = inspected["State"]
        native = status.get("Status", "")
        health = (status.get("Health") or {}).get("Status")
        if native == "running" and health:
            native = health
        job = labels.get(KIND_LABEL) == "job"
        if job and native == "exited":
            native = "complete" if status.get("ExitCode") == 0 else "failed"
        networks = (inspected.get("NetworkSettings") or {}).get("Networks") or {}
        private = next((n.get("IPAddress") for n in networks.values() if n.get("IPAddress")), None)
        endpoints: dict[str, str] = {}
        public_address = None
        for key, bound in ((inspected.get("NetworkSettings") or {}).get("Ports") or {}).items():
            for b in bound or ():
                ip = b.get("HostIp") or "0.0.0.0"
                public_address = public_address or (self.publish_address if ip == "0.0.0.0" else ip)
                endpoints[key] = f"{self.publish_address if ip == '0.0.0.0' else ip}:{b['HostPort']}"
                break
        attributes: dict[str, Any] = {
            "container_id": inspected["Id"],
            "name": inspected["Name"].lstrip("/"),
            "image": inspected["Config"].get("Image"),
            "native_state": native,
            "private_address": private,
            "public_address": public_address,
            # where INDIGO outputs read a Marathon service's address (marathon-lb's, once)
            "load_balancer_ips": [public_address] if public_address else [],
            "endpoints": endpoints,
            "endpoint": next(iter(endpoints.values()), None),
            "networks": sorted(networks),
        }
        if native in ("exited", "dead", "complete", "failed"):
            attributes["exit_code"] = status.get("ExitCode")
        if job:
            attributes["job_state"] = {"complete": "COMPLETE", "failed": "FAILED"}.get(native, "RUNNING")
        return Resource(
            *resource_of(labels),
            backend=PROVIDER,
            resource_id=inspected["Id"],
            state=state or self.normalize_state(native),
            attributes=attributes,
        )

    def _record_resource(self, volume: Mapping[str, Any], hosted: list[Resource],
                         state: ResourceState | None = None) -> Resource:
        """Return a record's resource; a runtime's ``publish_ports`` get the host ports of its live container."""
        labels = volume.get("Labels") or {}
        live_ports: dict[str, int] = {}
        for resource in hosted:
            for key, address in (resource.attributes.get("endpoints") or {}).items():
                live_ports[key] = int(address.rsplit(":", 1)[1])
        attributes = {**record_attributes(decode_record(labels.get(RECORD_LABEL)), live_ports),
                      "record": volume["Name"], "native_state": "record"}
        return Resource(*resource_of(labels), backend=PROVIDER, resource_id=volume["Name"],
                        state=state or self.normalize_state("record"), attributes=attributes)

    def _inspect(self, container_id: str) -> dict | None:
        try:
            return self.client.inspect_container(container_id)
        except self._errors().NotFound:
            return None

    def describe(self, deployment_id: str, node_name: str | None = None) -> list[Resource]:
        """Return the containers and records of a deployment (optionally of one node), sorted by node, index.

        :param deployment_id: the deployment's id
        :param node_name: only this node's
        """
        return self._describe(deployment_id, node_name)

    def _describe(self, deployment_id: str, node_name: str | None = None, index: int | None = None,
                  state: ResourceState | None = None) -> list[Resource]:
        found = []
        for summary in self._containers(deployment_id, node_name, index):
            inspected = self._inspect(summary["Id"])
            if inspected is not None:
                found.append(self._resource(inspected, state))
        records = self._records(deployment_id, node_name, index)
        if records:  # a runtime's published ports are those of the container hosted on it
            hosted = [(c["Labels"][HOST_LABEL], self._resource(inspected)) for c in self._containers(deployment_id)
                      if (c.get("Labels") or {}).get(HOST_LABEL) and (inspected := self._inspect(c["Id"]))]
            for volume in records:
                _, node, number = resource_of(volume.get("Labels") or {})
                mine = [r for host, r in hosted if host == node and r.index == number]
                found.append(self._record_resource(volume, mine, state))
        return sorted(found, key=lambda r: (r.node_name, r.index))

    # ------------------------------------------------------------------ create
    def create(self, spec: ResourceSpec, *, deadline: float | None = None) -> Resource:
        """Create the instance's container or record (or find it by its labels) and wait until it runs.

        A job's create waits until its container exits: code 0 is success, any other a
        :class:`ResourceCreateError` with the exit code and the end of its log.

        :param spec: the resource wanted
        :param deadline: a ``time.monotonic()`` limit on the wait, over ``ready_timeout`` (``job_timeout``)
        """
        self.check(spec)
        req = self.requirements(spec)
        where = f"{spec.deployment_id}/{spec.node_name}/{spec.index}"
        if req.kind == "record":
            return self._create_record(spec, req)
        existing = self._containers(spec.deployment_id, spec.node_name, spec.index)
        if existing:
            inspected = self._inspect(existing[0]["Id"])
            found = self._resource(inspected) if inspected is not None else None
            if found is not None and found.attributes["native_state"] == "complete":
                return found  # the job ran: a retried task does not run it again
            if found is not None and found.attributes["native_state"] not in ("dead", "failed"):
                if inspected["State"].get("Status") == "running":
                    return self._wait(spec, req, inspected["Id"], deadline)
                log.info(
                    "restarting the %s container %s of %s",
                    inspected["State"].get("Status"),
                    inspected["Id"][:12],
                    where,
                )
                self._call(where, self.client.start, inspected["Id"])
                return self._wait(spec, req, inspected["Id"], deadline)
            # a dead container cannot restart, and a failed job runs again from the start
            self.delete(spec.deployment_id, spec.node_name, spec.index)
        self._ensure_image(req.image, where, always=req.force_pull)
        try:
            network = self._ensure_network(spec.deployment_id)
            volumes = {self._ensure_volume(spec, v.name): v for v in req.volumes}
            container_id = self._create_container(spec, req, network, volumes)
            self._call(where, self.client.start, container_id)
            return self._wait(spec, req, container_id, deadline)
        except BaseException as err:
            try:
                self.delete(spec.deployment_id, spec.node_name, spec.index)
            except Exception as cleanup:  # never mask the cause: log the cleanup failure, raise the first
                log.error("cleanup of %s after a failed create failed too: %s", where, cleanup)
            if isinstance(err, BackendError):
                raise
            if isinstance(err, self._errors().DockerException):
                raise ResourceCreateError(
                    f"the Docker Engine refused: {err}", provider=PROVIDER, resource=where
                ) from err
            raise

    def _create_record(self, spec: ResourceSpec, req: ContainerRequirements) -> Resource:
        """Keep a record: an empty volume whose labels hold the node's attributes (creating it again is a no-op)."""
        name = self.container_name(spec)
        labels = {**spec.tags, MANAGED_BY_LABEL: MANAGED_BY, RECORD_LABEL: encode_record(req.record)}
        where = f"{spec.deployment_id}/{spec.node_name}/{spec.index}"
        self._call(where, self.client.create_volume, name, driver="local", labels=labels)
        found = self._describe(spec.deployment_id, spec.node_name, spec.index)
        record = next((r for r in found if r.resource_id == name), None)
        if record is None:
            raise ResourceCreateError(f"the record volume {name} vanished after its creation", provider=PROVIDER,
                                      resource=where)
        return record

    def _call(self, where: str, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except self._errors().APIError as err:
            raise ResourceCreateError(
                f"{getattr(method, '__name__', 'call')} failed: {err.explanation or err}",
                provider=PROVIDER,
                resource=where,
            ) from err

    def _ensure_image(self, image: str, where: str, *, always: bool = False) -> None:
        errors = self._errors()
        if not always:
            try:
                self.client.inspect_image(image)
                return
            except errors.NotFound:
                if not self.pull:
                    raise ResourceCreateError(
                        f"image {image!r} is not on the engine and pull=False; pull it first",
                        provider=PROVIDER,
                        resource=where,
                    ) from None
        elif not self.pull:
            return  # force_pull_image asks for a fresh pull; pull=False forbids any: use what the engine has
        repository, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
        try:
            for line in self.client.pull(repository, tag=tag, stream=True, decode=True):
                if isinstance(line, Mapping) and line.get("error"):
                    raise ResourceCreateError(
                        f"cannot pull image {image!r}: {line['error']}; check the name and the registry login "
                        f"(connection {self.conn_id or 'none'})",
                        provider=PROVIDER,
                        resource=where,
                    )
        except errors.APIError as err:
            raise ResourceCreateError(
                f"cannot pull image {image!r}: {err.explanation or err}; check the name and the registry login "
                f"(connection {self.conn_id or 'none'})",
                provider=PROVIDER,
                resource=where,
            ) from err

    def _ensure_network(self, deployment_id: str) -> str:
        name = self.network_name(deployment_id)
        labelled = self.client.networks(filters={"label": [f"{TAG_DEPLOYMENT}={deployment_id}"]})
        for net in labelled:
            if (net.get("Labels") or {}).get(TAG_DEPLOYMENT) == deployment_id:
                return net["Name"]
        self.client.create_network(
            name, driver="bridge", labels={TAG_DEPLOYMENT: deployment_id, MANAGED_BY_LABEL: MANAGED_BY}
        )
        return name

    def _ensure_volume(self, spec: ResourceSpec, volume: str) -> str:
        name = dns_name(SHORT_PREFIX, spec.deployment_id, spec.node_name, spec.index, volume, limit=120)
        # creating an existing named volume returns it: idempotent on the engine's side
        self.client.create_volume(name, driver="local", labels={**spec.tags, MANAGED_BY_LABEL: MANAGED_BY})
        return name

    def _create_container(
        self, spec: ResourceSpec, req: ContainerRequirements, network: str, volumes: Mapping[str, Any]
    ) -> str:
        client = self.client
        address = "0.0.0.0" if req.public else self.publish_address
        port_bindings = {p.key: (address, p.host_port) if p.host_port else (address,) for p in req.ports}
        if req.kind == "job":
            restart = {"Name": "on-failure", "MaximumRetryCount": req.retries} if req.retries else {"Name": "no"}
        else:
            restart = {"Name": "unless-stopped"}
        device_requests = None
        if req.gpus:
            import docker.types

            device_requests = [docker.types.DeviceRequest(driver=req.gpu_vendor or "", count=req.gpus,
                                                          capabilities=[["gpu"]])]
        host_config = client.create_host_config(
            port_bindings=port_bindings or None,
            binds={name: {"bind": v.path, "mode": "ro" if v.read_only else "rw"} for name, v in volumes.items()}
            or None,
            nano_cpus=int(req.cpus * 1e9) if req.cpus else None,
            mem_limit=int(req.mem_mb * 1024**2) if req.mem_mb else None,
            network_mode=network,
            restart_policy=restart,
            privileged=req.privileged,
            device_requests=device_requests,
        )
        networking = client.create_networking_config(
            {network: client.create_endpoint_config(aliases=[spec.node_name, f"{spec.node_name}-{spec.index}"])}
        )
        labels = {**req.labels, **spec.tags, MANAGED_BY_LABEL: MANAGED_BY}  # our tags win over the template's
        if req.kind == "job":
            labels[KIND_LABEL] = "job"
        if req.host:
            labels[HOST_LABEL] = req.host
        command = req.args or req.command
        created = client.create_container(
            req.image,
            command=list(command) if command else None,
            name=self.container_name(spec),
            hostname=dns_name(spec.node_name, spec.index),
            environment=req.live_environment(self._attributes(spec.deployment_id)) or None,
            labels=labels,
            ports=[(p.container_port, p.protocol) if p.protocol != "tcp" else p.container_port for p in req.ports]
            or None,
            host_config=host_config,
            networking_config=networking,
        )
        return created["Id"]

    def _attributes(self, deployment_id: str):
        def read(node_name: str) -> list[Mapping[str, Any]]:
            return [r.attributes for r in self.describe(deployment_id, node_name)]

        return read

    def _wait(self, spec: ResourceSpec, req: ContainerRequirements, container_id: str,
              deadline: float | None) -> Resource:
        where = f"{spec.deployment_id}/{spec.node_name}/{spec.index}"
        job = req.kind == "job"

        def read() -> tuple[dict, Resource] | None:
            inspected = self._inspect(container_id)
            return None if inspected is None else (inspected, self._resource(inspected))

        def failed(found: tuple[dict, Resource] | None) -> str | None:
            if found is None:
                return f"container {container_id[:12]} vanished while starting"
            inspected, resource = found
            if job and resource.attributes["native_state"] == "failed":
                return (f"the job's container {container_id[:12]} ({inspected['Config'].get('Image')}) FAILED: exit "
                        f"code {inspected['State'].get('ExitCode')}; its log ends with: {self._log_tail(container_id)}")
            if not job and resource.state in (ResourceState.STOPPED, ResourceState.ERROR) and (
                    inspected["State"].get("Status") != "created"):
                return (f"container {container_id[:12]} ({inspected['Config'].get('Image')}) is "
                        f"{resource.attributes['native_state']} (exit code {inspected['State'].get('ExitCode')}); "
                        f"its log ends with: {self._log_tail(container_id)}")
            return None

        def done(found: tuple[dict, Resource] | None) -> bool:
            if found is None:
                return False
            return found[1].attributes["native_state"] == "complete" if job else (
                found[1].state == ResourceState.RUNNING)

        _, resource = poll_until(
            read, done,
            timeout=self.job_timeout if job else self.ready_timeout, deadline=deadline, interval=self.poll_interval,
            what=f"job container {container_id[:12]} complete" if job else f"container {container_id[:12]} running",
            provider=PROVIDER, resource=where, failed=failed,
            failure=lambda reason: ResourceCreateError(reason, provider=PROVIDER, resource=where),
            status=lambda found: f"state {found[1].attributes['native_state']}" if found else "gone",
            hint="raise job_timeout" if job else "raise ready_timeout, or check the image")
        return resource

    def _log_tail(self, container_id: str, lines: int = 20) -> str:
        try:
            text = self.client.logs(container_id, stdout=True, stderr=True, tail=lines)
        except self._errors().APIError as err:
            return f"(no log: {err.explanation or err})"
        return (text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)).strip() or "(empty)"

    # ------------------------------------------------------------------ delete
    def delete(self, deployment_id: str, node_name: str | None = None, index: int | None = None) -> list[Resource]:
        """Remove containers (then their volumes and records, then the network once the deployment has none).

        :param deployment_id: the deployment's id
        :param node_name: only this node's containers
        :param index: only this instance
        """
        errors = self._errors()
        deleted = [self._record_resource(v, [], ResourceState.DELETED)
                   for v in self._records(deployment_id, node_name, index)]
        for summary in self._containers(deployment_id, node_name, index):
            inspected = self._inspect(summary["Id"])
            if inspected is None:
                continue
            if inspected["State"].get("Running"):
                try:
                    self.client.stop(summary["Id"], timeout=self.stop_timeout)
                except errors.NotFound:
                    pass
            try:
                self.client.remove_container(summary["Id"], force=True)
            except errors.NotFound:
                pass
            deleted.append(self._resource(inspected, ResourceState.DELETED))
        for volume in self.client.volumes(filters=self._filters(deployment_id, node_name, index)).get("Volumes") or ():
            if _labels_match(volume.get("Labels") or {}, deployment_id, node_name, index):
                try:
                    self.client.remove_volume(volume["Name"])
                except errors.NotFound:
                    pass
        if not self._containers(deployment_id):
            for net in self.client.networks(filters={"label": [f"{TAG_DEPLOYMENT}={deployment_id}"]}):
                if (net.get("Labels") or {}).get(TAG_DEPLOYMENT) == deployment_id:
                    try:
                        self.client.remove_network(net["Id"])
                    except errors.NotFound:
                        pass
        return sorted(deleted, key=lambda r: (r.node_name, r.index))


def _labels_match(labels: Mapping[str, str], deployment_id: str, node_name: str | None, index: int | None) -> bool:
    """Filter again on our side: an engine (or proxy) that ignores label filters must not widen a delete."""
    return tags_match(labels, tag_selector(deployment_id, node_name, index))
