"""An S3-compatible server on loopback for the tests (and the cluster rehearsal): moto 5 in
server mode (``python -m moto.server``), one process group, stopped by its PID.

Clients reach it the way they reach any S3 endpoint: ``AWS_ENDPOINT_URL`` and the credentials in
the environment (``env``), which boto3, pyarrow (``jobs.core.fs``), Spark's Python workers and
MLflow all read. Nothing about the endpoint or the keys goes into the pipeline's config.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ACCESS_KEY, SECRET_KEY, REGION = "recsys-test", "recsys-test-secret", "us-east-1"


def env(port: int) -> dict[str, str]:
    """The variables that point S3 clients at the server on ``port``."""
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }


def start(port: int, log: Path, timeout: float = 60.0) -> subprocess.Popen:
    """Start the server on 127.0.0.1:``port`` (own process group); return once it answers."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"S3 server exited at start ({proc.returncode}); see {log}")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
            return proc
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"S3 server not answering on 127.0.0.1:{port} after {timeout:.0f}s; see {log}")


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop the server's process group (SIGTERM, then SIGKILL)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)


def create_bucket(name: str) -> None:
    """Create a bucket on the endpoint of this process's environment (idempotent)."""
    import boto3

    client = boto3.client("s3")
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
        client.create_bucket(Bucket=name)
