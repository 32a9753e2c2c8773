"""The Docker backend: each node instance is a container on one Docker Engine.

Everything goes through the docker provider's :class:`~airflow.providers.docker.hooks.docker.DockerHook`
(its low-level ``docker.APIClient``). Per deployment there is one bridge network (``cp-<deployment>``);
per instance one container (``cp-<deployment>-<node>-<index>``) and, when the node asks for persistent
data, one named volume mounted at its ``data_path``. Every container, volume and network carries the
``cloud-paas-*`` labels (the tags of :mod:`airflow_cloud_paas.backends.base`), so a retried ``create``
finds its container and ``delete`` finds everything, even of a half-created deployment.

Node types:

- anything derived from ``tosca.nodes.Container.Application`` (the packaged ``cloud_paas.nodes.Container``,
  INDIGO's ``tosca.nodes.indigo.Container.Application.Docker`` given an ``image`` property): the
  container of its ``image``, with ``command``, ``environment``, ``cpus``, ``memory``, ``data_path``;
- anything derived from ``tosca.nodes.Compute``: a placeholder "host" container of ``compute_image``
  sized by the ``host`` capability (``num_cpus``, ``mem_size``).

Published ports come from the endpoint capabilities (``port``, or INDIGO ``ports`` with ``source`` = the
container port and optional ``target`` = the host port) and the ``ports`` property; they are bound to
``publish_address`` (127.0.0.1) unless an endpoint's ``network_name`` is ``PUBLIC`` (then 0.0.0.0).
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
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
from airflow_cloud_paas.backends.mapping import size_mb
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
CONTAINER_TYPE = "tosca.nodes.Container.Application"
COMPUTE_TYPE = "tosca.nodes.Compute"
DEFAULT_COMPUTE_IMAGE = "busybox:stable"
DEFAULT_COMPUTE_COMMAND = ("sleep", "infinity")
_PROTOCOLS = ("tcp", "udp", "sctp")


# ---------------------------------------------------------------------- what a container node asks for
@dataclass(frozen=True)
class PortBinding:
    """One published port: the container's port, its protocol, and the host port (None: any free one)."""

    container_port: int
    protocol: str = "tcp"
    host_port: int | None = None

    @property
    def key(self) -> str:
        """Return Docker's port key (``8080/tcp``)."""
        return f"{self.container_port}/{self.protocol}"


