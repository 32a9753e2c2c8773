"""Local drivers for SLURM: a controller (munged + slurmctld) and workers (slurmd) as real processes on loopback.

Registered with the local backend for ``cloud_paas.nodes.slurm.Controller`` / ``Worker`` and for INDIGO's
``tosca.nodes.indigo.LRMS.FrontEnd.Slurm`` / ``WorkerNode.Slurm`` (the INDIGO elastic-cluster examples deploy
with them; their Ansible roles are not run here). The cluster is the one
:class:`~airflow_cloud_paas.services.slurm.cluster.LocalSlurmCluster` runs, split along the backend's instances:

- the controller's instance directory holds slurm.conf, munge's key and socket, the spool and every daemon's
  log; its process group is munged and slurmctld (a shell starts munged, waits for its socket, then becomes
  slurmctld), so the backend's stop takes both;
- worker instance ``i`` runs the FUTURE slot ``<prefix><i+1>`` of that slurm.conf (``slurmd -N``): it is ready
  when slurmctld lists it as responding. Before its slurmd stops the node is drained and the step daemons of its
  jobs (slurmstepd, which outlive slurmd) are killed; after, the slot is hidden again (``state=FUTURE``).

Who decides when a worker comes and goes is the shared elastic engine (see the cluster module): a worker that is
busy is never retired because the engine drains it and checks it again first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow_cloud_paas.backends.base import ResourceSpec
from airflow_cloud_paas.backends.local import PROVIDER, RECORD_FILE, Launch, LocalDriver, ProcessRecord
from airflow_cloud_paas.exceptions import ResourceCreateError, UnsupportedNodeError
from airflow_cloud_paas.services.slurm.client import SlurmClient
from airflow_cloud_paas.services.slurm.cluster import LocalSlurmCluster, kill_tree, step_daemons
from airflow_cloud_paas.services.slurm.config import (
    MAX_SOCKET_PATH,
    ClusterSpec,
    render_slurm_conf,
    validate_cpus,
)
from airflow_cloud_paas.services.slurm.errors import SlurmClusterError, SlurmCommandError, SlurmConfigError

log = logging.getLogger(__name__)

CONTROLLER_TYPES = ("cloud_paas.nodes.slurm.Controller", "tosca.nodes.indigo.LRMS.FrontEnd.Slurm")
WORKER_TYPES = ("cloud_paas.nodes.slurm.Worker", "tosca.nodes.indigo.LRMS.WorkerNode.Slurm")
#: worker slots of an INDIGO front end whose ``wn_num`` is not set (slots cost a port each, nothing more)
DEFAULT_INDIGO_SLOTS = 16
#: seconds munged has to create its socket before the controller's shell gives up
MUNGE_START_S = 30
_RETIRED = "retired by airflow_cloud_paas"
#: bytes a job step's socket path takes after slurmd's spool directory (``/<node>/<node>_<job>.<step>``)
_STEP_SOCKET_ROOM = 60


def _where(spec: ResourceSpec) -> str:
    return f"{spec.deployment_id}/{spec.node_name}"


def _unsupported(spec: ResourceSpec, message: str) -> UnsupportedNodeError:
    return UnsupportedNodeError(f"node '{spec.node_name}' ({spec.node_type}): {message}", provider=PROVIDER,
                                resource=_where(spec))


def _check_installed(spec: ResourceSpec) -> dict[str, str]:
    try:
        return LocalSlurmCluster.executables()
    except SlurmClusterError as err:
        raise _unsupported(spec, err.message) from err


def socket_dir(work_dir: Path) -> Path | None:
    """Return a short directory for the cluster's sockets when those under ``work_dir`` would be too long, else None.

    A job step's socket is ``<spool>/<node>/<node>_<job id>.<step id>``: up to about 60 bytes after the spool.

    :param work_dir: the controller instance's directory
    """
    if len(str(work_dir / "spool")) <= MAX_SOCKET_PATH - _STEP_SOCKET_ROOM:
        return None
    digest = hashlib.sha256(str(work_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"cloud-paas-slurm-{os.getuid()}-{digest}"


def cluster_spec(spec: ResourceSpec, work_dir: Path) -> ClusterSpec:
    """Return the local cluster a controller node describes (its properties checked: SlurmConfigError names one).

    :param spec: the controller node's resource
    :param work_dir: the controller instance's directory
    """
    props = spec.properties
    if spec.is_a("tosca.nodes.indigo.LRMS.FrontEnd.Slurm") and not spec.is_a(CONTROLLER_TYPES[0]):
        wn_num = props.get("wn_num")
        max_workers = wn_num if isinstance(wn_num, int) and not isinstance(wn_num, bool) and wn_num > 0 \
            else DEFAULT_INDIGO_SLOTS
        return ClusterSpec(work_dir, max_workers=max_workers, socket_dir=socket_dir(work_dir))
    return ClusterSpec(
        work_dir,
        socket_dir=socket_dir(work_dir),
        max_workers=props.get("max_workers", 4),
        cpus_per_worker=props.get("worker_cpus", 1),
        memory_mb=props.get("worker_memory_mb", 1000),
        cluster_name=props.get("cluster_name", "cloudpaas"),
        partition=props.get("partition", "main"),
        max_time=props.get("max_time", "INFINITE"),
    )


def _munge_key(spec: ResourceSpec) -> bytes | None:
    text = spec.properties.get("munge_key") or ""
    if not text:
        return None
    try:
        key = base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise SlurmConfigError("the munge key is base64 text", field="munge_key", value="(hidden)") from None
    if not 32 <= len(key) <= 1024:
        raise SlurmConfigError("a munge key is 32 to 1024 bytes once decoded", field="munge_key", value="(hidden)")
    return key


class SlurmControllerDriver(LocalDriver):
    """Run a cluster's munged and slurmctld on 127.0.0.1, with a FUTURE slot (and a slurmd port) per worker."""

    def check(self, spec: ResourceSpec) -> None:
        """Raise :class:`UnsupportedNodeError` without SLURM and munge; :class:`SlurmConfigError` for bad properties.

        :param spec: the resource wanted
        """
        _check_installed(spec)
        cluster_spec(spec, Path("/") / "check")
        _munge_key(spec)

    def ports(self, spec: ResourceSpec) -> dict[str, int]:
        """Return slurmctld's port and one slurmd port per worker slot (all picked free).

        :param spec: the resource wanted
        """
        names = cluster_spec(spec, Path("/") / "check").worker_names
        return {"slurmctld": 0, **{f"slurmd_{name}": 0 for name in names}}

    def command(self, spec: ResourceSpec, work_dir: Path, ports: Mapping[str, int]) -> Launch:
        """Write slurm.conf and munge's key; return the shell that starts munged, then becomes slurmctld.

        :param spec: the resource wanted
        :param work_dir: the instance's directory (the cluster's files)
        :param ports: the chosen ports
        """
        cluster = cluster_spec(spec, work_dir)
        exe = _check_installed(spec)
        for directory in (cluster.log_dir, cluster.spool_dir / "slurmctld"):
            directory.mkdir(parents=True, exist_ok=True)
        for directory in {cluster.munge_dir, cluster.munge_socket.parent}:
            directory.mkdir(mode=0o711, parents=True, exist_ok=True)
            os.chmod(directory, 0o711)  # munged wants a directory others cannot write; clients enter it
        cluster.slurmd_spool_dir.mkdir(parents=True, exist_ok=True)
        if not cluster.munge_key.exists():  # kept across restarts: workers and clients hold credentials of it
            fd = os.open(cluster.munge_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "wb") as key:
                key.write(_munge_key(spec) or os.urandom(1024))
        slurmd_ports = {name: ports[f"slurmd_{name}"] for name in cluster.worker_names}
        cluster.slurm_conf.write_text(render_slurm_conf(cluster, controller_port=ports["slurmctld"],
                                                        slurmd_ports=slurmd_ports))
        munge = cluster.munge_dir
        munged = shlex.join([
            exe["munged"], "--foreground", "--force", f"--key-file={cluster.munge_key}",
            f"--socket={cluster.munge_socket}", f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}",
        ])
        socket = shlex.quote(str(cluster.munge_socket))
        slurmctld = shlex.join([exe["slurmctld"], "-D", "-c", "-f", str(cluster.slurm_conf)])
        # munged in the background of the same process group; slurmctld replaces the shell once munge answers
        script = (f"rm -f {socket}; {munged} & i=0; while [ ! -S {socket} ]; do "
                  f"i=$((i+1)); if [ $i -gt {MUNGE_START_S * 10} ] || ! kill -0 $! 2>/dev/null; then "
                  f"echo 'munged did not start' >&2; exit 1; fi; sleep 0.1; done; exec {slurmctld}")
        data = {"slurm_conf": str(cluster.slurm_conf), "munge_socket": str(cluster.munge_socket),
                "log_dir": str(cluster.log_dir), "workers": cluster.worker_names,
                "cluster_name": cluster.cluster_name, "partition": cluster.partition,
                "worker_cpus": cluster.cpus_per_worker, "worker_memory_mb": cluster.memory_mb}
        return Launch(argv=("/bin/sh", "-c", script), env={"SLURM_CONF": str(cluster.slurm_conf)}, data=data)

    def ready(self, record: ProcessRecord) -> bool:
        """Return whether slurmctld answers ``scontrol ping``.

        :param record: the instance's record
        """
        return SlurmClient(record.data["slurm_conf"], timeout=5).ping()

    def attributes(self, spec: ResourceSpec, record: ProcessRecord) -> dict[str, Any]:
        """Return slurm_conf, controller (host:port), the worker slots and the partition.

        :param spec: the resource wanted
        :param record: the instance's record
        """
        return {
            "slurm_conf": record.data["slurm_conf"],
            "controller": f"127.0.0.1:{record.ports['slurmctld']}",
            "port": record.ports["slurmctld"],
            "cluster_name": record.data["cluster_name"],
            "partition": record.data["partition"],
            "worker_slots": list(record.data["workers"]),
            "public_address": "127.0.0.1",
            "private_address": "127.0.0.1",
        }

    def before_stop(self, record: ProcessRecord) -> None:
        """Cancel the cluster's jobs, so they end as cancelled rather than orphaned; best effort.

        :param record: the instance's record
        """
        try:
            SlurmClient(record.data["slurm_conf"], timeout=5).run("scancel", "--full", "--user",
                                                                  str(os.getuid()))
        except SlurmCommandError as err:
            log.info("could not cancel the jobs before stopping slurmctld: %s", err)

    def after_stop(self, record: ProcessRecord) -> None:
        """Remove the cluster's short socket directory, when it had one outside the instance's directory.

        :param record: the instance's record
        """
        socket = record.data.get("munge_socket")
        if socket and not Path(socket).is_relative_to(record.work_dir):
            shutil.rmtree(Path(socket).parent, ignore_errors=True)  # munged's socket and the slurmd spools


