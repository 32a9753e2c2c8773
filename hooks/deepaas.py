"""Hook to a DEEPaaS V2 API (DEEP as a Service): an Airflow connection of type ``deepaas`` gives its URL and token.

The connection:

* Host: the API's base URL (``http://host:port``, a path allowed: ``https://example.org/deepaas``; ``/v2`` is added);
* Password: an optional bearer token (sent as ``Authorization: Bearer ...``, e.g. to a DEEPaaS behind an OIDC proxy);
* extras ``verify_ssl`` (check TLS certificates, default true) and ``timeout`` (seconds per request, default 60).

The hook's ``url`` argument replaces the connection's Host, so a DAG can take a deployed server's ``deepaas_url``
output (XCom) while the token stays in the connection. The token is handed to Airflow's secrets masker and to
``requests`` only: never logged, never in an error, an XCom value or a ``repr``.

DEEPaaS's answers map to typed errors: nothing answers - :class:`DEEPaaSUnreachableError`; 400 or 422 (DEEPaaS's
argument parser, webargs, answers 422 with ``{"<argument>": ["<why>"]}``) - :class:`DEEPaaSInputError` naming the
arguments; 401/403 - :class:`DEEPaaSAuthError`; 404 (unknown model or training) - :class:`DEEPaaSNotFoundError`;
anything else - :class:`DEEPaaSAPIError`.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_cloud_paas.hooks import DEEPAAS_CONNECTION, ConnectionFormMixin, ui_field_behaviour
from airflow_cloud_paas.hooks._service import base_url, mask, request_settings
from airflow_cloud_paas.services.training.errors import (
    DEEPaaSAPIError,
    DEEPaaSAuthError,
    DEEPaaSConfigError,
    DEEPaaSInputError,
    DEEPaaSNotFoundError,
    DEEPaaSUnreachableError,
)

#: The connection type (to be listed in :data:`airflow_cloud_paas.hooks.CONNECTION_TYPES`, whence
#: ``get_provider_info()`` reads it; Airflow 3 builds the form from ``conn-fields`` and ``ui-field-behaviour``).
CONNECTION_TYPE: dict[str, Any] = DEEPAAS_CONNECTION
#: Extra fields of the connection form.
CONN_FIELDS: dict[str, dict[str, Any]] = CONNECTION_TYPE["conn-fields"]
#: Standard fields hidden, relabelled or hinted in the form.
UI_FIELD_BEHAVIOUR: dict[str, Any] = ui_field_behaviour(CONNECTION_TYPE)

#: the model name our plugin registers (cloud_paas_deepaas)
DEFAULT_MODEL = "cloud-paas"


# ---------------------------------------------------------------------- helpers
def deepaas_url(host: str | None) -> str:
    """Return a DEEPaaS API's base URL (without ``/v2``) from a connection's Host or a deployment's output.

    :param host: ``http(s)://host[:port][/path]``, or a bare ``host[:port]`` (http)
    """
    url = base_url(host, service="DEEPaaS", credential="a token", error=DEEPaaSConfigError)
    return url[: -len("/v2")] if url.endswith("/v2") else url


def _fields_of(body: Any) -> dict[str, Any]:
    """Return argument -> reasons from a refused request's body (webargs: ``{"arg": ["why"]}``), else {}."""
    if isinstance(body, dict):
        errors = body.get("errors") if isinstance(body.get("errors"), dict) else body
        return {str(k): v for k, v in errors.items() if isinstance(v, list | dict | str) and k != "message"}
    return {}