@dataclass(frozen=True)
class ContainerRequirements:
    """What one container or host node asks of a container engine (Docker or Kubernetes).

    :param kind: ``container`` (an application image) or ``compute`` (a placeholder host)
    :param image: the image reference
    :param command: the command (None: the image's own)
    :param environment: environment variables
    :param cpus: CPUs (fractions allowed; None: no limit)
    :param mem_mb: memory limit in MB (None: no limit)
    :param data_path: where persistent data is mounted (None: no volume)
    :param ports: the published ports
    :param public: whether the ports are published on every address, not only loopback
    """

    kind: str
    image: str
    command: tuple[str, ...] | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    cpus: float | None = None
    mem_mb: float | None = None
    data_path: str | None = None
    ports: tuple[PortBinding, ...] = ()
    public: bool = False

    @classmethod
    def from_spec(
        cls,
        spec: ResourceSpec,
        *,
        provider: str,
        compute_image: str = DEFAULT_COMPUTE_IMAGE,
        compute_command: tuple[str, ...] | None = DEFAULT_COMPUTE_COMMAND,
    ) -> ContainerRequirements:
        """Read a node's properties and capabilities; raise :class:`UnsupportedNodeError` if unusable.

        :param spec: the node instance wanted
        :param provider: the backend's name (for errors)
        :param compute_image: the image of a Compute (host) node without an ``os.image``
        :param compute_command: the command that keeps a host container alive
        """
        where = f"{spec.deployment_id}/{spec.node_name}/{spec.index}"

        def unsupported(message: str) -> UnsupportedNodeError:
            return UnsupportedNodeError(
                f"node '{spec.node_name}' of type '{spec.node_type}': {message}", provider=provider, resource=where
            )

        props = dict(spec.properties)
        host = dict(spec.capabilities.get("host") or {})
        if spec.is_a(CONTAINER_TYPE):
            kind, image = "container", props.get("image")
            if not image or not isinstance(image, str):
                raise unsupported("needs an 'image' property (an image reference such as 'nginx:1.27')")
            command = _command(props.get("command"))
        elif spec.is_a(COMPUTE_TYPE):
            kind = "compute"
            image = (spec.capabilities.get("os") or {}).get("image") or compute_image
            command = tuple(compute_command) if compute_command else None
        else:
            raise unsupported(
                f"{provider} runs only types derived from {CONTAINER_TYPE} or {COMPUTE_TYPE}; "
                "deploy this node on another backend"
            )
        env = props.get("environment") or props.get("environment_variables") or {}
        if not isinstance(env, Mapping):
            raise unsupported(f"'environment' must be a map of strings, got {type(env).__name__}")
        try:
            cpus = props.get("cpus") if props.get("cpus") is not None else host.get("num_cpus")
            cpus = float(cpus) if cpus is not None else None
            mem = size_mb(
                props.get("memory") if props.get("memory") is not None else host.get("mem_size"), field="memory"
            )
        except (TypeError, ValueError) as err:
            raise unsupported(str(err)) from None
        if cpus is not None and cpus <= 0:
            raise unsupported(f"cpus must be > 0, got {cpus}")
        data_path = props.get("data_path") or None
        if data_path is not None and not str(data_path).startswith("/"):
            raise unsupported(f"data_path must be an absolute path in the container, got {data_path!r}")
        ports, public = _ports(spec, unsupported)
        return cls(
            kind=kind,
            image=str(image),
            command=command,
            environment={str(k): str(v) for k, v in env.items()},
            cpus=cpus,
            mem_mb=mem or None,
            data_path=str(data_path) if data_path else None,
            ports=ports,
            public=public,
        )


def _command(value: Any) -> tuple[str, ...] | None:
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return tuple(shlex.split(value))
    return tuple(str(v) for v in value)


