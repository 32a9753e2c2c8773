"""Hook to a Galaxy (Laniakea's portal): an Airflow connection of type ``galaxy`` gives its URL and a user's API key.

The connection:

* Host: the Galaxy's URL (``http://host:port``, a path allowed: ``https://example.org/galaxy``), or a bare host
  name with Schema ``http``/``https`` and Port;
* Password: the user's API key (or the extra ``api_key``);
* extras ``verify_ssl`` (check TLS certificates, default true) and ``timeout`` (seconds per request, default 60).

The hook's ``url`` argument replaces the connection's Host, so a DAG can take a deployed Galaxy's URL from the
deployment's outputs (XCom) while the key stays in the connection. The key is handed to Airflow's secrets masker
and to the client only: it is never logged, never in an error, an XCom value or a ``repr``.

Every call goes through :class:`~airflow_cloud_paas.services.galaxy.client.GalaxyClient` (bioblend), whose
failures are typed :class:`~airflow_cloud_paas.services.galaxy.errors.GalaxyError` subclasses.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_cloud_paas.hooks import GALAXY_CONNECTION, ConnectionFormMixin, ui_field_behaviour
from airflow_cloud_paas.hooks._service import base_url, mask, request_settings
from airflow_cloud_paas.services.galaxy.errors import GalaxyAPIError, GalaxyConfigError

if TYPE_CHECKING:
    from airflow_cloud_paas.services.galaxy.client import GalaxyClient

#: The connection type as ``get_provider_info()["connection-types"]`` lists it (declared in
#: :mod:`airflow_cloud_paas.hooks`; Airflow 3 builds the form from ``conn-fields`` and ``ui-field-behaviour``).
CONNECTION_TYPE: dict[str, Any] = GALAXY_CONNECTION
#: Extra fields of the connection form.
CONN_FIELDS: dict[str, dict[str, Any]] = CONNECTION_TYPE["conn-fields"]
#: Standard fields hidden, relabelled or hinted in the form.
UI_FIELD_BEHAVIOUR: dict[str, Any] = ui_field_behaviour(CONNECTION_TYPE)

#: a workflow file's size limit (bytes): it is read and parsed in the task before anything is sent
MAX_WORKFLOW_BYTES = 2_000_000
#: the tag an imported workflow carries, naming its content (so that a retry or a later run reuses it)
CONTENT_TAG_PREFIX = "cloud-paas-sha256-"


class _RedactKeys(logging.Filter):
    """Replace the API keys the hooks of this process use with ``***`` in bioblend's log records.

    bioblend logs the body of every refused request at ERROR level; a server or proxy that repeats the key it was
    sent would put the key in the task log. Airflow's secrets masker also knows the keys (:meth:`GalaxyHook._mask`)
    but only redacts where the task runner set it up; this filter works wherever the hook runs (triggerer, tests).
    """

    keys: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.keys:
            return True
        message = record.getMessage()
        if any(key in message for key in self.keys):
            for key in self.keys:
                message = message.replace(key, "***")
            record.msg, record.args = message, None
        return True


_REDACT_KEYS = _RedactKeys()
for _name in ("bioblend", "bioblend.galaxyclient"):
    logging.getLogger(_name).addFilter(_REDACT_KEYS)


def galaxy_url(host: str | None, *, schema: str | None = None, port: int | None = None) -> str:
    """Return a Galaxy's base URL from a connection's Host, Schema and Port fields.

    ``http://h:8080`` is taken as it is (Port fills in a missing port); a bare ``h`` gets ``schema://`` (``http``
    unless Schema says ``https``) and ``:port``. A trailing ``/`` is dropped.

    :param host: the Host field: a URL or a host name
    :param schema: the Schema field (``http`` or ``https``; anything else is ignored)
    :param port: the Port field
    """
    return base_url(host, service="Galaxy", credential="the API key", error=GalaxyConfigError, schema=schema,
                    port=port)


def workflow_name(workflow: Mapping[str, Any]) -> str:
    """Return a workflow's name (``name`` of a ``.ga`` dict, ``label`` or ``name`` of a Format2 one).

    :param workflow: the workflow dict
    """
    name = workflow.get("name") or workflow.get("label")
    if not name or not isinstance(name, str):
        raise GalaxyConfigError("the workflow has no name: give a .ga workflow a name, a Format2 one a label",
                                field="workflow")
    return name


def content_tag(workflow: Mapping[str, Any]) -> str:
    """Return the tag naming a workflow's content (a SHA-256 of its canonical JSON).

    :param workflow: the workflow dict
    """
    canonical = json.dumps(workflow, sort_keys=True, separators=(",", ":"), default=str)
    return CONTENT_TAG_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def read_workflow(path: str | Path) -> dict[str, Any]:
    """Read a workflow file: ``.ga`` (JSON) or Format2 (``.gxwf.yml``, ``.yml``, ``.yaml``), at most 2 MB.

    :param path: the file
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise GalaxyConfigError("no such workflow file", field="workflow", value=str(path))
    if path.stat().st_size > MAX_WORKFLOW_BYTES:
        raise GalaxyConfigError(f"the workflow file is over {MAX_WORKFLOW_BYTES} bytes", field="workflow",
                                value=str(path))
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".ga" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise GalaxyConfigError(f"not a readable workflow ({type(err).__name__}: {str(err)[:200]})",
                                field="workflow", value=str(path)) from None
    if not isinstance(data, dict) or (not data.get("steps") and data.get("class") != "GalaxyWorkflow"):
        raise GalaxyConfigError("not a Galaxy workflow (a .ga dict with steps, or a Format2 class: GalaxyWorkflow)",
                                field="workflow", value=str(path))
    return data


