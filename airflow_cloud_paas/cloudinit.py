"""Render the software nodes hosted on a VM as the cloud-init user data that installs and configures them.

The INDIGO PaaS configured a VM's software with Ansible after boot (the IM's contextualization).
Here the same TOSCA lifecycle operations run at first boot through cloud-init, so no task waits on
an SSH connection. For each software node hosted on the VM (directly or through another software
node), in deployment order:

* ``/etc/cloud-paas/nodes/<node>.json`` (mode 0600) holds its type and resolved properties;
* each ``Standard`` operation that has an implementation (``create``, ``configure``, ``start``, in
  that order) becomes a ``runcmd`` step:

  - a shell script (``.sh``/``.bash``, or an artifact of type ``tosca.artifacts.Implementation.Bash``)
    runs with the operation's inputs as environment variables (the TOSCA convention);
  - an Ansible playbook (``.yml``/``.yaml``, as in INDIGO's types) runs with ``ansible-playbook``
    on localhost, the inputs passed as extra variables; ``ansible`` is added to ``packages``;
  - a file inside the template's own folder (after following symlinks), or one of the package's own
    scripts, is inlined; a URL is fetched with ``curl`` at boot. Any other path (absolute, ``..``, a
    symlink leading out) is refused when the plan is compiled: user data is sent to the cloud, so a
    template must never inline a file of the host (``/etc/passwd``, ``/proc/self/environ``).

INDIGO's SLURM types (``tosca.nodes.indigo.LRMS.FrontEnd.Slurm`` and ``.WorkerNode.Slurm``) are the one exception:
their playbooks need Ansible Galaxy roles and an IM inventory that a VM booting alone never has, so they run
the package's ``scripts/slurm_configure.sh`` instead (see :func:`indigo_slurm_operations`).

A compute node's own ``user_data`` property is kept: with software to configure as well, both go in
one multipart MIME document, which cloud-init reads part by part.

User data holds the software's settings, secrets included (that is its purpose): it is never logged,
and :class:`~airflow_cloud_paas.backends.base.ResourceSpec` keeps it out of its ``repr``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

import yaml

from airflow_cloud_paas.exceptions import ToscaValidationError
from airflow_cloud_paas.tosca.model import NodeTemplate, Topology
from airflow_cloud_paas.tosca.resolve import _effective_inputs, _evaluate, resolved_node

#: the lifecycle operations run at boot, in this order (stop and delete do not apply to a first boot)
LIFECYCLE = ("create", "configure", "start")
CONFIG_DIR = "/etc/cloud-paas/nodes"
SCRIPT_DIR = "/opt/cloud-paas"
_COMPUTE_TYPES = ("tosca.nodes.Compute",)
_SHELL_SUFFIXES = (".sh", ".bash")
_PLAYBOOK_SUFFIXES = (".yml", ".yaml")
_BASH_ARTIFACT = "tosca.artifacts.Implementation.Bash"
_ANSIBLE_ARTIFACT = "tosca.artifacts.Implementation.Ansible"  # not normative, but used by INDIGO-like types
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: the scripts of the package's own node types (``implementation: scripts/<name>.sh``)
PACKAGED_SCRIPTS_DIR = Path(__file__).resolve().parent / "templates" / "scripts"
#: INDIGO's SLURM node types -> the role of scripts/slurm_configure.sh they run at boot (derived types too, e.g.
#: the SlurmGalaxy variants)
INDIGO_SLURM_ROLES = (
    ("tosca.nodes.indigo.LRMS.FrontEnd.Slurm", "controller"),
    ("tosca.nodes.indigo.LRMS.WorkerNode.Slurm", "worker"),
)
#: MaxNodeCount of an INDIGO front end whose ``wn_num`` is unset (-1): the most workers a template here may scale to
INDIGO_SLURM_MAX_WORKERS = 100
#: the template input an INDIGO SLURM template declares (secret) for the munge key that every node shares
INDIGO_MUNGE_KEY_INPUT = "munge_key"


@dataclass(frozen=True)
class BootStep:
    """One lifecycle operation of one software node, as run at first boot.

    :param node: the software node
    :param operation: create, configure or start
    :param kind: ``shell`` or ``ansible``
    :param source: the script's text (``inline``) or its URL
    :param inline: whether ``source`` is the text itself
    :param inputs: the operation's inputs, evaluated
    """

    node: str
    operation: str
    kind: str
    source: str
    inline: bool
    inputs: Mapping[str, Any]

    @property
    def path(self) -> str:
        """Return where the script lands on the VM."""
        return f"{SCRIPT_DIR}/{self.node}/{self.operation}{'.sh' if self.kind == 'shell' else '.yml'}"

    @property
    def inputs_path(self) -> str:
        """Return where the operation's inputs land on the VM."""
        return f"{CONFIG_DIR}/{self.node}.{self.operation}.{'env' if self.kind == 'shell' else 'json'}"