def _ports(spec: ResourceSpec, unsupported) -> tuple[tuple[PortBinding, ...], bool]:
    """Collect the published ports from the endpoint capabilities and the ``ports`` property."""
    entries: list[Mapping[str, Any]] = []
    public = False
    for cap in spec.capabilities.values():
        if not isinstance(cap, Mapping):
            continue
        if str(cap.get("network_name") or "").upper() == "PUBLIC":
            public = True
        if cap.get("port") is not None and ("network_name" in cap or "protocol" in cap):
            entries.append({"source": cap["port"], "protocol": cap.get("protocol", "tcp")})
        listed = cap.get("ports") or cap.get("publish_ports") or {}
        entries.extend(
            e for e in (listed.values() if isinstance(listed, Mapping) else listed) if isinstance(e, Mapping)
        )
    for entry in spec.properties.get("ports") or ():
        entries.append(entry if isinstance(entry, Mapping) else {"source": entry})
    found: dict[str, PortBinding] = {}
    for entry in entries:
        try:
            port = int(entry.get("source", entry.get("port")))
            host_port = int(entry["target"]) if entry.get("target") is not None else None
        except (TypeError, ValueError):
            raise unsupported(f"port {dict(entry)!r} is not a number") from None
        protocol = str(entry.get("protocol") or "tcp").lower()
        if protocol not in _PROTOCOLS:
            raise unsupported(f"protocol {protocol!r} is not one of {', '.join(_PROTOCOLS)}")
        for number in (port, host_port):
            if number is not None and not 0 < number < 65536:
                raise unsupported(f"port {number} is outside 1-65535")
        binding = PortBinding(port, protocol, host_port)
        found.setdefault(binding.key, binding)
    return tuple(found.values()), public


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

    def check(self, spec: ResourceSpec) -> None:
        """Validate the node and that it fits the engine's CPUs and memory; touch nothing.

        :param spec: the resource wanted
        """
        req = self.requirements(spec)
        if req.cpus is None and req.mem_mb is None:
            return
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

    # ------------------------------------------------------------------ describe
    def _containers(self, deployment_id: str, node_name: str | None = None, index: int | None = None) -> list[dict]:
        found = self.client.containers(all=True, filters=self._filters(deployment_id, node_name, index))
        return [c for c in found if _labels_match(c.get("Labels") or {}, deployment_id, node_name, index)]

    def _resource(self, inspected: Mapping[str, Any], state: ResourceState | None = None) -> Resource:
        labels = inspected["Config"]["Labels"]
        status = inspected["State"]
        native = status.get("Status", "")
        health = (status.get("Health") or {}).get("Status")
        if native == "running" and health:
            native = health
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
            "endpoints": endpoints,
            "endpoint": next(iter(endpoints.values()), None),
            "networks": sorted(networks),
        }
        if native in ("exited", "dead"):
            attributes["exit_code"] = status.get("ExitCode")
        return Resource(
            *resource_of(labels),
            backend=PROVIDER,
            resource_id=inspected["Id"],
            state=state or self.normalize_state(native),
            attributes=attributes,
        )

    def _inspect(self, container_id: str) -> dict | None:
        try:
            return self.client.inspect_container(container_id)
        except self._errors().NotFound:
            return None

    def describe(self, deployment_id: str, node_name: str | None = None) -> list[Resource]:
        """Return the containers of a deployment (optionally of one node), sorted by node, index.

        :param deployment_id: the deployment's id
        :param node_name: only this node's containers
        """
        found = []
        for summary in self._containers(deployment_id, node_name):
            inspected = self._inspect(summary["Id"])
            if inspected is not None:
                found.append(self._resource(inspected))
        return sorted(found, key=lambda r: (r.node_name, r.index))

    # ------------------------------------------------------------------ create
    def create(self, spec: ResourceSpec, *, deadline: float | None = None) -> Resource:
        """Create the instance's container (or find it by its labels) and wait until it runs.

        :param spec: the resource wanted
        :param deadline: a ``time.monotonic()`` limit on the wait, over ``ready_timeout``
        """
        self.check(spec)
        req = self.requirements(spec)
        where = f"{spec.deployment_id}/{spec.node_name}/{spec.index}"
        existing = self._containers(spec.deployment_id, spec.node_name, spec.index)
        if existing:
            inspected = self._inspect(existing[0]["Id"])
            if inspected is not None and inspected["State"].get("Status") != "dead":
                if inspected["State"].get("Status") == "running":
                    return self._wait(spec, inspected["Id"], deadline)
                log.info(
                    "restarting the %s container %s of %s",
                    inspected["State"].get("Status"),
                    inspected["Id"][:12],
                    where,
                )
                self._call(where, self.client.start, inspected["Id"])
                return self._wait(spec, inspected["Id"], deadline)
            self.delete(spec.deployment_id, spec.node_name, spec.index)  # a dead container cannot restart
        self._ensure_image(req.image, where)
        try:
            network = self._ensure_network(spec.deployment_id)
            volume = self._ensure_volume(spec) if req.data_path else None
            container_id = self._create_container(spec, req, network, volume)
            self._call(where, self.client.start, container_id)
            return self._wait(spec, container_id, deadline)
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

    def _call(self, where: str, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except self._errors().APIError as err:
            raise ResourceCreateError(
                f"{getattr(method, '__name__', 'call')} failed: {err.explanation or err}",
                provider=PROVIDER,
                resource=where,
            ) from err

    def _ensure_image(self, image: str, where: str) -> None:
        errors = self._errors()
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

    def _ensure_volume(self, spec: ResourceSpec) -> str:
        name = dns_name(SHORT_PREFIX, spec.deployment_id, spec.node_name, spec.index, "data", limit=120)
        # creating an existing named volume returns it: idempotent on the engine's side
        self.client.create_volume(name, driver="local", labels={**spec.tags, MANAGED_BY_LABEL: MANAGED_BY})
        return name

    def _create_container(
        self, spec: ResourceSpec, req: ContainerRequirements, network: str, volume: str | None
    ) -> str:
        client = self.client
        address = "0.0.0.0" if req.public else self.publish_address
        port_bindings = {p.key: (address, p.host_port) if p.host_port else (address,) for p in req.ports}
        host_config = client.create_host_config(
            port_bindings=port_bindings or None,
            binds={volume: {"bind": req.data_path, "mode": "rw"}} if volume else None,
            nano_cpus=int(req.cpus * 1e9) if req.cpus else None,
            mem_limit=int(req.mem_mb * 1024**2) if req.mem_mb else None,
            network_mode=network,
            restart_policy={"Name": "unless-stopped"},
        )
        networking = client.create_networking_config(
            {network: client.create_endpoint_config(aliases=[spec.node_name, f"{spec.node_name}-{spec.index}"])}
        )
        created = client.create_container(
            req.image,
            command=list(req.command) if req.command else None,
            name=self.container_name(spec),
            hostname=dns_name(spec.node_name, spec.index),
            environment=dict(req.environment) or None,
            labels={**spec.tags, MANAGED_BY_LABEL: MANAGED_BY},
            ports=[(p.container_port, p.protocol) if p.protocol != "tcp" else p.container_port for p in req.ports]
            or None,
            host_config=host_config,
            networking_config=networking,
        )
        return created["Id"]

    def _wait(self, spec: ResourceSpec, container_id: str, deadline: float | None) -> Resource:
        where = f"{spec.deployment_id}/{spec.node_name}/{spec.index}"

        def read() -> tuple[dict, Resource] | None:
            inspected = self._inspect(container_id)
            return None if inspected is None else (inspected, self._resource(inspected))

        def failed(found: tuple[dict, Resource] | None) -> str | None:
            if found is None:
                return f"container {container_id[:12]} vanished while starting"
            inspected, resource = found
            if resource.state in (ResourceState.STOPPED, ResourceState.ERROR) and (
                    inspected["State"].get("Status") != "created"):
                return (f"container {container_id[:12]} ({inspected['Config'].get('Image')}) is "
                        f"{resource.attributes['native_state']} (exit code {inspected['State'].get('ExitCode')}); "
                        f"its log ends with: {self._log_tail(container_id)}")
            return None

        _, resource = poll_until(
            read, lambda found: found is not None and found[1].state == ResourceState.RUNNING,
            timeout=self.ready_timeout, deadline=deadline, interval=self.poll_interval,
            what=f"container {container_id[:12]} running", provider=PROVIDER, resource=where, failed=failed,
            failure=lambda reason: ResourceCreateError(reason, provider=PROVIDER, resource=where),
            status=lambda found: f"state {found[1].attributes['native_state']}" if found else "gone",
            hint="raise ready_timeout, or check the image")
        return resource

    def _log_tail(self, container_id: str, lines: int = 20) -> str:
        try:
            text = self.client.logs(container_id, stdout=True, stderr=True, tail=lines)
        except self._errors().APIError as err:
            return f"(no log: {err.explanation or err})"
        return (text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)).strip() or "(empty)"

    # ------------------------------------------------------------------ delete
    def delete(self, deployment_id: str, node_name: str | None = None, index: int | None = None) -> list[Resource]:
        """Remove containers (then their volumes, then the network once the deployment has none).

        :param deployment_id: the deployment's id
        :param node_name: only this node's containers
        :param index: only this instance
        """
        errors = self._errors()
        deleted = []
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
