"""Regenerate constraints.txt: resolve every extra (`.[all,test]`) without installing, pin the result.

Run: make lock. pip resolves the google and azure providers in seconds thanks to `openai<3` in the
extras (without it pip backtracks for 20+ minutes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
             "--report", str(report), f"{ROOT}[all,test]"],
            check=True,
        )
        items = json.loads(report.read_text())["install"]
    pins = sorted(
        (i["metadata"]["name"].lower(), i["metadata"]["version"])
        for i in items
        if i["metadata"]["name"].lower() != "airflow-cloud-paas"
    )
    lines = [
        "# The lock: every dependency of `.[all,test]`, resolved together. Installs use it with -c.",
        "# Regenerate with `make lock` (.ci/lock.py) after changing pyproject.toml.",
        *(f"{name}=={version}" for name, version in pins),
    ]
    (ROOT / "constraints.txt").write_text("\n".join(lines) + "\n")
    print(f"constraints.txt: {len(pins)} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
