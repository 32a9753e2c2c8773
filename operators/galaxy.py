"""Operators of a Galaxy (Laniakea): install a tool flavour, upload data, run a workflow, download its results.

Every operator takes ``galaxy_conn_id`` (a ``galaxy`` connection: URL and API key) and an optional, templated
``galaxy_url`` replacing the connection's Host, e.g. a deployment's ``galaxy_url`` output, so that the key stays in
the connection and a DAG can use the Galaxy it deployed. The API key is never logged, returned, nor in an error.

Results downloaded by :class:`CloudPaaSGalaxyDownloadDatasetsOperator` are Airflow Assets
(:func:`galaxy_result_asset`: ``galaxy://<galaxy_conn_id>/<name>``): a DAG scheduled on one runs when a new result
arrives, and finds the file's path, dataset id, size and checksum in the triggering event's ``extra``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator, conf

from airflow_cloud_paas.operators._args import mapping_arg, name_arg, task_instance_tag
from airflow_cloud_paas.operators._defaults import CloudPaaSTaskDefaults
from airflow_cloud_paas.services.galaxy.errors import (
    GalaxyAPIError,
    GalaxyConfigError,
    GalaxyInputError,
    GalaxyJobError,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_cloud_paas.hooks.galaxy import GalaxyHook
    from airflow_cloud_paas.triggers.galaxy import GalaxyInvocationTrigger

#: the Asset group of Galaxy results
ASSET_GROUP = "cloud-paas-galaxy"
#: the prefix of the tag a task's histories and uploads carry (see ``_GalaxyBaseOperator._task_tag``)
TASK_TAG_PREFIX = "cloud-paas-task-"


def galaxy_result_asset(name: str, galaxy_conn_id: str = "galaxy_default") -> Asset:
    """Return the Asset of a named Galaxy result (``galaxy://<galaxy_conn_id>/<name>``).

    The URI names the result, not one file: each download adds an event whose ``extra`` holds where the file is
    (``path``), and which dataset, history and Galaxy it came from.

    :param name: the result's name (a workflow output label)
    :param galaxy_conn_id: the Galaxy's connection
    """
    _check_name(name, field="name")
    return Asset(name=f"galaxy_{galaxy_conn_id}_{name}", uri=f"galaxy://{galaxy_conn_id}/{name}", group=ASSET_GROUP)


def _check_name(name: object, *, field: str) -> str:
    return name_arg(name, field=field, error=GalaxyConfigError)


def _mapping(value: Any, *, field: str) -> dict[str, Any]:
    return mapping_arg(value, field=field, error=GalaxyConfigError)


class _GalaxyBaseOperator(CloudPaaSTaskDefaults, BaseOperator):
    """The Galaxy's connection and URL, and the hook made of them.

    :param galaxy_conn_id: the Galaxy's ``galaxy`` connection (Password: the API key)
    :param galaxy_url: the Galaxy's URL, replacing the connection's Host (templated)
    """

    ui_color = "#f5e6c8"

    def __init__(self, *, galaxy_conn_id: str = "galaxy_default", galaxy_url: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.galaxy_conn_id = galaxy_conn_id
        self.galaxy_url = galaxy_url

    @cached_property
    def hook(self) -> GalaxyHook:
        """Return the hook of the Galaxy's connection (and URL)."""
        from airflow_cloud_paas.hooks.galaxy import GalaxyHook

        return GalaxyHook(galaxy_conn_id=self.galaxy_conn_id, url=self.galaxy_url or None)

    @staticmethod
    def _run_label(context: Context | None) -> str:
        ti = context.get("ti") if context else None
        if ti is None or not getattr(ti, "run_id", None):
            return "airflow"
        return f"airflow {ti.dag_id} {ti.run_id}"

    @staticmethod
    def _task_tag(context: Context | None) -> str | None:
        """Return the Galaxy tag of this task instance (every try of it), or None outside a task instance.

        What the task makes carries it: a retry finds the history and the datasets an earlier try made by this tag,
        instead of making them again.
        """
        return task_instance_tag(context, TASK_TAG_PREFIX)

    def _history(self, context: Context, history_id: str | None, history_name: str | None) -> str:
        """Return the history given, else this task instance's (an earlier try's, or a new one)."""
        if history_id:
            return history_id
        name, tag = history_name or self._run_label(context), self._task_tag(context)
        return self.hook.ensure_history(name, tag=tag) if tag else self.hook.create_history(name)


class CloudPaaSGalaxyInstallFlavourOperator(_GalaxyBaseOperator):
    """Install a tool flavour's tools on a Galaxy (an admin's key); return the ids of the tools it added.

    Idempotent: tools already installed are skipped, so a second run returns ``[]``.

    :param flavour: the flavour's name (templated; see
        :func:`~airflow_cloud_paas.services.galaxy.flavours.available`)
    :param galaxy_conn_id: the Galaxy's ``galaxy`` connection (an admin's API key)
    :param galaxy_url: the Galaxy's URL, replacing the connection's Host (templated)
    """

    template_fields: Sequence[str] = ("flavour", "galaxy_url")

    def __init__(self, *, flavour: str = "cloud-paas-text", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.flavour = flavour

    def execute(self, context: Context) -> list[str]:
        added = self.hook.install_flavour(self.flavour)
        self.log.info("Flavour %s on %s: %s", self.flavour, self.hook.url,
                      f"installed {', '.join(added)}" if added else "every tool was already there")
        return added


class CloudPaaSGalaxyUploadDatasetsOperator(_GalaxyBaseOperator):
    """Upload local files and pasted texts into a Galaxy history; wait until each is ``ok``.

    Returns (and, with ``multiple_outputs``, pushes as the XComs ``history_id`` and ``datasets``)
    ``{"history_id": ..., "datasets": {name: dataset id}}``. A dataset that ends other than ``ok`` raises
    :class:`~airflow_cloud_paas.services.galaxy.errors.GalaxyJobError` with what its job printed. Idempotent: the
    history and datasets it makes carry the task instance's tag, so a retry reuses the history and every upload of
    an earlier try that did not fail (waiting for one still queued) and uploads only the rest.

    :param files: local files: name -> path, or a list of paths (named by their file names) (templated)
    :param contents: texts to upload: name -> text (templated)
    :param history_id: the history to upload into (templated; default: a new one)
    :param history_name: the new history's name (templated; default: ``airflow <dag> <run>``)
    :param file_type: Galaxy's datatype of every upload (``auto``: sniffed)
    :param timeout: seconds to wait for the uploads to be ``ok``
    :param galaxy_conn_id: the Galaxy's ``galaxy`` connection
    :param galaxy_url: the Galaxy's URL, replacing the connection's Host (templated)
    """

    template_fields: Sequence[str] = ("files", "contents", "history_id", "history_name", "galaxy_url")

    def __init__(
        self,
        *,
        files: Mapping[str, str] | Sequence[str] | None = None,
        contents: Mapping[str, str] | None = None,
        history_id: str | None = None,
        history_name: str | None = None,
        file_type: str = "auto",
        timeout: float = 600.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.files = files
        self.contents = contents
        self.history_id = history_id
        self.history_name = history_name
        self.file_type = file_type
        self.timeout = timeout

    def _sources(self) -> list[tuple[str, Path | None, str | None]]:
        """Return (name, path, text) of every upload, checked: names well formed and distinct, files there."""
        files = self.files or {}
        if isinstance(files, str) or not isinstance(files, Mapping | Sequence):
            raise GalaxyConfigError("files is name -> path, or a list of paths", field="files", value=files)
        pairs = list(files.items()) if isinstance(files, Mapping) else [(Path(p).name, p) for p in files]
        sources: list[tuple[str, Path | None, str | None]] = []
        for name, path in pairs:
            path = Path(str(path))
            if not path.is_file():
                raise GalaxyConfigError("no such file to upload", field=f"files.{name}", value=str(path))
            sources.append((_check_name(name, field="files"), path, None))
        for name, text in _mapping(self.contents or {}, field="contents").items():
            sources.append((_check_name(name, field="contents"), None, str(text)))
        names = [s[0] for s in sources]
        if not sources:
            raise GalaxyConfigError("nothing to upload: give files or contents", field="files")
        if len(set(names)) != len(names):
            raise GalaxyConfigError("two uploads have the same name", field="files", value=sorted(names))
        return sources

    def execute(self, context: Context) -> dict[str, Any]:
        sources = self._sources()
        hook = self.hook
        tag = self._task_tag(context)
        history_id = self._history(context, self.history_id, self.history_name)
        earlier = hook.tagged_datasets(history_id, tag) if tag else {}
        uploaded: dict[str, str] = {}
        for name, path, text in sources:
            if name in earlier:
                self.log.info("%s was uploaded by an earlier try of this task: dataset %s", name, earlier[name])
                uploaded[name] = earlier[name]
                continue
            uploaded[name] = hook.upload(history_id, path, content=text, name=name, file_type=self.file_type,
                                         tags=[tag] if tag else ())
        done = hook.wait_datasets(list(uploaded.values()), timeout=float(self.timeout))
        for name, dataset_id in uploaded.items():
            self.log.info("Uploaded %s to history %s: dataset %s (%s, %s bytes)", name, history_id, dataset_id,
                          done[dataset_id].get("extension"), done[dataset_id].get("file_size"))
        return {"history_id": history_id, "datasets": uploaded}


class CloudPaaSGalaxyRunWorkflowOperator(_GalaxyBaseOperator):
    """Import (or reuse) a Galaxy workflow, invoke it on datasets, wait until its jobs end; return its outputs.

    Every tool the workflow runs must be installed (:class:`~airflow_cloud_paas.services.galaxy.errors.
    GalaxyNotFoundError` names the missing ones) and every input given (``GalaxyInputError`` names the missing
    and unknown labels), both checked before anything is invoked. The result (and, with ``multiple_outputs``, the
    XComs of the same names) is ``{"invocation_id", "history_id", "workflow_id", "outputs": {label: dataset id}}``.
    A failed invocation or job raises :class:`~airflow_cloud_paas.services.galaxy.errors.GalaxyJobError` with
    what the failed jobs printed. With ``deferrable=True`` (default: the ``[operators] default_deferrable``
    setting; a workflow runs minutes to days, so do defer it) the task invokes the workflow, then waits in the
    triggerer (:class:`~airflow_cloud_paas.triggers.galaxy.GalaxyInvocationTrigger`), holding no worker
    slot, and resumes in :meth:`execute_complete`. Killing the task cancels the invocation. A retry does not invoke
    the workflow twice: it finds its history by the task's tag and waits for the earlier try's invocation on the
    same datasets unless that one failed (``reuse_invocation``).

    :param workflow: a ``.ga`` or Format2 (``class: GalaxyWorkflow``) dict, or the path of such a file; not
        templated (Jinja would read ``{#`` or ``{{`` in a tool's command line as its own)
    :param inputs: input label -> dataset id (templated)
    :param history_id: the history the outputs go to (templated; default: a new one)
    :param history_name: the new history's name (templated; default: ``airflow <dag> <run>``)
    :param reuse_workflow: use the workflow of the same name and content imported before, if any
    :param reuse_invocation: on a retry (or in the task's own history), wait for an invocation of this workflow into
        this history on the same datasets that did not fail (an earlier try's) instead of invoking it again
    :param wait_for_completion: wait until the invocation ends (False: return once invoked, ``outputs`` empty)
    :param deferrable: wait in the triggerer
    :param poll_interval: seconds between two looks at the invocation
    :param timeout: seconds to wait at most (None: no limit, beyond the task's ``execution_timeout``)
    :param galaxy_conn_id: the Galaxy's ``galaxy`` connection
    :param galaxy_url: the Galaxy's URL, replacing the connection's Host (templated)
    """

    template_fields: Sequence[str] = ("inputs", "history_id", "history_name", "galaxy_url")

    def __init__(
        self,
        *,
        workflow: Mapping[str, Any] | str | Path,
        inputs: Mapping[str, str] | str,
        history_id: str | None = None,
        history_name: str | None = None,
        reuse_workflow: bool = True,
        reuse_invocation: bool = True,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 10.0,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("multiple_outputs", True)
        super().__init__(**kwargs)
        self.workflow = workflow
        self.inputs = inputs
        self.history_id = history_id
        self.history_name = history_name
        self.reuse_workflow = reuse_workflow
        self.reuse_invocation = reuse_invocation
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.invocation_id: str | None = None

    def validate(self) -> dict[str, str]:
        """Check the settings; return the inputs (label -> dataset id) as rendered."""
        if isinstance(self.poll_interval, bool) or not isinstance(self.poll_interval, int | float) \
                or self.poll_interval <= 0:
            raise GalaxyConfigError("seconds > 0", field="poll_interval", value=self.poll_interval)
        if self.timeout is not None and (isinstance(self.timeout, bool) or not isinstance(self.timeout, int | float)
                                         or self.timeout <= 0):
            raise GalaxyConfigError("seconds > 0, or None for none", field="timeout", value=self.timeout)
        inputs = _mapping(self.inputs, field="inputs")
        bad = sorted(k for k, v in inputs.items() if not isinstance(v, str) or not v.strip())
        if bad:
            raise GalaxyInputError(f"input(s) {', '.join(map(str, bad))} name no dataset id (empty or not a string)")
        return {str(k): v.strip() for k, v in inputs.items()}

    def _trigger(self) -> GalaxyInvocationTrigger:
        from airflow_cloud_paas.triggers.galaxy import GalaxyInvocationTrigger

        return GalaxyInvocationTrigger(
            invocation_id=str(self.invocation_id),
            galaxy_conn_id=self.galaxy_conn_id,
            url=self.galaxy_url or None,
            poll_interval=float(self.poll_interval),
            timeout=float(self.timeout) if self.timeout else None,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        inputs = self.validate()
        hook = self.hook
        workflow_id = hook.import_workflow(self.workflow, reuse=self.reuse_workflow)
        history_id = self._history(context, self.history_id, self.history_name)
        # in the task's own history anything found is an earlier try's; in a history given to it, only a retry
        # looks (a new run on the same data and history runs the workflow again)
        ti = context.get("ti") if context else None
        look = self.reuse_invocation and (not self.history_id or int(getattr(ti, "try_number", 1) or 1) > 1)
        earlier = hook.find_invocation(workflow_id, history_id, inputs) if look else None
        if earlier:
            self.invocation_id = earlier
            self.log.info("Galaxy workflow %s was already invoked on these datasets into history %s (an earlier "
                          "try): waiting for invocation %s", workflow_id, history_id, earlier)
        else:
            self.invocation_id = hook.invoke(workflow_id, history_id, inputs)
            self.log.info("Invoked Galaxy workflow %s on %s into history %s: invocation %s", workflow_id, hook.url,
                          history_id, self.invocation_id)
        if not self.wait_for_completion:
            return {"invocation_id": self.invocation_id, "history_id": history_id, "workflow_id": workflow_id,
                    "outputs": {}}
        trigger = self._trigger()
        if self.deferrable:
            self.defer(trigger=trigger, method_name="execute_complete", kwargs={"workflow_id": workflow_id},
                       timeout=timedelta(seconds=self.timeout + 60) if self.timeout else None)
        event = trigger.wait(lambda state: self.log.info("Galaxy invocation %s: %s; jobs %s", trigger.invocation_id,
                                                         state["state"], state["jobs"]))
        return self.execute_complete(context, event, workflow_id=workflow_id)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None,
                         workflow_id: str | None = None) -> dict[str, Any]:
        """Resume after the wait: return the invocation's outputs if it succeeded, raise otherwise.

        :param context: the task context
        :param event: the trigger's event payload
        :param workflow_id: the workflow invoked
        """
        if not event:
            raise GalaxyJobError(f"invocation {self.invocation_id}: the trigger returned no event")
        invocation_id = str(event.get("invocation_id") or self.invocation_id)
        self.invocation_id = invocation_id
        status = event.get("status")
        if status == "failed":
            detail = self.hook.failure_detail(invocation_id)
            raise GalaxyJobError(f"workflow invocation {invocation_id} failed ({event.get('message')}): {detail}",
                                 url=self.hook.url)
        if status == "timeout":
            raise GalaxyJobError(f"workflow invocation {invocation_id}: {event.get('message')} (it may still run: "
                                 "cancel it in Galaxy, or wait longer)", url=self.hook.url)
        if status != "success":
            raise GalaxyAPIError(f"waiting for workflow invocation {invocation_id} ended with {status}: "
                                 f"{event.get('message')}", url=self.hook.url)
        outputs = dict(event.get("outputs") or {})
        self.log.info("Galaxy invocation %s succeeded (%s): outputs %s", invocation_id, event.get("message"),
                      ", ".join(f"{k}={v}" for k, v in sorted(outputs.items())) or "none")
        return {"invocation_id": invocation_id, "history_id": event.get("history_id"), "workflow_id": workflow_id,
                "outputs": outputs}

    def on_kill(self) -> None:
        if self.invocation_id is not None:
            self.hook.cancel_invocation(self.invocation_id)
            self.log.info("Cancelled Galaxy invocation %s", self.invocation_id)


class CloudPaaSGalaxyDownloadDatasetsOperator(_GalaxyBaseOperator):
    """Download Galaxy datasets into a directory; announce each named result as an Asset event.

    ``names`` declares the results this task produces: each is an outlet :func:`galaxy_result_asset`
    (``galaxy://<galaxy_conn_id>/<name>``), so a DAG scheduled on it runs when the result arrives; the event's
    ``extra`` holds ``path``, ``dataset_id``, ``history_id``, ``galaxy_url``, ``size``, ``sha256`` and
    ``extension``. Each file is ``<directory>/<name>`` (plus Galaxy's extension when the name has none). Returns
    ``{name: {"path", "dataset_id", "size", "sha256"}}``.

    :param datasets: name -> dataset id, or the result of :class:`CloudPaaSGalaxyRunWorkflowOperator` (its
        ``outputs`` are taken) (templated)
    :param directory: where the files go (templated; made if missing)
    :param names: the results expected (each must be among ``datasets``); their Assets are the task's outlets
        unless ``outlets`` is given
    :param timeout: seconds to wait for a dataset still being made
    :param galaxy_conn_id: the Galaxy's ``galaxy`` connection
    :param galaxy_url: the Galaxy's URL, replacing the connection's Host (templated)
    """

    template_fields: Sequence[str] = ("datasets", "directory", "galaxy_url")

    def __init__(
        self,
        *,
        datasets: Mapping[str, Any] | str,
        directory: str,
        names: Sequence[str] = (),
        timeout: float = 600.0,
        **kwargs: Any,
    ) -> None:
        names = [_check_name(n, field="names") for n in names]
        if names and "outlets" not in kwargs:
            kwargs["outlets"] = [galaxy_result_asset(n, kwargs.get("galaxy_conn_id", "galaxy_default"))
                                 for n in names]
        super().__init__(**kwargs)
        self.datasets = datasets
        self.directory = directory
        self.names = names
        self.timeout = timeout

    def _wanted(self) -> dict[str, str]:
        datasets = _mapping(self.datasets, field="datasets")
        if isinstance(datasets.get("outputs"), Mapping) and "invocation_id" in datasets:
            datasets = dict(datasets["outputs"])
        missing = sorted(set(self.names) - set(datasets))
        if missing:
            raise GalaxyInputError(f"no dataset for result(s) {', '.join(missing)} (given: "
                                   f"{', '.join(sorted(datasets)) or 'none'})")
        for name, dataset_id in datasets.items():
            _check_name(name, field="datasets")
            if not isinstance(dataset_id, str) or not dataset_id:
                raise GalaxyConfigError("a dataset id", field=f"datasets.{name}", value=dataset_id)
        return datasets

    def execute(self, context: Context) -> dict[str, Any]:
        datasets = self._wanted()
        directory = Path(str(self.directory))
        directory.mkdir(parents=True, exist_ok=True)
        hook = self.hook
        results: dict[str, Any] = {}
        done = hook.wait_datasets(list(datasets.values()), timeout=float(self.timeout))
        for name, dataset_id in datasets.items():
            data = done[dataset_id]
            extension = str(data.get("extension") or "dat")
            target = directory / (name if Path(name).suffix else f"{name}.{extension}")
            path = hook.download(dataset_id, target)
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            results[name] = {"path": str(path), "dataset_id": dataset_id, "size": path.stat().st_size,
                             "sha256": digest.hexdigest()}
            self.log.info("Downloaded Galaxy dataset %s (%s) to %s", dataset_id, name, path)
            extra = {**results[name], "history_id": data.get("history_id"), "galaxy_url": hook.url,
                     "extension": extension, "name": name}
            self._announce(context, name, extra)
        return results

    def _announce(self, context: Context, name: str, extra: dict[str, Any]) -> None:
        """Put the download's details on the outlet event of its result's Asset (if it is an outlet)."""
        uri = galaxy_result_asset(name, self.galaxy_conn_id).uri
        events = context.get("outlet_events") if context else None
        for outlet in self.outlets or ():
            if isinstance(outlet, Asset) and outlet.uri == uri and events is not None:
                events[outlet].extra.update(extra)
