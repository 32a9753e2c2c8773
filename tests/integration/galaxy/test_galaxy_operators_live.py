"""The Galaxy operators, sensors and triggers against a real Galaxy: flavour, uploads, a tool job, a workflow.

Galaxy runs for real (``galaxy_admin``: deployed once per session by the local backend, see conftest.py; or an
already running one named by ``CLOUD_PAAS_GALAXY_URL`` and ``CLOUD_PAAS_GALAXY_ADMIN_KEY``, for development). The
operators read a real Airflow connection (an ``AIRFLOW_CONN_*`` variable). The deferrable paths run as Airflow
runs them: ``execute`` raises ``TaskDeferred``, the trigger is rebuilt from its serialized form and run on an event
loop to its event, and a fresh operator resumes in ``execute_complete``. The only stand-ins are
:class:`RecordedXCom` (Airflow's task instance) and Airflow's own ``OutletEventAccessors`` for the task's asset
events. The packaged DAG itself, deploy to teardown, runs with ``dag.test()`` in the last test.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from deferral import resume

from airflow_cloud_paas.hooks.galaxy import GalaxyHook
from airflow_cloud_paas.operators.galaxy import (
    CloudPaaSGalaxyDownloadDatasetsOperator,
    CloudPaaSGalaxyInstallFlavourOperator,
    CloudPaaSGalaxyRunWorkflowOperator,
    CloudPaaSGalaxyUploadDatasetsOperator,
    galaxy_result_asset,
)
from airflow_cloud_paas.sensors.galaxy import CloudPaaSGalaxyApiSensor, CloudPaaSGalaxyInvocationSensor
from airflow_cloud_paas.services.galaxy.errors import (
    GalaxyAuthError,
    GalaxyInputError,
    GalaxyJobError,
    GalaxyNotFoundError,
)

pytestmark = pytest.mark.integration

CONN = "galaxy_live_ops"
REPO = Path(__file__).resolve().parents[3]

#: upper case, then line count (the cloud-paas-text flavour's tools), in Galaxy's Format2
TWO_STEPS = {
    "class": "GalaxyWorkflow",
    "label": "live test: upper then count",
    "inputs": {"text": {"type": "data", "format": "txt"}},
    "outputs": {"upper": {"outputSource": "upper/output"}, "line_count": {"outputSource": "count/output"}},
    "steps": {
        "upper": {"tool_id": "cloud_paas_upper", "in": {"input": "text"}},
        "count": {"tool_id": "cloud_paas_line_count", "in": {"input": "upper/output"}},
    },
}


class RecordedXCom:
    """Stands in for Airflow's task instance in the context: records what the operator pushes."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = json.loads(json.dumps(value))  # what an XCom backend would store


@pytest.fixture(scope="module")
def galaxy(request: pytest.FixtureRequest) -> Any:
    """Return the Galaxy (``.url``, ``.api_key`` of an admin): a running one named by the environment, or
    conftest's ``galaxy_admin`` (deployed by the local backend)."""
    url, key = os.environ.get("CLOUD_PAAS_GALAXY_URL"), os.environ.get("CLOUD_PAAS_GALAXY_ADMIN_KEY")
    if url and key:
        return SimpleNamespace(url=url, api_key=key)
    return request.getfixturevalue("galaxy_admin")


@pytest.fixture(scope="module")
def conn(galaxy: Any) -> Iterator[str]:
    """Name a ``galaxy`` connection to the Galaxy, with the admin's key as its Password."""
    variable = f"AIRFLOW_CONN_{CONN.upper()}"
    os.environ[variable] = json.dumps({"conn_type": "galaxy", "host": galaxy.url, "password": galaxy.api_key})
    try:
        yield CONN
    finally:
        os.environ.pop(variable, None)


