"""One wrapper for every job: exit codes that say whether to retry, and a result file that says why."""

from __future__ import annotations

import argparse
import json

import pytest

from jobs.core.cli import (
    BadArgument,
    BadInput,
    CheckFailed,
    ExitCode,
    Retryable,
    is_retryable,
    run_job,
)
from jobs.core.storage import PublishError

pytestmark = pytest.mark.unit


def _run(tmp_path, body, *argv):
    ap = argparse.ArgumentParser(prog="python -m jobs.x")
    ap.add_argument("--day")
    out = tmp_path / "result.json"
    code = run_job("thing", ap, body, [*argv, "--result-file", str(out)])
    return code, (json.loads(out.read_text()) if out.exists() else None)


@pytest.mark.parametrize(
    ("error", "code", "retry"),
    [
        (BadArgument("no such version"), 2, False),
        (BadInput("the day is not validated"), 3, False),
        (CheckFailed("3 expectations failed"), 4, False),
        (Retryable("server down"), 1, True),
        (PublishError("output folder /x is not writable"), 1, True),
        (OSError(28, "No space left on device"), 1, True),
    ],
)
def test_each_failure_maps_to_one_exit_code_and_its_message(tmp_path, capsys, error, code, retry):
    def body(cfg, args):
        raise error

    exit_code, result = _run(tmp_path, body)
    assert exit_code == code and is_retryable(exit_code) is retry
    assert result["message"].startswith("thing failed: ") and result["exit_code"] == code
    assert str(error) in result["message"]
    assert capsys.readouterr().err.strip() == result["message"]


def test_success_writes_the_result_and_a_partial_result_travels_with_a_failure(tmp_path):
    code, result = _run(tmp_path, lambda cfg, args: {"day": args.day, "rows": 3}, "--day", "2026-01-01")
    assert code == 0 and result.pop("cost")["wall_s"] >= 0
    assert result == {"day": "2026-01-01", "rows": 3}

    def failing(cfg, args):
        raise CheckFailed("dt=2026-01-01: 1 expectation failed", result={"day": "2026-01-01", "success": False})

    code, result = _run(tmp_path, failing)
    assert code == 4 and result["success"] is False and "1 expectation failed" in result["message"]


def test_a_bad_configuration_is_a_bad_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS__SPARK__REMOTE", "http://not-spark")
    code, result = _run(tmp_path, lambda cfg, args: {})
    assert code == ExitCode.BAD_ARGUMENT and "spark.remote" in result["message"]


def test_signals_and_unknown_codes_are_retried_bad_input_never():
    assert is_retryable(-9) and is_retryable(1) and is_retryable(137)
    assert not any(is_retryable(c) for c in (2, 3, 4))


def test_every_result_carries_what_it_cost(tmp_path):
    """The ledger's entry: CPU spent here and in a waited-for child, peak memory, no GPU."""
    import os
    import subprocess
    import sys
    import time

    def body(cfg, args):
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:  # 0.3 s of CPU here ...
            pass
        # ... and 0.3 s in a child that holds 700 MiB (more than this test process ever does)
        child = "import time\nb = bytearray(700 * 2**20)\nt = time.process_time() + 0.3\nwhile time.process_time() < t: pass"
        subprocess.run([sys.executable, "-c", child], check=True)
        return {"rows": 1}

    code, result = _run(tmp_path, body)
    cost = result["cost"]
    assert code == 0 and set(cost) == {"wall_s", "cpu_s", "peak_rss_mib", "gpu_s"}
    assert 0.55 <= cost["cpu_s"] <= cost["wall_s"] * (os.cpu_count() or 1) + 0.05, cost
    assert cost["peak_rss_mib"] >= 700, cost
    assert cost["gpu_s"] == 0
    # A job that reports its own cost keeps it.
    assert _run(tmp_path, lambda cfg, args: {"cost": {"wall_s": 1.0}})[1]["cost"] == {"wall_s": 1.0}


def test_peak_memory_is_the_job_s_own_not_its_parent_s():
    """A job forked by a large parent (the Airflow task runner) reports its own peak: Linux keeps
    ``ru_maxrss`` across ``exec``, so that figure carried the parent's size into every job."""
    import resource
    import subprocess
    import sys

    ballast = bytearray(600 * 2**20)  # this process: > 600 MiB resident when it forks the job
    ballast[::4096] = b"x" * len(ballast[::4096])
    probe = "import resource\nfrom jobs.core.cli import own_peak_rss_kib\nprint(own_peak_rss_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.split()
    own_mib, inherited_mib = int(out[0]) / 1024, int(out[1]) / 1024
    del ballast
    assert inherited_mib >= 600, (own_mib, inherited_mib)  # the old figure: the parent's size
    assert own_mib < 200, (own_mib, inherited_mib)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 >= 600


JOB_MODULES = [
    "ease",
    "evaluate",
    "importer",
    "ingest",
    "monitor",
    "popularity",
    "registry",
    "score",
    "seq",
    "sim",
    "snapshot",
    "train",
    "validate",
]


def _parser_of(stage: str, monkeypatch) -> argparse.ArgumentParser:
    """The argument parser ``jobs.<stage>.job.main`` hands to ``run_job`` (built as the job builds it)."""
    import importlib

    from jobs.core.config import load_config

    module = importlib.import_module(f"jobs.{stage}.job")
    seen: list = []
    monkeypatch.setattr(module, "run_job", lambda name, parser, *a, **k: seen.append(parser) or 0)
    assert module.main([]) == 0
    parser = seen[0]
    return parser if isinstance(parser, argparse.ArgumentParser) else parser(load_config(environ={}))


def _actions(parser: argparse.ArgumentParser):
    """Every action of ``parser`` and of its subcommands' parsers."""
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)


@pytest.mark.parametrize("stage", JOB_MODULES)
def test_every_default_passes_its_own_type(stage, monkeypatch):
    """argparse runs a string default through ``type`` when the flag is absent: a default the type refuses
    (``--model-version`` defaulting to "") fails every run that leaves the flag out, as the DAGs do."""
    for action in _actions(_parser_of(stage, monkeypatch)):
        if action.type is not None and isinstance(action.default, str):
            action.type(action.default)


def test_the_monitor_takes_the_dags_argv_without_a_model_version(monkeypatch):
    args = _parser_of("monitor", monkeypatch).parse_args(["--day", "2026-03-07"])
    assert args.model_version is None and str(args.day) == "2026-03-07"
