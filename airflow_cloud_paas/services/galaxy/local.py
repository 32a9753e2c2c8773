"""Local drivers for Galaxy: a real Galaxy (from its own virtual environment) on loopback, and its tool flavours.

Registered with the local backend for ``cloud_paas.nodes.galaxy.Portal`` and INDIGO's
``tosca.nodes.indigo.GalaxyPortal`` (and the types derived from it), ``cloud_paas.nodes.galaxy.Flavour`` and
INDIGO's ``GalaxyShedTool``; INDIGO's ``GalaxyWN``, ``GalaxyReferenceData`` and ``LRMS.FrontEnd.Local`` are
process-less here. INDIGO's Ansible roles are not run: the same outcome is reached as follows.

- The portal's instance directory holds galaxy.yml (mode 600: the random bootstrap admin key), the SQLite
  database, datasets and job directories. ``galaxy-web`` serves on 127.0.0.1 (the ``http`` port).
- Once the API answers, the admin (``admin_email``) is created with the bootstrap key, and the admin's API key is
  set to the ``admin_api_key`` property in Galaxy's database - as INDIGO's galaxycloud role did - so the key a user
  chose (and keeps in an Airflow connection) is the admin's. Then the ``flavor`` is installed. Only then is the
  portal ready.
- Connected to a SLURM controller (the ``lrms`` requirement: ours, or INDIGO's FrontEnd.Slurm), Galaxy sends
  its jobs through sbatch, so a burst of Galaxy jobs is a SLURM queue the elastic engine scales workers for.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow_cloud_paas.backends.base import ResourceSpec
from airflow_cloud_paas.backends.local import PROVIDER, Launch, LocalDriver, ProcessRecord, property_port
from airflow_cloud_paas.exceptions import ResourceCreateError, UnsupportedNodeError
from airflow_cloud_paas.services.galaxy import flavours
from airflow_cloud_paas.services.galaxy.client import GalaxyClient
from airflow_cloud_paas.services.galaxy.config import (
    MAIN_TOOL_SHED,
    SHED_TOOL_CONF,
    TOOL_CONF,
    GalaxySpec,
    check_admin_api_key,
    check_admin_email,
    check_tool_shed_url,
    galaxy_web,
    render_galaxy_yml,
    render_tool_sheds_conf,
    username_of,
    venv_dir,
)
from airflow_cloud_paas.services.galaxy.errors import GalaxyConfigError, GalaxyError, GalaxyUnreachableError

log = logging.getLogger(__name__)

PORTAL_TYPES = ("cloud_paas.nodes.galaxy.Portal", "tosca.nodes.indigo.GalaxyPortal")
FLAVOUR_TYPES = ("cloud_paas.nodes.galaxy.Flavour", "tosca.nodes.indigo.GalaxyShedTool")
#: where a portal instance keeps the admin's key (mode 600), for its own bootstrap and its flavour nodes
KEY_FILE = Path("secrets") / "admin_api_key"
_BOOTSTRAPPED = ".bootstrapped"
#: why the local backend cannot encrypt a volume on this machine, or None when it could (LUKS needs device-mapper)
DEVICE_MAPPER = Path("/dev/mapper/control")


def _where(spec: ResourceSpec) -> str:
    return f"{spec.deployment_id}/{spec.node_name}"


def _unsupported(spec: ResourceSpec, message: str) -> UnsupportedNodeError:
    return UnsupportedNodeError(f"node '{spec.node_name}' ({spec.node_type}): {message}", provider=PROVIDER,
                                resource=_where(spec))


def encryption_unavailable() -> str | None:
    """Return why a LUKS volume cannot be made on this machine, or None when it can."""
    misc = Path("/proc/misc")
    text = misc.read_text() if misc.exists() else ""
    if "device-mapper" not in text and not DEVICE_MAPPER.exists():
        return ("LUKS needs the kernel's device-mapper, which this machine lacks (no device-mapper in /proc/misc, no "
                "/dev/mapper/control): deploy on a VM backend, where cloud-init encrypts the volume, or set "
                "storage_encryption to false")
    return None


def _slurm_conf(spec: ResourceSpec) -> Path | None:
    """Return the slurm.conf of the SLURM controller the portal's ``lrms`` requirement names, if any."""
    for resource in spec.requirements.get("lrms") or ():
        conf = (resource.attributes or {}).get("slurm_conf")
        if conf:
            return Path(conf)
    return None


def _tool_sheds(spec: ResourceSpec) -> tuple[str, ...]:
    """Return the Tool Sheds the portal may install from: its ``tool_sheds`` and those its flavour names."""
    given = spec.properties.get("tool_sheds") or [MAIN_TOOL_SHED]
    if isinstance(given, str) or not isinstance(given, list | tuple):
        raise GalaxyConfigError("a list of Tool Shed URLs", field="tool_sheds", value=given)
    flavour = flavours.load(spec.properties.get("flavor") or flavours.NO_TOOLS)
    return tuple(dict.fromkeys(check_tool_shed_url(u) for u in [*given, *(r.tool_shed_url for r in
                                                                           flavour.repositories)]))


