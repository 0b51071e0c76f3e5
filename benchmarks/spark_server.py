"""A Spark Connect server for a benchmark: the stack's own ``spark-connect`` component, on free
loopback ports, in a temporary state folder, stopped (by its process group) when the block ends.

Benchmarks measure the jobs as they run in every profile: as Connect clients of one warm server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REMOTE_ENV = "RECSYS__SPARK__REMOTE"


@contextmanager
def connect_server(prefix: str = "bench-spark-", workers: int = 0) -> Iterator[dict[str, object]]:
    """Start a Connect server (``local[N]`` as configured) and point ``RECSYS__SPARK__REMOTE`` at it;
    with ``workers`` (1 or 2), in front of a standalone cluster of that many one-core workers
    (``scripts/spark_service.py``) instead.

    Yields ``{"remote", "start_s", "stack"}``: the ``sc://`` endpoint and the seconds from launch
    to healthy (JVM start and the server's first listen; with workers, until every worker's
    executor is live).
    """
    from scripts import spark_service
    from scripts.stack import Stack, down, up

    state = Path(tempfile.mkdtemp(prefix=prefix))
    shape = {"spark_cluster": "standalone", "spark_workers": workers} if workers else {}
    stack = Stack.on_free_ports(state, **shape)
    saved = os.environ.get(REMOTE_ENV)
    started = time.perf_counter()
    try:
        up(stack, only=spark_service.components(stack.spark_cluster, stack.spark_workers))
        os.environ[REMOTE_ENV] = stack.spark_remote
        yield {"remote": stack.spark_remote, "start_s": time.perf_counter() - started, "stack": stack}
    finally:
        if saved is None:
            os.environ.pop(REMOTE_ENV, None)
        else:
            os.environ[REMOTE_ENV] = saved
        down(stack)
        shutil.rmtree(state, ignore_errors=True)
