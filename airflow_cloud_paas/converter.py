"""Render a TOSCA topology as Airflow tasks: ToscaTaskGroup and ToscaDag (the cosmos pattern).

One task per node template, dependencies from requirements. Deployment tasks are Airflow setup
tasks and deletion tasks are teardown tasks, so the deployment is torn down even when the work
in between fails (unless ``teardown=False`` or the run's ``keep_deployment`` param is set).
The topology is parsed once per content hash (cached on disk): DAG parsing does no network I/O
and no TOSCA re-parse.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, BaseOperator, Param, TaskGroup, conf

from airflow_cloud_paas.exceptions import ToscaInputError
from airflow_cloud_paas.operators.deployment import (
    RESERVED_PARAMS,
    CloudPaaSCompleteDeploymentOperator,
    CloudPaaSCreateDeploymentOperator,
    CloudPaaSDeleteDeploymentOperator,
    CloudPaaSDeleteNodeOperator,
    CloudPaaSDeployNodeOperator,
)
from airflow_cloud_paas.tosca import load_topology
from airflow_cloud_paas.tosca.model import InputDef, NodeTemplate, Topology
from airflow_cloud_paas.tosca.resolve import constraints_text

#: builds the task for one node: (node, task_id, common operator kwargs) -> operator
OperatorFactory = Callable[[NodeTemplate, str, dict[str, Any]], BaseOperator]


def _factory(target: type[BaseOperator] | OperatorFactory) -> OperatorFactory:
    if isinstance(target, type):
        return lambda node, task_id, common: target(task_id=task_id, node_name=node.name, **common)
    return target


class NodeConverterRegistry:
    """Map TOSCA node types to the operators that deploy and delete them; users override entries.

    Lookup walks the node's type hierarchy, most specific first, so an entry for
    ``tosca.nodes.Compute`` applies to every compute node not matched by a more specific entry.

    :param deploy: node type -> operator class (taking ``node_name``) or factory, for deployment
    :param delete: node type -> operator class or factory, for teardown
    """

    def __init__(
        self,
        deploy: Mapping[str, type[BaseOperator] | OperatorFactory] | None = None,
        delete: Mapping[str, type[BaseOperator] | OperatorFactory] | None = None,
    ) -> None:
        self._deploy = {"tosca.nodes.Root": _factory(CloudPaaSDeployNodeOperator)}
        self._delete = {"tosca.nodes.Root": _factory(CloudPaaSDeleteNodeOperator)}
        for type_name, target in (deploy or {}).items():
            self._deploy[type_name] = _factory(target)
        for type_name, target in (delete or {}).items():
            self._delete[type_name] = _factory(target)

    @staticmethod
    def _lookup(table: Mapping[str, OperatorFactory], node: NodeTemplate) -> OperatorFactory:
        for type_name in (node.type, *node.type_hierarchy):
            if type_name in table:
                return table[type_name]
        return table["tosca.nodes.Root"]

    def deploy_task(self, node: NodeTemplate, task_id: str, common: dict[str, Any]) -> BaseOperator:
        """Return the deployment task of a node.

        :param node: the node template
        :param task_id: the task's id
        :param common: keyword arguments shared by every task of the group
        """
        return self._lookup(self._deploy, node)(node, task_id, common)

    def delete_task(self, node: NodeTemplate, task_id: str, common: dict[str, Any]) -> BaseOperator:
        """Return the teardown task of a node.

        :param node: the node template
        :param task_id: the task's id
        :param common: keyword arguments shared by every task of the group
        """
        return self._lookup(self._delete, node)(node, task_id, common)


_JSON_TYPES = {
    "string": "string",
    "integer": "integer",
    "float": "number",
    "boolean": "boolean",
    "list": "array",
    "map": "object",
    "version": "string",
    "timestamp": "string",
    "scalar-unit.size": "string",
    "scalar-unit.time": "string",
    "scalar-unit.frequency": "string",
    "range": "array",
}


#: numeric TOSCA constraints as JSON Schema keywords (``in_range`` gives both ends)
_NUMERIC_BOUNDS = {
    "greater_or_equal": "minimum",
    "greater_than": "exclusiveMinimum",
    "less_or_equal": "maximum",
    "less_than": "exclusiveMaximum",
    "equal": "const",
}
_LENGTH_BOUNDS = {"min_length": "minLength", "max_length": "maxLength"}


def input_param(spec: InputDef) -> Param:
    """Return the DAG Param for a TOSCA input: its type, default, description and constraints.

    Airflow validates a run's params against the Param's JSON Schema before the run exists, so a
    value that breaks a constraint is refused (HTTP 400, and the trigger form shows why). Bounds
    (``minimum``/``maximum``, their exclusive forms, ``minLength``/``maxLength``) sit in an ``allOf``
    sub-schema rather than at the schema's top: the trigger form reads the top-level ones into its
    number field, which clamps what was typed to them when it loses focus (-1 silently became 0),
    and into ``maxlength``, which cuts a pasted value short. The constraints are also written at the
    end of the description, which the form shows under the field. Scalar-unit bounds (``4 GB``)
    have no JSON Schema form: the description names them and the run refuses a value that breaks
    them before anything is made.

    :param spec: the input definition
    """
    # a complex datatype (tosca.datatypes.Credential, ...) is given as a map
    json_type = _JSON_TYPES.get(spec.type, "object" if "." in spec.type else "string")
    schema: dict[str, Any] = {"type": json_type, "title": spec.name}
    bounds: list[dict[str, Any]] = []
    numeric = json_type in ("integer", "number")
    for constraint in spec.constraints:
        for op, arg in constraint.items():
            if op == "valid_values":
                schema["enum"] = list(arg)
            elif op == "in_range" and numeric:
                low, high = arg
                bound = {k: v for k, v in (("minimum", low), ("maximum", high)) if v != "UNBOUNDED"}
                if bound:
                    bounds.append(bound)
            elif op in _NUMERIC_BOUNDS and numeric:
                bounds.append({_NUMERIC_BOUNDS[op]: arg})
            elif op in _LENGTH_BOUNDS and json_type in ("string", "array"):
                bounds.append({_LENGTH_BOUNDS[op]: arg})
            elif op == "pattern":
                schema["pattern"] = arg
    if bounds:
        schema["allOf"] = bounds
    if spec.is_secret and json_type == "string":
        schema["format"] = "password"
    description = spec.description or ""
    allowed = constraints_text(spec.constraints)
    if allowed:
        description = f"{description.rstrip().rstrip('.')}. Allowed: {allowed}." if description else (
            f"Allowed: {allowed}.")
    if spec.has_default:
        return Param(spec.default, description=description or None, **schema)
    return Param(description=description or None, **schema)


def topology_params(topology: Topology) -> dict[str, Param]:
    """Return the DAG params of a topology: one per TOSCA input plus the reserved run options.

    :param topology: the parsed template
    """
    clash = [name for name in topology.inputs if name in RESERVED_PARAMS]
    if clash:
        raise ToscaInputError(
            f"input name(s) {clash} are reserved by airflow_cloud_paas; rename them",
            file=topology.source,
            field="topology_template.inputs",
        )
    params = {name: input_param(spec) for name, spec in topology.inputs.items()}
    params["deployment_id"] = Param(
        None, type=["null", "string"], description="Use this deployment id (default: derived from the run)"
    )
    params["keep_deployment"] = Param(
        False, type="boolean", description="Skip the teardown and leave the deployment running"
    )
    params["user_group"] = Param(
        None, type=["null", "string"], description="Share the deployment with this group (its members see it)"
    )
    return params


def _template_path(template: str | Path, caller_file: str | None) -> str:
    """Return the template's path; a relative one is taken from the calling DAG file's folder."""
    path = Path(template)
    if not path.is_absolute() and caller_file:
        path = Path(caller_file).parent / path
    return str(path)


class ToscaTaskGroup(TaskGroup):
    """A TaskGroup that deploys a TOSCA template (setup tasks) and tears it down (teardown tasks).

    Put the work that uses the deployment between the two with :meth:`wrap`; outputs are in XCom
    of the ``outputs`` task (one key per output, see :meth:`output`).

    :param template: the TOSCA template file (relative paths: from the calling DAG file's folder)
    :param group_id: the group's id
    :param import_map: TOSCA import URL -> local file
    :param backend: backend name; ``None`` uses the store connection's default
    :param cloud_paas_conn_id: the deployment store connection
    :param teardown: add teardown tasks (``False`` keeps the deployment after the run)
    :param node_converters: node type -> operator class or factory for deployment (overrides)
    :param node_delete_converters: node type -> operator class or factory for teardown (overrides)
    :param operator_args: extra keyword arguments for every task (retries, pool, ...)
    :param providers: candidate providers (``backend`` or ``backend:conn_id``) with fallback; the whole
        deployment is then made by the ``create`` task (per-node tasks cannot move between providers)
    :param placement: PlacementPolicy options for ``providers`` (rank_providers, max_providers_retry,
        keep_last_attempt, timeout_mins, provider_timeout_mins)
    :param deferrable: deploy-node tasks request their instances and wait in the triggerer (default: the
        ``[operators] default_deferrable`` setting)
    :param strict: refuse (at DAG parse) a template value that is not of its declared type instead of converting
        it with a warning (see :func:`~airflow_cloud_paas.tosca.load_topology`)
    :param node_tasks: one task per node to deploy it and one per node to delete it (the default: each node's
        progress, logs and retries are its own). ``False`` makes the whole deployment in the ``create`` task and
        deletes it in the ``delete`` task: two task processes per deployment, for many small deployments, where
        each task's process start and scheduling round cost more than the cloud calls (see
        ``bench/bench_aws_moto.py``). Not with ``deferrable=True`` (a whole deployment waits in its task; the
        ``default_deferrable`` setting does not apply) nor with node converters (no node has a task).
    """

    def __init__(
        self,
        template: str | Path,
        *,
        group_id: str = "deployment",
        providers: Sequence[Any] | None = None,
        placement: Mapping[str, Any] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        import_map: Mapping[str, str] | None = None,
        backend: str | None = None,
        cloud_paas_conn_id: str = "cloud_paas_default",
        teardown: bool = True,
        node_converters: Mapping[str, Any] | None = None,
        node_delete_converters: Mapping[str, Any] | None = None,
        operator_args: Mapping[str, Any] | None = None,
        strict: bool = False,
        node_tasks: bool = True,
        _caller_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not node_tasks:
            if node_converters or node_delete_converters:
                raise ValueError("node_converters and node_delete_converters need node_tasks=True: with "
                                 "node_tasks=False no node has a task of its own")
            if deferrable and not conf.getboolean("operators", "default_deferrable", fallback=False):
                raise ValueError("deferrable=True needs node_tasks=True: a deployment made in one task waits in that "
                                 "task, not in the triggerer")
            deferrable = False  # [operators] default_deferrable applies to node tasks, and there are none
        super().__init__(group_id=group_id, **kwargs)
        self.template = _template_path(template, _caller_file or sys._getframe(1).f_globals.get("__file__"))
        self.topology: Topology = load_topology(self.template, import_map=import_map, strict=strict)
        self.registry = NodeConverterRegistry(node_converters, node_delete_converters)
        common: dict[str, Any] = {
            "template": self.template,
            "import_map": dict(import_map) if import_map else None,
            "backend": backend,
            "cloud_paas_conn_id": cloud_paas_conn_id,
            **(operator_args or {}),
        }
        self.deferrable = deferrable
        self.per_node_tasks = node_tasks
        self._build(common, teardown, providers, placement)

    def _build(self, common: dict[str, Any], teardown: bool, providers: Sequence[Any] | None,
               placement: Mapping[str, Any] | None) -> None:
        topo = self.topology
        with self:
            self.node_tasks: dict[str, BaseOperator] = {}
            if providers:
                self.create_task = CloudPaaSCreateDeploymentOperator(
                    task_id="create", providers=list(providers), **dict(placement or {}), **common
                ).as_setup()
                self.outputs_task = self.create_task
                self._build_teardown(common, teardown,
                                     setups={n: self.create_task for n in topo.plan} if self.per_node_tasks else {})
                return
            if not self.per_node_tasks:
                self.create_task = CloudPaaSCreateDeploymentOperator(task_id="create", **common).as_setup()
                self.outputs_task = self.create_task
                self._build_teardown(common, teardown, setups={})
                return
            self.create_task = CloudPaaSCreateDeploymentOperator(task_id="create", nodes=[], **common).as_setup()
            # said even when False if the setting is on (the node operator's own default follows it);
            # a custom node operator without a deferrable argument works while neither asks to defer
            asked = self.deferrable or conf.getboolean("operators", "default_deferrable", fallback=False)
            for name in topo.plan:
                node_args = {**common, **({"deferrable": self.deferrable} if asked else {})}
                task = self.registry.deploy_task(topo.nodes[name], f"deploy_{name}", node_args).as_setup()
                self.node_tasks[name] = task
            self.outputs_task = CloudPaaSCompleteDeploymentOperator(task_id="outputs", **common).as_setup()
            for name, task in self.node_tasks.items():
                targets = [r.node for r in topo.nodes[name].requirements if r.node in self.node_tasks]
                for target in targets:
                    self.node_tasks[target] >> task
                if not targets:
                    self.create_task >> task
            required = {r.node for n in topo.nodes.values() for r in n.requirements}
            for name, task in self.node_tasks.items():
                if name not in required:
                    task >> self.outputs_task
            if not self.node_tasks:
                self.create_task >> self.outputs_task
            self._build_teardown(common, teardown, setups=self.node_tasks)

    def _build_teardown(self, common: dict[str, Any], teardown: bool, setups: Mapping[str, BaseOperator]) -> None:
        topo = self.topology
        required = {r.node for n in topo.nodes.values() for r in n.requirements}
        with self:
            self.delete_tasks: dict[str, BaseOperator] = {}
            self.teardown_roots: list[BaseOperator] = []
            self.delete_task: BaseOperator | None = None
            if not teardown:
                return
            for name in reversed(topo.plan) if setups else ():  # no node tasks: the delete task does it all
                task = self.registry.delete_task(topo.nodes[name], f"delete_{name}", dict(common))
                self.delete_tasks[name] = task.as_teardown(setups=setups[name])
            self.delete_task = CloudPaaSDeleteDeploymentOperator(task_id="delete", **common).as_teardown(
                setups=self.create_task
            )
            for name, task in self.delete_tasks.items():
                # dependents are deleted before what they require (workers before their master)
                for req in topo.nodes[name].requirements:
                    if req.node in self.delete_tasks:
                        task >> self.delete_tasks[req.node]
                if name not in required:
                    self.teardown_roots.append(task)
                task >> self.delete_task
            if not self.delete_tasks:
                self.teardown_roots.append(self.delete_task)
            self.outputs_task >> self.teardown_roots

    def wrap(self, *tasks: Any) -> ToscaTaskGroup:
        """Run these tasks after the deployment is complete and before its teardown.

        :param tasks: operators, XComArgs or task groups using the deployment
        """
        for task in tasks:
            self.outputs_task >> task
            if self.teardown_roots:
                task >> self.teardown_roots
        return self

    def output(self, name: str) -> Any:
        """Return an XComArg for one TOSCA output of the deployment.

        :param name: the output name
        """
        if name not in self.topology.outputs:
            raise ToscaInputError(
                f"no such output; known: {', '.join(sorted(self.topology.outputs)) or 'none'}",
                file=self.topology.source,
                field=f"outputs.{name}",
            )
        return self.outputs_task.output[name]


class ToscaDag(DAG):
    """A DAG that deploys one TOSCA template, with its inputs as Params (the UI trigger form).

    Takes every :class:`ToscaTaskGroup` argument plus the DAG's own; the group is ``self.tosca``.

    :param template: the TOSCA template file (relative paths: from the DAG file's folder)
    :param group_id: the task group's id
    :param import_map: TOSCA import URL -> local file
    :param backend: backend name; ``None`` uses the store connection's default
    :param cloud_paas_conn_id: the deployment store connection
    :param teardown: add teardown tasks
    :param node_converters: node type -> operator (overrides)
    :param node_delete_converters: node type -> teardown operator (overrides)
    :param operator_args: extra keyword arguments for every task
    :param providers: candidate providers with fallback (see ToscaTaskGroup)
    :param placement: PlacementPolicy options for ``providers``
    :param deferrable: deploy-node tasks wait for their instances in the triggerer (default: the
        ``[operators] default_deferrable`` setting)
    :param strict: refuse a template value that is not of its declared type instead of converting it
    :param node_tasks: a task per node to deploy and to delete it (default), or the whole deployment in one
        ``create`` and one ``delete`` task (see ToscaTaskGroup)
    """

    def __init__(
        self,
        template: str | Path,
        *,
        group_id: str = "deployment",
        import_map: Mapping[str, str] | None = None,
        backend: str | None = None,
        cloud_paas_conn_id: str = "cloud_paas_default",
        teardown: bool = True,
        node_converters: Mapping[str, Any] | None = None,
        node_delete_converters: Mapping[str, Any] | None = None,
        operator_args: Mapping[str, Any] | None = None,
        providers: Sequence[Any] | None = None,
        placement: Mapping[str, Any] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        strict: bool = False,
        node_tasks: bool = True,
        **dag_kwargs: Any,
    ) -> None:
        caller = sys._getframe(1).f_globals.get("__file__")
        path = _template_path(template, caller)
        topology = load_topology(path, import_map=import_map, strict=strict)
        params = {**topology_params(topology), **(dag_kwargs.pop("params", None) or {})}
        first_line = next(iter((topology.description or "").strip().splitlines()), "")
        dag_kwargs.setdefault("description", first_line[:200] or None)
        dag_kwargs.setdefault("tags", ["cloud-paas", "tosca"])
        dag_kwargs.setdefault("render_template_as_native_obj", True)
        super().__init__(params=params, **dag_kwargs)
        with self:
            self.tosca = ToscaTaskGroup(
                path,
                group_id=group_id,
                import_map=import_map,
                backend=backend,
                cloud_paas_conn_id=cloud_paas_conn_id,
                teardown=teardown,
                node_converters=node_converters,
                node_delete_converters=node_delete_converters,
                operator_args=operator_args,
                providers=providers,
                placement=placement,
                deferrable=deferrable,
                strict=strict,
                node_tasks=node_tasks,
                _caller_file=caller,
            )


def packaged_template(name: str) -> str:
    """Return the path of a template shipped with the package (e.g. ``spark_cluster``).

    :param name: the template's file name, with or without ``.yaml``
    """
    folder = Path(__file__).parent / "templates"
    path = folder / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise FileNotFoundError(f"no packaged template {name!r}; known: {known}")
    return str(path)
