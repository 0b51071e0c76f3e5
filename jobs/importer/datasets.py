"""Public interaction logs the project may fetch at run time, cached under ``.local/datasets``.

MovieLens files are never committed (GroupLens terms forbid redistribution). ML-100K ships
inside the RecBole 1.2.1 wheel on the package index, so tests and the demo fetch it from there
with pip and read ``recbole/dataset_example/ml-100k/ml-100k.inter`` out of the zip; larger
MovieLens sets come from the user's own download (``--source PATH``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from jobs.core.config import REPO_ROOT

RECBOLE_WHEEL = "recbole==1.2.1"
ML100K_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
ML100K_ROWS = 100_000


class DatasetUnavailable(RuntimeError):
    """The data set could not be fetched (no package index, or the wheel lacks the file)."""


def cache_dir() -> Path:
    """``$RECSYS_DATASETS`` or ``<repo>/.local/datasets``."""
    return Path(os.environ.get("RECSYS_DATASETS") or REPO_ROOT / ".local" / "datasets")


def ml100k(cache: Path | None = None) -> Path:
    """The path of ``ml-100k.inter`` (RecBole's atomic file of ML-100K), fetched once.

    Raises:
        DatasetUnavailable: pip could not download the wheel, or it lacks the file.
    """
    target = (cache or cache_dir()) / "ml-100k" / "ml-100k.inter"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recbole-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, RECBOLE_WHEEL]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if done.returncode != 0 or not wheels:
            raise DatasetUnavailable(f"pip download {RECBOLE_WHEEL} failed: {done.stderr.strip()[-400:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            if ML100K_MEMBER not in z.namelist():
                raise DatasetUnavailable(f"{wheels[0].name} has no {ML100K_MEMBER}")
            partial = target.with_suffix(f".part{os.getpid()}")
            partial.write_bytes(z.read(ML100K_MEMBER))
            partial.replace(target)
    return target
