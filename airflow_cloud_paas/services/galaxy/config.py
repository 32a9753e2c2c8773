"""A local Galaxy's settings: checked before anything starts, then written as galaxy.yml.

Galaxy runs from its own virtual environment (``pip install galaxy==26.1.1``: about 1.6 GB, kept apart from
Airflow's packages; ``make galaxy-runtime`` builds it), found at ``CLOUD_PAAS_GALAXY_VENV`` or
:data:`DEFAULT_VENV`. Its database is SQLite in the instance's directory; the admin is bootstrapped with a random
``bootstrap_admin_api_key`` that only galaxy.yml (mode 600) holds. Jobs run as local processes, or through
SLURM's ``sbatch`` (Galaxy's CLI job runner with the Slurm plugin) when the portal is connected to a SLURM
controller: then every Galaxy job is a SLURM job, which the elastic engine counts as demand.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from airflow_cloud_paas.services.galaxy.errors import GalaxyConfigError

GALAXY_VERSION = "26.1.1"
VENV_ENV = "CLOUD_PAAS_GALAXY_VENV"
DEFAULT_VENV = Path.home() / ".cache" / "airflow_cloud_paas" / f"galaxy-{GALAXY_VERSION}"
#: Galaxy's api_keys.key column is 32 characters wide
MAX_KEY_LENGTH = 32
MIN_KEY_LENGTH = 16
_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,190}\.[A-Za-z]{2,24}$")
#: admin keys published in INDIGO's examples and types: anyone could use them
PUBLIC_KEYS = frozenset({"not_very_secret_api_key"})
#: the job runners a local Galaxy can use
JOB_RUNNERS = ("local", "slurm")
#: the Galaxy project's main Tool Shed: a Galaxy installs repositories only from the Tool Sheds it lists
MAIN_TOOL_SHED = "https://toolshed.g2.bx.psu.edu/"


def venv_dir() -> Path:
    """Return Galaxy's virtual environment (``CLOUD_PAAS_GALAXY_VENV`` or the default)."""
    return Path(os.environ.get(VENV_ENV) or DEFAULT_VENV)


def galaxy_web() -> Path | None:
    """Return Galaxy's ``galaxy-web`` launcher, or None when Galaxy is not installed."""
    path = venv_dir() / "bin" / "galaxy-web"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def check_admin_email(email: object) -> str:
    """Return the admin's e-mail if it looks like one; raise :class:`GalaxyConfigError` otherwise.

    :param email: the value given
    """
    if not isinstance(email, str) or not _EMAIL.match(email):
        raise GalaxyConfigError("the admin's e-mail must look like name@domain.tld", field="admin_email", value=email)
    return email


def check_admin_api_key(key: object) -> str:
    """Return the admin API key if usable; raise :class:`GalaxyConfigError` (never showing it) otherwise.

    :param key: the value given
    """
    if not isinstance(key, str) or not key:
        raise GalaxyConfigError("an admin API key is required: pass a secret input (a conn:// reference keeps it "
                                "out of the run's conf)", field="admin_api_key", value="(hidden)")
    if key in PUBLIC_KEYS:
        raise GalaxyConfigError("this is the public default key of INDIGO's examples: anyone could use it; pass "
                                "your own (16-32 letters, digits, '_' or '-')", field="admin_api_key", value="(hidden)")
    if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH or not _KEY.match(key):
        raise GalaxyConfigError(f"an admin API key is {MIN_KEY_LENGTH}-{MAX_KEY_LENGTH} letters, digits, '_' or '-' "
                                f"(got {len(key)} characters)", field="admin_api_key", value="(hidden)")
    return key


