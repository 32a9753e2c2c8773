"""Typed errors of airflow_cloud_paas: each names what is wrong, where, and how to fix it."""

from __future__ import annotations

try:  # Airflow's own base, so that task logs and the UI treat ours like any provider's error.
    from airflow.exceptions import AirflowException as _Base
except ImportError:  # pragma: no cover - the package always runs with Airflow installed
    _Base = Exception


class CloudPaaSError(_Base):
    """Base class of every error raised by airflow_cloud_paas."""


class ServiceConfigError(CloudPaaSError, ValueError):
    """A service's setting (an operator's argument, a cluster's or portal's option) is invalid; raised before anything
    runs. Each service's own ``<Service>ConfigError`` is one of these.

    A secret's value is never shown: pass ``value="(hidden)"`` for one.

    :param message: what is wrong and how to fix it
    :param field: the setting concerned
    :param value: the value given
    """

    def __init__(self, message: str, *, field: str | None = None, value: object = None) -> None:
        self.message, self.field, self.value = message, field, value
        super().__init__(f"{field}={value!r}: {message}" if field else message)

    def __reduce__(self):  # keep the keyword attributes when pickled across processes
        return (_rebuild_config_error, (type(self), self.message, self.field, self.value))


def _rebuild_config_error(cls, message, field, value):
    return cls(message, field=field, value=value)


class ServiceAPIError(CloudPaaSError):
    """A service's API call failed or gave an answer that cannot be read. Each service's ``<Service>APIError`` is one
    of these, with its name in :attr:`service`.

    :param message: what failed (the service's own message included, never a credential)
    :param url: the service concerned
    :param status: the HTTP status, when there was an answer
    """

    #: the service's name, as messages show it
    service = "service"

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        self.message, self.url, self.status = message, url, status
        where = f"{self.service} {url}" if url else self.service
        code = f" (HTTP {status})" if status else ""
        super().__init__(f"{where}{code}: {message}")

    def __reduce__(self):  # keep the keyword attributes when pickled (a trigger's error crosses processes)
        return (_rebuild_api_error, (type(self), self.message, self.url, self.status))


def _rebuild_api_error(cls, message, url, status):
    return cls(message, url=url, status=status)


# --- TOSCA ---------------------------------------------------------------------------------------
class ToscaError(CloudPaaSError):
    """A TOSCA template or its inputs are invalid; raised before anything is deployed.

    :param message: what is wrong and how to fix it
    :param file: the template (or imported file) the error is in
    :param node: the node template, input or output name concerned
    :param field: the property, capability, requirement or key concerned
    :param kind: what ``node`` names: ``node`` (a node template), ``input``, ``output``, ``relationship`` or
        ``policy`` (default: the class's :attr:`kind`)
    """

    #: what ``node`` names when the raiser does not say
    kind = "node"

    def __init__(
        self, message: str, *, file: str | None = None, node: str | None = None, field: str | None = None,
        kind: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.node = node
        self.field = field
        if kind is not None:
            self.kind = kind
        where = []
        if file:
            where.append(str(file))
        if node:
            where.append(f"{self.kind} '{node}'")
        if field:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join(where)}: {message}" if where else message)

    def __reduce__(self):  # keep keyword attributes when pickled across processes
        return (_rebuild_tosca_error, (type(self), self.message, self.file, self.node, self.field, self.kind))


def _rebuild_tosca_error(cls, message, file, node, field, kind="node"):
    return cls(message, file=file, node=node, field=field, kind=kind)


class ToscaSyntaxError(ToscaError):
    """The file is not valid YAML or not a TOSCA service template."""


class ToscaImportError(ToscaError):
    """An `imports` entry cannot be resolved (no network and no local mapping, or missing file)."""


class ToscaUnknownTypeError(ToscaError):
    """A node, capability, relationship or policy type is not defined by the template or its imports."""


class ToscaInputError(ToscaError):
    """A required input is missing, an unknown input was given, or a value has the wrong type."""


class ToscaCycleError(ToscaError):
    """The requirements of the node templates form a cycle."""


class ToscaValidationError(ToscaError):
    """Any other semantic error of a template (bad property, bad requirement target, ...)."""


# --- deployments -----------------------------------------------------------------------------------
class DeploymentNotFoundError(CloudPaaSError):
    """No deployment with this id exists in the store."""


class DeploymentBusyError(CloudPaaSError):
    """Another create/update/delete of this deployment is in progress (the orchestrator's HTTP 409)."""


class DeploymentAccessError(CloudPaaSError):
    """Whoever triggered this run may not act on this deployment (not its owner, and no grant for the run)."""


class InvalidStatusTransitionError(CloudPaaSError):
    """A deployment status change that the INDIGO lifecycle does not allow."""


# --- backends --------------------------------------------------------------------------------------
class BackendError(CloudPaaSError):
    """A provider or the local backend failed; names the provider and the resource.

    :param message: what failed and how to fix it
    :param provider: the backend name (local, aws, openstack, ...)
    :param resource: the resource concerned (deployment/node/index or a provider id)
    """

    def __init__(self, message: str, *, provider: str | None = None, resource: str | None = None) -> None:
        self.message = message
        self.provider = provider
        self.resource = resource
        prefix = " ".join(p for p in (f"[{provider}]" if provider else "", resource or "") if p)
        super().__init__(f"{prefix}: {message}" if prefix else message)

    def __reduce__(self):
        return (_rebuild_backend_error, (type(self), self.message, self.provider, self.resource))


def _rebuild_backend_error(cls, message, provider, resource):
    return cls(message, provider=provider, resource=resource)


class UnsupportedNodeError(BackendError):
    """The backend cannot deploy this node type or honour one of its properties."""


class ResourceCreateError(BackendError):
    """Creating a resource failed (the partial resource has been cleaned up)."""


class ResourceTimeoutError(BackendError):
    """A resource did not become ready in time."""
