"""``python -m jobs.importer movielens --source PATH|ml-100k``: a public ratings log → landing days.

See ``jobs.importer.landing`` for what is written and ``jobs.importer.formats`` for the formats.
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

from jobs.core.cli import BadArgument, BadInput, Retryable, run_job
from jobs.core.config import PipelineConfig
from jobs.core.results import ImportResult
from jobs.importer import datasets
from jobs.importer.formats import FORMATS, SourceError
from jobs.importer.landing import import_ratings

SHORTCUTS = {"ml-100k": datasets.ml100k}


def build_parser(cfg: PipelineConfig) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m jobs.importer", description="Import public interaction logs.")
    sub = ap.add_subparsers(dest="dataset", required=True)
    ml = sub.add_parser("movielens", help="MovieLens ratings (100K/1M/20M/25M/32M) → landing days")
    ml.add_argument(
        "--source", required=True, help="a ratings file (u.data, *.inter, ratings.dat, ratings.csv) or 'ml-100k'"
    )
    ml.add_argument("--first-day", type=date.fromisoformat, help="first UTC day (default: the source's first)")
    ml.add_argument("--last-day", type=date.fromisoformat, help="last UTC day (default: the source's last)")
    ml.add_argument("--format", choices=("auto", *FORMATS), default="auto")
    ml.add_argument("--landing", default=cfg.storage.zone("landing"), help="landing zone root (default from config)")
    return ap


def run(cfg: PipelineConfig, args: argparse.Namespace) -> ImportResult:
    if args.first_day and args.last_day and args.first_day > args.last_day:
        raise BadArgument(f"--first-day {args.first_day} is after --last-day {args.last_day}")
    if args.source in SHORTCUTS:
        try:
            source = SHORTCUTS[args.source]()
        except datasets.DatasetUnavailable as exc:
            raise Retryable(str(exc)) from None
    else:
        source = Path(args.source)
        if not source.is_file():
            raise BadArgument(f"no such source file: {source}")
    try:
        return import_ratings(source, args.landing, args.format, args.first_day, args.last_day)
    except SourceError as exc:
        raise BadInput(f"{exc} (nothing written)") from None


def main(argv: list[str] | None = None) -> int:
    return run_job(
        "importer",
        build_parser,
        run,
        argv,
        summary=lambda r: (
            f"imported {r['rows']:,} ratings of {r['source_file']} into {r['days']} landing days "
            f"{r['first_day']}..{r['last_day']} ({r['days_written']} written, {len(r['empty_days'])} empty) "
            f"in {r['cost']['wall_s']:.1f}s"
        ),
    )
