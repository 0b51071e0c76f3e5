"""The e2e tier's test-only DAGs (``dags_extra/``) join the live stack's DAG bundles.

Set at collection, before any test starts the session's stack (``RECSYS_EXTRA_DAG_FOLDERS``,
read by ``scripts/stack.py``); ``make up`` never sees these DAGs.
"""

from __future__ import annotations

import os
from pathlib import Path

EXTRA_DAGS = Path(__file__).resolve().parent / "dags_extra"
_folders = [f for f in os.environ.get("RECSYS_EXTRA_DAG_FOLDERS", "").split(os.pathsep) if f]
if str(EXTRA_DAGS) not in _folders:
    os.environ["RECSYS_EXTRA_DAG_FOLDERS"] = os.pathsep.join([*_folders, str(EXTRA_DAGS)])