def is_compute(node: NodeTemplate) -> bool:
    """Return whether a node is a machine that boots with user data.

    :param node: a node template
    """
    return any(node.is_a(t) for t in _COMPUTE_TYPES)


def hosted_software(topology: Topology, host_name: str) -> tuple[str, ...]:
    """Return the nodes hosted on a compute node, directly or through other software, in deployment order.

    :param topology: the parsed template
    :param host_name: the compute node
    """
    def host_of(name: str) -> str | None:
        return next((r.node for r in topology.nodes[name].requirements if r.name == "host"), None)

    hosted = []
    for name in topology.plan:
        seen, current = {name}, host_of(name)
        while current is not None and current != host_name and current not in seen and \
                not is_compute(topology.nodes[current]):
            seen.add(current)
            current = host_of(current)
        if current == host_name and name != host_name and not is_compute(topology.nodes[name]):
            hosted.append(name)
    return tuple(hosted)


def boot_steps(
    topology: Topology,
    node_name: str,
    inputs: Mapping[str, Any] | None,
    attributes: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    resolved: Mapping[str, NodeTemplate] | None = None,
) -> list[BootStep]:
    """Return the lifecycle operations of one software node that run at boot, checked and evaluated.

    :param topology: the parsed template
    :param node_name: the software node
    :param inputs: the run's input values
    :param attributes: node name -> attributes of its deployed instances, for ``get_attribute``
        (None at validation time: ``get_attribute`` is then not evaluated)
    :param resolved: node name -> the node already resolved for these inputs (a compiled plan's nodes); nodes
        missing from it are resolved here
    """
    node = (resolved or {}).get(node_name) or resolved_node(topology, node_name, inputs)
    mapped = indigo_slurm_operations(topology, node)
    operations = mapped or (node.interfaces or {}).get("Standard") or {}
    steps = []
    for operation in LIFECYCLE:
        definition = operations.get(operation)
        if not definition or not definition.get("implementation"):
            continue
        field = f"interfaces.Standard.{operation}"
        if mapped:  # the packaged script itself, never a file of that name beside the template
            kind, source, inline = "shell", _packaged_script(definition["implementation"]), True
        else:
            kind, source, inline = _implementation(topology, node, definition["implementation"], field)
        values = _operation_inputs(topology, node, definition.get("inputs") or {}, inputs, attributes, field,
                                   resolved)
        if kind == "shell":
            bad = [k for k in values if not _ENV_NAME.match(k)]
            if bad:
                raise ToscaValidationError(
                    f"inputs {bad} of a shell operation must be valid environment variable names",
                    file=topology.source, node=node_name, field=f"{field}.inputs")
        steps.append(BootStep(node_name, operation, kind, source, inline, values))
    return steps


def indigo_slurm_operations(topology: Topology, node: NodeTemplate) -> dict[str, Any] | None:
    """Return the ``Standard`` operations an INDIGO SLURM front end or worker node runs at boot here, or None for any
    other node.

    INDIGO configured these nodes with the playbooks ``slurm_fe_install.yml`` and ``slurm_wn_install.yml``, which
    need the Ansible Galaxy roles ``indigo-dc.slurm`` and ``indigo-dc.nfs`` (artifacts that nothing installs here)
    and the IM's inventory (``groups["lrms_wn"]``): run at boot, they fail. Instead both run the package's
    ``scripts/slurm_configure.sh``, as ``cloud_paas.nodes.slurm.Controller`` and ``.Worker`` do: ``front_end_ip``
    becomes the worker's CONTROLLER; ``wn_ips`` is dropped, since workers register as SLURM dynamic nodes and the
    front end needs no list of them; ``wn_num`` (when set) is MaxNodeCount. The munge key every node shares comes
    from the template's secret input ``munge_key``; INDIGO's own templates have none (its role derived the key
    from a published default password), so until one is declared the script stops at boot saying so. The
    ``hybrid`` (VPN) and NFS /home parts of INDIGO's roles are not reproduced.

    :param topology: the parsed template
    :param node: the node, resolved for the run's inputs
    """
    role = next((role for type_name, role in INDIGO_SLURM_ROLES if node.is_a(type_name)), None)
    if role is None:
        return None
    wn_num = node.properties.get("wn_num")
    counted = isinstance(wn_num, int) and not isinstance(wn_num, bool) and wn_num > 0
    max_workers = wn_num if counted else INDIGO_SLURM_MAX_WORKERS
    inputs: dict[str, Any] = {
        "ROLE": role,
        # the property's own expression (a get_attribute of the front end's host), evaluated with the step's inputs
        "CONTROLLER": (node.properties.get("front_end_ip") or "") if role == "worker" else "",
        "CLUSTER_NAME": "cloudpaas",
        "PARTITION": "main",
        "MAX_WORKERS": max_workers,
        "WORKER_CPUS": 0,  # what slurmd detects on the VM
        "WORKER_MEMORY_MB": 0,
        "MAX_TIME": "INFINITE",
        "SRUN_PORT_RANGE": "60001-63000",
        "INSTALL": True,
        "MUNGE_KEY": {"get_input": INDIGO_MUNGE_KEY_INPUT} if INDIGO_MUNGE_KEY_INPUT in topology.inputs else "",
    }
    return {"configure": {"implementation": "scripts/slurm_configure.sh", "inputs": inputs}}


