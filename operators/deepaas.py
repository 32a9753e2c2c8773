"""Operators of a DEEPaaS V2 API (DEEP as a Service): predict with a served model, train it, cancel a training.

Every operator takes ``deepaas_conn_id`` (a ``deepaas`` connection: URL and optional bearer token), an optional,
templated ``deepaas_url`` replacing the connection's Host (e.g. a deployment's ``deepaas_url`` output), and the
``model`` name (``cloud-paas``: the plugin serving this project's exported models). The token is never logged,
returned, nor in an error. Every result is JSON, so it can go to XCom as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf

from airflow_cloud_paas.hooks.deepaas import DEFAULT_MODEL
from airflow_cloud_paas.operators._args import mapping_arg, task_instance_tag
from airflow_cloud_paas.operators._defaults import CloudPaaSTaskDefaults
from airflow_cloud_paas.services.training.errors import (
    DEEPaaSAPIError,
    DEEPaaSConfigError,
    DEEPaaSInputError,
    DEEPaaSTrainingError,
)
from airflow_cloud_paas.services.training.export import RUN_KEY

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_cloud_paas.hooks.deepaas import DEEPaaSHook
    from airflow_cloud_paas.triggers.deepaas import DEEPaaSTrainingTrigger


def _mapping(value: Any, *, field: str) -> dict[str, Any]:
    return mapping_arg(value, field=field, error=DEEPaaSConfigError, empty_ok=True)


def _seconds(value: Any, *, field: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise DEEPaaSConfigError("seconds > 0" + (", or None for none" if optional else ""), field=field, value=value)
    return float(value)


class _DEEPaaSBaseOperator(CloudPaaSTaskDefaults, BaseOperator):
    """The DEEPaaS connection, URL and model, and the hook made of them.

    :param deepaas_conn_id: the ``deepaas`` connection (Host: the URL; Password: an optional bearer token)
    :param deepaas_url: the DEEPaaS URL, replacing the connection's Host (templated)
    :param model: the served model's name (templated)
    """

    ui_color = "#d5e8f5"

    def __init__(self, *, deepaas_conn_id: str = "deepaas_default", deepaas_url: str | None = None,
                 model: str = DEFAULT_MODEL, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deepaas_conn_id = deepaas_conn_id
        self.deepaas_url = deepaas_url
        self.model = model

    @cached_property
    def hook(self) -> DEEPaaSHook:
        """Return the hook of the connection (and URL)."""
        from airflow_cloud_paas.hooks.deepaas import DEEPaaSHook

        return DEEPaaSHook(deepaas_conn_id=self.deepaas_conn_id, url=self.deepaas_url or None)


class CloudPaaSDEEPaaSPredictOperator(_DEEPaaSBaseOperator):
    """Ask a served model for a prediction on a file (e.g. a PNG image) or on JSON data; return DEEPaaS's answer.

    For this project's models (``cloud-paas``) the answer is ``{"label", "class_index", "probability",
    "probabilities", "model", "version"}``. Refused arguments (a wrong shape or type) raise
    :class:`~airflow_cloud_paas.hooks.deepaas.DEEPaaSInputError` naming them.

    :param file: a local file sent as the ``file_field`` argument (templated)
    :param data: the other arguments, e.g. ``{"data": [[...pixels...]]}`` without a file (templated)
    :param file_field: the argument the file is (``data`` for this project's models)
    :param deepaas_conn_id: the ``deepaas`` connection
    :param deepaas_url: the DEEPaaS URL, replacing the connection's Host (templated)
    :param model: the served model's name (templated)
    """

    template_fields: Sequence[str] = ("file", "data", "deepaas_url", "model")

    def __init__(self, *, file: str | None = None, data: Mapping[str, Any] | str | None = None,
                 file_field: str = "data", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.file = file
        self.data = data
        self.file_field = file_field

    def execute(self, context: Context) -> dict[str, Any]:
        data = _mapping(self.data, field="data")
        if not self.file and not data:
            raise DEEPaaSConfigError("nothing to predict on: give file or data", field="file")
        file = Path(str(self.file)) if self.file else None
        answer = self.hook.predict(self.model, file=file, file_field=self.file_field, data=data)
        self.log.info("DEEPaaS %s at %s predicted %s", self.model, self.hook.url,
                      {k: answer[k] for k in ("label", "probability") if k in answer} or str(answer)[:200])
        return answer


class CloudPaaSDEEPaaSTrainOperator(_DEEPaaSBaseOperator):
    """Start a training on a DEEPaaS model and wait until it ends; return its uuid, state and result.

    The result is ``{"uuid", "model", "state", "result"}``; for this project's models ``result["output"]`` holds
    the new model's ``model_dir``, ``metrics`` and ``version``. Out-of-range arguments raise
    :class:`~airflow_cloud_paas.hooks.deepaas.DEEPaaSInputError` naming them before anything runs; a training that
    fails, is cancelled or outlasts ``timeout`` raises :class:`DEEPaaSTrainingError`. With ``deferrable=True``
    (default: the ``[operators] default_deferrable`` setting) the task starts the training, then waits in the
    triggerer (:class:`~airflow_cloud_paas.triggers.deepaas.DEEPaaSTrainingTrigger`), holding no worker slot, and
    resumes in :meth:`execute_complete`. Killing the task cancels the training.

    A retry does not train twice: the training is started with the task instance's key (the ``run_key`` argument of
    this project's DEEPaaS plugin), and a later try of the same task instance finds that training in DEEPaaS's list
    and waits on it while it still runs, instead of starting another; once it ended (done, failed, cancelled), a new
    try trains anew (a task cleared to retrain must retrain). A model whose train arguments have no ``run_key`` is
    trained without it (a warning says so).

    :param train_args: the training's arguments (e.g. ``{"epochs": 3, "learning_rate": 0.002}``) (templated)
    :param wait_for_completion: wait until the training ends (False: return once started, with its uuid)
    :param deferrable: wait in the triggerer
    :param poll_interval: seconds between two looks at the training
    :param timeout: seconds to wait at most (None: no limit, beyond the task's ``execution_timeout``)
    :param reuse_training: let a retry wait on the training an earlier try of the task instance started
    :param deepaas_conn_id: the ``deepaas`` connection
    :param deepaas_url: the DEEPaaS URL, replacing the connection's Host (templated)
    :param model: the served model's name (templated)
    """

    template_fields: Sequence[str] = ("train_args", "deepaas_url", "model")

    def __init__(
        self,
        *,
        train_args: Mapping[str, Any] | str | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 10.0,
        timeout: float | None = None,
        reuse_training: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.train_args = train_args
        self.reuse_training = reuse_training
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.uuid: str | None = None

    def _trigger(self) -> DEEPaaSTrainingTrigger:
        from airflow_cloud_paas.triggers.deepaas import DEEPaaSTrainingTrigger

        return DEEPaaSTrainingTrigger(uuid=str(self.uuid), model=self.model, deepaas_conn_id=self.deepaas_conn_id,
                                      url=self.deepaas_url or None, poll_interval=float(self.poll_interval),
                                      timeout=float(self.timeout) if self.timeout else None)

    def execute(self, context: Context) -> dict[str, Any]:
        _seconds(self.poll_interval, field="poll_interval")
        _seconds(self.timeout, field="timeout", optional=True)
        args = _mapping(self.train_args, field="train_args")
        key = None
        if self.reuse_training:
            key = str(args[RUN_KEY]) if args.get(RUN_KEY) else task_instance_tag(context, "cloud-paas-task-")
        self.uuid = self._earlier_training(key) if key else None
        if self.uuid is not None:
            self.log.info("Waiting on DEEPaaS training %s of %s, started by an earlier try", self.uuid, self.model)
        else:
            self.uuid = self._start(args, key)
            self.log.info("Started DEEPaaS training %s of %s at %s", self.uuid, self.model, self.hook.url)
        if not self.wait_for_completion:
            return {"uuid": self.uuid, "model": self.model, "state": "running", "result": None}
        trigger = self._trigger()
        if self.deferrable:
            self.defer(trigger=trigger, method_name="execute_complete",
                       timeout=timedelta(seconds=self.timeout + 60) if self.timeout else None)
        event = trigger.wait(lambda state: self.log.info("DEEPaaS training %s: %s", self.uuid, state.get("status")))
        return self.execute_complete(context, event)

    def _earlier_training(self, key: str) -> str | None:
        """Return the newest training still running under ``key`` (an earlier try's, whose worker was lost), or None.

        One that ended is never taken: a task cleared to train again must train again."""
        found = [t for t in self.hook.list_trainings(self.model)
                 if isinstance(t, Mapping) and (t.get("args") or {}).get(RUN_KEY) == key
                 and t.get("status") == "running"]
        return str(max(found, key=lambda t: str(t.get("date") or ""))["uuid"]) if found else None

    def _start(self, args: Mapping[str, Any], key: str | None) -> str:
        """Start a training, with the task instance's key when the model takes one."""
        if key is None or RUN_KEY in args:
            return self.hook.train(self.model, args)
        try:
            return self.hook.train(self.model, {**args, RUN_KEY: key})
        except DEEPaaSInputError as err:
            if RUN_KEY not in err.fields:
                raise
            self.log.warning("Model %s takes no %s argument: a retry of this task will start another training",
                             self.model, RUN_KEY)
            return self.hook.train(self.model, args)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the wait: return the training's result if it is done, raise otherwise.

        :param context: the task context
        :param event: the trigger's event payload
        """
        if not event:
            raise DEEPaaSTrainingError(f"training {self.uuid}: the trigger returned no event")
        self.uuid = str(event.get("uuid") or self.uuid)
        status, url = event.get("status"), self.hook.url
        if status == "success":
            result = event.get("result") or {}
            self.log.info("DEEPaaS training %s done in %s: %s", self.uuid, result.get("duration"),
                          str(result.get("output"))[:300])
            return {"uuid": self.uuid, "model": event.get("model") or self.model, "state": event.get("state"),
                    "result": result}
        hints = {"failed": "see the message, fix the arguments and train again",
                 "cancelled": "it was cancelled (DELETE); train again",
                 "timeout": "it was cancelled, so that a retry does not run it twice; give a longer timeout"}
        if status in ("timeout", "error"):  # the task fails: a retry trains anew, so this one must not go on
            try:
                self.hook.cancel_training(self.uuid, model=event.get("model") or self.model)
            except DEEPaaSAPIError as err:
                self.log.warning("Could not cancel DEEPaaS training %s: %s", self.uuid, err)
        raise DEEPaaSTrainingError(f"training {self.uuid} ended {status} ({event.get('message')}): "
                                   f"{hints.get(status, 'DEEPaaS could not be asked about it')}", url=url)

    def on_kill(self) -> None:
        if self.uuid is not None:
            self.hook.cancel_training(self.uuid, model=self.model)
            self.log.info("Cancelled DEEPaaS training %s", self.uuid)


class CloudPaaSDEEPaaSCancelTrainingOperator(_DEEPaaSBaseOperator):
    """Cancel a DEEPaaS training (its worker is killed); return its last state (``status``: cancelled, or done).

    :param uuid: the training (templated; e.g. ``{{ ti.xcom_pull('train')['uuid'] }}``)
    :param deepaas_conn_id: the ``deepaas`` connection
    :param deepaas_url: the DEEPaaS URL, replacing the connection's Host (templated)
    :param model: the served model's name (templated)
    """

    template_fields: Sequence[str] = ("uuid", "deepaas_url", "model")

    def __init__(self, *, uuid: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.uuid = uuid

    def execute(self, context: Context) -> dict[str, Any]:
        if not isinstance(self.uuid, str) or not self.uuid.strip():
            raise DEEPaaSConfigError("a training's uuid", field="uuid", value=self.uuid)
        answer = self.hook.cancel_training(self.uuid.strip(), model=self.model)
        self.log.info("DEEPaaS training %s: %s", self.uuid, answer.get("status"))
        return {k: answer.get(k) for k in ("uuid", "status", "date", "message") if k in answer}