def _admin_key(spec: ResourceSpec) -> str:
    try:
        return check_admin_api_key(spec.properties.get("admin_api_key"))
    except GalaxyConfigError as err:
        raise GalaxyConfigError(f"node '{spec.node_name}': {err.message}", field=err.field, value="(hidden)") from None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def set_api_key(database: Path, email: str, key: str) -> None:
    """Make ``key`` the only live API key of the user ``email`` in a Galaxy's SQLite database.

    Galaxy's API only makes random keys; INDIGO's galaxycloud role wrote the chosen one into the database, as here.

    :param database: the Galaxy's universe.sqlite
    :param email: the user's e-mail
    :param key: the API key
    """
    with sqlite3.connect(database, timeout=30) as db:
        row = db.execute("SELECT id FROM galaxy_user WHERE email = ?", (email,)).fetchone()
        if row is None:
            raise GalaxyConfigError(f"no user {email} in {database}", field="admin_email", value=email)
        db.execute("UPDATE api_keys SET deleted = 1 WHERE user_id = ? AND key != ?", (row[0], key))
        if db.execute("SELECT 1 FROM api_keys WHERE key = ? AND user_id = ? AND NOT deleted", (key, row[0])).fetchone():
            return
        if db.execute("SELECT 1 FROM api_keys WHERE key = ?", (key,)).fetchone():
            raise GalaxyConfigError("the key is another user's", field="admin_api_key", value="(hidden)")
        db.execute("INSERT INTO api_keys (create_time, user_id, key, deleted) VALUES (?, ?, ?, 0)",
                   (datetime.now(UTC).replace(tzinfo=None).isoformat(" "), row[0], key))


class GalaxyPortalDriver(LocalDriver):
    """Run Galaxy (``galaxy-web``) on 127.0.0.1 with its admin bootstrapped and its flavour installed."""

    def check(self, spec: ResourceSpec) -> None:
        """Raise :class:`UnsupportedNodeError` without Galaxy or for storage encryption here; GalaxyConfigError else.

        :param spec: the resource wanted
        """
        if galaxy_web() is None:
            raise _unsupported(spec, f"Galaxy is not installed in {venv_dir()}: run `make galaxy-runtime` (a venv with "
                                     "galaxy==26.1.1), or set CLOUD_PAAS_GALAXY_VENV to one")
        check_admin_email(spec.properties.get("admin_email"))
        _admin_key(spec)
        flavours.check_name(spec.properties.get("flavor") or flavours.NO_TOOLS)
        _tool_sheds(spec)
        if spec.properties.get("storage_encryption"):
            reason = encryption_unavailable()
            if reason:
                raise _unsupported(spec, f"storage_encryption: {reason}")

    def ports(self, spec: ResourceSpec) -> dict[str, int]:
        """Return the HTTP port (the ``port`` property; 0 or absent - a free one).

        :param spec: the resource wanted
        """
        return {"http": property_port(spec.properties)}

    def command(self, spec: ResourceSpec, work_dir: Path, ports: Mapping[str, int]) -> Launch:
        """Write galaxy.yml, an empty toolbox and the admin's key; return ``galaxy-web`` bound to loopback.

        :param spec: the resource wanted
        :param work_dir: the instance's directory
        :param ports: the chosen ports
        """
        props = spec.properties
        galaxy = GalaxySpec(work_dir, port=ports["http"], admin_email=props.get("admin_email"),
                            brand=str(props.get("instance_description") or props.get("brand") or GalaxySpec.brand),
                            slurm_conf=_slurm_conf(spec), tool_sheds=_tool_sheds(spec))
        galaxy.data_dir.mkdir(parents=True, exist_ok=True)
        _write_private(galaxy.config_file, render_galaxy_yml(galaxy))
        (work_dir / "tool_conf.xml").write_text(TOOL_CONF.format(tools=work_dir / "tools"))
        (work_dir / "tool_sheds_conf.xml").write_text(render_tool_sheds_conf(galaxy.tool_sheds))
        (work_dir / "shed_tool_conf.xml").write_text(SHED_TOOL_CONF.format(tools=work_dir / "shed_tools"))
        _write_private(work_dir / KEY_FILE, _admin_key(spec))
        venv = venv_dir()
        env = {
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(venv),
            "GALAXY_VIRTUAL_ENV": str(venv),  # job scripts (also SLURM's) set metadata with this Python
            "GALAXY_CONFIG_FILE": str(galaxy.config_file),
        }
        if galaxy.slurm_conf:
            env["SLURM_CONF"] = str(galaxy.slurm_conf)
        argv = (str(galaxy_web()), "--config", str(galaxy.config_file), "--bind", f"127.0.0.1:{ports['http']}")
        data = {"url": galaxy.url, "admin_email": galaxy.admin_email,
                "flavor": props.get("flavor") or flavours.NO_TOOLS, "job_runner": galaxy.job_runner}
        return Launch(argv=argv, env=env, data=data)

    def ready(self, record: ProcessRecord) -> bool:
        """Return whether the API answers and the admin and flavour are set up (done once, the first time).

        :param record: the instance's record
        """
        work_dir = Path(record.work_dir)
        url = record.data["url"]
        try:
            GalaxyClient(url, "unused").version()
        except GalaxyUnreachableError:
            return False
        except GalaxyError:
            return False
        if (work_dir / _BOOTSTRAPPED).exists():
            return True
        try:
            self._bootstrap(record)
        except GalaxyError as err:
            raise ResourceCreateError(f"Galaxy answers but could not be set up: {err}", provider=PROVIDER,
                                      resource=f"{record.deployment_id}/{record.node_name}/{record.index}") from None
        (work_dir / _BOOTSTRAPPED).touch()
        return True

    @staticmethod
    def _bootstrap(record: ProcessRecord) -> None:
        work_dir = Path(record.work_dir)
        url, email = record.data["url"], record.data["admin_email"]
        key = (work_dir / KEY_FILE).read_text()
        boot = GalaxyClient(url, _bootstrap_key(work_dir / "galaxy.yml"))
        user = boot.find_user(email)
        if user is None:
            import secrets

            # a password nobody knows: the admin uses the API key (and the UI through the federation's login)
            boot.create_user(email, username_of(email), secrets.token_urlsafe(24))
        set_api_key(work_dir / "data" / "universe.sqlite", email, key)
        admin = GalaxyClient(url, key)
        admin.require_admin()
        added = admin.install_flavour(flavours.load(record.data["flavor"]))
        log.info("Galaxy %s: admin %s ready, flavour %s (%d tools added)", url, email, record.data["flavor"],
                 len(added))

    def attributes(self, spec: ResourceSpec, record: ProcessRecord) -> dict[str, Any]:
        """Return galaxy_url, port, admin_email, flavor, tools, job_runner, version and the reference data's state.

        :param spec: the resource wanted
        :param record: the instance's record
        """
        url = record.data["url"]
        client = GalaxyClient(url, (Path(record.work_dir) / KEY_FILE).read_text())
        flavour = flavours.load(record.data["flavor"])
        attributes = {
            "galaxy_url": url,
            "api_url": f"{url}/api",
            "port": record.ports["http"],
            "admin_email": record.data["admin_email"],
            "flavor": flavour.name,
            "tools": flavour.tool_ids,
            "job_runner": record.data["job_runner"],
            "version": client.version(),
        }
        if spec.properties.get("reference_data"):
            log.warning("%s: reference data (INDIGO's CVMFS repositories) is not installed by the local backend",
                        _where(spec))
            attributes["reference_data"] = "not installed (no CVMFS on the local backend)"
        return attributes


