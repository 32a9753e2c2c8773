"""Hook to an OpenStack cloud: an Airflow connection of type ``openstack`` holds Keystone credentials.

The hook owns every openstacksdk call of the package; it returns plain dicts (the SDK resources'
``to_dict()``) and raises typed :class:`~airflow_cloud_paas.exceptions.BackendError` subclasses that
name the provider, the resource and the fix, never a secret. ``openstacksdk`` is imported here only,
so ``import airflow_cloud_paas`` does not need it.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from airflow.sdk import BaseHook

from airflow_cloud_paas.exceptions import BackendError
from airflow_cloud_paas.hooks import OPENSTACK_CONNECTION, ConnectionFormMixin, ui_field_behaviour

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from openstack.connection import Connection as SDKConnection

PROVIDER = "openstack"

#: auth types of the ``auth_type`` extra -> keystoneauth plugin names
AUTH_TYPES = {
    "password": "v3password",
    "application_credential": "v3applicationcredential",
    "token": "v3token",
}
#: extras whose values are secrets: masked in logs, never put in a message
SECRET_EXTRAS = ("application_credential_secret", "token")

_API_VERSION = re.compile(r"v\d+(\.\d+)?")


def api_operation(method: str, url: str) -> str:
    """Return the operation of an OpenStack API request, e.g. ``POST servers`` or ``DELETE servers/{id}``.

    The path after the API version, with every segment holding a digit (ids, a project id in the URL)
    written ``{id}``; a request to an unversioned path is version discovery.

    :param method: the HTTP method
    :param url: the request's URL
    """
    from urllib.parse import urlsplit

    parts = [p for p in urlsplit(url).path.split("/") if p]
    version = next((i for i, part in enumerate(parts) if _API_VERSION.fullmatch(part)), None)
    if version is None or version == len(parts) - 1:
        return f"{method.upper()} (version discovery)"
    names = ["{id}" if any(c.isdigit() for c in part) else part for part in parts[version + 1:]]
    if len(names) > 1 and names[0] == "{id}":  # Cinder's /v3/{project_id}/volumes: the project is not the operation
        names = names[1:]
    return f"{method.upper()} {'/'.join(names)}"

#: The connection type as ``get_provider_info()["connection-types"]`` lists it (declared in
#: :mod:`airflow_cloud_paas.hooks`; Airflow 3 builds the form from ``conn-fields`` and ``ui-field-behaviour``).
CONNECTION_TYPE: dict[str, Any] = OPENSTACK_CONNECTION
#: Extra fields of the connection form.
CONN_FIELDS: dict[str, dict[str, Any]] = CONNECTION_TYPE["conn-fields"]
#: Standard fields hidden, relabelled or hinted in the form.
UI_FIELD_BEHAVIOUR: dict[str, Any] = ui_field_behaviour(CONNECTION_TYPE)


class IngressRule(Protocol):
    """An inbound rule as :meth:`OpenStackHook.create_security_group` reads it.

    The backends' ``mapping.Rule`` is one; the hook names only the fields it reads, so that it never
    imports a backend (backends use hooks, not the other way round).
    """

    @property
    def protocol(self) -> str:
        """``tcp``, ``udp``, ``icmp``..."""

    @property
    def port(self) -> int:
        """The first port (ignored for a protocol without ports)."""

    @property
    def port_end(self) -> Any:
        """The last port of a range (or a sequence ending with it), or None for one port."""

    @property
    def cidr(self) -> str:
        """The source range (``0.0.0.0/0``, ``10.0.0.0/8``, an IPv6 range)."""


class OpenStackAuthenticationError(BackendError):
    """Keystone refused the connection's credentials."""