class GalaxyHook(ConnectionFormMixin, BaseHook):
    """Use a Galaxy as one user: histories, uploads, tool flavours, workflows, invocations and downloads.

    :param galaxy_conn_id: the Airflow connection id (Host: the URL; Password or extra ``api_key``: the key)
    :param url: a Galaxy URL replacing the connection's Host (e.g. a deployment's ``galaxy_url`` output)
    :param timeout: seconds one API request may take (default: the connection's ``timeout`` extra, else 60)
    """

    conn_name_attr = "galaxy_conn_id"
    default_conn_name = "galaxy_default"
    conn_type = "galaxy"
    hook_name = "Galaxy"

    def __init__(self, galaxy_conn_id: str = default_conn_name, *, url: str | None = None,
                 timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.galaxy_conn_id = galaxy_conn_id
        self._url = url or None
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"GalaxyHook(galaxy_conn_id={self.galaxy_conn_id!r}, url={self._url!r})"

    @cached_property
    def _settings(self) -> dict[str, Any]:
        """Return url, api_key, timeout and verify from the connection (and the hook's arguments)."""
        conn = self.get_connection(self.galaxy_conn_id)
        extras = dict(conn.extra_dejson)
        api_key = conn.password or extras.get("api_key")
        if not api_key:
            raise GalaxyConfigError(f"connection '{self.galaxy_conn_id}' has no API key: set its Password (or the "
                                    "api_key extra) to the Galaxy user's key", field="password")
        api_key = str(api_key)
        self._mask(api_key)
        url = galaxy_url(self._url) if self._url else galaxy_url(conn.host, schema=conn.schema, port=conn.port)
        timeout, verify = request_settings(extras, self._timeout, error=GalaxyConfigError)
        return {"url": url, "api_key": api_key, "timeout": timeout, "verify": verify}

    @staticmethod
    def _mask(secret: str) -> None:
        """Have Airflow's secrets masker (and bioblend's log filter) redact the key in this process's logs."""
        _RedactKeys.keys.add(secret)
        mask(secret)

    @property
    def url(self) -> str:
        """Return the Galaxy's base URL the hook talks to."""
        return self._settings["url"]

    @cached_property
    def client(self) -> GalaxyClient:
        """Return the client of the connection's Galaxy and user."""
        from airflow_cloud_paas.services.galaxy.client import GalaxyClient

        settings = self._settings
        return GalaxyClient(settings["url"], settings["api_key"], timeout=settings["timeout"],
                            verify=settings["verify"])

    def get_conn(self) -> GalaxyClient:
        """Return the :class:`~airflow_cloud_paas.services.galaxy.client.GalaxyClient` of the connection."""
        return self.client

    def test_connection(self) -> tuple[bool, str]:
        """Return whether the Galaxy answers and takes the key (Airflow's connection test)."""
        try:
            user = self.client.whoami()
        except Exception as err:  # the UI shows the reason rather than a stack trace; errors never hold the key
            return False, str(err)
        role = "an admin" if user.get("is_admin") else "a user"
        return True, f"Galaxy {self.client.version()} at {self.url}: the key is {user.get('email')}'s, {role}"

    # ------------------------------------------------------------------ server and user
    def version(self) -> str:
        """Return Galaxy's version (``26.1``)."""
        return self.client.version()

    def whoami(self) -> dict[str, Any]:
        """Return the key's user: ``id``, ``email``, ``username``, ``is_admin`` (GalaxyAuthError for a bad key)."""
        user = self.client.whoami()
        return {k: user.get(k) for k in ("id", "email", "username", "is_admin")}

    # ------------------------------------------------------------------ tools
    def install_flavour(self, name: str) -> list[str]:
        """Install a tool flavour's tools (idempotent; an admin key); return the tool ids it added.

        :param name: the flavour's name (see :func:`~airflow_cloud_paas.services.galaxy.flavours.available`)
        """
        from airflow_cloud_paas.services.galaxy import flavours

        return self.client.install_flavour(flavours.load(name))

    def check_tools(self, tool_ids: list[str]) -> None:
        """Raise GalaxyNotFoundError naming the tools the Galaxy lacks.

        :param tool_ids: tool ids
        """
        self.client.check_tools(tool_ids)

    def run_tool(self, history_id: str, tool_id: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run one tool; return its ``jobs`` and ``outputs`` (GalaxyNotFoundError for an unknown tool).

        :param history_id: the history its outputs go to
        :param tool_id: the tool
        :param inputs: its inputs (a dataset is ``{"src": "hda", "id": ...}``)
        """
        return self.client.run_tool(history_id, tool_id, inputs)

    # ------------------------------------------------------------------ histories and data
    def create_history(self, name: str, *, tags: Sequence[str] = ()) -> str:
        """Create a history; return its id.

        :param name: its name
        :param tags: tags it carries
        """
        return self.client.create_history(name, tags=tags)

    def find_history(self, name: str, *, tag: str) -> str | None:
        """Return the newest history with this name and tag, or None.

        :param name: its name
        :param tag: a tag it carries
        """
        return self.client.find_history(name, tag=tag)

    def ensure_history(self, name: str, *, tag: str) -> str:
        """Return the history with this name and tag (a retry's), creating it if there is none.

        :param name: its name
        :param tag: the tag that marks it as this task's
        """
        found = self.client.find_history(name, tag=tag)
        if found:
            self.log.info("Galaxy history %r (%s) is already there: %s", name, tag, found)
            return found
        return self.client.create_history(name, tags=[tag])

    def tagged_datasets(self, history_id: str, tag: str) -> dict[str, str]:
        """Return name -> id of a history's datasets with this tag, unless deleted or failed.

        :param history_id: the history
        :param tag: the tag
        """
        return self.client.tagged_datasets(history_id, tag)

    def upload(self, history_id: str, path: str | Path | None = None, *, content: str | None = None,
               name: str | None = None, file_type: str = "auto", tags: Sequence[str] = ()) -> str:
        """Upload a local file, or pasted text, into a history; return the dataset's id (it may still be queued).

        :param history_id: the history
        :param path: a local file
        :param content: text instead of a file
        :param name: the dataset's name (default: the file's)
        :param file_type: Galaxy's datatype (``auto``: sniffed)
        :param tags: tags the dataset carries
        """
        return self.client.upload(history_id, path, content=content, name=name, file_type=file_type, tags=tags)

    def wait_datasets(self, dataset_ids: Sequence[str], *, timeout: float = 600.0,
                      interval: float = 1.0) -> dict[str, dict[str, Any]]:
        """Wait until every dataset is ``ok`` within one deadline; return id -> details (GalaxyJobError if not).

        :param dataset_ids: the datasets
        :param timeout: seconds to wait for all of them
        :param interval: seconds between looks
        """
        return self.client.wait_datasets(dataset_ids, timeout=timeout, interval=interval)

    def wait_dataset(self, dataset_id: str, *, timeout: float = 600.0, interval: float = 1.0) -> dict[str, Any]:
        """Wait until a dataset is ``ok``; return its details (GalaxyJobError if it ended otherwise).

        :param dataset_id: the dataset
        :param timeout: seconds to wait
        :param interval: seconds between looks
        """
        return self.client.wait_dataset(dataset_id, timeout=timeout, interval=interval)

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        """Return a dataset's details (``state``, ``name``, ``file_size``, ``extension``, ``history_id``...).

        :param dataset_id: the dataset
        """
        return self.client.dataset(dataset_id)

    def download(self, dataset_id: str, path: str | Path) -> Path:
        """Download a dataset (it must be ``ok``) to a file, or into a directory; return the file.

        :param dataset_id: the dataset
        :param path: the file, or an existing directory
        """
        return self.client.download(dataset_id, path)

    # ------------------------------------------------------------------ workflows
    def import_workflow(self, workflow: Mapping[str, Any] | str | Path, *, reuse: bool = True) -> str:
        """Import a workflow (a dict, or a ``.ga``/``.gxwf.yml`` file); return its id.

        With ``reuse``, a workflow of the same name and content imported before (found by its content tag) is
        used instead of importing a copy, so retries and later runs do not pile up workflows.

        :param workflow: a ``.ga`` or Format2 dict, or the path of such a file
        :param reuse: use the same workflow imported earlier
        """
        data = dict(workflow) if isinstance(workflow, Mapping) else read_workflow(workflow)
        name = workflow_name(data)
        tag = content_tag(data)
        if reuse:
            found = self.client.find_workflow(name, tag=tag)
            if found:
                self.log.info("Galaxy workflow %r (%s) is already there: %s", name, tag, found)
                return found
        tags = [t for t in (data.get("tags") or []) if not str(t).startswith(CONTENT_TAG_PREFIX)]
        return self.client.import_workflow({**data, "tags": [*tags, tag]})

    def workflow_inputs(self, workflow_id: str) -> dict[str, str]:
        """Return a workflow's inputs, label -> step index.

        :param workflow_id: the workflow
        """
        return self.client.workflow_inputs(workflow_id)

    def invoke(self, workflow_id: str, history_id: str, inputs: Mapping[str, str]) -> str:
        """Invoke a workflow on datasets; return the invocation id (GalaxyInputError names missing inputs first).

        :param workflow_id: the workflow
        :param history_id: the history its outputs go to
        :param inputs: input label -> dataset id
        """
        return self.client.invoke(workflow_id, history_id, inputs)

    def find_invocation(self, workflow_id: str, history_id: str, inputs: Mapping[str, str]) -> str | None:
        """Return an invocation of the workflow into the history on the same datasets that did not fail, or None.

        :param workflow_id: the workflow
        :param history_id: the history its outputs go to
        :param inputs: input label -> dataset id
        """
        return self.client.find_invocation(workflow_id, history_id, inputs)

    def invocation_status(self, invocation_id: str) -> dict[str, Any]:
        """Return an invocation's ``state``, ``jobs`` (state -> count), ``done``, ``failed``, ``outputs``.

        :param invocation_id: the invocation
        """
        return self.client.invocation_status(invocation_id)

    def failure_detail(self, invocation_id: str) -> str:
        """Return what an invocation's failed jobs printed (never raises: for an error message).

        :param invocation_id: the invocation
        """
        try:
            return self.client.failure_detail(invocation_id)
        except GalaxyAPIError as err:
            return f"(its jobs could not be read: {err.message})"

    def cancel_invocation(self, invocation_id: str) -> None:
        """Cancel an invocation.

        :param invocation_id: the invocation
        """
        self.client.cancel_invocation(invocation_id)