def _packaged_script(implementation: str) -> str:
    return (PACKAGED_SCRIPTS_DIR / Path(implementation).name).read_text(encoding="utf-8")


def render_user_data(
    topology: Topology,
    host_name: str,
    inputs: Mapping[str, Any] | None,
    attributes: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    explicit: str | None = None,
    resolved: Mapping[str, NodeTemplate] | None = None,
) -> str | None:
    """Return the user data of a compute node: its hosted software's configuration, plus its own ``user_data``.

    Returns ``explicit`` unchanged when nothing is hosted on the node, and None when there is neither.

    :param topology: the parsed template
    :param host_name: the compute node
    :param inputs: the run's input values
    :param attributes: node name -> attributes of deployed instances, for ``get_attribute`` in inputs
    :param explicit: the node's own ``user_data`` property (cloud-init text or a script)
    :param resolved: node name -> the node already resolved for these inputs (a compiled plan's nodes), so no
        node is resolved twice; nodes missing from it are resolved here
    """
    if explicit is not None and not isinstance(explicit, str):
        raise ToscaValidationError("user_data must be a string (cloud-config or a script)", file=topology.source,
                                   node=host_name, field="properties.user_data")
    software = hosted_software(topology, host_name)
    if not software:
        return explicit or None
    values = _effective_inputs(topology, inputs)
    write_files: list[dict[str, Any]] = []
    runcmd: list[Any] = []
    ansible = False
    for name in software:
        node = (resolved or {}).get(name) or resolved_node(topology, name, values)
        properties = _evaluate_all(dict(node.properties), topology, node, values, attributes, resolved)
        write_files.append(_file(f"{CONFIG_DIR}/{name}.json", json.dumps(
            {"node": name, "type": node.type, "properties": properties}, indent=1, sort_keys=True, default=str)))
        for step in boot_steps(topology, name, values, attributes, resolved=resolved):
            ansible |= step.kind == "ansible"
            write_files.extend(_step_files(step))
            runcmd.extend(_step_commands(step))
        runcmd.append(["touch", f"/var/lib/cloud-paas/{name}.done"])
    document: dict[str, Any] = {"write_files": write_files}
    if ansible:
        document["packages"] = ["ansible", "curl"]
    document["runcmd"] = [["mkdir", "-p", "/var/lib/cloud-paas"], *runcmd]
    config = "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=1000)
    if not explicit:
        return config
    return _multipart([(explicit, _content_type(explicit)), (config, "cloud-config")])


