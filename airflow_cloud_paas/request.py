"""A deployment request: who asks for which deployment of which template, with which inputs, where.

:meth:`DeploymentRequest.build` is the single constructor every entry point uses (operators, the provider
fallback, the deferrable node wait, the scaling jobs and ``cloud-paas``): it validates the inputs, resolves
``conn://`` references (keeping the references for the record), takes back what a stored deployment
already knows (its inputs, its backend) and works out the backend reference. :meth:`DeploymentRequest.compile`
turns it into the :class:`~airflow_cloud_paas.plan.DeploymentPlan` a
:class:`~airflow_cloud_paas.deployer.Deployer` executes. No Airflow code here: the Airflow face
(:mod:`airflow_cloud_paas.operators.deployment`) gathers the values from a task's context.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_cloud_paas.exceptions import ToscaInputError
from airflow_cloud_paas.secrets import MASK, connection_refs, resolve_connection_refs
from airflow_cloud_paas.tosca import scaling_group, scaling_root, validate_inputs
from airflow_cloud_paas.tosca.flow import inputs_read_by, secret_outputs
from airflow_cloud_paas.tosca.loader import CREDENTIAL_TYPE
from airflow_cloud_paas.tosca.model import Topology

if TYPE_CHECKING:
    from airflow_cloud_paas.plan import DeploymentPlan
    from airflow_cloud_paas.store.records import DeploymentRecord

#: the backend used when neither the request, the deployment record nor the store connection names one
DEFAULT_BACKEND = "local"
#: input types whose value is one plain value (a connection field, never a whole connection)
_PLAIN_TYPES = frozenset({"string", "integer", "float", "boolean", "timestamp", "version", "scalar-unit.size",
                          "scalar-unit.time", "scalar-unit.frequency"})


@dataclass(frozen=True)
class DeploymentRequest:
    """One deployment (or change of one), fully resolved and validated, ready to compile.

    :param deployment_id: the deployment's id
    :param topology: the parsed template
    :param inputs: every input's value (validated, defaults filled, ``conn://`` references resolved: never store
        these, see :attr:`record_inputs`)
    :param backend: the backend reference, ``backend`` or ``backend:conn_id`` (what the record keeps)
    :param actor: who acts (``dag_id/run_id``): a retry by the same actor is not a conflict
    :param owner: who owns the deployment
    :param user_group: the group the owner shares a new deployment with
    :param input_refs: input name -> the ``conn://<conn_id>/<field>`` reference it was read from
    :param secret_inputs: more input names whose values must never be stored
    :param deadline: a ``time.monotonic()`` limit for the whole deployment, or None
    :param withheld: stored secret inputs this change does not read: not given again, they stay masked
    """

    deployment_id: str
    topology: Topology
    inputs: Mapping[str, Any]
    backend: str = DEFAULT_BACKEND
    actor: str | None = None
    owner: str = "airflow"
    user_group: str | None = None
    input_refs: Mapping[str, str] = field(default_factory=dict)
    secret_inputs: tuple[str, ...] = ()
    deadline: float | None = None
    withheld: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        topology: Topology,
        deployment_id: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        record: DeploymentRecord | None = None,
        backend: str | None = None,
        default_backend: str | None = None,
        actor: str | None = None,
        owner: str | None = None,
        user_group: str | None = None,
        get_connection: Callable[[str], Any] | None = None,
        resolve_refs: bool = True,
        secret_inputs: tuple[str, ...] = (),
        need_secrets: bool | Collection[str] = True,
        deadline: float | None = None,
    ) -> DeploymentRequest:
        """Return the request for a deployment, everything checked before anything is touched.

        :param topology: the parsed template
        :param deployment_id: the deployment's id
        :param inputs: the given input values (``conn://`` references allowed); with ``record`` and no inputs,
            the stored ones are used, secret ones (stored as ``***``) taken from ``inputs`` of the same name
        :param record: the deployment's record, when it exists (its inputs and backend are reused)
        :param backend: the backend reference asked for; the record's wins once the deployment exists
        :param default_backend: the store connection's default backend, when neither names one
        :param actor: who acts (``dag_id/run_id``)
        :param owner: who owns the deployment (a new one)
        :param user_group: the group the owner shares a new deployment with
        :param get_connection: conn_id -> Airflow Connection, to resolve ``conn://`` references (required when
            any input is one)
        :param resolve_refs: False keeps ``conn://`` references as the inputs' values (offline validation: the
            connections are read at run time)
        :param secret_inputs: more input names whose values must never be stored
        :param need_secrets: a stored secret input that is not given again is an error (True); or only one that
            deploying these node names reads (a scale: its group's members); False: none (a delete). One not
            needed stays masked, unchecked (``validate_inputs``'s ``withheld``)
        :param deadline: a ``time.monotonic()`` limit for the whole deployment
        """
        given, withheld = dict(inputs or {}), frozenset()
        if record is not None:
            given, withheld = _from_record(record, topology, given, need_secrets=need_secrets)
        refs = connection_refs(given)
        if refs and resolve_refs:
            if get_connection is None:
                raise ToscaInputError(f"input(s) {sorted(refs)} read Airflow connections (conn://...), which can "
                                      "only be read inside Airflow", file=topology.source, field="inputs")
            # a credential (its datatype, or one derived from it: declared secret and not a plain value)
            credentials = [n for n, d in topology.inputs.items()
                           if d.type == CREDENTIAL_TYPE or (d.declared_secret and d.type not in _PLAIN_TYPES)]
            given = resolve_connection_refs(given, deployment_id, get_connection, credentials)
        return cls(
            deployment_id=deployment_id,
            topology=topology,
            inputs=validate_inputs(topology, given, withheld),
            withheld=withheld,
            backend=(record.backend if record is not None else None) or backend or default_backend or DEFAULT_BACKEND,
            actor=actor,
            owner=(record.owner if record is not None else None) or owner or "airflow",
            user_group=record.user_group if record is not None else user_group,
            input_refs=refs,
            secret_inputs=tuple(secret_inputs),
            deadline=deadline,
        )

    @property
    def record_inputs(self) -> dict[str, Any]:
        """Return the inputs as the record keeps them: references instead of what they resolved to."""
        return {**self.inputs, **self.input_refs}

    @property
    def secret_names(self) -> tuple[str, ...]:
        """Return every input name whose value must never be stored (declared secret, or named so)."""
        return tuple(n for n, d in self.topology.inputs.items() if d.is_secret) + self.secret_inputs

    @functools.cached_property
    def secret_outputs(self) -> tuple[str, ...]:
        """Return every output whose value must never be stored or shown: named like a secret, or built from a
        secret input or from one read from a connection (``conn://``)."""
        return secret_outputs(self.topology, (*self.secret_names, *self.input_refs))

    @functools.cached_property
    def plan(self) -> DeploymentPlan:
        """Return the compiled plan (every node resolved once); compiled on first use."""
        from airflow_cloud_paas.plan import compile_plan

        return compile_plan(self.topology, self.inputs, self.withheld)


def refuse_unknown_keys(conf: Mapping[str, Any], known: Mapping[str, Any] | set[str], *, where: str,
                        inputs: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`ToscaInputError` if a run's conf has keys that are neither inputs nor run options.

    A misspelt input (``workers`` for ``worker_count``) would otherwise deploy silently with the default.

    :param conf: the run's conf
    :param known: the names the run accepts (the DAG's params)
    :param where: the DAG (named in the message)
    :param inputs: the template's inputs, listed in the message
    """
    unknown = sorted(set(conf) - set(known))
    if unknown:
        names = sorted(inputs) if inputs is not None else sorted(known)
        raise ToscaInputError(
            f"the run's conf has unknown key(s) {', '.join(unknown)}; {where} accepts: {', '.join(names) or 'none'}",
            field="conf",
        )


def _from_record(record: DeploymentRecord, topology: Topology, given: Mapping[str, Any], *,
                 need_secrets: bool | Collection[str]) -> tuple[dict[str, Any], frozenset[str]]:
    """Return the stored inputs, with secret ones (never stored) taken from the given values, and the secret
    inputs withheld: not given, and not read by what this change makes (they stay masked)."""
    inputs = dict(record.inputs)
    withheld: set[str] = set()
    needed = (None if need_secrets is True else  # a scale makes instances of its whole group
              inputs_read_by(topology, {m for n in need_secrets for m in scaling_group(topology, scaling_root(
                  topology, n))}) if need_secrets else frozenset())
    missing = []
    for name, value in list(inputs.items()):
        if value != MASK:
            continue
        if given.get(name) not in (None, ""):
            inputs[name] = given[name]
        elif needed is None or name in needed:
            missing.append(name)
        else:
            withheld.add(name)  # what this change makes (nothing, for a delete) does not read it: it stays masked
    if missing:
        what = "change" if needed is None else f"make new instances of {', '.join(sorted(need_secrets))} in"
        raise ToscaInputError(
            f"secret input(s) {missing} are never stored and are needed to {what} deployment {record.id}; pass "
            "them in this run's params, or deploy with a conn:// reference instead (read again when needed)",
            file=topology.source,
            field="inputs",
        )
    return {k: v for k, v in inputs.items() if k in topology.inputs}, frozenset(withheld)
