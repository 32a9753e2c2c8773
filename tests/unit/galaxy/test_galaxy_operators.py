"""The Galaxy operators' declared faces (templated fields, outlets, checks made before any call) and their resume.

Nothing here reaches a Galaxy: the checks run before the hook is used, and ``execute_complete`` is fed the
events the trigger sends. :class:`RecordedHook` stands in for the hook where a failure's detail is asked of it.
The calls themselves run against a real Galaxy in tests/integration/galaxy.
"""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk import Asset

from airflow_cloud_paas.operators.galaxy import (
    CloudPaaSGalaxyDownloadDatasetsOperator,
    CloudPaaSGalaxyInstallFlavourOperator,
    CloudPaaSGalaxyRunWorkflowOperator,
    CloudPaaSGalaxyUploadDatasetsOperator,
    galaxy_result_asset,
)
from airflow_cloud_paas.sensors.galaxy import CloudPaaSGalaxyApiSensor, CloudPaaSGalaxyInvocationSensor
from airflow_cloud_paas.services.galaxy.errors import (
    GalaxyAPIError,
    GalaxyConfigError,
    GalaxyInputError,
    GalaxyJobError,
)

WORKFLOW = {"class": "GalaxyWorkflow", "label": "w", "inputs": {"text": "data"}, "steps": {}}


@pytest.mark.parametrize(
    ("operator", "fields"),
    [
        (CloudPaaSGalaxyInstallFlavourOperator(task_id="f"), ("flavour", "galaxy_url")),
        (CloudPaaSGalaxyUploadDatasetsOperator(task_id="u", contents={"a": "b"}),
         ("files", "contents", "history_id", "history_name", "galaxy_url")),
        (CloudPaaSGalaxyRunWorkflowOperator(task_id="r", workflow=WORKFLOW, inputs={}),
         ("inputs", "history_id", "history_name", "galaxy_url")),
        (CloudPaaSGalaxyDownloadDatasetsOperator(task_id="d", datasets={}, directory="/tmp"),
         ("datasets", "directory", "galaxy_url")),
        (CloudPaaSGalaxyApiSensor(task_id="a"), ("galaxy_url",)),
        (CloudPaaSGalaxyInvocationSensor(task_id="i", invocation_id="x"), ("invocation_id", "galaxy_url")),
    ],
)
def test_templated_fields_are_attributes_set_in_init(operator: Any, fields: tuple[str, ...]) -> None:
    assert tuple(operator.template_fields) == fields
    for field in fields:
        assert hasattr(operator, field)
    assert operator.galaxy_conn_id == "galaxy_default" and operator.galaxy_url is None


def test_the_workflow_itself_is_not_templated() -> None:
    # Jinja would read "{#" (a shell's ${#var}) or "{{" in an embedded tool's command as its own
    assert "workflow" not in CloudPaaSGalaxyRunWorkflowOperator.template_fields


def test_the_run_pushes_each_result_key_and_can_defer() -> None:
    run = CloudPaaSGalaxyRunWorkflowOperator(task_id="r", workflow=WORKFLOW, inputs={}, deferrable=True)
    assert run.deferrable is True and run.multiple_outputs is True
    assert CloudPaaSGalaxyUploadDatasetsOperator(task_id="u", contents={"a": "b"}).multiple_outputs is True


def test_downloaded_results_are_declared_as_assets() -> None:
    download = CloudPaaSGalaxyDownloadDatasetsOperator(task_id="d", datasets={}, directory="/tmp",
                                                       names=["upper", "line_count"], galaxy_conn_id="gx")
    assert download.outlets == [galaxy_result_asset("upper", "gx"), galaxy_result_asset("line_count", "gx")]
    assert [a.uri for a in download.outlets] == ["galaxy://gx/upper", "galaxy://gx/line_count"]
    assert all(isinstance(a, Asset) and a.group == "cloud-paas-galaxy" for a in download.outlets)
    mine = Asset("s3://bucket/results")
    assert CloudPaaSGalaxyDownloadDatasetsOperator(task_id="e", datasets={}, directory="/tmp", names=["upper"],
                                                   outlets=[mine]).outlets == [mine]
    with pytest.raises(GalaxyConfigError):
        CloudPaaSGalaxyDownloadDatasetsOperator(task_id="f", datasets={}, directory="/tmp", names=["../etc"])


def test_download_takes_a_run_result_and_wants_every_named_result(tmp_path) -> None:
    result = {"invocation_id": "i", "history_id": "h", "outputs": {"upper": "d1"}}
    download = CloudPaaSGalaxyDownloadDatasetsOperator(task_id="d", datasets=result, directory=str(tmp_path),
                                                       names=["upper"])
    assert download._wanted() == {"upper": "d1"}
    download.names = ["upper", "line_count"]
    with pytest.raises(GalaxyInputError, match="line_count"):
        download._wanted()
    download.datasets = "{'upper': 'd1'}"  # a dict rendered without native rendering
    download.names = ["upper"]
    assert download._wanted() == {"upper": "d1"}