def _controller_record(spec: ResourceSpec, work_dir: Path) -> Mapping[str, Any] | None:
    """Return the controller's attributes: from the ``controller`` requirement, else its deployment's front end.

    INDIGO's worker nodes name their front end only by address (``front_end_ip``), so on the local backend the
    front end is the SLURM controller of the same deployment (its record in the deployment's directory).
    """
    for resources in spec.requirements.values():
        for resource in resources:
            if resource.attributes.get("slurm_conf"):
                return resource.attributes
    deployment_dir = work_dir.parent.parent
    for path in sorted(deployment_dir.glob(f"*/*/{RECORD_FILE}")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        types = {record.get("node_type"), *(record.get("type_hierarchy") or ())}
        if types & set(CONTROLLER_TYPES) and (record.get("attributes") or {}).get("slurm_conf"):
            return record["attributes"]
    return None


class SlurmWorkerDriver(LocalDriver):
    """Run one worker slot's slurmd on 127.0.0.1 (instance ``i`` is slot ``<prefix><i+1>``)."""

    def check(self, spec: ResourceSpec) -> None:
        """Raise :class:`UnsupportedNodeError` without SLURM; :class:`SlurmConfigError` for bad CPUs or memory.

        :param spec: the resource wanted
        """
        _check_installed(spec)
        cpus = spec.properties.get("cpus", 0)
        if cpus not in (0, None):
            validate_cpus(cpus, field=f"{spec.node_name}.cpus")
        memory = spec.properties.get("memory_mb", 0)
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 0:
            raise SlurmConfigError("memory is a whole number of MB (0: the controller's)",
                                   field=f"{spec.node_name}.memory_mb", value=memory)

    def command(self, spec: ResourceSpec, work_dir: Path, ports: Mapping[str, int]) -> Launch:
        """Return ``slurmd -D -N <slot>`` against the controller's slurm.conf.

        :param spec: the resource wanted
        :param work_dir: the instance's directory
        :param ports: none (the slot's port is in slurm.conf)
        """
        controller = _controller_record(spec, work_dir)
        where = f"{_where(spec)}/{spec.index}"
        if controller is None:
            raise ResourceCreateError(f"node '{spec.node_name}' needs its SLURM controller running first: none found "
                                      "in its requirements or its deployment", provider=PROVIDER, resource=where)
        slots = list(controller.get("worker_slots") or [])
        if spec.index >= len(slots):
            raise ResourceCreateError(f"worker index {spec.index} has no slot: the controller declares {len(slots)} "
                                      "worker slots (raise its max_workers, or the INDIGO front end's wn_num)",
                                      provider=PROVIDER, resource=where)
        cpus, memory = spec.properties.get("cpus") or 0, spec.properties.get("memory_mb") or 0
        conf = Path(controller["slurm_conf"])
        offered = _conf_node(conf, slots[spec.index])
        if cpus and str(cpus) != offered.get("CPUs"):
            raise UnsupportedNodeError(f"node '{spec.node_name}' asks {cpus} CPUs but its controller's slots have "
                                       f"{offered.get('CPUs')}: set the controller's worker_cpus (or cpus: 0)",
                                       provider=PROVIDER, resource=where)
        if memory and str(memory) != offered.get("RealMemory"):
            raise UnsupportedNodeError(f"node '{spec.node_name}' asks {memory} MB but its controller's slots have "
                                       f"{offered.get('RealMemory')}: set the controller's worker_memory_mb",
                                       provider=PROVIDER, resource=where)
        name = slots[spec.index]
        slurmd = _check_installed(spec)["slurmd"]
        log_dir = Path(_conf_setting(conf, "SlurmdLogFile") or "").parent
        data = {"slurm_conf": str(conf), "slurm_node": name, "cpus": int(offered.get("CPUs", 1)),
                "slurmd_log": str(log_dir / f"slurmd-{name}.log")}
        return Launch(argv=(slurmd, "-D", "-f", str(conf), "-N", name), env={"SLURM_CONF": str(conf)}, data=data)

    def ready(self, record: ProcessRecord) -> bool:
        """Return whether slurmctld lists the slot as responding (its slurmd registered).

        :param record: the instance's record
        """
        client = SlurmClient(record.data["slurm_conf"], timeout=5)
        try:
            node = client.node(record.data["slurm_node"])
        except SlurmCommandError:
            return False
        if node.responding and node.draining and node.reason == _RETIRED:
            client.resume(node.name)  # a slot retired earlier keeps its drain: this is a new worker
            return False
        return node.responding and not node.draining

    def attributes(self, spec: ResourceSpec, record: ProcessRecord) -> dict[str, Any]:
        """Return slurm_node (what the elastic probe matches), cpus and the addresses.

        :param spec: the resource wanted
        :param record: the instance's record
        """
        return {"slurm_node": record.data["slurm_node"], "cores": record.data["cpus"],
                "slurm_conf": record.data["slurm_conf"], "public_address": "127.0.0.1",
                "private_address": "127.0.0.1"}

    def before_stop(self, record: ProcessRecord) -> None:
        """Drain the node, then kill its jobs' step daemons (the engine retires only idle workers).

        :param record: the instance's record
        """
        if "slurm_node" not in record.data:
            return
        try:
            SlurmClient(record.data["slurm_conf"], timeout=5).drain(record.data["slurm_node"], _RETIRED)
        except SlurmCommandError as err:
            log.info("could not drain %s before stopping it: %s", record.data["slurm_node"], err)
        for stepd in step_daemons({record.data["slurmd_log"]}):
            kill_tree(stepd)

    def after_stop(self, record: ProcessRecord) -> None:
        """Kill step daemons that outlived slurmd, and hide the slot again (``state=FUTURE``).

        :param record: the instance's record
        """
        if "slurm_node" not in record.data:
            return  # it failed before its slurmd was chosen
        for stepd in step_daemons({record.data["slurmd_log"]}):
            kill_tree(stepd, signal.SIGKILL)
        try:
            SlurmClient(record.data["slurm_conf"], timeout=5).update_node(record.data["slurm_node"], "FUTURE")
        except SlurmCommandError as err:  # the controller may be gone first (teardown): nothing to hide
            log.info("could not hide %s again: %s", record.data["slurm_node"], err)


def _conf_setting(conf: Path, key: str) -> str | None:
    for line in conf.read_text().splitlines():
        if line.startswith(f"{key}="):
            return line.partition("=")[2]
    return None


def _conf_node(conf: Path, name: str) -> dict[str, str]:
    for line in conf.read_text().splitlines():
        if line.startswith(f"NodeName={name} "):
            return dict(item.partition("=")[::2] for item in line.split())
    return {}
