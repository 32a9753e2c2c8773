"""Load every TOSCA template of a folder with our loader and with tosca-parser 2.12.0 alone, and count.

Our loader (``load_topology``, no cache) needs no input values. tosca-parser alone refuses a template whose
required input has no default unless it is given a value, so each such input gets a placeholder of its type
(``"placeholder"``, 1, 1.0, true, ``1 GB``...). Imports of the INDIGO types by URL are read from local copies
(``--types``, the ``custom_types.<branch>.yaml`` files) for both, since nothing is fetched here; tosca-parser is
given the template with its imports rewritten to those files (so a relative import of another file is not found).

Prints, per template, whether each loaded and the conversions our loader made, then the totals: loaded by
us, loaded by tosca-parser, conversions made (and in how many templates).

Run: .venv/bin/python bench/corpus_load.py [FOLDER] [--types DIR] [--quiet]
(default FOLDER: ../shared/tosca/examples beside the repository; default DIR: ../shared/tosca/indigo-types)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SHARED = (REPO / ".." / "shared" / "tosca").resolve()
#: a value of each input type, for the required inputs without a default (tosca-parser alone needs them)
PLACEHOLDERS: dict[str, Any] = {
    "string": "placeholder", "integer": 1, "float": 1.0, "number": 1, "boolean": True, "version": "1.0",
    "timestamp": "2026-01-01T00:00:00Z", "range": [1, 2], "list": [], "map": {}, "scalar-unit.size": "1 GB",
    "scalar-unit.time": "1 s", "scalar-unit.frequency": "1 GHz", "scalar-unit.bitrate": "1 Mbps",
}


def placeholders(template: Mapping[str, Any]) -> dict[str, Any]:
    """Return a placeholder for every required input without a default.

    :param template: the template as read from YAML
    """
    topology = template.get("topology_template") or {}
    inputs = topology.get("inputs") or {} if isinstance(topology, Mapping) else {}
    values = {}
    for name, spec in inputs.items() if isinstance(inputs, Mapping) else ():
        if isinstance(spec, Mapping) and spec.get("default") is None and spec.get("required", True):
            values[name] = copy.deepcopy(PLACEHOLDERS.get(spec.get("type"), {}))  # a data type: a map
    return values


def load_with_tosca_parser(path: Path, import_map: Mapping[str, str]) -> str | None:
    """Return None if tosca-parser 2.12.0 alone loads the template, else its first error.

    :param path: the template
    :param import_map: import URL -> local file
    """
    import yaml
    from toscaparser.tosca_template import ToscaTemplate

    try:
        template = yaml.safe_load(path.read_text(encoding="utf-8"))
        imports = template.get("imports") if isinstance(template, dict) else None
        if isinstance(imports, list):
            template["imports"] = [_mapped(item, import_map) for item in imports]
        ToscaTemplate(yaml_dict_tpl=template, parsed_params=placeholders(template))  # a path would be re-read
    except Exception as err:  # noqa: BLE001 - every failure counts as "not loaded"
        return f"{type(err).__name__}: {' '.join(str(err).split())}"
    return None


def _mapped(item: Any, import_map: Mapping[str, str]) -> Any:
    if isinstance(item, str):
        return import_map.get(item, item)
    if isinstance(item, Mapping) and len(item) == 1:
        name, spec = next(iter(item.items()))
        if isinstance(spec, str):
            return {name: import_map.get(spec, spec)}
        if isinstance(spec, Mapping) and isinstance(spec.get("file"), str):
            return {name: {**spec, "file": import_map.get(spec["file"], spec["file"])}}
    return item


def main(argv: list[str] | None = None) -> int:
    """Load every template of the folder both ways and print the counts."""
    from airflow_cloud_paas.exceptions import ToscaError
    from airflow_cloud_paas.tosca import indigo_import_map, load_topology

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(SHARED / "examples"))
    parser.add_argument("--types", default=str(SHARED / "indigo-types"), help="folder of custom_types.<branch>.yaml")
    parser.add_argument("--quiet", action="store_true", help="print the totals only")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # tosca-parser and the YAML reader log every problem they also report
    import_map = indigo_import_map(args.types) if Path(args.types).is_dir() else {}
    names = sorted(p for p in Path(args.folder).iterdir() if p.suffix in (".yaml", ".yml"))
    ours = parsers = conversions = converted_templates = 0
    started = time.monotonic()
    for path in names:
        try:
            topology = load_topology(path, import_map=import_map, use_cache=False)
            mine, made = None, topology.conversions
        except ToscaError as err:
            mine, made = f"{type(err).__name__}: {err.message}", ()
        with contextlib.redirect_stdout(sys.stderr):  # tosca-parser prints some warnings
            theirs = load_with_tosca_parser(path, import_map)
        ours += mine is None
        parsers += theirs is None
        conversions += len(made)
        converted_templates += bool(made)
        if not args.quiet:
            print(f"{path.name}: ours {'loaded' if mine is None else 'refused'}, tosca-parser "
                  f"{'loaded' if theirs is None else 'refused'}, {len(made)} conversion(s)")
            for why in (f"ours: {mine}" if mine else None, f"tosca-parser: {theirs}" if theirs else None):
                if why:
                    print(f"    {why[:300]}")
            for conversion in made:
                print(f"    converted {conversion.message}")
    print(f"{len(names)} templates in {args.folder} ({time.monotonic() - started:.1f} s)")
    print(f"loaded by us:           {ours}")
    print(f"loaded by tosca-parser: {parsers}")
    print(f"conversions made:       {conversions} (in {converted_templates} templates)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