def test_uploads_are_checked_before_anything_is_sent(tmp_path) -> None:
    with pytest.raises(GalaxyConfigError, match="nothing to upload"):
        CloudPaaSGalaxyUploadDatasetsOperator(task_id="u")._sources()
    with pytest.raises(GalaxyConfigError, match="no such file"):
        CloudPaaSGalaxyUploadDatasetsOperator(task_id="u", files=[str(tmp_path / "missing.txt")])._sources()
    data = tmp_path / "a.txt"
    data.write_text("x\n")
    with pytest.raises(GalaxyConfigError, match="same name"):
        CloudPaaSGalaxyUploadDatasetsOperator(task_id="u", files=[str(data)], contents={"a.txt": "y"})._sources()
    with pytest.raises(GalaxyConfigError):
        CloudPaaSGalaxyUploadDatasetsOperator(task_id="u", contents={"a b/c": "y"})._sources()
    sources = CloudPaaSGalaxyUploadDatasetsOperator(task_id="u", files={"in": str(data)},
                                                    contents={"t": "y"})._sources()
    assert sources == [("in", data, None), ("t", None, "y")]


def test_workflow_inputs_and_waits_are_checked_before_anything_is_sent() -> None:
    def run(**kwargs: Any) -> CloudPaaSGalaxyRunWorkflowOperator:
        return CloudPaaSGalaxyRunWorkflowOperator(task_id="r", workflow=WORKFLOW, **{"inputs": {}, **kwargs})

    assert run(inputs={"text": " d1 "}).validate() == {"text": "d1"}
    with pytest.raises(GalaxyInputError, match="text"):
        run(inputs={"text": ""}).validate()
    with pytest.raises(GalaxyConfigError):
        run(inputs="not a mapping").validate()
    with pytest.raises(GalaxyConfigError):
        run(poll_interval=0).validate()
    with pytest.raises(GalaxyConfigError):
        run(timeout=-1).validate()


class RecordedHook:
    """Stands in for the hook: says what the failed jobs printed, and records what it was asked."""

    url = "http://127.0.0.1:8090"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def failure_detail(self, invocation_id: str) -> str:
        self.asked.append(invocation_id)
        return "job j1 of tool cloud_paas_upper exit 1; stderr: boom"


def test_the_run_resumes_with_the_outputs_or_raises_with_the_failed_jobs_output() -> None:
    run = CloudPaaSGalaxyRunWorkflowOperator(task_id="r", workflow=WORKFLOW, inputs={})
    run.hook = RecordedHook()
    event = {"invocation_id": "i1", "status": "success", "outputs": {"upper": "d1"}, "history_id": "h1",
             "message": "invocation scheduled; jobs: 1 ok"}
    assert run.execute_complete({}, event, workflow_id="w1") == {
        "invocation_id": "i1", "history_id": "h1", "workflow_id": "w1", "outputs": {"upper": "d1"}}
    with pytest.raises(GalaxyJobError, match="stderr: boom") as err:
        run.execute_complete({}, {**event, "status": "failed", "message": "jobs: 1 error"})
    assert "i1" in str(err.value) and run.hook.asked == ["i1"]
    with pytest.raises(GalaxyJobError, match="may still run"):
        run.execute_complete({}, {**event, "status": "timeout", "message": "not done after 5 s"})
    with pytest.raises(GalaxyAPIError, match="nothing answers"):
        run.execute_complete({}, {"invocation_id": "i1", "status": "error", "message": "nothing answers"})
    with pytest.raises(GalaxyJobError, match="no event"):
        run.execute_complete({}, None)


def test_the_sensors_resume_as_a_poking_sensor_ends() -> None:
    from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

    sensor = CloudPaaSGalaxyInvocationSensor(task_id="i", invocation_id="i1")
    sensor.hook = RecordedHook()
    done = {"invocation_id": "i1", "status": "success", "state": "scheduled", "jobs": {"ok": 2},
            "outputs": {"upper": "d1"}, "history_id": "h1"}
    assert sensor.execute_complete({}, done)["outputs"] == {"upper": "d1"}
    with pytest.raises(GalaxyJobError, match="boom"):
        sensor.execute_complete({}, {**done, "status": "failed"})
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete({}, {"status": "timeout", "message": "not done"})
    api = CloudPaaSGalaxyApiSensor(task_id="a", soft_fail=True)
    with pytest.raises(AirflowSkipException):
        api.execute_complete({}, {"status": "timeout", "message": "not ready"})
    with pytest.raises(GalaxyAPIError, match="no API key"):
        api.execute_complete({}, {"status": "error", "message": "no API key"})
    assert api.execute_complete({}, {"status": "success", "url": "u", "version": "26.1", "user": {"id": "x"}}) == {
        "url": "u", "version": "26.1", "user": {"id": "x"}}