class OpenStackApiError(BackendError):
    """An OpenStack API answered with an error.

    :param message: what failed and how to fix it
    :param status_code: the HTTP status
    :param provider: always ``openstack``
    :param resource: the resource concerned
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, provider: str | None = PROVIDER,
        resource: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, resource=resource)
        self.status_code = status_code

    @property
    def is_quota(self) -> bool:
        """Return whether the error is a quota (over-limit) refusal."""
        return self.status_code in (403, 413) and "quota" in self.message.lower()


def _mask_secret(secret: str | None) -> None:
    """Register a secret with Airflow's log masker, so logs print it as ``***``."""
    if not secret:
        return
    from airflow.sdk.log import mask_secret

    mask_secret(secret)


def _truthy(value: Any, default: bool | str = True) -> bool | str:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in ("true", "yes", "1", "on"):
        return True
    if text.lower() in ("false", "no", "0", "off"):
        return False
    return text  # a CA bundle path


class OpenStackHook(ConnectionFormMixin, BaseHook):
    """Talk to an OpenStack cloud (Keystone, Nova, Neutron, Cinder, Glance) through openstacksdk.

    Connection fields: Host = the Keystone auth URL (``https://keystone:5000/v3``; without a scheme,
    ``https://`` and Port are added), Login/Password = user and password (or application credential
    id and secret, or Password = a token, after the ``auth_type`` extra), Schema = the project name.
    Extras: ``auth_type``, ``project_id``, ``user_domain_name``/``project_domain_name`` (default
    ``Default``, or ``*_domain_id``), ``region_name``, ``interface`` (default public), ``verify``
    (true/false/CA path), ``auth_url`` (instead of Host), ``application_credential_id``/
    ``application_credential_secret``/``token`` (instead of Login/Password), and the backend's
    ``network``, ``floating_network`` and ``key_name``.

    :param openstack_conn_id: the Airflow connection id
    """

    conn_name_attr = "openstack_conn_id"
    default_conn_name = "openstack_default"
    conn_type = "openstack"
    hook_name = "OpenStack"

    def __init__(self, openstack_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.openstack_conn_id = openstack_conn_id
        self._calls: Counter[str] = Counter()  # API operation -> HTTP requests made (see api_calls)
        self._calls_lock = threading.Lock()

    # ---------------------------------------------------------------- connection -> SDK config
    @cached_property
    def connection(self) -> Connection:
        """Return the Airflow connection (its secrets registered with the log masker)."""
        conn = self.get_connection(self.openstack_conn_id)
        _mask_secret(conn.password)
        for key in SECRET_EXTRAS:
            _mask_secret(conn.extra_dejson.get(key))
        return conn

    @property
    def extras(self) -> dict[str, Any]:
        """Return the connection's extra fields."""
        return dict(self.connection.extra_dejson)

    @property
    def auth_url(self) -> str:
        """Return the Keystone URL of the connection (extra ``auth_url``, else Host [+ Port])."""
        conn = self.connection
        url = str(self.extras.get("auth_url") or conn.host or "").strip()
        if not url:
            raise BackendError(
                f"connection '{self.openstack_conn_id}' has no Keystone URL: set Host to e.g. "
                "https://keystone.example.org:5000/v3",
                provider=PROVIDER,
                resource=self.openstack_conn_id,
            )
        if "://" not in url:
            url = f"https://{url}{f':{conn.port}' if conn.port else ''}"
        return url

    @property
    def auth_type(self) -> str:
        """Return the auth type: password, application_credential or token."""
        auth_type = str(self.extras.get("auth_type") or "password")
        if auth_type not in AUTH_TYPES:
            raise BackendError(
                f"connection '{self.openstack_conn_id}': auth_type {auth_type!r} is not one of "
                f"{', '.join(AUTH_TYPES)}",
                provider=PROVIDER,
                resource=self.openstack_conn_id,
            )
        return auth_type

    def sdk_config(self) -> dict[str, Any]:
        """Return the arguments of ``openstack.config.get_cloud_region`` (holds secrets: never log it)."""
        conn, extras, auth_type = self.connection, self.extras, self.auth_type
        auth: dict[str, Any] = {"auth_url": self.auth_url}
        if auth_type == "application_credential":
            auth["application_credential_id"] = extras.get("application_credential_id") or conn.login
            auth["application_credential_secret"] = extras.get("application_credential_secret") or conn.password
        else:
            if auth_type == "password":
                auth["username"] = conn.login
                auth["password"] = conn.password
                for key in ("user_domain_name", "user_domain_id"):
                    if extras.get(key):
                        auth[key] = extras[key]
                if not (auth.get("user_domain_name") or auth.get("user_domain_id")):
                    auth["user_domain_name"] = "Default"
            else:
                auth["token"] = extras.get("token") or conn.password
            if extras.get("project_id"):
                auth["project_id"] = extras["project_id"]
            else:
                auth["project_name"] = extras.get("project_name") or conn.schema or None
                for key in ("project_domain_name", "project_domain_id"):
                    if extras.get(key):
                        auth[key] = extras[key]
                if not (auth.get("project_domain_name") or auth.get("project_domain_id")):
                    auth["project_domain_name"] = "Default"
        missing = [k for k, v in auth.items() if v in (None, "")]
        if missing:
            raise BackendError(
                f"connection '{self.openstack_conn_id}' (auth_type {auth_type}) lacks {', '.join(missing)}: "
                "fill in Login/Password/Project or the matching extras",
                provider=PROVIDER,
                resource=self.openstack_conn_id,
            )
        config: dict[str, Any] = {
            "auth_type": AUTH_TYPES[auth_type],
            "auth": auth,
            "interface": str(extras.get("interface") or "public"),
            "verify": _truthy(extras.get("verify")),
        }
        if extras.get("region_name"):
            config["region_name"] = str(extras["region_name"])
        return config

    @cached_property
    def conn(self) -> SDKConnection:
        """Return the openstacksdk connection (authenticates on first use)."""
        import openstack.config
        from openstack.connection import Connection as SDKConnection

        # Only the Airflow connection counts: clouds.yaml and OS_* variables of the worker are ignored.
        region = openstack.config.get_cloud_region(load_yaml_config=False, load_envvars=False, **self.sdk_config())
        connection = SDKConnection(config=region, app_name="airflow-cloud-paas")
        # every HTTP request of every service (Keystone's too) goes through this one requests session
        connection.session.session.hooks["response"].append(self._count_call)
        return connection

    def _count_call(self, response: Any, *_: Any, **__: Any) -> Any:
        operation = api_operation(response.request.method, response.request.url)
        with self._calls_lock:
            self._calls[operation] += 1
        return response

    def api_calls(self) -> dict[str, int]:
        """Return the HTTP requests made so far through this hook, by operation (``POST servers``...)."""
        with self._calls_lock:
            return dict(self._calls)

    def get_conn(self) -> SDKConnection:
        """Return the openstacksdk connection."""
        return self.conn

    def test_connection(self) -> tuple[bool, str]:
        """Authenticate and list flavors; return (ok, message) as Airflow's UI expects."""
        try:
            count = len(self.flavors())
        except BackendError as err:
            return False, str(err)
        return True, f"Authenticated at {self.auth_url}; {count} flavors visible"

    # ---------------------------------------------------------------- error translation
    def _scrub(self, text: str) -> str:
        """Return ``text`` with every secret of this connection replaced by ``***``."""
        try:
            conn = self.connection
        except Exception:  # the connection may be what failed; nothing to scrub then
            return text
        for secret in (conn.password, *(conn.extra_dejson.get(k) for k in SECRET_EXTRAS)):
            if secret:
                text = text.replace(str(secret), "***")
        return text

    @contextlib.contextmanager
    def _api(self, action: str, resource: str | None = None) -> Iterator[None]:
        """Turn SDK and keystoneauth errors into typed errors that name what failed, never a secret."""
        from keystoneauth1 import exceptions as ks_exc
        from openstack import exceptions as sdk_exc

        try:
            yield
        except BackendError:
            raise
        except ks_exc.Unauthorized:
            raise OpenStackAuthenticationError(
                f"Keystone at {self.auth_url} refused the credentials of connection '{self.openstack_conn_id}' "
                f"(auth_type {self.auth_type}) while trying to {action}: check the user/password or application "
                "credential, the project and the domains",
                provider=PROVIDER,
                resource=self.auth_url,
            ) from None
        except (ks_exc.ConnectFailure, ks_exc.DiscoveryFailure, ks_exc.EndpointNotFound) as err:
            raise BackendError(
                f"cannot {action}: {self._scrub(str(err))} (check the Keystone URL {self.auth_url}, the region "
                f"and the interface of connection '{self.openstack_conn_id}')",
                provider=PROVIDER,
                resource=resource or self.auth_url,
            ) from None
        except sdk_exc.HttpException as err:
            detail = self._scrub(str(err.details or err.message or err))
            raise OpenStackApiError(
                f"cannot {action}: HTTP {err.status_code}: {detail}",
                status_code=err.status_code,
                resource=resource,
            ) from None
        except (sdk_exc.SDKException, ks_exc.ClientException) as err:
            raise OpenStackApiError(f"cannot {action}: {self._scrub(str(err))}", resource=resource) from None

    @staticmethod
    def _dict(resource: Any) -> dict[str, Any]:
        return resource.to_dict(computed=False)

    # ---------------------------------------------------------------- Nova
    def flavors(self) -> list[dict[str, Any]]:
        """Return the flavors the project can use (with ``extra_specs``)."""
        with self._api("list flavors"):
            return [self._dict(f) for f in self.conn.compute.flavors(details=True)]

    def servers(self, metadata: Mapping[str, str] | None = None, *, name: str | None = None) -> list[dict[str, Any]]:
        """Return the project's servers whose metadata holds every given key/value (one list request).

        :param metadata: the key/values wanted (Nova cannot filter on metadata: done here)
        :param name: a regular expression Nova matches the names against (filtered by Nova)
        """
        wanted = dict(metadata or {})
        query = {"name": name} if name else {}
        with self._api("list servers"):
            found = [self._dict(s) for s in self.conn.compute.servers(details=True, **query)]
        return [s for s in found if all((s.get("metadata") or {}).get(k) == v for k, v in wanted.items())]

    def get_server(self, server_id: str) -> dict[str, Any] | None:
        """Return a server, or None if it does not exist (any more).

        :param server_id: the server's id
        """
        from openstack.exceptions import NotFoundException

        with self._api("get server", server_id):
            try:
                return self._dict(self.conn.compute.get_server(server_id))
            except NotFoundException:
                return None

    def create_server(
        self,
        *,
        name: str,
        flavor_id: str,
        image_id: str,
        network_id: str,
        security_group_id: str,
        metadata: Mapping[str, str],
        key_name: str | None = None,
        user_data: str | None = None,
        min_count: int = 1,
        max_count: int = 1,
    ) -> dict[str, Any]:
        """Boot a server, or several in one request (returns at once, in BUILD).

        With ``max_count`` > 1 Nova makes between ``min_count`` and ``max_count`` servers (as many as the
        quota allows, or none and a quota error when fewer than ``min_count`` fit), all with this metadata,
        named ``<name>-<n>`` (n = 1, 2...; Nova's ``multi_instance_display_name_template``), and answers with
        the first one only.

        :param name: the server's name
        :param flavor_id: the flavor
        :param image_id: the image
        :param network_id: the network of its port
        :param security_group_id: its security group
        :param metadata: its metadata (the cloud-paas tags)
        :param key_name: a key pair to inject
        :param user_data: cloud-init user data (base64-encoded by the SDK)
        :param min_count: the fewest servers to make (multiple create)
        :param max_count: the most servers to make (multiple create)
        """
        kwargs: dict[str, Any] = {
            "name": name,
            "flavor_id": flavor_id,
            "image_id": image_id,
            "networks": [{"uuid": network_id}],
            "security_groups": [{"name": security_group_id}],  # Nova takes a name or an id here
            "metadata": dict(metadata),
        }
        if key_name:
            kwargs["key_name"] = key_name
        if max_count > 1:
            kwargs.update(min_count=min_count, max_count=max_count)
        if user_data:
            import base64

            kwargs["user_data"] = base64.b64encode(user_data.encode()).decode()
        with self._api(f"create server {name}", name):
            return self._dict(self.conn.compute.create_server(**kwargs))

    def delete_server(self, server_id: str) -> None:
        """Delete a server (a missing one is fine); returns before it is gone.

        :param server_id: the server's id
        """
        with self._api("delete server", server_id):
            self.conn.compute.delete_server(server_id, ignore_missing=True)

    def set_server_metadata(self, server_id: str, metadata: Mapping[str, str]) -> None:
        """Add or change metadata items of a server (the others stay); Nova refuses (409) while it builds.

        :param server_id: the server's id
        :param metadata: the items
        """
        with self._api("set server metadata", server_id):
            self.conn.compute.set_server_metadata(server_id, **dict(metadata))

    def start_server(self, server_id: str) -> None:
        """Power a SHUTOFF server on.

        :param server_id: the server's id
        """
        with self._api("start server", server_id):
            self.conn.compute.start_server(server_id)

    def attach_volume(self, server_id: str, volume_id: str) -> dict[str, Any]:
        """Attach a volume to a server; return the attachment (``device``).

        :param server_id: the server
        :param volume_id: the volume
        """
        with self._api(f"attach volume {volume_id} to server {server_id}", volume_id):
            return self._dict(self.conn.compute.create_volume_attachment(server_id, volume_id))

    def detach_volume(self, server_id: str, volume_id: str) -> None:
        """Detach a volume from a server (already detached is fine).

        :param server_id: the server
        :param volume_id: the volume
        """
        with self._api(f"detach volume {volume_id} from server {server_id}", volume_id):
            self.conn.compute.delete_volume_attachment(server_id, volume_id, ignore_missing=True)

    # ---------------------------------------------------------------- Glance
    def images(self) -> list[dict[str, Any]]:
        """Return the active images the project can boot."""
        with self._api("list images"):
            return [self._dict(i) for i in self.conn.image.images() if i.status == "active"]

    # ---------------------------------------------------------------- Neutron
    def networks(self, *, external: bool | None = None) -> list[dict[str, Any]]:
        """Return the networks the project sees.

        :param external: only external (True) or only internal (False) networks
        """
        query: dict[str, Any] = {} if external is None else {"is_router_external": external}
        with self._api("list networks"):
            return [self._dict(n) for n in self.conn.network.networks(**query)]

    def ports(self, *, device_id: str | Iterable[str]) -> list[dict[str, Any]]:
        """Return the ports of a device (a server), or of several in one request.

        :param device_id: the server's id, or several ids
        """
        ids = [device_id] if isinstance(device_id, str) else list(device_id)
        with self._api("list ports", ", ".join(ids)):
            return [self._dict(p) for p in self.conn.network.ports(device_id=ids if len(ids) > 1 else ids[0])]

    def security_groups(self, tags: Iterable[str]) -> list[dict[str, Any]]:
        """Return the security groups carrying every tag.

        :param tags: Neutron tags (``key=value`` strings)
        """
        with self._api("list security groups"):
            return [self._dict(g) for g in self.conn.network.security_groups(tags=",".join(tags))]

    def create_security_group(
        self, *, name: str, description: str, tags: Iterable[str], rules: Iterable[IngressRule]
    ) -> dict[str, Any]:
        """Create a tagged security group with inbound rules (egress stays open, as Neutron makes it).

        :param name: its name
        :param description: its description
        :param tags: Neutron tags, set at creation so that no untagged group can be left behind
        :param rules: inbound rules
        """
        with self._api(f"create security group {name}", name):
            group = self.conn.network.create_security_group(name=name, description=description, tags=list(tags))
        with self._api(f"add rules to security group {name}", group.id):
            for rule in rules:
                ported = rule.protocol in ("tcp", "udp")
                end = rule.port_end[-1] if isinstance(rule.port_end, list | tuple) else rule.port_end
                self.conn.network.create_security_group_rule(
                    security_group_id=group.id,
                    direction="ingress",
                    ethertype="IPv6" if ":" in rule.cidr else "IPv4",
                    protocol=rule.protocol,
                    port_range_min=rule.port if ported else None,
                    port_range_max=int(end or rule.port) if ported else None,
                    remote_ip_prefix=rule.cidr,
                )
            return self._dict(self.conn.network.get_security_group(group.id))

    def delete_security_group(self, group_id: str) -> None:
        """Delete a security group (a missing one is fine).

        :param group_id: its id
        """
        with self._api("delete security group", group_id):
            self.conn.network.delete_security_group(group_id, ignore_missing=True)

    def floating_ips(self, tags: Iterable[str]) -> list[dict[str, Any]]:
        """Return the floating IPs carrying every tag.

        :param tags: Neutron tags (``key=value`` strings)
        """
        with self._api("list floating IPs"):
            return [self._dict(f) for f in self.conn.network.ips(tags=",".join(tags))]

    def create_floating_ip(self, *, network_id: str, port_id: str, tags: Iterable[str]) -> dict[str, Any]:
        """Allocate a tagged floating IP on an external network and bind it to a port.

        :param network_id: the external network
        :param port_id: the server's port
        :param tags: Neutron tags
        """
        with self._api("create floating IP", port_id):
            return self._dict(
                self.conn.network.create_ip(floating_network_id=network_id, port_id=port_id, tags=list(tags))
            )

    def delete_floating_ip(self, fip_id: str) -> None:
        """Release a floating IP (a missing one is fine).

        :param fip_id: its id
        """
        with self._api("delete floating IP", fip_id):
            self.conn.network.delete_ip(fip_id, ignore_missing=True)

    # ---------------------------------------------------------------- Cinder
    def volumes(self, metadata: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Return the project's volumes whose metadata holds every given key/value.

        :param metadata: the key/values wanted
        """
        wanted = dict(metadata or {})
        with self._api("list volumes"):
            found = [self._dict(v) for v in self.conn.block_storage.volumes(details=True)]
        return [v for v in found if all((v.get("metadata") or {}).get(k) == val for k, val in wanted.items())]

    def get_volume(self, volume_id: str) -> dict[str, Any] | None:
        """Return a volume, or None if it does not exist (any more).

        :param volume_id: its id
        """
        from openstack.exceptions import NotFoundException

        with self._api("get volume", volume_id):
            try:
                return self._dict(self.conn.block_storage.get_volume(volume_id))
            except NotFoundException:
                return None

    def create_volume(
        self, *, name: str, size_gb: int, metadata: Mapping[str, str], volume_type: str | None = None
    ) -> dict[str, Any]:
        """Create a volume (returns at once, ``creating``).

        :param name: its name
        :param size_gb: its size in GiB
        :param metadata: its metadata (the cloud-paas tags)
        :param volume_type: a Cinder volume type
        """
        kwargs: dict[str, Any] = {"name": name, "size": size_gb, "metadata": dict(metadata)}
        if volume_type:
            kwargs["volume_type"] = volume_type
        with self._api(f"create volume {name}", name):
            return self._dict(self.conn.block_storage.create_volume(**kwargs))

    def delete_volume(self, volume_id: str) -> None:
        """Delete a volume (a missing one is fine); returns before it is gone.

        :param volume_id: its id
        """
        with self._api("delete volume", volume_id):
            self.conn.block_storage.delete_volume(volume_id, ignore_missing=True)
