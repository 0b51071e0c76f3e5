"""``python -m jobs.evaluate gate|infra``: the two checks before a promotion."""

from __future__ import annotations

import argparse
from typing import Any

from jobs.core.cli import run_job
from jobs.core.config import PipelineConfig
from jobs.core.results import GateResult, InfraResult
from jobs.evaluate import gate, infra


def run(cfg: PipelineConfig, args: argparse.Namespace) -> GateResult | InfraResult:
    return (gate.run if args.command == "gate" else infra.run)(cfg, args)


def _summary(result: dict[str, Any]) -> str:
    if "blessed" in result:
        return f"gate: {result['reason']}"
    return f"infra validation passed: {result['model_uri']} ({result['smoke_users']} users, k={result['k']})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    gate.add_arguments(
        sub.add_parser("gate", help="challenger vs champion and baselines over the held-out and replay days")
    )
    infra.add_arguments(
        sub.add_parser("infra", help="load the registered model in a fresh process, score a smoke batch")
    )
    return run_job(
        "evaluation",
        ap,
        run,
        argv,
        summary=_summary,
        ledger=lambda r: f"evaluate/{r['run_id']}" if "blessed" in r and r.get("run_id") else None,
    )