class DEEPaaSHook(ConnectionFormMixin, BaseHook):
    """Use a DEEPaaS V2 API: list its models, read their metadata, predict, start, follow and cancel trainings.

    :param deepaas_conn_id: the Airflow connection id (Host: the URL; Password: an optional bearer token)
    :param url: a DEEPaaS URL replacing the connection's Host (e.g. a deployment's ``deepaas_url`` output)
    :param timeout: seconds one request may take (default: the connection's ``timeout`` extra, else 60)
    """

    conn_name_attr = "deepaas_conn_id"
    default_conn_name = "deepaas_default"
    conn_type = "deepaas"
    hook_name = "DEEPaaS"

    def __init__(self, deepaas_conn_id: str = default_conn_name, *, url: str | None = None,
                 timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deepaas_conn_id = deepaas_conn_id
        self._url = url or None
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"DEEPaaSHook(deepaas_conn_id={self.deepaas_conn_id!r}, url={self._url!r})"

    @cached_property
    def _settings(self) -> dict[str, Any]:
        """Return url, token, timeout and verify from the connection (and the hook's arguments)."""
        try:
            conn = self.get_connection(self.deepaas_conn_id)
        except AirflowNotFoundException:
            if not self._url:  # a URL alone is enough for an open DEEPaaS: the connection is optional then
                raise
            conn = None
        extras = dict(conn.extra_dejson) if conn is not None else {}
        token = (conn.password if conn is not None else None) or None
        if token:
            mask(token)
        url = deepaas_url(self._url or (conn.host if conn is not None else None))
        timeout, verify = request_settings(extras, self._timeout, error=DEEPaaSConfigError)
        return {"url": url, "token": token, "timeout": timeout, "verify": verify}

    @property
    def url(self) -> str:
        """Return the DEEPaaS API's base URL the hook talks to (without ``/v2``)."""
        return self._settings["url"]

    @cached_property
    def session(self) -> Any:
        """Return the ``requests`` session, with the bearer token when the connection has one."""
        import requests

        session = requests.Session()
        session.headers["Accept"] = "application/json"
        if self._settings["token"]:
            session.headers["Authorization"] = f"Bearer {self._settings['token']}"
        session.verify = self._settings["verify"]
        return session

    def get_conn(self) -> Any:
        """Return the ``requests`` session of the connection."""
        return self.session

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request to ``<url>/v2<path>``; return its JSON, or raise the typed error of its answer."""
        import requests

        url = self.url
        try:
            answer = self.session.request(method, f"{url}/v2{path}", timeout=self._settings["timeout"], **kwargs)
        except requests.ConnectionError as err:
            raise DEEPaaSUnreachableError(f"nothing answers ({type(err).__name__}); is the server running and the "
                                          "connection's Host right?", url=url) from None
        except requests.Timeout:
            raise DEEPaaSUnreachableError(f"no answer within {self._settings['timeout']} s to {method} {path}",
                                          url=url) from None
        try:
            body = answer.json()
        except ValueError:
            body = None
        status = answer.status_code
        if status < 400:
            if body is None:
                raise DEEPaaSAPIError(f"{method} {path} answered something that is not JSON: "
                                      f"{answer.text[:200]!r}", url=url, status=status)
            return body
        detail = (body.get("message") if isinstance(body, dict) else None) or answer.text.strip()[:300] \
            or answer.reason
        if status in (400, 422):
            fields = _fields_of(body)
            named = "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}"
                              for k, v in fields.items())
            raise DEEPaaSInputError(f"{method} {path} refused the arguments: {named or detail}", fields=fields,
                                    url=url, status=status)
        if status in (401, 403):
            raise DEEPaaSAuthError(f"{method} {path} was refused ({detail}); check the connection's token", url=url,
                                   status=status)
        if status == 404:
            raise DEEPaaSNotFoundError(f"{method} {path}: not found ({detail})", url=url, status=status)
        raise DEEPaaSAPIError(f"{method} {path} failed: {detail}", url=url, status=status)

    @staticmethod
    def _model_path(model: str) -> str:
        return f"/models/{quote(model, safe='')}"

    def test_connection(self) -> tuple[bool, str]:
        """Return whether the API answers and which models it serves (Airflow's connection test)."""
        try:
            names = [m.get("id") for m in self.list_models()]
        except Exception as err:  # the UI shows the reason rather than a stack trace; errors never hold the token
            return False, str(err)
        return True, f"DEEPaaS at {self.url} serves {', '.join(map(str, names)) or 'no model'}"

    # ------------------------------------------------------------------ models
    def list_models(self) -> list[dict[str, Any]]:
        """Return the models the API serves, each with its metadata (``id``, ``name``, ``version``...)."""
        return list(self._request("GET", "/models/").get("models") or [])

    def metadata(self, model: str = DEFAULT_MODEL) -> dict[str, Any]:
        """Return a model's metadata (DEEPaaSNotFoundError for a model the API does not serve).

        :param model: the model's name
        """
        return self._request("GET", f"{self._model_path(model)}/")

    def predict(self, model: str = DEFAULT_MODEL, *, file: str | Path | None = None, file_field: str = "data",
                data: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Ask a model for a prediction; return DEEPaaS's answer (DEEPaaSInputError names refused arguments).

        :param model: the model's name
        :param file: a file to upload (e.g. a PNG image), sent as the multipart field ``file_field``
        :param file_field: the argument the file is
        :param data: the other arguments; sent as JSON without a file, as form fields (non-strings as JSON) with one
        """
        path = f"{self._model_path(model)}/predict/"
        if file is None:
            if not data:
                raise DEEPaaSConfigError("nothing to predict on: give a file or data", field="data")
            return self._request("POST", path, json=dict(data))
        file = Path(file)
        if not file.is_file():
            raise DEEPaaSConfigError("no such file to send", field="file", value=str(file))
        form = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (data or {}).items()}
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        with file.open("rb") as handle:
            return self._request("POST", path, data=form, files={file_field: (file.name, handle, kind)})

    # ------------------------------------------------------------------ trainings
    def train(self, model: str = DEFAULT_MODEL, args: Mapping[str, Any] | None = None) -> str:
        """Start a training; return its uuid (DEEPaaSInputError names out-of-range arguments).

        :param model: the model's name
        :param args: the training's arguments (the model's ``get_train_args``)
        """
        answer = self._request("POST", f"{self._model_path(model)}/train/", json=dict(args or {}))
        uuid = answer.get("uuid") if isinstance(answer, dict) else None
        if not uuid:
            raise DEEPaaSAPIError(f"the training was started but its answer has no uuid: {str(answer)[:200]}",
                                  url=self.url)
        return str(uuid)

    def training_status(self, uuid: str, model: str = DEFAULT_MODEL) -> dict[str, Any]:
        """Return a training's ``status`` (running, done, error, cancelled), ``result`` or ``message``.

        :param uuid: the training
        :param model: the model's name
        """
        return self._request("GET", f"{self._model_path(model)}/train/{quote(uuid, safe='')}")

    def list_trainings(self, model: str = DEFAULT_MODEL) -> list[dict[str, Any]]:
        """Return the trainings the API knows for a model (running or ended, not cancelled).

        :param model: the model's name
        """
        return list(self._request("GET", f"{self._model_path(model)}/train/") or [])

    def cancel_training(self, uuid: str, model: str = DEFAULT_MODEL) -> dict[str, Any]:
        """Cancel a training (DELETE; its worker is killed) and return its last state (``status`` cancelled).

        DEEPaaS 2.6.0 cancels a running training and then fails to describe it (HTTP 500: it reads the result of
        the killed task). The training is gone then, as after any cancel: a 500 followed by a 404 on the training
        is a cancel done.

        :param uuid: the training
        :param model: the model's name
        """
        path = f"{self._model_path(model)}/train/{quote(uuid, safe='')}"
        try:
            return self._request("DELETE", path)
        except DEEPaaSAPIError as err:
            if type(err) is not DEEPaaSAPIError or err.status != 500:
                raise
            try:
                self._request("GET", path)
            except DEEPaaSNotFoundError:
                self.log.info("DEEPaaS training %s cancelled (DEEPaaS answered 500 describing it; it is gone)", uuid)
                return {"uuid": uuid, "status": "cancelled"}
            raise
