"""Screenshots the browser tests take, copied to the README's folder on request."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path


def publish_screenshots(folder: Path, prefix: str, names: Iterable[str] | None = None) -> None:
    """Copy a test's screenshots to ``$CLOUD_PAAS_SCREENSHOTS_DIR`` as ``<prefix><name>``, when that is set.

    The README's screenshots are refreshed on request only: a plain test run leaves the checkout as it was.

    :param folder: where the test saved them
    :param prefix: prepended to each file name (``portal_``)
    :param names: which ones (default: every PNG there); a missing one is skipped
    """
    docs = os.environ.get("CLOUD_PAAS_SCREENSHOTS_DIR")
    if not docs:
        return
    Path(docs).mkdir(parents=True, exist_ok=True)
    for name in sorted(p.name for p in folder.glob("*.png")) if names is None else names:
        if (folder / name).exists():
            shutil.copy(folder / name, Path(docs) / f"{prefix}{name}")