def upload(conn: str, context: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    return CloudPaaSGalaxyUploadDatasetsOperator(task_id="upload", galaxy_conn_id=conn, **kwargs).execute(
        context or {})


def test_the_api_sensor_sees_the_admin_and_the_flavour_installs_once(conn: str) -> None:
    ready = CloudPaaSGalaxyApiSensor(task_id="api", galaxy_conn_id=conn, require_admin=True, deferrable=True)
    seen = ready.execute({})  # up already: answers without deferring
    assert seen["user"]["is_admin"] is True and seen["version"].startswith("26.")
    install = CloudPaaSGalaxyInstallFlavourOperator(task_id="flavour", galaxy_conn_id=conn, flavour="cloud-paas-text")
    install.execute({})
    assert install.execute({}) == []  # every tool there: nothing added the second time
    GalaxyHook(conn).check_tools(["cloud_paas_upper", "cloud_paas_line_count", "cloud_paas_sort"])


def test_files_and_texts_upload_and_a_custom_tool_runs_on_them(conn: str, tmp_path: Path) -> None:
    data = tmp_path / "fruits.txt"
    data.write_text("pear\napple\nfig\n")
    result = upload(conn, files={"fruits": str(data)}, contents={"note": "hello\n"}, file_type="txt",
                    history_name="live test: uploads")
    assert set(result["datasets"]) == {"fruits", "note"}
    hook = GalaxyHook(conn)
    shown = hook.dataset(result["datasets"]["fruits"])
    assert (shown["state"], shown["name"], shown["history_id"]) == ("ok", "fruits", result["history_id"])
    job = hook.run_tool(result["history_id"], "cloud_paas_sort",
                        {"input": {"src": "hda", "id": result["datasets"]["fruits"]}})
    sorted_id = job["outputs"][0]["id"]
    hook.wait_dataset(sorted_id, timeout=180)
    assert hook.download(sorted_id, tmp_path / "sorted.txt").read_text() == "apple\nfig\npear\n"


def test_a_deferred_workflow_runs_and_its_outputs_download_as_asset_events(conn: str, tmp_path: Path) -> None:
    from airflow.sdk.execution_time.context import OutletEventAccessors

    uploaded = upload(conn, contents={"text": "one\ntwo\nthree\n"}, file_type="txt")
    settings = {"workflow": TWO_STEPS, "inputs": uploaded["datasets"], "history_id": uploaded["history_id"],
                "deferrable": True, "poll_interval": 1.0, "timeout": 240}

    def run() -> CloudPaaSGalaxyRunWorkflowOperator:
        return CloudPaaSGalaxyRunWorkflowOperator(task_id="run", galaxy_conn_id=conn, **settings)

    with pytest.raises(TaskDeferred) as deferred:
        run().execute({})
    assert deferred.value.trigger.serialize()[1]["galaxy_conn_id"] == conn
    result = resume(deferred.value, run, {})
    assert set(result["outputs"]) == {"upper", "line_count"} and result["history_id"] == uploaded["history_id"]
    # the same workflow is not imported twice
    assert GalaxyHook(conn).import_workflow(TWO_STEPS) == result["workflow_id"]

    download = CloudPaaSGalaxyDownloadDatasetsOperator(task_id="download", galaxy_conn_id=conn, datasets=result,
                                                       directory=str(tmp_path / "results"),
                                                       names=["upper", "line_count"])
    events = OutletEventAccessors()
    files = download.execute({"outlet_events": events})
    assert Path(files["upper"]["path"]).read_text() == "ONE\nTWO\nTHREE\n"
    assert Path(files["line_count"]["path"]).read_text().strip() == "3"
    for name in ("upper", "line_count"):
        extra = events[galaxy_result_asset(name, conn)].extra
        assert extra["path"] == files[name]["path"] and extra["dataset_id"] == result["outputs"][name]
        assert extra["history_id"] == uploaded["history_id"] and extra["galaxy_url"] == GalaxyHook(conn).url
        assert extra["sha256"] == files[name]["sha256"] and extra["size"] == Path(extra["path"]).stat().st_size


def test_a_retry_reuses_the_history_uploads_and_invocation_of_the_earlier_try(conn: str, tmp_path: Path) -> None:
    run_id = f"manual__retry_{secrets.token_hex(4)}"
    hook = GalaxyHook(conn)

    def context(task_id: str) -> dict[str, Any]:  # what identifies a task instance across its tries
        return {"ti": SimpleNamespace(dag_id="retry_dag", task_id=task_id, run_id=run_id, map_index=-1)}

    # the first try died after uploading one of its two inputs; the retry uploads only the other, into the same history
    first = upload(conn, contents={"text": "b\na\n"}, file_type="txt", context=context("upload"))
    retry = upload(conn, contents={"text": "b\na\n", "more": "c\n"}, file_type="txt", context=context("upload"))
    assert retry["history_id"] == first["history_id"]
    assert retry["datasets"]["text"] == first["datasets"]["text"]
    assert retry["datasets"]["more"] not in first["datasets"].values()
    tags = hook.dataset(retry["datasets"]["more"]).get("tags") or []
    assert any(t.startswith("cloud-paas-task-") for t in tags), tags  # what a later retry finds it by
    assert len(hook.client.gi.datasets.get_datasets(history_id=first["history_id"], deleted=False)) == 2
    # another task instance (another run) gets its own history
    other = upload(conn, contents={"text": "b\na\n"}, file_type="txt",
                   context={"ti": SimpleNamespace(dag_id="retry_dag", task_id="upload", run_id=run_id + "_2",
                                                  map_index=-1)})
    assert other["history_id"] != first["history_id"]

    def run(**kwargs: Any) -> CloudPaaSGalaxyRunWorkflowOperator:
        return CloudPaaSGalaxyRunWorkflowOperator(task_id="run", galaxy_conn_id=conn, workflow=TWO_STEPS,
                                                  inputs={"text": first["datasets"]["text"]}, deferrable=True,
                                                  poll_interval=1.0, timeout=240, **kwargs)

    with pytest.raises(TaskDeferred) as invoked:
        run().execute(context("run"))
    with pytest.raises(TaskDeferred) as retried:  # the worker was lost while it waited: the retry waits again
        run().execute(context("run"))
    invocation = invoked.value.trigger.serialize()[1]["invocation_id"]
    assert retried.value.trigger.serialize()[1]["invocation_id"] == invocation
    result = resume(retried.value, run, context("run"))
    assert result["invocation_id"] == invocation and set(result["outputs"]) == {"upper", "line_count"}
    assert hook.download(result["outputs"]["upper"], tmp_path / "upper.txt").read_text() == "B\nA\n"
    # asked not to reuse it, the same task invokes the workflow anew
    again = run(reuse_invocation=False, wait_for_completion=False).execute(context("run"))
    assert again["invocation_id"] != invocation
    hook.cancel_invocation(again["invocation_id"])


def test_a_killed_run_cancels_its_invocation_and_the_sensor_reports_the_failure(conn: str) -> None:
    uploaded = upload(conn, contents={"text": "slow\n"}, file_type="txt")
    slow = {"class": "GalaxyWorkflow", "label": "live test: slow", "inputs": {"text": "data"},
            "steps": {"wait": {"tool_id": "cloud_paas_sleep", "in": {"input": "text"},
                               "tool_state": {"seconds": 600}}}}
    run = CloudPaaSGalaxyRunWorkflowOperator(task_id="run", galaxy_conn_id=conn, workflow=slow,
                                             inputs=uploaded["datasets"], history_id=uploaded["history_id"],
                                             wait_for_completion=False)
    started = run.execute({})
    run.on_kill()
    sensor = CloudPaaSGalaxyInvocationSensor(task_id="wait", galaxy_conn_id=conn,
                                             invocation_id=started["invocation_id"], poke_interval=1, timeout=120,
                                             deferrable=False)
    with pytest.raises(GalaxyJobError, match=started["invocation_id"]):
        sensor.execute({})


def test_unknown_tools_and_missing_inputs_are_refused_before_anything_runs(conn: str) -> None:
    hook = GalaxyHook(conn)
    with pytest.raises(GalaxyNotFoundError, match="no_such_tool"):
        hook.run_tool("any", "no_such_tool", {})
    unknown = {**TWO_STEPS, "label": "live test: unknown tool",
               "steps": {"x": {"tool_id": "no_such_tool", "in": {"input": "text"}}}, "outputs": {}}
    run = CloudPaaSGalaxyRunWorkflowOperator(task_id="run", galaxy_conn_id=conn, workflow=unknown,
                                             inputs={"text": "x"}, deferrable=False)
    with pytest.raises(GalaxyNotFoundError, match="no_such_tool"):
        run.execute({})
    # a well-formed id that no workflow or invocation has: a dataset's made just now (Galaxy numbers each table
    # on its own, and this module makes more datasets than workflows or invocations)
    nobody = upload(conn, contents={"text": "id\n"}, file_type="txt")["datasets"]["text"]
    with pytest.raises(GalaxyNotFoundError):
        hook.workflow_inputs(nobody)
    with pytest.raises(GalaxyNotFoundError):
        hook.invocation_status(nobody)
    run = CloudPaaSGalaxyRunWorkflowOperator(task_id="run", galaxy_conn_id=conn, workflow=TWO_STEPS,
                                             inputs={"txt": "abc"}, deferrable=False)
    with pytest.raises(GalaxyInputError, match="missing input.*text.*unknown input.*txt"):
        run.execute({})
    assert run.invocation_id is None  # nothing was invoked


def test_the_api_key_never_shows_in_logs_xcoms_or_errors(
    conn: str, galaxy: Any, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level("DEBUG")
    ti = RecordedXCom()
    uploaded = upload(conn, contents={"text": "a\n"}, file_type="txt")
    ti.xcom_push("upload", uploaded)
    run = CloudPaaSGalaxyRunWorkflowOperator(task_id="run", galaxy_conn_id=conn, workflow=TWO_STEPS,
                                             inputs=uploaded["datasets"], history_id=uploaded["history_id"],
                                             deferrable=False, poll_interval=1.0)
    ti.xcom_push("run", run.execute({}))
    ti.xcom_push("api", CloudPaaSGalaxyApiSensor(task_id="api", galaxy_conn_id=conn).execute({}))
    errors: list[BaseException] = []
    with pytest.raises(GalaxyInputError) as missing:
        CloudPaaSGalaxyRunWorkflowOperator(task_id="bad", galaxy_conn_id=conn, workflow=TWO_STEPS,
                                           inputs={}, deferrable=False).execute({})
    errors.append(missing.value)
    # a wrong key (planted, so that any leak shows): refused, and shown nowhere either
    planted = secrets.token_hex(16)
    os.environ["AIRFLOW_CONN_GALAXY_LIVE_WRONG"] = json.dumps(
        {"conn_type": "galaxy", "host": galaxy.url, "password": planted})
    try:
        with pytest.raises(GalaxyAuthError) as refused:
            upload("galaxy_live_wrong", contents={"text": "a\n"})
        errors.append(refused.value)
        ok, message = GalaxyHook("galaxy_live_wrong").test_connection()
        assert not ok
    finally:
        os.environ.pop("AIRFLOW_CONN_GALAXY_LIVE_WRONG")
    logs = capfd.readouterr()
    shown = {
        "task log": logs.out + logs.err + caplog.text,
        "xcom": json.dumps(ti.pushed),
        "errors": " ".join(f"{e} {e!r} {e.args}" for e in errors) + message,
    }
    assert "Invoked Galaxy workflow" in shown["task log"]  # the log was captured
    for key in (galaxy.api_key, planted):
        assert not [where for where, text in shown.items() if key in text], "the API key leaked"


def test_the_packaged_dag_deploys_galaxy_runs_the_workflow_and_tears_down(
    airflow_db: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The ``galaxy_workflow`` DAG with ``dag.test()``: a Galaxy of its own, deployed and deleted by the run."""
    from airflow_cloud_paas.services.galaxy.config import galaxy_web

    if galaxy_web() is None:
        pytest.skip("Galaxy is not installed: run `make galaxy-runtime`")
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    key = secrets.token_hex(16)
    os.environ["AIRFLOW_CONN_GALAXY_DEFAULT"] = json.dumps({"conn_type": "galaxy", "password": key})
    try:
        DagBundlesManager().sync_bundles_to_db()
        bag = DagBag(dag_folder=str(REPO / "tests" / "dags" / "galaxy_workflow.py"))
        assert bag.import_errors == {}, bag.import_errors
        sync_bag_to_db(bag, "dags-folder", None)
        dag = bag.dags["galaxy_workflow"]
        run = dag.test(run_conf={"text": "x\ny\n", "results_dir": str(tmp_path)})
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert run.state == "success", states
        assert states["deployment.delete"] == "success"
        files = run.get_task_instance("download_results").xcom_pull(task_ids="download_results")
        assert Path(files["upper"]["path"]).read_text() == "X\nY\n"
        assert Path(files["line_count"]["path"]).read_text().strip() == "2"
        with create_session() as session:
            events = {e.asset.uri: e.extra for e in session.query(AssetEvent).all()
                      if e.asset.uri.startswith("galaxy://galaxy_default/")}
        assert events["galaxy://galaxy_default/upper"]["path"] == files["upper"]["path"]
        assert events["galaxy://galaxy_default/line_count"]["sha256"] == files["line_count"]["sha256"]
        logs = capfd.readouterr()
        assert key not in logs.out + logs.err
    finally:
        os.environ.pop("AIRFLOW_CONN_GALAXY_DEFAULT", None)