# ------------------------------------------------------------------------------------------ helpers
def _implementation(topology: Topology, node: NodeTemplate, implementation: Any, field: str) -> tuple[str, str, bool]:
    """Return (kind, source, inline) of an operation's implementation, or raise naming what is wrong."""
    artifact_type = None
    if isinstance(implementation, Mapping):  # {primary: ..., dependencies: [...]}
        implementation = implementation.get("primary")
    if not isinstance(implementation, str) or not implementation:
        raise ToscaValidationError("an implementation must name a script, a playbook or an artifact",
                                   file=topology.source, node=node.name, field=f"{field}.implementation")
    name = implementation
    artifact = (node.artifacts or {}).get(name)
    if artifact is not None:
        if isinstance(artifact, Mapping):
            artifact_type, implementation = artifact.get("type"), artifact.get("file")
        else:
            implementation = artifact
        if not isinstance(implementation, str) or not implementation:
            raise ToscaValidationError(f"artifact '{name}' has no file", file=topology.source, node=node.name,
                                       field=f"artifacts.{name}")
    lowered = implementation.lower().split("?", 1)[0]
    if artifact_type == _BASH_ARTIFACT or lowered.endswith(_SHELL_SUFFIXES):
        kind = "shell"
    elif artifact_type == _ANSIBLE_ARTIFACT or lowered.endswith(_PLAYBOOK_SUFFIXES):
        kind = "ansible"
    else:
        raise ToscaValidationError(
            f"cannot run implementation '{implementation}' at boot: use a shell script (.sh) or an Ansible "
            "playbook (.yml)", file=topology.source, node=node.name, field=f"{field}.implementation")
    if re.match(r"^https?://", implementation):
        return kind, implementation, False
    return kind, _read_confined(topology, node, implementation, f"{field}.implementation"), True


def _read_confined(topology: Topology, node: NodeTemplate, implementation: str, field: str) -> str:
    """Return the text of an implementation file found inside the template's folder or the packaged scripts.

    The text is sent to the cloud as user data, so a template may only read what it ships: a path that is
    absolute, or that leaves its folder (``..``, a symlink to a file or folder elsewhere), is refused
    before anything is made, never read.
    """
    where = {"file": topology.source, "node": node.name, "field": field}
    if Path(implementation).is_absolute():
        raise ToscaValidationError(
            f"implementation file '{implementation}' is an absolute path: a template may only read files inside its "
            "own folder; give a path relative to the template or an https:// URL fetched at boot", **where)
    # the template's folder, then the package's own scripts (a stored deployment's template is reloaded from
    # text, away from its folder; the packaged types' scripts are found all the same)
    own = Path(topology.source).parent if topology.source and not topology.source.startswith("<") else None
    roots = [*([(own, own, "the template's folder")] if own else []),
             (PACKAGED_SCRIPTS_DIR.parent, PACKAGED_SCRIPTS_DIR, "the package's scripts")]
    looked = []
    for base, allowed, what in roots:
        candidate = base / implementation
        looked.append(str(candidate))
        try:
            real, root = candidate.resolve(), allowed.resolve()
        except (OSError, RuntimeError) as err:  # a symlink loop
            raise ToscaValidationError(f"implementation file '{implementation}' cannot be resolved ({err})",
                                       **where) from None
        if not real.is_relative_to(root):
            if base == roots[0][0]:  # leaving the first place looked in is refused outright, never read
                raise ToscaValidationError(
                    f"implementation file '{implementation}' resolves to {real}, outside {what} {root} (symlinks "
                    "are followed): a template may only read files inside its own folder; copy the file there or "
                    "give an https:// URL fetched at boot", **where)
            continue  # not one of the packaged scripts
        if real.is_file():
            try:
                return real.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as err:
                raise ToscaValidationError(f"implementation file '{implementation}' cannot be read as UTF-8 text "
                                           f"({err})", **where) from None
    raise ToscaValidationError(
        f"implementation file '{implementation}' cannot be read (looked in {', '.join(looked)}); put "
        "it next to the template or give a URL", **where)


def check_artifact_files(topology: Topology, node: NodeTemplate) -> None:
    """Refuse an artifact whose file a template may not name: an absolute path, one that climbs out of the template's
    folder, or one there whose symlinks lead out. Used or not, such a file is refused before anything is made;
    URLs (fetched by the machine at boot) and names that are no path (a container image) pass.

    :param topology: the parsed template
    :param node: the node whose artifacts are checked
    """
    own = Path(topology.source).parent if topology.source and not topology.source.startswith("<") else None
    for name, artifact in (node.artifacts or {}).items():
        file = artifact.get("file") if isinstance(artifact, Mapping) else artifact
        if not isinstance(file, str) or "://" in file:
            continue
        where = {"file": topology.source, "node": node.name,
                 "field": f"artifacts.{name}" + (".file" if isinstance(artifact, Mapping) else "")}
        if Path(file).is_absolute() or os.path.normpath(file).split(os.sep)[0] == "..":
            raise ToscaValidationError(
                f"artifact file '{file}' is outside the template's folder: a template may only name files inside its "
                "own folder; give a path relative to the template or an https:// URL", **where)
        if own is not None and (own / file).exists():
            try:
                inside = (own / file).resolve().is_relative_to(own.resolve())
            except (OSError, RuntimeError, ValueError):
                inside = False
            if not inside:
                raise ToscaValidationError(
                    f"artifact file '{file}' leads outside the template's folder {own} (symlinks are followed): a "
                    "template may only name files inside its own folder", **where)


