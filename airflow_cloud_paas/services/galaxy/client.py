"""A Galaxy's API through bioblend, every failure a typed :class:`~.errors.GalaxyError` that never shows the key.

Used by :class:`~airflow_cloud_paas.hooks.galaxy.GalaxyHook` (an Airflow connection gives URL and key) and by the
local backend's Galaxy driver (which bootstraps the admin and installs the flavour). bioblend is imported here
only (the ``galaxy`` extra).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import requests

from airflow_cloud_paas.services.galaxy.errors import (
    GalaxyAPIError,
    GalaxyAuthError,
    GalaxyConfigError,
    GalaxyInputError,
    GalaxyJobError,
    GalaxyNotFoundError,
    GalaxyUnreachableError,
)
from airflow_cloud_paas.services.galaxy.flavours import Flavour

log = logging.getLogger(__name__)

T = TypeVar("T")
#: dataset and job states after which nothing changes
DATASET_DONE = frozenset({"ok", "error", "failed_metadata", "discarded", "deferred", "paused", "deleted"})
#: dataset states a retry does not reuse (it uploads again): every end but ok (a deferred one would never be ok)
DATASET_FAILED = DATASET_DONE - {"ok"}
JOB_DONE = frozenset({"ok", "error", "failed", "deleted", "deleting", "stopped", "skipped"})
JOB_FAILED = frozenset({"error", "failed", "deleted", "deleting", "stopped"})
#: invocation states: scheduling is over in "scheduled" (its jobs may still run), all done in "completed",
#: failed in these
INVOCATION_FAILED = frozenset({"failed", "cancelled", "cancelling"})


def _status_of(err: BaseException) -> int | None:
    return getattr(err, "status_code", None)


def _message_of(err: BaseException) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if body:
        try:
            parsed = json.loads(body)
        except ValueError:
            return str(body)[:500]
        if isinstance(parsed, Mapping) and parsed.get("err_msg"):
            return str(parsed["err_msg"])[:1000]
        return str(body)[:500]
    return str(err.args[0] if err.args else err)[:500]


class _HTTPError(Exception):
    """A requests answer with an error status, shaped like bioblend's ConnectionError (for ``_typed``)."""

    def __init__(self, answer: requests.Response) -> None:
        super().__init__(f"HTTP {answer.status_code}")
        self.status_code = answer.status_code
        self.body = answer.text


