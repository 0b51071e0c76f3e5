"""One way for every job to run: argv in, a result JSON and an exit code out.

``run_job`` loads the configuration, calls the job, writes the result file and maps every
failure to one ``ExitCode`` with a one-line message on stderr and in the result file (the task
log shows it as the failure). The orchestrator retries exactly the ``retryable`` codes; a
retry cannot fix a bad argument, bad input data or a failed quality check.

A job raises ``JobError`` subclasses (``jobs.core.errors``, re-exported here) for what it knows
is wrong; an ``OSError`` (disk full, a folder that vanished) and an outage of the MLflow
tracking server are retryable.

Every result carries what producing it cost (``cost``, the ledger's entry for this job): wall
seconds, CPU seconds and peak resident memory of the job's process and the processes it waited
for (a ``torchrun`` worker, a subprocess), and GPU-seconds when the job used CUDA. Spark work
runs in the Spark Connect server's executors and is not in these figures (the Spark UI and
event log count it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.core.config import ConfigError, PipelineConfig, get_config
from jobs.core.errors import (  # noqa: F401 - re-exported: jobs import their errors from here too
    NOT_RETRYABLE,
    BadArgument,
    BadInput,
    CheckFailed,
    ExitCode,
    JobError,
    Retryable,
    is_retryable,
)

XCOM_DIR = "/airflow/xcom"  # the KubernetesPodOperator XCom contract (RECSYS_XCOM_DIR overrides it)
MESSAGE_LIMIT = 2000
# The orchestrator's run a job belongs to, ``<dag_id>/<run_id>`` (set by the task launcher,
# ``recsys_airflow.launcher.JobOperator``; absent for a job run by hand).
PIPELINE_RUN_ENV = "RECSYS_PIPELINE_RUN"


def pipeline_run() -> str | None:
    """The orchestrator's run this job belongs to (``PIPELINE_RUN_ENV``), None outside one."""
    return os.environ.get(PIPELINE_RUN_ENV) or None


def run_scoped(key: str, run: str | None) -> str:
    """The ledger key of a job whose output several runs share (a snapshot directory is rebuilt by
    every training run of the same day and window): one entry per pipeline run, so the cost a
    model card reads is its own run's build, never a later rebuild's. ``key`` itself without a run."""
    return f"{key}/{re.sub(r'[^A-Za-z0-9._=+-]+', '_', run)}" if run else key