def check_tool_shed_url(url: object) -> str:
    """Return a Tool Shed URL (``http(s)://host[:port]/``) if well formed; raise :class:`GalaxyConfigError` else.

    :param url: the value given
    """
    if not isinstance(url, str) or not re.match(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$", url):
        raise GalaxyConfigError("a Tool Shed URL is http(s)://host[:port][/path]", field="tool_sheds", value=url)
    return url if url.endswith("/") else f"{url}/"


def username_of(email: str) -> str:
    """Return a Galaxy public name for the admin (lowercase letters, digits, '.', '_' and '-', from the e-mail).

    :param email: the admin's e-mail
    """
    name = re.sub(r"[^a-z0-9._-]", "-", email.split("@", 1)[0].lower()).strip("-.") or "admin"
    return name[:40]


@dataclass(frozen=True)
class GalaxySpec:
    """One local Galaxy.

    :param work_dir: the instance's directory (galaxy.yml, the database, datasets, job directories, logs)
    :param port: the port it binds on 127.0.0.1
    :param admin_email: the admin's e-mail (in ``admin_users``)
    :param brand: shown in Galaxy's masthead
    :param slurm_conf: a SLURM cluster's slurm.conf: jobs go through sbatch; None - jobs run as local processes
    :param job_workers: threads that run (local) or watch (SLURM) jobs
    :param tool_sheds: the Tool Sheds it may install repositories from (tool_sheds_conf.xml)
    :param bootstrap_key: the one-time admin key that creates the admin (random unless given)
    """

    work_dir: Path
    port: int
    admin_email: str
    brand: str = "Galaxy on airflow_cloud_paas"
    slurm_conf: Path | None = None
    job_workers: int = 4
    tool_sheds: tuple[str, ...] = (MAIN_TOOL_SHED,)
    bootstrap_key: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)

    def __post_init__(self) -> None:
        check_admin_email(self.admin_email)
        if not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise GalaxyConfigError("a port is 1-65535", field="port", value=self.port)
        if not isinstance(self.job_workers, int) or not 1 <= self.job_workers <= 64:
            raise GalaxyConfigError("job workers are 1-64", field="job_workers", value=self.job_workers)
        for url in self.tool_sheds:
            check_tool_shed_url(url)

    @property
    def url(self) -> str:
        """Return the Galaxy's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        """Return where Galaxy keeps its database, datasets and job directories."""
        return self.work_dir / "data"

    @property
    def database(self) -> Path:
        """Return the SQLite database."""
        return self.data_dir / "universe.sqlite"

    @property
    def config_file(self) -> Path:
        """Return galaxy.yml."""
        return self.work_dir / "galaxy.yml"

    @property
    def job_runner(self) -> str:
        """Return ``slurm`` or ``local``."""
        return "slurm" if self.slurm_conf else "local"


def job_config(spec: GalaxySpec) -> dict[str, Any]:
    """Return Galaxy's ``job_config``: jobs as local processes, or SLURM jobs through sbatch (CLI runner).

    Uploads (``__DATA_FETCH__``) stay local either way: they only copy bytes into Galaxy's own storage.

    :param spec: the Galaxy
    """
    runners: dict[str, Any] = {"local": {"load": "galaxy.jobs.runners.local:LocalJobRunner",
                                         "workers": spec.job_workers}}
    environments: dict[str, Any] = {"local": {"runner": "local"}}
    default = "local"
    if spec.slurm_conf:
        runners["slurm_cli"] = {"load": "galaxy.jobs.runners.cli:ShellJobRunner", "workers": spec.job_workers}
        environments["slurm"] = {"runner": "slurm_cli", "shell_plugin": "LocalShell", "job_plugin": "Slurm",
                                 "env": [{"name": "SLURM_CONF", "value": str(spec.slurm_conf)}]}
        default = "slurm"
    return {
        "runners": runners,
        "execution": {"default": default, "environments": environments},
        "tools": [{"id": "__DATA_FETCH__", "environment": "local"}],
    }


def render_galaxy_yml(spec: GalaxySpec) -> str:
    """Return galaxy.yml for this Galaxy (it holds the bootstrap key: write it mode 600).

    :param spec: the Galaxy
    """
    data = spec.data_dir
    galaxy = {
        "data_dir": str(data),
        "database_connection": f"sqlite:///{spec.database}?isolation_level=IMMEDIATE",
        "file_path": str(data / "objects"),
        "new_file_path": str(data / "tmp"),
        "job_working_directory": str(data / "jobs"),
        "tool_config_file": str(spec.work_dir / "tool_conf.xml"),
        # Tool Shed installs: the sheds allowed, and where installed repositories' tools are listed
        "tool_sheds_config_file": str(spec.work_dir / "tool_sheds_conf.xml"),
        "shed_tool_config_file": str(spec.work_dir / "shed_tool_conf.xml"),
        "tool_dependency_dir": str(data / "dependencies"),
        "tool_data_path": str(data / "tool-data"),
        "bootstrap_admin_api_key": spec.bootstrap_key,
        "admin_users": spec.admin_email,
        "allow_user_creation": False,  # the admin creates accounts (the portal's users come from the federation)
        "require_login": True,
        "enable_beta_tool_formats": True,  # flavours' tools in Galaxy's YAML format, installed through the API
        "conda_auto_init": False,
        "conda_auto_install": False,
        "watch_tools": "false",
        "brand": spec.brand,
        "job_config": job_config(spec),
    }
    header = "# written by airflow_cloud_paas (services/galaxy/config.py); holds the bootstrap admin key\n"
    return header + yaml.safe_dump({"galaxy": galaxy}, sort_keys=False)


TOOL_CONF = """<?xml version="1.0"?>
<!-- flavours add their tools through Galaxy's API (dynamic tools, Tool Shed installs), not here -->
<toolbox tool_path="{tools}">
</toolbox>
"""
#: where Galaxy lists the tools of the repositories it installs from a Tool Shed (it writes the file itself)
SHED_TOOL_CONF = """<?xml version="1.0"?>
<toolbox tool_path="{tools}">
</toolbox>
"""


def render_tool_sheds_conf(urls: tuple[str, ...]) -> str:
    """Return tool_sheds_conf.xml: the Tool Sheds a Galaxy may install repositories from.

    :param urls: the Tool Sheds' URLs
    """
    from xml.sax.saxutils import quoteattr

    lines = [f"    <tool_shed name={quoteattr(url.split('://', 1)[1].rstrip('/'))} url={quoteattr(url)}/>"
             for url in dict.fromkeys(check_tool_shed_url(u) for u in urls)]
    return '<?xml version="1.0"?>\n<tool_sheds>\n' + "\n".join(lines) + "\n</tool_sheds>\n"