class GalaxyClient:
    """Talk to one Galaxy as one user (its API key).

    :param url: the Galaxy's base URL (``http://host:port``)
    :param api_key: the user's API key (never logged, never in an error)
    :param timeout: seconds one HTTP request may take
    :param verify: check the server's TLS certificate
    """

    def __init__(self, url: str, api_key: str, *, timeout: float = 60.0, verify: bool = True) -> None:
        if not url or not str(url).startswith(("http://", "https://")):
            raise GalaxyConfigError("a Galaxy URL starts with http:// or https://", field="url", value=url)
        if not api_key:
            raise GalaxyConfigError("no API key: set the connection's password (or api_key extra)", field="api_key")
        self.url = str(url).rstrip("/")
        self._api_key = api_key
        self.timeout = float(timeout)
        self.verify = verify

    def __repr__(self) -> str:
        return f"GalaxyClient({self.url!r})"

    @cached_property
    def gi(self) -> Any:
        """Return the bioblend ``GalaxyInstance`` (retries off: our callers decide when to try again)."""
        from bioblend.galaxy import GalaxyInstance

        gi = GalaxyInstance(self.url, key=self._api_key, verify=self.verify)
        gi.timeout = self.timeout
        gi.max_get_attempts = 1
        return gi

    # --- one place where bioblend's and requests' errors become ours -------------------------------------------
    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        from bioblend import ConnectionError as BioblendConnectionError
        from bioblend import TimeoutException

        try:
            return fn(*args, **kwargs)
        except BioblendConnectionError as err:
            raise self._typed(what, err) from None
        except TimeoutException as err:
            raise GalaxyAPIError(f"{what}: timed out ({self._mask(str(err))})", url=self.url) from None
        except requests.exceptions.ConnectionError as err:
            raise GalaxyUnreachableError(f"{what}: nothing answers ({type(err).__name__}); is Galaxy running, "
                                         "and the connection's host and port right?", url=self.url) from None
        except requests.exceptions.Timeout:
            raise GalaxyAPIError(f"{what}: no answer in {self.timeout:.0f} s", url=self.url) from None

    def _mask(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _typed(self, what: str, err: BaseException) -> GalaxyAPIError:
        status = _status_of(err)
        message = self._mask(f"{what}: {_message_of(err)}")
        if status is None and isinstance(getattr(err, "__cause__", None), requests.exceptions.ConnectionError):
            return GalaxyUnreachableError(message, url=self.url)
        if status in (401, 403):
            return GalaxyAuthError(f"{message} (is the API key right, and its user an admin where this needs one?)",
                                   url=self.url, status=status)
        if status == 404:
            return GalaxyNotFoundError(message, url=self.url, status=status)
        if status in (400, 422):
            return GalaxyInputError(message, url=self.url, status=status)
        if status is None and "connection" in message.lower():
            return GalaxyUnreachableError(message, url=self.url)
        return GalaxyAPIError(message, url=self.url, status=status)

    # --- server and user ---------------------------------------------------------------------------------------
    def version(self) -> str:
        """Return Galaxy's version (``26.1``); the API answers without a key."""
        try:
            answer = requests.get(f"{self.url}/api/version", timeout=self.timeout, verify=self.verify)
        except requests.exceptions.RequestException as err:
            raise GalaxyUnreachableError(f"version: nothing answers ({type(err).__name__})", url=self.url) from None
        if answer.status_code != 200:
            raise GalaxyAPIError(f"version: {answer.text[:200]}", url=self.url, status=answer.status_code)
        data = answer.json()
        return ".".join(filter(None, [str(data.get("version_major", "")), str(data.get("version_minor", ""))]))

    def whoami(self) -> dict[str, Any]:
        """Return the key's user (``id``, ``email``, ``username``, ``is_admin``); GalaxyAuthError for a wrong key."""
        user = self._call("who am I", self.gi.users.get_current_user)
        if not user or not user.get("id"):
            raise GalaxyAuthError("the API key belongs to no user (wrong key?)", url=self.url, status=401)
        return user

    def require_admin(self) -> dict[str, Any]:
        """Return the key's user, or raise GalaxyAuthError if it is not one of Galaxy's admins."""
        user = self.whoami()
        if not user.get("is_admin"):
            raise GalaxyAuthError(f"user {user.get('email')} is not an admin of this Galaxy (admin_users)",
                                  url=self.url, status=403)
        return user

    def find_user(self, email: str) -> dict[str, Any] | None:
        """Return the user with this e-mail, or None (needs an admin or the bootstrap key).

        :param email: the user's e-mail
        """
        users = self._call(f"find user {email}", self.gi.users.get_users, f_email=email)
        return next((u for u in users if u.get("email") == email), None)

    def create_user(self, email: str, username: str, password: str) -> dict[str, Any]:
        """Create a local user (needs an admin or the bootstrap key); return it.

        :param email: its e-mail
        :param username: its public name
        :param password: its password (not kept anywhere by us)
        """
        return self._call(f"create user {email}", self.gi.users.create_local_user, username, email, password)

    def create_api_key(self, user_id: str) -> str:
        """Return a new API key for this user (needs an admin or the bootstrap key).

        :param user_id: the user's encoded id
        """
        return self._call("create an API key", self.gi.users.create_user_apikey, user_id)

    # --- tools and flavours ------------------------------------------------------------------------------------
    def tool_exists(self, tool_id: str) -> bool:
        """Return whether the toolbox has this tool.

        :param tool_id: the tool's id
        """
        # a plain GET: bioblend's show_tool logs every 404 as an error
        answer = self._call(f"tool {tool_id}", self.gi.make_get_request, f"{self.gi.url}/tools/{tool_id}")
        if answer.status_code == 404:
            return False
        if answer.status_code != 200:
            raise self._typed(f"tool {tool_id}", _HTTPError(answer))
        return True

    def check_tools(self, tool_ids: list[str]) -> None:
        """Raise :class:`GalaxyNotFoundError` naming every tool id the toolbox lacks.

        :param tool_ids: tool ids
        """
        missing = sorted({t for t in tool_ids if not self.tool_exists(t)})
        if missing:
            raise GalaxyNotFoundError(f"unknown tool(s): {', '.join(missing)}; install the flavour that has them",
                                      url=self.url, status=404)

    def install_flavour(self, flavour: Flavour) -> list[str]:
        """Install a flavour's tools (idempotent: tools already there are skipped); return the tool ids it added.

        Galaxy-format tools go through the dynamic tools API (an admin key; ``enable_beta_tool_formats`` in
        galaxy.yml); Tool Shed repositories through the Tool Shed install API, as ephemeris does.

        :param flavour: the flavour
        """
        self.require_admin()
        added: list[str] = []
        for tool in flavour.galaxy_tools:
            tool_id = str(tool["id"])
            if self.tool_exists(tool_id):
                continue
            self._call(f"install tool {tool_id} of flavour {flavour.name}", self.gi.make_post_request,
                       f"{self.gi.url}/dynamic_tools", payload={"src": "representation", "representation": dict(tool)})
            added.append(tool_id)
        installed = {(r.get("tool_shed"), r.get("owner"), r.get("name"), r.get("changeset_revision"))
                     for r in (self._call("installed repositories", self.gi.toolshed.get_repositories)
                               if flavour.repositories else ())
                     if r.get("status") == "Installed" and not r.get("deleted")}
        for repo in flavour.repositories:
            shed = repo.tool_shed_url.split("://", 1)[-1].rstrip("/")
            for revision in repo.revisions or (None,):
                if revision is None:
                    revision = self._call(
                        f"newest revision of {repo.owner}/{repo.name}",
                        self.gi.toolshed.get_latest_installable_revision, repo.tool_shed_url, repo.name, repo.owner)
                if (shed, repo.owner, repo.name, revision) in installed:
                    continue
                result = self._call(
                    f"install {repo.owner}/{repo.name}@{revision} from {repo.tool_shed_url}",
                    self.gi.toolshed.install_repository_revision, repo.tool_shed_url, repo.name, repo.owner, revision,
                    install_tool_dependencies=False, install_repository_dependencies=True,
                    install_resolver_dependencies=False, new_tool_panel_section_label=repo.section)
                added.extend(str(r.get("name")) for r in (result if isinstance(result, list) else [result])
                             if isinstance(r, Mapping))
        if added:
            log.info("flavour %s: installed %s on %s", flavour.name, ", ".join(added), self.url)
        return added

    # --- histories, data, jobs ---------------------------------------------------------------------------------
    def create_history(self, name: str, *, tags: Sequence[str] = ()) -> str:
        """Create a history; return its id.

        :param name: its name
        :param tags: tags it carries (e.g. the task's, so that a retry finds it)
        """
        history_id = self._call(f"create history {name!r}", self.gi.histories.create_history, name)["id"]
        if tags:
            try:
                self._call(f"tag history {name!r}", self.gi.histories.update_history, history_id, tags=list(tags))
            except GalaxyAPIError:
                # untagged, a retry would not find it and make another: the empty history goes, the cause is raised
                try:
                    self._call(f"delete untagged history {name!r}", self.gi.histories.delete_history, history_id,
                               purge=True)
                except GalaxyAPIError as cleanup:
                    log.warning("Could not delete the history %s that could not be tagged: %s", history_id, cleanup)
                raise
        return history_id

    def find_history(self, name: str, *, tag: str) -> str | None:
        """Return the id of the newest of the user's (non-deleted) histories with this name and tag, or None.

        :param name: the history's name
        :param tag: a tag it must carry
        """
        found = self._call(f"find history {name!r}", self.gi.histories.get_histories, name=name, deleted=False,
                           keys=["id", "name", "tags", "update_time"])
        tagged = [h for h in found if h.get("name") == name and tag in (h.get("tags") or [])]
        tagged.sort(key=lambda h: str(h.get("update_time") or ""), reverse=True)
        return str(tagged[0]["id"]) if tagged else None

    def tagged_datasets(self, history_id: str, tag: str) -> dict[str, str]:
        """Return name -> id of a history's datasets carrying a tag that are not deleted nor failed.

        A dataset still queued or running counts (a retry waits for it rather than uploading it again).

        :param history_id: the history
        :param tag: the tag
        """
        found = self._call(f"history {history_id} datasets", self.gi.datasets.get_datasets, history_id=history_id,
                           tag=tag, deleted=False, order="create_time-asc")
        datasets: dict[str, str] = {}
        for item in found:  # oldest first: a newer copy of a name wins
            if item.get("state") in DATASET_FAILED or item.get("history_content_type", "dataset") != "dataset":
                continue
            datasets[str(item.get("name"))] = str(item["id"])
        return datasets

    def upload(self, history_id: str, path: str | Path | None = None, *, content: str | None = None,
               name: str | None = None, file_type: str = "auto", tags: Sequence[str] = ()) -> str:
        """Upload a file (or pasted text) through the fetch API into a history; return the new dataset's id.

        :param history_id: the history
        :param path: a local file (sent with the tus protocol)
        :param content: text to upload instead of a file
        :param name: the dataset's name (default: the file's)
        :param file_type: Galaxy's datatype (``auto`` to sniff)
        :param tags: tags the dataset carries from its creation (so that a retry finds it)
        """
        if (path is None) == (content is None):
            raise GalaxyConfigError("upload takes a path or a content, not both", field="upload")
        payload: dict[str, Any] = {"history_id": history_id}
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise GalaxyConfigError("no such file to upload", field="path", value=str(path))
            name = name or path.name
            uploader = self._call(f"upload {path.name}", self.gi.get_tus_uploader, str(path))
            self._call(f"upload {path.name}", uploader.upload)
            element = {"src": "files", "name": name, "ext": file_type, "dbkey": "?", "to_posix_lines": True}
            payload["files_0|file_data"] = {"session_id": uploader.session_id, "name": name}
        else:
            # pasted (this Galaxy has no upload1 tool, which bioblend's paste_content needs)
            name = name or "pasted.txt"
            element = {"src": "pasted", "paste_content": content, "name": name, "ext": file_type}
        if tags:
            element["tags"] = list(tags)
        payload["targets"] = [{"destination": {"type": "hdas"}, "elements": [element]}]
        answer = self._call(f"upload {name}", self.gi.make_post_request, f"{self.gi.url}/tools/fetch",
                            payload=payload)
        outputs = answer.get("outputs") or []
        if not outputs:
            raise GalaxyAPIError(f"upload made no dataset: {str(answer)[:300]}", url=self.url)
        return outputs[0]["id"]

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        """Return a dataset's details (``state``, ``name``, ``file_size``, ``extension``...).

        :param dataset_id: the dataset
        """
        return self._call(f"dataset {dataset_id}", self.gi.datasets.show_dataset, dataset_id)

    def wait_dataset(self, dataset_id: str, *, timeout: float = 600.0, interval: float = 1.0) -> dict[str, Any]:
        """Wait until a dataset is done; return it, or raise :class:`GalaxyJobError` if it is not ``ok``.

        :param dataset_id: the dataset
        :param timeout: seconds to wait
        :param interval: seconds between looks
        """
        deadline = time.monotonic() + timeout
        while True:
            data = self.dataset(dataset_id)
            if data.get("state") in DATASET_DONE:
                if data.get("state") != "ok":
                    raise GalaxyJobError(f"dataset {dataset_id} ({data.get('name')}) ended {data.get('state')}: "
                                         f"{self._job_detail(data.get('creating_job'))}", url=self.url)
                return data
            if time.monotonic() > deadline:
                raise GalaxyJobError(f"dataset {dataset_id} still {data.get('state')} after {timeout:.0f} s",
                                     url=self.url)
            time.sleep(interval)

    def wait_datasets(self, dataset_ids: Sequence[str], *, timeout: float = 600.0,
                      interval: float = 1.0) -> dict[str, dict[str, Any]]:
        """Wait until every dataset is done within one deadline; return id -> details (GalaxyJobError otherwise).

        :param dataset_ids: the datasets
        :param timeout: seconds to wait for all of them
        :param interval: seconds between looks
        """
        deadline = time.monotonic() + timeout
        return {dataset_id: self.wait_dataset(dataset_id, timeout=max(1.0, deadline - time.monotonic()),
                                              interval=interval) for dataset_id in dataset_ids}

    def _job_detail(self, job_id: str | None) -> str:
        if not job_id:
            return "no job"
        try:
            job = self._call(f"job {job_id}", self.gi.jobs.show_job, job_id, full_details=True)
        except GalaxyAPIError as err:
            return f"job {job_id} unreadable ({err.message})"
        tail = (job.get("stderr") or job.get("tool_stderr") or "").strip()[-1000:]
        return f"job {job_id} of tool {job.get('tool_id')} exit {job.get('exit_code')}; stderr: {tail or '(empty)'}"

    def run_tool(self, history_id: str, tool_id: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run a tool; return Galaxy's answer (``jobs``, ``outputs``). Unknown tools raise GalaxyNotFoundError.

        :param history_id: the history its outputs go to
        :param tool_id: the tool
        :param inputs: its inputs (a dataset is ``{"src": "hda", "id": ...}``)
        """
        self.check_tools([tool_id])
        return self._call(f"run tool {tool_id}", self.gi.tools.run_tool, history_id, tool_id, dict(inputs))

    def download(self, dataset_id: str, path: str | Path) -> Path:
        """Download a dataset's content to ``path`` (a file, or a directory to put it in); return the file.

        :param dataset_id: the dataset
        :param path: where to write it
        """
        target = Path(path)
        if target.is_dir():
            written = self._call(f"download {dataset_id}", self.gi.datasets.download_dataset, dataset_id,
                                 file_path=str(target), use_default_filename=True, require_ok_state=True)
            return Path(written)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._call(f"download {dataset_id}", self.gi.datasets.download_dataset, dataset_id, file_path=str(target),
                   use_default_filename=False, require_ok_state=True)
        return target

    # --- workflows ---------------------------------------------------------------------------------------------
    def import_workflow(self, workflow: Mapping[str, Any]) -> str:
        """Import a workflow (a ``.ga`` dict or a Format2 ``class: GalaxyWorkflow`` dict); return its id.

        Every tool it uses must be installed first (GalaxyNotFoundError names the missing ones).

        :param workflow: the workflow
        """
        self.check_tools(sorted(workflow_tool_ids(workflow)))
        answer = self._call("import workflow", self.gi.workflows.import_workflow_dict, dict(workflow))
        return answer["id"]

    def workflow_inputs(self, workflow_id: str) -> dict[str, str]:
        """Return the workflow's inputs, label -> step index (as Galaxy's invoke API names them).

        :param workflow_id: the workflow
        """
        shown = self._call(f"workflow {workflow_id}", self.gi.workflows.show_workflow, workflow_id)
        return {str(v.get("label") or k): str(k) for k, v in (shown.get("inputs") or {}).items()}

    def invoke(self, workflow_id: str, history_id: str, inputs: Mapping[str, str]) -> str:
        """Invoke a workflow on datasets; return the invocation's id. A missing or unknown input raises first.

        :param workflow_id: the workflow
        :param history_id: the history its outputs go to
        :param inputs: input label -> dataset id
        """
        wanted = self.workflow_inputs(workflow_id)
        missing = sorted(set(wanted) - set(inputs))
        unknown = sorted(set(inputs) - set(wanted))
        if missing or unknown:
            parts = [f"missing input(s): {', '.join(missing)}" if missing else "",
                     f"unknown input(s): {', '.join(unknown)}" if unknown else ""]
            raise GalaxyInputError(f"workflow {workflow_id}: {'; '.join(p for p in parts if p)} "
                                   f"(its inputs: {', '.join(sorted(wanted)) or 'none'})", url=self.url)
        payload = {wanted[label]: {"src": "hda", "id": dataset} for label, dataset in inputs.items()}
        answer = self._call(f"invoke workflow {workflow_id}", self.gi.workflows.invoke_workflow, workflow_id,
                            inputs=payload, history_id=history_id)
        return answer["id"]

    def invocation_status(self, invocation_id: str) -> dict[str, Any]:
        """Return ``{"state", "jobs": {state: count}, "done", "failed", "outputs": {label: dataset id}}``.

        ``done`` once the invocation is scheduled and every job ended; ``failed`` when it or a job failed.

        :param invocation_id: the invocation
        """
        invocation = self._call(f"invocation {invocation_id}", self.gi.invocations.show_invocation, invocation_id)
        summary = self._call(f"invocation {invocation_id} jobs", self.gi.invocations.get_invocation_summary,
                             invocation_id)
        jobs: dict[str, int] = dict(summary.get("states") or {})
        state = invocation.get("state")
        failed = state in INVOCATION_FAILED or any(jobs.get(s) for s in JOB_FAILED)
        # "scheduled": every step's jobs made (they may still run); "completed" (Galaxy 24.2+): every job ended
        done = failed or state == "completed" or (state == "scheduled" and bool(jobs)
                                                   and all(s in JOB_DONE for s in jobs))
        outputs = {label: out["id"] for label, out in (invocation.get("outputs") or {}).items()}
        return {"state": state, "jobs": jobs, "done": done, "failed": failed, "outputs": outputs,
                "history_id": invocation.get("history_id")}

    def failure_detail(self, invocation_id: str) -> str:
        """Return what the failed jobs of an invocation printed (for an error message).

        :param invocation_id: the invocation
        """
        jobs = self._call(f"invocation {invocation_id} jobs", self.gi.jobs.get_jobs, invocation_id=invocation_id)
        bad = [j for j in jobs if j.get("state") in JOB_FAILED]
        return "; ".join(self._job_detail(j["id"]) for j in bad[:3]) or "no failed job (the invocation itself failed)"


    # --- appended for the hook and operators (airflow_cloud_paas.hooks.galaxy) ---------------------------------
    def find_workflow(self, name: str, *, tag: str | None = None) -> str | None:
        """Return the id of the newest of the user's workflows with this name (and tag), or None.

        :param name: the workflow's name
        :param tag: a tag it must carry (e.g. the content hash the hook tags imports with)
        """
        found = self._call(f"find workflow {name!r}", self.gi.workflows.get_workflows, name=name)
        for workflow in found:  # Galaxy lists the newest first
            if workflow.get("deleted") or workflow.get("name") != name:
                continue
            if tag is None or tag in (workflow.get("tags") or []):
                return str(workflow["id"])
        return None

    def find_invocation(self, workflow_id: str, history_id: str, inputs: Mapping[str, str]) -> str | None:
        """Return the id of an invocation of a workflow into a history on these very datasets, unless it failed.

        :param workflow_id: the workflow
        :param history_id: the history its outputs go to
        :param inputs: input label -> dataset id
        """
        found = self._call(f"invocations of workflow {workflow_id}", self.gi.invocations.get_invocations,
                           workflow_id=workflow_id, history_id=history_id, view="element")
        wanted = sorted(inputs.values())
        for invocation in reversed(found):  # Galaxy lists the oldest first
            if invocation.get("state") in INVOCATION_FAILED:
                continue
            given = sorted(str(i.get("id")) for i in (invocation.get("inputs") or {}).values())
            if given == wanted:
                return str(invocation["id"])
        return None

    def cancel_invocation(self, invocation_id: str) -> None:
        """Cancel a workflow invocation (its jobs that still wait or run are stopped).

        :param invocation_id: the invocation
        """
        self._call(f"cancel invocation {invocation_id}", self.gi.invocations.cancel_invocation, invocation_id)

def workflow_tool_ids(workflow: Mapping[str, Any]) -> set[str]:
    """Return the ids of the tools a workflow's steps run (``.ga`` or Format2).

    :param workflow: the workflow dict
    """
    steps = workflow.get("steps") or {}
    entries = steps.values() if isinstance(steps, Mapping) else steps
    ids = set()
    for step in entries:
        if isinstance(step, Mapping):
            tool = step.get("tool_id")
            if tool and (step.get("type") in (None, "tool")):
                ids.add(str(tool))
    return ids
