"""A stand-in Kubernetes API server: kmock's KubernetesEmulator on 127.0.0.1, run in a background thread.

No real API server can run here. The emulator stores objects and serves CRUD and watch to the official
client; it has no controllers (no pods are ever made, no status is ever written) and it ignores label
selectors (the backend filters again on its side). Tests that need a controller's effect write it
themselves through :meth:`KubernetesApiEmulator.set_status` / :meth:`add_pod`, named as such.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import kmock


class KubernetesApiEmulator:
    """kmock's KubernetesEmulator served over HTTP on 127.0.0.1, driven from synchronous tests."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kmock", daemon=True)
        self.emulator: kmock.KubernetesEmulator | None = None
        self._server: kmock.Server | None = None

    def _run(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def start(self) -> KubernetesApiEmulator:
        """Start the API server; return self."""
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # one line per request drowns failures
        self._thread.start()

        async def enter() -> tuple[kmock.KubernetesEmulator, kmock.Server]:
            emulator = kmock.KubernetesEmulator()
            emulator.resources.load_bundled()  # the built-in kinds: pods, services, deployments, claims...
            await emulator.__aenter__()
            server = kmock.Server(emulator)
            await server.__aenter__()
            return emulator, server

        self.emulator, self._server = self._run(enter())
        return self

    def stop(self) -> None:
        """Stop the API server and its thread."""

        async def leave() -> None:
            await self._server.__aexit__(None, None, None)
            await self.emulator.__aexit__(None, None, None)

        self._run(leave())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def url(self) -> str:
        """Return the API server's URL."""
        return str(self._server.url).rstrip("/")

    def kubeconfig(self, namespace: str = "cloud-paas") -> dict[str, Any]:
        """Return a kubeconfig (as the hook's ``config_dict``) pointing at this API server.

        :param namespace: the context's namespace
        """
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "not-checked"}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "tester", "namespace": namespace}}
            ],
            "current-context": "emulator",
        }

    # ------------------------------------------------------------------ what the API server holds
    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Return the live objects of a kind (by plural: deployments, services...), read on the server.

        :param plural: the resource's plural name
        :param namespace: only this namespace
        """

        async def read() -> list[dict[str, Any]]:
            return [
                obj.raw
                for (resource, ns, _name), obj in self.emulator.objects.items()
                if resource.plural == plural and not obj.deleted and (namespace is None or ns == namespace)
            ]

        return self._run(read())

    # ------------------------------------------------------------------ stand-ins for controllers and admission
    def reject_creates(self, marker: str, status: int, message: str) -> None:
        """Answer every create whose body mentions ``marker`` with an error Status, as an admission check would.

        The emulator still stores the object (kmock tracks objects before reactions run): a client that
        cleans up after the error must delete it, exactly as after a real half-applied request.

        :param marker: text in the request body (e.g. an image name)
        :param status: the HTTP status (403 for an exceeded quota)
        :param message: the Status message
        """
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "reason": "Forbidden" if status == 403 else "Invalid",
            "code": status,
        }
        self.emulator[kmock.method.POST, lambda request: marker in str(request.data)] << status << body

    def _client(self):
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)

    def set_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Write a Deployment's status through the API, as the deployment controller would (its stand-in).

        :param namespace: the namespace
        :param name: the Deployment
        :param status: the status fields (e.g. ``{"replicas": 1, "readyReplicas": 1}``)
        """
        from kubernetes import client

        with self._client() as api:
            client.AppsV1Api(api).patch_namespaced_deployment_status(name, namespace, {"status": status})

    def set_job_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Write a Job's status through the API, as the job controller would (its stand-in).

        :param namespace: the namespace
        :param name: the Job
        :param status: the status fields (e.g. ``{"succeeded": 1}``)
        """
        from kubernetes import client

        with self._client() as api:
            client.BatchV1Api(api).patch_namespaced_job_status(name, namespace, {"status": status})

    def add_pod(self, namespace: str, name: str, labels: dict[str, str], waiting_reason: str) -> None:
        """Create a pod whose container waits for ``waiting_reason``, as the kubelet would report (its stand-in).

        :param namespace: the namespace
        :param name: the pod's name
        :param labels: the pod's labels (those of the Deployment's pod template)
        :param waiting_reason: e.g. ``ImagePullBackOff``
        """
        from kubernetes import client

        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "main", "image": "x"}]},
            "status": {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": "main",
                        "image": "x",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": waiting_reason, "message": "Back-off pulling image"}},
                    }
                ],
            },
        }
        with self._client() as api:
            client.CoreV1Api(api).create_namespaced_pod(namespace, pod)