def tracking_errors() -> tuple[type[BaseException], ...]:
    """What an MLflow tracking-server outage raises in a client (MLflow's REST error after its
    retries, or a bare ``requests`` error from an artifact download); empty when MLflow was
    never imported by this job."""
    if "mlflow" not in sys.modules:
        return ()
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.exceptions.RequestException)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` via a temporary sibling and a rename."""
    from jobs.core.storage import write_json_atomic as write

    write(path, payload)


def emit_result(result: dict[str, Any], result_file: Path | None) -> None:
    """The result JSON to ``result_file`` and, inside a pod, to the KubernetesPodOperator's XCom file."""
    if result_file is not None:
        write_json_atomic(result_file, result)
    xcom = Path(os.environ.get("RECSYS_XCOM_DIR", XCOM_DIR))
    if xcom.is_dir() and (result_file is None or result_file.resolve() != (xcom / "return.json").resolve()):
        write_json_atomic(xcom / "return.json", result)


def _message(prefix: str, exc: BaseException) -> str:
    return f"{prefix}: {exc}"[:MESSAGE_LIMIT]


def run_job(
    name: str,
    parser: argparse.ArgumentParser | Callable[[PipelineConfig], argparse.ArgumentParser],
    body: Callable[[PipelineConfig, argparse.Namespace], dict[str, Any] | None],
    argv: list[str] | None = None,
    summary: Callable[[dict[str, Any]], str] | None = None,
    ledger: Callable[[dict[str, Any]], str | None] | None = None,
) -> int:
    """Parse ``argv``, run ``body(cfg, args)`` and report; returns the exit code.

    Args:
        name: the job's name, the prefix of its failure message (``"<name> failed: ..."``).
        parser: the job's argument parser, or a function of the configuration that builds it
            (when its defaults come from the configuration); ``--result-file`` is added here.
        body: the job; returns its result dict (None: nothing to report, e.g. a DDP rank other
            than 0) or raises (``JobError``, ``OSError``, an MLflow outage). A ``JobError`` may
            carry a partial result, written with the message.
        argv: the arguments (default ``sys.argv[1:]``).
        summary: one human line printed on success (the task log's last word on the job).
        ledger: the key of the result's entry in the cost ledger (``<stage>/<day or run>``),
            or None for none; ``record_cost`` writes it after a success.
    """
    cfg: PipelineConfig | None = None
    if not isinstance(parser, argparse.ArgumentParser):
        try:
            cfg = get_config()
        except ConfigError as exc:
            return _fail(ExitCode.BAD_ARGUMENT, str(exc), {}, None)
        parser = parser(cfg)
    _add_result_file(parser)
    args = parser.parse_args(argv)
    result_file: Path | None = args.result_file
    started = time.perf_counter(), _cpu_seconds()
    try:
        cfg = cfg or get_config()
        result = body(cfg, args)
    except ConfigError as exc:
        return _fail(ExitCode.BAD_ARGUMENT, str(exc), {}, result_file)
    except JobError as exc:
        return _fail(exc.exit_code, _message(f"{name} failed", exc), exc.result, result_file)
    except Exception as exc:
        if isinstance(exc, tracking_errors()):
            where = cfg.mlflow.tracking_uri if cfg else "(unknown)"
            text = _message(f"{name} failed", f"request to the MLflow tracking server {where} failed: {exc}")
            return _fail(ExitCode.RETRYABLE, text, {}, result_file)
        if isinstance(exc, OSError):
            return _fail(ExitCode.RETRYABLE, _message(f"{name} failed", exc), {}, result_file)
        raise
    if result is not None:
        result.setdefault("cost", cost_since(*started))
        if ledger is not None and cfg is not None and (key := ledger(result)):
            record_cost(cfg, key, name, result)
        emit_result(result, result_file)
        if summary is not None:
            print(summary(result), flush=True)
    return ExitCode.OK


def record_cost(cfg: PipelineConfig, key: str, name: str, result: dict[str, Any]) -> None:
    """Write the job's cost to the ledger zone (``ledger/<key>.json``; a rerun replaces it).

    The ledger outlives XComs and task logs: registration sums the entries of the chain that
    produced a model (``jobs.registry.card``). A ledger that cannot be written costs a warning,
    never the job's result.
    """
    from jobs.core.storage import PublishError, write_json_atomic

    entry = {"job": name, "key": key, "cost": result["cost"], "rows": result.get("rows"), "day": result.get("day")}
    try:
        write_json_atomic(f"{cfg.storage.zone('ledger')}/{key}.json", entry)
    except (PublishError, OSError) as exc:
        print(f"warning: cost ledger entry {key} not written: {exc}", file=sys.stderr, flush=True)


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def own_peak_rss_kib() -> int:
    """Peak RSS of this process image (KiB): ``VmHWM``, which ``exec`` resets.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux keeps that across ``exec``, so a job forked by
    a large parent (the Airflow task runner, a benchmark) would report the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cost_since(wall_start: float, cpu_start: float) -> dict[str, float]:
    """The cost of this process (and its waited-for children) since ``(perf_counter, cpu)``:
    ``wall_s``, ``cpu_s``, ``peak_rss_mib`` (the largest of the process and any child: Linux
    reports KiB) and ``gpu_s`` (wall × the CUDA devices this process initialised, else 0)."""
    wall = time.perf_counter() - wall_start
    peak_kib = max(own_peak_rss_kib(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    gpus = 0
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        gpus = torch.cuda.device_count()
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(_cpu_seconds() - cpu_start, 3),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "gpu_s": round(wall * gpus, 3),
    }


def model_version(text: str) -> str:
    """Argparse type of every ``--model-version``: a registered version number (1, 2, ...), never an alias."""
    if not re.fullmatch(r"[1-9][0-9]*", text):
        raise argparse.ArgumentTypeError(f"must be a registered version number (1, 2, ...), got {text!r}")
    return text


def _add_result_file(parser: argparse.ArgumentParser) -> None:
    """``--result-file`` on the parser, or on each subcommand's parser (it comes last in argv)."""
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for sub in subcommands:
        for child in sub.choices.values():
            child.add_argument("--result-file", type=Path, help="write the result JSON here")
    if not subcommands:
        parser.add_argument("--result-file", type=Path, help="write the result JSON here")


def _fail(code: ExitCode, message: str, partial: dict[str, Any], result_file: Path | None) -> int:
    print(message, file=sys.stderr, flush=True)
    if result_file is not None:
        try:
            write_json_atomic(result_file, {**partial, "message": message, "exit_code": int(code)})
        except OSError as exc:  # the result folder itself is broken: the stderr line still tells
            print(f"cannot write the result file {result_file}: {exc}", file=sys.stderr)
    return int(code)


def print_json(payload: Any) -> None:
    """Pretty JSON on stdout (for CLIs whose output is the data, e.g. ``registry show``)."""
    print(json.dumps(payload, indent=2, sort_keys=True, default=str))
