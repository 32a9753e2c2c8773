"""XRootD origin and XCache configuration: rendering, typed errors naming the property, and the VM script.

The VM script (templates/scripts/xrootd_configure.sh, run by cloud-init) must write, line for line, what
:mod:`airflow_cloud_paas.services.xcache.config` renders: both are run on the same settings and compared.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from airflow_cloud_paas.cloudinit import render_user_data
from airflow_cloud_paas.exceptions import ToscaInputError, ToscaValidationError
from airflow_cloud_paas.services.xcache.config import (
    OriginSettings,
    XCacheSettings,
    XRootDConfigError,
    format_size,
    origin_settings,
    parse_address,
    parse_size,
    render_origin_config,
    render_xcache_config,
    xcache_settings,
)
from airflow_cloud_paas.tosca import load_topology, validate_inputs
from airflow_cloud_paas.tosca.resolve import resolved_node

PACKAGE = Path(__file__).resolve().parents[3] / "airflow_cloud_paas"
SCRIPT = PACKAGE / "templates" / "scripts" / "xrootd_configure.sh"
TEMPLATES = PACKAGE / "templates"


# ------------------------------------------------------------------------------------------ values
@pytest.mark.parametrize(("text", "size"), [
    ("1g", 1 << 30), ("512k", 512 << 10), ("64KiB", 64 << 10), ("64 KB", 64 << 10), ("2M", 2 << 20),
    ("1.5g", 3 << 29), ("4096", 4096), (8192, 8192), ("1T", 1 << 40), (" 3 mib ", 3 << 20),
])
def test_sizes_are_binary(text, size) -> None:
    assert parse_size(text, field="x") == size


@pytest.mark.parametrize("bad", ["lots", "1x", "-1g", "0", 0, "", "1 g b", True, None, "1e3"])
def test_bad_sizes_name_the_property(bad) -> None:
    with pytest.raises(XRootDConfigError, match="property 'block_size'") as caught:
        parse_size(bad, field="block_size")
    assert caught.value.field == "block_size"


def test_sizes_are_written_with_the_largest_exact_suffix() -> None:
    assert [format_size(n) for n in (1 << 30, 3 << 29, 64 << 10, 4097, 2 << 40)] == ["1g", "1536m", "64k", "4097",
                                                                                      "2t"]


@pytest.mark.parametrize(("text", "address"), [
    ("origin.example.org:1094", ("origin.example.org", 1094)),
    ("root://10.0.0.5:2094", ("10.0.0.5", 2094)),
    ("root://eos.cern.ch:1094//eos/opendata", ("eos.cern.ch", 1094)),
    ("eos.cern.ch", ("eos.cern.ch", 1094)),
    ("[::1]:1095", ("[::1]", 1095)),
])
def test_addresses(text, address) -> None:
    assert parse_address(text, field="origin") == address


@pytest.mark.parametrize(("bad", "fragment"), [
    ("user:pw@host:1094", "credentials"), ("host:99999", "port"), ("host:x", "port"), ("", "host:port"),
    ("bad host:1", "host:port"),
])
def test_bad_addresses(bad, fragment) -> None:
    with pytest.raises(XRootDConfigError, match=fragment) as caught:
        parse_address(bad, field="origin")
    assert "pw" not in str(caught.value) or fragment != "credentials"


# ------------------------------------------------------------------------------------------ rendering
def test_origin_config() -> None:
    settings = OriginSettings(data_dir="/srv/data/", port=2094, exports=["/store", "/store/", "/data"],
                              admin_dir="/run/x", allow_hosts=("localhost",))
    assert render_origin_config(settings).splitlines() == [
        "# XRootD origin (data server): written by airflow_cloud_paas, do not edit",
        "xrd.port 2094",
        "xrd.allow host localhost",
        "all.adminpath /run/x",
        "all.pidpath /run/x",
        "oss.localroot /srv/data",
        "all.export /store",
        "all.export /data",
    ]


def test_xcache_config_with_a_cache_size() -> None:
    settings = XCacheSettings(origin="root://origin.example.org:1094", cache_dir="/var/cache/x", port=1095,
                              exports=("/store",), ram="2g", block_size="512k", cache_size="100g",
                              low_watermark="0.8", high_watermark=0.9, prefetch=4, purge_interval_s=60,
                              monitor="127.0.0.1:9930", monitor_flush_s=2, allow_commands=True)
    assert render_xcache_config(settings).splitlines() == [
        "# XCache (proxy file cache) of root://origin.example.org:1094: written by airflow_cloud_paas, do not edit",
        "xrd.port 1095",
        "all.export /store",
        "ofs.osslib libXrdPss.so",
        "pss.cachelib libXrdPfc.so",
        "pss.origin origin.example.org:1094",
        "oss.localroot /var/cache/x",
        "pfc.ram 2g",
        "pfc.blocksize 512k",
        f"pfc.diskusage {int(100 * 2**30 * 0.8) // 1024}k {int(100 * 2**30 * 0.9) // 1024}k purgeinterval 60",
        "pfc.prefetch 4",
        "all.export /xrdpfc_command/",
        "pfc.allow_xrdpfc_command",
        "xrootd.monitor all flush 2s window 2s dest pfc 127.0.0.1:9930",
    ]
    assert (settings.origin_host, settings.origin_port, settings.ram, settings.block_size) == (
        "origin.example.org", 1094, 2 << 30, 512 << 10)


def test_xcache_defaults_use_fractions_of_the_disk() -> None:
    config = render_xcache_config(XCacheSettings(origin="o:1094", cache_dir="/c"))
    assert "pfc.diskusage 0.9 0.95\n" in config and "pfc.ram 1g\n" in config and "pfc.blocksize 1m\n" in config
    assert "xrdpfc_command" not in config and "xrootd.monitor" not in config and "pfc.prefetch" not in config


@pytest.mark.parametrize(("changes", "field", "fragment"), [
    ({"ram": "512m"}, "ram", "at least 1g"),
    ({"block_size": "2k"}, "block_size", "multiple of 4k"),
    ({"block_size": "1g"}, "block_size", "from 4k to 512m"),
    ({"block_size": "6k"}, "block_size", "multiple of 4k"),
    ({"low_watermark": 0.95, "high_watermark": 0.9}, "low_watermark", "below the high"),
    ({"high_watermark": 1.5}, "high_watermark", "between 0 and 1"),
    ({"low_watermark": "most"}, "low_watermark", "between 0 and 1"),
    ({"cache_size": "plenty"}, "cache_size", "size such as"),
    ({"cache_size": "1k"}, "cache_size", "too small"),
    ({"origin": "a@b:1"}, "origin", "credentials"),
    ({"cache_dir": "relative/dir"}, "cache_dir", "absolute directory"),
    ({"cache_dir": "/with space"}, "cache_dir", "absolute directory"),
    ({"exports": ["store"]}, "exports", "must be absolute"),
    ({"exports": ["/a/../etc"]}, "exports", "without '..'"),
    ({"exports": ["/xrdpfc_command/x"]}, "exports", "reserved"),
    ({"exports": []}, "exports", "non-empty"),
    ({"monitor": "127.0.0.1"}, "monitor", "with a port"),
    ({"port": 70000}, "port", "1-65535"),
    ({"prefetch": -1}, "prefetch", "integer >= 0"),
    ({"purge_interval_s": 0}, "purge_interval_s", "integer >= 1"),
    ({"monitor_flush_s": 0}, "monitor_flush_s", "seconds >= 1"),
])
def test_bad_xcache_values_name_the_property(changes, field, fragment) -> None:
    values = {"origin": "o:1094", "cache_dir": "/c", **changes}
    with pytest.raises(XRootDConfigError, match=fragment) as caught:
        XCacheSettings(**values)
    assert caught.value.field == field and f"property '{field}'" in str(caught.value)


def test_settings_from_tosca_properties() -> None:
    assert xcache_settings({"origin": "", "cache_dir": "", "ram": "", "prefetch": None, "port": 0},
                           origin="127.0.0.1:5", cache_dir="/c", port=7).origin == "127.0.0.1:5"
    with pytest.raises(XRootDConfigError, match="no origin") as caught:
        xcache_settings({"origin": ""}, cache_dir="/c")
    assert caught.value.field == "origin"
    assert origin_settings({"data_dir": "/d", "port": 0, "exports": ["/store"]}).port == 1094
    with pytest.raises(XRootDConfigError, match="data_dir"):
        origin_settings({"data_dir": ""})


def test_xcache_config_with_the_admission_library() -> None:
    settings = XCacheSettings(origin="o:1094", cache_dir="/c", prefetch=0, allow_commands=True,
                              admission_library="/var/tmp/p/libXrdPfcCloudPaaSAdmission.so",
                              admission_policy="/run/x/admission.policy", bypass_log="/run/x/bypass.log")
    lines = render_xcache_config(settings).splitlines()
    assert lines[lines.index("pfc.prefetch 0") + 1:lines.index("all.export /xrdpfc_command/")] == [
        "pfc.decisionlib /var/tmp/p/libXrdPfcCloudPaaSAdmission.so /run/x/admission.policy /run/x/bypass.log"]
    no_log = XCacheSettings(origin="o:1094", cache_dir="/c", admission_library="/p/lib.so", admission_policy="/r/p")
    assert "pfc.decisionlib /p/lib.so /r/p\n" in render_xcache_config(no_log)
    assert "decisionlib" not in render_xcache_config(XCacheSettings(origin="o:1094", cache_dir="/c"))


@pytest.mark.parametrize(("changes", "field", "fragment"), [
    ({"admission_library": "/p/lib.so"}, "admission_policy", "needs the policy file"),
    ({"admission_policy": "/r/p"}, "admission_policy", "set admission_library too"),
    ({"bypass_log": "/r/b"}, "bypass_log", "set admission_library too"),
    ({"admission_library": "lib.so", "admission_policy": "/r/p"}, "admission_library", "absolute file path"),
    ({"admission_library": "/p/lib.so", "admission_policy": "/r/with space"}, "admission_policy", "no spaces"),
    ({"admission_library": "/p/lib.so", "admission_policy": "/r/"}, "admission_policy", "absolute file path"),
    ({"admission_library": "/p/lib.so", "admission_policy": "/r/p", "bypass_log": "/r/../b"}, "bypass_log", "'..'"),
])
def test_bad_admission_paths_name_the_field(changes, field, fragment) -> None:
    with pytest.raises(XRootDConfigError, match=fragment) as caught:
        XCacheSettings(origin="o:1094", cache_dir="/c", **changes)
    assert caught.value.field == field and f"property '{field}'" in str(caught.value)


def test_the_admission_property() -> None:
    paths = {"admission_library": "/p/lib.so", "admission_policy": "/r/admission.policy",
             "bypass_log": "/r/bypass.log"}
    model = xcache_settings({"origin": "o:1", "admission": "model"}, cache_dir="/c", **paths)
    assert (model.admission_library, model.admission_policy, model.bypass_log) == tuple(paths.values())
    for value in ("all", "", None):  # XCache's default: every miss is written, whatever paths are offered
        settings = xcache_settings({"origin": "o:1", "admission": value}, cache_dir="/c", **paths)
        assert settings.admission_library is None and "decisionlib" not in render_xcache_config(settings)
    with pytest.raises(XRootDConfigError, match="'model' needs the cloud-paas decision library") as caught:
        xcache_settings({"origin": "o:1", "admission": "model"}, cache_dir="/c")
    assert caught.value.field == "admission"
    with pytest.raises(XRootDConfigError, match="expected one of all, model, got 'Model'") as caught:
        xcache_settings({"origin": "o:1", "admission": "Model"}, cache_dir="/c", **paths)
    assert caught.value.field == "admission"


# ------------------------------------------------------------------------------------------ the VM script
def run_script(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    target = tmp_path / "xrootd.cfg"
    full = {"PATH": os.environ["PATH"], "CLOUD_PAAS_XROOTD_CONFIG_ONLY": "1",
            "CLOUD_PAAS_XROOTD_CONFIG_FILE": str(target), **env}
    done = subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True, timeout=30, check=False)
    done.config = target.read_text() if target.exists() else None  # type: ignore[attr-defined]
    return done


SCRIPT_CASES = [
    # (script inputs, the same settings for config.py)
    ({"ROLE": "origin", "PORT": "0", "EXPORTS": '["/store", "/data/"]', "DATA_DIR": "/srv/xrd"},
     OriginSettings(data_dir="/srv/xrd", exports=("/store", "/data"), admin_dir="/var/spool/xrootd")),
    ({"ROLE": "origin", "PORT": "2094", "EXPORTS": "", "DATA_DIR": ""},
     OriginSettings(data_dir="/data/xrootd", port=2094, admin_dir="/var/spool/xrootd")),
    ({"ROLE": "xcache", "PORT": "", "EXPORTS": '["/store"]', "ORIGIN": "", "ORIGIN_HOST": "10.0.0.5",
      "ORIGIN_PORT": "0", "CACHE_DIR": "", "CACHE_SIZE": "", "LOW_WATERMARK": "0.9", "HIGH_WATERMARK": "0.95",
      "BLOCK_SIZE": "1m", "RAM": "1g", "PREFETCH": "", "PURGE_INTERVAL_S": "", "MONITOR": "", "MONITOR_FLUSH_S": "5",
      "ALLOW_COMMANDS": "false"},
     XCacheSettings(origin="10.0.0.5:1094", cache_dir="/var/cache/xrootd", exports=("/store",),
                    admin_dir="/var/spool/xrootd")),
    ({"ROLE": "xcache", "PORT": "1095", "EXPORTS": "/store /user", "ORIGIN": "root://eos.example.org:2094",
      "CACHE_DIR": "/cache/", "CACHE_SIZE": "1.5T", "LOW_WATERMARK": "0.85", "HIGH_WATERMARK": "0.950",
      "BLOCK_SIZE": "256KiB", "RAM": "4096m", "PREFETCH": "0", "PURGE_INTERVAL_S": "120",
      "MONITOR": "collector.example.org:9931", "MONITOR_FLUSH_S": "30", "ALLOW_COMMANDS": "True",
      "ADMIN_DIR": "/var/spool/xrootd/"},
     XCacheSettings(origin="root://eos.example.org:2094", cache_dir="/cache/", port=1095, exports=("/store", "/user"),
                    cache_size="1.5T", low_watermark=0.85, high_watermark="0.950", block_size="256KiB", ram="4096m",
                    prefetch=0, purge_interval_s=120, monitor="collector.example.org:9931", monitor_flush_s=30,
                    allow_commands=True, admin_dir="/var/spool/xrootd")),
    ({"ROLE": "xcache", "ORIGIN": "[fd00::1]:1094", "CACHE_SIZE": "12345678901", "LOW_WATERMARK": "0.333",
      "HIGH_WATERMARK": "0.777", "BLOCK_SIZE": "4k", "RAM": "1.25g"},
     XCacheSettings(origin="[fd00::1]:1094", cache_dir="/var/cache/xrootd", cache_size=12345678901,
                    low_watermark=0.333, high_watermark=0.777, block_size=4096, ram="1.25g",
                    admin_dir="/var/spool/xrootd")),
]


@pytest.mark.parametrize(("env", "settings"), SCRIPT_CASES)
def test_the_vm_script_writes_what_config_renders(env, settings, tmp_path: Path) -> None:
    done = run_script(env, tmp_path)
    assert done.returncode == 0, done.stderr
    expected = render_origin_config(settings) if isinstance(settings, OriginSettings) else \
        render_xcache_config(settings)
    assert done.config == expected


@pytest.mark.parametrize(("env", "field"), [
    ({"ROLE": "xcache", "ORIGIN": "o:1", "RAM": "512m"}, "ram"),
    ({"ROLE": "xcache", "ORIGIN": "o:1", "BLOCK_SIZE": "6k"}, "block_size"),
    ({"ROLE": "xcache", "ORIGIN": "o:1", "BLOCK_SIZE": "1g"}, "block_size"),
    ({"ROLE": "xcache", "ORIGIN": "o:1", "LOW_WATERMARK": "0.96"}, "low_watermark"),
    ({"ROLE": "xcache", "ORIGIN": "o:1", "HIGH_WATERMARK": "2"}, "high_watermark"),
    ({"ROLE": "xcache", "ORIGIN": "o:1", "CACHE_SIZE": "huge"}, "cache_size"),
    ({"ROLE": "xcache", "ORIGIN": "u@o:1"}, "origin"),
    ({"ROLE": "xcache"}, "origin"),
    ({"ROLE": "xcache", "ORIGIN": "o:1", "MONITOR": "m"}, "monitor"),
    ({"ROLE": "xcache", "ORIGIN": "o:1", "PREFETCH": "-2"}, "prefetch"),
    ({"ROLE": "origin", "EXPORTS": '["store"]'}, "exports"),
    ({"ROLE": "origin", "DATA_DIR": "rel/dir"}, "data_dir"),
    ({"ROLE": "origin", "PORT": "70000"}, "port"),
])
def test_the_vm_script_refuses_what_config_refuses(env, field, tmp_path: Path) -> None:
    done = run_script(env, tmp_path)
    assert done.returncode == 2 and f"property '{field}'" in done.stderr, done.stderr
    assert done.config is None


def test_the_vm_script_needs_a_role(tmp_path: Path) -> None:
    done = run_script({"ROLE": "proxy"}, tmp_path)
    assert done.returncode == 2 and "ROLE 'proxy'" in done.stderr


# ------------------------------------------------------------------------------------------ TOSCA
def test_the_template_loads_with_the_types_defaults() -> None:
    topology = load_topology(TEMPLATES / "xcache.yaml")
    assert {n.name: n.type for n in topology.nodes.values()} == {
        "xrootd_origin_host": "cloud_paas.nodes.Compute", "xrootd_origin": "cloud_paas.nodes.xrootd.Origin",
        "xcache_host": "cloud_paas.nodes.Compute", "xcache": "cloud_paas.nodes.xrootd.XCache",
    }
    assert topology.plan.index("xrootd_origin") < topology.plan.index("xcache")
    cache = resolved_node(topology, "xcache", {"cache_size": "10g"})
    settings = xcache_settings(cache.properties, origin="127.0.0.1:1094", cache_dir="/c", port=1095)
    assert (settings.block_size, settings.ram, settings.cache_size) == (1 << 20, 1 << 30, 10 << 30)
    assert (settings.low_watermark, settings.high_watermark, settings.allow_commands) == (0.9, 0.95, False)
    assert settings.exports == ("/store",) and settings.prefetch is None and settings.monitor is None
    origin = resolved_node(topology, "xrootd_origin", {})
    assert origin.properties["port"] == 0 and origin.properties["data_dir"] == ""
    assert "cloud_paas.nodes.xrootd.Server" in cache.type_hierarchy
    assert cache.properties["admission"] == "all" and settings.admission_library is None


def test_the_admission_property_takes_all_or_model(tmp_path: Path) -> None:
    topology = load_topology(TEMPLATES / "xcache.yaml")
    assert resolved_node(topology, "xcache", validate_inputs(topology, {"admission": "model"})
                         ).properties["admission"] == "model"
    with pytest.raises(ToscaInputError, match="valid_values"):
        validate_inputs(topology, {"admission": "smart"})
    assert resolved_node(load_topology(TEMPLATES / "xcache_remote_origin.yaml"), "xcache",
                         {"origin": "o:1"}).properties["admission"] == "all"
    template = tmp_path / "cache.yaml"
    template.write_text(
        "tosca_definitions_version: tosca_simple_yaml_1_0\n"
        "imports:\n  - xrootd: https://raw.githubusercontent.com/airflow-cloud-paas/tosca-types/main/xrootd_types.yaml\n"
        "topology_template:\n  node_templates:\n    xcache:\n      type: cloud_paas.nodes.xrootd.XCache\n"
        "      properties: { origin: 'o:1', admission: smart }\n")
    with pytest.raises(ToscaValidationError, match='"smart" of property "admission" is not valid'):
        load_topology(template, use_cache=False)


def test_a_remote_origin_template_needs_its_origin() -> None:
    topology = load_topology(TEMPLATES / "xcache_remote_origin.yaml")
    cache = resolved_node(topology, "xcache", {"origin": "root://eos.example.org:1094", "cache_size": "500g"})
    settings = xcache_settings(cache.properties, cache_dir="/c", port=1094)
    assert settings.origin == "eos.example.org:1094" and settings.cache_size == 500 << 30
    assert [r.name for r in cache.requirements] == ["host"]


def test_a_vm_boots_with_the_configuration_config_renders(tmp_path: Path) -> None:
    """cloud-init user data of the cache's VM runs the script with inputs that yield the rendered config."""
    topology = load_topology(TEMPLATES / "xcache.yaml")
    inputs = {"cache_size": "2t", "block_size": "2m", "monitor": "10.0.0.9:9931", "allow_commands": True}
    user_data = render_user_data(topology, "xcache_host", inputs,
                                 {"xrootd_origin_host": [{"private_address": "10.0.0.5"}]})
    document = yaml.safe_load(user_data.split("\n", 1)[1])
    files = {f["path"]: f["content"] for f in document["write_files"]}
    script, env_file = files["/opt/cloud-paas/xcache/configure.sh"], files["/etc/cloud-paas/nodes/xcache.configure.env"]
    assert script == SCRIPT.read_text()
    (tmp_path / "configure.sh").write_text(script)
    (tmp_path / "inputs.env").write_text(env_file)
    command = (f"set -a; . {shlex.quote(str(tmp_path / 'inputs.env'))}; set +a; "
               f"exec bash {shlex.quote(str(tmp_path / 'configure.sh'))}")
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30, check=False, env={
        "PATH": os.environ["PATH"], "CLOUD_PAAS_XROOTD_CONFIG_ONLY": "1",
        "CLOUD_PAAS_XROOTD_CONFIG_FILE": str(tmp_path / "out.cfg")})
    assert done.returncode == 0, done.stderr
    expected = XCacheSettings(origin="10.0.0.5:1094", cache_dir="/var/cache/xrootd", exports=("/store",),
                              cache_size="2t", block_size="2m", monitor="10.0.0.9:9931", allow_commands=True,
                              admin_dir="/var/spool/xrootd")
    assert (tmp_path / "out.cfg").read_text() == render_xcache_config(expected)


def test_the_container_template_defaults_are_what_config_renders() -> None:
    from airflow_cloud_paas.services.xcache.config import CONTAINER_CONFIG_ENV, container_environment

    topology = load_topology(TEMPLATES / "xcache_containers.yaml")
    origin = resolved_node(topology, "origin", {})
    cache = resolved_node(topology, "xcache", {})
    assert origin.properties["environment"] == container_environment(
        OriginSettings(data_dir="/data/xrootd", exports=("/store",), admin_dir="/var/spool/xrootd"))
    assert cache.properties["environment"][CONTAINER_CONFIG_ENV] == render_xcache_config(
        XCacheSettings(origin="origin:1094", cache_dir="/var/cache/xrootd", exports=("/store",),
                       admin_dir="/var/spool/xrootd"))
    assert "tosca.nodes.Container.Application" in cache.type_hierarchy
    assert [r.node for r in cache.requirements if r.name == "origin"] == ["origin"]