def _bootstrap_key(config_file: Path) -> str:
    import yaml

    return yaml.safe_load(config_file.read_text())["galaxy"]["bootstrap_admin_api_key"]


class GalaxyFlavourDriver(LocalDriver):
    """Install a flavour's tools on the Galaxy portal the node is hosted on (no process of its own)."""

    def check(self, spec: ResourceSpec) -> None:
        """Raise :class:`GalaxyConfigError` for an unknown flavour.

        :param spec: the resource wanted
        """
        flavours.check_name(spec.properties.get("flavor") or flavours.NO_TOOLS)

    def attributes(self, spec: ResourceSpec, record: ProcessRecord) -> dict[str, Any]:
        """Install the flavour (idempotent) and return flavor, tools and the tools it added.

        :param spec: the resource wanted
        :param record: the instance's record
        """
        portals = spec.requirements.get("host") or spec.requirements.get("galaxy") or ()
        portal = portals[0].attributes if portals else {}
        if not portal.get("galaxy_url") or not portal.get("work_dir"):
            raise ResourceCreateError(f"node '{spec.node_name}' must be hosted on a Galaxy portal created first",
                                      provider=PROVIDER, resource=_where(spec))
        key = (Path(portal["work_dir"]) / KEY_FILE).read_text()
        flavour = flavours.load(spec.properties.get("flavor") or flavours.NO_TOOLS)
        started = time.monotonic()
        added = GalaxyClient(portal["galaxy_url"], key).install_flavour(flavour)
        log.info("%s: flavour %s installed in %.1f s", _where(spec), flavour.name, time.monotonic() - started)
        return {"flavor": flavour.name, "tools": flavour.tool_ids, "added": added}


class GalaxyHelperDriver(LocalDriver):
    """INDIGO's Galaxy worker, reference-data and local-LRMS nodes: nothing to run on the local backend.

    Workers share the portal's file system here (one host); reference data lives in CVMFS, which is not installed;
    a local LRMS means Galaxy runs its jobs as local processes (the portal's default).
    """

    def attributes(self, spec: ResourceSpec, record: ProcessRecord) -> dict[str, Any]:
        """Return what the node stands for here.

        :param spec: the resource wanted
        :param record: the instance's record
        """
        if spec.is_a("tosca.nodes.indigo.GalaxyReferenceData"):
            return {"reference_data": "not installed (no CVMFS on the local backend)"}
        if spec.is_a("tosca.nodes.indigo.LRMS.FrontEnd.Local"):
            return {"lrms": "local", "private_address": "127.0.0.1"}
        return {"private_address": "127.0.0.1"}
