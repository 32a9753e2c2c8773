"""Run rendered cloud-init user data's files and shell steps under a scratch root instead of ``/``."""

from __future__ import annotations

from pathlib import Path

import yaml

MOVED = ("/etc/cloud-paas", "/opt/cloud-paas", "/var/lib/cloud-paas")


def materialize(user_data: str, root: Path, commands: tuple[str, ...] = ("sh", "mkdir", "touch")
                ) -> tuple[dict[str, dict], list[list[str]]]:
    """Write the cloud-config's files under ``root``; return them by path, and its steps with paths moved there.

    :param user_data: a ``#cloud-config`` document
    :param root: where ``/`` is for the test
    :param commands: the runcmd steps to return (by program); downloads and ansible cannot run here
    """
    assert user_data.startswith("#cloud-config\n")
    data = yaml.safe_load(user_data)
    moved = {p: str(root / p.lstrip("/")) for p in MOVED}

    def move(text: str) -> str:
        for old, new in moved.items():
            text = text.replace(old, new)
        return text

    for item in data["write_files"]:
        path = Path(move(item["path"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(item["content"])
        path.chmod(int(item["permissions"], 8))
    steps = [[move(part) for part in command] for command in data["runcmd"] if command[0] in commands]
    return {f["path"]: f for f in data["write_files"]}, steps