def _operation_inputs(topology: Topology, node: NodeTemplate, raw: Mapping[str, Any], inputs: Mapping[str, Any] | None,
                      attributes: Mapping[str, Sequence[Mapping[str, Any]]] | None, field: str,
                      resolved: Mapping[str, NodeTemplate] | None = None) -> dict[str, Any]:
    values = _evaluate_all(dict(raw), topology, node, _effective_inputs(topology, inputs), attributes, resolved)
    if attributes is not None:
        for key, value in values.items():
            if value is None and _uses_attribute(raw.get(key)):
                raise ToscaValidationError(
                    f"input '{key}' reads an attribute of a node that is not deployed before this one's host: add a "
                    "requirement (dependency) on it to the host node", file=topology.source, node=node.name,
                    field=f"{field}.inputs.{key}")
    return values


def uses_attributes(node: NodeTemplate) -> bool:
    """Return whether a software node's boot configuration reads attributes of deployed nodes (``get_attribute``).

    Such user data can only be rendered in full once those nodes exist.

    :param node: a node template
    """
    return _uses_attribute(dict(node.properties)) or _uses_attribute(dict(node.interfaces or {}))


def _uses_attribute(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "get_attribute" in value or any(_uses_attribute(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_uses_attribute(v) for v in value)
    return False


def _evaluate_all(values: dict[str, Any], topology: Topology, node: NodeTemplate, inputs: Mapping[str, Any],
                  attributes: Mapping[str, Sequence[Mapping[str, Any]]] | None,
                  resolved: Mapping[str, NodeTemplate] | None = None) -> dict[str, Any]:
    """Evaluate functions in operation inputs, SELF and HOST naming the node and its host."""
    host = next((r.node for r in node.requirements if r.name == "host"), None)

    def named(value: Any) -> Any:
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                if key in ("get_property", "get_attribute") and isinstance(item, list) and item:
                    item = [{"SELF": node.name, "HOST": host or node.name}.get(item[0], item[0]), *item[1:]]
                out[key] = named(item)
            return out
        if isinstance(value, list | tuple):
            return [named(v) for v in value]
        return value

    # "is not None": the deployer's live attributes read the backend only when asked, so look empty at first
    live = attributes if attributes is not None else {}
    return {k: _evaluate(named(v), topology, inputs, live, node.name, resolved) for k, v in values.items()}


def _file(path: str, content: str, permissions: str = "0600") -> dict[str, Any]:
    return {"path": path, "permissions": permissions, "owner": "root:root", "content": content}


def _step_files(step: BootStep) -> Iterator[dict[str, Any]]:
    if step.inline:
        yield _file(step.path, step.source, "0700")
    if step.kind == "shell":
        yield _file(step.inputs_path, "".join(f"{k}={shlex.quote(_scalar(v))}\n" for k, v in step.inputs.items()))
    else:
        yield _file(step.inputs_path, json.dumps(dict(step.inputs), indent=1, sort_keys=True, default=str))


def _step_commands(step: BootStep) -> Iterator[Any]:
    if not step.inline:
        yield ["mkdir", "-p", f"{SCRIPT_DIR}/{step.node}"]
        yield ["curl", "-fsSL", "--retry", "5", "-o", step.path, step.source]
    if step.kind == "shell":
        yield ["sh", "-c", f"set -a; . {step.inputs_path}; set +a; exec bash {step.path}"]
    else:
        yield ["ansible-playbook", "-i", "localhost,", "-c", "local", step.path, "-e", f"@{step.inputs_path}"]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _content_type(text: str) -> str:
    first = text.lstrip().split("\n", 1)[0]
    if first.startswith("#cloud-config"):
        return "cloud-config"
    if first.startswith("#!"):
        return "x-shellscript"
    if first.startswith("#include"):
        return "x-include-url"
    return "x-shellscript" if first.startswith("#") else "plain"


def _multipart(parts: Sequence[tuple[str, str]]) -> str:
    # a boundary derived from the content: the same deployment renders the same bytes
    boundary = "cloud-paas-" + hashlib.sha256("".join(p for p, _ in parts).encode()).hexdigest()[:24]
    message = MIMEMultipart("mixed", boundary=boundary)
    for number, (text, subtype) in enumerate(parts):
        part = MIMEText(text, subtype, "utf-8")
        part.add_header("Content-Disposition", "attachment", filename=f"part-{number:03d}")
        message.attach(part)
    return message.as_string()

