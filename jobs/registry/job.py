"""``python -m jobs.registry register|promote|review|rollback|show``."""

from __future__ import annotations

import argparse
import json
import os

from jobs.core.cli import model_version, run_job
from jobs.core.config import PipelineConfig
from jobs.core.results import AliasesResult, PromotionResult, RegistrationResult, ReviewResult, RollbackResult
from jobs.registry.aliases import promote, review, rollback, show
from jobs.registry.register import register, register_candidates


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m jobs.registry", description="Model registry operations (MLflow aliases)."
    )
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("register", help="a run's model → new version, alias challenger, lineage tags")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--run-id")
    who.add_argument(
        "--candidates",
        type=json.loads,
        help="JSON list of a tournament's candidates (run_id, model_uri, tags, challenger): all registered, "
        "the challenger last gets the alias",
    )
    p.add_argument("--model-uri", help="logged model URI (default runs:/<run-id>/model)")
    p.add_argument("--snapshot", help="the training snapshot (its manifest gives the window tags)")
    p.add_argument("--tags", type=json.loads, default={}, help="JSON object of extra version tags")
    p = sub.add_parser("promote", help="move champion to a version (compare-and-set)")
    p.add_argument("--model-version", required=True, type=model_version)
    p.add_argument("--expected-champion", default="")
    p.add_argument("--reason", required=True)
    p.add_argument("--actor", default=os.environ.get("USER", "airflow"))
    p = sub.add_parser("review", help="record a person's approval or rejection of a version (tags)")
    p.add_argument("--model-version", required=True, type=model_version)
    p.add_argument("--decision", choices=("approved", "rejected"), required=True)
    p.add_argument("--by", required=True, help="who decided (the Airflow user)")
    p.add_argument("--reason", default="")
    p = sub.add_parser("rollback", help="champion ← previous_champion (audited)")
    p.add_argument("--reason", required=True)
    p.add_argument("--actor", default=os.environ.get("USER", "airflow"))
    sub.add_parser("show", help="the aliases")
    for sp in sub.choices.values():
        sp.add_argument("--model-name", help="registered model (default mlflow.model_name)")
    return ap


def run(
    cfg: PipelineConfig, args: argparse.Namespace
) -> RegistrationResult | PromotionResult | ReviewResult | RollbackResult | AliasesResult:
    if args.command == "register" and args.candidates is not None:
        return register_candidates(cfg, args.candidates, args.tags, args.model_name, args.snapshot)
    if args.command == "register":
        return register(cfg, args.run_id, args.tags, args.model_uri, args.model_name, args.snapshot)
    if args.command == "promote":
        return promote(
            cfg, args.model_version, args.expected_champion or None, args.reason, args.actor, args.model_name
        )
    if args.command == "review":
        return review(cfg, args.model_version, args.decision, args.by, args.reason, args.model_name)
    if args.command == "rollback":
        return rollback(cfg, args.reason, args.actor, args.model_name)
    return show(cfg, args.model_name)


def main(argv: list[str] | None = None) -> int:
    return run_job("registry", build_parser(), run, argv, summary=lambda r: json.dumps(r, default=str, sort_keys=True))
