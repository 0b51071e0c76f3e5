"""Run a ``jobs.<name>`` CLI from a task: the contract between orchestration and workloads.

A job gets argv only and reports back with a small JSON file (``--result-file``; inside a
Kubernetes pod the same JSON is ``/airflow/xcom/return.json``). The operator streams the job's
output into the task log line by line, kills the whole process group if the task is stopped,
and turns a non-zero exit into a task failure whose message is the job's own error line. The
exit code says whether to retry (``jobs.core.cli.ExitCode``): a bad argument (2), bad input
data (3) or a failed check (4) fail the task at once; anything else (1, a signal) is retried.

Spark jobs are Spark Connect clients (``jobs.core.spark``), so a Spark job is the same
``python -m jobs.X`` as any other, with no JVM in the task. For them (``spark=True``) the
operator picks the job's Connect session id (``RECSYS_SPARK_SESSION_ID``): when the task is
stopped it kills the job and interrupts that session on the server, whose work would
otherwise run on after its client died.

Lineage: with the OpenLineage provider enabled (the local stack writes its events to
``<state>/lineage/openlineage.jsonl``), each job task reports its datasets — the declared
``lineage_inputs`` (templated paths) and, as outputs, the URIs its result names: the keys the
declared results (``jobs.core.results``) type as ``OutputUri`` (``LINEAGE_OUTPUT_KEYS``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from jobs.core.cli import PIPELINE_RUN_ENV, is_retryable
from jobs.core.results import LINEAGE_OUTPUT_KEYS

REPO_ROOT = Path(__file__).resolve().parents[2]


def job_env() -> dict[str, str]:
    """Environment for a job subprocess: the task's, with the repository importable."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    return env


def _arg(value: Any) -> str:
    """One argv element: an XCom's None (e.g. no champion yet) is the empty string, a list or
    dict (e.g. a tournament's candidates) its JSON."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else str(value)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def build_argv(module: str, args: Sequence[str]) -> list[str]:
    """The command that runs ``module`` with ``args``: the job's own CLI, the same in every profile."""
    return [sys.executable, "-m", module, *args]


def lineage_dataset(uri: str) -> Any:
    """An OpenLineage dataset for a path or URI (naming: ``file`` + absolute path, ``s3://bucket`` + key)."""
    from openlineage.client.event_v2 import Dataset

    if uri.startswith(("s3://", "s3a://")):
        bucket, _, key = uri.split("://", 1)[1].partition("/")
        return Dataset(namespace=f"s3://{bucket}", name=key)
    if uri.startswith("models:/"):
        return Dataset(namespace=os.environ.get("MLFLOW_TRACKING_URI", "mlflow"), name=uri)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return Dataset(namespace="file", name=str(Path(uri).resolve()) if "://" not in uri else uri)


class JobOperator(BaseOperator):
    """Run ``python -m <module> <args>`` and push the job's result JSON to XCom.

    The result is the task's return value, and each of its keys is an XCom of its own
    (``multiple_outputs``), so downstream tasks take ``task.output["uri"]``.

    Args:
        module: the job module, e.g. ``jobs.ingest``.
        job_args: argv after the module (templated; XComArgs resolve at run time).
        spark: the job is a Spark Connect client (its session is interrupted when the task is killed).
        lineage_inputs: paths or URIs the job reads (templated), for OpenLineage.
    """

    template_fields: Sequence[str] = ("job_args", "lineage_inputs")
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        module: str,
        job_args: Sequence[Any] = (),
        spark: bool = False,
        lineage_inputs: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("multiple_outputs", True)  # each result key is an XCom: ``task.output["uri"]``
        super().__init__(**kwargs)
        self.module = module
        self.job_args = list(job_args)
        self.spark = spark
        self.lineage_inputs = list(lineage_inputs)
        self._proc: subprocess.Popen[str] | None = None
        self._session_id: str | None = None
        self._pipeline_run: str | None = None
        self._result: dict[str, Any] = {}

    def execute(self, context: Any) -> dict[str, Any]:
        dag_run = context.get("dag_run")
        self._pipeline_run = f"{dag_run.dag_id}/{dag_run.run_id}" if dag_run is not None else None
        with tempfile.TemporaryDirectory(prefix="recsys-job-") as tmp:
            result_file = Path(tmp) / "return.json"
            argv = [
                *build_argv(self.module, [_arg(a) for a in self.job_args]),
                "--result-file",
                str(result_file),
            ]
            self.log.info("running %s", " ".join(argv))
            code, tail = self._run(argv)
            result = json.loads(result_file.read_text()) if result_file.exists() else {}
        if code != 0:
            message = result.get("message") or next((ln for ln in reversed(tail) if ln.strip()), "")
            if code < 0:  # killed (OOM killer, an operator, a lost node): retried, never fail-fast
                message = f"killed by {_signal_name(-code)}" + (f"; last output: {message}" if message else "")
            text = f"{self.module} exited with code {code}: {message}"
            if not is_retryable(code):  # a bad argument, bad input or a failed check: a retry cannot help
                raise AirflowFailException(text)
            raise AirflowException(text)
        self._result = result
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage datasets of this run: the declared inputs, the outputs the job's result names."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        outputs = [self._result.get(k) for k in LINEAGE_OUTPUT_KEYS]
        return OperatorLineage(
            inputs=[lineage_dataset(str(u)) for u in self.lineage_inputs if u],
            outputs=[lineage_dataset(u) for u in outputs if isinstance(u, str) and u],
        )

    def _run(self, argv: list[str]) -> tuple[int, list[str]]:
        tail: list[str] = []
        env = job_env()
        if self._pipeline_run:  # the ledger keys a shared output (a snapshot) by the run that built it
            env[PIPELINE_RUN_ENV] = self._pipeline_run
        if self.spark:
            self._session_id = env["RECSYS_SPARK_SESSION_ID"] = str(uuid.uuid4())
        self._proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.rstrip("\n")
            self.log.info("%s", line)
            tail = [*tail[-40:], line]
        return self._proc.wait(), tail

    def on_kill(self) -> None:
        if self._proc and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
                self._proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
        if self._session_id:
            try:
                from jobs.core.config import get_config
                from jobs.core.spark import interrupt

                stopped = interrupt(get_config(), self._session_id)
                self.log.info("interrupted Spark session %s: %s operation(s)", self._session_id, len(stopped))
            except Exception as exc:  # the server may be gone too: its work went with it
                self.log.warning("could not interrupt Spark session %s: %s", self._session_id, exc)
